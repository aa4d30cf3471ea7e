"""Read a TOML file we did not write (pipelines, service configs, device profiles, manifests)
with limits, so a hostile or broken file is one clear error, not a traceback or a stall.

``tomllib`` recurses once per nesting level: ``a = [[[[...]]]]`` 100,000 deep raised
``RecursionError`` out of every loader. Files are small (the largest we ship is 16 KB), so more
than :data:`MAX_BYTES` or deeper than :data:`MAX_DEPTH` tables/arrays is refused.
"""
from __future__ import annotations

import os
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "read_toml"]

MAX_BYTES = 4 << 20
MAX_DEPTH = 16


def _depth(data) -> int:
    """Nesting depth of dicts/lists, without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        obj, d = stack.pop()
        if d > deepest:
            deepest = d
            if d > MAX_DEPTH:
                return d
        items = obj.values() if isinstance(obj, dict) else obj
        for v in items:
            if isinstance(v, (dict, list)):
                stack.append((v, d + 1))
    return deepest


def read_toml(path, err=ConfigError, what: str = "file") -> dict:
    """Parse ``path``; any problem is ``err("PATH: ...")``. A missing file raises FileNotFoundError
    (callers say what to do about it)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise err(f"{path}: is a directory, expected a TOML {what}") from None
    except OSError as e:
        raise err(f"{path}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise err(f"{path}: larger than {MAX_BYTES >> 20} MB; expected a TOML {what} of a few KB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise err(f"{path}: not UTF-8 text (byte {e.start}); expected a TOML {what}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise err(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise err(f"{path}: tables or arrays nested too deep; expected at most {MAX_DEPTH} levels") from None
    if _depth(data) > MAX_DEPTH:
        raise err(f"{path}: tables or arrays nested {MAX_DEPTH + 1}+ levels deep; expected at most {MAX_DEPTH}")
    return data

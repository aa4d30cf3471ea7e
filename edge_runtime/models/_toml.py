"""A minimal TOML writer (the standard library reads TOML but does not write it).

Enough for manifests and device profiles: strings, bools, ints, floats (``nan``/``inf``
included), dates given as strings, arrays of scalars or arrays, tables, and arrays of tables.
``None`` values are left out (TOML has no null).  A list of flat dicts (values all scalars or
arrays of scalars) is written as an array of inline tables, ``inputs = [{ name = "x", ... }]``;
a list of dicts holding tables is written as ``[[key]]`` sections.

The output is read back by :mod:`tomllib` to the same data (tested).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import re
from typing import Any, Mapping

import numpy as np

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")

__all__ = ["dumps"]


def _key(k) -> str:
    k = str(k)
    return k if _BARE.match(k) else _string(k)


def _string(s: str) -> str:
    # JSON string escapes (\", \\, \n, \t, \uXXXX) are valid TOML basic-string escapes
    return json.dumps(s, ensure_ascii=False)


def _is_scalar(v) -> bool:
    return isinstance(v, (str, bool, int, float, np.generic, _dt.date, _dt.time))


def _is_flat(v) -> bool:
    """A value an inline table or array can hold without sub-tables."""
    if v is None or _is_scalar(v):
        return True
    if isinstance(v, (list, tuple)):
        return all(_is_flat(x) and not isinstance(x, Mapping) for x in v)
    return False


def _value(v) -> str:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        r = repr(v)
        return r if ("." in r or "e" in r or "n" in r) else r + ".0"
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (_dt.datetime, _dt.date, _dt.time)):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v if x is not None) + "]"
    if isinstance(v, Mapping):
        items = [f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot write {type(v).__name__} value {v!r} as TOML")


INLINE_MAX = 100  # longest inline table written; longer ones get their own section


def _inline_list_of_tables(v) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(x, Mapping) for x in v)
            and all(all(_is_flat(y) for y in x.values()) and len(_value(x)) <= INLINE_MAX for x in v))


def _is_table_array(v) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(x, Mapping) for x in v)
            and not _inline_list_of_tables(v))


def _table(data: Mapping, prefix: tuple[str, ...], out: list[str]) -> None:
    simple, tables, arrays = [], [], []
    for k, v in data.items():
        if v is None:
            continue
        if isinstance(v, Mapping):
            # a flat dict of scalars reads well inline; one holding tables gets its own section
            if all(_is_flat(x) for x in v.values()) and len(_value(v)) <= INLINE_MAX:
                simple.append((k, v))
            else:
                tables.append((k, v))
        elif _is_table_array(v):
            arrays.append((k, v))
        else:
            simple.append((k, v))
    for k, v in simple:
        if _inline_list_of_tables(v) and len(v) > 1:  # one inline table per line
            out.append(f"{_key(k)} = [")
            out.extend(f"    {_value(x)}," for x in v)
            out.append("]")
        else:
            out.append(f"{_key(k)} = {_value(v)}")
    for k, v in tables:
        path = prefix + (_key(k),)
        has_own = any(x is not None and not isinstance(x, Mapping) and not _is_table_array(x) for x in v.values()) \
            or any(isinstance(x, Mapping) and all(_is_flat(y) for y in x.values())
                   and len(_value(x)) <= INLINE_MAX for x in v.values()) or not v
        if has_own:  # a table holding only sub-tables needs no header of its own
            out.append("")
            out.append("[" + ".".join(path) + "]")
        _table(v, path, out)
    for k, v in arrays:
        path = prefix + (_key(k),)
        for item in v:
            out.append("")
            out.append("[[" + ".".join(path) + "]]")
            _table(item, path, out)


def dumps(data: Mapping[str, Any], header: str = "") -> str:
    """``data`` as a TOML document; ``header`` lines are written first as ``#`` comments."""
    out: list[str] = []
    for line in header.splitlines():
        out.append(("# " + line).rstrip())
    if header:
        out.append("")
    _table(data, (), out)
    text = "\n".join(out).strip("\n") + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)

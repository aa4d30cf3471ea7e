"""Learned state on disk: named NumPy arrays + a JSON header, no pickle, written atomically.

Layout of a state file (little-endian)::

    b"ERSTATE\\n"                    8 bytes magic
    header length                   uint32
    header                          UTF-8 JSON: {"format": 2, "kind": ..., "schema": N,
                                                 "meta": {...}, "arrays": [{"name", "dtype",
                                                 "shape", "offset", "nbytes"}...]}
    payload                         the arrays' bytes, C order, at their offsets
    sha256                          32 bytes: SHA-256 of everything before it

Only plain dtypes (``f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1``) are accepted, never objects, so
reading a state cannot run code. The SHA-256 covers the header (kind, schema, metadata such
as counts or a user name) and the payload, and is checked before the header is parsed: a
truncated, bit-flipped or hand-edited file is refused, naming the file and what differs.
Format-1 files (round 1: a ``payload_sha256`` in the header, the header itself unchecked)
are still read; every save writes format 2. The header's JSON is limited in size
(:data:`MAX_HEADER`) and nesting (:data:`MAX_DEPTH`), so a hostile header is one error.
:func:`save_state` writes through :mod:`edge_runtime.atomic` (temp file, fsync, rename,
directory fsync): after a crash or power cut the file is either the old state or the new
one, never a mix.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
from typing import Mapping

import numpy as np

from .atomic import AtomicFile
from .errors import EdgeRuntimeError

__all__ = ["StateError", "MAGIC", "save_state", "load_state", "read_header"]

MAGIC = b"ERSTATE\n"
FORMAT = 2
LEGACY_FORMATS = (1,)
MAX_DEPTH = 32
DIGEST = 32
DTYPES = ("<f4", "<f8", "|i1", "<i2", "<i4", "<i8", "|u1", "<u2", "<u4", "<u8", "|b1")
MAX_HEADER = 1 << 20


class StateError(EdgeRuntimeError):
    """A learned-state file is missing, corrupt, of another kind or another schema version."""


def _dtype_str(a: np.ndarray) -> str:
    s = a.dtype.newbyteorder("<").str if a.dtype.byteorder == ">" else a.dtype.str
    if s not in DTYPES:
        raise TypeError(f"state arrays must have a plain numeric dtype, got {a.dtype}")
    return s


def save_state(path, kind: str, schema: int, meta: Mapping, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` and JSON-able ``meta`` as a ``kind`` state of version ``schema``."""
    entries, chunks, offset = [], [], 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        dt = _dtype_str(a)
        a = a.astype(dt, copy=False)
        b = a.tobytes()
        entries.append({"name": str(name), "dtype": dt, "shape": list(a.shape), "offset": offset,
                        "nbytes": len(b)})
        chunks.append(b)
        offset += len(b)
    payload = b"".join(chunks)
    header = json.dumps({"format": FORMAT, "kind": kind, "schema": int(schema), "meta": meta,
                         "arrays": entries}, allow_nan=False, separators=(",", ":")).encode()
    if len(header) > MAX_HEADER:
        raise StateError(f"{os.fspath(path)}: state header of {len(header)} bytes exceeds {MAX_HEADER}")
    head = MAGIC + struct.pack("<I", len(header)) + header
    digest = hashlib.sha256(head)
    digest.update(payload)
    try:
        with AtomicFile(os.fspath(path), "wb") as f:
            f.write(head)
            f.write(payload)
            f.write(digest.digest())
    except OSError as e:
        raise StateError(f"{os.fspath(path)}: cannot write state file: {e.strerror or e}") from None


def _read(path) -> tuple[dict, bytes]:
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise StateError(f"{path}: state file not found") from None
    except IsADirectoryError:
        raise StateError(f"{path}: is a directory, expected a state file") from None
    except OSError as e:
        raise StateError(f"{path}: cannot read state file: {e.strerror}") from None
    if data[:len(MAGIC)] != MAGIC:
        raise StateError(f"{path}: not an edge_runtime state file (starts with {data[:8]!r}, "
                         f"expected {MAGIC!r}); was it written by another program?")
    if len(data) < len(MAGIC) + 4:
        raise StateError(f"{path}: truncated state file ({len(data)} bytes)")
    (hlen,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    if hlen > MAX_HEADER or start + hlen > len(data):
        raise StateError(f"{path}: truncated or corrupt state file (header of {hlen} bytes, "
                         f"file has {len(data)} bytes)")
    raw = data[start:start + hlen]
    # a format-2 file ends with the SHA-256 of all bytes before it: checked before parsing
    m = re.match(rb'\s*\{\s*"format"\s*:\s*(\d+)\s*[,}]', raw)
    fmt = int(m.group(1)) if m else None
    if fmt == FORMAT:
        if len(data) < start + hlen + DIGEST:
            raise StateError(f"{path}: truncated state file ({len(data)} bytes, the header alone needs "
                             f"{start + hlen + DIGEST})")
        body, stored = data[:-DIGEST], data[-DIGEST:]
        digest = hashlib.sha256(body).digest()
        if digest != stored:
            raise StateError(f"{path}: corrupt or edited state file (sha256 of its {len(body)} bytes is "
                             f"{digest.hex()[:16]}..., the file says {stored.hex()[:16]}...)")
        payload = data[start + hlen:-DIGEST]
    elif fmt in LEGACY_FORMATS:
        payload = data[start + hlen:]
    elif fmt is None:
        raise StateError(f"{path}: corrupt state header (expected JSON starting with {{\"format\": {FORMAT}, "
                         f"found {raw[:24]!r})")
    else:
        raise StateError(f"{path}: state format {fmt} is not supported (expected {FORMAT}, or the legacy "
                         f"{', '.join(map(str, LEGACY_FORMATS))})")
    depth = _depth(raw)
    if depth > MAX_DEPTH:
        raise StateError(f"{path}: corrupt state header (JSON nested {depth} deep, at most {MAX_DEPTH})")
    try:
        header = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise StateError(f"{path}: corrupt state header ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(header, dict) or header.get("format") != fmt:
        raise StateError(f"{path}: corrupt state header (expected a JSON object with \"format\": {fmt})")
    if fmt in LEGACY_FORMATS:
        digest = hashlib.sha256(payload).hexdigest()
        if digest != header.get("payload_sha256"):
            raise StateError(f"{path}: corrupt state file (payload of {len(payload)} bytes has sha256 "
                             f"{digest[:16]}..., header says {str(header.get('payload_sha256'))[:16]}...)")
    return header, payload


def _depth(raw: bytes) -> int:
    """The deepest ``[``/``{`` nesting of a JSON text (brackets inside strings not counted)."""
    depth = deepest = 0
    in_str = esc = False
    for ch in raw.decode("utf-8", "replace"):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def read_header(path) -> dict:
    """The JSON header of a state file (kind, schema, meta), checked for format only."""
    return _read(path)[0]


def load_state(path, kind: str, schema: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a ``kind`` state of version ``schema``; returns ``(meta, arrays)``.

    Raises :class:`StateError` naming the file, the value found and the one expected for a
    missing file, another program's file, another kind of state, another schema version, a
    truncated payload or a checksum mismatch.
    """
    path = os.fspath(path)
    header, payload = _read(path)
    if header.get("kind") != kind:
        raise StateError(f"{path}: is a {header.get('kind')!r} state, expected a {kind!r} state")
    if header.get("schema") != schema:
        raise StateError(f"{path}: {kind} state schema version {header.get('schema')!r} is not supported "
                         f"(expected {schema}); re-create it with this version of edge-runtime")
    arrays = {}
    try:
        for e in header["arrays"]:
            dt = np.dtype(e["dtype"]) if e["dtype"] in DTYPES else None
            if dt is None:
                raise StateError(f"{path}: array {e['name']!r} has dtype {e['dtype']!r} "
                                 f"(expected one of {', '.join(DTYPES)})")
            shape = tuple(int(s) for s in e["shape"])
            n = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
            off = int(e["offset"])
            if n != int(e["nbytes"]) or off < 0 or off + n > len(payload):
                raise StateError(f"{path}: array {e['name']!r} ({shape}, {dt}) does not fit the payload")
            arrays[e["name"]] = np.frombuffer(payload, dt, count=n // dt.itemsize, offset=off).reshape(shape).copy()
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"{path}: corrupt state header ({type(exc).__name__}: {exc})") from None
    meta = header.get("meta")
    if not isinstance(meta, dict):
        raise StateError(f"{path}: corrupt state header (meta is {type(meta).__name__}, expected an object)")
    return meta, arrays


def require(path, meta: Mapping, key: str, types, what: str):
    """``meta[key]`` checked against ``types``; a StateError naming file/key/value otherwise."""
    if key not in meta:
        raise StateError(f"{path}: state has no {key!r} (expected {what})")
    v = meta[key]
    if not isinstance(v, types) or isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise StateError(f"{path}: state {key} = {v!r} (expected {what})")
    if isinstance(v, float) and not math.isfinite(v):
        raise StateError(f"{path}: state {key} = {v!r} (expected {what}, finite)")
    return v


def require_array(path, arrays: Mapping, name: str, shape: tuple | None = None, finite: bool = True):
    """``arrays[name]`` with an optional exact shape (``None`` entries match any size)."""
    if name not in arrays:
        raise StateError(f"{path}: state has no array {name!r}")
    a = arrays[name]
    if shape is not None and (a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape))):
        raise StateError(f"{path}: state array {name!r} has shape {a.shape}, expected "
                         f"({', '.join('any' if s is None else str(s) for s in shape)})")
    if finite and a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise StateError(f"{path}: state array {name!r} holds NaN or Inf")
    return a

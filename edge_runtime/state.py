"""Learned state on disk: named NumPy arrays + a JSON header, no pickle, written atomically.

Layout of a state file (little-endian)::

    b"ERSTATE\\n"                    8 bytes magic
    header length                   uint32
    header                          UTF-8 JSON: {"format": 1, "kind": ..., "schema": N,
                                                 "meta": {...}, "arrays": [{"name", "dtype",
                                                 "shape", "offset", "nbytes"}...],
                                                 "payload_sha256": ...}
    payload                         the arrays' bytes, C order, at their offsets

Only plain dtypes (``f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1``) are accepted, never objects, so
reading a state cannot run code. The payload's SHA-256 is checked before any array is
handed out: a truncated or bit-flipped file is refused, naming the file and what differs.
:func:`save_state` writes through :mod:`edge_runtime.atomic` (temp file, fsync, rename,
directory fsync): after a crash or power cut the file is either the old state or the new
one, never a mix.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import Mapping

import numpy as np

from .atomic import AtomicFile
from .errors import EdgeRuntimeError

__all__ = ["StateError", "MAGIC", "save_state", "load_state", "read_header"]

MAGIC = b"ERSTATE\n"
FORMAT = 1
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
                         "arrays": entries, "payload_sha256": hashlib.sha256(payload).hexdigest()},
                        allow_nan=False, separators=(",", ":")).encode()
    try:
        with AtomicFile(os.fspath(path), "wb") as f:
            f.write(MAGIC)
            f.write(struct.pack("<I", len(header)))
            f.write(header)
            f.write(payload)
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
    try:
        header = json.loads(data[start:start + hlen].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StateError(f"{path}: corrupt state header ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StateError(f"{path}: state format {header.get('format') if isinstance(header, dict) else '?'!r} "
                         f"is not supported (expected {FORMAT})")
    return header, data[start + hlen:]


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
    digest = hashlib.sha256(payload).hexdigest()
    if digest != header.get("payload_sha256"):
        raise StateError(f"{path}: corrupt state file (payload of {len(payload)} bytes has sha256 "
                         f"{digest[:16]}..., header says {str(header.get('payload_sha256'))[:16]}...)")
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

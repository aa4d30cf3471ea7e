"""Inference backends: one module per library, one small interface (see :mod:`.base`).

    from edge_runtime.backends import load_session
    sess = load_session("models_int8/kws.onnx", threads=1)   # shared per process
    binding = sess.bind({"x": x}, {"y": y})                   # caller-owned arrays, once
    x[...] = block; binding.run()                             # per block: y holds the result

Nothing outside this package imports a backend library, and importing this package imports none
(each library is imported on the first ``load``).
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Mapping

from ..errors import ModelError
from .base import (Backend, Binding, LazySession, Session, TensorSpec, check_model_file, dequantize,
                   format_shape, is_dynamic_dim, quantize)
from .litert import BACKEND as _LITERT
from .onnxruntime import BACKEND as _ORT
from .native import BACKEND as _NATIVE
from .openvino import BACKEND as _OPENVINO

__all__ = ["BACKENDS", "EXTENSIONS", "Backend", "Binding", "LazySession", "Session", "TensorSpec",
           "available_backends", "backends_for", "check_model_file", "clear_cache", "dequantize",
           "format_shape", "get_backend", "is_dynamic_dim",
           "load_session", "parse_shape", "quantize", "resolve_shapes"]

#: name -> Backend, in order of preference
BACKENDS: dict[str, Backend] = {b.name: b for b in (_ORT, _LITERT, _OPENVINO, _NATIVE)}

#: file extension -> backend names that read it, preferred first
EXTENSIONS: dict[str, tuple[str, ...]] = {
    ".onnx": ("onnxruntime", "openvino"),
    ".ort": ("onnxruntime",),
    ".tflite": ("litert",),
    ".xml": ("openvino",),
    ".so": ("native",),
}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except (KeyError, TypeError):
        raise ModelError(f"unknown backend {name!r}; expected one of {list(BACKENDS)}") from None


def available_backends() -> list[str]:
    return [n for n, b in BACKENDS.items() if b.available()]


def backends_for(path) -> list[Backend]:
    """The backends that read ``path`` (by extension), preferred first, installed or not."""
    ext = Path(os.fspath(path)).suffix.lower()
    names = EXTENSIONS.get(ext)
    if not names:
        raise ModelError(f"model file {path} has extension {ext or '(none)'!r}; expected one of "
                         f"{', '.join(EXTENSIONS)}")
    return [BACKENDS[n] for n in names]


def _choose(path, backend) -> Backend:
    candidates = backends_for(path)
    if backend is not None:
        b = backend if isinstance(backend, Backend) else get_backend(backend)
        if b not in candidates:
            raise ModelError(f"model file {path}: backend {b.name} does not read {Path(path).suffix} files; "
                             f"use one of {[c.name for c in candidates]}")
        if not b.available():
            raise b.not_installed()
        return b
    for b in candidates:
        if b.available():
            return b
    hint = " or ".join(f"edge-runtime[{c.extra}]" for c in candidates)
    raise ModelError(f"model file {path}: no installed backend reads {Path(path).suffix} files "
                     f"(backend {candidates[0].name} is not installed); pip install {hint}")


def _freeze(v):
    if isinstance(v, Mapping):
        return tuple(sorted((str(k), _freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, (set, frozenset)):
        return tuple(sorted(_freeze(x) for x in v))
    try:
        hash(v)
        return v
    except TypeError:
        return repr(v)


_cache: dict[tuple, Session | LazySession] = {}
_cache_lock = threading.RLock()


def clear_cache() -> None:
    """Forget every shared session (they are released once no one holds them)."""
    with _cache_lock:
        _cache.clear()


def load_session(path, backend: str | Backend | None = None, threads: int = 1, device: str | None = None,
                 options: Mapping | None = None, lazy: bool = False) -> Session | LazySession:
    """Load ``path`` with ``backend`` (default: the first installed one for its extension).

    Sessions are shared for the process: the same file (real path, mtime, size), backend, threads,
    device and options give the same object; a changed file loads anew.  ``lazy=True`` checks the
    file and the backend now and returns a :class:`LazySession` that loads on first use.
    Raises :class:`ModelError` for a missing file, an unknown extension, a backend that is not
    installed, and an unreadable or corrupt model (the backend's message included).
    """
    check_model_file(path)
    b = _choose(path, backend)
    path = check_model_file(path, b.extensions, b.name)
    real = os.path.realpath(path)
    st = os.stat(real)
    base_key = (real, b.name, threads, None if device is None else str(device), _freeze(options or {}))
    key = (st.st_mtime_ns, st.st_size) + base_key + (bool(lazy),)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            return hit
        if lazy:
            sess = LazySession(lambda: load_session(path, b, threads, device, options), path, b.name)
        else:
            sess = b.load(path, threads=threads, device=device, options=options)
        # a file that changed on disk replaces its older sessions
        for k in [k for k in _cache if k[2:] == key[2:] and k != key]:
            del _cache[k]
        _cache[key] = sess
        return sess


def parse_shape(text: str) -> tuple[int, ...]:
    """``"1x16000"`` (or ``"1,16000"``) -> ``(1, 16000)``."""
    parts = str(text).replace(",", "x").lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise ModelError(f"shape {text!r}; expected positive integers joined by 'x', e.g. 1x16000") from None
    if not dims or any(d < 1 for d in dims):
        raise ModelError(f"shape {text!r}; expected positive integers joined by 'x', e.g. 1x16000")
    return dims


def resolve_shapes(session, overrides: Mapping[str, tuple | str] | None = None) -> dict[str, tuple[int, ...]]:
    """Concrete shape for every input of ``session``: its static shape, or the one in ``overrides``
    (``{name: (1, 16000)}`` or ``{name: "1x16000"}``), which must fit the model's fixed dims.
    Raises :class:`ModelError` naming an input whose dynamic dims have no override."""
    overrides = dict(overrides or {})
    names = [s.name for s in session.inputs]
    unknown = [n for n in overrides if n not in names]
    if unknown:
        raise ModelError(f"model {session.path}: --shape names unknown input(s) {unknown}; its inputs are {names}")
    shapes = {}
    for spec in session.inputs:
        if spec.name in overrides:
            given = overrides[spec.name]
            shape = parse_shape(given) if isinstance(given, str) else tuple(int(d) for d in given)
            if not spec.matches(shape) or any(d < 1 for d in shape):
                raise ModelError(f"model {session.path}: shape {'x'.join(map(str, shape))} for input "
                                 f"{spec.name!r} does not fit the model's {format_shape(spec.shape)}")
            shapes[spec.name] = shape
        elif spec.is_dynamic:
            example = "x".join("1" if d is None else str(d) for d in spec.shape)
            raise ModelError(f"model {session.path}: input {spec.name!r} has dynamic dims "
                             f"{list(spec.dynamic_dims)} (shape {format_shape(spec.shape)}); give a concrete "
                             f"shape, e.g. --shape {spec.name}={example}")
        else:
            shapes[spec.name] = tuple(spec.shape)
    return shapes

"""The small interface every inference backend implements.

A :class:`Backend` loads a model file into a :class:`Session`.  A session describes its
tensors (:class:`TensorSpec`) and runs in one of two ways:

* ``session.run(inputs, outputs=None) -> dict``: convenient; validates names, dtypes and shapes;
  writes into the caller's ``outputs`` arrays when given, otherwise returns new arrays.
* the fast path: ``binding = session.bind(inputs, outputs)`` once, with caller-owned,
  preallocated, C-contiguous arrays; then, each block, fill the input arrays in place and call
  ``binding.run()`` (or ``session.run_bound()`` for the most recent binding of that session).
  The results land in the bound output arrays.  Nothing is validated per call and, where the
  backend allows, nothing is allocated in Python per call.

Sessions are shared (see :func:`edge_runtime.backends.load_session`), so a node that owns arrays
should keep the :class:`Binding` object ``bind`` returns: two nodes sharing one session each have
their own binding, and ``session.run_bound()`` only runs the latest one.

Nothing here imports a backend library.
"""
from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..errors import ModelError

__all__ = ["TensorSpec", "Session", "Binding", "Backend", "LazySession", "check_model_file",
           "is_dynamic_dim", "format_shape", "default_cache_dir", "quantize", "dequantize"]


def is_dynamic_dim(d) -> bool:
    """True for a dimension that is not fixed by the model (``None``, ``-1`` or a symbolic name)."""
    return d is None or isinstance(d, str) or (isinstance(d, (int, np.integer)) and d < 0)


def format_shape(shape) -> str:
    """``(None, 64)`` -> ``[?, 64]``."""
    return "[" + ", ".join("?" if is_dynamic_dim(d) else str(int(d)) for d in shape) + "]"


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output.

    ``shape`` is a tuple of ints with ``None`` for a dynamic dimension (backends report
    symbolic names, ``-1`` or ``?``; all become ``None``).  ``dtype`` is a :class:`numpy.dtype`.
    ``quant`` is ``(scale, zero_point)`` for a quantized (e.g. INT8) tensor, else ``None``:
    ``real = scale * (q - zero_point)``.
    """

    name: str
    shape: tuple
    dtype: np.dtype
    quant: tuple[float, int] | None = None

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(None if is_dynamic_dim(d) else int(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def dynamic_dims(self) -> tuple[int, ...]:
        """Indices of the dynamic dimensions."""
        return tuple(i for i, d in enumerate(self.shape) if d is None)

    @property
    def is_dynamic(self) -> bool:
        return any(d is None for d in self.shape)

    def matches(self, shape) -> bool:
        """True when a concrete ``shape`` fits this spec (same rank, fixed dims equal)."""
        shape = tuple(shape)
        return len(shape) == len(self.shape) and all(
            s is None or s == d for s, d in zip(self.shape, shape))

    def __str__(self) -> str:
        q = f" quant(scale={self.quant[0]:g}, zero_point={self.quant[1]})" if self.quant else ""
        return f"{self.name}: {self.dtype} {format_shape(self.shape)}{q}"


class Binding:
    """Caller-owned arrays bound to a session once; :meth:`run` runs the model on them.

    ``inputs`` / ``outputs`` are the very dicts of arrays given to :meth:`Session.bind`.
    Fill the input arrays in place (``x[...] = block``) and call :meth:`run`; read the
    output arrays afterwards.  Never rebind a new array object to a name: make a new binding.
    """

    __slots__ = ("session", "inputs", "outputs", "run", "_keep", "__weakref__")

    def __init__(self, session: "Session", inputs: dict, outputs: dict, run: Callable[[], object],
                 keep=None):
        self.session = session
        self._keep = keep  # backend objects that must live as long as the binding
        self.inputs = inputs
        self.outputs = outputs
        #: ``run()`` -> None; the backend's tightest call sequence (an attribute, not a method,
        #: so calling it costs one Python call)
        self.run = run

    def __call__(self):
        return self.run()


class Session(ABC):
    """A loaded model.  Subclasses set ``path``, ``backend``, ``inputs``, ``outputs``."""

    path: str
    backend: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    #: True when ``_bind`` itself checks dynamic output shapes against the bound arrays
    _bind_checks_output_shapes = False

    def __init__(self, path: str, backend: str):
        self.path = str(path)
        self.backend = backend
        self._last_binding: Binding | None = None

    # ---- description
    def input(self, name: str) -> TensorSpec:
        for s in self.inputs:
            if s.name == name:
                return s
        raise ModelError(f"model {self.path}: no input named {name!r}; "
                         f"its inputs are {[s.name for s in self.inputs]}")

    def output(self, name: str) -> TensorSpec:
        for s in self.outputs:
            if s.name == name:
                return s
        raise ModelError(f"model {self.path}: no output named {name!r}; "
                         f"its outputs are {[s.name for s in self.outputs]}")

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    # ---- convenient path
    def run(self, inputs: Mapping[str, np.ndarray] | None = None,
            outputs: Mapping[str, np.ndarray] | None = None) -> dict:
        """Run once.  ``inputs`` maps every input name to an array of the input's dtype and a
        shape that fits its spec; ``inputs=None`` runs the most recent binding and returns its
        output arrays.  ``outputs`` (optional) maps output names to arrays to write into; the
        returned dict holds those very arrays, and new arrays for the other outputs."""
        if inputs is None:
            if outputs is not None:
                raise ModelError(f"model {self.path}: run(inputs=None, outputs=...) is not allowed; "
                                 "bind() the output arrays instead")
            self.run_bound()
            return dict(self._last_binding.outputs)
        feeds = self._check_inputs(inputs)
        if outputs is not None:
            outputs = self._check_outputs(outputs)
        return self._run(feeds, outputs or {})

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict:
        """Backend run on validated inputs; write into ``outputs`` where given."""

    # ---- fast path
    def bind(self, inputs: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray]) -> Binding:
        """Bind caller-owned arrays (C-contiguous, exact dtype, concrete shapes fitting the specs)
        for every input and output.  Returns the :class:`Binding`; also makes it the one
        :meth:`run_bound` runs."""
        feeds = self._check_inputs(inputs, for_bind=True)
        outs = self._check_outputs(outputs)
        missing = [s.name for s in self.outputs if s.name not in outs]
        if missing:
            raise ModelError(f"model {self.path}: bind() needs an array for every output; missing "
                             f"{missing} (expected {[str(self.output(n)) for n in missing]})")
        if not self._bind_checks_output_shapes and any(s.is_dynamic for s in self.outputs):
            # backends differ on a bound output of the wrong shape (ORT fails at run, OpenVINO
            # leaves the array untouched): learn the output shapes for these inputs with one run
            got = self._run(feeds, {})
            for spec in self.outputs:
                if got[spec.name].shape != outs[spec.name].shape:
                    raise ModelError(
                        f"model {self.path}: output {spec.name!r} will have shape {list(got[spec.name].shape)} "
                        f"for input shapes { {k: list(v.shape) for k, v in feeds.items()} }; the array bound "
                        f"to it has {list(outs[spec.name].shape)}")
        binding = self._bind(feeds, outs)
        self._last_binding = binding
        return binding

    @abstractmethod
    def _bind(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> Binding:
        """Backend binding of validated arrays."""

    def run_bound(self) -> dict:
        """Run the most recent binding; returns its outputs dict (the caller's arrays)."""
        b = self._last_binding
        if b is None:
            raise ModelError(f"model {self.path}: run_bound() before bind(); bind the input and "
                             "output arrays first")
        b.run()
        return b.outputs

    def close(self) -> None:
        """Release backend resources.  Only for a session you own (``Backend.load``): one from
        ``load_session`` is shared for the process (``clear_cache()`` forgets those)."""
        self._last_binding = None

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.backend} {self.path} inputs=[{'; '.join(map(str, self.inputs))}] "
                f"outputs=[{'; '.join(map(str, self.outputs))}]>")

    # ---- validation helpers (used by run and bind, never on the bound fast path)
    def _check_inputs(self, inputs: Mapping[str, np.ndarray], for_bind: bool = False) -> dict:
        specs = self.inputs
        if type(inputs) is dict and len(inputs) == len(specs):  # fast path: all exact, static shapes
            feeds = {}
            for spec in specs:
                arr = inputs.get(spec.name)
                if (type(arr) is not np.ndarray or arr.dtype != spec.dtype or arr.shape != spec.shape
                        or not arr.flags.c_contiguous):
                    break
                feeds[spec.name] = arr
            else:
                return feeds
        if not isinstance(inputs, Mapping):
            raise ModelError(f"model {self.path}: inputs must be a dict name -> array, got "
                             f"{type(inputs).__name__}; its inputs are {self.input_names}")
        unknown = [k for k in inputs if k not in self.input_names]
        if unknown:
            raise ModelError(f"model {self.path}: unknown input(s) {unknown}; its inputs are {self.input_names}")
        feeds = {}
        for spec in self.inputs:
            if spec.name not in inputs:
                raise ModelError(f"model {self.path}: input {spec.name!r} not given; expected {spec}")
            arr = inputs[spec.name]
            if not isinstance(arr, np.ndarray):
                if for_bind:
                    raise ModelError(f"model {self.path}: input {spec.name!r} must be a numpy array to "
                                     f"bind, got {type(arr).__name__}")
                arr = np.asarray(arr)
            self._check_array("input", spec, arr, for_bind)
            if not for_bind and not arr.flags.c_contiguous:
                arr = np.ascontiguousarray(arr)
            feeds[spec.name] = arr
        return feeds

    def _check_outputs(self, outputs: Mapping[str, np.ndarray]) -> dict:
        if not isinstance(outputs, Mapping):
            raise ModelError(f"model {self.path}: outputs must be a dict name -> array, got "
                             f"{type(outputs).__name__}; its outputs are {self.output_names}")
        unknown = [k for k in outputs if k not in self.output_names]
        if unknown:
            raise ModelError(f"model {self.path}: unknown output(s) {unknown}; its outputs are {self.output_names}")
        outs = {}
        for spec in self.outputs:
            if spec.name in outputs:
                arr = outputs[spec.name]
                if not isinstance(arr, np.ndarray):
                    raise ModelError(f"model {self.path}: output {spec.name!r} must be a numpy array, "
                                     f"got {type(arr).__name__}")
                self._check_array("output", spec, arr, True)
                if not arr.flags.writeable:
                    raise ModelError(f"model {self.path}: output array {spec.name!r} is read-only")
                outs[spec.name] = arr
        return outs

    def _check_array(self, kind: str, spec: TensorSpec, arr: np.ndarray, strict: bool) -> None:
        if arr.dtype != spec.dtype:
            raise ModelError(f"model {self.path}: {kind} {spec.name!r} has dtype {arr.dtype}; expected "
                             f"{spec.dtype} ({spec})")
        if not spec.matches(arr.shape):
            raise ModelError(f"model {self.path}: {kind} {spec.name!r} has shape {list(arr.shape)}; "
                             f"expected {format_shape(spec.shape)}")
        if strict and not arr.flags.c_contiguous:
            raise ModelError(f"model {self.path}: {kind} array {spec.name!r} must be C-contiguous to bind "
                             "(use np.ascontiguousarray or allocate it with np.empty)")


class Backend(ABC):
    """One inference library.  Instances are stateless apart from caches; see ``BACKENDS``."""

    #: registry name, e.g. ``"onnxruntime"``
    name: str = ""
    #: model formats it reads, e.g. ``("onnx",)``
    formats: tuple[str, ...] = ()
    #: file extensions it reads, lower case with the dot
    extensions: tuple[str, ...] = ()
    #: ``pip install edge-runtime[<extra>]`` installs it
    extra: str = ""

    @abstractmethod
    def available(self) -> bool:
        """True when the library is importable (checked without importing it where possible)."""

    @abstractmethod
    def load(self, path, threads: int = 1, device: str | None = None,
             options: Mapping | None = None) -> Session:
        """Load ``path``; raises :class:`ModelError` for a missing, unreadable or corrupt file."""

    @abstractmethod
    def devices(self) -> list[str]:
        """Devices this backend can run on here (``"cpu"`` first)."""

    def not_installed(self) -> ModelError:
        return ModelError(f"backend {self.name} is not installed; pip install edge-runtime[{self.extra}]")

    def _check_load_args(self, path, threads, options) -> str:
        if not self.available():
            raise self.not_installed()
        path = check_model_file(path, self.extensions, self.name)
        if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1:
            raise ModelError(f"model {path}: threads={threads!r} for backend {self.name}; expected an integer >= 1")
        if options is not None and not isinstance(options, Mapping):
            raise ModelError(f"model {path}: options for backend {self.name} must be a dict, got "
                             f"{type(options).__name__}")
        return path

    def _check_options(self, path, options: Mapping | None, known: tuple[str, ...]) -> dict:
        options = dict(options or {})
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ModelError(f"model {path}: unknown option(s) {unknown} for backend {self.name}; "
                             f"expected some of {list(known)}")
        return options

    def __repr__(self) -> str:
        return f"<Backend {self.name} formats={self.formats} available={self.available()}>"


def check_model_file(path, extensions: tuple[str, ...] = (), backend: str | None = None) -> str:
    """Return ``str(path)`` if it names a readable regular file with a known extension."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise ModelError(f"model file {p} not found")
    if not p.is_file():
        raise ModelError(f"model file {p} is not a regular file")
    if not os.access(p, os.R_OK):
        raise ModelError(f"model file {p} is not readable (permissions)")
    if p.stat().st_size == 0:
        raise ModelError(f"model file {p} is empty; expected a model" + (f" for {backend}" if backend else ""))
    if extensions and p.suffix.lower() not in extensions:
        raise ModelError(f"model file {p} has extension {p.suffix or '(none)'!r}; backend {backend} "
                         f"reads {', '.join(extensions)}")
    return str(p)


class LazySession:
    """A stand-in for a :class:`Session` that loads it on first use (thread-safe).

    Attribute access (``inputs``, ``run``, ``bind`` ...) triggers the load through ``loader``;
    after that it forwards everything to the real session (``.session``).
    """

    def __init__(self, loader: Callable[[], Session], path: str, backend: str):
        self._loader = loader
        self._session: Session | None = None
        self._lock = threading.Lock()
        self.path = path
        self.backend = backend

    @property
    def loaded(self) -> bool:
        return self._session is not None

    @property
    def session(self) -> Session:
        s = self._session
        if s is None:
            with self._lock:
                if self._session is None:
                    self._session = self._loader()
                s = self._session
        return s

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_loader", "_session", "_lock"):
            raise AttributeError(name)
        return getattr(self.session, name)

    def __repr__(self) -> str:
        if self._session is None:
            return f"<LazySession {self.backend} {self.path} (not loaded)>"
        return f"<LazySession {self._session!r}>"


def default_cache_dir(sub: str) -> Path:
    """``$XDG_CACHE_HOME/edge_runtime/<sub>`` (``~/.cache`` when unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "edge_runtime" / sub


def quantize(x: np.ndarray, spec: TensorSpec, out: np.ndarray | None = None) -> np.ndarray:
    """Real values -> the quantized integer tensor ``spec`` expects (round half to even, saturate)."""
    if spec.quant is None:
        raise ModelError(f"tensor {spec.name!r} is not quantized ({spec}); expected a quant (scale, zero_point)")
    scale, zero = spec.quant
    info = np.iinfo(spec.dtype)
    q = np.clip(np.rint(np.asarray(x, np.float32) / np.float32(scale)) + zero, info.min, info.max)
    if out is None:
        return q.astype(spec.dtype)
    np.copyto(out, q, casting="unsafe")
    return out


def dequantize(q: np.ndarray, spec: TensorSpec, out: np.ndarray | None = None) -> np.ndarray:
    """Quantized integers -> float32 real values (``scale * (q - zero_point)``)."""
    if spec.quant is None:
        raise ModelError(f"tensor {spec.name!r} is not quantized ({spec}); expected a quant (scale, zero_point)")
    scale, zero = spec.quant
    if out is None:
        out = np.empty(np.shape(q), np.float32)
    np.copyto(out, q, casting="unsafe")  # widen first: int8 arithmetic would wrap
    out -= np.float32(zero)
    out *= np.float32(scale)
    return out


def short_error(exc: BaseException, limit: int = 600) -> str:
    """A backend exception as one short line for a ModelError message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit] + " ..."

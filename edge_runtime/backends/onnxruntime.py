"""ONNX Runtime backend (``pip install edge-runtime[onnx]``).

* One intra-op thread by default, one inter-op thread, sequential execution, graph optimization
  ALL, and thread-pool spinning OFF (``session.intra_op.allow_spinning`` /
  ``session.inter_op.allow_spinning`` = ``"0"``): small audio models finish in microseconds and a
  spinning pool would keep idle cores busy between blocks.
* Devices: ``None``/``"cpu"`` -> CPUExecutionProvider; ``"cuda"`` (``"cuda:N"``, ``"gpu"``) ->
  CUDA; ``"tensorrt"`` -> TensorRT then CUDA (engine cache under ``cache_dir``); ``"auto"`` ->
  TensorRT/CUDA on a Jetson when the providers are present, CPU elsewhere.  CPU is always the
  last provider so unsupported nodes fall back to it.
* Fast path: an IOBinding per :class:`~edge_runtime.backends.base.Binding`, inputs and outputs bound
  to ``OrtValue``s created over the caller's numpy buffers (``OrtValue.ortvalue_from_numpy``, zero
  copy on CPU), run with the session's C-level ``run_with_iobinding`` (the public wrapper adds only
  WebGPU graph-capture bookkeeping, not used here).

Options (``options=`` dict): ``allow_spinning`` (bool, default False), ``graph_optimization``
(``"disable"``, ``"basic"``, ``"extended"``, ``"all"``; default ``"all"``), ``config`` (dict of
extra session config entries), ``providers`` (explicit provider list, overrides ``device``),
``cache_dir`` (TensorRT engine cache).
"""
from __future__ import annotations

import functools
import importlib.util
from typing import Mapping

import numpy as np

from ..errors import ModelError
from .base import Backend, Binding, Session, TensorSpec, default_cache_dir, short_error

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(uint16)": np.uint16, "tensor(int32)": np.int32, "tensor(uint32)": np.uint32,
    "tensor(int64)": np.int64, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}
_OPT_LEVELS = ("disable", "basic", "extended", "all")
_OPTIONS = ("allow_spinning", "graph_optimization", "config", "providers", "cache_dir")

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def _ort():
    import onnxruntime

    return onnxruntime


def _on_jetson() -> bool:
    try:
        from ..platform import board

        return board()["kind"] == "jetson"
    except Exception:  # platform detection must never stop a model from loading
        return False


class OrtSession(Session):
    def __init__(self, path: str, sess, providers: list):
        super().__init__(path, "onnxruntime")
        self._sess = sess
        self.providers = providers
        self.inputs = [self._spec(a, "input") for a in sess.get_inputs()]
        self.outputs = [self._spec(a, "output") for a in sess.get_outputs()]
        self._out_names = [s.name for s in self.outputs]

    def _spec(self, arg, kind) -> TensorSpec:
        dtype = _ORT_TYPES.get(arg.type)
        if dtype is None:
            raise ModelError(f"model {self.path}: {kind} {arg.name!r} has type {arg.type}; onnxruntime "
                             f"sessions here support tensors of {sorted(_ORT_TYPES)}")
        return TensorSpec(arg.name, tuple(arg.shape), np.dtype(dtype))

    def _run(self, feeds, outputs):
        try:
            results = self._sess.run(self._out_names, feeds)
        except Exception as exc:
            raise ModelError(f"model {self.path}: onnxruntime run failed: {short_error(exc)}") from exc
        out = {}
        for name, res in zip(self._out_names, results):
            dst = outputs.get(name)
            if dst is not None:
                if dst.shape != res.shape:
                    raise ModelError(f"model {self.path}: output {name!r} has shape {list(res.shape)}; "
                                     f"the array given for it has {list(dst.shape)}")
                np.copyto(dst, res)
                out[name] = dst
            else:
                out[name] = res
        return out

    def _bind(self, inputs, outputs):
        ort = _ort()
        path = self.path
        try:
            io = self._sess.io_binding()
            for name, arr in inputs.items():
                io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr))
            for name, arr in outputs.items():
                io.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(arr))
        except Exception as exc:
            raise ModelError(f"model {path}: onnxruntime cannot bind the arrays: {short_error(exc)}") from exc
        # C-level call when this ORT has it (same call the public wrapper makes); else the wrapper
        c_sess, c_io = getattr(self._sess, "_sess", None), getattr(io, "_iobinding", None)
        capture = getattr(c_sess, "is_webgpu_graph_capture_enabled", None)
        if c_sess is not None and c_io is not None and not (capture and capture()):
            call = functools.partial(c_sess.run_with_iobinding, c_io, None)
        else:
            call = functools.partial(self._sess.run_with_iobinding, io)

        def run():
            try:
                call()
            except Exception as exc:
                raise ModelError(f"model {path}: onnxruntime run failed: {short_error(exc)}") from exc

        # keep the IOBinding (and through it the OrtValues over the arrays) alive with the binding
        return Binding(self, dict(inputs), dict(outputs), run, keep=io)

    def close(self):
        super().close()
        self._sess = None


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    formats = ("onnx",)
    extensions = (".onnx", ".ort")
    extra = "onnx"

    def available(self) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    def devices(self) -> list[str]:
        if not self.available():
            return []
        prov = _ort().get_available_providers()
        devs = ["cpu"]
        if CUDA in prov:
            devs.append("cuda")
        if TRT in prov:
            devs.append("tensorrt")
        return devs

    def providers_for(self, device: str | None, path: str, cache_dir=None) -> list:
        """Execution provider list for ``device`` (see module doc)."""
        available = _ort().get_available_providers()
        dev = (device or "cpu").lower()
        device_id = 0
        if ":" in dev:
            dev, _, idx = dev.partition(":")
            if not idx.isdigit():
                raise ModelError(f"model {path}: device {device!r} for onnxruntime; expected e.g. 'cuda:0'")
            device_id = int(idx)
        if dev == "auto":
            if _on_jetson() and (TRT in available or CUDA in available):
                dev = "tensorrt" if TRT in available else "cuda"
            else:
                dev = "cpu"
        if dev == "cpu":
            return [CPU]
        if dev in ("cuda", "gpu"):
            if CUDA not in available:
                raise ModelError(f"model {path}: device {device!r} needs onnxruntime's {CUDA}; this "
                                 f"onnxruntime has {available} (pip install onnxruntime-gpu, or use device 'cpu')")
            return [(CUDA, {"device_id": device_id}), CPU]
        if dev in ("tensorrt", "trt"):
            if TRT not in available:
                raise ModelError(f"model {path}: device {device!r} needs onnxruntime's {TRT}; this "
                                 f"onnxruntime has {available} (use device 'cuda' or 'cpu')")
            cache = str(cache_dir or default_cache_dir("tensorrt"))
            trt = (TRT, {"device_id": device_id, "trt_engine_cache_enable": True,
                         "trt_engine_cache_path": cache, "trt_timing_cache_enable": True,
                         "trt_timing_cache_path": cache})
            return [trt] + ([(CUDA, {"device_id": device_id})] if CUDA in available else []) + [CPU]
        raise ModelError(f"model {path}: device {device!r} for onnxruntime; expected one of "
                         "'cpu', 'cuda', 'cuda:N', 'tensorrt', 'auto'")

    def load(self, path, threads: int = 1, device: str | None = None, options: Mapping | None = None) -> OrtSession:
        path = self._check_load_args(path, threads, options)
        opts = self._check_options(path, options, _OPTIONS)
        ort = _ort()
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = str(opts.get("graph_optimization", "all")).lower()
        if level not in _OPT_LEVELS:
            raise ModelError(f"model {path}: graph_optimization={level!r} for onnxruntime; expected one of {_OPT_LEVELS}")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        spin = "1" if opts.get("allow_spinning", False) else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        so.add_session_config_entry("session.inter_op.allow_spinning", spin)
        config = opts.get("config") or {}
        if not isinstance(config, Mapping):
            raise ModelError(f"model {path}: option config for onnxruntime must be a dict of session "
                             f"config entries, got {type(config).__name__}")
        for k, v in config.items():
            so.add_session_config_entry(str(k), str(v))
        providers = opts.get("providers") or self.providers_for(device, path, opts.get("cache_dir"))
        try:
            sess = ort.InferenceSession(path, sess_options=so, providers=list(providers))
        except Exception as exc:
            raise ModelError(f"model {path}: onnxruntime cannot load it ({short_error(exc)}); expected a "
                             "valid ONNX model (re-export or re-download it)") from exc
        return OrtSession(path, sess, sess.get_providers())


BACKEND = OnnxRuntimeBackend()

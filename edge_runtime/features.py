"""Streaming feature extractors for on-device learning (anomaly detection, personalization).

One shape for every extractor, so a classifier's embedding can replace log-mel statistics
without touching the detectors or the nodes::

    fx = make_extractor({"type": "logmel_stats", "n_mels": 64})   # or from a state's meta
    fx.prepare(sample_rate)          # allocates everything; fx.hop, fx.dim are then fixed
    fx.push(hop_samples)             # (hop,) float32 mono; True when fx.out holds a new vector
    fx.out                           # (dim,) float32, overwritten by the next push
    fx.reset(); fx.config()          # config() rebuilds the same extractor (saved in states)

:class:`LogMelStats` runs the compiled STFT and mel filterbank (:mod:`edge_runtime._spectral`)
one hop at a time and summarizes the last ``context`` frames per mel band: mean, standard
deviation and mean absolute frame-to-frame change (transients such as bearing clicks and
amplitude modulation raise the last without moving the mean much).

:class:`EmbeddingFeatures` wraps any :class:`Embedder` (``sample_rate``, ``window``, ``hop``,
``dim``, ``embed(frame, out)``), e.g. the audio classifier's penultimate layer once it exists;
register its factory with :func:`register_embedder` and name it in a config as
``{"type": "embedding", "embedder": "<name>"}``.
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import numpy as np

from .spectral import filter_bank, log_mel, mel_filterbank, power_spectrum, stft_analyzer

__all__ = ["FeatureExtractor", "LogMelStats", "Embedder", "EmbeddingFeatures", "register_embedder",
           "make_extractor", "extract"]


@runtime_checkable
class FeatureExtractor(Protocol):
    """What detectors and nodes need from a feature extractor."""

    hop: int
    dim: int
    sample_rate: int
    out: np.ndarray

    def prepare(self, sample_rate: int) -> None: ...
    def push(self, samples: np.ndarray) -> bool: ...
    def reset(self) -> None: ...
    def config(self) -> dict: ...


class LogMelStats:
    """Mean, std and mean |delta| of log-mel energies over the last ``context`` STFT frames.

    ``frame_ms``/``hop_ms`` set the STFT (Hann window; the FFT size is the frame rounded to a
    multiple of 4 samples); one vector of ``3 * n_mels`` values per hop once ``context``
    frames have been seen.
    """

    type = "logmel_stats"

    def __init__(self, n_mels: int = 96, frame_ms: float = 64.0, hop_ms: float = 32.0, context: int = 32,
                 fmin: float = 20.0, fmax: float | None = None):
        if not 4 <= int(n_mels) <= 256:
            raise ValueError(f"n_mels={n_mels} is outside 4..256")
        if not 0 < hop_ms <= frame_ms <= 1000:
            raise ValueError(f"need 0 < hop_ms <= frame_ms <= 1000, got hop_ms={hop_ms}, frame_ms={frame_ms}")
        if not 2 <= int(context) <= 1024:
            raise ValueError(f"context={context} frames is outside 2..1024")
        self.n_mels, self.frame_ms, self.hop_ms, self.context = int(n_mels), float(frame_ms), float(hop_ms), int(context)
        self.fmin, self.fmax = float(fmin), None if fmax is None else float(fmax)
        self.sample_rate = 0
        self.hop = 0
        self.dim = 3 * self.n_mels

    def config(self) -> dict:
        return {"type": self.type, "n_mels": self.n_mels, "frame_ms": self.frame_ms, "hop_ms": self.hop_ms,
                "context": self.context, "fmin": self.fmin, "fmax": self.fmax}

    def prepare(self, sample_rate: int) -> None:
        sr = int(sample_rate)
        n_fft = max(16, int(round(sr * self.frame_ms / 1000.0 / 4)) * 4)
        hop = int(round(sr * self.hop_ms / 1000.0))
        hop = min(max(1, hop), n_fft)
        fmax = sr / 2 if self.fmax is None else min(self.fmax, sr / 2)
        if not self.fmin < fmax:
            raise ValueError(f"fmin={self.fmin:g} Hz must be below fmax={fmax:g} Hz at {sr} Hz")
        self.sample_rate, self.n_fft, self.hop = sr, n_fft, hop
        self.ana = stft_analyzer(n_fft, hop, "hann", 1)
        self.fb = filter_bank(mel_filterbank(sr, n_fft, self.n_mels, self.fmin, fmax))
        M, W = self.n_mels, self.context
        self.power = np.zeros((1, n_fft // 2 + 1), np.float32)
        self.mel = np.zeros((1, M), np.float32)
        self.hist = np.zeros((W, M), np.float32)     # ring of log-mel frames
        self.dhist = np.zeros((W, M), np.float32)    # ring of |frame - previous frame|
        self.tmp = np.zeros((W, M), np.float32)
        # means over the context as a (1, W) @ (W, M) product: a reduction along axis 0 would
        # make NumPy allocate a buffer every frame; BLAS needs none
        self.avg = np.full((1, W), 1.0 / W, np.float32)
        self.mean2 = np.zeros((1, M), np.float32)
        self.ones = np.ones((W, 1), np.float32)   # and the broadcast as an outer product (same reason)
        self.block = np.zeros((1, hop), np.float32)
        self.out = np.zeros(self.dim, np.float32)
        self.mean, self.std, self.dmean = self.out[:M], self.out[M:2 * M], self.out[2 * M:]
        self.reset()

    def reset(self) -> None:
        self.hist[...] = 0
        self.dhist[...] = 0
        self.out[...] = 0
        self.ana.reset()
        self.seen = 0
        self.pos = 0
        self.warm = -(-self.n_fft // self.hop) - 1   # STFT frames that still hold the zeros before the stream

    def push(self, samples: np.ndarray) -> bool:
        """Analyse one hop of mono samples; True when :attr:`out` holds a new vector."""
        self.block[0] = samples
        self.ana.push(self.block)
        if self.warm > 0:
            self.warm -= 1
            return False
        power_spectrum(self.ana.re, self.ana.im, self.power)
        log_mel(self.fb, self.power, self.mel)
        W = self.context
        p = self.pos
        row = self.hist[p]
        prev = self.hist[(p - 1) % W]
        np.subtract(self.mel[0], prev, out=self.dhist[p])
        np.abs(self.dhist[p], out=self.dhist[p])
        row[...] = self.mel[0]
        self.pos = (p + 1) % W
        self.seen += 1
        if self.seen == 1:
            self.dhist[p] = 0.0
        if self.seen < W:
            return False
        m2 = self.mean2
        np.matmul(self.avg, self.hist, out=m2)
        self.mean[...] = m2[0]
        np.matmul(self.ones, m2, out=self.tmp)
        np.subtract(self.hist, self.tmp, out=self.tmp)
        np.square(self.tmp, out=self.tmp)
        np.matmul(self.avg, self.tmp, out=m2)
        np.maximum(m2, 0.0, out=m2)
        np.sqrt(m2[0], out=self.std)
        np.matmul(self.avg, self.dhist, out=m2)
        self.dmean[...] = m2[0]
        return True


@runtime_checkable
class Embedder(Protocol):
    """A frame-to-embedding model (e.g. the audio classifier's penultimate layer)."""

    sample_rate: int
    window: int
    hop: int
    dim: int

    def embed(self, frame: np.ndarray, out: np.ndarray) -> None: ...


_EMBEDDERS: dict[str, Callable[..., Embedder]] = {}


def register_embedder(name: str, factory: Callable[..., Embedder]) -> None:
    """Make ``{"type": "embedding", "embedder": name}`` build ``factory(**params)``."""
    _EMBEDDERS[name] = factory


class EmbeddingFeatures:
    """Feature vectors from an :class:`Embedder`: one ``embed`` call per ``hop`` on the last
    ``window`` samples (a ring of samples, no allocation per hop)."""

    type = "embedding"

    def __init__(self, embedder: str | Embedder, params: dict | None = None):
        self.params = dict(params or {})
        if isinstance(embedder, str):
            if embedder not in _EMBEDDERS:
                raise ValueError(f"embedder {embedder!r} is not registered (known: "
                                 f"{', '.join(sorted(_EMBEDDERS)) or 'none'})")
            self.embedder_name = embedder
            self.embedder = _EMBEDDERS[embedder](**self.params)
        else:
            self.embedder_name = getattr(embedder, "name", type(embedder).__name__)
            self.embedder = embedder
        e = self.embedder
        self.hop, self.dim, self.window = int(e.hop), int(e.dim), int(e.window)
        self.sample_rate = int(e.sample_rate)

    def config(self) -> dict:
        return {"type": self.type, "embedder": self.embedder_name, "params": self.params}

    def prepare(self, sample_rate: int) -> None:
        if int(sample_rate) != self.sample_rate:
            raise ValueError(f"embedder {self.embedder_name!r} runs at {self.sample_rate} Hz, not {sample_rate}")
        self.ring = np.zeros(self.window, np.float32)
        self.out = np.zeros(self.dim, np.float32)
        self.reset()

    def reset(self) -> None:
        self.ring[...] = 0
        self.seen = 0

    def push(self, samples: np.ndarray) -> bool:
        h, w = self.hop, self.window
        self.ring[:w - h] = self.ring[h:]
        self.ring[w - h:] = samples
        self.seen += h
        if self.seen < w:
            return False
        self.embedder.embed(self.ring, self.out)
        return True


def make_extractor(config: dict | None = None):
    """An extractor from its :meth:`config` dict (``None``: log-mel statistics, defaults)."""
    cfg = dict(config or {"type": LogMelStats.type})
    kind = cfg.pop("type", None)
    if kind == LogMelStats.type:
        allowed = {"n_mels", "frame_ms", "hop_ms", "context", "fmin", "fmax"}
        bad = sorted(set(cfg) - allowed)
        if bad:
            raise ValueError(f"logmel_stats has no parameter {bad[0]!r} (expected {', '.join(sorted(allowed))})")
        return LogMelStats(**cfg)
    if kind == EmbeddingFeatures.type:
        return EmbeddingFeatures(cfg.get("embedder"), cfg.get("params"))
    raise ValueError(f"feature extractor type {kind!r} is not known (expected logmel_stats or embedding)")


def extract(fx, audio: np.ndarray, sample_rate: int, max_frames: int | None = None) -> np.ndarray:
    """Run ``fx`` over mono ``audio`` (the streaming path, hop by hop); ``(frames, dim)``."""
    fx.prepare(sample_rate)
    x = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    n_hops = x.size // fx.hop
    out = np.empty((n_hops, fx.dim), np.float32)
    k = 0
    h = fx.hop
    for i in range(n_hops):
        if fx.push(x[i * h:(i + 1) * h]):
            out[k] = fx.out
            k += 1
            if max_frames is not None and k >= max_frames:
                break
    return out[:k]

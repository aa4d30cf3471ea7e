"""Spectral front ends for the streaming engine: windows, mel / band filterbank design, and
checked constructors for the compiled kernels in :mod:`edge_runtime._spectral`.

The compiled classes do the per-frame work without allocating; this module only builds
tables (pure NumPy, at setup time) and turns bad arguments into clear ``ValueError``\\ s:

* :class:`RealFFT` ``(n)``: ``forward(x, re, im)`` = ``numpy.fft.rfft``, ``inverse`` = ``irfft``.
* :class:`StftAnalyzer` / :class:`StftSynthesizer` ``(frame_size, hop, window, channels)``:
  streaming STFT, ``push`` one hop in / one spectrum out, ``pull`` one spectrum in / one hop
  out; analysis -> synthesis of unmodified spectra is the identity delayed by
  ``latency_samples = frame_size - hop``.
* :class:`FilterBank` ``(weights)``: sparse band weights, ``apply`` (bins -> band energies) and
  ``expand`` (band gains -> bins, RNNoise's interpolation).
* :func:`mel_filterbank` (librosa's Slaney mel, ``htk=False`` by default) and
  :func:`band_filterbank` (RNNoise-style triangular bands) build the weights.

Typical 10 ms hop denoiser front end at 48 kHz::

    ana = stft_analyzer(960, 480, "sqrt_hann", channels=1)
    syn = stft_synthesizer(960, 480, "sqrt_hann", channels=1)
    bands = filter_bank(band_filterbank(48000, 960, RNNOISE_EDGES_HZ))
    ana.push(block); ...; syn.pull(ana.re, ana.im, out)
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from edge_runtime._spectral import (  # noqa: F401  (re-exported)
    FilterBank,
    RealFFT,
    StftAnalyzer,
    StftSynthesizer,
    default_route,
    log_mel,
    power_spectrum,
)

__all__ = [
    "RealFFT", "StftAnalyzer", "StftSynthesizer", "FilterBank", "power_spectrum", "log_mel",
    "default_route", "window", "WINDOWS", "hz_to_mel", "mel_to_hz", "mel_frequencies",
    "mel_filterbank", "band_filterbank", "RNNOISE_EDGES_HZ", "real_fft", "stft_analyzer",
    "stft_synthesizer", "filter_bank",
]

WINDOWS = ("hann", "sqrt_hann")

# RNNoise's 22 band edges (eband5ms * 200 Hz: its 5 ms units at 48 kHz), 0 Hz .. 20 kHz.
RNNOISE_EDGES_HZ = tuple(200.0 * e for e in (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24,
                                             28, 34, 40, 48, 60, 78, 100))


# ---- argument checks -------------------------------------------------------------------

def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_window(name, n: int):
    if isinstance(name, str):
        if name not in WINDOWS:
            raise ValueError(f"window {name!r} is not known (expected one of {', '.join(WINDOWS)}, "
                             f"or an array of {n} samples)")
        return name
    w = np.asarray(name, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"a window array must have shape ({n},) for frame_size={n}, got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("a window array must be finite")
    return w.astype(np.float32)


def _check_stft(frame_size, hop, channels, window):
    frame_size = _positive_int("frame_size", frame_size)
    hop = _positive_int("hop", hop)
    channels = _positive_int("channels", channels)
    if frame_size < 2:
        raise ValueError(f"frame_size must be at least 2, got {frame_size}")
    if hop > frame_size:
        raise ValueError(f"hop={hop} must not exceed frame_size={frame_size} (frames would skip samples)")
    return frame_size, hop, channels, _check_window(window, frame_size)


# ---- windows ---------------------------------------------------------------------------

def window(name: str, n: int) -> np.ndarray:
    """Periodic (DFT-even) window of ``n`` samples as float32.

    ``"hann"``: ``0.5 - 0.5 cos(2 pi i / n)`` (``scipy.signal.get_window("hann", n)``);
    ``"sqrt_hann"``: its square root, the analysis = synthesis window whose squares add up to
    1 at 50% overlap.
    """
    n = _positive_int("n", n)
    if name not in WINDOWS:
        raise ValueError(f"window {name!r} is not known (expected one of {', '.join(WINDOWS)})")
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)
    return (hann if name == "hann" else np.sqrt(hann)).astype(np.float32)


# ---- mel scale (Slaney's Auditory Toolbox, as librosa with htk=False) ---------------------

_F_SP = 200.0 / 3.0            # Hz per mel below 1 kHz
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP   # 15.0
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(f, htk: bool = False):
    """Hz to mel. Slaney (default): linear ``f / (200/3)`` below 1 kHz (1 kHz = 15 mel), then
    logarithmic with 27 mel per factor 6.4. ``htk=True``: ``2595 log10(1 + f/700)``."""
    f = np.asarray(f, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    lin = f / _F_SP
    with np.errstate(divide="ignore", invalid="ignore"):
        log = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log, lin)


def mel_to_hz(m, htk: bool = False):
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(m, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    lin = _F_SP * m
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(m, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log, lin)


def mel_frequencies(n: int, fmin: float, fmax: float, htk: bool = False) -> np.ndarray:
    """``n`` frequencies (Hz) evenly spaced on the mel scale from ``fmin`` to ``fmax``."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n), htk)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = 128, fmin: float = 0.0,
                   fmax: float | None = None, norm: str | None = "slaney",
                   htk: bool = False) -> np.ndarray:
    """Triangular mel filters ``(n_mels, n_fft//2 + 1)`` float32, librosa.filters.mel's formula.

    Filter ``i`` rises from mel point ``i`` to ``i+1`` and falls to ``i+2`` (``n_mels + 2``
    points evenly spaced in mel between ``fmin`` and ``fmax``), evaluated at the FFT bin
    frequencies ``k * sample_rate / n_fft``. ``norm="slaney"`` scales filter ``i`` by
    ``2 / (f[i+2] - f[i])`` (Hz), so each has (about) the same area in Hz; ``norm=None``
    keeps peak 1.
    """
    sample_rate = _positive_int("sample_rate", sample_rate)
    n_fft = _positive_int("n_fft", n_fft)
    n_mels = _positive_int("n_mels", n_mels)
    nyquist = sample_rate / 2.0
    fmax = nyquist if fmax is None else float(fmax)
    fmin = float(fmin)
    if not (0.0 <= fmin < fmax <= nyquist):
        raise ValueError(f"mel_filterbank needs 0 <= fmin < fmax <= sample_rate/2 = {nyquist:g} Hz, "
                         f"got fmin={fmin:g}, fmax={fmax:g}")
    if norm not in ("slaney", None):
        raise ValueError(f"mel_filterbank norm must be 'slaney' or None, got {norm!r}")
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_f = mel_frequencies(n_mels + 2, fmin, fmax, htk)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights.astype(np.float32)


def band_filterbank(sample_rate: int, n_fft: int, band_edges_hz) -> np.ndarray:
    """RNNoise-style triangular bands ``(len(edges), n_fft//2 + 1)`` float32.

    Band ``b`` peaks (weight 1) at ``edges[b]`` and falls linearly to 0 at the neighbouring
    edges; the first band stays 1 below ``edges[0]`` and the last 1 above ``edges[-1]``. The
    weights sum to 1 at every bin, so ``FilterBank.expand`` is linear interpolation of band
    gains between band centres (RNNoise's ``interp_band_gain``), and ``apply`` gives
    RNNoise's ``compute_band_energy`` (which further doubles the first and last band).
    """
    sample_rate = _positive_int("sample_rate", sample_rate)
    n_fft = _positive_int("n_fft", n_fft)
    e = np.asarray(band_edges_hz, dtype=np.float64)
    nyquist = sample_rate / 2.0
    if e.ndim != 1 or e.size < 2:
        raise ValueError(f"band_edges_hz needs at least 2 edges (Hz), got {e.size}")
    if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise ValueError("band_edges_hz must be finite and strictly increasing")
    if e[0] < 0 or e[-1] > nyquist:
        raise ValueError(f"band_edges_hz must lie in 0..{nyquist:g} Hz (sample_rate/2), "
                         f"got {e[0]:g}..{e[-1]:g}")
    f = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
    nb = e.size
    W = np.zeros((nb, f.size))
    for b in range(nb):
        rise = np.ones_like(f) if b == 0 else (f - e[b - 1]) / (e[b] - e[b - 1])
        fall = np.ones_like(f) if b == nb - 1 else (e[b + 1] - f) / (e[b + 1] - e[b])
        W[b] = np.clip(np.minimum(rise, fall), 0.0, 1.0)
    return W.astype(np.float32)


# ---- checked constructors ----------------------------------------------------------------

def real_fft(n: int, route: str | None = None) -> RealFFT:
    """A :class:`RealFFT` of size ``n`` (route by :func:`default_route` unless forced)."""
    n = _positive_int("n", n)
    if route not in (None, "fft", "dft"):
        raise ValueError(f"route must be None, 'fft' or 'dft', got {route!r}")
    if route == "fft" and n % 2:
        raise ValueError(f"route 'fft' needs an even size, got n={n}")
    return RealFFT(n, route)


def stft_analyzer(frame_size: int, hop: int, window="sqrt_hann", channels: int = 1) -> StftAnalyzer:
    """A streaming :class:`StftAnalyzer`: ``push((channels, hop) float32)`` -> ``.re``/``.im``.

    ``hop`` need not divide ``frame_size`` (e.g. 400/160 for Whisper-style log-mel), but must
    not exceed it."""
    frame_size, hop, channels, window = _check_stft(frame_size, hop, channels, window)
    return StftAnalyzer(frame_size, hop, window, channels)


def stft_synthesizer(frame_size: int, hop: int, window="sqrt_hann", channels: int = 1) -> StftSynthesizer:
    """A streaming :class:`StftSynthesizer` matching :func:`stft_analyzer` with the same
    arguments; output is the input delayed by ``latency_samples = frame_size - hop``."""
    frame_size, hop, channels, window = _check_stft(frame_size, hop, channels, window)
    return StftSynthesizer(frame_size, hop, window, channels)


def filter_bank(weights) -> FilterBank:
    """A sparse :class:`FilterBank` from dense non-negative weights ``(n_bands, n_bins)``."""
    W = np.asarray(weights, dtype=np.float32)
    if W.ndim != 2 or W.shape[0] == 0 or W.shape[1] == 0:
        raise ValueError(f"filterbank weights must be a non-empty (n_bands, n_bins) array, got shape {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ValueError("filterbank weights must be finite")
    if np.any(W < 0):
        raise ValueError("filterbank weights must be >= 0")
    return FilterBank(W)

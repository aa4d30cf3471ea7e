"""Audio features of a sound for the preset regressor and preset embeddings (NumPy only, < 20 ms for 1 s).

The vector (``N_FEATURES`` float32, time-normalised so clips of any length give one): mean and
standard deviation of 40 log-mel bands; the loudness envelope (frame RMS dB, 16 points over the
clip, relative to its peak) and the peak; the spectral centroid envelope (16 points, log2 Hz); the
mean spectral flatness; the YIN pitch as a MIDI note and its voiced fraction; the attack time (to
90 % of the peak RMS, log10 s).
"""
from __future__ import annotations

import numpy as np

from ..spectral import mel_filterbank
from .pitch import estimate_f0, hz_to_note

__all__ = ["N_FEATURES", "FEATURE_VERSION", "preset_features"]

N_MELS = 40
N_ENV = 16
N_FEATURES = 2 * N_MELS + (N_ENV + 1) + N_ENV + 1 + 2 + 1
FEATURE_VERSION = 1
_MEL: dict = {}


def _resample_curve(v: np.ndarray, n: int) -> np.ndarray:
    if v.shape[0] == 1:
        return np.repeat(v, n)
    return np.interp(np.linspace(0, v.shape[0] - 1, n), np.arange(v.shape[0]), v)


def preset_features(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """The feature vector of a mono sound (see the module doc)."""
    x = np.asarray(audio, np.float64).reshape(-1)
    n_fft = 1024 if sample_rate <= 24000 else 2048
    hop = n_fft // 4
    if x.shape[0] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[0]))
    key = (sample_rate, n_fft)
    if key not in _MEL:
        _MEL[key] = (mel_filterbank(sample_rate, n_fft, N_MELS, fmin=20.0, norm=None).astype(np.float64).T,
                     np.hanning(n_fft + 1)[:-1], np.fft.rfftfreq(n_fft, 1.0 / sample_rate))
    mel, win, freqs = _MEL[key]
    n = 1 + (x.shape[0] - n_fft) // hop
    frames = np.lib.stride_tricks.as_strided(x, (n, n_fft), (x.strides[0] * hop, x.strides[0]), writeable=False)
    P = np.abs(np.fft.rfft(frames * win, axis=1)) ** 2 + 1e-12
    logmel = np.log10(P @ mel + 1e-10)
    rms_db = 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-10)
    peak = float(rms_db.max())
    env = np.maximum(rms_db - peak, -80.0)
    w = P / P.sum(axis=1, keepdims=True)
    centroid = np.log2(np.maximum(w @ freqs, 20.0))
    flat = np.exp(np.mean(np.log(P), axis=1)) / np.mean(P, axis=1)
    weights = 10.0 ** (env / 10.0)
    f0, voiced = estimate_f0(x, sample_rate)
    note = hz_to_note(f0) if f0 == f0 else 0.0
    lin = 10.0 ** (rms_db / 20.0)
    attack = (int(np.argmax(lin >= 0.9 * lin.max())) * hop + n_fft / 2) / sample_rate
    out = np.concatenate([logmel.mean(axis=0), logmel.std(axis=0), _resample_curve(env, N_ENV) / 20.0, [peak / 20.0],
                          _resample_curve(centroid, N_ENV), [float(np.sum(flat * weights) / weights.sum())],
                          [note / 12.0, voiced], [np.log10(attack)]])
    return out.astype(np.float32)

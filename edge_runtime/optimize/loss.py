"""Sound-matching loss: multi-resolution STFT loss plus MFCC and loudness terms.

``MultiResolutionLoss(target, sample_rate)(audio)``; the target's spectra are computed once.

* multi-resolution STFT (Yamamoto et al. 2020, Parallel WaveGAN; Engel et al. 2020, DDSP): for each
  ``n_fft`` (Hann window, hop ``n_fft/4``) spectral convergence ``||S_t - S||_F / ||S_t||_F`` plus the
  mean ``|log(S_t + eps) - log(S + eps)|``, averaged over the resolutions -- ``spectral`` below, the
  number the benchmark compares;
* MFCC: mean absolute difference of 20 MFCCs (c1..c20 of 40 mel bands, DCT-II ortho) / 10;
* loudness: mean absolute difference of frame RMS in dB (floored at -80 dBFS) / 20.

``total = spectral + w_mfcc * mfcc + w_loudness * loudness``.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..spectral import mel_filterbank

__all__ = ["LossConfig", "MultiResolutionLoss"]


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Weights and resolutions (the FFT sizes are at 16 kHz and scale with the rate)."""

    n_ffts: tuple[int, ...] = (1024, 512, 256, 128)
    eps: float = 1e-5
    #: the log-magnitude term's floor, dB below the target's loudest bin at that resolution (bins far
    #: below it -- the filter's stop band -- would otherwise weigh as much as the sound)
    floor_db: float | None = 60.0
    w_mfcc: float = 0.5
    w_loudness: float = 0.5
    n_mels: int = 40
    n_mfcc: int = 20


def _frames(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    if x.shape[0] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[0]))
    n = 1 + (x.shape[0] - n_fft) // hop
    return np.lib.stride_tricks.as_strided(x, (n, n_fft), (x.strides[0] * hop, x.strides[0]), writeable=False)


def _dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    m = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    m[0] *= np.sqrt(0.5)
    return m


class MultiResolutionLoss:
    """The loss of candidate sounds against one target (mono, ``sample_rate``)."""

    def __init__(self, target: np.ndarray, sample_rate: int, config: LossConfig | None = None):
        self.config = cfg = config or LossConfig()
        self.sample_rate = int(sample_rate)
        t = np.ascontiguousarray(np.asarray(target, np.float64).reshape(-1))
        if t.size == 0 or not np.all(np.isfinite(t)):
            raise ValueError("loss target must be non-empty and finite")
        self.n_frames = t.shape[0]
        scale = self.sample_rate / 16000.0
        self.n_ffts = tuple(max(32, int(2 ** round(np.log2(n * scale)))) for n in cfg.n_ffts)
        self.windows = {n: np.hanning(n + 1)[:-1] / (np.hanning(n + 1)[:-1].sum() / 2) for n in self.n_ffts}
        n_mel = self.n_ffts[0]
        self.mel = mel_filterbank(self.sample_rate, n_mel, cfg.n_mels, fmin=20.0, norm=None).astype(np.float64)
        self.dct = _dct_matrix(cfg.n_mels, cfg.n_mfcc + 1)[1:]
        self._eps = {n: cfg.eps for n in self.n_ffts}
        self._target = self._features(t)
        if cfg.floor_db is not None:
            self._eps = {n: max(cfg.eps, float(self._target["S"][n].max()) * 10.0 ** (-cfg.floor_db / 20.0))
                         for n in self.n_ffts}
            self._target = self._features(t)

    def _spectra(self, x: np.ndarray) -> dict:
        return {n: np.abs(np.fft.rfft(_frames(x, n, n // 4) * self.windows[n], axis=1)) for n in self.n_ffts}

    def _features(self, x: np.ndarray) -> dict:
        S = self._spectra(x)
        n0 = self.n_ffts[0]
        mfcc = np.log(S[n0] ** 2 @ self.mel.T + 1e-8) @ self.dct.T
        fr = _frames(x, n0 // 2, n0 // 8)
        loud = 10.0 * np.log10(np.maximum(np.mean(fr * fr, axis=1), 1e-8))
        logS = {n: np.log(s + self._eps[n]) for n, s in S.items()}
        norms = {n: float(np.sqrt(np.sum(s * s))) for n, s in S.items()}
        return {"S": S, "logS": logS, "norms": norms, "mfcc": mfcc, "loud": loud}

    def components(self, audio: np.ndarray) -> dict[str, float]:
        """``spectral``, ``mfcc``, ``loudness`` and ``total`` for ``audio`` (cut or zero-padded to the
        target's length); non-finite audio gets an infinite loss."""
        x = np.asarray(audio, np.float64).reshape(-1)
        if x.shape[0] != self.n_frames:
            x = np.pad(x[:self.n_frames], (0, max(0, self.n_frames - x.shape[0])))
        if not np.all(np.isfinite(x)):
            return {"spectral": float("inf"), "mfcc": float("inf"), "loudness": float("inf"), "total": float("inf")}
        f, t = self._features(np.ascontiguousarray(x)), self._target
        spec = 0.0
        for n in self.n_ffts:
            d = t["S"][n] - f["S"][n]
            sc = np.sqrt(np.sum(d * d)) / (t["norms"][n] + 1e-8)
            lm = np.mean(np.abs(t["logS"][n] - f["logS"][n]))
            spec += sc + lm
        spec /= len(self.n_ffts)
        mfcc = float(np.mean(np.abs(t["mfcc"] - f["mfcc"]))) / 10.0
        loud = float(np.mean(np.abs(np.maximum(t["loud"], -80.0) - np.maximum(f["loud"], -80.0)))) / 20.0
        total = spec + self.config.w_mfcc * mfcc + self.config.w_loudness * loud
        return {"spectral": float(spec), "mfcc": mfcc, "loudness": loud, "total": float(total)}

    def __call__(self, audio: np.ndarray) -> float:
        return self.components(audio)["total"]

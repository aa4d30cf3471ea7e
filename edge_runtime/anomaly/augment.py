"""Learned tolerance to another day's speed and gain, by augmenting feature frames.

A machine recorded on another day runs a little faster or slower (every tonal component moves
by the same *ratio*) and reaches the microphone a few dB louder or softer. Learning audio is one
day, so the detector never saw either and treats both as anomalies (round 1: mean AUC 0.83 and
~100 false episodes per hour on machines recorded this way). Instead of recording many days,
:class:`Augmenter` makes the feature frames of other days from the ones learned:

* speed ratio ``r``: every band's statistic moves to the band at ``r`` times its centre
  frequency (a linear interpolation along the mel axis, a ``(n_mels, n_mels)`` matrix per
  ratio, applied to the mean, standard-deviation and delta blocks alike);
* gain ``g`` dB: the log-mel means rise by ``g * ln(10) / 10`` (natural-log power); the
  standard deviations and deltas of log energies do not change with gain.

(A random smooth spectral ripple and a background-level change in the power domain were tried
as further "other day" changes and lowered the AUC on the field set: docs/anomaly.md.)

The detector then fits the learned frames together with copies at random ratios within
``+-speed`` and gains within ``+-gain_db``: directions that only speed and gain move get the
spread they would have over many days, so they weigh little in the score, while a change of
spectral *shape* (a new tone, a bearing's ringing, a hiss, a modulation) weighs as before.

Only log-mel statistics (``logmel_stats``) have a known layout; other extractors (a
classifier's embedding) are used unaugmented.
"""
from __future__ import annotations

import math

import numpy as np

from ..spectral import mel_frequencies

#: learning-time defaults: new days differ by up to +-1.5% in speed and +-3.5 dB in gain from a
#: nominal that the learning day itself is off by; a little more covers both
DEFAULT = {"speed": 0.02, "gain_db": 6.0, "copies": 4}
NATS_PER_DB = math.log(10.0) / 10.0


def band_centres(features: dict, sample_rate: int) -> np.ndarray | None:
    """Centre frequencies (Hz) of a ``logmel_stats`` config's mel bands, else None."""
    if (features or {}).get("type") != "logmel_stats":
        return None
    n = int(features.get("n_mels", 96))
    fmin = float(features.get("fmin", 20.0))
    fmax = features.get("fmax")
    fmax = sample_rate / 2 if fmax is None else min(float(fmax), sample_rate / 2)
    return np.asarray(mel_frequencies(n + 2, fmin, fmax, False)[1:-1], np.float64)


def warp_matrix(centres: np.ndarray, ratio: float) -> np.ndarray:
    """``(M, M)`` float32 ``W`` with ``W @ v`` = the band values ``v`` of a machine running
    ``ratio`` times as fast (band k takes the value found at ``centres[k] / ratio``)."""
    M = len(centres)
    pos = np.interp(np.log(centres / ratio), np.log(centres), np.arange(M, dtype=np.float64))
    lo = np.clip(np.floor(pos).astype(int), 0, M - 1)
    hi = np.minimum(lo + 1, M - 1)
    w = pos - lo
    W = np.zeros((M, M), np.float64)
    W[np.arange(M), lo] += 1.0 - w
    W[np.arange(M), hi] += w
    return W.astype(np.float32)


class Augmenter:
    """Feature frames of other days: ``apply(X, ratio, gain_db)``, ``sample(X, rng, copies)``."""

    def __init__(self, features: dict, sample_rate: int, speed: float = DEFAULT["speed"],
                 gain_db: float = DEFAULT["gain_db"], copies: int = DEFAULT["copies"], n_ratios: int = 9):
        if not 0.0 <= float(speed) <= 0.2:
            raise ValueError(f"augment speed={speed} is outside 0..0.2 (a ratio deviation, 0.02 = +-2%)")
        if not 0.0 <= float(gain_db) <= 40.0:
            raise ValueError(f"augment gain_db={gain_db} is outside 0..40")
        if not 0 <= int(copies) <= 32:
            raise ValueError(f"augment copies={copies} is outside 0..32")
        self.speed, self.gain_db, self.copies = float(speed), float(gain_db), int(copies)
        self.centres = band_centres(features, sample_rate)
        self.active = self.centres is not None and self.copies > 0 and (self.speed > 0 or self.gain_db > 0)
        self.M = 0 if self.centres is None else len(self.centres)
        # a fixed grid of ratios (one matrix each) rather than one per frame: 9 steps over +-2%
        # are 0.5% apart, about 1/6 of a mel band's width above 1 kHz
        self.ratios = np.exp(np.linspace(-1, 1, int(n_ratios)) * math.log1p(self.speed))
        self.mats = [warp_matrix(self.centres, r) for r in self.ratios] if self.active else []

    def config(self) -> dict:
        return {"speed": self.speed, "gain_db": self.gain_db, "copies": self.copies}

    def apply(self, X: np.ndarray, ratio_index: int, gain_db: float) -> np.ndarray:
        """``X`` (n, 3*M) as if recorded at ``ratios[ratio_index]`` and ``gain_db`` louder."""
        M = self.M
        W = self.mats[int(ratio_index)].T
        Y = np.empty_like(X)
        for b in range(3):
            np.matmul(X[:, b * M:(b + 1) * M], W, out=Y[:, b * M:(b + 1) * M])
        Y[:, :M] += np.float32(gain_db * NATS_PER_DB)
        return Y

    def sample(self, X: np.ndarray, rng: np.random.Generator, copies: int | None = None,
               segment: int = 0) -> np.ndarray:
        """``copies`` augmented copies of ``X`` stacked (``(copies * n, D)``): a random ratio and
        gain per frame (``segment=0``) or per run of ``segment`` frames (one day per run)."""
        copies = self.copies if copies is None else int(copies)
        if not self.active or copies <= 0:
            return np.zeros((0, X.shape[1]), np.float32)
        X = np.asarray(X, np.float32)
        n = len(X)
        out = np.empty((copies * n, X.shape[1]), np.float32)
        for c in range(copies):
            Y = out[c * n:(c + 1) * n]
            if segment > 0:
                for s in range(0, n, int(segment)):
                    k = int(rng.integers(len(self.mats)))
                    Y[s:s + segment] = self.apply(X[s:s + segment], k, float(rng.uniform(-self.gain_db, self.gain_db)))
                continue
            # per frame: group the frames by their drawn ratio (one matmul per ratio)
            ri = rng.integers(len(self.mats), size=n)
            g = rng.uniform(-self.gain_db, self.gain_db, n).astype(np.float32)
            for k in range(len(self.mats)):
                sel = np.flatnonzero(ri == k)
                if sel.size:
                    Y[sel] = self.apply(X[sel], k, 0.0)
            Y[:, :self.M] += g[:, None] * np.float32(NATS_PER_DB)
        return out

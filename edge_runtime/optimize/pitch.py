"""Fundamental frequency of a target note (YIN, de Cheveigne & Kawahara 2002), so the synth's pitch is
measured instead of searched: a spectral loss is flat far from the right pitch and a needle near it
(0.2 semitone off at A4 costs as much as a wrong waveform), which no sampling search finds in 15-D."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["estimate_f0", "hz_to_note", "narrow_note"]


def hz_to_note(f0: float) -> float:
    return 69.0 + 12.0 * math.log2(f0 / 440.0)


def estimate_f0(x: np.ndarray, sample_rate: int, fmin: float = 30.0, fmax: float = 2200.0,
                threshold: float = 0.2, max_aperiodicity: float = 0.6) -> tuple[float, float]:
    """(f0 in Hz, voiced fraction) over the frames louder than -40 dB of the loudest; f0 is the median
    of voiced frames' YIN estimates (parabolic interpolation), ``nan`` when none is voiced."""
    x = np.asarray(x, np.float64).reshape(-1)
    tau_max = int(sample_rate / fmin) + 2
    tau_min = max(2, int(sample_rate / fmax))
    w = 1 << int(math.ceil(math.log2(tau_max * 1.2)))
    hop = w // 2
    if x.shape[0] < w + tau_max:
        x = np.pad(x, (0, w + tau_max - x.shape[0]))
    n = 1 + (x.shape[0] - w - tau_max) // hop
    starts = np.arange(n) * hop
    if n > 24:   # a note's pitch, not a contour: 24 frames spread over the sound are enough
        starts = starts[np.linspace(0, n - 1, 24).round().astype(int)]
    frames = np.lib.stride_tricks.sliding_window_view(x, w + tau_max)[starts]
    energy = np.sum(frames[:, :w] ** 2, axis=1)
    loud = energy > energy.max() * 1e-4
    if not np.any(loud):
        return float("nan"), 0.0
    frames = frames[loud]
    nfft = 1 << int(math.ceil(math.log2(2 * (w + tau_max))))
    # difference function d(tau) = sum (x_t - x_{t+tau})^2 over a window of w, by FFT correlation
    F = np.fft.rfft(frames, nfft, axis=1)
    head = np.fft.rfft(frames[:, :w], nfft, axis=1)
    corr = np.fft.irfft(np.conj(head) * F, nfft, axis=1)[:, :tau_max]
    sq = np.cumsum(np.concatenate([np.zeros((frames.shape[0], 1)), frames ** 2], axis=1), axis=1)
    e0 = sq[:, w:w + 1]
    et = sq[:, w:w + tau_max] - sq[:, :tau_max]
    d = e0 + et - 2.0 * corr
    d[:, 0] = 0.0
    cum = np.cumsum(d[:, 1:], axis=1) / np.arange(1, tau_max)
    dn = np.ones_like(d)
    dn[:, 1:] = d[:, 1:] / np.maximum(cum, 1e-12)
    f0s = []
    for row in dn:
        below = np.nonzero(row[tau_min:] < threshold)[0]
        if below.size:
            t = tau_min + below[0]
        else:   # noisy: the deepest dip, if periodic enough (measured: octave errors remain there)
            t = tau_min + int(np.argmin(row[tau_min:]))
            if row[t] > max_aperiodicity:
                continue
        while t + 1 < tau_max and row[t + 1] < row[t]:
            t += 1
        if 1 <= t < tau_max - 1:
            a, b, c = row[t - 1], row[t], row[t + 1]
            den = a - 2 * b + c
            t = t + (0.5 * (a - c) / den if abs(den) > 1e-12 else 0.0)
        f0s.append(sample_rate / t)
    if not f0s:
        return float("nan"), 0.0
    return float(np.median(f0s)), len(f0s) / float(frames.shape[0])


def narrow_note(chain, target, semitones: float = 0.5, min_voiced: float = 0.5) -> dict:
    """A chain's ``adapt_to`` for a ``note`` parameter: search the note within +-``semitones`` of the
    target's YIN pitch when at least ``min_voiced`` of its loud frames are periodic (a fixed
    ``note`` is left alone); returns what was measured."""
    f0, voiced = estimate_f0(target.audio, chain.sample_rate)
    info = {"f0_hz": f0, "voiced": voiced}
    if "note" not in chain.space.fixed and f0 == f0 and voiced >= min_voiced:
        note = hz_to_note(f0)
        chain.space = chain.space.with_ranges({"note": (note - semitones, note + semitones)})
        info["note_range"] = chain.space.ranges.get("note")
    return info

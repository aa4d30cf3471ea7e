"""Signal metrics for the denoiser evaluation: SI-SDR and delay alignment (numpy only).

PESQ-WB and STOI come from the ``pesq`` and ``pystoi`` packages; they are wrapped here so that a
failure (PESQ finds no utterance, a non-finite output) gives NaN instead of aborting a run.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-12


def si_sdr(est: np.ndarray, ref: np.ndarray, zero_mean: bool = True) -> float:
    """Scale-invariant SDR in dB (Le Roux et al., 2019).

    ``target = (<est, ref> / ||ref||^2) ref``, ``error = est - target``,
    ``SI-SDR = 10 log10(||target||^2 / ||error||^2)``. Both signals are made zero-mean first
    (the usual convention). Returns +inf for a perfect (scaled) copy, NaN for a silent reference.
    """
    est = np.asarray(est, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    if est.shape != ref.shape:
        raise ValueError(f"si_sdr: shapes differ: {est.shape} vs {ref.shape}")
    if zero_mean:
        est = est - est.mean()
        ref = ref - ref.mean()
    rr = float(np.dot(ref, ref))
    if rr <= EPS:
        return float("nan")
    target = (np.dot(est, ref) / rr) * ref
    err = est - target
    te, ee = float(np.dot(target, target)), float(np.dot(err, err))
    if ee == 0.0:
        return float("inf")
    if te == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(te / ee))


def xcorr_lags(est: np.ndarray, ref: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Cross-correlation ``c[k] = sum_n est[n + k] ref[n]`` for ``k`` in ``-max_lag..max_lag``
    (FFT, no wrap-around). Returns (lags, c)."""
    est = np.asarray(est, dtype=np.float64).ravel()
    ref = np.asarray(ref, dtype=np.float64).ravel()
    n = len(est) + len(ref)
    nfft = 1 << int(np.ceil(np.log2(max(n, 2))))
    c = np.fft.irfft(np.fft.rfft(est, nfft) * np.conj(np.fft.rfft(ref, nfft)), nfft)
    max_lag = int(min(max_lag, max(len(est), len(ref)) - 1))
    lags = np.arange(-max_lag, max_lag + 1)
    return lags, c[lags % nfft]


def estimate_delay(est: np.ndarray, ref: np.ndarray, max_lag: int) -> int:
    """Delay ``d`` (samples) of ``est`` relative to ``ref``: ``est[n] ~ ref[n - d]``; positive when
    ``est`` lags. Searched in ``-max_lag..max_lag`` by the peak of the cross-correlation; among
    equal peaks the smallest ``|d|`` wins. 0 when either signal is silent."""
    lags, c = xcorr_lags(est, ref, max_lag)
    if not np.any(c) or not np.all(np.isfinite(c)):
        return 0
    best = c.max()
    cand = lags[c >= best - 1e-12 * max(abs(best), 1.0)]
    return int(cand[np.argmin(np.abs(cand))])


def shift(x: np.ndarray, d: int) -> np.ndarray:
    """``y[n] = x[n + d]`` with zeros where that falls outside ``x`` (same length): undoes a
    delay of ``d`` samples (``d < 0`` delays instead)."""
    x = np.asarray(x)
    y = np.zeros_like(x)
    n = len(x)
    if d >= 0:
        if d < n:
            y[: n - d] = x[d:]
    else:
        if -d < n:
            y[-d:] = x[: n + d]
    return y


def align(est: np.ndarray, ref: np.ndarray, max_lag: int) -> tuple[np.ndarray, int]:
    """(``est`` with its delay relative to ``ref`` removed, the delay removed in samples)."""
    d = estimate_delay(est, ref, max_lag)
    return shift(est, d), d


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sr: int = 16000) -> float:
    """PESQ wide-band MOS-LQO (ITU-T P.862.2) at 16 kHz; NaN when PESQ refuses the pair."""
    from pesq import pesq

    if not np.all(np.isfinite(deg)):
        return float("nan")
    try:
        return float(pesq(sr, np.asarray(ref, np.float64), np.asarray(deg, np.float64), "wb"))
    except Exception:  # NoUtterancesError, BufferTooShortError, ...
        return float("nan")


def stoi(ref: np.ndarray, deg: np.ndarray, sr: int = 16000, extended: bool = False) -> float:
    from pystoi import stoi as _stoi

    if not np.all(np.isfinite(deg)):
        return float("nan")
    try:
        return float(_stoi(np.asarray(ref, np.float64), np.asarray(deg, np.float64), sr, extended=extended))
    except Exception:
        return float("nan")

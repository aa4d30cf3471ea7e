"""Filter design for :class:`~edge_runtime.nodes.SosFilter`: Butterworth high/low-pass of
any order and the RBJ "Audio EQ Cookbook" biquads, as second-order sections in SciPy's
``sos`` layout ``[b0, b1, b2, 1, a1, a2]``. Pure Python: SciPy is not a runtime dependency.
"""
from __future__ import annotations

import cmath
import math

import numpy as np

BUTTERWORTH = ("highpass", "lowpass")
RBJ = ("bandpass", "notch", "peak", "lowshelf", "highshelf")
KINDS = BUTTERWORTH + RBJ


def validate_design(*, kind: str, cutoff_hz: float, order: int = 2, q: float = 1 / math.sqrt(2),
                    gain_db: float = 0.0) -> dict:
    """Check design parameters that do not depend on the sample rate; return them as a dict."""
    if kind not in KINDS:
        raise ValueError(f"filter kind {kind!r} is not known (expected one of {', '.join(KINDS)})")
    if not (cutoff_hz > 0 and math.isfinite(cutoff_hz)):
        raise ValueError(f"filter cutoff_hz={cutoff_hz} must be a positive frequency in Hz")
    if kind in BUTTERWORTH and not (1 <= int(order) <= 12):
        raise ValueError(f"{kind} order={order} is outside 1..12")
    if not (0.05 <= q <= 50):
        raise ValueError(f"filter q={q} is outside 0.05..50")
    if not (-48 <= gain_db <= 48):
        raise ValueError(f"filter gain_db={gain_db} is outside -48..48 dB")
    return {"kind": kind, "cutoff_hz": float(cutoff_hz), "order": int(order), "q": float(q),
            "gain_db": float(gain_db)}


def design(*, sample_rate: int, kind: str, cutoff_hz: float, order: int = 2,
           q: float = 1 / math.sqrt(2), gain_db: float = 0.0) -> np.ndarray:
    """Design the filter for ``sample_rate``; returns a float64 array (sections, 6)."""
    validate_design(kind=kind, cutoff_hz=cutoff_hz, order=order, q=q, gain_db=gain_db)
    nyquist = sample_rate / 2
    if cutoff_hz >= nyquist:
        raise ValueError(f"{kind} cutoff_hz={cutoff_hz} must be below the Nyquist frequency "
                         f"{nyquist:g} Hz of sample rate {sample_rate}")
    if kind in BUTTERWORTH:
        return butterworth(order, cutoff_hz, sample_rate, highpass=(kind == "highpass"))
    return np.array([rbj_biquad(kind, cutoff_hz, sample_rate, q, gain_db)], dtype=np.float64)


def butterworth(order: int, cutoff_hz: float, sample_rate: int, highpass: bool) -> np.ndarray:
    """Digital Butterworth by the bilinear transform with pre-warping (as scipy.signal.butter)."""
    fs2 = 2.0 * sample_rate
    wc = fs2 * math.tan(math.pi * cutoff_hz / sample_rate)
    zero = 1.0 if highpass else -1.0
    sections = []
    for k in range(order // 2):
        p = wc * cmath.exp(1j * math.pi * (2 * k + order + 1) / (2 * order))
        z = (fs2 + p) / (fs2 - p)
        sections.append([1.0, -2.0 * zero, 1.0, 1.0, -2.0 * z.real, abs(z) ** 2])
    if order % 2:
        z = (fs2 - wc) / (fs2 + wc)
        sections.append([1.0, -zero, 0.0, 1.0, -z, 0.0])
    sos = np.array(sections, dtype=np.float64)
    # unity gain in the pass band: at Nyquist (z = -1) for a high-pass, at DC (z = 1) for a low-pass
    w = -1.0 if highpass else 1.0
    response = 1.0
    for b0, b1, b2, _, a1, a2 in sos:
        response *= (b0 + b1 * w + b2 * w * w) / (1.0 + a1 * w + a2 * w * w)
    sos[0, :3] /= response
    return sos


def rbj_biquad(kind: str, f0: float, sample_rate: int, q: float, gain_db: float) -> list[float]:
    """One biquad from Robert Bristow-Johnson's Audio EQ Cookbook, normalized so a0 = 1."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * math.pi * f0 / sample_rate
    cw, sw = math.cos(w0), math.sin(w0)
    alpha = sw / (2 * q)
    if kind == "bandpass":  # constant 0 dB peak gain
        b, aa = [alpha, 0.0, -alpha], [1 + alpha, -2 * cw, 1 - alpha]
    elif kind == "notch":
        b, aa = [1.0, -2 * cw, 1.0], [1 + alpha, -2 * cw, 1 - alpha]
    elif kind == "peak":
        b = [1 + alpha * a, -2 * cw, 1 - alpha * a]
        aa = [1 + alpha / a, -2 * cw, 1 - alpha / a]
    elif kind == "lowshelf":
        s = 2 * math.sqrt(a) * alpha
        b = [a * ((a + 1) - (a - 1) * cw + s), 2 * a * ((a - 1) - (a + 1) * cw), a * ((a + 1) - (a - 1) * cw - s)]
        aa = [(a + 1) + (a - 1) * cw + s, -2 * ((a - 1) + (a + 1) * cw), (a + 1) + (a - 1) * cw - s]
    elif kind == "highshelf":
        s = 2 * math.sqrt(a) * alpha
        b = [a * ((a + 1) + (a - 1) * cw + s), -2 * a * ((a - 1) + (a + 1) * cw), a * ((a + 1) + (a - 1) * cw - s)]
        aa = [(a + 1) - (a - 1) * cw + s, 2 * ((a - 1) - (a + 1) * cw), (a + 1) - (a - 1) * cw - s]
    else:
        raise ValueError(f"biquad kind {kind!r} is not one of {', '.join(RBJ)}")
    a0 = aa[0]
    return [b[0] / a0, b[1] / a0, b[2] / a0, 1.0, aa[1] / a0, aa[2] / a0]

"""Synthetic event sounds for the classifier data builder: alarms/beeps, water, room tone.

Each generator is deterministic given an ``np.random.Generator`` and draws its parameters
from wide ranges, so two seeds give two different "renderings" (the split keeps seeds apart).
All return float64 mono at ``sr`` with peak about 0.5.
"""
from __future__ import annotations

import numpy as np
from scipy import signal

from synth import coloured_noise

ALARM_KINDS = ("smoke", "beeper", "ring", "siren", "chirp", "square", "buzzer", "chime", "ringtone", "pulse")


def _norm(x: np.ndarray, peak: float = 0.5) -> np.ndarray:
    m = float(np.max(np.abs(x))) if x.size else 0.0
    return x * (peak / m) if m > 0 else x


def _tone(f: np.ndarray | float, n: int, sr: int, rng, harmonics: int = 1, square: bool = False) -> np.ndarray:
    f = np.broadcast_to(np.asarray(f, dtype=np.float64), (n,))
    ph = 2 * np.pi * np.cumsum(f) / sr + rng.uniform(0, 2 * np.pi)
    if square:
        x = np.zeros(n)
        for k in range(1, 2 * harmonics, 2):
            x += np.sin(k * ph) / k * (f * k < sr * 0.45)
        return x
    x = np.sin(ph)
    for k in range(2, harmonics + 1):
        x += rng.uniform(0.05, 0.5) / k * np.sin(k * ph + rng.uniform(0, 6.3)) * (f * k < sr * 0.45)
    return x


def _gate(n: int, sr: int, on_s: float, off_s: float, rng, ramp_s: float = 0.004) -> np.ndarray:
    """On/off envelope (on_s on, off_s off, repeated) with short raised-cosine ramps."""
    period = on_s + off_s
    t = (np.arange(n) / sr + rng.uniform(0, period)) % period
    g = (t < on_s).astype(np.float64)
    r = max(int(ramp_s * sr), 1)
    win = np.hanning(2 * r + 1)
    return np.convolve(g, win / win.sum(), mode="same")


def alarm(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Alarm and beep patterns: smoke detector, reversing beeper, phone ring, siren, chirps,
    square-wave UI beeps, buzzer, door/notification chimes, repeated ring-tone motifs, beep groups."""
    if kind == "smoke":        # piezo ~3 kHz, T3 pattern or fast pulses
        f = rng.uniform(2800, 3600)
        x = _tone(f, n, sr, rng, harmonics=3) * _gate(n, sr, rng.uniform(0.08, 0.5), rng.uniform(0.05, 0.5), rng)
    elif kind == "beeper":     # reversing / microwave / watch beeps
        f = rng.uniform(700, 2600)
        x = _tone(f, n, sr, rng, harmonics=int(rng.integers(1, 5))) * _gate(
            n, sr, rng.uniform(0.05, 0.6), rng.uniform(0.05, 0.6), rng)
    elif kind == "ring":       # telephone ring: two tones, cadence
        f1 = rng.uniform(400, 1200)
        f2 = f1 * rng.uniform(1.05, 1.4)
        warble = 0.5 + 0.5 * np.sign(np.sin(2 * np.pi * rng.uniform(10, 25) * np.arange(n) / sr))
        x = (_tone(f1, n, sr, rng) * warble + _tone(f2, n, sr, rng) * (1 - warble))
        x *= _gate(n, sr, rng.uniform(0.3, 1.2), rng.uniform(0.1, 0.8), rng)
    elif kind == "siren":      # swept tone (wail or yelp)
        lo, hi = rng.uniform(500, 900), rng.uniform(1100, 1900)
        rate = rng.uniform(0.3, 6.0)
        t = np.arange(n) / sr
        sweep = 0.5 + 0.5 * (np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.3)) if rng.random() < 0.5
                             else signal.sawtooth(2 * np.pi * rate * t + rng.uniform(0, 6.3)))
        x = _tone(lo + (hi - lo) * sweep, n, sr, rng, harmonics=int(rng.integers(1, 6)))
    elif kind == "chirp":      # notification chirps: short rising/falling tone pairs
        x = np.zeros(n)
        i = int(rng.uniform(0, 0.2) * sr)
        while i < n:
            L = int(rng.uniform(0.04, 0.25) * sr)
            f0, f1 = rng.uniform(600, 3000), rng.uniform(600, 3000)
            seg = _tone(np.linspace(f0, f1, L), L, sr, rng, harmonics=2) * np.hanning(L) ** 0.3
            x[i:i + L] += seg[: n - i]
            i += L + int(rng.uniform(0.02, 0.6) * sr)
    elif kind == "square":     # square-wave UI beeps of varying pitch
        x = np.zeros(n)
        i = int(rng.uniform(0, 0.2) * sr)
        while i < n:
            L = int(rng.uniform(0.05, 0.4) * sr)
            seg = _tone(rng.uniform(300, 2500), L, sr, rng, harmonics=6, square=True)
            seg *= _gate(L, sr, L / sr, 0.001, rng)
            x[i:i + L] += seg[: n - i]
            i += L + int(rng.uniform(0.03, 0.5) * sr)
    elif kind == "buzzer":     # door / game buzzer: low square with strong harmonics
        f = rng.uniform(90, 400)
        x = _tone(f, n, sr, rng, harmonics=12, square=True) * _gate(n, sr, rng.uniform(0.2, 1.5),
                                                                    rng.uniform(0.1, 0.6), rng)
    elif kind == "chime":      # door bell / notification chime: 2-4 struck bell notes, decaying
        x = np.zeros(n)
        notes = rng.uniform(500, 2000) * 2 ** (rng.choice([-7, -5, -4, -3, 0, 3, 4, 5, 7, 12],
                                                          size=int(rng.integers(2, 5))) / 12)
        ratios = (1.0, 2.0, 3.0) if rng.random() < 0.5 else (1.0, 2.76, 5.40)   # tubular / bar
        gap = rng.uniform(0.12, 0.45)
        period = len(notes) * gap + rng.uniform(0.3, 1.5)
        i0 = int(rng.uniform(0, 0.3) * sr)
        while i0 < n:
            for j, f in enumerate(notes):
                i = i0 + int(j * gap * sr)
                L = min(int(rng.uniform(0.4, 1.2) * sr), n - i)
                if L <= 0:
                    break
                t = np.arange(L) / sr
                seg = sum(np.sin(2 * np.pi * f * r * t) * np.exp(-t * rng.uniform(3, 8) * r) / (1 + k)
                          for k, r in enumerate(ratios) if f * r < sr * 0.45)
                x[i:i + L] += seg
            i0 += int(period * sr)
    elif kind == "ringtone":   # phone / alarm-clock ring tone: one short motif repeated
        m = int(rng.integers(3, 7))
        base = rng.uniform(500, 1800)
        steps = rng.choice([0, 2, 3, 4, 5, 7, 9, 12], size=m)
        durs = rng.choice([0.06, 0.09, 0.12, 0.18], size=m)
        sq = rng.random() < 0.5
        motif = np.concatenate([_tone(base * 2 ** (st / 12), int(d * sr), sr, rng, harmonics=4 if sq else 2,
                                      square=sq) * np.hanning(int(d * sr)) ** 0.2 for st, d in zip(steps, durs)])
        pause = np.zeros(int(rng.uniform(0.05, 0.6) * sr))
        unit = np.concatenate([motif, pause])
        x = np.tile(unit, n // len(unit) + 2)
        s0 = int(rng.integers(0, len(unit)))
        x = x[s0:s0 + n]
    elif kind == "pulse":      # alarm clock / truck / timer: groups of fast beeps
        f = rng.uniform(800, 4000)
        k = int(rng.integers(2, 6))
        on, off = rng.uniform(0.03, 0.1), rng.uniform(0.03, 0.1)
        group = np.concatenate([np.ones(int(on * sr)), np.zeros(int(off * sr))] * k + [np.zeros(int(rng.uniform(0.15, 0.6) * sr))])
        g = np.tile(group, n // len(group) + 2)
        s0 = int(rng.integers(0, len(group)))
        g = np.convolve(g[s0:s0 + n], np.hanning(65) / np.hanning(65).sum(), mode="same")
        x = _tone(f, n, sr, rng, harmonics=int(rng.integers(1, 4)), square=rng.random() < 0.4) * g
    else:
        raise ValueError(kind)
    return _norm(x)


def _bubble(sr: int, rng) -> np.ndarray:
    """One bubble (Minnaert resonance): a decaying sine whose pitch rises as it closes."""
    r = rng.uniform(0.0008, 0.006)                # radius, m
    f0 = 3.26 / r                                 # Hz
    d = 0.13 + 0.0072 * f0 ** 0.5
    L = int(min(0.12, 6.0 / (np.pi * d * f0) * 8) * sr) + 16
    t = np.arange(L) / sr
    rise = 1 + rng.uniform(0.0, 0.5) * d * f0 * t
    f = np.minimum(f0 * rise, sr * 0.45)
    ph = 2 * np.pi * np.cumsum(f) / sr
    return np.sin(ph) * np.exp(-np.pi * d * f0 * t / 4)


def water(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Water: ``bubbles`` (sparse), ``stream`` (dense bubbles over gurgling noise), ``rain``
    (droplet clicks over hiss), ``tap`` (running tap / shower: modulated band noise)."""
    x = np.zeros(n)
    if kind in ("bubbles", "stream"):
        rate = rng.uniform(4, 30) if kind == "bubbles" else rng.uniform(80, 400)
        t = 0.0
        while True:
            t += rng.exponential(1.0 / rate)
            i = int(t * sr)
            if i >= n:
                break
            b = _bubble(sr, rng) * rng.lognormal(0, 0.6)
            x[i:i + b.size] += b[: n - i]
        if kind == "stream":
            noise = coloured_noise(n, rng.uniform(0.5, 1.5), rng)
            b, a = signal.butter(2, [rng.uniform(150, 500) / (sr / 2), rng.uniform(2000, 6000) / (sr / 2)], "band")
            noise = signal.lfilter(b, a, noise)
            env = 1 + 0.5 * signal.lfilter([1], [1, -0.999], rng.standard_normal(n)) / 30
            x = x / (np.std(x) + 1e-9) + rng.uniform(0.3, 1.5) * noise * env / (np.std(noise) + 1e-9)
    elif kind == "rain":
        hiss = coloured_noise(n, rng.uniform(0.0, 1.0), rng)
        b, a = signal.butter(2, rng.uniform(1500, 5000) / (sr / 2), "high")
        hiss = signal.lfilter(b, a, hiss)
        x += hiss / (np.std(hiss) + 1e-9) * rng.uniform(0.2, 1.0)
        rate = rng.uniform(30, 600)
        k = rng.poisson(rate * n / sr)
        idx = rng.integers(0, n, k)
        drops = np.zeros(n)
        drops[idx] = rng.lognormal(0, 0.8, k) * 8
        L = int(0.004 * sr)
        ker = rng.standard_normal(L) * np.exp(-np.arange(L) / (L / 4))
        x += np.convolve(drops, ker, mode="same")
        if rng.random() < 0.5:
            for _ in range(int(rng.integers(2, 12))):
                b = _bubble(sr, rng) * rng.uniform(0.5, 3)
                i = int(rng.integers(0, max(n - b.size, 1)))
                x[i:i + b.size] += b[: n - i]
    elif kind == "tap":
        noise = coloured_noise(n, rng.uniform(0.0, 1.0), rng)
        lo, hi = rng.uniform(200, 1000), rng.uniform(3000, 7500)
        b, a = signal.butter(2, [lo / (sr / 2), hi / (sr / 2)], "band")
        noise = signal.lfilter(b, a, noise)
        # splashing: fast random amplitude modulation
        m = signal.lfilter([1], [1, -rng.uniform(0.95, 0.995)], rng.standard_normal(n))
        m = 1 + rng.uniform(0.3, 1.0) * m / (np.std(m) + 1e-9)
        x = noise * np.clip(m, 0.05, None)
        for _ in range(int(rng.integers(5, 60))):
            b = _bubble(sr, rng) * rng.uniform(0.5, 4) * np.std(x)
            i = int(rng.integers(0, max(n - b.size, 1)))
            x[i:i + b.size] += b[: n - i]
    else:
        raise ValueError(kind)
    return _norm(x)


WATER_KINDS = ("bubbles", "stream", "rain", "tap")


def room_tone(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Room tone: coloured noise shaped like a quiet room (low-frequency heavy, a gentle
    high roll-off), sometimes with faint mains hum or a ventilation tone. Unit RMS."""
    x = coloured_noise(n, rng.uniform(0.0, 2.0), rng)
    b, a = signal.butter(1, rng.uniform(1500, 7500) / (sr / 2), "low")
    x = signal.lfilter(b, a, x)
    x /= np.std(x) + 1e-12
    t = np.arange(n) / sr
    if rng.random() < 0.3:
        f0 = float(rng.choice([50.0, 60.0]))
        x += rng.uniform(0.05, 0.8) * sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k
                                          for k in range(1, 6))
    if rng.random() < 0.2:
        x += rng.uniform(0.05, 0.4) * np.sin(2 * np.pi * rng.uniform(80, 400) * t)
    return x / (np.std(x) + 1e-12)

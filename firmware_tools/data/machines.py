"""Machine sounds with known anomalies, for the anomaly-detection evaluation.

Five machine families, several "machine IDs" each (an ID fixes the family's parameters: speed,
harmonic weights, resonances, noise colour; clips of one ID vary as a real machine's do:
speed +-0.6%, load/level +-1.5 dB, noise floor +-3 dB, random phases, and a recorded
ambience from ``sonic-pi-samples`` under every clip):

``motor``      rotating machinery: harmonics of the shaft rate + mains-locked electrical hum
``fan``        blade-pass harmonics over shaped airflow noise, modulated at the shaft rate
``pump``       a piston stroke exciting damped resonances + the drive motor's harmonics
``engine``     firing pulses (jittered) through the block's resonances, low-passed
``recorded``   a recorded industrial loop (``sonic-pi-samples``: loop_industrial, ambi_soft_buzz)
               resampled to 16 kHz, cut at random offsets, speed-varied

Anomalies (severity 1..3, each step about doubling the effect):

``clicks``     bearing defect: impulses at the ball-pass rate (3.57 x shaft) ringing a 2-5 kHz mode
``imbalance``  amplitude modulation at the shaft rate and a stronger 1x component
``drift``      the speed (all its harmonics) off by 2/4/8 %
``rubbing``    friction: band-passed noise bursts at the shaft rate
``missing``    one of the three strongest harmonics 6/12/40 dB down (a notch in a recording)

Everything is deterministic from integer seeds; see ``build_machines.py`` for the file layout.
"""
from __future__ import annotations

import dataclasses
import functools
import os

import numpy as np
from scipy import signal

SR = 16000
FAMILIES = ("motor", "fan", "pump", "engine", "recorded")
KINDS = ("clicks", "imbalance", "drift", "rubbing", "missing")
SAMPLES_DIR = "/usr/share/sonic-pi/samples"
RECORDED = {0: "loop_industrial.flac", 1: "ambi_soft_buzz.flac"}
AMBIENCE = ("ambi_drone.flac", "ambi_haunted_hum.flac", "ambi_glass_hum.flac", "ambi_dark_woosh.flac")


@functools.lru_cache(maxsize=16)
def recorded(name: str) -> np.ndarray:
    """A Debian-packaged recording as 16 kHz mono float32 (peak 0.5)."""
    import soundfile as sf
    import soxr

    x, sr = sf.read(os.path.join(SAMPLES_DIR, name), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:
        x = soxr.resample(x, sr, SR)
    x = x - x.mean()
    return (0.5 * x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def coloured(n, exponent, rng):
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    spec *= f ** (-exponent / 2.0)
    spec[0] = 0
    x = np.fft.irfft(spec, n)
    return x / (x.std() + 1e-12)


@dataclasses.dataclass(frozen=True)
class MachineID:
    family: str
    index: int

    @property
    def name(self) -> str:
        return f"{self.family}-{self.index:02d}"

    def params(self) -> dict:
        """The ID's fixed parameters (drawn from a seed derived from the name)."""
        rng = np.random.default_rng(abs(hash_name(self.name)))
        f = self.family
        p = {"noise_exp": float(rng.uniform(0.5, 1.5)), "noise_db": float(rng.uniform(-34, -26))}
        if f == "motor":
            p.update(f_rot=float(rng.uniform(24, 60)), n_harm=int(rng.integers(10, 22)),
                     decay=float(rng.uniform(0.6, 1.2)), line=float(rng.choice([50.0, 60.0])),
                     hum_db=float(rng.uniform(-18, -8)))
        elif f == "fan":
            p.update(f_rot=float(rng.uniform(12, 28)), blades=int(rng.integers(5, 10)),
                     n_harm=int(rng.integers(3, 7)), air_lo=float(rng.uniform(150, 400)),
                     air_hi=float(rng.uniform(2500, 6000)), air_db=float(rng.uniform(-10, -4)))
        elif f == "pump":
            p.update(stroke=float(rng.uniform(3, 8)), f_rot=float(rng.uniform(20, 30)),
                     res=[float(v) for v in rng.uniform(300, 2500, 3)],
                     damp=[float(v) for v in rng.uniform(40, 160, 3)], n_harm=int(rng.integers(6, 12)))
        elif f == "engine":
            p.update(fire=float(rng.uniform(18, 55)), jitter=float(rng.uniform(0.01, 0.04)),
                     res=[float(v) for v in rng.uniform(150, 1800, 4)],
                     damp=[float(v) for v in rng.uniform(60, 250, 4)], cutoff=float(rng.uniform(2500, 5000)))
        else:
            p.update(file=RECORDED[self.index % len(RECORDED)], f_rot=float(rng.uniform(8, 20)))
        p["bearing_hz"] = float(rng.uniform(2000, 5000))
        p["f_shaft"] = p.get("f_rot", p.get("fire", 20.0) / 2)
        return p


def hash_name(name: str) -> int:
    h = 1469598103934665603
    for ch in name.encode():
        h = ((h ^ ch) * 1099511628211) % (1 << 61)
    return h


def machine_ids(per_family: int = 3) -> list[MachineID]:
    out = []
    for f in FAMILIES:
        n = min(per_family, len(RECORDED)) if f == "recorded" else per_family
        out += [MachineID(f, i) for i in range(n)]
    return out


def _harmonics(t, f0_track, amps, phases, drop=None):
    """Sum of harmonics k*f0(t); ``drop``: (harmonic index, linear gain)."""
    ph = 2 * np.pi * np.cumsum(f0_track) / SR
    x = np.zeros_like(t)
    for k, (a, p0) in enumerate(zip(amps, phases), start=1):
        if np.mean(f0_track) * k > SR * 0.45:
            break
        g = drop[1] if drop is not None and drop[0] == k else 1.0
        x += g * a * np.sin(k * ph + p0)
    return x


def _resonate(excitation, freqs, damps):
    y = np.zeros_like(excitation)
    for f, d in zip(freqs, damps):
        r = np.exp(-np.pi * d / SR)
        w = 2 * np.pi * f / SR
        y += signal.lfilter([1 - r], [1, -2 * r * np.cos(w), r * r], excitation)
    return y


def _strongest(amps, k=3):
    return [int(i) + 1 for i in np.argsort(amps)[::-1][:k]]


def render(mid: MachineID, seconds: float, seed: int, anomaly: str | None = None, severity: int = 0) -> np.ndarray:
    """One clip of machine ``mid``: float32 mono at 16 kHz, RMS about -20 dBFS."""
    p = mid.params()
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    speed = 1.0 + rng.uniform(-0.006, 0.006)
    sev = int(severity)
    if anomaly == "drift":
        speed *= 1.0 + float(rng.choice([-1, 1])) * (0.02, 0.04, 0.08)[sev - 1]
    wobble = 1.0 + 0.002 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6))
    fam = mid.family
    id_rng = np.random.default_rng(hash_name(mid.name) + 7)
    amps_for = lambda m: id_rng.uniform(0.2, 1.0, m) / np.arange(1, m + 1) ** p.get("decay", 0.8)  # noqa: E731
    drop = None
    if fam in ("motor", "pump"):
        amps = amps_for(p["n_harm"])
        if anomaly == "missing":
            drop = (int(rng.choice(_strongest(amps))), (0.5, 0.25, 0.01)[sev - 1])
        f0 = p["f_rot"] * speed * wobble
        x = _harmonics(t, f0, amps, rng.uniform(0, 2 * np.pi, len(amps)), drop)
        if fam == "motor":
            hum_amps = 10 ** (p["hum_db"] / 20) * np.array([1.0, 0.5, 0.3, 0.15])
            x += _harmonics(t, np.full(n, 2 * p["line"]), hum_amps, rng.uniform(0, 6, 4))
        else:
            period = SR / (p["stroke"] * speed)
            exc = np.zeros(n)
            pos = np.arange(rng.uniform(0, period), n, period).astype(int)
            exc[pos] = 1.0 + 0.05 * rng.standard_normal(pos.size)
            x = 0.4 * x + 3.0 * _resonate(exc, p["res"], p["damp"])
    elif fam == "fan":
        amps = id_rng.uniform(0.3, 1.0, p["n_harm"]) / np.arange(1, p["n_harm"] + 1)
        if anomaly == "missing":
            drop = (int(rng.choice(_strongest(amps))), (0.5, 0.25, 0.01)[sev - 1])
        fbp = p["f_rot"] * p["blades"] * speed * wobble
        x = _harmonics(t, fbp, amps, rng.uniform(0, 2 * np.pi, len(amps)), drop)
        b, a = signal.butter(2, [p["air_lo"] / (SR / 2), p["air_hi"] / (SR / 2)], "band")
        air = signal.lfilter(b, a, rng.standard_normal(n))
        air *= 1 + 0.15 * np.sin(2 * np.pi * p["f_rot"] * speed * t)
        x = x + 10 ** (p["air_db"] / 20) * air / (air.std() + 1e-12) * np.sqrt(np.mean(x ** 2) * 2)
    elif fam == "engine":
        period = SR / (p["fire"] * speed)
        k = np.arange(int(n / period) + 2)
        pos = (k * period + rng.uniform(0, period) + p["jitter"] * period * rng.standard_normal(k.size)).astype(int)
        pos = pos[(pos >= 0) & (pos < n)]
        exc = np.zeros(n)
        exc[pos] = 1.0 + 0.1 * rng.standard_normal(pos.size)
        res = list(p["res"])
        if anomaly == "missing":   # a resonance (the block's mode) damped away
            j = int(rng.integers(len(res)))
            gains = np.ones(len(res))
            gains[j] = (0.5, 0.25, 0.01)[sev - 1]
            x = sum(g * _resonate(exc, [f], [d]) for g, f, d in zip(gains, res, p["damp"]))
        else:
            x = _resonate(exc, res, p["damp"])
        b, a = signal.butter(2, p["cutoff"] / (SR / 2))
        x = signal.lfilter(b, a, x)
    else:
        src = recorded(p["file"])
        rate = speed
        need = int(n * rate) + 2
        start = int(rng.integers(0, max(1, src.size)))
        idx = (start + np.arange(need)) % src.size
        seg = src[idx].astype(np.float64)
        x = np.interp(np.arange(n) * rate, np.arange(need), seg)
        if anomaly == "missing":   # notch the strongest spectral peak (10 Hz wide)
            X = np.fft.rfft(x)
            f = np.fft.rfftfreq(n, 1 / SR)
            ref = np.abs(np.fft.rfft(src[:SR * 4])) if src.size >= SR * 4 else np.abs(np.fft.rfft(src))
            fref = np.fft.rfftfreq((SR * 4) if src.size >= SR * 4 else src.size, 1 / SR)
            band = (fref > 40) & (fref < 4000)
            peak = float(fref[band][np.argmax(ref[band])]) * rate
            X[np.abs(f - peak) < 5 + 0.01 * peak] *= (0.5, 0.25, 0.01)[sev - 1]
            x = np.fft.irfft(X, n)
    x = x / (np.sqrt(np.mean(x ** 2)) + 1e-12)
    f_shaft = p["f_shaft"] * speed
    if anomaly == "clicks":
        period = SR / (3.57 * f_shaft)
        pos = np.arange(rng.uniform(0, period), n, period).astype(int)
        exc = np.zeros(n)
        exc[pos] = rng.uniform(0.6, 1.0, pos.size)
        ring = _resonate(exc, [p["bearing_hz"]], [300.0])
        x += (0.1, 0.2, 0.4)[sev - 1] * ring / (np.sqrt(np.mean(ring ** 2)) + 1e-12)
    elif anomaly == "imbalance":
        depth = (0.1, 0.2, 0.4)[sev - 1]
        x *= 1 + depth * np.sin(2 * np.pi * f_shaft * t + rng.uniform(0, 6))
        x += depth * np.sin(2 * np.pi * np.cumsum(np.full(n, f_shaft)) / SR)
    elif anomaly == "rubbing":
        b, a = signal.butter(2, [1000 / (SR / 2), 6000 / (SR / 2)], "band")
        noise = signal.lfilter(b, a, rng.standard_normal(n))
        env = np.maximum(0, np.sin(2 * np.pi * f_shaft * t + rng.uniform(0, 6))) ** 2
        rub = noise * env
        x += 10 ** ((-24, -18, -12)[sev - 1] / 20) * rub / (np.sqrt(np.mean(rub ** 2)) + 1e-12)
    noise = coloured(n, p["noise_exp"], rng) * 10 ** ((p["noise_db"] + rng.uniform(-3, 3)) / 20)
    amb = recorded(AMBIENCE[int(rng.integers(len(AMBIENCE)))])
    a0 = int(rng.integers(0, amb.size))
    amb = amb[(a0 + np.arange(n)) % amb.size].astype(np.float64)
    amb = amb / (np.sqrt(np.mean(amb ** 2)) + 1e-12) * 10 ** (rng.uniform(-36, -28) / 20)
    y = (x + noise + amb) * 10 ** ((-20 + rng.uniform(-1.5, 1.5)) / 20)
    return np.clip(y, -1, 1).astype(np.float32)

"""The *field* machine set: machine types never used while designing the anomaly detector.

``machines.py`` (motor, fan, pump, engine, recorded sonic-pi loops) is the design set: features,
detector settings and thresholds were tuned on it. This module is written apart from it, with
other machine physics, other faults and the variation a deployment sees, and is the headline of
``eval_anomaly.py``:

``compressor``  a reciprocating compressor: valve impacts twice per cycle ringing the head's
                modes, intake pulsation at the cycle's harmonics, the belt-driven motor's harmonics
``gearbox``     gear mesh tone (teeth x shaft) and its harmonics with shaft-rate sidebands
``conveyor``    roller rumble amplitude-modulated at the roller rate, belt-joint thumps, a
                gear-motor whine
``transformer`` magnetostriction hum (even harmonics of 2x the line frequency, a per-unit balance)
                with its cooling fan
``blower``      a centrifugal blower: aerodynamic noise with a spectral hump, a blade-pass tone
``factory`` / ``mine`` / ``powerplant``
                **real recorded machinery** (``lincity-ng-data``, GPL-2+ / CC BY-SA 2.0):
                IndustryHigh1/3, CoalMine2 / OreMine2 and PowerCoalFull/Med, cut at random
                offsets and speed-varied

Every ID has its own microphone (high-pass, three peaking resonances of +-6 dB: mounting and
capsule) and room (an exponentially decaying noise tail, RT60 0.15..0.7 s) and a background of
coloured noise plus a recorded outdoor ambience (lincity-ng's traffic, water, parkland).

A clip is one *day*: the operating point (speed) differs by up to +-1.5 %, the overall gain by up
to +-3.5 dB, the background level by -6..+3 dB, and 30 % of 10 s clips carry an unrelated burst
(recorded words from ``ktuberling-data``, clicks, windows, building noise, a crowd from
lincity-ng, game effects from ``colobot-common-sounds``). Training audio is one day (speed within
+-0.3 %, gain 0 dB) with bursts at half the rate; long normal streams (several days back to
back, one burst per 40 s on average) measure false alarms per hour.

Faults (severity 1..3, each step doubling the effect):

``bearing``    outer-race defect: impacts at a per-ID ball-pass ratio (3.0..5.5 x shaft, jittered)
               ringing a per-ID mode (1.5..6 kHz)
``imbalance``  a stronger 1x shaft component and amplitude modulation at the shaft rate
``looseness``  rattle: irregular impacts once per revolution ringing a 300..1200 Hz mode, plus
               a half-order (0.5x) subharmonic
``rubbing``    friction bursts (0.8..5 kHz) once per revolution
``leak``       a continuous hiss (3..7 kHz) from a leaking seal or valve

Deterministic from integer seeds; ``build_machines.py --set field`` writes the files.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import os

import numpy as np
from scipy import signal

from machines import coloured   # the design set's coloured-noise helper (a sibling module in this folder)

SR = 16000
FAMILIES = ("compressor", "gearbox", "conveyor", "transformer", "blower", "factory", "mine", "powerplant")
KINDS = ("bearing", "imbalance", "looseness", "rubbing", "leak")
LINCITY = "/usr/share/games/lincity-ng/sounds"
RECORDED = {"factory": ("IndustryHigh1.wav", "IndustryHigh3.wav"), "mine": ("CoalMine2.wav", "OreMine2.wav"),
            "powerplant": ("PowerCoalFull.wav", "PowerCoalMed.wav")}
AMBIENCE = ("TraficLow1.wav", "TraficLow3.wav", "Water2.wav", "Water4.wav", "ParklandLake1.wav", "Green2.wav")
BURST_LINCITY = ("Click.wav", "WindowClose.wav", "WindowOpen.wav", "Build1.wav", "Build2.wav", "Raze1.wav",
                 "Raze2.wav", "SportsCroud1.wav", "Pottery1.wav", "PowerLine1.wav")
KTUBERLING = "/usr/share/ktuberling/sounds"
COLOBOT = "/usr/share/games/colobot/sounds"
PACKAGES = "lincity-ng-data ktuberling-data colobot-common-sounds"


def hash_name(name: str) -> int:
    h = 0xcbf29ce484222325
    for ch in name.encode():
        h = ((h ^ ch) * 0x100000001b3) % (1 << 62)
    return h


@functools.lru_cache(maxsize=64)
def recording(path: str) -> np.ndarray:
    """A packaged recording as 16 kHz mono float64, mean removed, RMS 1."""
    import soundfile as sf
    import soxr

    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != SR:
        x = soxr.resample(x, sr, SR)
    x = x.astype(np.float64) - float(x.mean())
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-12)


@functools.lru_cache(maxsize=1)
def burst_files() -> tuple:
    files = [os.path.join(LINCITY, f) for f in BURST_LINCITY]
    words = sorted(glob.glob(os.path.join(KTUBERLING, "*", "*.ogg")))
    files += words[::12]   # every 12th word: ~140 words in many languages and voices
    files += sorted(glob.glob(os.path.join(COLOBOT, "sound0[0-4]*.wav")))
    return tuple(f for f in files if os.path.exists(f))


@dataclasses.dataclass(frozen=True)
class MachineID:
    family: str
    index: int

    @property
    def name(self) -> str:
        return f"{self.family}-{self.index:02d}"

    def params(self) -> dict:
        rng = np.random.default_rng(hash_name("field/" + self.name))
        f = self.family
        p = {"hp": float(rng.uniform(30, 120)), "eq_f": [float(v) for v in np.exp(rng.uniform(np.log(200), np.log(6000), 3))],
             "eq_db": [float(v) for v in rng.uniform(-6, 6, 3)], "eq_q": [float(v) for v in rng.uniform(0.7, 3.0, 3)],
             "rt60": float(rng.uniform(0.15, 0.7)), "wet_db": float(rng.uniform(-14, -4)),
             "bg_db": float(rng.uniform(-32, -22)), "bg_exp": float(rng.uniform(0.3, 1.8)),
             "amb": AMBIENCE[int(rng.integers(len(AMBIENCE)))], "bpfo": float(rng.uniform(3.0, 5.5)),
             "bearing_hz": float(rng.uniform(1500, 6000)), "rattle_hz": float(rng.uniform(300, 1200))}
        if f == "compressor":
            p.update(cycle=float(rng.uniform(10, 22)), modes=[float(v) for v in rng.uniform(700, 4000, 3)],
                     damp=[float(v) for v in rng.uniform(80, 300, 3)], belt=float(rng.uniform(2.5, 4.0)),
                     n_harm=int(rng.integers(5, 12)), valve_lag=float(rng.uniform(0.3, 0.6)))
            p["shaft"] = p["cycle"]
        elif f == "gearbox":
            p.update(shaft=float(rng.uniform(15, 40)), teeth=int(rng.integers(17, 42)),
                     side=float(rng.uniform(0.1, 0.4)), n_mesh=int(rng.integers(2, 4)))
        elif f == "conveyor":
            p.update(roller=float(rng.uniform(3, 9)), belt_hz=float(rng.uniform(0.4, 1.5)),
                     thump_hz=float(rng.uniform(60, 200)), whine=float(rng.uniform(300, 900)),
                     rumble_hi=float(rng.uniform(300, 900)))
            p["shaft"] = p["roller"] * 4
        elif f == "transformer":
            p.update(line=float(rng.choice([50.0, 60.0])), balance=[float(v) for v in rng.uniform(0.1, 1.0, 6)],
                     fan=float(rng.uniform(15, 30)), fan_db=float(rng.uniform(-14, -6)))
            p["shaft"] = p["fan"]
        elif f == "blower":
            p.update(shaft=float(rng.uniform(25, 50)), blades=int(rng.integers(8, 17)),
                     hump=float(rng.uniform(400, 1500)), tone_db=float(rng.uniform(-12, -4)))
        else:
            p.update(file=RECORDED[f][self.index % len(RECORDED[f])], shaft=float(rng.uniform(8, 25)))
        return p


def machine_ids(per_family: int = 2) -> list[MachineID]:
    return [MachineID(f, i) for f in FAMILIES for i in range(min(per_family, len(RECORDED[f])) if f in RECORDED
                                                            else per_family)]


def _phase(f_track):
    return 2 * np.pi * np.cumsum(f_track) / SR


def _ring(exc, freqs, damps):
    y = np.zeros_like(exc)
    for f, d in zip(freqs, damps):
        if f >= SR * 0.48:
            continue
        r = np.exp(-np.pi * d / SR)
        y += signal.lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * f / SR), r * r], exc)
    return y


def _impulses(n, rate, rng, jitter=0.0, amp_sd=0.0):
    period = SR / rate
    k = np.arange(int(n / period) + 2)
    pos = k * period + rng.uniform(0, period) + jitter * period * rng.standard_normal(k.size)
    pos = pos[(pos >= 0) & (pos < n)].astype(int)
    exc = np.zeros(n)
    exc[pos] = np.maximum(0.05, 1.0 + amp_sd * rng.standard_normal(pos.size))
    return exc


def _rms(x):
    return float(np.sqrt(np.mean(x ** 2)) + 1e-12)


def _machine(mid: MachineID, p: dict, n: int, speed: np.ndarray, rng) -> np.ndarray:
    f = mid.family
    s0 = float(speed.mean())
    if f == "compressor":
        c = p["cycle"] * s0
        exc = _impulses(n, c, rng, 0.004, 0.1)
        exc += 0.6 * np.roll(_impulses(n, c, rng, 0.004, 0.1), int(p["valve_lag"] * SR / c))
        x = _ring(exc, p["modes"], p["damp"])
        x /= _rms(x)
        ph = _phase(p["cycle"] * speed)
        puls = sum(np.sin(k * ph + rng.uniform(0, 6)) / k for k in range(1, p["n_harm"] + 1))
        mot = sum(np.sin(k * p["belt"] * ph + rng.uniform(0, 6)) / k ** 1.3 for k in range(1, 8))
        return x + 0.8 * puls / _rms(puls) + 0.4 * mot / _rms(mot)
    if f == "gearbox":
        ph = _phase(p["shaft"] * speed)
        x = np.zeros(n)
        for m in range(1, p["n_mesh"] + 1):
            am = 1 + p["side"] * np.sin(ph + rng.uniform(0, 6)) + 0.5 * p["side"] * np.sin(2 * ph + rng.uniform(0, 6))
            x += am * np.sin(m * p["teeth"] * ph + rng.uniform(0, 6)) / m
        x += 0.3 * np.sin(ph + rng.uniform(0, 6))
        b, a = signal.butter(2, 2000 / (SR / 2))
        return x / _rms(x) + 0.15 * signal.lfilter(b, a, rng.standard_normal(n))
    if f == "conveyor":
        b, a = signal.butter(2, p["rumble_hi"] / (SR / 2))
        rum = signal.lfilter(b, a, rng.standard_normal(n))
        rum *= 1 + 0.3 * np.sin(_phase(p["roller"] * speed) + rng.uniform(0, 6))
        th = _ring(_impulses(n, p["belt_hz"] * s0, rng, 0.01, 0.2), [p["thump_hz"]], [30.0])
        wh = np.sin(_phase(p["whine"] * speed)) + 0.4 * np.sin(2 * _phase(p["whine"] * speed) + 1.0)
        return rum / _rms(rum) + 0.7 * th / _rms(th) + 0.2 * wh / _rms(wh)
    if f == "transformer":
        ph = 2 * np.pi * 2 * p["line"] * np.arange(n) / SR
        hum = sum(w * np.sin((k + 1) * ph + rng.uniform(0, 6)) for k, w in enumerate(p["balance"]))
        b, a = signal.butter(2, [200 / (SR / 2), 3000 / (SR / 2)], "band")
        fan = signal.lfilter(b, a, rng.standard_normal(n)) * (1 + 0.2 * np.sin(_phase(p["fan"] * speed)))
        return hum / _rms(hum) + 10 ** (p["fan_db"] / 20) * fan / _rms(fan)
    if f == "blower":
        w = 2 * np.pi * p["hump"] / SR
        r = 0.97
        air = signal.lfilter([1 - r], [1, -2 * r * np.cos(w), r * r], rng.standard_normal(n))
        air += 0.3 * signal.lfilter([1.0], [1, -0.95], rng.standard_normal(n)) * 0.05
        ph = _phase(p["shaft"] * speed)
        tone = np.sin(p["blades"] * ph + rng.uniform(0, 6)) + 0.3 * np.sin(2 * p["blades"] * ph + rng.uniform(0, 6))
        return air / _rms(air) * (1 + 0.1 * np.sin(ph)) + 10 ** (p["tone_db"] / 20) * tone / _rms(tone)
    src = recording(os.path.join(LINCITY, p["file"]))
    pos0 = float(rng.uniform(0, src.size))
    t = pos0 + np.cumsum(speed)
    return np.interp(t % src.size, np.arange(src.size), src, period=src.size)


def _fault(kind: str, sev: int, p: dict, n: int, speed: np.ndarray, rng, x: np.ndarray) -> np.ndarray:
    shaft = p["shaft"] * speed
    s = (1, 2, 4)[sev - 1]
    if kind == "bearing":
        exc = _impulses(n, p["bpfo"] * float(shaft.mean()), rng, 0.02, 0.3)
        ring = _ring(exc, [p["bearing_hz"]], [350.0])
        return x + 0.08 * s * ring / _rms(ring)
    if kind == "imbalance":
        ph = _phase(shaft)
        d = 0.08 * s
        return x * (1 + d * np.sin(ph + rng.uniform(0, 6))) + d * np.sin(ph)
    if kind == "looseness":
        exc = _impulses(n, float(shaft.mean()), rng, 0.05, 0.6)
        rat = _ring(exc, [p["rattle_hz"], 1.7 * p["rattle_hz"]], [120.0, 200.0])
        sub = np.sin(0.5 * _phase(shaft) + rng.uniform(0, 6))
        return x + 0.07 * s * (rat / _rms(rat) + 0.5 * sub)
    if kind == "rubbing":
        b, a = signal.butter(2, [800 / (SR / 2), 5000 / (SR / 2)], "band")
        nz = signal.lfilter(b, a, rng.standard_normal(n))
        env = np.maximum(0, np.sin(_phase(shaft) + rng.uniform(0, 6))) ** 3
        rub = nz * env
        return x + 10 ** ((-26 + 6 * (sev - 1)) / 20) * rub / _rms(rub)
    if kind == "leak":
        b, a = signal.butter(3, [3000 / (SR / 2), 7000 / (SR / 2)], "band")
        h = signal.lfilter(b, a, rng.standard_normal(n))
        return x + 10 ** ((-30 + 6 * (sev - 1)) / 20) * h / _rms(h)
    raise ValueError(f"fault kind {kind!r} is not one of {', '.join(KINDS)}")


@functools.lru_cache(maxsize=16)
def _room(mid: MachineID):
    p = mid.params()
    rng = np.random.default_rng(hash_name("room/" + mid.name))
    m = int(p["rt60"] * SR)
    tail = rng.standard_normal(m) * np.exp(-6.9 * np.arange(m) / m)
    ir = np.zeros(m + 1)
    ir[0] = 1.0
    ir[1:] = 10 ** (p["wet_db"] / 20) * tail / np.sqrt(np.sum(tail ** 2))
    sos = [signal.butter(2, p["hp"] / (SR / 2), "high", output="sos")]
    for f0, g, q in zip(p["eq_f"], p["eq_db"], p["eq_q"]):
        A = 10 ** (g / 40)
        w = 2 * np.pi * f0 / SR
        al = np.sin(w) / (2 * q)
        b = [1 + al * A, -2 * np.cos(w), 1 - al * A]
        a = [1 + al / A, -2 * np.cos(w), 1 - al / A]
        sos.append(np.array([[b[0] / a[0], b[1] / a[0], b[2] / a[0], 1.0, a[1] / a[0], a[2] / a[0]]]))
    return ir, np.concatenate(sos)


def _bursts(n: int, rate_per_s: float, rng, ref_rms: float) -> np.ndarray:
    out = np.zeros(n)
    files = burst_files()
    if not files or rate_per_s <= 0:
        return out
    k = rng.poisson(rate_per_s * n / SR)
    for _ in range(int(k)):
        b = recording(files[int(rng.integers(len(files)))])[: 3 * SR]
        at = int(rng.integers(0, max(1, n - 1)))
        m = min(b.size, n - at)
        out[at:at + m] += b[:m] * ref_rms * 10 ** (rng.uniform(-9, 3) / 20)
    return out


def render(mid: MachineID, seconds: float, seed: int, anomaly: str | None = None, severity: int = 0,
           day: int | None = None, bursts_per_s: float | None = None, train: bool = False,
           speed: float | None = None, gain_db: float | None = None, background_db: float | None = None) -> np.ndarray:
    """One recording of ``mid``: float32 mono, 16 kHz, about -24 dBFS at the day's gain.

    ``day`` seeds the operating point, gain and background (default: ``seed``; training files
    of one ID share a day); ``bursts_per_s`` the interference rate (default: 0.03 per second, 0.3 per
    10 s clip; half that while training)."""
    p = mid.params()
    rng = np.random.default_rng(seed)
    drng = np.random.default_rng(hash_name(f"day/{mid.name}/{seed if day is None else day}"))
    n = int(round(seconds * SR))
    t = np.arange(n) / SR
    span, g_day = (0.003, 0.0) if train else (0.015, float(drng.uniform(-3.5, 3.5)))
    s_day = 1.0 + float(drng.uniform(-span, span))
    bg_day = float(drng.uniform(-6, 3))
    s_day = s_day if speed is None else float(speed)
    gain_db = g_day if gain_db is None else float(gain_db)
    bg_db = p["bg_db"] + (bg_day if background_db is None else float(background_db))
    speed = s_day * (1 + 0.002 * np.sin(2 * np.pi * rng.uniform(0.02, 0.2) * t + rng.uniform(0, 6)))
    x = _machine(mid, p, n, speed, rng)
    x = x / _rms(x)
    if anomaly is not None:
        x = _fault(anomaly, int(severity), p, n, speed, rng, x)
    ir, sos = _room(mid)
    x = signal.fftconvolve(x, ir)[:n]
    amb = recording(os.path.join(LINCITY, p["amb"]))
    a0 = int(rng.integers(amb.size))
    bg = 0.7 * amb[(a0 + np.arange(n)) % amb.size]
    bg += 0.7 * coloured(n, p["bg_exp"], rng)
    x = x + 10 ** (bg_db / 20) * bg
    if bursts_per_s is None:
        bursts_per_s = 0.015 if train else 0.03
    x = x + _bursts(n, bursts_per_s, rng, 1.0)
    x = signal.sosfilt(sos, x)
    y = x * 10 ** ((-24 + gain_db) / 20)   # the machine alone was at RMS 1 before its room
    return np.clip(y, -1, 1).astype(np.float32)

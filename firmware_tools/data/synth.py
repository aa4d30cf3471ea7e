"""Synthetic noise, MIDI generation and room impulse responses for the denoise data builder.

Everything here is deterministic given an ``np.random.Generator`` (or a seed).
"""
from __future__ import annotations

import struct

import numpy as np
from scipy import signal

NOISE_FAMILIES = ("white", "pink", "brown", "hum", "fan", "keyboard", "traffic")


def _norm(x: np.ndarray, peak: float = 0.5) -> np.ndarray:
    m = float(np.max(np.abs(x))) if x.size else 0.0
    return (x * (peak / m)).astype(np.float32) if m > 0 else x.astype(np.float32)


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown)."""
    w = rng.standard_normal(n)
    if exponent == 0:
        return w
    spec = np.fft.rfft(w)
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1.0
    spec *= f ** (-exponent / 2.0)
    spec[0] = 0.0
    return np.fft.irfft(spec, n)


def hum(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz fundamental with decaying, randomly weighted harmonics + slight buzz."""
    f0 = float(rng.choice([50.0, 60.0])) * (1 + rng.uniform(-0.004, 0.004))
    t = np.arange(n) / sr
    x = np.zeros(n)
    nh = int(rng.integers(4, 16))
    for k in range(1, nh + 1):
        if f0 * k > sr / 2 * 0.9:
            break
        amp = rng.uniform(0.2, 1.0) / k ** rng.uniform(0.3, 1.2)
        # odd harmonics dominate in transformer buzz
        if k % 2 == 0:
            amp *= rng.uniform(0.1, 0.7)
        x += amp * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi))
    x += rng.uniform(0.0, 0.05) * coloured_noise(n, 1.0, rng) / 3
    return x


def fan(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Fan / air-conditioner: low-passed coloured noise + blade-pass tones with slow wobble."""
    base = coloured_noise(n, rng.uniform(0.5, 1.5), rng)
    fc = rng.uniform(300, 3000)
    b, a = signal.butter(2, min(fc / (sr / 2), 0.95), "low")
    x = signal.lfilter(b, a, base)
    x /= np.std(x) + 1e-12
    t = np.arange(n) / sr
    rpm_hz = rng.uniform(10, 40)
    blades = int(rng.integers(3, 9))
    bpf = rpm_hz * blades
    wobble = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t)
    phase = 2 * np.pi * bpf * np.cumsum(wobble) / sr
    tones = sum(rng.uniform(0.1, 0.6) / k * np.sin(k * phase + rng.uniform(0, 6.3)) for k in range(1, 5))
    motor = rng.uniform(0, 0.2) * np.sin(2 * np.pi * rpm_hz * t)
    return x + tones + motor


def keyboard(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Keyboard-like clicks: bursts of short damped resonant transients at typing rhythm."""
    x = np.zeros(n)
    rate = rng.uniform(3, 9)  # keystrokes per second
    t = 0.0
    while True:
        t += rng.exponential(1.0 / rate)
        i = int(t * sr)
        if i >= n:
            break
        L = int(sr * rng.uniform(0.008, 0.03))
        env = np.exp(-np.arange(L) / (L / rng.uniform(3, 8)))
        click = rng.standard_normal(L) * env
        f = rng.uniform(1500, 6000)
        b, a = signal.iirpeak(min(f / (sr / 2), 0.95), rng.uniform(2, 8))
        click = signal.lfilter(b, a, click) + 0.3 * click
        # key release: a second weaker click
        if rng.random() < 0.7:
            d = int(sr * rng.uniform(0.05, 0.12))
            if i + d + L < n:
                x[i + d:i + d + L] += 0.4 * click
        x[i:i + L] += click[: n - i] * rng.uniform(0.5, 1.0)
    x += 0.003 * rng.standard_normal(n)
    return x


def traffic(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Traffic-like rumble: brown noise low-passed, with slowly passing vehicles (AM swells)."""
    x = coloured_noise(n, 2.0, rng)
    b, a = signal.butter(2, min(rng.uniform(150, 600) / (sr / 2), 0.95), "low")
    x = signal.lfilter(b, a, x)
    x /= np.std(x) + 1e-12
    t = np.arange(n) / sr
    env = np.full(n, 0.3)
    dur = n / sr
    for _ in range(int(rng.integers(1, 2 + int(dur / 4)))):
        c = rng.uniform(0, dur)
        w = rng.uniform(1.0, 4.0)
        env += rng.uniform(0.5, 2.0) * np.exp(-0.5 * ((t - c) / w) ** 2)
    hiss = coloured_noise(n, 1.0, rng)
    b2, a2 = signal.butter(2, [min(500 / (sr / 2), 0.9), min(4000 / (sr / 2), 0.95)], "band")
    hiss = signal.lfilter(b2, a2, hiss)
    hiss /= np.std(hiss) + 1e-12
    return env * (x + rng.uniform(0.05, 0.3) * hiss)


def synth_noise(family: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    if family == "white":
        x = coloured_noise(n, 0.0, rng)
    elif family == "pink":
        x = coloured_noise(n, 1.0, rng)
    elif family == "brown":
        x = coloured_noise(n, 2.0, rng)
    elif family == "hum":
        x = hum(n, sr, rng)
    elif family == "fan":
        x = fan(n, sr, rng)
    elif family == "keyboard":
        x = keyboard(n, sr, rng)
    elif family == "traffic":
        x = traffic(n, sr, rng)
    else:
        raise ValueError(f"unknown noise family {family!r}")
    return _norm(x, 0.5)


# --------------------------------------------------------------------------- MIDI

def _vlq(v: int) -> bytes:
    out = [v & 0x7F]
    v >>= 7
    while v:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    return bytes(reversed(out))


def random_midi(program: int, seconds: float, rng: np.random.Generator, drums: bool = False) -> bytes:
    """A format-0 Standard MIDI File: one GM program, a random melody over random chords.

    ``drums`` puts a random pattern on channel 10 (GM percussion) instead.
    """
    tpq = 480
    bpm = float(rng.uniform(60, 160))
    tempo = int(60e6 / bpm)
    ch = 9 if drums else 0
    events: list[tuple[int, bytes]] = []  # (abs tick, message)
    total_ticks = int(seconds * bpm / 60 * tpq)
    if not drums:
        events.append((0, bytes([0xC0 | ch, program & 0x7F])))
    root = int(rng.integers(36, 60)) if program >= 32 and program < 40 else int(rng.integers(48, 72))
    scale = np.array([0, 2, 4, 5, 7, 9, 11]) if rng.random() < 0.6 else np.array([0, 2, 3, 5, 7, 8, 10])
    t = 0
    if drums:
        kit = [35, 36, 38, 40, 42, 44, 46, 49, 51, 45, 47, 50, 39, 54]
        pattern = [(int(rng.choice(kit)), rng.random() < 0.6) for _ in range(16)]
        step = tpq // 4
        while t < total_ticks:
            for k, (note, on) in enumerate(pattern):
                if on or k % 4 == 0:
                    n = 36 if k % 8 == 0 else (38 if k % 8 == 4 else note)
                    v = int(rng.integers(60, 120))
                    events.append((t, bytes([0x90 | ch, n, v])))
                    events.append((t + step // 2, bytes([0x80 | ch, n, 0])))
                t += step
    else:
        while t < total_ticks:
            # a chord on the bar, then melody notes
            deg = int(rng.integers(0, 7))
            chord = [root + scale[(deg + j) % 7] + 12 * ((deg + j) // 7) for j in (0, 2, 4)]
            bar = 4 * tpq
            if rng.random() < 0.7:
                v = int(rng.integers(40, 90))
                for nn in chord:
                    events.append((t, bytes([0x90 | ch, int(nn), v])))
                    events.append((t + bar - 10, bytes([0x80 | ch, int(nn), 0])))
            u = t
            while u < t + bar:
                dur = int(rng.choice([tpq // 4, tpq // 2, tpq, tpq * 2], p=[0.2, 0.4, 0.3, 0.1]))
                if rng.random() < 0.85:
                    nn = root + 12 + int(scale[int(rng.integers(0, 7))]) + 12 * int(rng.integers(-1, 1))
                    v = int(rng.integers(50, 120))
                    events.append((u, bytes([0x90 | ch, nn, v])))
                    events.append((u + max(dur - 10, 10), bytes([0x80 | ch, nn, 0])))
                u += dur
            t += bar
    events.sort(key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90))
    track = bytearray()
    track += b"\x00\xff\x51\x03" + tempo.to_bytes(3, "big")
    last = 0
    for tick, msg in events:
        track += _vlq(tick - last) + msg
        last = tick
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, tpq)
    return header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track)


# --------------------------------------------------------------------------- RIRs

def synthetic_rir(sr: int, rt60: float, rng: np.random.Generator, drr_db: float | None = None) -> np.ndarray:
    """Exponentially decaying noise tail with a unit direct path at index 0 (no pre-delay)."""
    n = int(sr * min(rt60 * 1.2, 2.0)) + 1
    t = np.arange(n) / sr
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / rt60)  # -60 dB at rt60
    # sparse early reflections in the first 50 ms
    early = np.zeros(n)
    for _ in range(int(rng.integers(4, 12))):
        i = int(rng.uniform(0.002, 0.05) * sr)
        if i < n:
            early[i] += rng.uniform(-0.7, 0.7)
    # lowpass the tail a bit (air absorption)
    b, a = signal.butter(1, min(rng.uniform(3000, 7000) / (sr / 2), 0.95), "low")
    tail = signal.lfilter(b, a, tail)
    tail[: int(0.003 * sr)] = 0
    if drr_db is None:
        drr_db = float(rng.uniform(-3, 12))
    e_tail = np.sum(tail ** 2) + np.sum(early ** 2)
    g = np.sqrt(10 ** (-drr_db / 10) / max(e_tail, 1e-12))
    h = g * (tail + early)
    h[0] = 1.0
    return h.astype(np.float32)


def pra_room_rirs(sr: int, rng: np.random.Generator, n_sources: int = 2):
    """Simulate one shoebox room with pyroomacoustics (image source + ray tracing off).

    Returns (list of RIRs each aligned so the direct path is at index 0, info dict).
    Raises ImportError when pyroomacoustics is missing.
    """
    import pyroomacoustics as pra

    dims = np.array([rng.uniform(3, 10), rng.uniform(3, 8), rng.uniform(2.4, 4.0)])
    rt60 = float(rng.uniform(0.15, 0.9))
    try:
        e_abs, max_order = pra.inverse_sabine(rt60, dims)
    except ValueError:
        rt60 = 0.3
        e_abs, max_order = pra.inverse_sabine(rt60, dims)
    max_order = int(min(max_order, 30))
    room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(e_abs), max_order=max_order)
    mic = np.array([rng.uniform(0.5, dims[0] - 0.5), rng.uniform(0.5, dims[1] - 0.5), rng.uniform(0.7, 1.8)])
    room.add_microphone(mic)
    for _ in range(n_sources):
        p = np.array([rng.uniform(0.3, dims[0] - 0.3), rng.uniform(0.3, dims[1] - 0.3), rng.uniform(0.5, 2.0)])
        room.add_source(p)
    room.compute_rir()
    rirs = []
    for s in range(n_sources):
        h = np.asarray(room.rir[0][s], dtype=np.float64)
        k = int(np.argmax(np.abs(h)))
        h = h[k:]
        h = h[: int(sr * min(rt60 * 1.2, 2.0)) + 1]
        h /= h[0] if abs(h[0]) > 1e-9 else (np.max(np.abs(h)) + 1e-12)
        rirs.append(h.astype(np.float32))
    info = {"room": [round(float(d), 2) for d in dims], "rt60": round(rt60, 3), "max_order": max_order}
    return rirs, info

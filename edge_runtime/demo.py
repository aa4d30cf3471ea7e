"""A built-in test clip, so the default job runs with no files and no hardware.

The clip exercises what the default pipeline does: a 35 Hz rumble the high-pass removes,
a harmonic melody and noise that pass, and transients up to +3 dBFS over full scale that
the limiter must hold under its ceiling. :func:`measure` reports those effects from the
audio itself.
"""
from __future__ import annotations

import numpy as np


def make_clip(sample_rate: int = 48000, seconds: float = 6.0, channels: int = 2,
              seed: int = 0) -> np.ndarray:
    """Return ``(frames, channels)`` float32 audio (it exceeds full scale on purpose)."""
    rng = np.random.default_rng(seed)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    out = np.zeros((n, channels), dtype=np.float64)
    rumble = 0.3 * np.sin(2 * np.pi * 35.0 * t)
    notes = [220.0, 277.18, 329.63, 440.0, 329.63, 277.18]
    melody = np.zeros(n)
    seg = n // len(notes)
    for i, f in enumerate(notes):
        sl = slice(i * seg, (i + 1) * seg)
        tt = t[sl] - t[sl][0]
        env = np.minimum(1.0, tt / 0.02) * np.exp(-tt * 1.5)
        for h in range(1, 6):
            melody[sl] += env * np.sin(2 * np.pi * f * h * tt) * 0.25 / h
    for c in range(channels):
        noise = rng.standard_normal(n) * 0.02
        clicks = np.zeros(n)
        for pos in rng.integers(0, n - 200, size=8):
            clicks[pos:pos + 200] += 1.2 * np.hanning(200) * np.sign(rng.standard_normal())
        out[:, c] = rumble + melody * (1.0 if c == 0 else 0.8) + noise + clicks
    return out.astype(np.float32)


def band_energy_db(x: np.ndarray, sample_rate: int, lo: float, hi: float) -> float:
    """Energy of ``x`` (frames, channels) between ``lo`` and ``hi`` Hz, in dB."""
    spec = np.abs(np.fft.rfft(x, axis=0)) ** 2
    freqs = np.fft.rfftfreq(x.shape[0], 1.0 / sample_rate)
    sel = (freqs >= lo) & (freqs < hi)
    return float(10 * np.log10(spec[sel].sum() + 1e-20))


def measure(inp: np.ndarray, out: np.ndarray, sample_rate: int) -> dict:
    """What the default pipeline did to the clip, measured on the audio."""
    peak_in = float(np.max(np.abs(inp)))
    peak_out = float(np.max(np.abs(out)))
    return {
        "peak_in_dbfs": round(20 * np.log10(peak_in + 1e-12), 2),
        "peak_out_dbfs": round(20 * np.log10(peak_out + 1e-12), 2),
        "rumble_35hz_change_db": round(band_energy_db(out, sample_rate, 25, 45)
                                       - band_energy_db(inp, sample_rate, 25, 45), 1),
        "melody_200_2k_change_db": round(band_energy_db(out, sample_rate, 200, 2000)
                                         - band_energy_db(inp, sample_rate, 200, 2000), 1),
    }


# ---------------------------------------------------------------------------- the speech stage

def speech_clip() -> tuple[np.ndarray, np.ndarray, int, str]:
    """The bundled speech clip: 4 s of noisy speech at 5 dB SNR and its clean reference, one
    clip of the denoiser's TEST split (never trained on), the median 5 dB clip by the shipped
    model's SI-SDR improvement in the evaluation (firmware_tools/data/make_demo_clip.py).
    Returns ``(noisy, clean, sample_rate, path of the noisy file)``."""
    from importlib import resources

    import soundfile as sf

    base = resources.files("edge_runtime") / "_demo"
    with resources.as_file(base / "speech_noisy.flac") as p:
        noisy, sr = sf.read(p, dtype="float32")
        path = str(p)
    with resources.as_file(base / "speech_clean.flac") as p:
        clean, sr2 = sf.read(p, dtype="float32")
    if sr != sr2 or noisy.shape != clean.shape:
        raise ValueError(f"{path}: demo clip and its reference differ ({sr} vs {sr2} Hz, {noisy.shape} vs {clean.shape})")
    return noisy, clean, sr, path


def si_sdr_db(ref: np.ndarray, est: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio of ``est`` against ``ref`` (1-D), in dB."""
    ref = ref.astype(np.float64) - ref.mean()
    est = est.astype(np.float64) - est.mean()
    a = float(np.dot(est, ref) / (np.dot(ref, ref) + 1e-20))
    t = a * ref
    return float(10 * np.log10((np.sum(t ** 2) + 1e-20) / (np.sum((est - t) ** 2) + 1e-20)))


def measure_speech(noisy: np.ndarray, clean: np.ndarray, out: np.ndarray, sample_rate: int) -> dict:
    """What the denoiser did to the bundled clip, against its clean reference."""
    quiet = np.abs(clean) < 10 ** (-50 / 20)   # where the reference has (almost) no speech
    def db(x):
        return 20 * np.log10(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)
    return {
        "si_sdr_in_db": round(si_sdr_db(clean, noisy), 1),
        "si_sdr_out_db": round(si_sdr_db(clean, out), 1),
        "noise_in_pauses_change_db": round(db(out[quiet]) - db(noisy[quiet]), 1) if quiet.any() else None,
    }

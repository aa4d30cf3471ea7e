"""DDSP-style synthesis and its front end, above the kernels of :mod:`edge_runtime._synth`.

One control frame per hop (``HOP`` = 160 samples = 10 ms at ``SAMPLE_RATE`` = 16 kHz, the
pipelines' block): an f0 in Hz, ``N_HARMONICS`` harmonic amplitudes and ``N_BANDS`` noise-filter
magnitudes (0..8 kHz in 125 Hz steps). Why 16 kHz and 10 ms: the instruments' energy the decoder
can learn on one CPU thread sits below 8 kHz; one decoder call per 10 ms keeps the model cost at
about 100 calls a second, and the amplitudes are interpolated per sample across the hop, so the
control rate shows only as a 10 ms attack resolution.

* :class:`Synthesizer` -- harmonic bank + filtered noise (+ optional reverb), streaming, one hop
  per call; :func:`synthesize` the same over whole control arrays.
* :class:`FrontEnd` -- the causal f0 tracker (YIN, :class:`edge_runtime._synth.Yin`) and
  A-weighted loudness per hop; :func:`analyze` the same over a whole signal.
"""
from __future__ import annotations

import cmath
import math

import numpy as np

from ._synth import FilteredNoise, HarmonicBank, Loudness, Reverb, Yin

__all__ = ["SAMPLE_RATE", "HOP", "N_HARMONICS", "N_BANDS", "F0_MIN", "F0_MAX", "Synthesizer", "FrontEnd",
           "synthesize", "analyze", "a_weighting_sos", "hz_to_midi", "midi_to_hz"]

SAMPLE_RATE = 16000
HOP = 160
N_HARMONICS = 50
N_BANDS = 65
F0_MIN = 60.0            # the tracker's lag range: 60 Hz .. 1.6 kHz
F0_MAX = 1600.0
YIN_WINDOW = 320         # 20 ms compared against up to 16.7 ms of lag: 587 samples of past
LOUDNESS_WINDOW = 512    # 32 ms
YIN_THRESHOLD = 0.15
VOICED_APERIODICITY = 0.3
SILENCE_DB = -80.0


def hz_to_midi(f: np.ndarray | float) -> np.ndarray:
    return 69.0 + 12.0 * np.log2(np.maximum(np.asarray(f, np.float64), 1e-3) / 440.0)


def midi_to_hz(m: np.ndarray | float) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(m, np.float64) - 69.0) / 12.0)


def a_weighting_sos(sample_rate: int) -> np.ndarray:
    """IEC 61672 A-weighting as 3 second-order sections (SciPy layout) by the bilinear transform,
    0 dB at 1 kHz. Unwarped: at 16 kHz the response above ~5 kHz falls faster than the analog
    curve, which matters little for loudness (A-weighting is already down there)."""
    fs2 = 2.0 * sample_rate
    p = [2 * math.pi * f for f in (20.598997, 20.598997, 107.65265, 737.86223, 12194.217, 12194.217)]
    zd = [(fs2 - w) / (fs2 + w) for w in p]              # real analog poles -w -> digital poles
    # zeros: four at s = 0 (z = 1), the two the bilinear transform adds at z = -1
    secs = [([1.0, -2.0, 1.0], (zd[0], zd[1])), ([1.0, -2.0, 1.0], (zd[2], zd[3])), ([1.0, 2.0, 1.0], (zd[4], zd[5]))]
    sos = np.array([[*b, 1.0, -(a + c), a * c] for b, (a, c) in secs], np.float64)
    z = cmath.exp(-2j * math.pi * 1000.0 / sample_rate)
    h = 1.0
    for s in sos:
        h *= (s[0] + s[1] * z + s[2] * z * z) / (s[3] + s[4] * z + s[5] * z * z)
    sos[0, :3] /= abs(h)
    return sos


class Synthesizer:
    """Harmonic + noise synthesizer, one hop per :meth:`process` call; nothing allocated per call.

    ``reverb_wet`` > 0 adds the small algorithmic reverb (:class:`edge_runtime._synth.Reverb`)."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, hop: int = HOP, n_harmonics: int = N_HARMONICS,
                 n_bands: int = N_BANDS, reverb_wet: float = 0.0, reverb_room: float = 0.8, seed: int = 1):
        if not (8000 <= int(sample_rate) <= 192000):
            raise ValueError(f"sample_rate={sample_rate}: expected 8000..192000 Hz")
        if not (0.0 <= reverb_wet <= 1.0) or not (0.0 <= reverb_room < 1.0):
            raise ValueError(f"reverb_wet={reverb_wet} (expected 0..1), reverb_room={reverb_room} (expected 0..<1)")
        self.sample_rate, self.hop = int(sample_rate), int(hop)
        self.n_harmonics, self.n_bands = int(n_harmonics), int(n_bands)
        self.harmonic = HarmonicBank(self.n_harmonics, self.hop, float(self.sample_rate))
        self.noise = FilteredNoise(self.n_bands, self.hop, int(seed))
        self.reverb = Reverb(float(self.sample_rate), room=reverb_room, wet=reverb_wet) if reverb_wet > 0 else None
        self._noise_out = np.zeros(self.hop, np.float32)
        self.latency_samples = self.noise.taps // 2      # the linear-phase noise filter's delay

    def reset(self) -> None:
        self.harmonic.reset()
        self.noise.reset()
        if self.reverb is not None:
            self.reverb.reset()

    def process(self, f0: float, amps: np.ndarray, mags: np.ndarray, out: np.ndarray) -> None:
        """Write one hop into ``out`` (hop,) float32 from f0 (Hz), amps (K,) and mags (B,) float32."""
        self.harmonic.process(f0, amps, out)
        self.noise.process(mags, self._noise_out)
        out += self._noise_out
        if self.reverb is not None:
            self.reverb.process(out)


def synthesize(f0: np.ndarray, amps: np.ndarray, mags: np.ndarray | None = None, *, sample_rate: int = SAMPLE_RATE,
               hop: int = HOP, reverb_wet: float = 0.0, seed: int = 1) -> np.ndarray:
    """Offline: (frames,) f0, (frames, K) amps and (frames, B) mags -> (frames * hop,) float32."""
    f0 = np.asarray(f0, np.float64)
    amps = np.ascontiguousarray(amps, np.float32)
    n = len(f0)
    if amps.ndim != 2 or len(amps) != n:
        raise ValueError(f"amps shape {amps.shape}: expected ({n}, n_harmonics)")
    if mags is None:
        mags = np.zeros((n, N_BANDS), np.float32)
    mags = np.ascontiguousarray(mags, np.float32)
    if mags.ndim != 2 or len(mags) != n:
        raise ValueError(f"mags shape {mags.shape}: expected ({n}, n_bands)")
    s = Synthesizer(sample_rate, hop, amps.shape[1], mags.shape[1], reverb_wet=reverb_wet, seed=seed)
    y = np.zeros(n * hop, np.float32)
    for t in range(n):
        s.process(float(f0[t]), amps[t], mags[t], y[t * hop:(t + 1) * hop])
    return y


class FrontEnd:
    """Causal f0 and A-weighted loudness per hop (16 kHz). After :meth:`push` of one hop:
    ``f0`` (Hz, held at the last voiced value through unvoiced hops, so the decoder's input is
    continuous), ``voiced``, ``aperiodicity`` and ``loudness_db``."""

    def __init__(self, sample_rate: int = SAMPLE_RATE, hop: int = HOP, f0_min: float = F0_MIN,
                 f0_max: float = F0_MAX, default_f0: float = 261.63):
        if not (0 < f0_min < f0_max < sample_rate / 4):
            raise ValueError(f"f0 range {f0_min}..{f0_max} Hz: expected 0 < f0_min < f0_max < sample_rate/4")
        self.sample_rate, self.hop = int(sample_rate), int(hop)
        self.yin = Yin(float(sample_rate), self.hop, int(round(YIN_WINDOW * sample_rate / 16000)),
                              max(2, int(sample_rate // f0_max)), int(math.ceil(sample_rate / f0_min)),
                              YIN_THRESHOLD)
        self.loud = Loudness(a_weighting_sos(self.sample_rate),
                                    int(LOUDNESS_WINDOW * sample_rate // 16000), self.hop)
        self.default_f0 = float(default_f0)
        self.reset()

    def reset(self) -> None:
        self.yin.reset()
        self.loud.reset()
        self.f0 = self.default_f0
        self.voiced = False
        self.aperiodicity = 1.0
        self.loudness_db = -120.0

    def push(self, x: np.ndarray) -> None:
        """One hop (hop,) float32."""
        self.yin.push(x)
        self.loud.push(x)
        self.loudness_db = self.loud.db
        self.aperiodicity = self.yin.aperiodicity
        self.voiced = self.aperiodicity < VOICED_APERIODICITY and self.loudness_db > SILENCE_DB
        if self.voiced:
            self.f0 = self.yin.f0


def analyze(x: np.ndarray, sample_rate: int = SAMPLE_RATE, hop: int = HOP, **kw) -> dict[str, np.ndarray]:
    """Offline front end: f0 (Hz, held), voiced, aperiodicity, loudness_db per hop of ``x``
    (the trailing partial hop is dropped)."""
    x = np.ascontiguousarray(x, np.float32)
    fe = FrontEnd(sample_rate, hop, **kw)
    n = len(x) // hop
    out = {k: np.zeros(n, np.float32) for k in ("f0", "aperiodicity", "loudness_db", "raw_f0")}
    out["voiced"] = np.zeros(n, bool)
    for t in range(n):
        fe.push(x[t * hop:(t + 1) * hop])
        out["f0"][t], out["voiced"][t] = fe.f0, fe.voiced
        out["aperiodicity"][t], out["loudness_db"][t], out["raw_f0"][t] = fe.aperiodicity, fe.loudness_db, fe.yin.f0
    return out

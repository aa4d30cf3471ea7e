"""Synthesis kernels (edge_runtime._synth) against NumPy references, and their known answers."""
import math

import numpy as np
import pytest

from edge_runtime import _synth
from edge_runtime.synth import HOP, N_BANDS, SAMPLE_RATE, FrontEnd, a_weighting_sos, analyze, synthesize

SR = SAMPLE_RATE


def harmonic_reference(f0, amps, hop, sr):
    """Whole-signal NumPy reference of the harmonic bank: per-sample linear f0/amplitude ramps
    from the previous frame to the current one, phase = cumulative sum, k*f >= Nyquist zeroed."""
    f0 = np.asarray(f0, np.float64)
    n, K = amps.shape
    prev_f = np.concatenate([[f0[0]], f0[:-1]])
    prev_a = np.concatenate([np.zeros((1, K)), amps[:-1]]).astype(np.float64)
    t = (np.arange(hop) + 1.0) / hop
    f = (prev_f[:, None] + (f0 - prev_f)[:, None] * t[None, :]).reshape(-1)
    a = (prev_a[:, None, :] + (amps - prev_a)[:, None, :] * t[None, :, None]).reshape(-1, K)
    ph = np.cumsum(2 * np.pi * f / sr)
    k = np.arange(1, K + 1)
    mask = (k[None, :] * f[:, None]) < sr / 2
    return np.sum(a * mask * np.sin(k[None, :] * ph[:, None]), axis=1)


def run_bank(f0, amps, hop=HOP, sr=SR):
    bank = _synth.HarmonicBank(amps.shape[1], hop, float(sr))
    y = np.zeros(len(f0) * hop, np.float32)
    for t in range(len(f0)):
        bank.process(float(f0[t]), np.ascontiguousarray(amps[t], np.float32), y[t * hop:(t + 1) * hop])
    return y


def test_harmonic_bank_matches_numpy_reference_streaming():
    # gliding f0 through the anti-aliasing limits of several harmonics, random amplitudes; the
    # kernel runs hop by hop, the reference over the whole signal at once (phase continuity).
    # Tolerance 2e-5: float32 output of a float64 sum of <= 20 terms of size <= 0.1.
    rng = np.random.default_rng(0)
    n, K = 120, 20
    f0 = np.concatenate([np.linspace(200, 1800, n // 2), np.linspace(1800, 90, n // 2)])
    amps = (rng.random((n, K)) * 0.1).astype(np.float32)
    y = run_bank(f0, amps)
    ref = harmonic_reference(f0, amps.astype(np.float64), HOP, SR)
    assert np.max(np.abs(y - ref)) < 2e-5


def _peak_hz(y, sr):
    w = np.hanning(len(y))
    s = np.abs(np.fft.rfft(y * w))
    k = int(np.argmax(s))
    a, b, c = np.log(s[k - 1:k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / len(y)


@pytest.mark.parametrize("f0", [110.0, 440.0, 1234.5])
def test_constant_f0_gives_that_pitch(f0):
    # one second of a 10-harmonic tone: the spectral peak (parabolic interpolation on a Hann
    # window, error << 0.1 Hz for a steady sine) and the YIN tracker both read f0
    n = 100
    amps = np.tile((0.3 / np.arange(1, 11)).astype(np.float32), (n, 1))
    y = run_bank(np.full(n, f0), amps)[HOP:]             # skip the first hop's fade-in
    assert abs(_peak_hz(y, SR) - f0) < 0.05
    fe = analyze(y)
    cents = 1200 * np.log2(fe["raw_f0"][10:] / f0)
    assert np.all(fe["voiced"][10:])
    assert np.max(np.abs(cents)) < 3.0                    # YIN with parabolic interpolation


def test_no_aliasing_at_high_f0():
    # f0 = 3 kHz with 50 harmonics requested: only 3 and 6 kHz may sound at 16 kHz; anything else
    # (a harmonic folded back from above 8 kHz: 9 kHz -> 7 kHz, 12 -> 4, ...) must be absent
    n = 100
    amps = np.full((n, 50), 0.02, np.float32)
    y = run_bank(np.full(n, 3000.0), amps)[HOP * 2:]
    spec = np.abs(np.fft.rfft(y * np.blackman(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    near = np.zeros_like(freqs, bool)
    for h in (3000.0, 6000.0):
        near |= np.abs(freqs - h) < 20
    assert spec[~near].max() < 1e-5 * spec[near].max()    # -100 dB: nothing folded back
    # exactly at Nyquist the harmonic is zeroed: f0 = 8 kHz gives silence, just below one sine
    assert np.all(run_bank(np.full(5, 8000.0), amps[:5]) == 0.0)
    y1 = run_bank(np.full(20, 7000.0), amps[:20])        # 7 kHz: the fundamental alone
    assert np.sqrt(np.mean(y1[HOP * 2:] ** 2)) == pytest.approx(0.02 / math.sqrt(2), rel=0.01)


def test_silence_control_gives_silence():
    n = 30
    y = synthesize(np.full(n, 220.0), np.zeros((n, 50), np.float32), np.zeros((n, N_BANDS), np.float32))
    assert np.all(y == 0.0)
    # sound, then silence: harmonics ramp out over one hop, the noise tail ends within the FIR
    amps = np.zeros((2 * n, 50), np.float32)
    mags = np.zeros((2 * n, N_BANDS), np.float32)
    amps[:n, :5] = 0.2
    mags[:n] = 0.1
    y = synthesize(np.full(2 * n, 220.0), amps, mags)
    assert np.abs(y[: n * HOP]).max() > 0.1
    taps = 2 * (N_BANDS - 1)
    assert np.all(y[(n + 1) * HOP + taps:] == 0.0)


def test_filtered_noise_matches_numpy_overlap_add():
    # each hop's excitation convolved with that hop's IR (irfft of the magnitudes, rolled by
    # taps/2, periodic Hann), overlap-added: the reference is the sum of full convolutions placed
    # at the hop offsets, over the whole signal. Tolerance 1e-5 (float32 output).
    rng = np.random.default_rng(1)
    B, n = 17, 25
    hop, L = 40, 32
    nz = _synth.FilteredNoise(B, hop, 7)
    mags = rng.random((n, B)).astype(np.float32)
    exc = rng.uniform(-1, 1, (n, hop)).astype(np.float32)
    y = np.zeros(n * hop, np.float32)
    for t in range(n):
        nz.process_excitation(mags[t], exc[t], y[t * hop:(t + 1) * hop])
    ref = np.zeros(n * hop + L)
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(L) / L)
    for t in range(n):
        h = np.roll(np.fft.irfft(mags[t].astype(np.float64), L), L // 2) * win
        ref[t * hop:t * hop + hop + L - 1] += np.convolve(exc[t], h)
    assert np.max(np.abs(y - ref[:n * hop])) < 1e-5


def test_filtered_noise_flat_magnitudes_delay_the_excitation():
    # flat magnitudes 1: the IR is a unit impulse at taps/2, so the output is the noise delayed
    nz = _synth.FilteredNoise(N_BANDS, HOP, 3)
    ones = np.ones(N_BANDS, np.float32)
    exc, y = [], np.zeros(HOP * 20, np.float32)
    for t in range(20):
        nz.process(ones, y[t * HOP:(t + 1) * HOP])
        exc.append(np.array(nz.excitation))
    exc = np.concatenate(exc)
    d = nz.taps // 2
    assert np.max(np.abs(y[d:] - exc[:-d])) < 1e-6
    assert -1.0 <= exc.min() < -0.99 and 0.99 < exc.max() < 1.0
    assert abs(exc.mean()) < 0.02 and exc.var() == pytest.approx(1 / 3, rel=0.05)


def test_filtered_noise_shapes_the_spectrum():
    # a low-pass magnitude (1 below 2 kHz, 0.01 above): long-run output power below 1.5 kHz is
    # about 40 dB above the power over 3-7 kHz (the windowed FIR's leakage keeps it from 40 exactly)
    nz = _synth.FilteredNoise(N_BANDS, HOP, 5)
    f = np.linspace(0, SR / 2, N_BANDS)
    mags = np.where(f < 2000, 1.0, 0.01).astype(np.float32)
    y = np.zeros(HOP * 400, np.float32)
    for t in range(400):
        nz.process(mags, y[t * HOP:(t + 1) * HOP])
    seg = y[:len(y) // 1024 * 1024].reshape(-1, 1024)
    p = np.mean(np.abs(np.fft.rfft(seg * np.hanning(1024), axis=1)) ** 2, axis=0)
    fr = np.fft.rfftfreq(1024, 1 / SR)
    ratio_db = 10 * np.log10(p[fr < 1500].mean() / p[(fr > 3000) & (fr < 7000)].mean())
    assert 34 < ratio_db < 46


def reverb_reference(x, sr, room, damp, wet):
    clen = [max(1, int(d * sr / 44100 + 0.5)) for d in (1116, 1188, 1277, 1356)]
    alen = [max(1, int(d * sr / 44100 + 0.5)) for d in (556, 441)]
    cb = [np.zeros(n) for n in clen]
    ab = [np.zeros(n) for n in alen]
    cp, ap, lp = [0] * 4, [0] * 2, [0.0] * 4
    y = np.zeros(len(x))
    for n in range(len(x)):
        inp, s = x[n] * 0.015, 0.0
        for i in range(4):
            out = cb[i][cp[i]]
            lp[i] = out * (1 - damp) + lp[i] * damp
            cb[i][cp[i]] = inp + lp[i] * room
            cp[i] = (cp[i] + 1) % clen[i]
            s += out
        for i in range(2):
            b = ab[i][ap[i]]
            ab[i][ap[i]] = s + b * 0.5
            s = b - s
            ap[i] = (ap[i] + 1) % alen[i]
        y[n] = x[n] + wet * s
    return y


def test_reverb_matches_reference_and_decays():
    rng = np.random.default_rng(2)
    x = np.zeros(3000, np.float32)
    x[:400] = rng.standard_normal(400).astype(np.float32) * 0.3
    rv = _synth.Reverb(float(SR), 0.8, 0.3, 0.5)
    y = x.copy()
    for k in range(0, 3000, 160):       # in uneven chunks: the state carries on
        rv.process(y[k:k + 160])
    ref = reverb_reference(x.astype(np.float64), SR, 0.8, 0.3, 0.5)
    assert np.max(np.abs(y - ref)) < 1e-6
    assert np.abs(y[400:]).max() > 1e-3                   # a tail after the input stopped
    imp = np.zeros(SR * 3, np.float32)
    imp[0] = 1.0
    _synth.Reverb(float(SR), 0.8, 0.3, 1.0).process(imp)
    e = imp[1:] ** 2
    assert e[SR * 2:].sum() < 1e-3 * e[:SR // 2].sum()    # room 0.8 dies away (> 30 dB in 2 s)


def test_yin_matches_numpy_reference():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(HOP * 6).astype(np.float32)
    W, tmax = 320, 267
    yin = _synth.Yin(float(SR), HOP, W, 10, tmax, 0.15)
    for t in range(6):
        yin.push(x[t * HOP:(t + 1) * HOP])
    N = W + tmax
    buf = np.concatenate([np.zeros(max(0, N - len(x))), x.astype(np.float64)])[-N:]
    new = buf[N - W:]
    d = np.array([np.sum((new - buf[N - W - tau:N - tau]) ** 2) for tau in range(1, tmax + 1)])
    cm = d * np.arange(1, tmax + 1) / np.cumsum(d)
    assert np.allclose(np.array(yin.cmnd)[1:], cm, rtol=1e-9)


@pytest.mark.parametrize("f0", [65.0, 147.0, 523.25, 1480.0])
def test_front_end_tracks_sines_and_rejects_noise(f0):
    t = np.arange(SR) / SR
    fe = analyze((0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32))
    cents = 1200 * np.log2(fe["f0"][10:] / f0)
    assert np.all(fe["voiced"][10:]) and np.max(np.abs(cents)) < 5.0
    noise = np.random.default_rng(4).standard_normal(SR).astype(np.float32) * 0.1
    fn = analyze(noise)
    assert fn["voiced"][10:].mean() < 0.05


def test_a_weighting_response_and_loudness_kernel():
    # IEC 61672 values: -19.1 dB at 100 Hz, -3.2 dB at 500 Hz, 0 at 1 kHz, +1.2 dB at 2 kHz
    sos = a_weighting_sos(SR)
    for f, want in ((100, -19.1), (500, -3.2), (1000, 0.0), (2000, 1.2)):
        z = np.exp(-2j * np.pi * f / SR)
        h = np.prod([(s[0] + s[1] * z + s[2] * z * z) / (s[3] + s[4] * z + s[5] * z * z) for s in sos])
        assert 20 * np.log10(abs(h)) == pytest.approx(want, abs=0.2)
    # kernel vs an sosfilt reference in NumPy (direct form II transposed), then dB of the window
    rng = np.random.default_rng(5)
    x = rng.standard_normal(HOP * 10).astype(np.float32) * 0.1
    ld = _synth.Loudness(sos, 512, HOP)
    for k in range(10):
        ld.push(x[k * HOP:(k + 1) * HOP])
    y = x.astype(np.float64)
    for s in sos:
        z1 = z2 = 0.0
        out = np.zeros_like(y)
        for n, v in enumerate(y):
            o = s[0] * v + z1
            z1 = s[1] * v - s[4] * o + z2
            z2 = s[2] * v - s[5] * o
            out[n] = o
        y = out
    assert ld.db == pytest.approx(10 * np.log10(np.mean(y[-512:] ** 2)), abs=1e-6)
    # a 1 kHz sine of amplitude 1 reads -3 dB (its mean square 0.5) once the window is full
    fe = FrontEnd()
    s1k = np.sin(2 * np.pi * 1000 * np.arange(HOP * 20) / SR).astype(np.float32)
    for k in range(20):
        fe.push(s1k[k * HOP:(k + 1) * HOP])
    assert fe.loudness_db == pytest.approx(-3.01, abs=0.1)


def test_kernels_check_shapes():
    bank = _synth.HarmonicBank(4, HOP, float(SR))
    with pytest.raises(ValueError, match="expected"):
        bank.process(100.0, np.zeros(5, np.float32), np.zeros(HOP, np.float32))
    with pytest.raises(ValueError, match="hop"):
        _synth.Yin(float(SR), HOP, 320, 10, 267).push(np.zeros(10, np.float32))

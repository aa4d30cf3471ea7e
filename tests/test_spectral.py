"""Spectral kernels (edge_runtime._spectral / edge_runtime.spectral) against NumPy/SciPy
references, with the tolerance stated per test.

Float32 kernels are compared with float64 references on the same float32 input; spectra
are compared with an absolute tolerance scaled by the spectrum's peak magnitude (a
float32 FFT's error is ~1e-7 of the peak, whatever the bin), so a small bin is not held to
a relative tolerance it cannot meet.
"""
import gc
import math
import tracemalloc

import numpy as np
import pytest
import scipy.signal as ss

from edge_runtime import spectral as S
from edge_runtime._spectral import FilterBank, RealFFT, StftAnalyzer, StftSynthesizer

POW2 = [2, 4, 8, 16, 64, 256, 512, 1024]
NON_POW2 = [6, 30, 320, 400, 480, 960, 254, 31, 7]   # 254: n/2 odd; 31, 7: odd sizes (dft only)
SPEC_ATOL = 2e-6        # x peak |X|: measured worst ~5e-7 (dft route, n=1024)
ROUNDTRIP_ATOL = 1e-5   # unit-variance input: measured worst ~3e-6


def _routes(n):
    return ["fft", "dft"] if n % 2 == 0 else ["dft"]


def _bufs(n):
    nb = n // 2 + 1
    return np.empty(nb, np.float32), np.empty(nb, np.float32), np.empty(n, np.float32)


# ---- RealFFT -----------------------------------------------------------------------------

@pytest.mark.parametrize("n", POW2 + NON_POW2)
def test_real_fft_matches_numpy_rfft(n, rng):
    # both routes: re + i*im vs numpy.fft.rfft in float64; rtol 1e-5, atol 2e-6 * max|X|
    x = rng.standard_normal(n).astype(np.float32)
    ref = np.fft.rfft(x.astype(np.float64))
    for route in _routes(n):
        f = RealFFT(n, route)
        assert f.route == route and f.n_bins == n // 2 + 1
        re, im, _ = _bufs(n)
        f.forward(x, re, im)
        atol = SPEC_ATOL * np.max(np.abs(ref))
        np.testing.assert_allclose(re, ref.real, rtol=1e-5, atol=atol, err_msg=f"{route} re")
        np.testing.assert_allclose(im, ref.imag, rtol=1e-5, atol=atol, err_msg=f"{route} im")


@pytest.mark.parametrize("n", POW2 + NON_POW2)
def test_real_fft_inverse_round_trip_and_irfft(n, rng):
    # inverse(forward(x)) == x to 1e-5 abs (unit-variance x); inverse of an arbitrary
    # spectrum == numpy.fft.irfft (which ignores imag at DC and Nyquist) to 1e-6 * max|out|
    x = rng.standard_normal(n).astype(np.float32)
    spec = (rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1))
    sre = spec.real.astype(np.float32)
    sim = spec.imag.astype(np.float32)
    ref = np.fft.irfft(sre.astype(np.float64) + 1j * sim.astype(np.float64), n)
    for route in _routes(n):
        f = RealFFT(n, route)
        re, im, out = _bufs(n)
        f.forward(x, re, im)
        f.inverse(re, im, out)
        np.testing.assert_allclose(out, x, rtol=0, atol=ROUNDTRIP_ATOL, err_msg=route)
        f.inverse(sre, sim, out)
        np.testing.assert_allclose(out, ref, rtol=0, atol=2e-6 * np.max(np.abs(ref)) + 1e-7, err_msg=route)


def test_real_fft_routing():
    # the measured routing (see the table in kernels/_spectral.pyx / firmware_tools/bench/bench_fft.py)
    for n in (64, 256, 320, 400, 480, 512, 640, 960, 1024, 2048):
        assert RealFFT(n).route == "fft", n
    for n in (7, 31, 48, 254, 882):
        assert RealFFT(n).route == "dft", n
    assert RealFFT(960).leaf_size == 15 and RealFFT(960).radix2_stages == 5
    assert RealFFT(1024).leaf_size == 1 and RealFFT(1024).radix2_stages == 9
    assert RealFFT(960).leaf_factor == 3 and RealFFT(400).leaf_factor == 5   # 15 = 3*5, 25 = 5*5
    assert RealFFT(320).leaf_factor == 1 and RealFFT(1024).leaf_factor == 1  # prime leaf 5, none
    assert RealFFT(400, "fft", factor_leaf=False).leaf_factor == 1


# composite leaves q = r*s: 9 = 3*3, 25 = 5*5, 45 = 3*15 (inner 15 direct), 75 = 3*25, 125 = 5*25,
# 63 = 3*21 (7-point DFTs through the generic path), 135 = 3*45; prime leaves 7 and 11 unfactored
@pytest.mark.parametrize("n", [18, 50, 90, 150, 126, 400, 1200, 2000, 540, 28, 44])
def test_real_fft_factored_leaf_matches_direct_and_numpy(n, rng):
    x = rng.standard_normal(n).astype(np.float32)
    ref = np.fft.rfft(x.astype(np.float64))
    atol = SPEC_ATOL * np.max(np.abs(ref))
    out = {}
    for factor in (None, False):
        f = RealFFT(n, "fft", factor_leaf=factor)
        re, im, back = _bufs(n)
        f.forward(x, re, im)
        np.testing.assert_allclose(re, ref.real, rtol=1e-5, atol=atol, err_msg=f"{factor} re")
        np.testing.assert_allclose(im, ref.imag, rtol=1e-5, atol=atol, err_msg=f"{factor} im")
        f.inverse(re, im, back)
        np.testing.assert_allclose(back, x, rtol=0, atol=ROUNDTRIP_ATOL, err_msg=f"{factor}")
        out[factor] = f.leaf_factor
    q = RealFFT(n, "fft").leaf_size
    assert out[False] == 1 and (out[None] > 1) == (q not in (1, 3, 5, 7, 11))


def test_real_fft_shape_errors():
    f = RealFFT(16)
    re, im, out = _bufs(16)
    with pytest.raises(ValueError, match="forward needs"):
        f.forward(np.zeros(15, np.float32), re, im)
    with pytest.raises(ValueError, match="inverse needs"):
        f.inverse(re, im[:-1], out)
    with pytest.raises(ValueError, match="even size"):
        RealFFT(15, "fft")
    with pytest.raises(ValueError):
        S.real_fft(0)


# ---- STFT --------------------------------------------------------------------------------

def _stream_analyze(x, frame, hop, window):
    """Push x (channels, T) hop by hop; returns the spectra (frames, channels, n_bins)."""
    ch, T = x.shape
    ana = S.stft_analyzer(frame, hop, window, channels=ch)
    frames = []
    for s in range(0, T - hop + 1, hop):
        ana.push(np.ascontiguousarray(x[:, s:s + hop]))
        frames.append(ana.re.astype(np.float64) + 1j * ana.im)
    return np.array(frames), ana


@pytest.mark.parametrize("frame,hop,window", [(512, 256, "sqrt_hann"), (960, 480, "sqrt_hann"),
                                              (320, 160, "hann"), (400, 160, "hann"), (31, 10, "hann")])
def test_stft_analyzer_matches_numpy_framing_and_scipy(frame, hop, window, rng):
    # frame k = rfft(w * x_padded[k*hop : k*hop + frame]) with frame - hop leading zeros;
    # atol 2e-6 * peak |X| vs float64 numpy, and the same frames from scipy.signal.stft
    # (which divides by sum(w)) to the same tolerance.
    x = rng.standard_normal((2, hop * 40)).astype(np.float32)
    got, ana = _stream_analyze(x, frame, hop, window)
    w = S.window(window, frame).astype(np.float64)
    xp = np.concatenate([np.zeros((2, frame - hop)), x.astype(np.float64)], axis=1)
    n_frames = got.shape[0]
    idx = np.arange(frame)[None, :] + hop * np.arange(n_frames)[:, None]
    ref = np.fft.rfft(xp[:, idx] * w, axis=-1).transpose(1, 0, 2)     # (frames, ch, bins)
    atol = SPEC_ATOL * np.max(np.abs(ref))
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)
    _, _, Z = ss.stft(xp, window=w, nperseg=frame, noverlap=frame - hop, boundary=None,
                      padded=False, return_onesided=True, detrend=False)
    Z = np.moveaxis(Z * w.sum(), -1, 0)                                # (frames, ch, bins)
    m = min(Z.shape[0], n_frames)
    np.testing.assert_allclose(got[:m], Z[:m], rtol=0, atol=atol)
    assert ana.frames == n_frames
    assert ana.re.shape == (2, frame // 2 + 1) and ana.re.dtype == np.float32


@pytest.mark.parametrize("frame,hop,window", [(960, 480, "sqrt_hann"), (320, 160, "sqrt_hann"),
                                              (480, 240, "sqrt_hann"), (512, 128, "hann"),
                                              (512, 128, "sqrt_hann"), (400, 160, "hann"),
                                              (31, 10, "sqrt_hann")])
def test_stft_perfect_reconstruction(frame, hop, window, rng):
    # analyzer -> synthesizer with unmodified spectra: output == input delayed by
    # latency_samples = frame - hop, max abs error < 1e-5 (unit-variance input)
    x = rng.standard_normal((2, hop * 60)).astype(np.float32)
    ana = S.stft_analyzer(frame, hop, window, channels=2)
    syn = S.stft_synthesizer(frame, hop, window, channels=2)
    assert syn.latency_samples == frame - hop
    y = np.zeros_like(x)
    out = np.zeros((2, hop), np.float32)
    for s in range(0, x.shape[1], hop):
        ana.push(np.ascontiguousarray(x[:, s:s + hop]))
        syn.pull(ana.re, ana.im, out)
        y[:, s:s + hop] = out
    lat = syn.latency_samples
    err = np.max(np.abs(y[:, lat:] - x[:, :x.shape[1] - lat]))
    assert err < 1e-5, err
    assert np.max(np.abs(y[:, :lat])) < 1e-6  # the zeros before the stream started


def test_stft_sqrt_hann_half_overlap_needs_no_normalization():
    syn = S.stft_synthesizer(960, 480, "sqrt_hann")
    np.testing.assert_allclose(syn.window, S.window("sqrt_hann", 960), atol=1e-6)
    # hann at 75% overlap: sum of squared hann windows is 1.5 at every phase
    syn = S.stft_synthesizer(512, 128, "hann")
    np.testing.assert_allclose(syn.window, S.window("hann", 512) / 1.5, atol=1e-6)


def test_stft_argument_errors():
    with pytest.raises(ValueError, match="hop=600 must not exceed frame_size=512"):
        S.stft_analyzer(512, 600)
    with pytest.raises(ValueError, match="hop must be a positive integer"):
        S.stft_analyzer(512, 0)
    with pytest.raises(ValueError, match="frame_size must be a positive integer"):
        S.stft_synthesizer(-4, 2)
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        S.stft_analyzer(512, 256, channels=0)
    with pytest.raises(ValueError, match="window 'hamming' is not known"):
        S.stft_analyzer(512, 256, "hamming")
    with pytest.raises(ValueError, match="cannot be inverted"):
        S.stft_synthesizer(512, 512, "hann")   # periodic hann is 0 at sample 0, no overlap
    ana = S.stft_analyzer(512, 256, channels=2)
    with pytest.raises(ValueError, match=r"push needs a \(2, 256\)"):
        ana.push(np.zeros((1, 256), np.float32))
    syn = S.stft_synthesizer(512, 256, channels=2)
    with pytest.raises(ValueError, match="pull needs out"):
        syn.pull(ana.re, ana.im, np.zeros((2, 255), np.float32))


# ---- mel / band filterbanks ----------------------------------------------------------------

def _slaney_mel_scalar(f):
    # Slaney's Auditory Toolbox: 3 mel per 200 Hz below 1 kHz, then 27 mel per factor 6.4
    return f * 3.0 / 200.0 if f < 1000.0 else 15.0 + 27.0 * math.log(f / 1000.0) / math.log(6.4)


def _slaney_hz_scalar(m):
    return m * 200.0 / 3.0 if m < 15.0 else 1000.0 * 6.4 ** ((m - 15.0) / 27.0)


def _mel_reference(sr, n_fft, n_mels, fmin, fmax, norm):
    """Scalar-loop Slaney mel filterbank (librosa.filters.mel, htk=False)."""
    m0, m1 = _slaney_mel_scalar(fmin), _slaney_mel_scalar(fmax)
    pts = [_slaney_hz_scalar(m0 + (m1 - m0) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    W = np.zeros((n_mels, n_fft // 2 + 1))
    for i in range(n_mels):
        lo, c, hi = pts[i], pts[i + 1], pts[i + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if lo < f < hi:
                W[i, k] = (f - lo) / (c - lo) if f <= c else (hi - f) / (hi - c)
        if norm == "slaney":
            W[i] *= 2.0 / (hi - lo)
    return W, pts


def test_slaney_mel_scale_known_values():
    # linear 200/3 Hz per mel up to 1 kHz = 15 mel; 27 mel per factor 6.4 above
    assert S.hz_to_mel(1000.0) == pytest.approx(15.0, abs=1e-12)
    assert S.hz_to_mel(500.0) == pytest.approx(7.5, abs=1e-12)
    assert S.hz_to_mel(6400.0) == pytest.approx(42.0, abs=1e-12)
    assert S.hz_to_mel(0.0) == 0.0
    assert S.mel_to_hz(15.0) == pytest.approx(1000.0, abs=1e-9)
    f = np.array([0.0, 20.0, 440.0, 999.0, 1000.0, 1001.0, 4000.0, 8000.0, 24000.0])
    np.testing.assert_allclose(S.mel_to_hz(S.hz_to_mel(f)), f, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(S.hz_to_mel(f), [_slaney_mel_scalar(v) for v in f], rtol=1e-12)
    assert S.hz_to_mel(1000.0, htk=True) == pytest.approx(1000.0, abs=0.1)   # HTK: 1 kHz ~ 1000 mel


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [(16000, 512, 40, 0.0, None),
                                                       (16000, 400, 80, 0.0, 8000.0),
                                                       (48000, 960, 64, 50.0, 16000.0),
                                                       (22050, 2048, 128, 0.0, None)])
@pytest.mark.parametrize("norm", ["slaney", None])
def test_mel_filterbank_matches_scalar_slaney_reference(sr, n_fft, n_mels, fmin, fmax, norm):
    # vs an independent scalar-loop implementation of the formula: atol 1e-6 * max weight
    W = S.mel_filterbank(sr, n_fft, n_mels, fmin, fmax, norm=norm)
    ref, pts = _mel_reference(sr, n_fft, n_mels, fmin, sr / 2 if fmax is None else fmax, norm)
    assert W.shape == (n_mels, n_fft // 2 + 1) and W.dtype == np.float32
    np.testing.assert_allclose(W, ref, rtol=1e-5, atol=1e-6 * ref.max())
    # each filter peaks at the bin nearest its centre frequency (or the bin next to it
    # when two bins straddle the centre), and is zero outside (lo, hi)
    df = sr / n_fft
    for i in range(n_mels):
        if not W[i].any():
            continue          # narrow low filters can fall between two bins (as in librosa)
        k = int(np.argmax(W[i]))
        assert abs(k * df - pts[i + 1]) <= df + 1e-9, (i, k * df, pts[i + 1])
        nz = np.flatnonzero(W[i])
        assert nz[0] * df > pts[i] - 1e-9 and nz[-1] * df < pts[i + 2] + 1e-9


def test_mel_filterbank_normalization():
    # norm=None: triangle peaks are <= 1 and reach 1 within the resolution of the bins.
    # norm="slaney": each filter has unit area in Hz (sum(w) * df == 1) once it spans
    # enough bins for the Riemann sum to be exact (within 2% for >= 8 bins).
    sr, n_fft = 16000, 1024
    W0 = S.mel_filterbank(sr, n_fft, 40, norm=None)
    assert W0.max() <= 1.0 + 1e-6
    pts = S.mel_frequencies(42, 0.0, sr / 2)
    W = S.mel_filterbank(sr, n_fft, 40)
    df = sr / n_fft
    for i in range(40):
        width = (pts[i + 2] - pts[i]) / df
        if width >= 8:
            assert abs(W[i].sum() * df - 1.0) < 0.02, (i, W[i].sum() * df)
        np.testing.assert_allclose(W[i], W0[i] * 2.0 / (pts[i + 2] - pts[i]), rtol=1e-5, atol=1e-9)


def test_mel_filterbank_errors():
    with pytest.raises(ValueError, match="fmin < fmax"):
        S.mel_filterbank(16000, 512, 40, fmin=100.0, fmax=9000.0)
    with pytest.raises(ValueError, match="norm must be"):
        S.mel_filterbank(16000, 512, 40, norm="l2")
    with pytest.raises(ValueError, match="n_mels must be a positive integer"):
        S.mel_filterbank(16000, 512, 0)


def test_band_filterbank_is_rnnoise_interpolation():
    # RNNoise's 22 bands at 48 kHz / 960: weights sum to 1 per bin, and expand(g) is the
    # linear interpolation of g between band edges (interp_band_gain), to 1e-6
    W = S.band_filterbank(48000, 960, S.RNNOISE_EDGES_HZ)
    assert W.shape == (22, 481)
    np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-6)
    fb = S.filter_bank(W)
    g = np.random.default_rng(5).uniform(0, 1, 22).astype(np.float32)
    out = np.empty(481, np.float32)
    fb.expand(g, out)
    f = np.arange(481) * 50.0
    np.testing.assert_allclose(out, np.interp(f, S.RNNOISE_EDGES_HZ, g), atol=1e-6)
    # band energy = RNNoise compute_band_energy (before its first/last band doubling)
    p = np.random.default_rng(6).uniform(0, 1, 481).astype(np.float32)
    ref = np.zeros(22)
    e = (np.array(S.RNNOISE_EDGES_HZ) / 50.0).astype(int)          # edges in bins
    for i in range(21):
        size = e[i + 1] - e[i]
        for j in range(size):
            frac = j / size
            ref[i] += (1 - frac) * p[e[i] + j]
            ref[i + 1] += frac * p[e[i] + j]
    ref[21] += p[e[21]:].sum()                                       # above 20 kHz: last band (flat)
    be = np.empty(22, np.float32)
    fb.apply(p, be)
    np.testing.assert_allclose(be, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="strictly increasing"):
        S.band_filterbank(48000, 960, [0, 400, 400, 800])
    with pytest.raises(ValueError, match="0..24000"):
        S.band_filterbank(48000, 960, [0, 400, 30000])


def _dense_expand(W, g):
    W = W.astype(np.float64)
    cover = W.sum(axis=0)
    out = np.zeros(W.shape[1])
    ok = cover > 0
    out[ok] = (W.T @ g)[ok] / cover[ok]
    live = [b for b in range(W.shape[0]) if W[b].any()]
    for k in np.flatnonzero(~ok):    # uncovered bin: nearest band's gain (distance to its span)
        def dist(b):
            nz = np.flatnonzero(W[b])
            return max(nz[0] - k, k - nz[-1], 0)
        out[k] = g[min(live, key=dist)]
    return out


@pytest.mark.parametrize("make", [
    lambda: S.mel_filterbank(16000, 512, 40, fmin=100.0, fmax=7000.0),
    lambda: S.mel_filterbank(48000, 960, 64),
    lambda: S.band_filterbank(16000, 320, [0, 200, 400, 800, 1600, 3200, 8000]),
])
def test_filterbank_apply_expand_match_dense(make, rng):
    # sparse apply == dense W @ p (rtol 1e-5), expand == dense normalized W.T @ g (rtol 1e-5)
    W = make()
    fb = FilterBank(W)
    assert (fb.n_bands, fb.n_bins) == W.shape
    np.testing.assert_array_equal(fb.dense, W)
    assert fb.nonzeros < W.size
    p = rng.uniform(0, 1, W.shape[1]).astype(np.float32)
    out = np.empty(W.shape[0], np.float32)
    fb.apply(p, out)
    np.testing.assert_allclose(out, W.astype(np.float64) @ p, rtol=1e-5, atol=1e-7)
    g = rng.uniform(0, 1, W.shape[0]).astype(np.float32)
    bins = np.empty(W.shape[1], np.float32)
    fb.expand(g, bins)
    np.testing.assert_allclose(bins, _dense_expand(W, g.astype(np.float64)), rtol=1e-5, atol=1e-7)
    # a constant gain expands to that constant everywhere
    fb.expand(np.full(W.shape[0], 0.25, np.float32), bins)
    np.testing.assert_allclose(bins, 0.25, rtol=1e-6)


def test_filterbank_errors():
    with pytest.raises(ValueError, match=">= 0"):
        S.filter_bank(-np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(n_bands, n_bins\)"):
        S.filter_bank(np.ones(3))
    fb = FilterBank(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="apply needs"):
        fb.apply(np.ones(4, np.float32), np.empty(2, np.float32))


def test_power_spectrum_and_log_mel(rng):
    # power = re^2 + im^2 (rtol 1e-6); log_mel = log(max(W @ power, floor)) (atol 1e-5)
    re = rng.standard_normal((2, 257)).astype(np.float32)
    im = rng.standard_normal((2, 257)).astype(np.float32)
    p = np.empty_like(re)
    S.power_spectrum(re, im, p)
    np.testing.assert_allclose(p, re.astype(np.float64) ** 2 + im.astype(np.float64) ** 2, rtol=1e-6)
    p1 = np.empty(257, np.float32)
    S.power_spectrum(re[1], im[1], p1)
    np.testing.assert_array_equal(p1, p[1])
    W = S.mel_filterbank(16000, 512, 40, fmin=20.0)
    fb = S.filter_bank(W)
    out = np.empty((2, 40), np.float32)
    p[0, :] = 0.0                                       # all-zero frame: the floor
    S.log_mel(fb, p, out, 1e-10)
    ref = np.log(np.maximum(p.astype(np.float64) @ W.T.astype(np.float64), 1e-10))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)
    o1 = np.empty(40, np.float32)
    S.log_mel(fb, p[1], o1)
    np.testing.assert_array_equal(o1, out[1])


def test_push_log_mel_is_push_then_power_then_log_mel(rng):
    # the fused front-end call gives bit-identical log-mel to the three separate calls (the
    # classifier's training features were computed the separate way), and refuses bad shapes
    a, b = S.stft_analyzer(400, 160, "hann", 2), S.stft_analyzer(400, 160, "hann", 2)
    fb = S.filter_bank(S.mel_filterbank(16000, 400, 32, fmin=50.0, fmax=8000.0))
    pa, pb = np.zeros((2, 201), np.float32), np.zeros((2, 201), np.float32)
    oa, ob = np.zeros((2, 32), np.float32), np.zeros((2, 32), np.float32)
    for _ in range(12):
        x = (rng.standard_normal((2, 160)) * 0.1).astype(np.float32)
        a.push(x)
        S.power_spectrum(a.re, a.im, pa)
        S.log_mel(fb, pa, oa, 1e-10)
        b.push_log_mel(x, fb, pb, ob, 1e-10)
        np.testing.assert_array_equal(ob, oa)
        np.testing.assert_array_equal(pb, pa)
    with pytest.raises(ValueError, match="block"):
        b.push_log_mel(np.zeros((1, 160), np.float32), fb, pb, ob)
    with pytest.raises(ValueError, match="out"):
        b.push_log_mel(x, fb, pb, np.zeros((2, 31), np.float32))
    with pytest.raises(ValueError, match="filter bank"):
        b.push_log_mel(x, S.filter_bank(S.mel_filterbank(16000, 512, 32)), pb, ob)
    with pytest.raises(ValueError, match="floor"):
        b.push_log_mel(x, fb, pb, ob, 0.0)


def test_window_names():
    np.testing.assert_allclose(S.window("hann", 480), ss.get_window("hann", 480), atol=1e-7)
    w = S.window("sqrt_hann", 480)
    np.testing.assert_allclose(w[:240] ** 2 + w[240:] ** 2, 1.0, atol=1e-6)   # power-complementary at 50%
    with pytest.raises(ValueError, match="not known"):
        S.window("blackman", 16)


# ---- no allocation in the hot path ----------------------------------------------------------

def _traced(fn):
    """(net growth, peak above start) in bytes of traced allocations while running fn()."""
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return cur - start, peak - start


def test_push_pull_do_not_allocate():
    # 10,000 push + pull (+ FFT, filterbank and log-mel calls) on preallocated arrays:
    # traced memory grows < 1 KB beyond an empty loop's, at the end and at the peak.
    # (A def call builds and frees a few memoryview objects: the peak, not a leak.)
    frame, hop, ch, N = 960, 480, 2, 10_000
    ana = S.stft_analyzer(frame, hop, "sqrt_hann", channels=ch)
    syn = S.stft_synthesizer(frame, hop, "sqrt_hann", channels=ch)
    fb = S.filter_bank(S.mel_filterbank(48000, frame, 40))
    fft = RealFFT(frame)
    block = np.random.default_rng(0).standard_normal((ch, hop)).astype(np.float32)
    out = np.zeros((ch, hop), np.float32)
    power = np.zeros((ch, frame // 2 + 1), np.float32)
    mel = np.zeros((ch, 40), np.float32)
    gains = np.ones(40, np.float32)
    bins = np.zeros(frame // 2 + 1, np.float32)
    x = np.zeros(frame, np.float32)
    re, im = ana.re, ana.im
    push, pull = ana.push, syn.pull

    def empty():
        for _ in range(N):
            pass

    def hot():
        for _ in range(N):
            push(block)
            pull(re, im, out)

    def extras():
        for _ in range(N):
            ana.push_log_mel(block, fb, power, mel)
            S.power_spectrum(re, im, power)
            S.log_mel(fb, power, mel)
            fb.expand(gains, bins)
            fft.inverse(re[0], im[0], x)

    hot()   # warm up (first-call caches, memoryview type objects)
    extras()
    base_cur, base_peak = _traced(empty)
    cur, peak = _traced(hot)
    assert cur - base_cur < 1024, (cur, base_cur)
    assert peak - base_peak < 1024, (peak, base_peak)
    cur, peak = _traced(extras)
    assert cur - base_cur < 1024, (cur, base_cur)
    assert peak - base_peak < 1024, (peak, base_peak)
    cur, peak = _traced(lambda: ana.push_many(block, N))   # the compiled loop: nothing at all
    assert cur - base_cur < 1024 and peak - base_peak < 1024, (cur, peak)


def test_stft_classes_are_cython_types():
    assert S.StftAnalyzer is StftAnalyzer and S.StftSynthesizer is StftSynthesizer

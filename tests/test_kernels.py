"""Compute kernels against NumPy/SciPy references, with the tolerance stated per test."""
import collections

import numpy as np
import pytest
import scipy.signal as ss

from edge_runtime import _kernels as K
from edge_runtime import filters


def test_sosfilt_matches_scipy_across_blocks(rng):
    # float32 I/O, float64 state: agree with scipy's float64 filter to 2e-6 (float32 output rounding)
    sos = ss.butter(6, 0.05, btype="highpass", output="sos")
    x = rng.standard_normal((2, 4800)).astype(np.float32)
    ref = ss.sosfilt(sos, x.astype(np.float64), axis=1)
    state = np.zeros((2, sos.shape[0], 2))
    y = np.empty_like(x)
    blk = np.empty((2, 480), dtype=np.float32)
    for s in range(0, 4800, 480):  # block by block: state must carry over
        K.sosfilt(np.ascontiguousarray(sos), state, np.ascontiguousarray(x[:, s:s + 480]), blk)
        y[:, s:s + 480] = blk
    np.testing.assert_allclose(y, ref, atol=2e-6, rtol=0)


@pytest.mark.parametrize("kind", ["highpass", "lowpass"])
@pytest.mark.parametrize("order", [1, 2, 3, 4, 8])
def test_butterworth_design_matches_scipy(kind, order):
    sr, fc = 48000, 1234.0
    ours = filters.design(kind=kind, cutoff_hz=fc, sample_rate=sr, order=order)
    ref = ss.butter(order, fc, btype=kind, fs=sr, output="sos")
    w = np.linspace(10, 23000, 500)
    _, h1 = ss.sosfreqz(ours, worN=w, fs=sr)
    _, h2 = ss.sosfreqz(ref, worN=w, fs=sr)
    np.testing.assert_allclose(np.abs(h1), np.abs(h2), atol=1e-9)


@pytest.mark.parametrize("kind,gain_db", [("peak", 6.0), ("peak", -9.0), ("lowshelf", 4.0), ("highshelf", -4.0)])
def test_rbj_biquads_reach_their_gain(kind, gain_db):
    sr = 48000
    sos = filters.design(kind=kind, cutoff_hz=1000.0, sample_rate=sr, q=0.707, gain_db=gain_db)
    probe = {"peak": 1000.0, "lowshelf": 20.0, "highshelf": 22000.0}[kind]
    _, h = ss.sosfreqz(sos, worN=[probe], fs=sr)
    assert 20 * np.log10(abs(h[0])) == pytest.approx(gain_db, abs=0.05)


def test_notch_and_bandpass_centre():
    sr = 16000
    _, h = ss.sosfreqz(filters.design(kind="notch", cutoff_hz=1000.0, sample_rate=sr, q=5), worN=[1000.0], fs=sr)
    assert abs(h[0]) < 1e-6
    _, h = ss.sosfreqz(filters.design(kind="bandpass", cutoff_hz=1000.0, sample_rate=sr, q=5), worN=[1000.0], fs=sr)
    assert abs(h[0]) == pytest.approx(1.0, abs=1e-6)


def test_design_rejects_bad_values():
    with pytest.raises(ValueError, match="Nyquist"):
        filters.design(kind="highpass", cutoff_hz=9000.0, sample_rate=16000)
    with pytest.raises(ValueError):
        filters.design(kind="nonsense", cutoff_hz=100.0, sample_rate=16000)


def test_quantize_matches_onnx_semantics(rng):
    # QuantizeLinear: saturate(round_half_to_even(x / scale) + zero_point) to int8; exact match
    x = (rng.standard_normal(10000) * 3).astype(np.float32)
    x[:6] = [0.5, 1.5, -0.5, -2.5, 1e9, -1e9]
    scale, zp = np.float32(0.02), 3
    q = np.empty(x.size, dtype=np.int8)
    K.quantize(x, scale, zp, q)
    ref = np.clip(np.rint(x / scale) + zp, -128, 127).astype(np.int8)
    np.testing.assert_array_equal(q, ref)
    back = np.empty_like(x)
    K.dequantize(q, scale, zp, back)
    np.testing.assert_allclose(back, (q.astype(np.float32) - zp) * scale, rtol=0, atol=1e-7)
    # inside the representable range the round trip error is at most half a step
    inside = np.abs(x) < 2.4
    assert np.max(np.abs(back[inside] - x[inside])) <= scale / 2 + 1e-6


def test_quantize_nan_goes_to_zero_point():
    x = np.array([np.nan, 0.0], dtype=np.float32)
    q = np.empty(2, dtype=np.int8)
    K.quantize(x, np.float32(0.1), -5, q)
    assert list(q) == [-5, -5]


def test_peak_and_rms_meter(rng):
    x = rng.standard_normal((3, 1000)).astype(np.float32)
    peak = np.zeros(3, dtype=np.float32)
    sumsq = np.zeros(3, dtype=np.float64)
    K.peak_sumsq(x[:, :500].copy(), peak, sumsq)
    K.peak_sumsq(x[:, 500:].copy(), peak, sumsq)  # accumulates
    np.testing.assert_array_equal(peak, np.abs(x).max(axis=1))
    np.testing.assert_allclose(sumsq, (x.astype(np.float64) ** 2).sum(axis=1), rtol=1e-12)


def test_sanitize_counts_and_zeroes():
    x = np.ones((2, 8), dtype=np.float32)
    x[0, 1] = np.nan
    x[1, 3] = np.inf
    x[1, 4] = -np.inf
    assert K.sanitize(x) == 3
    assert np.isfinite(x).all() and x[0, 1] == 0 and x[1, 4] == 0 and x.sum() == 13


def test_ring_buffer_against_deque(rng):
    rb = K.RingBuffer(37, 2)
    ref = collections.deque()
    counter = 0
    for _ in range(2000):
        if rng.random() < 0.55:
            n = int(rng.integers(0, 20))
            block = np.stack([np.arange(counter, counter + n), -np.arange(counter, counter + n)]).astype(np.float32)
            wrote = rb.write(np.ascontiguousarray(block))
            assert wrote == min(n, 37 - len(ref))
            for k in range(wrote):
                ref.append(counter + k)
            counter += n
        else:
            n = int(rng.integers(0, 20))
            out = np.full((2, 20), -1.0, dtype=np.float32)
            got = rb.read(out, 0, n)
            assert got == min(n, len(ref))
            expect = [ref.popleft() for _ in range(got)]
            np.testing.assert_array_equal(out[0, :got], expect)
            np.testing.assert_array_equal(out[1, :got], -np.asarray(expect, dtype=np.float32))
        assert rb.available == len(ref) and rb.space == 37 - len(ref)

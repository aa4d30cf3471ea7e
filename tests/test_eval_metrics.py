"""Fast checks of the evaluation metrics in firmware_tools/eval/metrics.py (numpy only)."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware_tools" / "eval"))
import metrics as M  # noqa: E402


def _orthogonal_noise(s, rng):
    """Zero-mean noise with zero inner product with zero-mean ``s``."""
    n = rng.standard_normal(len(s))
    n -= n.mean()
    s0 = s - s.mean()
    n -= np.dot(n, s0) / np.dot(s0, s0) * s0
    return n


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
def test_si_sdr_closed_form(snr):
    """est = s + n with n orthogonal to s at SNR ``snr``: the optimal scale is exactly 1, so
    SI-SDR equals the SNR; scaling the estimate changes nothing."""
    rng = np.random.default_rng(1)
    s = rng.standard_normal(16000)
    n = _orthogonal_noise(s, rng)
    s0 = s - s.mean()
    n *= np.sqrt(np.dot(s0, s0) / np.dot(n, n) / 10 ** (snr / 10))
    est = s + n
    assert M.si_sdr(est, s) == pytest.approx(snr, abs=1e-9)
    assert M.si_sdr(0.37 * est, s) == pytest.approx(snr, abs=1e-9)
    assert M.si_sdr(est, 5.0 * s) == pytest.approx(snr, abs=1e-9)


def test_si_sdr_correlated_noise():
    """Noise partly along s: SI-SDR counts the along-s part as target (closed form)."""
    rng = np.random.default_rng(2)
    s = rng.standard_normal(8000)
    s -= s.mean()
    u = _orthogonal_noise(s, rng)
    est = 1.5 * s + 0.5 * u  # target = 1.5 s, error = 0.5 u
    expect = 10 * np.log10(np.dot(1.5 * s, 1.5 * s) / np.dot(0.5 * u, 0.5 * u))
    assert M.si_sdr(est, s) == pytest.approx(expect, abs=1e-9)


def test_si_sdr_edge_cases():
    s = np.sin(np.linspace(0, 50, 1000))
    assert M.si_sdr(2 * s, s) > 200
    assert np.isnan(M.si_sdr(s, np.zeros_like(s)))
    with pytest.raises(ValueError):
        M.si_sdr(s, s[:-1])


@pytest.mark.parametrize("d", [0, 1, 37, 800, -1, -123, -800])
def test_delay_alignment_is_exact(d):
    """A shifted copy is realigned exactly (zeros where the shift ran off the end)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(16000).astype(np.float32)
    y = M.shift(x, -d)  # y[n] = x[n - d]: x delayed by d
    assert M.estimate_delay(y, x, 800) == d
    ya, found = M.align(y, x, 800)
    assert found == d
    n = len(x)
    keep = slice(0, n - d) if d >= 0 else slice(-d, n)
    np.testing.assert_array_equal(ya[keep], x[keep])
    if d > 0:
        assert not np.any(ya[n - d:])
    elif d < 0:
        assert not np.any(ya[:-d])


def test_delay_alignment_noisy_scaled_speechlike():
    """Delay found through scaling, noise and a low-pass: a filtered, attenuated, noisy, delayed
    copy of a speech-like signal."""
    rng = np.random.default_rng(4)
    t = np.arange(32000) / 16000
    env = np.clip(np.sin(2 * np.pi * 3 * t), 0, None)
    x = env * np.sin(2 * np.pi * (150 + 80 * np.sin(2 * np.pi * 0.7 * t)) * t) + 0.05 * rng.standard_normal(len(t))
    y = np.convolve(M.shift(x, -240), [0.25, 0.5, 0.25], mode="same") * 0.3 + 0.1 * rng.standard_normal(len(t))
    assert M.estimate_delay(y, x, 800) == 240


def test_delay_search_is_bounded():
    """A delay beyond the window is not found (the search stays within +-max_lag)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(8000)
    y = M.shift(x, -500)
    assert abs(M.estimate_delay(y, x, 100)) <= 100
    assert M.estimate_delay(np.zeros_like(x), x, 100) == 0


def test_alignment_recovers_si_sdr():
    """SI-SDR of a delayed copy is poor until realigned, then perfect outside the cut edge."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal(16000)
    y = M.shift(x, -160)
    assert M.si_sdr(y, x) < 0
    ya, d = M.align(y, x, 800)
    assert d == 160
    assert M.si_sdr(ya[:-160], x[:-160]) > 200

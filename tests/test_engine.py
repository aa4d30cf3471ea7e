"""The block engine: no allocation in steady state, latency, timing, events, sanitizing."""
import time

import numpy as np
import pytest

from conftest import traced
from edge_runtime.engine import Node, Pipeline
from edge_runtime.nodes import Gain, Identity, Limiter, Meter, SosFilter


def _steady_state_growth(step, n):
    """Memory retained and peak per run of ``n`` calls, minus what measuring a no-op costs."""
    base_kept, base_peak = traced(lambda: None, n)
    kept, peak = traced(step, n)
    return kept - base_kept, peak - base_peak


def test_process_block_allocates_nothing_over_10000_blocks():
    pipe = Pipeline([SosFilter(kind="highpass", cutoff_hz=80, order=4), Gain(gain_db=3.0),
                     Limiter(), Meter(interval_ms=100)], sample_rate=48000, block_size=480)
    pipe.prepare(2)
    pipe.input[...] = np.random.default_rng(0).standard_normal((2, 480)).astype(np.float32)
    grown, peak = _steady_state_growth(pipe.process_block, 10_000)
    assert grown <= 0, f"{grown} bytes retained over 10,000 blocks"
    # the peak is what one block's temporaries cost at most; the engine makes none
    assert peak <= 0, f"peak {peak} bytes above a no-op loop during a block"


def test_process_with_caller_arrays_allocates_nothing():
    pipe = Pipeline([Identity(), Gain(gain_db=-6.0)], sample_rate=16000, block_size=160)
    pipe.prepare(1)
    inp = np.ones((1, 160), dtype=np.float32)
    out = np.empty_like(inp)
    grown, peak = _steady_state_growth(lambda: pipe.process(inp, out), 10_000)
    grown_more, _ = _steady_state_growth(lambda: pipe.process(inp, out), 50_000)
    # a few small objects from the shape check, freed at once: nothing kept per block
    assert grown == grown_more and grown < 512 and peak < 1024
    np.testing.assert_allclose(out, 10 ** (-6 / 20), rtol=1e-6)


def test_latency_is_summed_and_compensated():
    lim1, lim2 = Limiter(lookahead_ms=1.5), Limiter(lookahead_ms=3.0)
    pipe = Pipeline([lim1, Identity(), lim2], sample_rate=48000, block_size=480)
    pipe.prepare(1)
    assert pipe.latency_samples == lim1.latency_samples + lim2.latency_samples == 72 + 144
    x = np.zeros((1, 4800), dtype=np.float32)
    x[0, 1000] = 0.5  # an impulse below the ceiling passes unchanged...
    y = pipe.process_array(x)
    assert int(np.argmax(np.abs(y[0]))) == 1000  # ...at the same position once compensated
    assert y[0, 1000] == pytest.approx(0.5, rel=1e-5)


def test_limiter_holds_its_ceiling(rng):
    pipe = Pipeline([Gain(gain_db=12.0), Limiter(threshold_db=-1.0)], sample_rate=48000, block_size=480)
    x = (rng.standard_normal((2, 48000)) * 0.5).astype(np.float32)
    y = pipe.process_array(x)
    ceiling = 10 ** (-1 / 20)
    assert np.max(np.abs(y)) <= ceiling * (1 + 1e-6)
    assert np.max(np.abs(y)) > 0.95 * ceiling  # and does not over-limit


def test_nonfinite_input_is_sanitized_and_counted():
    pipe = Pipeline([Gain(gain_db=0.0)], sample_rate=16000, block_size=160)
    pipe.prepare(1)
    pipe.input[...] = 0.25
    pipe.input[0, 3] = np.nan
    pipe.input[0, 7] = np.inf
    pipe.process_block()
    assert np.isfinite(pipe.output).all()
    assert pipe.stats()["nonfinite_in"] == 2


class SlowNode(Node):
    def __init__(self, delay_s):
        super().__init__("slow")
        self.delay_s = delay_s

    def process(self, inp, out):
        time.sleep(self.delay_s)
        out[...] = inp


def test_deadline_misses_are_counted_against_the_budget():
    # 16 frames at 16 kHz is a 1 ms budget; a node sleeping 3 ms must miss every deadline
    pipe = Pipeline([SlowNode(0.003), Identity()], sample_rate=16000, block_size=16)
    pipe.prepare(1)
    for _ in range(5):
        pipe.process_block()
    st = pipe.stats()
    assert st["deadline_misses"] == 5 and st["blocks"] == 5
    assert st["nodes"][0]["mean_us"] >= 3000
    assert st["block_ms_p99"] >= 3.0
    fast = Pipeline([Identity()], sample_rate=16000, block_size=1600)  # 100 ms budget
    fast.prepare(1)
    for _ in range(5):
        fast.process_block()
    assert fast.stats()["deadline_misses"] == 0


def test_python_and_native_nodes_mix():
    class Invert(Node):
        def process(self, inp, out):
            np.negative(inp, out=out)

    pipe = Pipeline([Gain(gain_db=6.0), Invert(), Identity()], sample_rate=16000, block_size=160)
    x = np.linspace(-0.1, 0.1, 1600, dtype=np.float32)[None]
    np.testing.assert_allclose(pipe.process_array(x), -x * 10 ** (6 / 20), rtol=1e-5, atol=1e-7)


def test_meter_emits_timestamped_events():
    pipe = Pipeline([Meter(interval_ms=100)], sample_rate=16000, block_size=160)
    x = np.full((1, 16000), 0.5, dtype=np.float32)
    pipe.process_array(x)
    events = pipe.drain_events()
    peaks = [e for e in events if e.event == "peak_dbfs"]
    assert len(peaks) == 10
    assert [round(e.time_s, 3) for e in peaks] == [round(0.1 * (i + 1), 3) for i in range(10)] or \
        [round(e.time_s, 3) for e in peaks] == [round(0.1 * i, 3) for i in range(10)]
    assert peaks[0].value == pytest.approx(20 * np.log10(0.5), abs=1e-3)
    assert pipe.drain_events() == []  # drained


def test_reset_clears_filter_state(rng):
    pipe = Pipeline([SosFilter(kind="lowpass", cutoff_hz=500, order=4)], sample_rate=16000, block_size=160)
    x = rng.standard_normal((1, 1600)).astype(np.float32)
    a = pipe.process_array(x)
    pipe.reset()
    b = pipe.process_array(x)
    np.testing.assert_array_equal(a, b)


def test_wrong_block_shape_and_channel_count_are_refused():
    pipe = Pipeline([Identity()], sample_rate=16000, block_size=160, channels=2)
    with pytest.raises(ValueError, match="2 channel"):
        pipe.prepare(1)
    pipe.prepare(2)
    with pytest.raises(ValueError, match=r"\(2, 160\)"):
        pipe.process(np.zeros((2, 100), np.float32), np.zeros((2, 100), np.float32))

"""Multi-bus outputs: nodes that write named buses, nodes that run on a bus, a mix of buses;
latency per bus, no allocation per block, plain pipelines unchanged."""
import numpy as np
import pytest

from conftest import traced, write_wav
from edge_runtime.config import parse_pipeline
from edge_runtime.engine import Node, Pipeline
from edge_runtime.errors import ConfigError
from edge_runtime.nodes import Gain, Identity, Limiter
from edge_runtime.nodes.mix import Mix


class Split(Node):
    """Test node: bus ``twice`` = 2 x input, bus ``neg`` = -input, main = input."""

    output_buses = ("twice", "neg")

    def process(self, inp, out):
        np.copyto(out, inp)
        np.multiply(inp, 2.0, out=self.bus_out["twice"])
        np.negative(inp, out=self.bus_out["neg"])


def test_buses_carry_what_the_node_writes_and_bus_nodes_touch_only_their_bus(rng):
    x = rng.standard_normal((2, 4800)).astype(np.float32)
    pipe = Pipeline([Split(), Gain(gain_db=-6.0), Gain(gain_db=20 * np.log10(3.0))], sample_rate=48000,
                    block_size=480, on_bus=[None, None, "neg"])
    pipe.prepare(2)
    assert pipe.buses == ("twice", "neg")
    out = pipe.process_array_buses(x)
    main = pipe.process_array(x)
    np.testing.assert_allclose(out["twice"], 2 * x, rtol=1e-6)
    np.testing.assert_allclose(out["neg"], -3 * x, rtol=1e-5, atol=1e-6)     # only the bus node's gain
    np.testing.assert_allclose(main, 10 ** (-6 / 20) * x, rtol=1e-5, atol=1e-7)  # only the main gain


def test_each_bus_has_its_own_latency_and_comes_out_aligned():
    lim = Limiter(lookahead_ms=3.0)           # 144 samples at 48 kHz, on the twice bus only
    pipe = Pipeline([Split(), lim], sample_rate=48000, block_size=480, on_bus=[None, "twice"])
    pipe.prepare(1)
    assert pipe.latency_samples == 0
    assert pipe.bus_latency_samples == {"twice": 144, "neg": 0}
    x = np.zeros((1, 4800), np.float32)
    x[0, 1000] = 0.25
    out = pipe.process_array_buses(x)
    assert int(np.argmax(np.abs(out["twice"][0]))) == 1000
    assert out["twice"][0, 1000] == pytest.approx(0.5, rel=1e-5)
    assert int(np.argmax(np.abs(out["neg"][0]))) == 1000


def test_mix_aligns_buses_of_different_latency():
    lim = Limiter(lookahead_ms=3.0)
    mix = Mix(buses={"twice": 0.0, "neg": 0.0})   # 2x - x = x, if aligned
    pipe = Pipeline([Split(), lim, mix], sample_rate=48000, block_size=480, on_bus=[None, "twice", None])
    pipe.prepare(1)
    assert pipe.latency_samples == 144
    x = np.zeros((1, 4800), np.float32)
    x[0, [1000, 2000]] = [0.2, -0.3]
    y = pipe.process_array(x)
    np.testing.assert_allclose(y, x, atol=1e-6)


def test_plain_pipelines_have_no_buses_and_the_same_output(rng):
    x = rng.standard_normal((1, 4800)).astype(np.float32)
    pipe = Pipeline([Identity(), Gain(gain_db=-3.0)], sample_rate=16000, block_size=160)
    pipe.prepare(1)
    assert pipe.buses == () and pipe.bus_latency_samples == {}
    np.testing.assert_allclose(pipe.process_array(x), 10 ** (-3 / 20) * x, rtol=1e-6)
    with pytest.raises(KeyError, match="no bus 'vocals'"):
        pipe.bus_output("vocals")


def test_bus_blocks_allocate_nothing_per_block(rng):
    mix = Mix(buses={"twice": -6.0, "neg": 0.0}, main_gain_db=0.0)
    pipe = Pipeline([Split(), Limiter(lookahead_ms=1.0), Gain(gain_db=1.0), mix], sample_rate=48000,
                    block_size=480, on_bus=[None, "twice", "neg", None])
    pipe.prepare(2)
    pipe.input[...] = rng.standard_normal((2, 480)).astype(np.float32)
    kept, peak = traced(pipe.process_block, 2000)
    kept_more, peak_more = traced(pipe.process_block, 10_000)
    # Python nodes (Split, Mix) cost a few small call objects, freed at once: nothing is kept per
    # block (5x the blocks keep the same bytes) and no temporary is near one block (3,840 bytes)
    assert kept == kept_more and kept < 1024, (kept, kept_more)
    assert max(peak, peak_more) < 2048, (peak, peak_more)


def test_bus_errors_name_the_node_and_the_buses():
    with pytest.raises(ValueError, match="runs on bus 'vocals', which no earlier node writes"):
        Pipeline([Gain(), Split()], sample_rate=16000, block_size=160, on_bus=["vocals", None]).prepare(1)
    with pytest.raises(ValueError, match="writes bus 'twice', which an earlier node already writes"):
        Pipeline([Split(), Split(name="again")], sample_rate=16000, block_size=160).prepare(1)
    with pytest.raises(ValueError, match="reads bus 'drums'"):
        Pipeline([Split(), Mix(buses={"drums": 0.0})], sample_rate=16000, block_size=160).prepare(1)


def test_config_bus_key_and_mix_node_are_validated(tmp_path):
    base = {"sample_rate": 16000, "block_size": 160}
    cfg = parse_pipeline({**base, "nodes": [{"type": "gain", "bus": "drums"}]}, "p.toml")
    with pytest.raises(ConfigError, match="p.toml: .*runs on bus 'drums'"):
        cfg.build()
    with pytest.raises(ConfigError, match=r"nodes\[0\].bus = ''"):
        parse_pipeline({**base, "nodes": [{"type": "gain", "bus": ""}]}, "p.toml")
    with pytest.raises(ConfigError, match=r"nodes\[0\].buses.drums = 400"):
        parse_pipeline({**base, "nodes": [{"type": "mix", "buses": {"drums": 400}}]}, "p.toml")
    with pytest.raises(ConfigError, match="missing key 'buses'"):
        parse_pipeline({**base, "nodes": [{"type": "mix"}]}, "p.toml")


def test_runner_writes_one_stream_per_bus_with_frames_in(tmp_path, rng):
    from edge_runtime.io.files import FileSink, FileSource
    from edge_runtime.runner import run_stream

    import soundfile as sf

    t = np.arange(44100 + 37) / 44100       # resampled 44.1 -> 48 kHz and back: tones well inside the band
    x = (0.1 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 5000 * t + 1)).astype(np.float32)[:, None]
    write_wav(tmp_path / "in.wav", x, 44100)
    pipe = Pipeline([Split(), Limiter(lookahead_ms=3.0)], sample_rate=48000, block_size=480,
                    on_bus=[None, "twice"])
    src = FileSource(str(tmp_path / "in.wav"))
    sinks = {b: FileSink(str(tmp_path / f"{b}.wav"), 44100, 1, subtype="FLOAT") for b in ("twice", "neg")}
    summary = run_stream(pipe, src, None, bus_sinks=sinks)
    for s in sinks.values():
        s.close(commit=True)
    assert summary.bus_outputs["twice"]["frames_out"] == summary.bus_outputs["neg"]["frames_out"] == len(x)
    twice, _ = sf.read(tmp_path / "twice.wav", dtype="float32")
    neg, _ = sf.read(tmp_path / "neg.wav", dtype="float32")
    assert len(twice) == len(neg) == len(x)
    # aligned (the limiter's look-ahead trimmed), through two resamplers: within -40 dB
    inner = slice(200, -200)
    for y, k in ((twice, 2.0), (neg, -1.0)):
        err = y[inner] - k * x[inner, 0]
        assert 10 * np.log10(np.sum(err ** 2) / np.sum((k * x[inner, 0]) ** 2)) < -40
    with pytest.raises(ValueError, match="has no bus 'vocals'"):
        run_stream(pipe, FileSource(str(tmp_path / "in.wav")), None, bus_sinks={"vocals": None})

"""The route node: branches on a decision node's label, crossfades, hysteresis, latency alignment,
events, config errors, no allocation per block."""
import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.config import parse_pipeline
from edge_runtime.engine import Node, Pipeline
from edge_runtime.errors import ConfigError
from edge_runtime.nodes import Gain, Limiter
from edge_runtime.nodes.decision import DecisionMixin, is_decision_node
from edge_runtime.nodes.route import Branch, Route

from test_engine import _steady_state_growth

SR, BS = 16000, 160


class Scripted(DecisionMixin, Node):
    """A decision node whose label follows a per-block script (audio passes through)."""

    event_names = ("a", "b")

    def __init__(self, script, name="dec"):
        super().__init__(name)
        self.init_decision(("a", "b"), 0)
        self.script = np.asarray(script, np.int64)
        self.k = 0

    def process(self, inp, out):
        np.copyto(out, inp)
        idx = int(self.script[self.k % len(self.script)])
        self.k += 1
        self.probabilities[0] = 1.0 - idx
        self.probabilities[1] = idx
        self.set_decision(idx)

    def reset(self):
        self.k = 0
        self.reset_decision()


def _route_pipe(script, branches=None, **kw):
    dec = Scripted(script)
    if branches is None:
        branches = [Branch("a", (), [Gain(gain_db=0.0)], 0.0, False), Branch("b", (), [], 0.0, True)]
    r = Route("dec", branches, **kw)
    r.link([dec])
    pipe = Pipeline([dec, r], sample_rate=SR, block_size=BS)
    pipe.prepare(1)
    return pipe, dec, r


def _sine(seconds=2.0, f=437.0, amp=0.5):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * f * t)).astype(np.float32)[None]


def test_decision_interface_is_detected():
    d = Scripted([0])
    assert is_decision_node(d) and d.current_label == "a" and d.probabilities.dtype == np.float32
    assert not is_decision_node(Gain())


@pytest.mark.parametrize("curve", ["linear", "equal-power"])
def test_switch_is_click_free(curve):
    # a -> b (mute) at block 40, back to a at block 80; a 437 Hz sine at 0.5 (not at a zero crossing)
    script = [0] * 40 + [1] * 40 + [0] * 200
    x = _sine()
    pipe, _, r = _route_pipe(script, crossfade_ms=20.0, curve=curve)
    y = pipe.process_array(x, compensate_latency=False)[0]
    step = np.abs(np.diff(y))
    ref = np.abs(np.diff(x[0])).max()  # the sine's own largest sample step
    # the switches are crossfades: no sample step larger than the signal's own (+2%: the fade's slope
    # adds at most amp * pi / (2 * 320) = 0.0025 to a step of 0.086)
    assert step.max() <= ref * 1.04, (step.max(), ref)
    assert r.switch_count == 2
    # the muted stretch is silent once the fade is over, the rest untouched
    assert np.abs(y[40 * BS + 320 + 10:80 * BS]).max() < 1e-6
    np.testing.assert_allclose(y[:40 * BS], x[0, :40 * BS], atol=1e-6)


def test_a_hard_switch_would_click():
    # the same test fails without a crossfade: the check above can fail
    script = [0] * 40 + [1] * 40 + [0] * 200
    x = _sine()
    pipe, _, _ = _route_pipe(script, crossfade_ms=0.0)
    y = pipe.process_array(x, compensate_latency=False)[0]
    assert np.abs(np.diff(y)).max() > 2 * np.abs(np.diff(x[0])).max()


def test_branch_latencies_are_aligned():
    # branch a has a 1.5 ms look-ahead limiter (24 samples), branch b nothing: b is delayed to match,
    # so a linear crossfade between two identical signals is the identity (no jump in time)
    lim = Limiter(threshold_db=0.0, lookahead_ms=1.5)
    branches = [Branch("a", (), [lim], 0.0, False), Branch("b", (), [Gain(gain_db=0.0)], 0.0, False)]
    script = ([0] * 15 + [1] * 15) * 10
    x = _sine(amp=0.3)
    pipe, _, r = _route_pipe(script, branches, crossfade_ms=10.0, hold_ms=50.0)
    assert r.latency_samples == lim.latency_samples == 24
    y = pipe.process_array(x)  # latency compensated
    assert r.switch_count >= 8
    np.testing.assert_allclose(y, x, atol=1e-5)


def test_lookahead_adds_latency_and_applies_decisions_earlier():
    script = [1] * 50 + [0] * 200  # mute for 0.5 s, then pass
    x = _sine()
    pipe, _, r = _route_pipe(script, crossfade_ms=5.0, lookahead_ms=100.0)
    assert r.latency_samples == 1600
    y = pipe.process_array(x)[0]
    # with compensation, the un-mute (decided at 0.5 s) lands 100 ms earlier in the audio
    assert np.abs(y[int(0.41 * SR):int(0.45 * SR)]).max() > 0.4
    assert np.abs(y[:int(0.38 * SR)]).max() < 1e-6


def test_hysteresis_no_chatter_on_a_decision_toggling_every_block():
    x = _sine(seconds=3.0)
    pipe, dec, r = _route_pipe([0, 1], crossfade_ms=10.0, hold_ms=200.0)
    pipe.process_array(x, compensate_latency=False)
    assert dec.decision_changes > 250           # the decision toggled every block...
    assert 0 < r.switch_count <= 3.0 / 0.2 + 1   # ...the route switched at most once per hold_ms
    # attack: a label must last attack_ms before a switch; one-block blips never switch
    pipe2, dec2, r2 = _route_pipe([0, 1], crossfade_ms=10.0, attack_ms=15.0)
    pipe2.process_array(x, compensate_latency=False)
    assert r2.switch_count == 0


def test_idle_reset_skips_branches_not_selected():
    x = _sine()
    g = Gain(gain_db=0.0)
    branches = [Branch("a", (), [Gain(gain_db=0.0)], 0.0, False), Branch("b", (), [g], 0.0, False)]
    pipe, _, r = _route_pipe([0] * 100 + [1] * 100, branches, idle="reset", crossfade_ms=10.0)
    pipe.process_array(x, compensate_latency=False)
    runs = {row["branch"]: row["blocks_run"] for row in r.branch_stats()}
    assert runs["a"] < 200 and runs["b"] < 200 and runs["a"] + runs["b"] < 230
    pipe_run, _, r_run = _route_pipe([0] * 100 + [1] * 100, [Branch("a", (), [Gain()], 0.0, False),
                                                              Branch("b", (), [Gain()], 0.0, False)])
    pipe_run.process_array(x, compensate_latency=False)
    assert all(row["blocks_run"] == 200 for row in r_run.branch_stats())


def test_switches_are_events_with_the_decisions():
    pipe, _, _ = _route_pipe([0] * 20 + [1] * 20 + [0] * 20)
    pipe.process_array(_sine(seconds=0.6), compensate_latency=False)
    ev = [(e.node, e.event, round(e.time_s, 2)) for e in pipe.drain_events()]
    assert ("dec", "b", 0.2) in ev and ("route", "b", 0.2) in ev
    assert ("dec", "a", 0.4) in ev and ("route", "a", 0.4) in ev


def test_events_of_nodes_inside_branches_are_named():
    from edge_runtime.nodes import Meter

    m = Meter(interval_ms=100.0)
    pipe, _, _ = _route_pipe([0], [Branch("a", (), [m], 0.0, False), Branch("b", (), [], 0.0, True)])
    pipe.process_array(_sine(seconds=0.5), compensate_latency=False)
    names = {e.node for e in pipe.drain_events()}
    assert "route.a.meter" in names


def test_no_allocation_per_block_with_routing():
    # switches every 12 blocks (crossfades included), two branches with DSP nodes
    script = [0] * 12 + [1] * 12
    branches = [Branch("a", (), [Gain(gain_db=-3.0), Limiter()], 0.0, False),
                Branch("b", (), [Gain(gain_db=2.0)], -6.0, False)]
    pipe, _, r = _route_pipe(script, branches, crossfade_ms=5.0, hold_ms=10.0, lookahead_ms=20.0)
    pipe.input[...] = _sine(seconds=BS / SR)
    grown, peak = _steady_state_growth(pipe.process_block, 10_000)
    grown_more, _ = _steady_state_growth(pipe.process_block, 30_000)
    assert r.switch_count > 700
    # the counters (Python ints past the small-int cache) are replaced, not accumulated: what is
    # retained does not grow with the number of blocks
    assert grown == grown_more and grown < 1024, (grown, grown_more)
    # a few NumPy views (slices of the fade tables) live for one call; nothing is kept
    assert peak < 2048, f"peak {peak} bytes above a no-op loop during a block"


# ---- config -----------------------------------------------------------------------------------
GATE = """
sample_rate = 16000
block_size = 160
[[nodes]]
type = "vad"
name = "vad"
[[nodes]]
type = "route"
decision = "{decision}"
crossfade_ms = 20
[nodes.branches.{label}]
nodes = [{{ type = "gain", gain_db = 0 }}]
[nodes.branches.else]
mute = true
"""


def _parse(text):
    import tomllib

    return parse_pipeline(tomllib.loads(text), "gate.toml")


def test_config_builds_a_routed_pipeline():
    pipe = _parse(GATE.format(decision="vad", label="speech")).build()
    route = pipe.nodes[1]
    assert isinstance(route, Route) and route.decision is pipe.nodes[0]
    assert [b.name for b in route.branches] == ["speech", "else"]
    assert list(route.label_to_branch) == [1, 0]  # nonspeech -> else, speech -> speech


def test_config_unknown_decision_node_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"gate\.toml: nodes\[1\] \(route\): decision = 'vadd' is not a decision "
                                          r"node earlier in the pipeline \(decision nodes before this route: 'vad'\)"):
        _parse(GATE.format(decision="vadd", label="speech")).build()


def test_config_unknown_label_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"gate\.toml: nodes\[1\] \(route\): branches\.musik: label 'musik' is not "
                                          r"one of vad's labels \(nonspeech, speech\)"):
        _parse(GATE.format(decision="vad", label="musik")).build()


@pytest.mark.parametrize("text, msg", [
    (GATE.format(decision="vad", label="speech").replace("mute = true", "volume = 3"),
     r"nodes\[1\]\.branches\.else\.volume: unknown key"),
    (GATE.format(decision="vad", label="speech").replace('type = "gain"', 'type = "gainz"'),
     r"nodes\[1\]\.branches\.speech\.nodes\[0\]\.type = 'gainz' is not a known node type"),
    (GATE.format(decision="vad", label="speech").replace("[nodes.branches.else]\nmute = true", ""),
     r"label\(s\) 'nonspeech' of vad have no branch"),
    (GATE.format(decision="vad", label="speech").replace('decision = "vad"\n', ""),
     r"nodes\[1\]: missing key 'decision' for route"),
    (GATE.format(decision="vad", label="speech").replace("mute = true", "gain_db = -500"),
     r"branches\.else\.gain_db = -500; expected a number in -120\.\.24 dB"),
])
def test_config_route_errors(text, msg):
    with pytest.raises(ConfigError, match=r"gate\.toml: .*" + msg):
        _parse(text).build()


def test_shipped_speech_gate_pipeline_loads():
    from edge_runtime.config import load_pipeline

    pipe = load_pipeline("speech_gate")
    vad, route = pipe.nodes
    assert vad.labels == ("nonspeech", "speech") and route.decision is vad
    # 40 ms look-ahead + the denoiser's 10 ms, aligned across branches
    assert pipe.latency_samples == 640 + 160


def test_speech_gate_run_writes_decisions_and_switches_to_the_event_sink(cli, tmp_path):
    src = Path(__file__).parent / "fixtures" / "audio" / "vad_speech.flac"
    out, events = tmp_path / "gated.wav", tmp_path / "events.jsonl"
    r = cli("run", "speech_gate", "-i", src, "-o", out, "--events", events, "--quiet")
    assert r.returncode == 0, r.stderr.decode()
    import soundfile as sf

    assert sf.info(str(out)).frames == sf.info(str(src)).frames
    ev = [json.loads(line) for line in events.read_text().splitlines()]
    vad = [e for e in ev if e["node"] == "vad"]
    route = [e for e in ev if e["node"] == "route"]
    assert vad and vad[0]["event"] == "speech"
    assert route and route[0]["event"] == "speech" and len(route) <= len(vad)
    # a switch follows its decision within the route's hold time
    assert abs(route[0]["time_s"] - vad[0]["time_s"]) <= 0.1


def test_route_bad_config_on_the_cli_is_one_error_line(cli, tmp_path):
    p = tmp_path / "gate.toml"
    p.write_text(GATE.format(decision="vadd", label="speech"))
    src = Path(__file__).parent / "fixtures" / "audio" / "vad_speech.flac"
    r = cli("run", p, "-i", src, "-o", tmp_path / "o.wav")
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and err[0].startswith("error: ") and "'vadd'" in err[0]
    assert not (tmp_path / "o.wav").exists()


def test_governor_steps_down_a_model_node_inside_a_branch(tmp_path, monkeypatch):
    import time

    from test_governor import FP32, INT8, SlowFP32Denoise, write_choice

    from edge_runtime.governor import Governor
    from edge_runtime.nodes.route import GovernedRoute, make_route

    monkeypatch.setenv("EDGE_RUNTIME_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("EDGE_RUNTIME_DEVICE", "generic-x86")
    write_choice(FP32, [INT8])
    den = SlowFP32Denoise()
    dec = Scripted([0])
    route = make_route(decision="dec", branches=[{"name": "a", "nodes": [den]}, {"name": "b", "nodes": [], "mute": True}])
    assert isinstance(route, GovernedRoute)
    route.link([dec])
    p = Pipeline([dec, route], sample_rate=SR, block_size=BS)
    p.prepare(1)
    gov = Governor(p, window_blocks=10, max_miss_ratio=0.3).attach()
    x = (np.random.default_rng(0).standard_normal((1, BS)) * 0.1).astype(np.float32)
    for _ in range(200):
        p.input[...] = x
        p.process_block()
        gov.after_block()
        if den.variant_label == INT8:
            break
        if gov.steps:
            time.sleep(0.001)
    # the block loop blamed the route; the route stepped its slow model node down
    assert den.variant_label == INT8, (gov.steps, den.switches)
    assert gov.steps[0]["node"] == "route" and gov.steps[0]["to"] == f"route.a.denoise:{INT8}"
    ev = [(e.node, e.event) for e in p.drain_events()]
    assert ("route.a.denoise", "variant_step_down") in ev
    assert p.stats()["nodes"][1]["switches"][0]["to"] == INT8

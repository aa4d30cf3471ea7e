"""`run` uses the device profile; the governor steps an ML node down under an injected slow
variant, without a gap or a click; the block loop blames late blocks on the slowest node."""
import logging
import time

import numpy as np
import pytest

from conftest import ROOT
from edge_runtime.engine import Node, Pipeline
from edge_runtime.governor import Governor
from edge_runtime.models import profiler
from edge_runtime.nodes import Denoise, Identity

pytestmark = pytest.mark.skipif(not (ROOT / "models_int8" / "denoise").is_dir(), reason="no denoise model shipped")

FP32 = "onnx/fp32@onnxruntime"
# the rung stepped down to (its 7-bit weights since 2026-12-07: the earlier 8-bit file saturated ONNX
# Runtime's kernels on AVX2-only CPUs and tracked FP32 at only 10.7 dB in the click test there)
INT8 = "onnx/int8-static@onnxruntime"


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_RUNTIME_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("EDGE_RUNTIME_DEVICE", "generic-x86")
    return tmp_path / "state"


def write_choice(chosen, ladder=()):
    choices = {"denoise": {"chosen": chosen, "ladder": list(ladder), "within_budget": True, "reason": "test"}}
    return profiler.write_profile("generic-x86", [], choices)


class _SlowSession:
    """A session whose calls take ``delay`` seconds longer: an injected slow variant."""

    def __init__(self, session, delay):
        self._s, self.delay = session, delay
        self.path, self.inputs, self.outputs = session.path, session.inputs, session.outputs

    def bind(self, inputs, outputs):
        binding = self._s.bind(inputs, outputs)
        fast = binding.run

        def slow():
            time.sleep(self.delay)
            fast()
        binding.run = slow
        return binding


class SlowFP32Denoise(Denoise):
    def open_session(self, choice):
        s = super().open_session(choice)
        return _SlowSession(s, 0.012) if choice.variant.precision == "fp32" else s


def test_auto_variant_follows_the_measured_profile(state):
    write_choice(FP32, [INT8])
    d = Denoise()
    Pipeline([d], sample_rate=16000, block_size=160).prepare(1)
    assert d.variant_label == FP32 and [c.label for c in d.ladder] == [INT8]
    assert d.choice.source.startswith("profile ")
    write_choice(INT8)
    d = Denoise()
    Pipeline([d], sample_rate=16000, block_size=160).prepare(1)
    assert d.variant_label == INT8 and d.ladder == []


def test_without_a_profile_the_device_defaults_choose(state):
    d = Denoise()
    Pipeline([d], sample_rate=16000, block_size=160).prepare(1)
    # configs/devices/generic-x86.toml names denoise's fastest variants (the first installed wins);
    # nothing measured here, so no ladder
    from edge_runtime.backends import BACKENDS

    want = "tflite/int8-dynamic@litert" if BACKENDS["litert"].available() else "onnx/int8-dynamic@onnxruntime"
    assert d.variant_label == want and d.ladder == [] and d.choice.source.startswith("defaults ")
    assert d.choice.source.endswith("[models] denoise")


def test_explicit_variant_wins_over_the_profile(state):
    write_choice(INT8)
    d = Denoise(variant="onnx:fp32")
    Pipeline([d], sample_rate=16000, block_size=160).prepare(1)
    assert d.variant_label == FP32 and d.choice.source == "explicit"


def test_chain_blames_late_blocks_on_the_slowest_node():
    class Sleepy(Node):
        def process(self, inp, out):
            time.sleep(0.003)
            out[...] = inp

    p = Pipeline([Identity(), Sleepy(), Identity()], sample_rate=16000, block_size=16)  # 1 ms budget
    p.prepare(1)
    for _ in range(5):
        p.process_block()
    chain = p._chain
    assert chain.deadline_misses == 5
    assert [chain.node_misses(i) for i in range(3)] == [0, 5, 0]


def test_governor_steps_down_under_an_injected_slow_variant(state, caplog):
    write_choice(FP32, [INT8])
    node = SlowFP32Denoise()
    # a 10 ms budget: the slowed fp32 variant (12 ms + the model) misses every block
    p = Pipeline([node], sample_rate=16000, block_size=160)
    p.prepare(1)
    gov = Governor(p, window_blocks=10, max_miss_ratio=0.3).attach()
    x = (np.random.default_rng(0).standard_normal((1, 160)) * 0.1).astype(np.float32)
    caplog.set_level(logging.WARNING, logger="edge_runtime.governor")
    for _ in range(200):
        p.input[...] = x
        p.process_block()
        gov.after_block()
        if node.variant_label == INT8:
            break
        if gov.steps:  # loading in the background; the audio keeps going
            time.sleep(0.001)
    assert node.variant_label == INT8, (gov.steps, node.switches)
    assert gov.steps[0]["from"] == FP32 and gov.steps[0]["to"] == INT8
    assert node.switches == [{"from": FP32, "to": INT8, "reason": gov.steps[0]["reason"]}]
    assert any("stepping down" in r.message for r in caplog.records)
    ev = p.drain_events()
    assert [e.event for e in ev] == ["variant_step_down"] and ev[0].node == "denoise"
    # nothing cheaper left: the governor says so once instead of stepping again
    assert not node.can_step_down()


def test_step_down_mid_stream_is_click_free(state):
    write_choice(FP32, [INT8])
    import soundfile as sf

    x, _ = sf.read(ROOT / "tests" / "fixtures" / "audio" / "denoise_5db_0_noisy.flac", dtype="float32")
    x = x[:x.size // 160 * 160]
    def run(switch_block):
        node = Denoise()
        p = Pipeline([node], sample_rate=16000, block_size=160)
        p.prepare(1)
        y = np.zeros_like(x)
        for b in range(x.size // 160):
            if b == switch_block:
                assert node.step_down(wait=True) == INT8
            p.input[0] = x[b * 160:(b + 1) * 160]
            p.process_block()
            y[b * 160:(b + 1) * 160] = p.output[0]
        return node, y

    switch_block = 100
    _, ref = run(None)            # fp32 all along
    node, y = run(switch_block)   # fp32, then int8 from block 100 on, same recurrent state
    assert node.variant_label == INT8
    k = switch_block * 160
    np.testing.assert_array_equal(y[:k], ref[:k])
    # no gap, no restart: right after the switch the output tracks the fp32 run closely
    seg = slice(k, k + 8000)
    snr = 10 * np.log10(np.sum(ref[seg] ** 2) / np.sum((y[seg] - ref[seg]) ** 2))
    assert snr > 15, snr
    # no click: the largest sample-to-sample step near the switch is no larger than elsewhere
    step = np.abs(np.diff(y))
    around = step[k - 320:k + 640].max()
    elsewhere = np.concatenate([step[1600:k - 640], step[k + 1280:]]).max()
    assert around <= 1.1 * elsewhere, (around, elsewhere)


def test_cli_run_uses_the_profile_that_profile_wrote(cli, tmp_path):
    env = {"EDGE_RUNTIME_STATE": str(tmp_path / "state")}
    r = cli("profile", "denoise", "--backends", "onnxruntime", "--runs", 20, "--warmup", 2, "--in-process",
            "--json", env=env)
    assert r.returncode == 0, r.stderr.decode()
    rep = __import__("json").loads(r.stdout)
    chosen = rep["choices"]["denoise"]["chosen"]
    assert chosen.startswith("onnx/") and chosen.endswith("@onnxruntime")
    r = cli("run", "denoise", "-i", ROOT / "tests" / "fixtures" / "audio" / "denoise_5db_0_noisy.flac",
            "-o", tmp_path / "out.wav", "--json", env=env)
    assert r.returncode == 0, r.stderr.decode()
    s = __import__("json").loads(r.stdout)
    (node,) = [n for n in s["nodes"] if n["name"] == "denoise"]
    assert node["variant"] == chosen and node["switches"] == []

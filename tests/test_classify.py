"""The shipped sound classifier and the ``classify`` node: known answers on synthesized and
held-out inputs, streaming == offline, the decision interface and its events, no allocation per
block, bad input, manifest/variant parity, the CLI's label stream.

The fixture clips (firmware_tools/data/make_classify_fixtures.py, seed 11) are 2.5 s drawn
from the TEST split of build_classify.py: sources the model never trained on."""
import json
import shutil
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, write_wav
from edge_runtime.classify.features import HOP, N_FRAMES, logmel_frames
from edge_runtime.config import load_pipeline
from edge_runtime.engine import Pipeline
from edge_runtime.errors import ModelError
from edge_runtime.nodes.classify import LABELS, Classify

FIX = ROOT / "tests" / "fixtures" / "audio"
MODELS = ROOT / "models_int8" / "classify"
SR = 16000

pytestmark = pytest.mark.skipif(not MODELS.is_dir(), reason="no classify model shipped")


def fixture(cls):
    x, sr = sf.read(FIX / f"classify_{cls}.flac", dtype="float32")
    assert sr == SR
    return x


def run(x, variant="auto", block=160, **kw):
    """Stream ``x`` through a classify pipeline; returns (node, [(time_s, label)])."""
    node = Classify(variant=variant, **kw)
    pipe = Pipeline([node], sample_rate=SR, block_size=block)
    pipe.prepare(1 if x.ndim == 1 else x.shape[0])
    pipe.process_array(x if x.ndim == 2 else x[None])
    events = [(e.time_s, LABELS[int(e.value)]) for e in pipe.drain_events() if e.event == "class"]
    return node, events


def pink(n, rng):
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.size, dtype=np.float64)
    f[0] = 1
    x = np.fft.irfft(spec / np.sqrt(f), n)
    return (x / np.std(x)).astype(np.float32)


# ---- known answers ------------------------------------------------------------------------

def test_silence_and_room_tone_are_silence(rng):
    for x in (np.zeros(3 * SR, np.float32), pink(3 * SR, rng) * np.float32(10 ** (-75 / 20))):
        node, events = run(x)
        assert node.current_label == "silence", (node.probabilities, events)
        assert node.probabilities[LABELS.index("silence")] > 0.5
        assert [lab for _, lab in events] == ["silence"]


@pytest.mark.parametrize("freq", [220.0, 1000.0, 3000.0])
def test_a_sine_is_not_speech(freq):
    t = np.arange(3 * SR) / SR
    node, events = run((0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32))
    assert node.windows == 9
    assert node.current_label != "speech", node.probabilities
    assert node.probabilities[LABELS.index("speech")] < 0.3, node.probabilities


@pytest.mark.parametrize("cls", LABELS[1:])
def test_held_out_clips_get_their_class(cls):
    node, events = run(fixture(cls))
    assert node.current_label == cls, (events, dict(zip(LABELS, np.round(node.probabilities, 3))))


def test_class_events_only_on_changes():
    """silence -> alarm -> silence: events at changes only, each a different class from the
    last, and the node's state is the last event's."""
    x = np.concatenate([np.zeros(2 * SR, np.float32), fixture("alarm"), np.zeros(3 * SR, np.float32)])
    node, events = run(x)
    labels = [lab for _, lab in events]
    assert labels[0] == "silence" and events[0][0] == pytest.approx(1.0)
    assert "alarm" in labels and labels[-1] == "silence"
    assert all(a != b for a, b in zip(labels, labels[1:]))
    assert node.current_label == labels[-1] and LABELS[node.current_index] == node.current_label


def test_hysteresis_and_smoothing_hold_a_decision_longer():
    """A larger margin and longer smoothing can only delay a change, never add one."""
    x = np.concatenate([np.zeros(2 * SR, np.float32), fixture("alarm"), np.zeros(2 * SR, np.float32)])
    _, quick = run(x, smoothing=1, hysteresis=0.0)
    _, slow = run(x, smoothing=6, hysteresis=0.3)
    assert len(slow) <= len(quick)
    t_quick = next(t for t, lab in quick if lab == "alarm")
    t_slow = next((t for t, lab in slow if lab == "alarm"), np.inf)
    assert t_slow >= t_quick


# ---- streaming == offline, block sizes ------------------------------------------------------

def test_streaming_matches_offline_windows():
    """The node's per-window probabilities equal the model run on windows cut from the whole
    clip's log-mel (same kernels, computed at once), for two block sizes."""
    from edge_runtime.backends import load_session

    x = fixture("speech")
    frames = logmel_frames(x[None])[0]
    sess = load_session(str(MODELS / "classify_fp32.onnx"), backend="onnxruntime", threads=1)
    for block in (160, 800):
        node = Classify(variant="fp32")
        pipe = Pipeline([node], sample_rate=SR, block_size=block)
        pipe.prepare(1)
        got = []
        n_blocks = len(x) // block
        for b in range(n_blocks):
            pipe.input[0] = x[b * block:(b + 1) * block]
            before = node.windows
            pipe.process_block()
            if node.windows != before:
                got.append(node.window_probabilities.copy())
        ends = [f for f in range(1, n_blocks * block // HOP + 1) if f % 25 == 0 and f >= N_FRAMES]
        assert len(got) == len(ends) == 7
        for g, f in zip(got, ends):
            want = sess.run({"logmel": frames[None, f - N_FRAMES:f]})["probs"][0]
            np.testing.assert_allclose(g, want, atol=2e-5)


def test_decisions_do_not_depend_on_block_size():
    x = fixture("music")
    ref = run(x, block=160)[1]
    for block in (480, 1600):
        assert run(x, block=block)[1] == ref


def test_stereo_is_analysed_as_its_mono_mix():
    x = fixture("water")
    node_m, ev_m = run(x, variant="fp32")
    node_s, ev_s = run(np.stack([x, x]), variant="fp32")
    np.testing.assert_allclose(node_s.probabilities, node_m.probabilities, atol=1e-5)
    assert ev_s == ev_m


def test_audio_passes_through_and_embedding_is_exposed(rng):
    x = fixture("keyboard")
    node = Classify()
    pipe = Pipeline([node], sample_rate=SR, block_size=160)
    pipe.prepare(1)
    y = pipe.process_array(x[None])
    np.testing.assert_array_equal(y[0], x)
    from edge_runtime.models import default_registry

    dim = default_registry()["classify"].outputs[1].shape[-1]     # 4 x the model's width
    assert node.embedding.shape == (dim,) and dim >= 64 and np.all(np.isfinite(node.embedding))
    e1 = node.embedding.copy()
    pipe.process_array(pink(2 * SR, rng)[None] * np.float32(0.05))
    assert not np.allclose(node.embedding, e1)


# ---- the hot path -----------------------------------------------------------------------------

def test_no_allocation_per_block():
    node = Classify()
    pipe = Pipeline([node], sample_rate=SR, block_size=160)
    pipe.prepare(2)
    x = fixture("speech")
    pipe.input[...] = x[:160]
    for _ in range(6000):   # ONNX Runtime settles its own bookkeeping over the first ~100 runs
        pipe.process_block()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for _ in range(3000):                  # 30 s of audio, 120 model calls
        pipe.process_block()
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert node.windows > 100
    assert after - before < 2048, after - before
    assert peak - before < 16384, peak - before   # transient views only, no array per block


# ---- bad input --------------------------------------------------------------------------------

def test_wrong_rate_and_block_size_are_refused():
    with pytest.raises(ValueError, match="16000 Hz, not 48000"):
        Pipeline([Classify()], sample_rate=48000, block_size=480).prepare(1)
    with pytest.raises(ValueError, match="multiple of 160"):
        Pipeline([Classify()], sample_rate=SR, block_size=100).prepare(1)


@pytest.mark.parametrize("kw, msg", [({"hop_ms": 15}, "hop_ms=15"), ({"smoothing": 0}, "smoothing=0"),
                                     ({"hysteresis": 1.5}, "hysteresis=1.5"), ({"labels": "a,a"}, "repeat")])
def test_bad_parameters_are_refused(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Classify(**kw)


def test_mismatched_models_are_refused():
    denoise = ROOT / "models_int8" / "denoise" / "denoise_fp32.onnx"
    if denoise.exists():
        with pytest.raises(ModelError, match="mismatched model"):
            Pipeline([Classify(model=str(denoise))], sample_rate=SR, block_size=160).prepare(1)
    with pytest.raises(ModelError, match="7 classes"):
        Pipeline([Classify(model=str(MODELS / "classify_fp32.onnx"), labels="a,b,c")],
                 sample_rate=SR, block_size=160).prepare(1)


def test_class_names_come_from_the_manifest(tmp_path, monkeypatch):
    from edge_runtime.models import default_registry, manifest as mf

    spec = default_registry()["classify"]
    assert spec.labels == LABELS          # shipped: the manifest states the probs order
    node = Classify()
    Pipeline([node], sample_rate=SR, block_size=160).prepare(1)
    assert node.labels == LABELS
    # a manifest whose model has other names: the node reports those
    d = spec.to_dict()
    d["labels"] = [f"k{i}" for i in range(len(LABELS))]
    shutil.copytree(MODELS, tmp_path / "classify")
    mf.write_manifest(tmp_path / "manifest.toml", {"schema": 1, "models": [d]})
    monkeypatch.setenv("EDGE_RUNTIME_MODELS", str(tmp_path / "manifest.toml"))
    node = Classify(variant="onnx/fp32")
    Pipeline([node], sample_rate=SR, block_size=160).prepare(1)
    assert node.labels == tuple(d["labels"])


def test_nonfinite_input_is_sanitized_before_the_model():
    node = Classify()
    pipe = Pipeline([node], sample_rate=SR, block_size=160)
    pipe.prepare(1)
    x = fixture("speech")
    x[4000:9000] = np.nan
    x[12000] = np.inf
    pipe.process_array(x[None])
    assert np.all(np.isfinite(node.probabilities)) and node.current_index >= 0
    assert pipe.stats()["nonfinite_in"] > 0


# ---- manifest and variants --------------------------------------------------------------------

def test_manifest_variants_agree_with_fp32():
    """Every shipped variant verifies (sha256), binds, and classifies the held-out windows like
    FP32; the INT8 ONNX file is at most 200 KB."""
    from edge_runtime.backends import BACKENDS, load_session
    from edge_runtime.models import default_registry, load

    model = default_registry()["classify"]
    assert {(v.format, v.precision) for v in model.variants} >= {("onnx", "fp32"), ("onnx", "int8-static")}
    assert [s.name for s in model.inputs] == ["logmel"] and [s.name for s in model.outputs] == ["probs", "embedding"]
    windows = []
    for cls in LABELS[1:]:
        f = logmel_frames(fixture(cls)[None])[0]
        windows += [f[None, -N_FRAMES:], f[None, -N_FRAMES - 50:-50]]
    ref = load_session(str(MODELS / "classify_fp32.onnx"), backend="onnxruntime", threads=1)
    want = np.stack([ref.run({"logmel": w})["probs"][0] for w in windows])
    for v in model.variants:
        if not any(BACKENDS[b].available() for b in v.backends):
            continue
        s = load(v, threads=1)
        got = np.stack([np.array(s.run({"logmel": w})["probs"][0]) for w in windows])
        agree = np.mean(got.argmax(1) == want.argmax(1))
        assert agree >= 0.9, f"{v.key}: arg-max agrees with FP32 on {agree:.0%} of windows"
        assert np.max(np.abs(got - want)) < (0.02 if "int8" not in v.precision else 0.35), v.key
        if v.precision.startswith("int8"):
            assert v.size <= 200 * 1024, f"{v.key}: {v.size} bytes"


# ---- CLI --------------------------------------------------------------------------------------

def test_cli_prints_timestamped_labels(cli, tmp_path):
    wav = write_wav(tmp_path / "in.wav", np.concatenate([np.zeros(2 * SR, np.float32), fixture("alarm")]), SR)
    r = cli("run", "classify", "-i", wav)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0] == "00:00:01.000  silence"
    assert any(line.endswith("  alarm") for line in lines[1:-1])
    assert lines[-1].startswith("# classify: ") and "over 4.50 s" in lines[-1]
    r = cli("run", "classify", "-i", wav, "--json")
    rows = [json.loads(line) for line in r.stdout.decode().splitlines()]
    conf, ts = rows[0].pop("confidence"), rows[0].pop("ts")
    assert rows[0] == {"time_s": 1.0, "node": "classify", "label": "silence", "index": 0}
    assert 0.0 < conf <= 1.0 and ts.endswith("Z")
    assert {row["label"] for row in rows} >= {"silence", "alarm"}


def test_cli_labels_from_a_live_input_run_with_the_collector_frozen(cli, tmp_path):
    # stdin (as alsa: on a device) is live: the labels path settles and freezes the collector
    # before the audio, as run and serve do; a file input does not
    x = (np.concatenate([np.zeros(SR, np.float32), fixture("alarm")]) * 32767).astype("<i2")
    r = cli("run", "classify", "-i", "-", "--rate", str(SR), "--channels", "1", input_bytes=x.tobytes())
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert any(line.endswith("  alarm") for line in lines)
    assert lines[-2].startswith("# classify: ") and lines[-1].startswith("# python gc: "), lines[-2:]
    frozen = int(lines[-1].split()[3])
    gens = lines[-1].split("during it ")[1].split()[0].split("/")
    assert frozen > 1000 and gens[2] == "0", lines[-1]
    wav = write_wav(tmp_path / "in.wav", x.astype(np.float32) / 32768, SR)
    r = cli("run", "classify", "-i", wav)
    assert r.returncode == 0 and "# python gc" not in r.stdout.decode()


def test_cli_resamples_other_rates(cli, tmp_path):
    import soxr

    x = soxr.resample(fixture("music"), SR, 44100).astype(np.float32)
    r = cli("run", "classify", "-i", write_wav(tmp_path / "m44.wav", np.stack([x, x], axis=1), 44100), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.decode().splitlines()[-1])["label"] == "music"


def test_cli_bad_input_is_one_error_line(cli, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    r = cli("run", "classify", "-i", bad)
    assert r.returncode == 2 and r.stdout == b""
    err = r.stderr.decode().strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "bad.wav" in err[0]

"""Anomaly detection: features, detectors, state files, the node and the CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import traced
from edge_runtime.anomaly import DETECTORS, AnomalyModel, Hysteresis
from edge_runtime.cli import main
from edge_runtime.engine import Pipeline
from edge_runtime.features import LogMelStats, extract
from edge_runtime.nodes.anomaly import AnomalyDetect
from edge_runtime.state import StateError, load_state, save_state

SR = 16000


def machine(seconds, seed=0, f0=57.0, clicks_at=None):
    """A motor: 9 harmonics of ``f0`` with slow speed wobble, plus a little noise; optional
    bearing clicks (impulses every 25 ms) from ``clicks_at = (start_s, end_s)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    ph = 2 * np.pi * np.cumsum(f0 * (1 + 0.003 * np.sin(2 * np.pi * 0.1 * t))) / SR
    x = sum(np.sin(k * ph + rng.uniform(0, 6)) / k for k in range(1, 10)) * 0.1
    x += 0.01 * rng.standard_normal(t.size)
    if clicks_at is not None:
        i0, i1 = int(clicks_at[0] * SR), int(clicks_at[1] * SR)
        x[i0:i1:400] += 0.7
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def normal_frames():
    fx = LogMelStats()
    return extract(fx, machine(40.0), SR), fx.config()


@pytest.fixture(scope="module")
def models(normal_frames):
    X, cfg = normal_frames
    return {d: AnomalyModel.fit(X, d, features=cfg, sample_rate=SR) for d in DETECTORS}


@pytest.fixture(scope="module")
def clicky_frames():
    return extract(LogMelStats(), machine(8.0, seed=3, clicks_at=(0.0, 8.0)), SR)


@pytest.mark.parametrize("detector", DETECTORS)
def test_obvious_anomaly_scores_above_every_normal_frame(models, normal_frames, clicky_frames, detector):
    m = models[detector]
    normal = m.score_batch(extract(LogMelStats(), machine(10.0, seed=7), SR))   # unseen normal audio
    clicks = m.score_batch(clicky_frames)
    assert clicks.min() > normal.max(), (detector, clicks.min(), normal.max())
    assert clicks.min() > m.threshold_on
    # the threshold is the held-back normal scores' 99.5% quantile: most frames of new normal audio sit below
    assert np.mean(normal > m.threshold_on) < 0.15


@pytest.mark.parametrize("detector", DETECTORS)
def test_frame_scorer_matches_batch_scores(models, clicky_frames, normal_frames, detector):
    m = models[detector]
    X = np.concatenate([normal_frames[0][:100], clicky_frames[:50]])
    batch = m.score_batch(X)
    sc = m.scorer()
    one = np.array([sc.score(x) for x in X])
    # float32 features, float64 (gmm/kmeans/iforest) or ORT float32 (autoencoder) arithmetic
    np.testing.assert_allclose(one, batch, rtol=2e-5, atol=1e-6 * np.abs(batch).max())


@pytest.mark.parametrize("detector", DETECTORS)
def test_state_round_trip_is_equal(models, clicky_frames, tmp_path, detector):
    m = models[detector]
    p = tmp_path / f"{detector}.state"
    m.save(p)
    m2 = AnomalyModel.load(p)
    assert (m2.detector, m2.features, m2.sample_rate) == (m.detector, m.features, m.sample_rate)
    assert (m2.threshold_on, m2.threshold_off) == (m.threshold_on, m.threshold_off)
    np.testing.assert_array_equal(m2.center, m.center)
    assert set(m2.arrays) == set(m.arrays)
    for k in m.arrays:
        np.testing.assert_array_equal(m2.arrays[k], m.arrays[k])
    np.testing.assert_array_equal(m2.score_batch(clicky_frames), m.score_batch(clicky_frames))


def test_state_files_hold_no_pickle(models, tmp_path):
    p = tmp_path / "g.state"
    models["iforest"].save(p)
    data = p.read_bytes()
    assert data.startswith(b"ERSTATE\n") and b"\x80\x04\x95" not in data[:200]


def _err(fn):
    with pytest.raises(StateError) as ei:
        fn()
    return str(ei.value)


def test_corrupt_foreign_and_other_version_states_are_refused(models, tmp_path):
    p = tmp_path / "m.state"
    models["gmm"].save(p)
    good = p.read_bytes()
    # one flipped byte in the payload
    bad = bytearray(good)
    bad[-10] ^= 0xFF
    (tmp_path / "flip.state").write_bytes(bytes(bad))
    msg = _err(lambda: AnomalyModel.load(tmp_path / "flip.state"))
    assert "flip.state" in msg and "corrupt" in msg and "sha256" in msg
    # truncated (a copy cut short)
    (tmp_path / "cut.state").write_bytes(good[:len(good) // 2])
    assert "corrupt" in _err(lambda: AnomalyModel.load(tmp_path / "cut.state"))
    (tmp_path / "tiny.state").write_bytes(good[:20])
    assert "truncated" in _err(lambda: AnomalyModel.load(tmp_path / "tiny.state"))
    # another program's file
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04" + bytes(100))
    msg = _err(lambda: AnomalyModel.load(tmp_path / "x.npz"))
    assert "not an edge_runtime state file" in msg and "x.npz" in msg
    # another kind of state, another schema version
    save_state(tmp_path / "user.state", "personalize", 1, {}, {"w": np.zeros(3)})
    msg = _err(lambda: AnomalyModel.load(tmp_path / "user.state"))
    assert "'personalize' state, expected a 'anomaly' state" in msg
    meta, arrays = load_state(p, "anomaly", 1)
    save_state(tmp_path / "v9.state", "anomaly", 9, meta, arrays)
    msg = _err(lambda: AnomalyModel.load(tmp_path / "v9.state"))
    assert "schema version 9" in msg and "expected 1" in msg
    # consistent checksum but inconsistent content (hand-edited)
    save_state(tmp_path / "dim.state", "anomaly", 1, {**meta, "dim": 10}, arrays)
    assert "center" in _err(lambda: AnomalyModel.load(tmp_path / "dim.state"))
    save_state(tmp_path / "det.state", "anomaly", 1, {**meta, "detector": "svm"}, arrays)
    assert "'svm'" in _err(lambda: AnomalyModel.load(tmp_path / "det.state"))
    nan = dict(arrays)
    nan["det.means"] = nan["det.means"].copy()
    nan["det.means"][0, 0] = np.nan
    save_state(tmp_path / "nan.state", "anomaly", 1, meta, nan)
    assert "NaN" in _err(lambda: AnomalyModel.load(tmp_path / "nan.state"))
    assert "not found" in _err(lambda: AnomalyModel.load(tmp_path / "missing.state"))


_WRITER = r"""
import sys, numpy as np
from edge_runtime.state import save_state
path = sys.argv[1]
rng = np.random.default_rng(0)
i = 0
while True:
    i += 1
    save_state(path, "anomaly-crash-test", 1, {"i": i}, {"a": rng.standard_normal(200_000), "i": np.array([i])})
    if i == 1:
        print("saved", flush=True)
"""


def test_state_survives_the_writer_being_killed_mid_save(tmp_path):
    """SIGKILL a process that saves a 1.6 MB state in a loop, at random moments: the file
    always loads (it is the last complete save, never a mix), and no temp file is mistaken
    for it."""
    path = tmp_path / "s.state"
    rng = np.random.default_rng(1)
    seen = []
    for trial in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"saved"
        time.sleep(float(rng.uniform(0.0, 0.3)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        meta, arrays = load_state(path, "anomaly-crash-test", 1)
        assert arrays["a"].shape == (200_000,) and int(arrays["i"][0]) == meta["i"]
        seen.append(meta["i"])
    assert max(seen) > 1  # the kills landed while saves were being repeated


def test_hysteresis_needs_runs_to_start_and_end():
    h = Hysteresis(1.0, 0.5, on_frames=3, off_frames=2)
    seq = [0, 2, 2, 0, 2, 2, 2, 0.8, 0.4, 2, 0.4, 0.4, 0.4]
    out = [h.update(s) for s in seq]
    # a 2-frame spike is ignored; 3 in a row start (at frame 4); 0.8 (between thresholds) holds;
    # one quiet frame then a loud one resets the count; two quiet frames end it (at frame 10)
    assert out == [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, -1, 0]
    assert (h.start_frame, h.end_frame, h.peak) == (4, 10, 2)


def _pipe(node, block=256):
    return Pipeline([node], sample_rate=SR, block_size=block, name="t")


def test_node_learns_at_start_then_reports_an_episode(tmp_path):
    state = tmp_path / "pump.state"
    node = AnomalyDetect(state=str(state), learn="if_missing", learn_s=30.0, detector="kmeans")
    pipe = _pipe(node)
    pipe.prepare(2)
    normal = machine(31.0, seed=11)
    pipe.process_array(np.stack([normal, normal]))
    node.start_fit(wait=True)   # the fit runs on a thread; wait for it here instead of sleeping
    evs = pipe.drain_events()
    assert [e.event for e in evs] == ["learned"] and state.exists()
    test = machine(12.0, seed=12, clicks_at=(5.0, 8.0))
    pipe.reset()      # a new stream (another clip): feature history and time start again
    t0 = 0.0
    out = pipe.process_array(np.stack([test, test]))
    np.testing.assert_array_equal(out[0], test)   # audio passes through
    evs = [e for e in pipe.drain_events() if e.event.startswith("anomaly")]
    starts = [e for e in evs if e.event == "anomaly_start"]
    ends = [e for e in evs if e.event == "anomaly_end"]
    assert len(starts) >= 1 and len(ends) >= 1
    main_start = max(starts, key=lambda e: e.value)
    # detected within the clicks' first second (the 1 s feature context), ended after them
    assert 5.0 <= main_start.time_s - t0 <= 6.0, main_start
    assert any(8.0 <= e.time_s - t0 <= 9.5 and e.value > 2.0 for e in ends), ends
    # a new node with learn="if_missing" reuses the saved state instead of learning
    node2 = AnomalyDetect(state=str(state), learn="if_missing")
    _pipe(node2).prepare(1)
    assert not node2.learning and node2.model.detector == "kmeans"


@pytest.mark.parametrize("detector", DETECTORS)
def test_node_block_path_allocates_nothing_in_steady_state(models, tmp_path, detector):
    p = tmp_path / "m.state"
    models[detector].save(p)
    node = AnomalyDetect(state=str(p), score_interval_ms=100)
    pipe = _pipe(node, block=160)          # 10 ms blocks, 512-sample hops: blocks split hops
    pipe.prepare(1)
    pipe.input[...] = machine(0.01, seed=5)[None, :160]

    def step():
        pipe.process_block()
        pipe.events.clear()

    base_kept, base_peak = traced(lambda: None, 3000, warmup=300)
    kept, peak = traced(step, 3000, warmup=300)
    kept_more, _ = traced(step, 9000, warmup=300)
    grown, grown_more = kept - base_kept, kept_more - base_kept
    # NumPy keeps a few small cached objects (< 1 KB) the first time; nothing grows with the
    # number of blocks (3x the blocks retain no more), and the peak is a few slice views
    assert grown < 2048 and grown_more <= grown + 256, f"{grown} / {grown_more} bytes retained"
    assert peak - base_peak < 4096, f"peak {peak - base_peak} bytes during a block"
    assert node.hops > 90


# ---- CLI ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    d = tmp_path_factory.mktemp("anomaly_cli")
    sf.write(d / "normal.wav", machine(40.0, seed=21), SR)
    sf.write(d / "test.wav", machine(12.0, seed=22, clicks_at=(4.0, 7.0)), SR)
    return d


def test_cli_learn_then_monitor_prints_json_events(wavs, capsys):
    st = wavs / "m.state"
    assert main(["anomaly", "learn", "-i", str(wavs / "normal.wav"), "--minutes", "0.5", "-o", str(st),
                 "--detector", "iforest", "--json"]) == 0
    learned = json.loads(capsys.readouterr().out)
    assert learned["detector"] == "iforest" and 29.0 <= learned["audio_s"] <= 32.0
    assert main(["anomaly", "monitor", "--state", str(st), "-i", str(wavs / "test.wav")]) == 0
    lines = [json.loads(s) for s in capsys.readouterr().out.splitlines()]
    ev = [e for e in lines if e["event"] in ("anomaly_start", "anomaly_end")]
    assert [e["event"] for e in ev] == ["anomaly_start", "anomaly_end"] * (len(ev) // 2)
    episodes = [(a["time_s"], b["time_s"]) for a, b in zip(ev[::2], ev[1::2])]
    # the clicks (4-7 s) lie in one episode that starts by 5 s (1 s feature context) and ends after them
    assert any(3.0 <= t0 <= 5.0 and t1 >= 7.0 for t0, t1 in episodes), episodes
    assert main(["anomaly", "info", str(st), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["detector"] == "iforest"


@pytest.mark.parametrize("args, expect", [
    (["anomaly", "learn", "-i", "{d}/nope.wav", "-o", "{d}/o.state"], "nope.wav"),
    (["anomaly", "learn", "-i", "{d}/garbage.wav", "-o", "{d}/o.state"], "garbage.wav"),
    (["anomaly", "learn", "-i", "{d}/short.wav", "-o", "{d}/o.state"], "cannot learn from"),
    (["anomaly", "learn", "-i", "-", "--rate", "16000", "--channels", "1", "-o", "{d}/o.state"], "--minutes"),
    (["anomaly", "learn", "-i", "{d}/normal.wav", "--minutes", "-1", "-o", "{d}/o.state"], "--minutes"),
    (["anomaly", "monitor", "--state", "{d}/garbage.wav", "-i", "{d}/test.wav"], "not an edge_runtime state"),
    (["anomaly", "monitor", "--state", "{d}/missing.state", "-i", "{d}/test.wav"], "state file not found"),
    (["anomaly"], "needs an action"),
    (["anomaly", "learn", "-i", "{d}/normal.wav", "-o", "{d}/no/such/dir/o.state"], "does not exist"),
])
def test_cli_bad_input_is_one_error_line(wavs, capsys, args, expect):
    (wavs / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    sf.write(wavs / "short.wav", machine(2.0), SR)
    rc = main([a.format(d=wavs) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and expect in err[0], err
    assert not (wavs / "o.state").exists()


def test_pipeline_config_with_learn_period(tmp_path, wavs):
    from edge_runtime.config import load_pipeline_config

    cfg = tmp_path / "watch.toml"
    state = tmp_path / "watch.state"
    cfg.write_text(f'name = "watch"\nsample_rate = 16000\nblock_size = 160\nchannels = 1\n\n[[nodes]]\n'
                   f'type = "anomaly"\nstate = "{state}"\nlearn = "if_missing"\nlearn_s = 20\n'
                   f'detector = "gmm"\n')
    pipe = load_pipeline_config(str(cfg)).build()
    assert pipe.nodes[0].learning and len(pipe.nodes[0].learn_buf) == int(20 * 16000 / 512)
    cfg.write_text(cfg.read_text().replace('learn = "if_missing"', 'learn = "sometimes"'))
    from edge_runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="sometimes"):
        load_pipeline_config(str(cfg))
    assert not os.path.exists(state)


def test_int8_autoencoder_onnx_matches_the_float_network(tmp_path):
    """The hand-written INT8 QDQ ONNX (no onnx package at run time) computes the sklearn MLP:
    ONNX Runtime's output is within INT8 rounding of ``MLPRegressor.predict``."""
    from sklearn.neural_network import MLPRegressor

    from edge_runtime.anomaly.onnx_writer import dense_int8
    from edge_runtime.backends import load_session

    rng = np.random.default_rng(0)
    Z = (rng.standard_normal((600, 6)) @ rng.standard_normal((6, 24))).astype(np.float32)
    ae = MLPRegressor(hidden_layer_sizes=(16, 4, 16), max_iter=300, tol=1e-3, random_state=0).fit(Z, Z)
    path = tmp_path / "ae.onnx"
    path.write_bytes(dense_int8(ae.coefs_, ae.intercepts_, Z))
    sess = load_session(str(path), backend="onnxruntime")
    assert [s.name for s in sess.inputs] == ["x"] and [s.name for s in sess.outputs] == ["y"]
    y = sess.run({"x": Z[:100]})["y"]
    ref = ae.predict(Z[:100])
    # 8-bit activations and weights: errors of a few percent of the output's spread
    assert np.abs(y - ref).mean() < 0.03 * ref.std()
    assert np.abs(y - ref).max() < 0.25 * ref.std()
    # and it is a real reconstruction, not a constant
    assert np.corrcoef(y.ravel(), ref.ravel())[0, 1] > 0.99


class _BandEnergies:
    """A stand-in for the classifier's embedding: log energies of 8 FFT bands of 1024 samples."""

    sample_rate, window, hop, dim = SR, 1024, 512, 8

    def embed(self, frame, out):
        spec = np.abs(np.fft.rfft(frame)) ** 2
        out[:] = np.log(np.add.reduceat(spec, np.arange(0, 512, 64)) + 1e-9)


def test_an_embedding_plugs_in_through_the_extractor_interface(tmp_path):
    from edge_runtime.features import make_extractor, register_embedder

    register_embedder("test-bands", _BandEnergies)
    cfg = {"type": "embedding", "embedder": "test-bands"}
    fx = make_extractor(cfg)
    X = extract(fx, machine(20.0), SR)
    assert X.shape[1] == 8 and len(X) == int(20.0 * SR) // 512 - 1
    m = AnomalyModel.fit(X, "gmm", features=fx.config(), sample_rate=SR)
    p = tmp_path / "emb.state"
    m.save(p)
    m2 = AnomalyModel.load(p)             # rebuilds the extractor from the state's config
    assert m2.features["embedder"] == "test-bands"
    with pytest.raises(ValueError, match="not registered"):
        make_extractor({"type": "embedding", "embedder": "nope"})

"""The ``separate`` node and pipeline: stems sum back to the input, a drum loop goes to drums,
silence stays silence, streaming == offline, no allocation per block, bad input refused, and
``edge-runtime run separate --output-dir`` writes one file per stem."""
import json

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, node_growth, run_cli, write_wav
from edge_runtime.config import parse_pipeline
from edge_runtime.engine import Pipeline
from edge_runtime.nodes.separate import HOP, N_FFT, Separate

SR = 16000
STEMS = ("vocals", "drums", "bass", "other")
FP32 = ROOT / "models_int8" / "separate" / "separate_fp32.onnx"


def drum_loop(seconds=4.0, bpm=120, seed=0):
    """Kick (a 150 -> 50 Hz sweep), snare (a noise burst over a 190 Hz tone) and eighth hats
    (high-passed noise clicks): a drum machine's loop, no pitched instrument in it."""
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    x = np.zeros(n)
    beat = int(SR * 60 / bpm)
    t = np.arange(int(0.25 * SR)) / SR
    kick = np.sin(2 * np.pi * np.cumsum(50 + 100 * np.exp(-t * 30)) / SR) * np.exp(-t * 12)
    snare = (0.6 * rng.standard_normal(t.size) + 0.4 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t * 25)
    hat = sosfilt(butter(4, 6000, "highpass", fs=SR, output="sos"), rng.standard_normal(int(0.05 * SR)))
    hat *= np.exp(-np.arange(hat.size) / SR * 80)
    for k, b in enumerate(range(0, n - kick.size, beat)):
        x[b:b + kick.size] += (kick if k % 2 == 0 else 0.7 * snare)
        for h in (b, b + beat // 2):
            x[h:h + hat.size] += 0.3 * hat
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def tones(seconds=3.0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def pipe():
    p = Pipeline([Separate()], sample_rate=SR, block_size=256, name="separate")
    p.prepare(1)
    return p


def test_buses_are_the_model_stems_with_the_stft_latency(pipe):
    assert pipe.buses == STEMS
    assert pipe.latency_samples == N_FFT - HOP == 256
    assert set(pipe.bus_latency_samples.values()) == {256}
    assert 1000 * N_FFT / SR <= 50.0           # algorithmic latency: the window, 32 ms


def test_stems_sum_back_to_the_input(pipe, rng):
    # masks sum to 1 in every bin (a softmax over stems), the STFT reconstructs perfectly: the sum
    # of the stems is the input within float32 rounding (1e-5 of full scale)
    x = np.concatenate([drum_loop(2.0), tones(2.0) + 0.05 * rng.standard_normal(2 * SR).astype(np.float32)])
    pipe.reset()
    out = pipe.process_array_buses(x[None])
    total = sum(out[s][0] for s in STEMS)
    assert np.max(np.abs(total - x)) < 1e-5
    assert all(out[s].shape == (1, x.size) for s in STEMS)


def test_a_pure_drum_loop_goes_to_drums(pipe):
    x = drum_loop(4.0)
    pipe.reset()
    out = pipe.process_array_buses(x[None])
    from scipy.signal import butter, sosfilt

    e = {s: float(np.sum(out[s][0, SR:] ** 2)) for s in STEMS}     # after the first second (state warm)
    share = {s: v / sum(e.values()) for s, v in e.items()}
    # drums is the largest stem and nothing goes to vocals/other; the kick's 50-100 Hz body is shared
    # with bass (measured: 54 % drums, 46 % bass, docs/separate.md "where we lose"), so above 150 Hz
    # (snare, hats, the kick's click) drums must hold most of it (measured 80 %)
    assert share["drums"] > 0.5 and share["vocals"] + share["other"] < 0.05, share
    hp = butter(4, 150, "highpass", fs=SR, output="sos")
    e_hi = {s: float(np.sum(sosfilt(hp, out[s][0, SR:]) ** 2)) for s in STEMS}
    assert e_hi["drums"] / sum(e_hi.values()) > 0.7, e_hi


def test_silence_stays_silence(pipe):
    pipe.reset()
    out = pipe.process_array_buses(np.zeros((1, 2 * SR), np.float32))
    for s in STEMS:
        assert np.max(np.abs(out[s])) == 0.0


def _offline(x: np.ndarray) -> dict:
    """The separator computed offline: the whole signal's STFT at once, the model called over its
    frames with its state, masks applied, overlap-add inverse -- no streaming code involved."""
    import onnxruntime as ort

    from edge_runtime._spectral import make_window

    w = np.asarray(make_window("sqrt_hann", N_FFT), np.float32)
    xp = np.concatenate([np.zeros(N_FFT - HOP, np.float32), x])
    n = (len(xp) - N_FFT) // HOP + 1
    X = np.fft.rfft(xp[np.arange(N_FFT)[None] + HOP * np.arange(n)[:, None]] * w, axis=-1)
    s = ort.InferenceSession(str(FP32), providers=["CPUExecutionProvider"])
    state = np.zeros((1, s.get_inputs()[1].shape[-1]), np.float32)
    masks = []
    for k in range(n):
        p = (np.abs(X[k]) ** 2).astype(np.float32)[None]
        m, state = s.run(None, {"power": p, "state": state})
        masks.append(m[0])
    masks = np.stack(masks)                    # (frames, S, F)
    out = {}
    for i, name in enumerate(STEMS):
        fr = np.fft.irfft(masks[:, i] * X, n=N_FFT, axis=-1) * w
        y = np.zeros(HOP * (n - 1) + N_FFT)
        for k in range(n):
            y[k * HOP:k * HOP + N_FFT] += fr[k]
        out[name] = y[N_FFT - HOP:N_FFT - HOP + len(x) - (N_FFT - HOP)]
    return out


def test_streaming_equals_offline_and_any_block_size(rng):
    x = (drum_loop(2.0) + tones(2.0)) * 0.7
    node = Separate(variant="fp32")
    a = Pipeline([node], sample_rate=SR, block_size=256).prepare(1).process_array_buses(x[None])
    b = Pipeline([Separate(variant="fp32")], sample_rate=SR, block_size=1024).prepare(1).process_array_buses(x[None])
    off = _offline(x)
    for s in STEMS:
        np.testing.assert_allclose(a[s], b[s], atol=1e-6)
        # offline lacks only the last (n_fft - hop) samples (no flush); float32 vs float64 OLA
        m = off[s].size
        np.testing.assert_allclose(a[s][0, :m], off[s], atol=2e-5)


def test_steady_state_allocates_nothing():
    node = Separate()
    node.prepare(SR, 256, 2)
    x = np.stack([drum_loop(3.0), tones(3.0)])
    grown = node_growth(node, x, 256, passes=5)
    assert grown < 4096, grown


def test_bad_rate_block_and_model_are_refused(tmp_path):
    with pytest.raises(ValueError, match="separate runs at 16000 Hz, not 48000"):
        Separate().prepare(48000, 480, 1)
    with pytest.raises(ValueError, match="block_size a multiple of 256, got 160"):
        Separate().prepare(SR, 160, 1)
    with pytest.raises(ValueError, match="repeats a name"):
        Separate(stems="a,a")
    other = ROOT / "models_int8" / "bwe" / "bwe_fp32.onnx"
    with pytest.raises(Exception, match="mismatched model: separate expects inputs power, state"):
        Separate(model=str(other)).prepare(SR, 256, 1)


def test_karaoke_mix_of_buses_is_the_input_minus_vocals(rng):
    cfg = parse_pipeline({"sample_rate": SR, "block_size": 256, "nodes": [
        {"type": "separate"}, {"type": "mix", "buses": {"drums": 0.0, "bass": 0.0, "other": 0.0}}]}, "k.toml")
    p = cfg.build()
    x = (drum_loop(2.0) + tones(2.0)) * 0.7
    y = p.process_array(x[None])
    p.reset()
    voc = p.process_array_buses(x[None], ["vocals"])["vocals"]
    np.testing.assert_allclose(y, x[None] - voc, atol=2e-5)


def test_cli_writes_one_file_per_stem_with_frames_in(tmp_path):
    # 44.1 kHz stereo in: resampled to 16 kHz at the edge and back, every stem as long as the input
    n = 44100 * 2 + 123
    t = np.arange(n) / 44100
    x = np.stack([0.3 * np.sin(2 * np.pi * 110 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], axis=1)
    write_wav(tmp_path / "mix.wav", x, 44100)
    out = tmp_path / "stems"
    out.mkdir()
    r = run_cli("run", "separate", "-i", tmp_path / "mix.wav", "--output-dir", out, "--json")
    assert r.returncode == 0, r.stderr.decode()
    summary = json.loads(r.stdout)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.wav" for s in STEMS)
    total = 0
    for s in STEMS:
        y, sr = sf.read(out / f"{s}.wav", dtype="float32", always_2d=True)
        assert sr == 44100 and y.shape == x.shape, (s, y.shape)
        assert summary["bus_outputs"][s]["frames_out"] == n
        total = total + y
    # the stems sum back to the input (16-bit files, the 16 kHz band: tones well inside it)
    err = total[1000:-1000] - x[1000:-1000]
    assert 10 * np.log10(np.sum(err ** 2) / np.sum(x[1000:-1000] ** 2)) < -35


def test_cli_stems_picks_some_and_bad_choices_fail_cleanly(tmp_path):
    write_wav(tmp_path / "mix.wav", tones(1.0), SR)
    out = tmp_path / "stems"
    out.mkdir()
    r = run_cli("run", "separate", "-i", tmp_path / "mix.wav", "--output-dir", out, "--stems", "vocals,drums")
    assert r.returncode == 0, r.stderr.decode()
    assert sorted(p.name for p in out.iterdir()) == ["drums.wav", "vocals.wav"]
    r = run_cli("run", "separate", "-i", tmp_path / "mix.wav", "--output-dir", tmp_path / "s2", "--stems", "guitar")
    assert r.returncode == 2
    assert "'guitar' is not a bus of pipeline 'separate' (expected some of: vocals, drums, bass, other)" in r.stderr.decode()
    r = run_cli("run", "separate", "-i", tmp_path / "mix.wav", "--output-dir", tmp_path / "no" / "where")
    assert r.returncode != 0 and "not a directory" in r.stderr.decode() and "does not exist" in r.stderr.decode()
    assert not (tmp_path / "no").exists()
    # a new name in an existing directory is made, as the issue's `--output-dir stems/` example expects
    r = run_cli("run", "separate", "-i", tmp_path / "mix.wav", "--output-dir", f"{tmp_path / 'new'}/", "--stems", "bass")
    assert r.returncode == 0, r.stderr.decode()
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["bass.wav"]
    r = run_cli("run", "default", "-i", tmp_path / "mix.wav", "--output-dir", out)
    assert r.returncode == 2 and "writes no buses" in r.stderr.decode()
    # a corrupt input: one message naming the file, nothing written
    (tmp_path / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out3 = tmp_path / "s3"
    out3.mkdir()
    r = run_cli("run", "separate", "-i", tmp_path / "bad.wav", "--output-dir", out3)
    assert r.returncode != 0 and "bad.wav" in r.stderr.decode()
    assert list(out3.iterdir()) == []


def test_nonfinite_input_is_sanitized(pipe):
    x = tones(1.0)
    x[1000:1010] = np.nan
    x[5000] = np.inf
    pipe.reset()
    pipe.reset_stats()
    out = pipe.process_array_buses(x[None])
    assert all(np.all(np.isfinite(out[s])) for s in STEMS)
    assert pipe.stats()["nonfinite_in"] == 11


def test_export_step_model_matches_the_sequence_model():
    torch = pytest.importorskip("torch")
    import sys

    sys.path.insert(0, str(ROOT / "firmware_tools" / "train"))
    from separate_model import Separator, StepModel

    torch.manual_seed(0)
    m = Separator(n_stems=4, hidden=32).eval()
    p = torch.rand(1, 20, 257) * 10
    with torch.no_grad():
        seq, _ = m(p)
        step = StepModel(m)
        state = torch.zeros(1, 64)
        for t in range(20):
            mk, state = step(p[:, t], state)
            torch.testing.assert_close(mk, seq[:, t], atol=1e-5, rtol=1e-4)

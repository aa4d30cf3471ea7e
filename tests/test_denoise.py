"""The shipped denoiser: a quality guard on fixed clips from the TEST split (never trained on),
streaming == whole file, silence stays silence, clean speech is not damaged, tamper refusal."""
import json
import os
import shutil
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, write_wav
from edge_runtime.config import load_pipeline
from edge_runtime.errors import ModelError

FIX = ROOT / "tests" / "fixtures" / "audio"
SNRS = (0, 5, 10)
# Margins the shipped INT8 model must clear on these clips (measured values in the README and
# the manifest are well above them; see firmware_tools/eval/eval_denoise.py for the full table).
MIN_SISDR_GAIN_DB = 4.0      # mean over the three clips
MIN_SISDR_GAIN_EACH_DB = 1.5
MIN_PESQ_GAIN = 0.25         # mean PESQ-WB improvement
CLEAN_MIN_SISDR_DB = 14.0    # a clean input comes out at least this close to itself

pytestmark = pytest.mark.skipif(not (ROOT / "models_int8" / "denoise").is_dir(), reason="no denoise model shipped")


def si_sdr(ref, est):
    ref = ref.astype(np.float64) - ref.mean()
    est = est.astype(np.float64) - est.mean()
    a = np.dot(est, ref) / np.dot(ref, ref)
    t = a * ref
    return 10 * np.log10(np.sum(t ** 2) / np.sum((est - t) ** 2))


def load(name):
    x, sr = sf.read(FIX / name, dtype="float32")
    assert sr == 16000
    return x


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("denoise")


@pytest.fixture(scope="module")
def results(pipe):
    out = {}
    for snr in SNRS:
        noisy, clean = load(f"denoise_{snr}db_noisy.flac"), load(f"denoise_{snr}db_clean.flac")
        pipe.reset()
        out[snr] = (noisy, clean, pipe.process_array(noisy[None])[0])
    return out


def test_int8_model_raises_si_sdr(results):
    gains = [si_sdr(c, y) - si_sdr(c, n) for n, c, y in results.values()]
    assert min(gains) >= MIN_SISDR_GAIN_EACH_DB, gains
    assert np.mean(gains) >= MIN_SISDR_GAIN_DB, gains


def test_int8_model_raises_pesq(results):
    pesq = pytest.importorskip("pesq").pesq
    gains = [pesq(16000, c, y, "wb") - pesq(16000, c, n, "wb") for n, c, y in results.values()]
    assert np.mean(gains) >= MIN_PESQ_GAIN, gains


def test_clean_speech_is_not_damaged(pipe):
    clean = load("denoise_10db_clean.flac")
    pipe.reset()
    y = pipe.process_array(clean[None])[0]
    assert si_sdr(clean, y) >= CLEAN_MIN_SISDR_DB


def test_silence_stays_silence(pipe):
    pipe.reset()
    y = pipe.process_array(np.zeros((1, 16000), np.float32))
    assert np.max(np.abs(y)) == 0.0


def test_noise_alone_is_turned_down(pipe, rng):
    pipe.reset()
    x = (rng.standard_normal(32000) * 0.03).astype(np.float32)
    y = pipe.process_array(x[None])[0]
    assert 20 * np.log10(np.std(y[8000:]) / np.std(x[8000:])) < -10


def test_streaming_file_equals_whole_array(cli, tmp_path, pipe):
    noisy = load("denoise_5db_noisy.flac")
    r = cli("run", "denoise", "-i", FIX / "denoise_5db_noisy.flac", "-o", tmp_path / "out.wav",
            "--subtype", "FLOAT", "--json")
    assert r.returncode == 0, r.stderr.decode()
    streamed, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    pipe.reset()
    whole = pipe.process_array(noisy[None])[0]
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_any_rate_and_channels(cli, tmp_path):
    # stereo 44.1 kHz in: resampled to 16 kHz at the edge, channels denoised independently
    import soxr

    noisy = load("denoise_5db_noisy.flac")
    x = soxr.resample(noisy, 16000, 44100).astype(np.float32)
    write_wav(tmp_path / "st.wav", np.stack([x, 0.5 * x], axis=1), 44100)
    r = cli("run", "denoise", "-i", tmp_path / "st.wav", "-o", tmp_path / "out.wav", "--json")
    assert r.returncode == 0, r.stderr.decode()
    s = json.loads(r.stdout)
    assert s["resampled"] and s["frames_out"] == s["frames_in"] == len(x)
    y, sr = sf.read(tmp_path / "out.wav", dtype="float32")
    assert sr == 44100 and y.shape == (len(x), 2)


def test_48k_pipeline_improves_too(results):
    import soxr

    pipe48 = load_pipeline("denoise48k")
    gains = []
    for noisy, clean, _ in results.values():
        n48 = soxr.resample(noisy, 16000, 48000).astype(np.float32)
        c48 = soxr.resample(clean, 16000, 48000).astype(np.float32)
        pipe48.reset()
        y = pipe48.process_array(n48[None])[0]
        gains.append(si_sdr(c48, y) - si_sdr(c48, n48))
    assert np.mean(gains) >= MIN_SISDR_GAIN_DB / 2, gains


def test_steady_state_keeps_no_memory(pipe):
    pipe.prepare(1)
    pipe.input[...] = np.random.default_rng(0).standard_normal((1, 160)).astype(np.float32) * 0.1
    for _ in range(200):
        pipe.process_block()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    for _ in range(3000):
        pipe.process_block()
    after, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert after - before < 2048, after - before


def test_tampered_model_is_refused(tmp_path, monkeypatch):
    src = ROOT / "models_int8"
    dst = tmp_path / "models"
    shutil.copytree(src, dst)
    target = dst / "denoise" / "denoise_int8.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    monkeypatch.setenv("EDGE_RUNTIME_MODELS", str(dst))
    from edge_runtime.backends import clear_cache
    from edge_runtime.models.manifest import clear_verify_cache

    clear_cache()
    clear_verify_cache()
    with pytest.raises(ModelError, match="denoise_int8.onnx"):
        load_pipeline("denoise")

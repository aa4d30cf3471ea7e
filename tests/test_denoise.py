"""The shipped denoiser: a quality guard on fixed clips from the TEST split (never trained on),
streaming == whole file, silence stays silence, clean speech is not damaged, tamper refusal.

The nine clips (firmware_tools/data/make_denoise_fixtures.py: a seeded random sample of the
test split at 0, 5 and 10 dB, three each, a random 3 s window with speech at least half the
time; denoise_fixtures.json says which clip) are Fish Fillets Czech dialog, KTuberling words
and espeak voices in babble, music, fan, keystroke and effect noise (round 1's test split).
The shipped model raises SI-SDR on just over half of them (median change +0.19 dB) and PESQ-WB
on average (+0.040), but three lose badly and pull the mean SI-SDR change to -3.7 dB: a scream
("aaa") under 0 dB babble (-25 dB: the model keeps the babble's speech and removes the scream),
and dialog under a recorded laugh and a shout. The headline evaluation is the real-speech split
(firmware_tools/data/build_denoise_realtest.py, docs/denoise.md). A synthetic pink-noise guard
on the same clean clips checks issue 20's stationary-noise target. The guards pin what was
measured here, with margins."""
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
CLIPS = [(snr, k) for snr in (0, 5, 10) for k in (0, 1, 2)]
# What the shipped INT8 variants measured on these clips (x86-64; load_pipeline runs the device
# default: tflite/int8-dynamic with LiteRT, else onnx/int8-dynamic; int8-static and fp32 ONNX
# measured within 0.1 dB and 0.011 PESQ of them), and the margins:
# Round 2 model (issue 20, run r2b; tflite/int8-dynamic): PESQ +0.040, median SI-SDR +0.19 dB, mean
# -3.73 dB, clean 11.14 dB (round 1's model: +0.048, +0.71, -2.60, 11.1: this model trades the scream /
# laugh / babble clips of this old split for stationary noise, see docs/denoise.md).
MIN_PESQ_GAIN = 0.025           # mean PESQ-WB gain over the nine (bypass: 0)
MIN_MEDIAN_SISDR_GAIN_DB = 0.1  # median SI-SDR change (bypass: 0)
MIN_SISDR_CHANGE_DB = -4.5      # mean SI-SDR change (a model that mutes speech: < -15)
CLEAN_MIN_SISDR_DB = 9.0        # median over the nine clean inputs of output vs input

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
    for snr, k in CLIPS:
        noisy, clean = load(f"denoise_{snr}db_{k}_noisy.flac"), load(f"denoise_{snr}db_{k}_clean.flac")
        pipe.reset()
        out[snr, k] = (noisy, clean, pipe.process_array(noisy[None])[0])
    return out


def test_int8_model_raises_si_sdr_on_most_clips(results):
    changes = [si_sdr(c, y) - si_sdr(c, n) for n, c, y in results.values()]
    assert np.median(changes) >= MIN_MEDIAN_SISDR_GAIN_DB, changes
    assert np.mean(changes) >= MIN_SISDR_CHANGE_DB, changes


def test_int8_model_raises_pesq(results):
    pesq = pytest.importorskip("pesq").pesq
    gains = [pesq(16000, c, y, "wb") - pesq(16000, c, n, "wb") for n, c, y in results.values()]
    assert np.mean(gains) >= MIN_PESQ_GAIN, gains


def test_clean_speech_is_not_damaged(pipe):
    kept = []
    for snr, k in CLIPS:
        clean = load(f"denoise_{snr}db_{k}_clean.flac")
        pipe.reset()
        kept.append(si_sdr(clean, pipe.process_array(clean[None])[0]))
    assert np.median(kept) >= CLEAN_MIN_SISDR_DB, kept


def test_silence_stays_silence(pipe):
    pipe.reset()
    y = pipe.process_array(np.zeros((1, 16000), np.float32))
    assert np.max(np.abs(y)) == 0.0


def pink(n, seed=0):
    rng = np.random.default_rng(seed)
    f = np.fft.rfftfreq(n, 1 / 16000)
    return np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) / np.sqrt(np.maximum(f, 20.0)), n).astype(np.float32)


def frame_power(x):
    return (x[: len(x) // 320 * 320].reshape(-1, 320).astype(np.float64) ** 2).mean(1)


# Issue 20's pink-noise target: pink noise at 10 dB SNR comes out >= 10 dB quieter in the speech
# pauses (frames 40 dB under the clip's loudest), median over the guard clips, while clean speech
# in the same clips loses at most 3 dB (median level change of its speech frames). Round 1's model
# measured a median 7.7 dB (4.2..19.1) in the pauses and -1.0 dB on speech (not met); the shipped
# round-2 model (run r2b of docs/denoise.md) 39.4 dB (12.4..82.6) and -1.1 dB.
PINK_PAUSE_MIN_DB = 10.0
PINK_SPEECH_MAX_LOSS_DB = 3.0


def test_pink_noise_at_10db_is_removed_in_pauses_and_speech_is_kept(pipe):
    cut, kept = [], []
    for snr, k in CLIPS:
        clean = load(f"denoise_{snr}db_{k}_clean.flac")
        noise = pink(len(clean), seed=snr * 3 + k)
        noise *= np.sqrt(np.sum(clean.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2) / 10.0)
        pipe.reset()
        y = pipe.process_array((clean + noise)[None])[0]
        pipe.reset()
        yc = pipe.process_array(clean[None])[0]
        ec = frame_power(clean)
        pause, speech = ec < ec.max() * 1e-4, ec > ec.max() * 1e-2
        cut.append(10 * np.log10(frame_power(noise)[pause].mean() / frame_power(y)[pause].mean()))
        kept.append(10 * np.log10(frame_power(yc)[speech].mean() / ec[speech].mean()))
    assert np.median(kept) >= -PINK_SPEECH_MAX_LOSS_DB, kept
    assert np.median(cut) >= PINK_PAUSE_MIN_DB, cut


def test_noise_alone_is_turned_down(pipe, rng):
    pipe.reset()
    x = (rng.standard_normal(32000) * 0.03).astype(np.float32)
    y = pipe.process_array(x[None])[0]
    assert 20 * np.log10(np.std(y[8000:]) / np.std(x[8000:])) < -10


def test_streaming_file_equals_whole_array(cli, tmp_path, pipe):
    noisy = load("denoise_5db_0_noisy.flac")
    r = cli("run", "denoise", "-i", FIX / "denoise_5db_0_noisy.flac", "-o", tmp_path / "out.wav",
            "--subtype", "FLOAT", "--json")
    assert r.returncode == 0, r.stderr.decode()
    streamed, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    pipe.reset()
    whole = pipe.process_array(noisy[None])[0]
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_any_rate_and_channels(cli, tmp_path):
    # stereo 44.1 kHz in: resampled to 16 kHz at the edge, channels denoised independently
    import soxr

    noisy = load("denoise_5db_0_noisy.flac")
    x = soxr.resample(noisy, 16000, 44100).astype(np.float32)
    write_wav(tmp_path / "st.wav", np.stack([x, 0.5 * x], axis=1), 44100)
    r = cli("run", "denoise", "-i", tmp_path / "st.wav", "-o", tmp_path / "out.wav", "--json")
    assert r.returncode == 0, r.stderr.decode()
    s = json.loads(r.stdout)
    assert s["resampled"] and s["frames_out"] == s["frames_in"] == len(x)
    y, sr = sf.read(tmp_path / "out.wav", dtype="float32")
    assert sr == 44100 and y.shape == (len(x), 2)


def test_48k_pipeline_does_what_the_16k_one_does(results):
    import soxr

    pipe48 = load_pipeline("denoise48k")
    d16, d48 = [], []
    for noisy, clean, y16 in results.values():
        n48 = soxr.resample(noisy, 16000, 48000).astype(np.float32)
        c48 = soxr.resample(clean, 16000, 48000).astype(np.float32)
        pipe48.reset()
        y = pipe48.process_array(n48[None])[0]
        d48.append(si_sdr(c48, y) - si_sdr(c48, n48))
        d16.append(si_sdr(clean, y16) - si_sdr(clean, noisy))
    # the same model on a 960/480 STFT with the same 50 Hz bins: per clip the same change
    # (median over the clips; the scream clip, -21 dB at 16 kHz, swings by several dB)
    assert abs(np.median(np.subtract(d48, d16))) < 1.0, (d48, d16)


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
    monkeypatch.setenv("EDGE_RUNTIME_MODELS", str(dst))
    from edge_runtime.backends import clear_cache
    from edge_runtime.models import default_registry
    from edge_runtime.models.manifest import clear_verify_cache
    from edge_runtime.models.select import resolve_variants

    target = resolve_variants(default_registry()["denoise"])[0].variant.path   # the file "auto" runs
    assert dst in target.parents
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    clear_cache()
    clear_verify_cache()
    with pytest.raises(ModelError, match=target.name):
        load_pipeline("denoise")

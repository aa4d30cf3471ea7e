"""The command line as a user meets it: results, summaries, and bad input refused cleanly."""
import json
import os

import numpy as np
import pytest
import soundfile as sf

from conftest import write_wav


def _files(d):
    return sorted(p.name for p in d.iterdir())


def test_run_default_pipeline_on_a_file(cli, tmp_path, rng):
    x = (rng.standard_normal((48000, 2)) * 0.2).astype(np.float32)
    write_wav(tmp_path / "in.wav", x, 48000)
    r = cli("run", "default", "--input", tmp_path / "in.wav", "--output", tmp_path / "out.wav", "--json")
    assert r.returncode == 0, r.stderr.decode()
    s = json.loads(r.stdout)
    assert s["frames_in"] == s["frames_out"] == 48000
    assert s["channels"] == 2 and not s["resampled"]
    assert s["blocks"] >= 100 and s["deadline_misses"] >= 0 and s["realtime_factor"] > 0
    y, sr = sf.read(tmp_path / "out.wav", dtype="float32")
    assert sr == 48000 and y.shape == x.shape
    assert np.max(np.abs(y)) <= 10 ** (-1 / 20) + 1e-4  # the limiter's ceiling (PCM_16 output)
    assert _files(tmp_path) == ["in.wav", "out.wav"]  # no temp files left


def test_input_at_another_rate_is_resampled_at_the_edge(cli, tmp_path):
    # gain + look-ahead limiter (no phase change): output must line up with the input sample
    # for sample after 44.1 -> 48 -> 44.1 kHz and the 72-sample look-ahead are compensated
    cfg = tmp_path / "gain.toml"
    cfg.write_text('sample_rate = 48000\nblock_size = 480\n[[nodes]]\ntype = "gain"\ngain_db = 3.0\n'
                   '[[nodes]]\ntype = "limiter"\n')
    sr = 44100
    t = np.arange(sr * 2) / sr
    x = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    write_wav(tmp_path / "in.wav", x, sr)
    r = cli("run", cfg, "-i", tmp_path / "in.wav", "-o", tmp_path / "out.flac", "--json",
            "--subtype", "PCM_24")
    assert r.returncode == 0, r.stderr.decode()
    s = json.loads(r.stdout)
    assert s["resampled"] and s["input_sample_rate"] == sr and s["pipeline_sample_rate"] == 48000
    y, sr_out = sf.read(tmp_path / "out.flac", dtype="float32")
    assert sr_out == sr and y.shape[0] == x.shape[0]
    mid = slice(sr // 2, sr + sr // 2)
    gain = np.sqrt(np.mean(y[mid] ** 2) / np.mean(x[mid] ** 2))
    assert 20 * np.log10(gain) == pytest.approx(3.0, abs=0.05)
    err = y[mid] - x[mid] * 10 ** (3 / 20)
    assert np.max(np.abs(err)) < 1e-3  # aligned to well under a sample at 1 kHz


def test_default_pipeline_on_another_rate(cli, tmp_path):
    sr = 22050
    x = (0.3 * np.sin(2 * np.pi * 500 * np.arange(sr) / sr)).astype(np.float32)
    write_wav(tmp_path / "in.wav", np.stack([x, -x], axis=1), sr)
    r = cli("run", "default", "-i", tmp_path / "in.wav", "-o", tmp_path / "out.wav", "--json")
    assert r.returncode == 0, r.stderr.decode()
    y, sr_out = sf.read(tmp_path / "out.wav", dtype="float32")
    assert sr_out == sr and y.shape == (sr, 2)


def test_nan_and_inf_are_sanitized_and_counted(cli, tmp_path):
    x = np.full((4800, 1), 0.1, dtype=np.float32)
    x[100, 0] = np.nan
    x[200, 0] = np.inf
    x[300, 0] = -np.inf
    write_wav(tmp_path / "in.wav", x, 48000, subtype="FLOAT")
    r = cli("run", "default", "-i", tmp_path / "in.wav", "-o", tmp_path / "out.wav", "--json",
            "--subtype", "FLOAT")
    assert r.returncode == 0, r.stderr.decode()
    s = json.loads(r.stdout)
    assert s["nonfinite_in"] == 3 and s["nonfinite_out"] == 0
    y, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    assert np.isfinite(y).all()


def _assert_refused(r, *needles):
    err = r.stderr.decode()
    assert r.returncode == 2, (r.returncode, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for n in needles:
        assert str(n) in err, (n, err)


def test_corrupt_input(cli, tmp_path, rng):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + rng.bytes(2000))
    r = cli("run", "default", "-i", bad, "-o", tmp_path / "out.wav")
    _assert_refused(r, bad)
    assert _files(tmp_path) == ["bad.wav"]


def test_truncated_input(cli, tmp_path, rng):
    p = tmp_path / "cut.wav"
    write_wav(p, (rng.standard_normal(48000) * 0.1).astype(np.float32), 48000, subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    r = cli("run", "default", "-i", p, "-o", tmp_path / "out.wav")
    _assert_refused(r, p, "truncated")
    assert _files(tmp_path) == ["cut.wav"]


def test_missing_and_unsupported_input(cli, tmp_path):
    r = cli("run", "default", "-i", tmp_path / "nope.wav", "-o", tmp_path / "out.wav")
    _assert_refused(r, "nope.wav")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello, not audio\n" * 50)
    r = cli("run", "default", "-i", txt, "-o", tmp_path / "out.wav")
    _assert_refused(r, txt)
    assert not (tmp_path / "out.wav").exists()


def test_unsupported_output_format(cli, tmp_path):
    write_wav(tmp_path / "in.wav", np.zeros(4800, np.float32), 48000)
    r = cli("run", "default", "-i", tmp_path / "in.wav", "-o", tmp_path / "out.xyz")
    _assert_refused(r, "out.xyz")
    assert _files(tmp_path) == ["in.wav"]


def test_wrong_channel_count_for_the_pipeline(cli, tmp_path):
    cfg = tmp_path / "mono.toml"
    cfg.write_text('sample_rate = 16000\nblock_size = 160\nchannels = 1\n[[nodes]]\ntype = "gain"\n')
    write_wav(tmp_path / "st.wav", np.zeros((1600, 2), np.float32), 16000)
    r = cli("run", cfg, "-i", tmp_path / "st.wav", "-o", tmp_path / "out.wav")
    _assert_refused(r, "st.wav", "2 channel", "expects 1")
    assert not (tmp_path / "out.wav").exists()


def test_unknown_pipeline_and_malformed_toml(cli, tmp_path):
    write_wav(tmp_path / "in.wav", np.zeros(1600, np.float32), 16000)
    r = cli("run", "no-such-pipeline", "-i", tmp_path / "in.wav", "-o", tmp_path / "out.wav")
    _assert_refused(r, "no-such-pipeline", "default")
    bad = tmp_path / "bad.toml"
    bad.write_text("sample_rate = 16000\nblock_size = \n")
    r = cli("run", bad, "-i", tmp_path / "in.wav", "-o", tmp_path / "out.wav")
    _assert_refused(r, bad, "TOML")
    assert not (tmp_path / "out.wav").exists()


def test_existing_output_survives_a_failed_run(cli, tmp_path, rng):
    (tmp_path / "out.wav").write_bytes(b"previous result")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(rng.bytes(500))
    r = cli("run", "default", "-i", bad, "-o", tmp_path / "out.wav")
    assert r.returncode == 2
    assert (tmp_path / "out.wav").read_bytes() == b"previous result"


def test_raw_pcm_through_stdin_and_stdout(cli, tmp_path):
    t = np.arange(16000) / 16000
    x = (0.25 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    r = cli("run", "speech16k", "-i", "-", "-o", "-", "--rate", "16000", "--channels", "1",
            "--raw-format", "s16le", input_bytes=x.tobytes())
    assert r.returncode == 0, r.stderr.decode()
    y = np.frombuffer(r.stdout, dtype="<i2")
    assert y.size == x.size


def test_live_input_runs_with_the_collector_frozen_and_a_file_input_does_not(cli, tmp_path):
    # a live source (stdin here, alsa: on a device) gets serve's GcGuard: one settle before the
    # audio, the switch interval shortened, the collections counted in the summary
    x = (0.25 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) * 32767).astype("<i2")
    r = cli("run", "speech16k", "-i", "-", "-o", tmp_path / "live.wav", "--rate", "16000", "--channels", "1",
            "--json", input_bytes=x.tobytes())
    assert r.returncode == 0, r.stderr.decode()
    g = json.loads(r.stdout)["python_gc"]
    assert g["freezes"] == 1 and g["frozen_objects"] > 1000 and g["switch_interval_ms"] == 0.5
    write_wav(tmp_path / "in.wav", x.astype(np.float32) / 32768, 16000)
    r = cli("run", "speech16k", "-i", tmp_path / "in.wav", "-o", tmp_path / "out.wav", "--json")
    assert r.returncode == 0, r.stderr.decode()
    assert "python_gc" not in json.loads(r.stdout)


def test_events_to_json_lines(cli, tmp_path):
    write_wav(tmp_path / "in.wav", np.full(32000, 0.25, np.float32), 16000)
    r = cli("run", "speech16k", "-i", tmp_path / "in.wav", "-o", tmp_path / "out.wav",
            "--events", tmp_path / "ev.jsonl", "--json")
    assert r.returncode == 0, r.stderr.decode()
    lines = [json.loads(line) for line in (tmp_path / "ev.jsonl").read_text().splitlines()]
    assert lines and {"time_s", "node", "event", "value"} <= set(lines[0])
    assert json.loads(r.stdout)["events"] == len(lines)


def test_info_and_pipelines(cli):
    r = cli("info", "--json")
    assert r.returncode == 0
    info = json.loads(r.stdout)
    assert info["cpu"]["cores"] >= 1 and "onnxruntime" in info["backends"]
    r = cli("pipelines", "--json")
    names = [p["name"] for p in json.loads(r.stdout)]
    assert "default" in names


def test_demo_runs_with_no_arguments(cli, tmp_path):
    r = cli("demo", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr.decode()
    s = json.loads(r.stdout)
    out = tmp_path / "edge_runtime_demo" / "demo_output.wav"
    assert out.exists() and s["frames_in"] == s["frames_out"]
    e = s["effects"]
    assert e["peak_in_dbfs"] > 0 and e["peak_out_dbfs"] <= -0.99   # limiter
    assert e["rumble_35hz_change_db"] < -6                           # high-pass
    assert abs(e["melody_200_2k_change_db"] - 3.0) < 1.0             # +3 dB gain passes
    assert sorted(os.listdir(tmp_path / "edge_runtime_demo")) == [
        "demo_input.wav", "demo_output.wav", "demo_speech_denoised.wav"]
    # the speech stage: the shipped denoiser on the bundled test-split clip (measured +4.1 dB in the evaluation)
    sp = s["speech"]
    assert sp["frames_in"] == sp["frames_out"] and sp["deadline_misses"] >= 0
    assert sp["effects"]["si_sdr_out_db"] - sp["effects"]["si_sdr_in_db"] > 2.0, sp["effects"]
    assert sp["effects"]["noise_in_pauses_change_db"] < -6.0, sp["effects"]

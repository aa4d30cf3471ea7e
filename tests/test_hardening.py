"""Faults and inputs a fielded device meets (issue 30): signals during a run, temporary files of
killed processes, hostile headers and samples, outputs that would overwrite inputs, configs that
nest or range too far, and file systems that refuse to write."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, run_cli


def _env():
    e = dict(os.environ)
    e.pop("EDGE_RUNTIME_PIPELINES", None)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    return e


@pytest.mark.parametrize("sig,rc", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_run_stopped_by_a_signal_leaves_no_temporary_or_partial_output(tmp_path, sig, rc):
    out = tmp_path / "out.wav"
    p = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "default", "-i", "-", "-o", str(out),
                          "--rate", "48000", "--channels", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_env(), cwd=tmp_path)
    try:
        p.stdin.write(np.zeros(48000, "<i2").tobytes())     # 1 s, then the input stays open
        p.stdin.flush()
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".out.wav.tmp-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(tmp_path.glob(".out.wav.tmp-*")), "the run never opened its output"
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == rc, err.decode()
    assert f"stopped by {signal.Signals(sig).name}" in err.decode() and "Traceback" not in err.decode()
    assert sorted(x.name for x in tmp_path.iterdir()) == []


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporary_files_of_dead_processes_are_swept(tmp_path, rng=np.random.default_rng(0)):
    import soundfile as sf

    sf.write(tmp_path / "in.wav", (rng.standard_normal(4800) * 0.1).astype(np.float32), 48000)
    dead = _dead_pid()
    stale = [tmp_path / f".out.wav.tmp-{dead}-0123abcd", tmp_path / f".out-20260101T000000Z-00002.wav.tmp-{dead}-89abcdef"]
    live = tmp_path / f".out.wav.tmp-{os.getpid()}-fedcba98"          # this test's own process: alive
    other = tmp_path / f".notes.txt.tmp-{dead}-00000000"              # another file's: not ours to judge
    for f in (*stale, live, other):
        f.write_bytes(b"x" * 100)
    r = run_cli("run", "default", "-i", tmp_path / "in.wav", "-o", tmp_path / "out.wav")
    assert r.returncode == 0, r.stderr.decode()
    assert not stale[0].exists() and live.exists() and other.exists()
    from edge_runtime.atomic import sweep_stale

    assert sweep_stale(str(tmp_path / "out.wav"), prefix="out-", suffix=".wav") == 1     # the segment's
    assert not stale[1].exists() and live.exists()


def _wav_with_rate(tmp_path, rate: int):
    import struct

    import soundfile as sf

    base = tmp_path / "base.wav"
    sf.write(base, np.zeros(48000, np.float32), 16000, subtype="PCM_16")
    b = bytearray(base.read_bytes())
    b[24:28] = struct.pack("<I", rate)
    b[28:32] = struct.pack("<I", (rate * 2) & 0xFFFFFFFF)
    p = tmp_path / f"r{rate}.wav"
    p.write_bytes(bytes(b))
    return p


@pytest.mark.parametrize("rate", [1, 10, 3999, 1_000_000_000])
def test_sample_rate_bomb_headers_are_refused(tmp_path, rate):
    """A 96 KB WAV saying 1 Hz took 89 s and 290 MB to resample (1e9 Hz: 400 MB); now refused."""
    p = _wav_with_rate(tmp_path, rate)
    r = run_cli("run", "denoise", "-i", p, "-o", tmp_path / "o.wav")
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 2 and err[-1] == f"error: {p}: header says sample rate {rate} Hz; expected 4000..768000 Hz"
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("rate", ["1", "0", "769000"])
def test_raw_rate_outside_the_range_is_refused(tmp_path, rate):
    (tmp_path / "in.raw").write_bytes(np.zeros(1600, "<i2").tobytes())
    r = run_cli("run", "default", "-i", tmp_path / "in.raw", "-o", tmp_path / "o.wav", "--rate", rate, "--channels", "1")
    assert r.returncode == 2 and "expected 4000..768000 Hz" in r.stderr.decode(), r.stderr.decode()
    assert not (tmp_path / "o.wav").exists()


@pytest.mark.parametrize("pipeline", ["denoise", "default"])
def test_huge_finite_samples_are_treated_like_non_finite_ones(tmp_path, pipeline):
    """+-1e30 in a float WAV: the resampled denoise path wrote 122 ms of full-scale output and a
    float output reached 4.6e25; now they are replaced by silence and counted like NaN/Inf."""
    import json

    import soundfile as sf

    rng = np.random.default_rng(3)
    x = (rng.standard_normal(48000) * 0.05).astype(np.float32)
    x[[1000, 1001, 20000]] = [1e30, -1e30, 3e5]
    sf.write(tmp_path / "in.wav", x, 48000, subtype="FLOAT")
    r = run_cli("run", pipeline, "-i", tmp_path / "in.wav", "-o", tmp_path / "out.wav", "--json",
                "--subtype", "FLOAT")
    assert r.returncode == 0, r.stderr.decode()
    s = json.loads(r.stdout)
    assert s["nonfinite_in"] >= 3, s
    y, _ = sf.read(tmp_path / "out.wav", dtype="float32")
    assert np.isfinite(y).all() and np.abs(y).max() < 1.0, np.abs(y).max()


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_truncated_ogg_is_reported(tmp_path, subtype):
    """A cut Ogg file was read as a shorter valid one (51,904 of 144,000 frames, no word)."""
    import soundfile as sf

    if not sf.check_format("OGG", subtype):
        pytest.skip(f"libsndfile here cannot write OGG/{subtype}")
    x = (np.random.default_rng(1).standard_normal(144000) * 0.1).astype(np.float32)
    full = tmp_path / "full.ogg"
    sf.write(full, x, 48000, format="OGG", subtype=subtype)
    data = full.read_bytes()
    page_cut = data.rfind(b"OggS")                    # ends on a page boundary, just without the EOS page
    for name, blob in (("cut.ogg", data[: len(data) * 4 // 10]), ("page.ogg", data[:page_cut])):
        (tmp_path / name).write_bytes(blob)
        r = run_cli("run", "default", "-i", tmp_path / name, "-o", tmp_path / "o.wav")
        err = r.stderr.decode()
        assert r.returncode == 2 and f"{tmp_path / name}: truncated: the Ogg stream has no end-of-stream page" in err, err
        assert not (tmp_path / "o.wav").exists()
    r = run_cli("run", "default", "-i", full, "-o", tmp_path / "o.wav")
    assert r.returncode == 0, r.stderr.decode()
    from edge_runtime.io.files import FileSource

    src = FileSource(tmp_path / "cut.ogg", allow_truncated=True)
    assert src.truncated and 0 < src.frames < 144000
    src.close()


def test_wav_from_a_pipe_or_fifo_is_read_whole(tmp_path):
    """A WAV on /dev/stdin or a FIFO was refused as 'truncated' (its header was read twice)."""
    import json
    import struct
    import threading

    import soundfile as sf

    x = (np.random.default_rng(2).standard_normal(48000) * 0.1).astype(np.float32)
    sf.write(tmp_path / "s.wav", x, 48000, subtype="PCM_16")
    data = (tmp_path / "s.wav").read_bytes()
    streamed = bytearray(data)                        # as a recorder writing to a pipe does: sizes unknown
    i = streamed.find(b"data")
    streamed[4:8] = streamed[i + 4:i + 8] = struct.pack("<I", 0xFFFFFFFF)
    for blob in (data, bytes(streamed)):
        r = subprocess.run([sys.executable, "-m", "edge_runtime", "run", "default", "-i", "/dev/stdin", "-o",
                            str(tmp_path / "o.wav"), "--json"], input=blob, capture_output=True, env=_env(), timeout=120)
        assert r.returncode == 0, r.stderr.decode()
        s = json.loads(r.stdout)
        assert s["frames_in"] == s["frames_out"] == 48000
    fifo = tmp_path / "ff"
    os.mkfifo(fifo)
    t = threading.Thread(target=lambda: fifo.write_bytes(data))
    t.start()
    r = run_cli("run", "default", "-i", fifo, "-o", tmp_path / "o.wav", "--json")
    t.join(10)
    assert r.returncode == 0 and json.loads(r.stdout)["frames_in"] == 48000, r.stderr.decode()
    # a pipe cut short still says so, and a format that needs seeking says what to do
    r = subprocess.run([sys.executable, "-m", "edge_runtime", "run", "default", "-i", "/dev/stdin", "-o",
                        str(tmp_path / "o2.wav")], input=data[:50000], capture_output=True, env=_env(), timeout=120)
    assert r.returncode == 2 and "truncated: header says 48000 frames" in r.stderr.decode()
    sf.write(tmp_path / "s.flac", x, 48000)
    r = subprocess.run([sys.executable, "-m", "edge_runtime", "run", "default", "-i", "/dev/stdin", "-o",
                        str(tmp_path / "o2.wav")], input=(tmp_path / "s.flac").read_bytes(), capture_output=True,
                       env=_env(), timeout=120)
    assert r.returncode == 2 and "from a pipe or FIFO only WAV" in r.stderr.decode(), r.stderr.decode()
    assert not (tmp_path / "o2.wav").exists()


def test_outputs_that_would_destroy_the_input_or_interleave_are_refused(tmp_path):
    import soundfile as sf

    x = (np.random.default_rng(4).standard_normal(4800) * 0.1).astype(np.float32)
    inp = tmp_path / "in.wav"
    sf.write(inp, x, 48000, subtype="FLOAT")
    before = inp.read_bytes()
    (tmp_path / "link.wav").symlink_to(inp)
    os.link(inp, tmp_path / "hard.wav")
    cases = [
        (["-o", inp], "-o {} is the input file".format(inp)),
        (["-o", tmp_path / "link.wav"], "is the input file"),
        (["-o", tmp_path / "hard.wav"], "is the input file"),
        (["-o", tmp_path / "o.wav", "--events", inp], "--events {} is the input file".format(inp)),
        (["-o", tmp_path / "o.wav", "--events", tmp_path / "o.wav"], "are the same file"),
        (["-o", "-", "--events", "-"], "-o and --events both write to stdout"),
        (["-o", "-", "--json"], "-o and --json both write to stdout"),
    ]
    for extra, msg in cases:
        r = run_cli("run", "default", "-i", inp, *extra)
        err = r.stderr.decode()
        assert r.returncode == 2 and msg in err and err.count("\n") == 1, (extra, err)
        assert r.stdout == b""
    assert inp.read_bytes() == before and not (tmp_path / "o.wav").exists()
    # a symlinked output is written through the link: the link stays, its target is replaced
    other = tmp_path / "target.wav"
    other.write_bytes(b"old")
    (tmp_path / "out_link.wav").symlink_to(other)
    assert run_cli("run", "default", "-i", inp, "-o", tmp_path / "out_link.wav", "-q").returncode == 0
    assert (tmp_path / "out_link.wav").is_symlink() and sf.info(other).frames == 4800
    # asked for explicitly, the input is replaced atomically by its processed version
    r = run_cli("run", "default", "-i", inp, "-o", inp, "--overwrite-input", "-q")
    assert r.returncode == 0, r.stderr.decode()
    assert sf.info(inp).frames == 4800 and inp.read_bytes() != before


@pytest.mark.parametrize("body", ["a = " + "[" * 100000 + "]" * 100000,
                                  "".join(f"[{'.'.join('t' * (i + 1) for i in range(j + 1))}]\n" for j in range(40)),
                                  "x = 1\n" + "# padding\n" * 500000])
def test_deep_or_huge_toml_is_one_error_line(tmp_path, body):
    """tomllib recursing 100,000 levels raised RecursionError out of every config loader."""
    from edge_runtime.config import load_pipeline_config
    from edge_runtime.errors import ConfigError, ModelError
    from edge_runtime.models.manifest import load_manifest
    from edge_runtime.service.config import load_service_config

    p = tmp_path / "c.toml"
    p.write_text(body)
    for load, err in ((load_pipeline_config, ConfigError), (load_service_config, ConfigError),
                      (load_manifest, ModelError)):
        with pytest.raises(err) as ei:
            load(str(p))
        msg = str(ei.value)
        assert msg.startswith(f"{p}: ") and ("nested" in msg or "larger than 4 MB" in msg), msg
    r = run_cli("run", p, "-i", "x.wav", "-o", tmp_path / "o.wav")
    err = r.stderr.decode()
    assert r.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("node,key,value,expect", [
    ("gain", "gain_db", 400, "nodes[0].gain_db = 400.0 is outside -120..60"),
    ("gain", "gain_db", 1e308, "nodes[0].gain_db = 1e+308 is outside -120..60"),
    ("limiter", "threshold_db", 6, "nodes[0].threshold_db = 6.0 is outside -60..0"),
    ("highpass", "order", 40, "nodes[0].order = 40 is outside 1..12"),
    ("denoise", "strength", 2, "nodes[0].strength = 2.0 is outside 0..1"),
    ("meter", "interval_ms", 0, "nodes[0].interval_ms = 0.0 is outside 1..3.6e+06"),
])
def test_parameters_out_of_range_are_refused(tmp_path, node, key, value, expect):
    p = tmp_path / "p.toml"
    p.write_text(f'name = "p"\nsample_rate = 48000\nblock_size = 480\n[[nodes]]\ntype = "{node}"\n{key} = {value}\n')
    from edge_runtime.config import load_pipeline_config
    from edge_runtime.errors import ConfigError

    with pytest.raises(ConfigError) as ei:
        load_pipeline_config(str(p))
    assert str(ei.value) == f"{p}: {expect}"


def _main(argv, capsys):
    from edge_runtime.cli import main

    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def test_events_that_cannot_be_written_leave_no_output_at_all(tmp_path, monkeypatch, capsys):
    """ENOSPC on the events file left its temporary file behind after the audio was committed."""
    import errno

    import soundfile as sf

    from edge_runtime import atomic

    sf.write(tmp_path / "in.wav", np.zeros(48000, np.float32), 48000)
    (tmp_path / "m.toml").write_text('name = "m"\nsample_rate = 48000\nblock_size = 480\n'
                                      '[[nodes]]\ntype = "meter"\ninterval_ms = 10\n')

    def full(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.AtomicFile, "finish", full)
    rc, err = _main(["run", tmp_path / "m.toml", "-i", tmp_path / "in.wav", "-o", tmp_path / "o.wav",
                     "--events", tmp_path / "e.jsonl"], capsys)
    # a write failing after the start is a runtime failure (1), not a usage error (issue 29)
    assert rc == 1 and err == f"error: {tmp_path / 'e.jsonl'}: cannot write the events file: No space left on device\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "m.toml"]
    monkeypatch.undo()
    # and the other way round: the audio cannot be committed, so the events are not either
    real_commit = atomic.commit

    def commit(tmp, path):
        if path.endswith(".wav"):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_commit(tmp, path)

    monkeypatch.setattr(atomic, "commit", commit)
    rc, err = _main(["run", tmp_path / "m.toml", "-i", tmp_path / "in.wav", "-o", tmp_path / "o.wav",
                     "--events", tmp_path / "e.jsonl"], capsys)
    assert rc == 1 and "could not move the finished file into place" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "m.toml"]


@pytest.fixture
def small_fs(tmp_path):
    """A 64 KB tmpfs and a read-only one (needs mount privileges; skipped without them)."""
    full, ro = tmp_path / "full", tmp_path / "ro"
    full.mkdir()
    ro.mkdir()
    r1 = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)], capture_output=True)
    if r1.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r1.stderr.decode().strip()}")
    r2 = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True)
    try:
        assert r2.returncode == 0, r2.stderr
        yield full, ro
    finally:
        subprocess.run(["umount", str(full)])
        subprocess.run(["umount", str(ro)])


def test_full_and_read_only_file_systems_give_one_line_and_leave_nothing(tmp_path, small_fs):
    import soundfile as sf

    full, ro = small_fs
    sf.write(tmp_path / "in.wav", (np.random.default_rng(5).standard_normal(48000 * 5) * 0.1).astype(np.float32),
             48000, subtype="PCM_16")
    (tmp_path / "m.toml").write_text('name = "m"\nsample_rate = 48000\nblock_size = 480\n'
                                      '[[nodes]]\ntype = "meter"\ninterval_ms = 1\n')
    # exit 1: a write failing once started (runtime); 2: an output that cannot be created (usage)
    cases = [
        (["-o", full / "o.wav"], f"{full / 'o.wav'}: write failed after", "no space left on the device", 1),
        (["-o", tmp_path / "o.wav", "--events", full / "e.jsonl"], f"{full / 'e.jsonl'}: cannot write the events file",
         "No space left on device", 1),
        (["-o", ro / "o.wav"], f"{ro / 'o.wav'}: cannot create WAV/PCM_16", "read-only file system", 2),
        (["-o", tmp_path / "o.wav", "--events", ro / "e.jsonl"], f"{ro / 'e.jsonl'}: cannot create the events file",
         "Read-only file system", 2),
    ]
    for extra, head, why, code in cases:
        r = run_cli("run", tmp_path / "m.toml", "-i", tmp_path / "in.wav", *extra)
        err = r.stderr.decode()
        assert r.returncode == code and err.startswith(f"error: {head}") and why in err and err.count("\n") == 1, err
        assert list(full.iterdir()) == [] and list(ro.iterdir()) == [] and not (tmp_path / "o.wav").exists()


def test_service_events_on_a_full_disk_stop_the_events_not_the_audio(tmp_path, small_fs):
    from service_helpers import ServeProcess, sawtooth

    full, _ = small_fs
    data = sawtooth(16000 * 20)                 # 2,000 meter events (one per block), > 64 KB
    (tmp_path / "in.raw").write_bytes(data.tobytes())
    (tmp_path / "m.toml").write_text('name = "m"\nsample_rate = 16000\nblock_size = 160\n'
                                      '[[nodes]]\ntype = "meter"\ninterval_ms = 1\n')
    cfg = tmp_path / "service.toml"
    cfg.write_text(f'[service]\nmetrics = ""\n[[pipelines]]\nname = "mic"\npipeline = "m.toml"\ninput = "in.raw"\n'
                   f'output = "out.raw"\nevents = "{full / "e.jsonl"}"\nsample_rate = 16000\nchannels = 1\n')
    d = ServeProcess(cfg)
    rc = d.wait(60)
    assert rc == 0, d.raw[-5:]
    failed = d.events("events_failed")
    assert len(failed) == 1 and "No space left on device" in failed[0]["msg"], d.raw[-5:]
    assert (tmp_path / "out.raw").read_bytes() == data.tobytes()       # the audio went on, whole
    assert not d.events("pipeline_failed") and "Traceback" not in d.stderr

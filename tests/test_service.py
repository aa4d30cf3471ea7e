"""The service as systemd runs it: a subprocess, a NOTIFY_SOCKET, WATCHDOG_USEC, signals.

Inputs are paced files (``pace = true``: no faster than real time, like a device) holding a
sawtooth with a prime period, so a lost, duplicated or shifted frame cannot hide; the pipelines
include a look-ahead limiter (below its threshold it is an exact delay), so the latency
compensation is checked too. Each daemon runs for one to two seconds of audio.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

from service_helpers import ROOT, NotifyListener, ServeProcess, sawtooth

SR = 16000

LIMITER_PIPE = """name = "{name}"
sample_rate = 16000
block_size = 160
channels = "any"

[[nodes]]
type = "gain"
gain_db = {gain_db}

[[nodes]]
type = "limiter"
threshold_db = -1.0
lookahead_ms = 2.0

[[nodes]]
type = "meter"
interval_ms = 250
"""


def write_pipe(tmp_path, name="passthru", gain_db=0.0):
    p = tmp_path / f"{name}.toml"
    tmp = tmp_path / f".{name}.toml.tmp"
    tmp.write_text(LIMITER_PIPE.format(name=name, gain_db=gain_db))
    tmp.replace(p)                  # as an editor saves: the daemon never reads half a file
    return p


def mic_service(tmp_path, seconds: float, channels: int = 1, output: str = "out.raw", extra: str = "",
                service_extra: str = "", more: str = ""):
    """A paced sawtooth file (``in.raw``), the limiter pipeline and a service config running it as
    pipeline "mic" (``extra``: more keys of that table; ``more``: further tables); returns the
    input frames and the config path."""
    data = sawtooth(int(SR * seconds), channels=channels)
    (tmp_path / "in.raw").write_bytes(data.tobytes())
    write_pipe(tmp_path)
    cfg = write_service(tmp_path, f"""[[pipelines]]
name = "mic"
pipeline = "passthru.toml"
input = "in.raw"
output = "{output}"
{extra}sample_rate = 16000
channels = {channels}
pace = true
{more}""", service_extra=service_extra)
    return data, cfg


def write_service(tmp_path, body: str, metrics: str = '""', service_extra: str = ""):
    cfg = tmp_path / "service.toml"
    cfg.write_text(f"[service]\nmetrics = {metrics}\nstop_timeout_s = 10\n{service_extra}\n{body}")
    return cfg


@pytest.fixture
def notify(tmp_path):
    n = NotifyListener(tmp_path, abstract=True)
    yield n
    n.close()


def test_ready_watchdog_then_sigterm_loses_and_duplicates_no_frame(tmp_path, notify):
    data, cfg = mic_service(tmp_path, 6, channels=2, output="out.wav", extra='events = "events.jsonl"\n')
    d = ServeProcess(cfg, notify, watchdog_usec=400_000)       # pings every 0.2 s
    try:
        assert notify.wait_for("READY", timeout=30), d.raw
        ready = d.wait_event("ready")
        assert ready["pipelines"]["mic"]["latency_ms"] == 2.0 and ready["watchdog_s"] == 0.4
        assert notify.wait_for("WATCHDOG", count=4, timeout=10), notify.messages
        d.signal(signal.SIGTERM)                               # mid-stream: ~1 s of 6 s
        rc = d.wait()
    finally:
        d.kill()
    assert rc == 0, d.stderr
    keys = notify.keys()
    assert keys[0] == "READY" and keys[-1] == "STOPPING" and keys.count("STOPPING") == 1
    assert all(k == "WATCHDOG" for k in keys[1:-1])
    end = d.events("pipeline_end")[0]
    n = end["frames_in"]
    assert SR // 2 < n < SR * 5 and end["frames_out"] == n and not end["ended"]
    import soundfile as sf

    out, sr = sf.read(tmp_path / "out.wav", dtype="int16", always_2d=True)
    assert sr == SR and out.shape == (n, 2)
    np.testing.assert_array_equal(out, data[:n])              # every frame once, in order, aligned
    assert not list(tmp_path.glob(".out.wav.tmp-*"))
    # the meter's events were appended and flushed on the way out
    ev = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(ev) >= 2 and {e["node"] for e in ev} == {"meter"}
    assert [e["time_s"] for e in ev] == sorted(e["time_s"] for e in ev)
    assert d.events("stopped")[0]["pipelines"]["mic"]["frames_in"] == n


def test_input_end_exits_zero_with_every_frame(tmp_path):
    data = sawtooth(SR + 123)                                  # not a whole number of blocks
    (tmp_path / "in.raw").write_bytes(data.tobytes())
    write_pipe(tmp_path)
    listener = NotifyListener(tmp_path, abstract=False)       # a path socket this time
    try:
        cfg = write_service(tmp_path, """[[pipelines]]
pipeline = "passthru.toml"
input = "in.raw"
output = "out.raw"
sample_rate = 16000
channels = 1
""")
        d = ServeProcess(cfg, listener)
        rc = d.wait()
    finally:
        listener.close()
    assert rc == 0, d.stderr
    assert listener.keys() == ["READY", "STOPPING"]
    assert (tmp_path / "out.raw").read_bytes() == data.tobytes()
    assert d.events("all_ended")


@pytest.mark.parametrize("body,expect", [
    ('[[pipelines]]\npipeline = "no_such_pipeline"\ninput = "in.raw"\nsample_rate = 16000\nchannels = 1\n',
     "unknown pipeline 'no_such_pipeline'"),
    ('[[pipelines]]\npipeline = "speech16k"\ninput = "missing.raw"\nsample_rate = 16000\nchannels = 1\n',
     "missing.raw: cannot open raw PCM input"),
    ('[[pipelines]]\npipeline = "speech16k"\ninput = "in.raw"\nsample_rate = 16000\nchannels = 1\nperiods = 1\n',
     "pipelines[0].periods = 1; expected 2..64"),
    ('[[pipelines]]\npipeline = "speech16k"\ninput = "in.raw"\nsample_rate = 12\nchannels = 1\n',
     "pipelines[0].sample_rate = 12; expected a sample rate in Hz"),
    ('[[pipelines]]\npipeline = "speech16k"\ninput = "alsa:default"\nformat = "U8"\n',
     "pipelines[0].format = 'U8'; expected one of S16_LE"),
    ('[[pipeline]]\npipeline = "speech16k"\n', "unknown key 'pipeline'"),
])
def test_bad_config_is_refused_before_ready(tmp_path, notify, body, expect):
    (tmp_path / "in.raw").write_bytes(sawtooth(1600).tobytes())
    cfg = write_service(tmp_path, body)
    d = ServeProcess(cfg, notify)
    rc = d.wait()
    assert rc == 2
    lines = d.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], d.stderr
    assert str(cfg) in lines[0]
    assert "READY" not in notify.keys() and not d.events("ready")


def test_sighup_swaps_same_shape_pipeline_without_a_gap(tmp_path, notify):
    data, cfg = mic_service(tmp_path, 20, service_extra="crossfade_ms = 20\n")   # SIGTERM ends it long before
    d = ServeProcess(cfg, notify)
    try:
        assert notify.wait_for("READY", timeout=30), d.raw
        assert d.wait_event("node_event", timeout=0) is None
        # a broken pipeline file: refused, the running one stays
        write_pipe(tmp_path, gain_db="'loud'")
        d.signal(signal.SIGHUP)
        bad = d.wait_event("reload_failed", timeout=30)
        assert bad is not None, (d.proc.poll(), d.raw)
        assert "gain_db" in bad["msg"] and "wrong type" in bad["msg"], bad
        # same shape, new gain: swapped in between blocks
        write_pipe(tmp_path, gain_db=-6.020599913279624)                                   # x 0.5
        d.signal(signal.SIGHUP)
        assert d.wait_event("pipeline_swapped", timeout=30) is not None, d.raw
        rel = d.wait_event("reloaded")
        assert rel["plan"] == {"mic": "swap"}
        assert notify.keys().count("READY") == 3 and notify.keys().count("RELOADING") == 2
        time = __import__("time")
        time.sleep(0.3)
        d.signal(signal.SIGTERM)
        rc = d.wait()
    finally:
        d.kill()
    assert rc == 0, d.stderr
    n = d.events("pipeline_end")[0]["frames_in"]
    out = np.frombuffer((tmp_path / "out.raw").read_bytes(), "<i2").astype(np.int64)
    assert len(out) == n                                      # no gap, no duplicate: one frame out per frame in
    x = data[:n, 0].astype(np.int64)
    same = np.flatnonzero(out != x)
    assert len(same), "the new gain never took effect"
    k0 = same[0]                                              # where the crossfade starts
    half = np.flatnonzero(np.abs(out - x / 2) > 1.0)          # after it: exactly half (s16 rounding)
    k1 = half[-1] + 1
    assert 0 < k0 < k1 < n
    assert k1 - k0 <= 320 + 32 + 2                            # a 20 ms (320-frame) crossfade, + the limiter delay
    # inside the crossfade the output stays between the old and the new gain's output
    seg = slice(k0, k1)
    lo, hi = np.minimum(x[seg], x[seg] / 2) - 1, np.maximum(x[seg], x[seg] / 2) + 1
    assert np.all((out[seg] >= lo) & (out[seg] <= hi))


def test_metrics_endpoint_and_status_command(tmp_path, notify):
    data = sawtooth(SR * 8)
    (tmp_path / "in.raw").write_bytes(data.tobytes())
    write_pipe(tmp_path)
    cfg = write_service(tmp_path, """[[pipelines]]
name = "mic"
pipeline = "passthru.toml"
input = "in.raw"
output = "out.raw"
sample_rate = 16000
channels = 1
pace = true

[[pipelines]]
name = "voice"
pipeline = "denoise"
input = "in.raw"
sample_rate = 16000
channels = 1
pace = true
""", metrics='"127.0.0.1:0"')
    d = ServeProcess(cfg, notify)
    try:
        ready = d.wait_event("ready", timeout=60)
        assert ready is not None, d.raw + [d.stderr]
        url = ready["metrics"]
        import time

        time.sleep(0.8)                                      # > 2 meter intervals
        body = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
        st = subprocess.run([sys.executable, "-m", "edge_runtime", "status", "--url", url], capture_output=True,
                            timeout=60, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
        stj = json.loads(urllib.request.urlopen(url + "/status", timeout=5).read())
        d.signal(signal.SIGTERM)
        rc = d.wait()
    finally:
        d.kill()
    assert rc == 0
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    assert "# TYPE edge_runtime_deadline_misses_total counter" in body
    for name in ("mic", "voice"):
        assert samples[f'edge_runtime_blocks_total{{pipeline="{name}"}}'] > 40
        assert 0 < samples[f'edge_runtime_realtime_factor{{pipeline="{name}"}}'] < 1
        assert f'edge_runtime_deadline_misses_total{{pipeline="{name}"}}' in samples
        assert samples[f'edge_runtime_xruns_total{{pipeline="{name}",direction="capture"}}'] == 0
        assert samples[f'edge_runtime_pipeline_up{{pipeline="{name}"}}'] == 1
    assert samples['edge_runtime_events_total{pipeline="mic",node="meter",event="peak_dbfs"}'] >= 2
    variant = [k for k in samples if k.startswith('edge_runtime_model_variant_info{pipeline="voice",node="denoise"')]
    assert len(variant) == 1 and 'variant="' in variant[0]
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        pass
    else:  # the reference parser reads it: names, types, labels and values are well formed
        fams = {f.name: f for f in text_string_to_metric_families(body)}
        assert fams["edge_runtime_deadline_misses"].type == "counter"
        assert fams["edge_runtime_block_seconds"].type == "summary"
        assert {s.labels["pipeline"] for s in fams["edge_runtime_realtime_factor"].samples} == {"mic", "voice"}
    assert st.returncode == 0, st.stderr
    text = st.stdout.decode()
    assert "mic" in text and "voice" in text and "model denoise:" in text and "RTF" in text
    assert {p["name"] for p in stj["pipelines"]} == {"mic", "voice"}
    # what was built before the audio started is frozen out of the collector, and the GIL is handed
    # over every 0.5 ms (service/interp.py): a model node waits neither for a long collection nor 5 ms
    g = stj["python_gc"]
    assert g["frozen_objects"] > 10000 and g["freezes"] == 1 and g["switch_interval_ms"] == 0.5
    assert len(g["collections"]) == 3 and len(g["max_ms"]) == 3
    assert 'edge_runtime_python_gc_collections_total{generation="2"}' in samples


def test_status_without_a_service_is_one_error_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edge_runtime", "status", "--url", "http://127.0.0.1:9"],
                       capture_output=True, timeout=60, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2
    err = r.stderr.decode().strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: http://127.0.0.1:9/status: no edge_runtime service")


# ------------------------------------------------------------------------------------------ units
def test_notifier_addresses_and_watchdog_pid(tmp_path):
    import os

    from edge_runtime.service.notify import Notifier

    n = Notifier({"NOTIFY_SOCKET": "@abc", "WATCHDOG_USEC": "3000000"})
    assert n.address == "\0abc" and n.watchdog_s == 3.0
    assert Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "5", "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 5e-6
    off = Notifier({})
    assert not off.enabled and off.ready() is False
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert gone.watchdog() is False and gone.errors == 1    # never raises


def test_service_config_errors_name_key_and_value(tmp_path):
    from edge_runtime.errors import ConfigError
    from edge_runtime.service.config import parse_service_config

    ok = {"pipelines": [{"pipeline": "default", "input": "alsa:hw:1,0", "output": "alsa:default"}]}
    cfg = parse_service_config(ok, "s.toml")
    assert cfg.metrics == ("127.0.0.1", 9750) and cfg.pipelines[0].name == "default"
    assert cfg.pipelines[0].alsa_format == "S16_LE" and cfg.pipelines[0].live
    cases = [
        ({"pipelines": []}, "at least one [[pipelines]]"),
        ({"service": {"metrics": "localhost:http"}, **ok}, "service.metrics = 'localhost:http'"),
        ({"service": {"log_level": "loud"}, **ok}, "service.log_level = 'loud'"),
        ({"pipelines": [ok["pipelines"][0], ok["pipelines"][0]]}, "name = 'default' is used twice"),
        ({"pipelines": [{"pipeline": "default", "input": "x.raw", "max_frames": -1}]}, "max_frames = -1"),
        ({"pipelines": [{"pipeline": "default", "input": "a.raw", "output": "o.wav"},
                        {"name": "b", "pipeline": "default", "input": "b.raw", "output": "o.wav"}]},
         "is written by more than one pipeline"),
        ({"pipelines": [{"pipeline": "default", "input": "x.raw", "channels": True}]}, "channels = True"),
    ]
    for data, msg in cases:
        with pytest.raises(ConfigError, match=None) as ei:
            parse_service_config(data, "s.toml")
        assert str(ei.value).startswith("s.toml: ") and msg in str(ei.value), str(ei.value)


def test_sighup_with_a_new_shape_restarts_that_pipeline(tmp_path, notify):
    _, cfg = mic_service(tmp_path, 6)
    d = ServeProcess(cfg, notify)
    try:
        assert notify.wait_for("READY", timeout=30), d.raw
        p = tmp_path / "passthru.toml"
        tmp = tmp_path / ".p.tmp"
        tmp.write_text(p.read_text().replace("block_size = 160", "block_size = 320"))
        tmp.replace(p)
        d.signal(signal.SIGHUP)
        rel = d.wait_event("reloaded", timeout=30)
        assert rel is not None and rel["plan"] == {"mic": "restart"}, d.raw
        assert d.wait_event("pipeline_end", timeout=10)["frames_in"] > 0       # the old one drained
        d.signal(signal.SIGTERM)
        rc = d.wait()
    finally:
        d.kill()
    assert rc == 0, d.stderr
    ends = d.events("pipeline_end")
    assert len(ends) == 2 and all(e["frames_in"] == e["frames_out"] for e in ends)


def test_input_at_another_rate_is_resampled_and_comes_back_aligned(tmp_path):
    import soundfile as sf

    sr = 44100
    t = np.arange(int(sr * 1.5)) / sr
    x = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    sf.write(tmp_path / "in.wav", np.stack([x, -x], axis=1), sr, subtype="FLOAT")
    write_pipe(tmp_path)                                     # 16 kHz: 44.1 -> 16 -> 44.1 kHz
    cfg = write_service(tmp_path, """[[pipelines]]
pipeline = "passthru.toml"
input = "in.wav"
output = "out.wav"
""")
    d = ServeProcess(cfg)
    rc = d.wait()
    assert rc == 0, d.stderr
    y, sr_out = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    assert sr_out == sr and y.shape == (x.shape[0], 2)       # frames out == frames in, at the input rate
    mid = slice(sr // 4, sr + sr // 4)
    # the look-ahead and both resamplers' delays are compensated: aligned to well under a sample
    assert np.max(np.abs(y[mid, 0] - x[mid])) < 1e-3 and np.max(np.abs(y[mid, 1] + x[mid])) < 1e-3


def test_check_validates_like_startup_and_starts_nothing(tmp_path, cli):
    (tmp_path / "in.raw").write_bytes(sawtooth(1600).tobytes())
    write_pipe(tmp_path)
    cfg = write_service(tmp_path, """[[pipelines]]
pipeline = "passthru.toml"
input = "in.raw"
output = "out.raw"
sample_rate = 16000
channels = 1
""")
    r = cli("serve", "--config", cfg, "--check")
    assert r.returncode == 0, r.stderr.decode()
    assert any(json.loads(x)["event"] == "config_ok" for x in r.stdout.decode().splitlines())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.raw", "passthru.toml", "service.toml"]
    (tmp_path / "passthru.toml").write_text("sample_rate = 16000\nblock_size = 160\n[[nodes]]\ntype = \"nope\"\n")
    r = cli("serve", "--config", cfg, "--check")
    assert r.returncode == 2 and "nodes[0].type = 'nope' is not a known node type" in r.stderr.decode()


def test_stdin_input_stops_on_sigterm_while_waiting_for_data(tmp_path, notify):
    data = sawtooth(160 * 40)                                  # whole blocks of the 16 kHz pipeline
    write_pipe(tmp_path)
    cfg = write_service(tmp_path, """[[pipelines]]
pipeline = "passthru.toml"
input = "-"
output = "out.raw"
sample_rate = 16000
channels = 1
""")
    cfg.write_text(cfg.read_text().replace("stop_timeout_s = 10", "stop_timeout_s = 3"))
    import os
    import time

    e = dict(os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET=notify.env_value)
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", "--config", str(cfg)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
    try:
        assert notify.wait_for("READY", timeout=30)
        proc.stdin.write(data.tobytes())
        proc.stdin.flush()                                      # the pipe stays open: no EOF
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)                              # stdin still open: no EOF to end the read
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()
    assert rc == 0, err.decode()                                # not a stop timeout (exit 1)
    assert (tmp_path / "out.raw").read_bytes() == data.tobytes()


def test_sighup_whose_new_output_cannot_open_keeps_the_running_pipeline(tmp_path, notify):
    """Issue 30: a reload is all or nothing. The new output's directory does not exist: the reload
    is refused, the running pipeline keeps its input and output untouched (every frame arrives in
    the old file), 'reloaded' is never logged, and SIGTERM still exits 0."""
    data, cfg = mic_service(tmp_path, 3)
    d = ServeProcess(cfg, notify)
    try:
        assert notify.wait_for("READY", timeout=30), d.raw
        text = cfg.read_text()
        tmp = tmp_path / ".service.tmp"
        tmp.write_text(text.replace('output = "out.raw"', 'output = "missing_dir/out.raw"')
                       .replace("pace = true", "pace = true\nmax_frames = 1600"))    # and a new shape of I/O
        tmp.replace(cfg)
        d.signal(signal.SIGHUP)
        failed = d.wait_event("reload_failed", timeout=30)
        assert failed is not None and "missing_dir" in failed["msg"], d.raw
        assert d.wait_event("pipeline_end", timeout=10) is not None     # the old one ran to its input's end
        rc = d.wait()
    finally:
        d.kill()
    assert rc == 0, d.stderr
    assert not d.events("reloaded") and len(d.events("pipeline_end")) == 1
    assert not d.events("pipeline_failed")
    assert (tmp_path / "out.raw").read_bytes()[:data.nbytes] == data.tobytes()
    assert not (tmp_path / "missing_dir").exists()


def test_output_lost_at_commit_exits_non_zero(tmp_path, notify):
    """Issue 30: when every audio loop ends because of an error (here the output's directory is
    removed while recording, so the finished file cannot be committed) the service exits non-zero,
    so systemd's Restart=on-failure applies."""
    import shutil

    (tmp_path / "rec").mkdir()
    _, cfg = mic_service(tmp_path, 1.5, output="rec/out.raw")
    d = ServeProcess(cfg, notify)
    try:
        assert notify.wait_for("READY", timeout=30), d.raw
        shutil.rmtree(tmp_path / "rec")
        rc = d.wait()
    finally:
        d.kill()
    assert rc == 1, d.raw
    assert d.events("sink_close_failed") and d.events("stopped")


def test_segmented_file_output_survives_a_crash_and_joins_to_the_input(tmp_path, notify):
    """Issue 30: segment_s = 1 writes complete files of 1 s (out-<UTC start>-00001.wav, ...): after a
    SIGKILL mid-recording every committed segment is a valid WAV of exactly one second; a run to
    the input's end gives segments that join to exactly the input."""
    import os
    import time

    import soundfile as sf

    data, cfg = mic_service(tmp_path, 3.5, output="out.wav", extra="segment_s = 1\n")
    d = ServeProcess(cfg, notify)
    try:
        assert notify.wait_for("READY", timeout=30), d.raw
        time.sleep(2.7)
        os.kill(d.proc.pid, signal.SIGKILL)
        d.wait()
    finally:
        d.kill()
    segs = sorted(tmp_path.glob("out-*-*.wav"))
    assert len(segs) >= 2, [p.name for p in tmp_path.iterdir()]
    x = data[:, 0].astype(np.float32) / 32768
    pos = 0
    for p in segs:
        y, sr = sf.read(p, dtype="float32")
        assert sr == SR and y.shape == (SR,), (p.name, y.shape)
        assert np.array_equal(y, x[pos:pos + SR]), p.name
        pos += SR
    for p in segs:
        p.unlink()
    # to the end: the last, shorter segment is committed too, and nothing is lost or repeated
    d = ServeProcess(cfg, notify)
    rc = d.wait(60)
    assert rc == 0, d.stderr
    segs = sorted(tmp_path.glob("out-*-*.wav"))
    assert [p.name[-9:] for p in segs] == ["00001.wav", "00002.wav", "00003.wav", "00004.wav"]
    joined = np.concatenate([sf.read(p, dtype="float32")[0] for p in segs])
    assert np.array_equal(joined, x)
    assert not list(tmp_path.glob(".out*")) and not (tmp_path / "out.wav").exists()


def test_segment_s_needs_a_file_output(tmp_path):
    from edge_runtime.errors import ConfigError
    from edge_runtime.service.config import parse_service_config

    pipe = {"pipeline": "speech16k", "input": "in.raw", "sample_rate": 16000, "channels": 1}
    with pytest.raises(ConfigError, match=r"segment_s = 60 needs a file output; output is 'alsa:default'"):
        parse_service_config({"pipelines": [{**pipe, "output": "alsa:default", "segment_s": 60}]}, "s.toml")
    with pytest.raises(ConfigError, match=r"segment_s = 0.5; expected seconds 1..86400"):
        parse_service_config({"pipelines": [{**pipe, "output": "o.wav", "segment_s": 0.5}]}, "s.toml")

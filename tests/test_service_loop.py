"""The service's audio loop in-process: no allocation kept per block, a lost device reopened."""
from __future__ import annotations

import gc
import tracemalloc

import numpy as np

from edge_runtime.config import load_pipeline_config
from edge_runtime.errors import AudioDeviceError
from edge_runtime.io.base import Sink, Source
from edge_runtime.service.config import parse_service_config
from edge_runtime.service.daemon import Instance
from edge_runtime.service.log import JsonLog


class MemorySource(Source):
    """A live-like source over an array; ``fail_after`` reads, it raises like an unplugged card."""

    def __init__(self, data, fail_after=None, name="alsa:fake"):
        self.data, self.pos, self.reads, self.fail_after = data, 0, 0, fail_after
        self.name, self.sample_rate, self.channels, self.xruns = name, 16000, data.shape[1], 0
        self.period_frames = self.buffer_frames = 160
        self.closed = False

    def read_into(self, out):
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise AudioDeviceError(f"{self.name}: capture failed: No such device")
        n = min(out.shape[0], self.data.shape[0] - self.pos)
        np.copyto(out[:n], self.data[self.pos:self.pos + n])
        self.pos += n
        return n

    def close(self):
        self.closed = True


class MemorySink(Sink):
    def __init__(self, capacity, channels):
        self.buf = np.zeros((capacity, channels), np.float32)
        self.n = 0
        self.name, self.sample_rate, self.channels = "memory", 16000, channels
        self.period_frames = self.buffer_frames = 160
        self.committed = None

    def write(self, block):
        k = block.shape[0]
        np.copyto(self.buf[self.n:self.n + k], block)
        self.n += k

    def close(self, commit=True):
        self.committed = commit


class _Quiet:
    def write(self, s):
        pass

    def flush(self):
        pass


def _instance(pipeline="speech16k", max_frames=0, live=False):
    spec = parse_service_config({"pipelines": [{"name": "t", "pipeline": pipeline,
                                                "input": "alsa:fake" if live else "x.raw",
                                                "sample_rate": 16000, "channels": 1, "max_frames": max_frames,
                                                "retry_initial_s": 0.01, "retry_max_s": 0.02}]},
                                "s.toml").pipelines[0]
    pipe = load_pipeline_config(pipeline).build()
    inst = Instance(spec, pipe, JsonLog(_Quiet()))
    inst.channels = 1
    inst.period_frames, inst.periods = 160, 4
    pipe.prepare(1)
    return inst


def _retained_after(blocks):
    rng = np.random.default_rng(0)
    data = (0.1 * rng.standard_normal((blocks * 160, 1))).astype(np.float32)
    inst = _instance(max_frames=blocks * 160)
    inst.source = MemorySource(data)
    inst.sink = MemorySink(blocks * 160, 1)
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        inst._run()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert inst.frames_out == blocks * 160
    return after - before


def test_audio_loop_keeps_nothing_per_block():
    _retained_after(200)                      # warm-up: first-call caches
    small, large = _retained_after(1000), _retained_after(10_000)
    # 9,000 more blocks (90 s of audio, with meter events) keep no more memory
    assert large - small < 2048, f"{large - small} bytes more kept after 9,000 more blocks"


def test_lost_device_is_reopened_and_the_stream_goes_on(monkeypatch):
    import edge_runtime.io as io

    data = (np.arange(16000, dtype=np.float32)[:, None] % 1000) / 2000.0
    first = MemorySource(data, fail_after=20)
    sources = [first]

    def fake_open(spec, **kw):
        if len(sources) == 1:
            # the card comes back after two failed attempts
            sources.append(None)
            raise AudioDeviceError(f"{spec}: cannot open for capture: No such device")
        if len(sources) == 2:
            src = MemorySource(data)
            src.pos = first.pos               # the test device resumes where the lost one stopped
            sources.append(src)
            return src
        raise AssertionError("opened too often")

    monkeypatch.setattr(io, "open_source", fake_open)
    inst = _instance(pipeline="speech16k", max_frames=16000, live=True)
    inst.source = first
    inst.sink = MemorySink(16000, 1)
    inst._run()
    assert first.closed and inst.reopens == 1
    assert inst.frames_in == 16000 and inst.frames_out == 16000


class _FakeInstance:
    """Stands in for an audio loop whose heartbeat the test controls."""

    def __init__(self, name):
        self.name, self.beat, self.state, self.stopped = name, 0.0, "running", False

    @property
    def alive(self):
        return not self.stopped

    def request_stop(self):
        self.stopped = True

    def join(self, timeout=None):
        return True

    def snapshot(self):
        return {"frames_in": 0, "frames_out": 0, "blocks": 0, "deadline_misses": 0, "xruns": {},
                "realtime_factor": 0.0, "state": self.state}


def test_watchdog_is_withheld_while_an_audio_loop_is_stuck(tmp_path):
    import threading
    import time

    from service_helpers import NotifyListener

    from edge_runtime.service.daemon import Daemon

    listener = NotifyListener(tmp_path, abstract=True)
    try:
        d = Daemon("s.toml", environ={"NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "200000"})
        d.log = JsonLog(_Quiet())
        d.config = parse_service_config({"pipelines": [{"pipeline": "default", "input": "x.raw"}]}, "s.toml")
        live, stuck = _FakeInstance("live"), _FakeInstance("stuck")
        d.instances = {"live": live, "stuck": stuck}
        done = threading.Event()

        def beat():                          # only 'live' keeps running
            while not done.is_set():
                live.beat = time.monotonic()
                time.sleep(0.01)

        threading.Thread(target=beat, daemon=True).start()
        stuck.beat = time.monotonic()
        t = threading.Thread(target=d._loop, daemon=True)
        t.start()
        time.sleep(0.6)                      # 'stuck' stops beating after its first 0.1 s
        pings_while_stuck = listener.keys().count("WATCHDOG")
        d.instances.pop("stuck")             # (as if systemd had restarted it: the rest is healthy)
        time.sleep(0.5)
        pings_after = listener.keys().count("WATCHDOG")
        d._stop_sig = 15
        d._wake.set()
        t.join(5)
        done.set()
    finally:
        listener.close()
    assert pings_while_stuck <= 1            # at most the one before it went stale
    assert pings_after - pings_while_stuck >= 3


def test_late_blocks_in_the_service_feed_the_governor():
    import time

    from edge_runtime.engine import Node, Pipeline

    class SlowModel(Node):
        """A model node that makes every block late until stepped down to a 'cheap' variant."""

        def __init__(self):
            super().__init__("model")
            self.slow, self.switches = True, []

        @property
        def variant_label(self):
            return "onnx/fp32@slow" if self.slow else "onnx/int8@fast"

        def can_step_down(self):
            return self.slow

        def step_down(self, reason=""):
            self.switches.append({"from": self.variant_label, "to": "onnx/int8@fast", "reason": reason})
            self.slow = False
            return "onnx/int8@fast"

        def process(self, inp, out):
            if self.slow:
                time.sleep(0.002)             # > the 1 ms budget of a 16-frame block at 16 kHz
            out[...] = inp

    node = SlowModel()
    pipe = Pipeline([node], sample_rate=16000, block_size=16, name="slow")
    spec = parse_service_config({"pipelines": [{"name": "t", "pipeline": "default", "input": "x.raw",
                                                "max_frames": 16 * 400}]}, "s.toml").pipelines[0]
    inst = Instance(spec, pipe, JsonLog(_Quiet()))
    inst.channels = 1
    pipe.prepare(1)
    inst.source = MemorySource(np.zeros((16 * 400, 1), np.float32))
    inst.sink = MemorySink(16 * 400, 1)
    inst._run()
    assert inst.governor.steps and inst.governor.steps[0]["from"] == "onnx/fp32@slow"
    snap = inst.snapshot()
    assert snap["models"] == [{"node": "model", "variant": "onnx/int8@fast", "step_downs": 1}]
    assert snap["deadline_misses"] >= 100                  # every block of the first window was late


def test_xruns_reported_by_the_device_are_counted_and_logged():
    import io as _io
    import json

    class XrunSource(MemorySource):
        def read_into(self, out):
            n = super().read_into(out)
            if self.reads in (5, 9, 10):
                self.xruns += 1               # what AlsaSource does after snd_pcm_recover
            return n

    data = np.zeros((160 * 20, 1), np.float32)
    inst = _instance(max_frames=160 * 20)
    buf = _io.StringIO()
    inst.log = JsonLog(buf)
    inst.source = XrunSource(data)
    inst.sink = MemorySink(160 * 20, 1)
    inst._run()
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    xr = [x for x in lines if x["event"] == "xrun"]
    assert [x["total"] for x in xr] == [1, 2, 3] and all(x["direction"] == "capture" for x in xr)
    assert inst.snapshot()["xruns"] == {"capture": 3, "playback": 0}
    assert inst.frames_out == 160 * 20


def test_events_file_is_rotated_at_its_size_limit(tmp_path):
    import json

    spec = parse_service_config({"pipelines": [{"name": "t", "pipeline": "speech16k", "input": "x.raw",
                                                "events": str(tmp_path / "ev.jsonl"), "events_max_mb": 0.001,
                                                "max_frames": 16000 * 30}]}, "s.toml").pipelines[0]
    pipe = load_pipeline_config("speech16k").build()
    pipe.prepare(1)
    inst = Instance(spec, pipe, JsonLog(_Quiet()))
    inst.channels = 1
    inst._events_file = open(spec.events, "a")
    inst.source = MemorySource((0.1 * np.ones((16000 * 30, 1))).astype(np.float32))
    inst.sink = None
    inst._run()
    inst._close_all(commit=True)
    cur, old = tmp_path / "ev.jsonl", tmp_path / "ev.jsonl.1"
    assert old.stat().st_size >= 1000 and cur.stat().st_size < 1000 + 400
    lines = [json.loads(x) for f in (old, cur) for x in f.read_text().splitlines()]
    times = [x["time_s"] for x in lines if x["event"] == "peak_dbfs"]
    assert times == sorted(times) and times[-1] >= 29        # the newest events are kept, in order

"""One configured pipeline of ``edge-runtime serve`` (:class:`Instance`): its I/O ends and its
audio thread.

The thread reads exactly one block from the source, runs the pipeline's compiled block loop, tells
the governor, writes the block to the sink and drains the pipeline's events; a lost ALSA device is
reopened with back-off, xruns are counted, a reloaded pipeline is swapped in between two blocks
with a crossfade, and a stop pushes the look-ahead out before the ends are closed. The process
around it (config, signals, notify, metrics, reload) is :class:`edge_runtime.service.daemon.Daemon`.
"""
from __future__ import annotations

import json
import os
import threading
import time

import numpy as np

from ..errors import AudioDeviceError, ConfigError, EdgeRuntimeError
from .config import InstanceSpec
from .log import JsonLog

__all__ = ["Instance"]


class _SourceLost(Exception):
    pass


class _SinkLost(Exception):
    pass


def _default_alsa(sample_rate: int) -> tuple[int, int]:
    """(period_frames, periods) from the device profile's [alsa] section, scaled to the rate."""
    try:
        from ..models.profiler import detect_device, load_device_defaults

        alsa = load_device_defaults(detect_device()).get("alsa") or {}
    except Exception:
        alsa = {}
    per = int(alsa.get("period_frames", 480))
    rate = int(alsa.get("sample_rate", 48000))
    return max(16, round(per * sample_rate / rate)), int(alsa.get("periods", 4))


def _iso(t: float) -> str:
    """``t`` (seconds since the epoch) as ISO-8601 UTC with milliseconds."""
    import datetime

    d = datetime.datetime.fromtimestamp(t, datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


class Instance:
    """One configured pipeline: its I/O, its audio thread, its counters."""

    def __init__(self, spec: InstanceSpec, pipeline, log: JsonLog, *, crossfade_ms: float = 20.0,
                 on_exit=None):
        self.spec = spec
        self.name = spec.name
        self.log = log
        self.pipeline = pipeline
        self.crossfade_ms = crossfade_ms
        self.on_exit = on_exit
        self.source = None
        self.sink = None
        self._events_file = None
        self.mqtt = None                  # the service's MqttPublisher, if any
        self.state = "starting"
        self.error: str | None = None
        self.beat = time.monotonic()
        self.started = time.time()
        self.frames_in = 0
        self.frames_out = 0
        self.xruns = {"capture": 0, "playback": 0}
        self.reopens = 0
        self.reloads = 0
        self.events: dict[tuple[str, str], int] = {}
        self._base = {"blocks": 0, "deadline_misses": 0, "total_ns": 0, "nonfinite_in": 0, "nonfinite_out": 0,
                      "events_dropped": 0}
        self._frame_offset = 0            # stream frames processed by pipelines retired by reloads
        self._offer = None
        self._stop = threading.Event()
        self._thread = None
        self.governor = None
        self._xf = None
        self.sample_rate = pipeline.sample_rate     # of the input and outputs (set by open_static)
        self.resampled = False
        self.channels = None
        self._seen_xruns = [0, 0]
        self._poll_fd = None              # stdin: wait for data with select(), checking for a stop

    # ---- set-up (main thread, before READY) ----------------------------------------------------
    def open_static(self) -> None:
        """Resolve the format and open file/stdin ends now, so a bad path fails before READY."""
        from ..io import open_sink, open_source

        s, p = self.spec, self.pipeline
        if s.live:
            self.channels = s.channels or p.fixed_channels or 1
            rate = s.sample_rate or p.sample_rate
        elif s.input == "-":
            from ..io.raw import RawSource

            # stdin unbuffered, so select() tells whether a read would block: a stop is never stuck in it
            self._poll_fd = os.dup(0)
            self.source = RawSource(os.fdopen(self._poll_fd, "rb", buffering=0), s.sample_rate or p.sample_rate,
                                    s.channels or p.fixed_channels or 1, s.raw_format)
            self.source.name = "<stdin>"
            self.channels, rate = int(self.source.channels), int(self.source.sample_rate)
        else:
            self.source = open_source(s.input, sample_rate=s.sample_rate or p.sample_rate,
                                      channels=s.channels or p.fixed_channels or 1, raw_format=s.raw_format)
            self.channels, rate = int(self.source.channels), int(self.source.sample_rate)
        # another rate than the pipeline's: converted with soxr at the edge, output at the input rate
        self.sample_rate = int(rate)
        self.resampled = self.sample_rate != p.sample_rate
        if p.fixed_channels is not None and self.channels != p.fixed_channels:
            raise ConfigError(f"{s.input}: {self.channels} channel(s), but pipeline {p.name!r} expects "
                              f"{p.fixed_channels}")
        if not p.prepared or p.channels != self.channels:
            p.prepare(self.channels)
        p.reset()
        p.reset_stats()
        if s.output is not None and not s.output.startswith("alsa:"):
            if s.segment_s:
                from ..io.segment import SegmentedSink

                ch = self.channels
                self.sink = SegmentedSink(s.output, rate, ch, int(round(s.segment_s * rate)),
                                          lambda path: open_sink(path, sample_rate=rate, channels=ch,
                                                                 raw_format=s.raw_format))
            else:
                self.sink = open_sink(s.output, sample_rate=rate, channels=self.channels, raw_format=s.raw_format)
        if s.events not in (None, "log", "-"):
            d = os.path.dirname(os.path.abspath(s.events))
            if not os.path.isdir(d):
                raise ConfigError(f"{s.events}: events file directory {d} does not exist")
            try:
                self._events_file = open(s.events, "a", buffering=1 << 16)
            except OSError as e:
                raise ConfigError(f"{s.events}: cannot open the events file: {e.strerror}") from None
        if s.live or (s.output or "").startswith("alsa:"):
            per, periods = _default_alsa(self.sample_rate)
            self.period_frames = s.period_frames or per
            self.periods = s.periods or periods

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name=f"edge_runtime-audio-{self.name}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def swapping(self) -> bool:
        """A new pipeline offered and not yet taken, or the crossfade to it still running."""
        return self._offer is not None or self._xf is not None

    def shape(self, pipeline=None) -> tuple:
        p = pipeline or self.pipeline
        return (p.sample_rate, p.block_size, p.fixed_channels, p.latency_samples)

    def offer(self, pipeline) -> None:
        """Hand a new pipeline of the same shape to the audio thread (swapped between blocks)."""
        if not pipeline.prepared or pipeline.channels != self.channels:
            pipeline.prepare(self.channels)
        pipeline.reset()
        pipeline.reset_stats()
        self._offer = pipeline

    # ---- the audio thread ----------------------------------------------------------------------
    def _main(self) -> None:
        ok = True
        try:
            self._run()
        except Exception as e:  # anything else is a failure of this pipeline: say so, exit non-zero
            ok = False
            self.error = str(e) if isinstance(e, EdgeRuntimeError) else f"{type(e).__name__}: {e}"
            self.state = "failed"
            self.log.error("pipeline_failed", f"{self.name}: {self.error}", pipeline=self.name)
        finally:
            self._close_all(commit=ok)
            if self.state != "failed":
                self.state = "stopped"
            if self.on_exit is not None:
                self.on_exit(self)

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` while stamping the heartbeat; True if a stop was requested."""
        end = time.monotonic() + seconds
        while True:
            self.beat = time.monotonic()
            left = end - self.beat
            if left <= 0:
                return self._stop.is_set()
            if self._stop.wait(min(left, 0.25)):
                return True

    def _readable(self) -> bool:
        """Wait until stdin has data (or EOF); False if a stop was requested meanwhile."""
        import select

        while not self._stop.is_set():
            self.beat = time.monotonic()
            try:
                r, _, _ = select.select([self._poll_fd], [], [], 0.25)
            except (OSError, ValueError):
                return True                # closed: the read reports the end
            if r:
                return True
        return False

    def _open_with_retry(self, what: str) -> bool:
        """Open the ALSA source or sink, retrying with back-off; False if stopped meanwhile."""
        from ..io import open_sink, open_source

        s = self.spec
        delay = s.retry_initial_s
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            try:
                if what == "source":
                    self.source = open_source(s.input, sample_rate=self.sample_rate, channels=self.channels,
                                              period_frames=self.period_frames, periods=self.periods,
                                              alsa_format=s.alsa_format)
                    self._seen_xruns[0] = 0
                    dev = self.source
                else:
                    self.sink = open_sink(s.output, self.sample_rate, self.channels,
                                          period_frames=self.period_frames, periods=self.periods,
                                          alsa_format=s.alsa_format)
                    self._seen_xruns[1] = 0
                    dev = self.sink
                self.log.info("device_open", f"{self.name}: {dev.name} opened for "
                              f"{'capture' if what == 'source' else 'playback'}", pipeline=self.name,
                              device=dev.name, period_frames=dev.period_frames, buffer_frames=dev.buffer_frames,
                              attempt=attempt)
                return True
            except AudioDeviceError as e:
                self.state = "waiting_for_device"
                spec = s.input if what == "source" else s.output
                hint = ("; note: in a system service 'default' may go through PulseAudio/PipeWire, which has no "
                        "session there: use alsa:sysdefault or alsa:plughw:CARD=..." if spec == "alsa:default"
                        and attempt == 1 else "")
                self.log.warning("device_unavailable", f"{self.name}: {e}; retrying in {delay:g} s{hint}",
                                 pipeline=self.name, attempt=attempt, retry_s=delay)
                if self._wait(delay):
                    return False
                delay = min(delay * 2, s.retry_max_s)
        return False

    def _close_source(self) -> None:
        if self.source is not None:
            src, self.source = self.source, None
            self._count_xruns(src, None)
            try:
                src.close()
                if self._poll_fd is not None:     # our unbuffered stdin duplicate
                    src._stream.close()
            except Exception:
                pass

    def _close_sink(self, commit: bool) -> None:
        if self.sink is not None:
            snk, self.sink = self.sink, None
            self._count_xruns(None, snk)
            try:
                snk.close(commit=commit)
            except EdgeRuntimeError as e:
                self.log.error("sink_close_failed", f"{self.name}: {e}", pipeline=self.name)
                if commit:                # the output is lost: this pipeline failed (exit non-zero)
                    self.error = str(e)
                    self.state = "failed"

    def _close_all(self, commit: bool) -> None:
        self._close_source()
        self._close_sink(commit)
        if self._events_file is not None:
            try:
                self._events_file.flush()
                os.fsync(self._events_file.fileno())
                self._events_file.close()
            except OSError:
                pass
            self._events_file = None

    def _count_xruns(self, src, snk) -> None:
        for k, dev in ((0, src), (1, snk)):
            n = getattr(dev, "xruns", 0) if dev is not None else 0
            if n > self._seen_xruns[k]:
                d = n - self._seen_xruns[k]
                self._seen_xruns[k] = n
                kind = "capture" if k == 0 else "playback"
                self.xruns[kind] += d
                self.log.warning("xrun", f"{self.name}: {d} {'over' if k == 0 else 'under'}run(s) on "
                                 f"{dev.name}, recovered ({self.xruns[kind]} so far)", pipeline=self.name,
                                 direction=kind, total=self.xruns[kind])

    def _run(self) -> None:
        from ..governor import Governor

        s = self.spec
        p = self.pipeline
        self.governor = Governor(p).attach() if s.governor else None
        ch, bs = self.channels, p.block_size
        self._buf = np.zeros((bs, ch), dtype=np.float32)
        self._out = np.zeros((bs, ch), dtype=np.float32)
        self._out_t = self._out.T
        self._skip = p.latency_samples
        self._t0 = time.monotonic()
        if self.resampled:
            self._setup_resampling()
        ended = False
        while not self._stop.is_set() and not ended:
            if self.source is None:
                if not self._open_with_retry("source"):
                    break
            if self.sink is None and s.output is not None:
                if not self._open_with_retry("sink"):
                    break
            self.state = "running"
            try:
                ended = self._stream_resampled() if self.resampled else self._stream()
            except _SourceLost as e:
                self.reopens += 1
                self.log.warning("device_lost", f"{self.name}: capture failed: {e}; reopening", pipeline=self.name)
                self._close_source()
                self._wait(s.retry_initial_s)
            except _SinkLost as e:
                self.reopens += 1
                self.log.warning("device_lost", f"{self.name}: playback failed: {e}; reopening", pipeline=self.name)
                self._close_sink(commit=False)
                self._wait(s.retry_initial_s)
        self.state = "draining"
        if self.resampled:
            self._flush_resampled()
        else:
            self._flush()
        self.log.info("pipeline_end", f"{self.name}: {'input ended' if ended else 'stopped'} after "
                      f"{self.frames_in} frames in, {self.frames_out} out", pipeline=self.name,
                      frames_in=self.frames_in, frames_out=self.frames_out, ended=ended)

    def _read(self, src, out):
        """Read into ``out``: None when a poll wait ended without data (a stop was asked),
        else the frames read (<= 0: the input ended). A lost device raises _SourceLost; new
        xruns are counted."""
        if self._poll_fd is not None and not self._readable():
            return None
        try:
            n = src.read_into(out)
        except AudioDeviceError as e:
            raise _SourceLost(str(e)) from None
        if getattr(src, "xruns", 0) > self._seen_xruns[0]:
            self._count_xruns(src, None)
        return n

    def _stream(self) -> bool:
        """Run blocks until the input ends (True) or a stop is requested (False)."""
        s = self.spec
        buf = self._buf
        bs = buf.shape[0]
        buf_t = buf.T
        rate = self.sample_rate
        src = self.source
        while not self._stop.is_set():
            if self._offer is not None:
                self._begin_swap()
            want = bs
            if s.max_frames:
                want = min(bs, s.max_frames - self.frames_in)
                if want <= 0:
                    return True
            n = self._read(src, buf if want == bs else buf[:want])
            if n is None:
                return False
            if n <= 0:
                return True
            if n < bs:
                buf[n:] = 0.0
            self.frames_in += n
            self._process(buf_t)
            self._emit(bs)              # a short last block's zeros push its look-ahead out too
            self.beat = time.monotonic()
            if s.pace:
                ahead = self._t0 + self.frames_in / rate - self.beat
                if ahead > 0:
                    self._stop.wait(ahead)
            if n < want:
                return True
        return False

    def _process(self, block_t) -> None:
        p = self.pipeline
        np.copyto(p.input, block_t)
        xf = self._xf
        if xf is not None:
            new = xf[0]
            np.copyto(new.input, block_t)
            new.process_block()
        p.process_block()
        if self.governor is not None:
            self.governor.after_block()
        if xf is None:
            np.copyto(self._out_t, p.output)
        else:
            new, k, ramp, tmp = xf
            old_out, new_out = p.output, new.output
            np.subtract(new_out, old_out, out=tmp)
            np.multiply(tmp, ramp[k], out=tmp)
            np.add(tmp, old_out, out=tmp)
            np.copyto(self._out_t, tmp)
            k += 1
            if k >= ramp.shape[0]:
                self._finish_swap(new)
            else:
                self._xf = (new, k, ramp, tmp)
        if p.events.count:
            self._drain_events(p)
        if xf is not None and new.events.count:
            new.events.clear()      # the incoming pipeline's events count once it is the one heard

    def _emit(self, n: int) -> None:
        """Write the valid part of the output block (after the look-ahead trim)."""
        out = self._out
        start = 0
        if self._skip:
            start = min(self._skip, n)
            self._skip -= start
        n = min(n, start + self.frames_in - self.frames_out)     # never more out than went in
        if n <= start:
            return
        blk = out[start:n] if (start or n < out.shape[0]) else out
        if self.sink is not None:
            try:
                self.sink.write(blk)
            except AudioDeviceError as e:
                raise _SinkLost(str(e)) from None
            if getattr(self.sink, "xruns", 0) > self._seen_xruns[1]:
                self._count_xruns(None, self.sink)
        self.frames_out += n - start

    def _flush(self) -> None:
        """Push the pipeline's look-ahead out with zeros, so frames out == frames in."""
        if self.frames_in == 0 or (self.spec.output is not None and self.sink is None):
            return
        self._buf[:] = 0.0
        bs = self._buf.shape[0]
        guard = self.pipeline.latency_samples // bs + 3
        try:
            while self.frames_out < self.frames_in and guard > 0:
                guard -= 1
                if self._offer is not None:
                    self._offer = None
                self._process(self._buf.T)
                self._emit(bs)
        except (_SinkLost, AudioDeviceError) as e:
            self.log.warning("device_lost", f"{self.name}: playback failed while draining: {e}", pipeline=self.name)
        if self._xf is not None:
            self._finish_swap(self._xf[0])

    # ---- another input rate: soxr at the edge, a ring to exact blocks (as edge_runtime.runner) ----
    def _setup_resampling(self) -> None:
        from .._kernels import RingBuffer
        from ..runner import _Resampler

        p, ch = self.pipeline, self.channels
        sr_in, sr_p, bs = self.sample_rate, p.sample_rate, p.block_size
        self._chunk = np.zeros((max(1, -(-bs * sr_in // sr_p)), ch), dtype=np.float32)
        self._up = _Resampler(sr_in, sr_p, ch)
        self._down = _Resampler(sr_p, sr_in, ch)
        cap = int(np.ceil(self._chunk.shape[0] * sr_p / sr_in)) + 64 + 2 * bs
        self._ring = RingBuffer(cap, ch)
        self._stage = np.zeros((ch, cap), dtype=np.float32)
        self._blk = np.zeros((ch, bs), dtype=np.float32)

    def _push(self, frames: np.ndarray) -> None:
        """Pipeline-rate frames (n, ch) into the ring; run every whole block."""
        n = frames.shape[0]
        pos = 0
        ring, bs = self._ring, self._blk.shape[1]
        while pos < n:
            k = min(n - pos, ring.space)
            np.copyto(self._stage[:, :k], frames[pos:pos + k].T)
            ring.write(self._stage, 0, k)
            pos += k
            while ring.available >= bs:
                ring.read(self._blk, 0, bs)
                self._process(self._blk)
                self._emit_resampled()

    def _emit_resampled(self) -> None:
        out = self._out
        start = 0
        if self._skip:
            start = min(self._skip, out.shape[0])
            self._skip -= start
            if start == out.shape[0]:
                return
        self._write_out(self._down(out[start:] if start else out))

    def _write_out(self, y: np.ndarray) -> None:
        n = min(y.shape[0], self.frames_in - self.frames_out)   # never more out than went in
        if n <= 0:
            return
        if self.sink is not None:
            try:
                self.sink.write(y[:n] if n < y.shape[0] else y)
            except AudioDeviceError as e:
                raise _SinkLost(str(e)) from None
            if getattr(self.sink, "xruns", 0) > self._seen_xruns[1]:
                self._count_xruns(None, self.sink)
        self.frames_out += n

    def _stream_resampled(self) -> bool:
        from .._kernels import sanitize

        s, src, chunk = self.spec, self.source, self._chunk
        cf = chunk.shape[0]
        while not self._stop.is_set():
            if self._offer is not None:
                self._begin_swap()
            want = cf if not s.max_frames else min(cf, s.max_frames - self.frames_in)
            if want <= 0:
                return True
            part = chunk if want == cf else chunk[:want]
            n = self._read(src, part)
            if n is None:
                return False
            if n <= 0:
                return True
            self.frames_in += n
            got = part if n == want else chunk[:n]
            sanitize(got)                  # no NaN/Inf into the resampler (the chain counts its own)
            self._push(self._up(got))
            self.beat = time.monotonic()
            if s.pace:
                ahead = self._t0 + self.frames_in / self.sample_rate - self.beat
                if ahead > 0:
                    self._stop.wait(ahead)
            if n < want:
                return True
        return False

    def _flush_resampled(self) -> None:
        if self.frames_in == 0 or (self.spec.output is not None and self.sink is None):
            return
        ch, bs = self.channels, self._blk.shape[1]
        self._offer = None
        try:
            self._push(self._up(np.zeros((0, ch), np.float32), last=True))
            zeros = np.zeros((bs, ch), np.float32)
            left = self.pipeline.latency_samples
            while left > 0:
                k = min(left, bs)
                self._push(zeros[:k])
                left -= k
            if self._ring.available:
                self._push(zeros[:bs - self._ring.available])
            self._write_out(self._down(np.zeros((0, ch), np.float32), last=True))
            if self.frames_out < self.frames_in:   # a resampler may come out a frame or two short
                self._write_out(np.zeros((self.frames_in - self.frames_out, ch), np.float32))
        except (_SinkLost, AudioDeviceError) as e:
            self.log.warning("device_lost", f"{self.name}: playback failed while draining: {e}", pipeline=self.name)
        if self._xf is not None:
            self._finish_swap(self._xf[0])

    # ---- reload: swap a same-shape pipeline between blocks --------------------------------------
    def _begin_swap(self) -> None:
        new, self._offer = self._offer, None
        bs = self.pipeline.block_size
        n_blocks = int(round(self.crossfade_ms * self.sample_rate / 1000.0 / bs))
        if n_blocks <= 0:
            self._finish_swap(new)
            return
        t = (np.arange(n_blocks * bs, dtype=np.float64) + 1.0) / (n_blocks * bs)
        ramp = (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32).reshape(n_blocks, bs)
        self._xf = (new, 0, ramp, np.zeros((self.channels, bs), dtype=np.float32))

    def _finish_swap(self, new) -> None:
        from ..governor import Governor

        old = self.pipeline
        self._retire(old, new)
        self._xf = None
        self.pipeline = new
        self.governor = Governor(new).attach() if self.spec.governor else None
        self.reloads += 1
        self.log.info("pipeline_swapped", f"{self.name}: new pipeline settings in use without a gap "
                      f"(crossfade {self.crossfade_ms:g} ms)", pipeline=self.name)

    def _retire(self, p, new) -> None:
        chain = p._require()
        b = self._base
        b["blocks"] += chain.blocks
        b["deadline_misses"] += chain.deadline_misses
        b["total_ns"] += chain.total_ns
        b["nonfinite_in"] += chain.nonfinite_in
        b["nonfinite_out"] += chain.nonfinite_out
        b["events_dropped"] += p.events.dropped
        # the incoming pipeline already ran the crossfade's blocks: its frame 0 is that far back
        self._frame_offset += chain.frame - new._require().frame

    # ---- events --------------------------------------------------------------------------------
    def _drain_events(self, p) -> None:
        sr = p.sample_rate
        for ev in p.drain_events():
            key = (ev.node, ev.event)
            self.events[key] = self.events.get(key, 0) + 1
            frame = self._frame_offset + ev.frame
            rec = {"pipeline": self.name, "time_s": round(frame / sr, 6), "frame": frame, "node": ev.node,
                   "event": ev.event, "value": ev.value}
            if self.mqtt is not None:
                self.mqtt.put(self.name, dict(rec, ts=_iso(time.time())))
            dest = self.spec.events
            if dest in ("log", "-"):
                self.log.info("node_event", f"{self.name}: {ev.node} {ev.event} {ev.value:g}", **rec)
            elif self._events_file is not None:
                now = time.time()
                rec["ts"] = _iso(now)          # the wall clock, as in `run --events`
                rec["wall"] = round(now, 3)
                try:
                    self._events_file.write(json.dumps(rec, separators=(",", ":")) + "\n")
                except OSError as e:
                    self._events_lost(e)
        if self._events_file is not None:
            try:
                self._events_file.flush()
            except OSError as e:
                self._events_lost(e)
                return
            limit = self.spec.events_max_mb
            if limit and self._events_file.tell() >= limit * 1e6:
                self._rotate_events()

    def _events_lost(self, e: OSError) -> None:
        """The events file cannot be written (ENOSPC, EIO): say so once, keep the audio running."""
        f, self._events_file = self._events_file, None
        try:
            f.close()
        except OSError:
            pass
        self.log.error("events_failed", f"{self.name}: cannot write {self.spec.events}: {e.strerror or e}; "
                       "events stop, the audio goes on", pipeline=self.name)

    def _rotate_events(self) -> None:
        """events.jsonl -> events.jsonl.1 (the previous .1 goes), and a fresh file: the disk never fills."""
        path = self.spec.events
        try:
            os.fsync(self._events_file.fileno())
            self._events_file.close()
            os.replace(path, path + ".1")
            self._events_file = open(path, "a", buffering=1 << 16)
            self.log.info("events_rotated", f"{self.name}: {path} -> {path}.1", pipeline=self.name)
        except OSError as e:
            self._events_file = None
            self.log.error("events_failed", f"{self.name}: cannot rotate {path}: {e.strerror}; events stop",
                           pipeline=self.name)

    # ---- observation (metrics thread) ----------------------------------------------------------
    def snapshot(self) -> dict:
        p = self.pipeline
        chain = p._chain
        b = self._base
        blocks = b["blocks"] + (chain.blocks if chain is not None else 0)
        total_ns = b["total_ns"] + (chain.total_ns if chain is not None else 0)
        audio_s = blocks * p.block_size / p.sample_rate
        st = p.stats() if chain is not None else {}
        nodes = []
        for n in st.get("nodes", ()):
            if "variant" in n:
                nodes.append({"node": n["name"], "variant": n["variant"], "step_downs": len(n.get("switches", ()))})
        src, snk = self.source, self.sink
        xr = dict(self.xruns)
        if src is not None and getattr(src, "xruns", 0) > self._seen_xruns[0]:
            xr["capture"] += src.xruns - self._seen_xruns[0]
        if snk is not None and getattr(snk, "xruns", 0) > self._seen_xruns[1]:
            xr["playback"] += snk.xruns - self._seen_xruns[1]
        return {
            "name": self.name, "pipeline": p.name, "state": self.state, "error": self.error,
            "input": self.spec.input, "output": self.spec.output,
            "sample_rate": p.sample_rate, "input_sample_rate": self.sample_rate, "block_size": p.block_size,
            "channels": self.channels,
            "budget_ms": p.budget_ms, "latency_ms": p.latency_ms,
            "frames_in": self.frames_in, "frames_out": self.frames_out,
            "blocks": blocks,
            "deadline_misses": b["deadline_misses"] + (chain.deadline_misses if chain is not None else 0),
            "realtime_factor": total_ns / 1e9 / audio_s if audio_s else 0.0,
            "block_ms_p50": st.get("block_ms_p50", 0.0), "block_ms_p99": st.get("block_ms_p99", 0.0),
            "block_ms_max": st.get("block_ms_max", 0.0),
            "nonfinite_in": b["nonfinite_in"] + (chain.nonfinite_in if chain is not None else 0),
            "nonfinite_out": b["nonfinite_out"] + (chain.nonfinite_out if chain is not None else 0),
            "events_dropped": b["events_dropped"] + int(p.events.dropped),
            "xruns": xr, "device_reopens": self.reopens, "reloads": self.reloads,
            "events": [{"node": k[0], "event": k[1], "count": v} for k, v in sorted(self.events.items())],
            "models": nodes, "heartbeat_age_s": round(time.monotonic() - self.beat, 3),
            "uptime_s": round(time.time() - self.started, 3),
        }

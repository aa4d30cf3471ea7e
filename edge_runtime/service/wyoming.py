"""The VAD, the classifier and the denoiser as Wyoming services (Home Assistant's audio-service protocol).

``edge-runtime wyoming --service vad|classify|denoise --uri tcp://0.0.0.0:10700`` serves one
service; every connection is independent and may carry any number of audio streams
(``audio-start``, ``audio-chunk``..., ``audio-stop``). The audio runs through the project's own
pipeline and nodes (:func:`edge_runtime.runner.run_stream`, in a thread per stream), so a stream
of any rate and channel count the client declares is converted at the edge by the runner's soxr
resampler exactly as for a file. What each service sends back (docs/wyoming.md):

* ``vad``: ``voice-started`` / ``voice-stopped`` (``timestamp``: ms of stream time) on each change of
  the ``vad`` node's decision; a ``voice-stopped`` at the end of the stream if voice was still on.
* ``classify``: a wake-word style service (``info.wake``: one model per class label). Each change of
  the decision to a label that was asked for (``detect.names``; default: every label but
  ``silence``) is a ``detection`` with ``name`` = the label, ``timestamp`` and ``confidence`` (the
  smoothed probability, 0..1); ``not-detected`` at the end of a stream without one.
* ``denoise``: the processed audio back, in the client's own format: ``audio-start``,
  ``audio-chunk``..., ``audio-stop``, as many frames as went in, aligned with them (the
  pipeline's look-ahead is trimmed at the start and flushed at the end).

Bad input gets an ``error`` event (``code``: ``audio-format``, ``audio-order`` or ``pipeline``) naming
the value and what is accepted; the rest of that stream is ignored and the connection and the
server keep serving. ``describe`` gets ``info``; ``ping`` gets ``pong``. The ``wyoming`` package is
an extra: ``pip install 'edge-runtime[wyoming]'``.
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
from functools import partial

import numpy as np

from .._version import __version__
from ..errors import ConfigError, EdgeRuntimeError, MissingExtraError
from ..io.base import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, Sink, Source

__all__ = ["SERVICES", "WIDTHS", "MAX_CHANNELS", "load_service_pipeline", "serve"]

log = logging.getLogger("edge_runtime.service.wyoming")

#: back-pressure (``_room``): audio a client may send ahead of the pipeline, and answers it may
#: leave unread, before the server stops reading from its connection
BACKLOG_S = 2.0
MAX_OUT_EVENTS = 256

SERVICES = ("vad", "classify", "denoise")
#: bytes per sample the services take: signed little-endian PCM, as Wyoming's own converter
WIDTHS = (2, 3, 4)
MAX_CHANNELS = 32
URL = "https://example.invalid/audiolab/edge_runtime"
EXTRA = "pip install 'edge-runtime[wyoming]'"
# a pipeline for the vad service when none is given: the node alone (audio passes through unused)
_VAD_PIPELINE = {"name": "wyoming-vad", "sample_rate": 16000, "block_size": 160, "channels": "any",
                 "nodes": [{"type": "vad", "name": "vad"}]}
_DEFAULT = {"classify": "classify", "denoise": "denoise"}


def _wyoming():
    try:
        import wyoming  # noqa: F401
    except ImportError:
        raise MissingExtraError(f"edge-runtime wyoming needs the wyoming package, which is not installed; {EXTRA}") from None


def load_service_pipeline(service: str, pipeline: str | None = None):
    """The pipeline config a service runs: ``pipeline`` (a name or .toml) or the service's default."""
    from ..config import load_pipeline_config, parse_pipeline

    if service not in SERVICES:
        raise ConfigError(f"--service {service!r}; expected one of {', '.join(SERVICES)}")
    if pipeline is None:
        cfg = parse_pipeline(dict(_VAD_PIPELINE), "<wyoming vad>") if service == "vad" else \
            load_pipeline_config(_DEFAULT[service])
    else:
        cfg = load_pipeline_config(pipeline)
    if cfg.stages is not None:
        raise ConfigError(f"{cfg.path}: a staged pipeline runs on files only; a Wyoming service streams")
    probe = cfg.build(16000)
    need = {"vad": "Vad", "classify": "Classify"}.get(service)
    if need and not _nodes_of(probe, need):
        raise ConfigError(f"{cfg.path}: pipeline {cfg.name!r} has no {service} node; the {service} service "
                          f"answers with that node's decisions")
    return cfg, probe


def _nodes_of(pipe, cls_name: str) -> list:
    out = []
    for n in pipe.nodes:
        for m in (n, *getattr(n, "sub_nodes", tuple)()):
            if type(m).__name__ == cls_name:
                out.append(m)
    return out


class _StreamSource(Source):
    """Float frames fed from the event loop, read by the runner's thread (blocks until some come)."""

    def __init__(self, name: str, sample_rate: int, channels: int):
        self.name, self.sample_rate, self.channels, self.frames = name, sample_rate, channels, None
        self._q: queue.Queue = queue.Queue()
        self._buf = None
        self._pos = 0
        self._done = False
        self.fed = 0          # frames fed (written by the event loop only)
        self.consumed = 0     # frames read (written by the runner's thread only)

    @property
    def backlog(self) -> int:
        """Frames fed and not yet read by the pipeline."""
        return self.fed - self.consumed

    def feed(self, frames: np.ndarray | None) -> None:
        """``(n, channels)`` float32 frames; ``None`` ends the stream."""
        if frames is not None:
            self.fed += frames.shape[0]
        self._q.put(frames)

    def read_into(self, out: np.ndarray) -> int:
        n = 0
        while n < out.shape[0] and not self._done:
            if self._buf is None or self._pos >= self._buf.shape[0]:
                if n and self._q.empty():
                    break              # live: hand over what came, do not wait for a full chunk
                self._buf, self._pos = self._q.get(), 0
                if self._buf is None:
                    self._done = True
                    break
            k = min(out.shape[0] - n, self._buf.shape[0] - self._pos)
            out[n:n + k] = self._buf[self._pos:self._pos + k]
            n += k
            self._pos += k
        self.consumed += n
        return n


class _ChunkSink(Sink):
    """Collects output frames as PCM bytes; ``take`` hands over what collected (after each chunk)."""

    def __init__(self, sample_rate: int, channels: int, width: int):
        self.name, self.sample_rate, self.channels, self.width = "<wyoming>", sample_rate, channels, width
        self.parts: list[bytes] = []

    def write(self, block: np.ndarray) -> None:
        self.parts.append(to_pcm(block, self.width))     # converts now: the runner reuses ``block``

    def take(self) -> bytes:
        b, self.parts = b"".join(self.parts), []
        return b


def from_pcm(data: bytes, width: int, channels: int) -> np.ndarray:
    """Signed little-endian PCM of ``width`` bytes -> (frames, channels) float32 in [-1, 1)."""
    if width == 2:
        x = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    elif width == 4:
        x = (np.frombuffer(data, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    else:   # 3: sign-extend each 24-bit sample through the top of an int32
        b = np.frombuffer(data, np.uint8).reshape(-1, 3)
        i = (b[:, 0].astype(np.int32) << 8) | (b[:, 1].astype(np.int32) << 16) | (b[:, 2].astype(np.int32) << 24)
        x = (i.astype(np.float64) / 2147483648.0).astype(np.float32)
    return x.reshape(-1, channels)


def to_pcm(x: np.ndarray, width: int) -> bytes:
    """(frames, channels) float -> signed little-endian PCM bytes, clipped, rounded."""
    full = float(1 << (8 * width - 1))
    i = np.clip(np.rint(np.asarray(x, np.float64) * full), -full, full - 1)
    if width == 2:
        return i.astype("<i2").tobytes()
    if width == 4:
        return i.astype("<i4").tobytes()
    v = i.astype("<i4").reshape(-1, 1).view(np.uint8)     # little-endian: the low 3 bytes
    return v[:, :3].tobytes()


def check_format(rate, width, channels, what: str = "audio-start") -> str | None:
    """None, or the message for a format the services refuse."""
    if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        return f"{what}: rate {rate!r} Hz; expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
    if isinstance(width, bool) or width not in WIDTHS:
        return (f"{what}: width {width!r} bytes per sample; expected one of {', '.join(map(str, WIDTHS))} "
                "(signed little-endian PCM: 16, 24 or 32 bit)")
    if isinstance(channels, bool) or not isinstance(channels, int) or not 1 <= channels <= MAX_CHANNELS:
        return f"{what}: channels {channels!r}; expected 1..{MAX_CHANNELS}"
    return None


class _Stream:
    """One audio stream of a connection: the runner in a thread, its events to the connection."""

    def __init__(self, handler: "_Handler", fmt: tuple[int, int, int], pipe, timestamp: int | None):
        self.h, self.fmt, self.pipe = handler, fmt, pipe
        rate, width, channels = fmt
        self.t0 = int(timestamp or 0)
        self.source = _StreamSource(f"wyoming:{handler.peer}", rate, channels)
        self.sink = _ChunkSink(rate, channels, width) if handler.service == "denoise" else None
        self.frames_in = 0
        self.out_frames = 0
        self.peak_backlog = 0          # frames, the most ever waiting for the pipeline
        self.voice = False
        self.detections = 0
        self._class = None
        self.vad_names = {n.name for n in _nodes_of(pipe, "Vad")}
        cls = _nodes_of(pipe, "Classify")
        self.cls_names = {n.name for n in cls}
        self.labels = cls[0].labels if cls else ()
        self.stop = False
        self.thread = threading.Thread(target=self._run, name=f"wyoming-{handler.service}", daemon=True)

    def ms(self, time_s: float) -> int:
        return self.t0 + int(round(time_s * 1000.0))

    def _send(self, event) -> None:
        self.h.send_threadsafe(event)

    def _run(self) -> None:
        from ..runner import run_stream

        try:
            run_stream(self.pipe, self.source, self.sink, on_event=self._on_event,
                       progress=self._flush if self.sink is not None else None,
                       should_stop=lambda: self.stop)
            self._flush()
            self._finish()
        except EdgeRuntimeError as e:
            self._error(str(e), "pipeline")
        except Exception as e:          # noqa: BLE001 -- one stream fails, the server keeps serving
            log.exception("wyoming stream failed")
            self._error(f"{type(e).__name__}: {e}", "pipeline")

    def _error(self, text: str, code: str) -> None:
        from wyoming.error import Error

        self._send(Error(text=text, code=code).event())

    def _flush(self, *_) -> None:
        if self.sink is None:
            return
        data = self.sink.take()
        if data:
            from wyoming.audio import AudioChunk

            rate, width, channels = self.fmt
            self._send(AudioChunk(rate=rate, width=width, channels=channels, audio=data,
                                  timestamp=self.t0 + self.out_frames * 1000 // rate).event())
            self.out_frames += len(data) // (width * channels)

    def _on_event(self, ev) -> None:
        from wyoming.event import Event
        from wyoming.vad import VoiceStarted, VoiceStopped

        svc = self.h.service
        if svc == "vad" and ev.node in self.vad_names and ev.event in ("speech", "nonspeech"):
            started = ev.event == "speech"
            if started != self.voice:
                self.voice = started
                self._send((VoiceStarted if started else VoiceStopped)(timestamp=self.ms(ev.time_s)).event())
        elif svc == "classify" and ev.node in self.cls_names:
            if ev.event == "class":
                self._class = ev
            elif ev.event == "confidence" and self._class is not None:
                label = self.labels[int(self._class.value)]
                self._class = None
                if label in self.h.wanted(self.labels):
                    self.detections += 1
                    # wake's `detection`, with the classifier's confidence beside its fields
                    self._send(Event(type="detection", data={
                        "name": label, "timestamp": self.ms(ev.time_s), "speaker": None,
                        "confidence": round(float(ev.value), 4)}))

    def _finish(self) -> None:
        from wyoming.audio import AudioStop
        from wyoming.vad import VoiceStopped
        from wyoming.wake import NotDetected

        rate = self.fmt[0]
        if self.h.service == "vad" and self.voice:
            self.voice = False
            self._send(VoiceStopped(timestamp=self.ms(self.frames_in / rate)).event())
        elif self.h.service == "classify" and not self.detections:
            self._send(NotDetected().event())
        elif self.h.service == "denoise":
            self._send(AudioStop(timestamp=self.t0 + self.out_frames * 1000 // rate).event())


def _handler_class():
    from wyoming.server import AsyncEventHandler

    class Handler(AsyncEventHandler):
        """One client connection."""

        def __init__(self, server: "WyomingServer", reader, writer):
            super().__init__(reader, writer)
            self.server, self.service = server, server.service
            self.loop = asyncio.get_running_loop()
            self.out: asyncio.Queue = asyncio.Queue()
            self.sender = self.loop.create_task(self._sender())
            peer = writer.get_extra_info("peername")
            self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
            self.stream: _Stream | None = None
            self.skip = False           # the current stream was refused: ignore it until the next start
            self.names = None           # classify: labels asked for by `detect`
            self.pipes: dict = {}       # built pipelines of this connection, by input rate
            server.connections += 1
            log.info("wyoming client connected: %s", self.peer)

        # ---- sending ----------------------------------------------------------------------
        def send_threadsafe(self, event) -> None:
            self.loop.call_soon_threadsafe(self.out.put_nowait, event)

        async def _sender(self) -> None:
            while True:
                event = await self.out.get()
                if event is None:
                    return
                try:
                    await self.write_event(event)
                except (ConnectionError, RuntimeError):
                    return              # the client went away; the stream ends on its own

        def wanted(self, labels) -> tuple:
            if self.names:
                return tuple(self.names)
            return self.server.labels or tuple(lb for lb in labels if lb != "silence")

        async def _error(self, text: str, code: str) -> None:
            from wyoming.error import Error

            log.warning("wyoming %s: %s", self.peer, text)
            await self.out.put(Error(text=text, code=code).event())

        # ---- receiving --------------------------------------------------------------------
        async def handle_event(self, event) -> bool:
            from wyoming.audio import AudioChunk, AudioStart, AudioStop
            from wyoming.info import Describe
            from wyoming.ping import Ping, Pong
            from wyoming.wake import Detect

            if Describe.is_type(event.type):
                await self.out.put(self.server.info_event())
            elif Ping.is_type(event.type):
                await self.out.put(Pong(text=Ping.from_event(event).text).event())
            elif Detect.is_type(event.type) and self.service == "classify":
                names = Detect.from_event(event).names
                unknown = [n for n in names or () if n not in self.server.all_labels]
                if unknown:
                    await self._error(f"detect: names {unknown} are not labels of this classifier; expected "
                                      f"some of {', '.join(self.server.all_labels)}", "audio-format")
                else:
                    self.names = names or None
            elif AudioStart.is_type(event.type):
                await self._end_stream()
                await self._start(AudioStart.from_event(event))
            elif AudioChunk.is_type(event.type):
                await self._chunk(AudioChunk.from_event(event))
            elif AudioStop.is_type(event.type):
                if self.stream is None and not self.skip:
                    await self._error("audio-stop without an audio-start", "audio-order")
                await self._end_stream()
                self.skip = False
            return True                 # other events are dropped, as Wyoming servers do

        async def _start(self, start) -> None:
            self.skip = False
            msg = check_format(start.rate, start.width, start.channels)
            if msg is None:
                try:
                    pipe = await self.loop.run_in_executor(None, self._pipeline, start.rate, start.channels)
                except EdgeRuntimeError as e:
                    msg = str(e)
            if msg is not None:
                self.skip = True
                await self._error(msg, "audio-format")
                return
            self.stream = _Stream(self, (start.rate, start.width, start.channels), pipe, start.timestamp)
            if self.service == "denoise":
                from wyoming.audio import AudioStart

                await self.out.put(AudioStart(rate=start.rate, width=start.width, channels=start.channels,
                                              timestamp=start.timestamp).event())
            self.stream.thread.start()

        def _pipeline(self, rate: int, channels: int):
            from ..errors import AudioInputError

            pipe = self.pipes.get(rate)
            if pipe is None:
                pipe = self.pipes[rate] = self.server.acquire(rate)
            if pipe.fixed_channels is not None and channels != pipe.fixed_channels:
                raise AudioInputError(f"audio-start: channels {channels}; pipeline {pipe.name!r} expects "
                                      f"{pipe.fixed_channels}")
            return pipe

        async def _chunk(self, chunk) -> None:
            if self.skip:
                return
            s = self.stream
            if s is None:
                self.skip = True
                await self._error("audio-chunk before audio-start; send audio-start with rate, width and channels "
                                  "first", "audio-order")
                return
            fmt = (chunk.rate, chunk.width, chunk.channels)
            frame_bytes = s.fmt[1] * s.fmt[2]
            msg = None
            if fmt != s.fmt:
                msg = (f"audio-chunk: rate {chunk.rate} Hz, width {chunk.width}, channels {chunk.channels}; the stream's "
                       f"audio-start said {s.fmt[0]} Hz, width {s.fmt[1]}, channels {s.fmt[2]}")
            elif len(chunk.audio) % frame_bytes:
                msg = (f"audio-chunk: {len(chunk.audio)} bytes is not a whole number of frames of {frame_bytes} bytes "
                       f"(width {s.fmt[1]} x {s.fmt[2]} channel(s))")
            if msg is not None:
                self.skip = True
                await self._abort(s)
                await self._error(msg, "audio-format")
                return
            if chunk.audio:
                x = from_pcm(chunk.audio, s.fmt[1], s.fmt[2])
                await self._room(s)
                s.frames_in += x.shape[0]
                s.source.feed(x)
                s.peak_backlog = max(s.peak_backlog, s.source.backlog)

        async def _room(self, s: _Stream) -> None:
            """Back-pressure: while more than ``BACKLOG_S`` of audio waits for the pipeline, or more
            than ``MAX_OUT_EVENTS`` answers wait for a client that does not read them, stop reading
            from this connection (its TCP window closes and the client's writes block), so a client
            sending a long file at once holds at most that much in the server's memory."""
            limit = int(BACKLOG_S * s.fmt[0])
            while (s.source.backlog > limit or self.out.qsize() > MAX_OUT_EVENTS) and s.thread.is_alive():
                await asyncio.sleep(0.002)

        async def _abort(self, s: _Stream) -> None:
            """Stop a stream without its closing events (it was refused, or the client left)."""
            s.stop = True
            s.h = _Muted()
            s.source.feed(None)
            await asyncio.to_thread(s.thread.join)
            self.stream = None

        async def _end_stream(self) -> None:
            s, self.stream = self.stream, None
            if s is not None:
                s.source.feed(None)
                await asyncio.to_thread(s.thread.join)
                log.info("wyoming %s: stream of %d frames at %d Hz, peak backlog %.3f s", self.peer, s.frames_in,
                         s.fmt[0], s.peak_backlog / s.fmt[0])

        async def disconnect(self) -> None:
            if self.stream is not None:
                await self._abort(self.stream)
            await self.out.put(None)
            for rate, pipe in self.pipes.items():
                self.server.release(rate, pipe)
            self.pipes = {}
            self.server.connections -= 1
            log.info("wyoming client disconnected: %s", self.peer)

    return Handler


class _Muted:
    """Where an aborted stream's events go: nowhere."""

    service = ""

    def send_threadsafe(self, event) -> None:
        pass


class WyomingServer:
    """One service on one URI (``tcp://HOST:PORT``, ``unix://PATH`` or ``stdio://``)."""

    def __init__(self, service: str, uri: str, pipeline: str | None = None, labels: tuple = ()):
        _wyoming()
        self.service, self.uri = service, uri
        self.config, probe = load_service_pipeline(service, pipeline)
        cls = _nodes_of(probe, "Classify")
        self.all_labels = tuple(cls[0].labels) if cls else ()
        bad = [lb for lb in labels if lb not in self.all_labels]
        if bad:
            raise ConfigError(f"--labels {','.join(labels)}: {bad} are not labels of pipeline {self.config.name!r}; "
                              f"expected some of {', '.join(self.all_labels)}")
        self.labels = tuple(labels)
        self.connections = 0
        # built pipelines that connections gave back, by input rate: a new connection (Home Assistant
        # opens one per pipeline run) streams at once instead of loading the model again
        self._idle: dict[int, list] = {}
        self._idle_lock = threading.Lock()

    def acquire(self, rate: int):
        """A built pipeline for input ``rate`` (an idle one, else a new one); any thread."""
        with self._idle_lock:
            idle = self._idle.get(rate)
            if idle:
                return idle.pop()
        return self.config.build(rate)

    def release(self, rate: int, pipe) -> None:
        with self._idle_lock:
            idle = self._idle.setdefault(rate, [])
            if len(idle) < 4:           # bounded: a burst of connections does not pin their models
                idle.append(pipe)

    def info_event(self):
        """``info``: the classifier as a wake program (one model per label); every service also
        describes itself under ``edge_runtime`` (service, pipeline, rate, what it sends)."""
        from wyoming.info import Attribution, Info, WakeModel, WakeProgram

        attribution = Attribution(name="AudioLab edge_runtime", url=URL)
        info = Info()
        if self.service == "classify":
            info.wake = [WakeProgram(
                name="edge-runtime-classify", attribution=attribution, installed=True, version=__version__,
                description=f"sound classifier ({self.config.name}): a detection when the sound changes to a label",
                models=[WakeModel(name=lb, phrase=lb, attribution=attribution, installed=True, languages=[],
                                  description=f"sound class {lb!r}", version=__version__)
                        for lb in self.all_labels])]
        ev = info.event()
        sends = {"vad": ["voice-started", "voice-stopped"], "classify": ["detection", "not-detected"],
                 "denoise": ["audio-start", "audio-chunk", "audio-stop"]}[self.service]
        ev.data["edge_runtime"] = {
            "service": self.service, "pipeline": self.config.name, "version": __version__,
            "sample_rate": self.config.sample_rate, "sends": sends + ["error"],
            "accepts": {"rate": [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE], "width": list(WIDTHS),
                        "channels": [1, MAX_CHANNELS]},
            **({"labels": list(self.all_labels), "detects": list(self.labels or
                                                                 [lb for lb in self.all_labels if lb != "silence"])}
               if self.service == "classify" else {})}
        return ev

    async def run(self, ready=None) -> None:
        from wyoming.server import AsyncServer

        try:
            server = AsyncServer.from_uri(self.uri)
        except ValueError as e:
            raise ConfigError(f"--uri {self.uri!r}: {e}") from None
        handler = _handler_class()
        log.info("wyoming %s service (pipeline %s) on %s", self.service, self.config.name, self.uri)
        if ready is not None:
            ready()
        await server.run(partial(handler, self))


def serve(service: str, uri: str, pipeline: str | None = None, labels: tuple = ()) -> int:
    """Serve until SIGTERM/SIGINT (the CLI's ``edge-runtime wyoming``)."""
    srv = WyomingServer(service, uri, pipeline, labels)
    try:
        asyncio.run(srv.run())
    except OSError as e:
        raise EdgeRuntimeError(f"--uri {uri}: cannot listen ({e.strerror or e})") from None
    except KeyboardInterrupt:
        return 130
    return 0

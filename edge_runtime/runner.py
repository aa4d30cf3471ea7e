"""Stream audio from a source through a pipeline into a sink, block by block.

The runner is the edge between the outside world and the fixed-block engine:

* it reads the source in chunks into one preallocated buffer, sanitizes NaN/Inf there (and
  counts them) so nothing non-finite reaches a resampler or a node;
* when the source rate differs from the pipeline rate it converts with ``soxr`` on the way
  in and back to the source rate on the way out, so output rate == input rate;
* a ring buffer turns arbitrary chunk sizes into exact pipeline blocks;
* with ``compensate_latency`` the pipeline's look-ahead is trimmed from the start and
  flushed with zeros at the end, so a file comes out with exactly as many frames as went in;
* events the nodes emit are drained after each chunk to ``on_event``, in stream-time order
  across nodes (a node that dates events back, ``event_lookback_samples``, holds the others
  back that long), each stamped with the wall clock (``ts``, ISO-8601 UTC);
* when the input's rate is above the pipeline's, the share of the input's energy above the
  pipeline's Nyquist frequency (which the pipeline cannot pass) is measured on a short slice
  every second and reported (``band_above_nyquist_db``, a ``warnings`` entry above -40 dB).

Memory is flat for any file length: only the chunk, the ring and the block buffers exist.
(The ``soxr`` stream API returns a new array per chunk; that happens only when rates
differ and is outside the engine's block loop.)
"""
from __future__ import annotations

import dataclasses
import datetime
import time
from typing import Callable

import numpy as np

from ._kernels import RingBuffer, sanitize
from .engine import Event, Pipeline
from .errors import AudioInputError
from .io.base import Sink, Source

__all__ = ["RunSummary", "run_stream"]


@dataclasses.dataclass
class RunSummary:
    input: str
    output: str
    pipeline: str
    input_sample_rate: int
    pipeline_sample_rate: int
    channels: int
    resampled: bool
    frames_in: int
    frames_out: int
    duration_s: float
    wall_s: float
    speed: float               # seconds of audio processed per second of wall time
    realtime_factor: float     # engine time / audio time (< 1 is faster than real time)
    blocks: int
    block_size: int
    budget_ms: float
    deadline_misses: int
    block_ms_p50: float
    block_ms_p99: float
    block_ms_max: float
    latency_ms: float
    nonfinite_in: int
    nonfinite_out: int
    events: int
    events_dropped: int
    stopped: bool
    nodes: list
    output_sample_rate: int = 0
    # energy of the input above the pipeline's Nyquist, dB relative to all of it (None: not
    # downsampled, or nothing measured); the band the pipeline throws away
    band_above_nyquist_db: float | None = None
    warnings: list = dataclasses.field(default_factory=list)
    # bus -> {"output", "frames_out", "latency_ms"} for each bus written (run_stream's bus_sinks)
    bus_outputs: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: band loss is reported when more than this share of the input's energy (dB) is above the
#: pipeline's Nyquist: a 48 kHz recording of speech holds about -20 dB there, white noise -0.5 dB,
#: a 16 kHz recording upsampled to 48 kHz nothing (below -100 dB)
BAND_LOSS_DB = -40.0


def _full_band_hint(name: str, sr_in: int) -> str:
    """``: try speech_gate48k`` when a shipped pipeline of that name runs at the input's rate."""
    from .config import list_pipelines, load_pipeline_config

    want = f"{name}{sr_in // 1000}k"
    path = list_pipelines().get(want)
    try:
        if path is not None and load_pipeline_config(str(path)).sample_rate == sr_in:
            return f": try {want}"
    except Exception:  # a hint only: a broken pipeline file must not break the run's summary
        pass
    return ""


def _utc_now() -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class _BandMeter:
    """Energy above ``cutoff_hz`` as a share of the total, from one chunk-sized slice of the
    input (a power of two, 256..4096 frames) once a second: one short FFT per second of audio,
    outside the block loop, negligible next to the resampler that runs anyway when rates differ."""

    def __init__(self, sample_rate: int, cutoff_hz: float, chunk_frames: int):
        self.N = n = max(256, min(4096, 1 << (int(chunk_frames).bit_length() - 1)))
        self.every = int(sample_rate)
        self.cut = int(np.ceil(cutoff_hz * n / sample_rate))
        self.win = np.hanning(n).astype(np.float32)
        self.mono = np.zeros(n, np.float32)
        self.next = 0
        self.high = 0.0
        self.total = 0.0

    def __call__(self, chunk: np.ndarray, pos: int) -> None:
        """``chunk`` (n, ch) are input frames ``pos..pos+n``; measure when a slice is due."""
        n = chunk.shape[0]
        if pos + n < self.next or n < self.N:
            return
        np.mean(chunk[:self.N], axis=1, out=self.mono)
        self.mono *= self.win
        p = np.abs(np.fft.rfft(self.mono)) ** 2
        self.high += float(p[self.cut:].sum())
        self.total += float(p.sum())
        self.next = pos + n + self.every

    def db(self) -> float | None:
        if self.total <= 1e-20:
            return None
        return 10.0 * np.log10(max(self.high / self.total, 1e-12))


class _Resampler:
    """Streaming sample-rate conversion of ``(frames, channels)`` float32 chunks."""

    def __init__(self, rate_in: int, rate_out: int, channels: int, quality: str = "HQ"):
        import soxr

        self._stream = soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32",
                                           quality=quality)

    def __call__(self, chunk: np.ndarray, last: bool = False) -> np.ndarray:
        return self._stream.resample_chunk(chunk, last=last)


def run_stream(pipeline: Pipeline, source: Source, sink: Sink | None, *,
               compensate_latency: bool = True,
               chunk_frames: int | None = None,
               on_event: Callable[[Event], None] | None = None,
               progress: Callable[[int, int | None], None] | None = None,
               should_stop: Callable[[], bool] | None = None,
               resample_quality: str = "HQ",
               governor=None,
               bus_sinks: dict[str, Sink | None] | None = None) -> RunSummary:
    """Run ``source`` through ``pipeline`` into ``sink`` until the source ends.

    ``progress(frames_done, frames_total)`` is called after each chunk; ``should_stop()``
    ends the stream early (the tail is still flushed, so nothing read is lost). The
    pipeline is prepared here for the source's channel count. The sink is written but not
    closed: the caller commits or discards it. ``governor`` (an
    :class:`~edge_runtime.governor.Governor` of this pipeline) is told of every block.
    ``bus_sinks`` maps some of the pipeline's buses (``pipeline.buses``) to sinks (``None``: counted,
    not written): each gets the bus's audio, aligned with the input by the bus's own latency and as
    many frames as went in, at the same rate as the main output.
    """
    ch = int(source.channels)
    if pipeline.fixed_channels is not None and ch != pipeline.fixed_channels:
        raise AudioInputError(
            f"{source.name}: has {ch} channel(s); pipeline {pipeline.name!r} "
            f"({getattr(pipeline, 'config_path', 'in code')}) expects {pipeline.fixed_channels}")
    at_pipeline_rate = pipeline.output_rate == "pipeline"
    sr_out = pipeline.sample_rate if at_pipeline_rate else int(source.sample_rate)
    if sink is not None and (sink.channels != ch or sink.sample_rate != sr_out):
        raise ValueError(f"sink {sink.name!r} is {sink.sample_rate} Hz/{sink.channels} ch, "
                         f"expected {sr_out} Hz/{ch} ch")
    if not pipeline.prepared or pipeline.channels != ch:
        pipeline.prepare(ch)
    else:
        pipeline.reset()
    bus_sinks = dict(bus_sinks or {})
    for b, bsink in bus_sinks.items():
        if b not in pipeline.buses:
            raise ValueError(f"pipeline {pipeline.name!r} has no bus {b!r} (buses: {', '.join(pipeline.buses) or 'none'})")
        if bsink is not None and (bsink.channels != ch or bsink.sample_rate != sr_out):
            raise ValueError(f"sink {bsink.name!r} is {bsink.sample_rate} Hz/{bsink.channels} ch, "
                             f"expected {sr_out} Hz/{ch} ch")
    pipeline.reset_stats()
    if governor is not None:
        governor.attach()

    sr_in, sr_pipe, bs = int(source.sample_rate), pipeline.sample_rate, pipeline.block_size
    resampled = sr_in != sr_pipe
    if chunk_frames is None:
        # about 40 ms of input per read, at least one block's worth
        chunk_frames = max(bs * sr_in // sr_pipe + 1, sr_in // 25)
    chunk = np.zeros((chunk_frames, ch), dtype=np.float32)
    up = _Resampler(sr_in, sr_pipe, ch, resample_quality) if resampled else None
    # ring holds pipeline-rate frames waiting for a full block
    max_in = int(np.ceil(chunk_frames * sr_pipe / sr_in)) + 64 if resampled else chunk_frames
    ring = RingBuffer(max_in + 2 * bs, ch)
    chain_in, chain_out = pipeline.input, pipeline.output
    lat = pipeline.latency_samples if compensate_latency else 0

    state = {"events": 0, "blocks": 0}
    meter = _BandMeter(sr_in, sr_pipe / 2.0, chunk_frames) if sr_in > sr_pipe else None
    # events are held until no node can still date one earlier, then released in time order
    lookback = max((int(getattr(n, "event_lookback_samples", 0) or 0) for n in pipeline.nodes), default=0)
    held: list[Event] = []
    frames_total = source.frames

    def out_total(n_in):
        """Output frames that ``n_in`` input frames make (at the output's rate)."""
        if n_in is None or sr_out == sr_in:
            return n_in
        return int(round(n_in * sr_out / sr_in))

    class _Out:
        """One output stream (the main one, or a bus): its latency trim, its resampler back to the
        input's rate, its sink and its frame count."""

        def __init__(self, sink, skip, block):
            self.sink, self.skip, self.block, self.frames_out = sink, skip, block, 0
            self.frames = np.zeros((bs, ch), dtype=np.float32)   # the block, interleaved for sinks
            self.frames_t = self.frames.T                        # (ch, bs) view to copy into
            self.down = _Resampler(sr_pipe, sr_in, ch, resample_quality) if resampled and not at_pipeline_rate \
                else None

        def emit(self, block: np.ndarray) -> None:
            """Write pipeline-rate output frames (n, ch), after the latency trim."""
            n = block.shape[0]
            if self.skip:
                k = min(self.skip, n)
                self.skip -= k
                block = block[k:]
                n -= k
                if n == 0:
                    return
            if self.down is not None:
                block = self.down(block)
                n = block.shape[0]
                if n == 0:
                    return
            if frames_total is not None:
                # never write more frames than went in (the resampler may round up by one)
                n = min(n, out_total(frames_total) - self.frames_out)
                if n <= 0:
                    return
                block = block[:n]
            if self.sink is not None:
                self.sink.write(block)
            self.frames_out += n

        def finish(self) -> None:
            """The resampler's tail, then silence up to as many frames as went in."""
            if self.down is not None:
                tail = self.down(np.zeros((0, ch), dtype=np.float32), last=True)
                n = min(tail.shape[0], out_total(frames_total) - self.frames_out)
                if n > 0:
                    if self.sink is not None:
                        self.sink.write(tail[:n])
                    self.frames_out += n
            if self.frames_out < out_total(frames_total):
                # a resampler may deliver a frame or two short in total; pad with silence
                pad = out_total(frames_total) - self.frames_out
                if self.sink is not None:
                    self.sink.write(np.zeros((pad, ch), dtype=np.float32))
                self.frames_out += pad

    main_out = _Out(sink, lat, chain_out)
    # one output per bus sink, each trimmed by its own bus's latency
    bus_outs = [_Out(bsink, pipeline.bus_latency_samples[b] if compensate_latency else 0, pipeline.bus_output(b))
                for b, bsink in bus_sinks.items()]
    flush = max([lat] + [o.skip for o in bus_outs])

    def run_blocks() -> None:
        while ring.available >= bs:
            ring.read(chain_in, 0, bs)
            pipeline.process_block()
            if governor is not None:
                governor.after_block()
            np.copyto(main_out.frames_t, chain_out)
            state["blocks"] += 1
            main_out.emit(main_out.frames)
            for o in bus_outs:
                np.copyto(o.frames_t, o.block)
                o.emit(o.frames)

    def drain_events(final: bool = False) -> None:
        if pipeline.events.count:
            ts = _utc_now()
            for ev in pipeline.drain_events():
                state["events"] += 1
                if on_event is not None:
                    held.append(dataclasses.replace(
                        ev, ts=ts, frame=int(round(ev.time_s * sr_in)) if resampled else ev.frame))
        if not held:
            return
        held.sort(key=lambda e: e.time_s)           # stable: one node's events keep their order
        if final:
            n = len(held)
        else:
            horizon = (state["blocks"] * bs - lookback) / sr_pipe
            n = 0
            while n < len(held) and held[n].time_s <= horizon:
                n += 1
        for ev in held[:n]:
            on_event(ev)
        del held[:n]

    def push(frames: np.ndarray) -> None:
        """Push pipeline-rate frames (n, ch) into the ring, running blocks as it fills."""
        pos = 0
        n = frames.shape[0]
        while pos < n:
            k = min(n - pos, ring.space)
            ring.write(np.ascontiguousarray(frames[pos:pos + k].T), 0, k)
            pos += k
            run_blocks()

    # a (ch, chunk) staging array so the ring receives channel-major frames without allocating
    staged = np.zeros((ch, chunk_frames), dtype=np.float32)
    nonfinite_edge = 0
    frames_in = 0
    stopped = False
    t0 = time.perf_counter()
    while True:
        if should_stop is not None and should_stop():
            stopped = True
            break
        n = source.read_into(chunk)
        if n <= 0:
            break
        frames_in += n
        if resampled:
            nonfinite_edge += sanitize(chunk[:n]) if n == chunk_frames else sanitize(
                np.ascontiguousarray(chunk[:n]))
            if meter is not None:
                meter(chunk[:n], frames_in - n)
            push(up(chunk[:n]))
        else:
            # fast path: no resampler, straight into the ring (the chain sanitizes)
            np.copyto(staged[:, :n], chunk[:n].T)
            pos = 0
            while pos < n:
                k = min(n - pos, ring.space)
                ring.write(staged, pos, k)
                pos += k
                run_blocks()
        drain_events()
        if progress is not None:
            progress(frames_in, frames_total)

    # flush: the resampler's tail, zeros for the look-ahead, zeros to complete the last block
    if up is not None:
        push(up(np.zeros((0, ch), dtype=np.float32), last=True))
    frames_total = frames_in  # exact from here on (also for stdin and live sources)
    zeros = np.zeros((bs, ch), dtype=np.float32)
    remaining = flush
    while remaining > 0:
        k = min(remaining, bs)
        push(zeros[:k])
        remaining -= k
    if ring.available:
        push(zeros[:bs - ring.available])
    main_out.finish()
    for o in bus_outs:
        o.finish()
    drain_events(final=True)
    wall = time.perf_counter() - t0
    band_db = meter.db() if meter is not None else None
    warnings = []
    if band_db is not None and band_db > BAND_LOSS_DB:
        warnings.append(f"band loss: the input's energy above {sr_pipe / 2000:g} kHz ({band_db:.0f} dB of the "
                        f"total) is removed by the {sr_pipe} Hz pipeline {pipeline.name!r}; the {sr_in} Hz "
                        f"output is band-limited to {sr_pipe / 2000:g} kHz (a {sr_in} Hz pipeline keeps it"
                        f"{_full_band_hint(pipeline.name, sr_in)})")

    st = pipeline.stats()
    duration = frames_in / sr_in if sr_in else 0.0
    return RunSummary(
        input=source.name, output=sink.name if sink is not None else "",
        pipeline=pipeline.name, input_sample_rate=sr_in, pipeline_sample_rate=sr_pipe, output_sample_rate=sr_out,
        channels=ch, resampled=resampled, frames_in=frames_in, frames_out=main_out.frames_out,
        duration_s=duration, wall_s=wall, speed=duration / wall if wall > 0 else 0.0,
        realtime_factor=st["realtime_factor"], blocks=st["blocks"], block_size=bs,
        budget_ms=st["budget_ms"], deadline_misses=st["deadline_misses"],
        block_ms_p50=st["block_ms_p50"], block_ms_p99=st["block_ms_p99"],
        block_ms_max=st["block_ms_max"], latency_ms=st["latency_ms"],
        nonfinite_in=st["nonfinite_in"] + int(nonfinite_edge), nonfinite_out=st["nonfinite_out"],
        events=state["events"], events_dropped=st["events_dropped"], stopped=stopped,
        nodes=st["nodes"], band_above_nyquist_db=None if band_db is None else round(band_db, 1),
        warnings=warnings,
        bus_outputs={b: {"output": bsink.name if bsink is not None else "", "frames_out": o.frames_out,
                         "latency_ms": 1e3 * pipeline.bus_latency_samples[b] / sr_pipe}
                     for (b, bsink), o in zip(bus_sinks.items(), bus_outs)})

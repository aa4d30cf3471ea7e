"""``edge-runtime``: run pipelines on files, stdin/stdout or ALSA; inspect the device.

Every error ends with one line ``error: <what, where, expected>`` on stderr and no output
file left under the output name; the exit status tells a usage error (2) from a runtime
failure (1) and an interruption (128 + signal), see :mod:`edge_runtime.errors` and docs/cli.md.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time

from ._version import __version__
from .errors import EXIT_USAGE, EdgeRuntimeError

RAW_FORMATS = ("s16le", "s32le", "f32le")
log = logging.getLogger("edge_runtime.cli")


def _clock(seconds: float) -> str:
    m, sec = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


class _Progress:
    """A one-line progress display on stderr (only on a terminal, at most 10 updates/s): for an
    input of known length a bar, percent, speed (x real time) and ETA; for a live one the audio
    time processed and the speed."""

    def __init__(self, label: str, enabled: bool, sample_rate: int = 0, clock=time.monotonic):
        self.label = label
        self.enabled = enabled
        self.sample_rate = int(sample_rate)
        self.clock = clock
        self.t0 = None
        self.last = 0.0
        self.width = 0

    def line(self, done: int, total: int | None, elapsed: float) -> str:
        audio_s = done / self.sample_rate if self.sample_rate else 0.0
        speed = audio_s / elapsed if elapsed > 0 else 0.0
        rate = f"{speed:.1f}x real time" if speed else "--x real time"
        if not total:
            return f"{self.label} {_clock(audio_s)} of audio  {rate}"
        frac = min(1.0, done / total)
        left_s = (total - done) / self.sample_rate if self.sample_rate else 0.0
        eta = _clock(left_s / speed) if speed else "--:--"
        return f"{self.label} [{'#' * int(frac * 30):<30}] {frac * 100:5.1f}%  {rate}  ETA {eta}"

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if self.t0 is None:
            self.t0 = now
        if now - self.last < 0.1 and (not total or done < total):
            return
        self.last = now
        text = self.line(done, total, now - self.t0)
        sys.stderr.write("\r" + text + " " * max(0, self.width - len(text)))
        self.width = len(text)
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self.width:
            sys.stderr.write("\n")
            sys.stderr.flush()


class _LiveStop:
    """On a live input, the first SIGINT (Ctrl-C) asks the run to stop before its next read
    (``should_stop``; a live source delivers every period), so the tail is flushed, outputs are
    committed and the summary printed; a second one interrupts at once (KeyboardInterrupt:
    outputs discarded). SIGTERM/SIGHUP keep their meaning (:class:`Terminated`: discard)."""

    SIGNALS = (signal.SIGINT,)

    def __init__(self, live: bool):
        self.live = live
        self.signum = None
        self.old = {}

    def _handler(self, signum, frame):
        if self.signum is not None:          # the second one: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def should_stop(self) -> bool:
        return self.signum is not None

    def __enter__(self):
        if self.live:
            for sig in self.SIGNALS:
                try:
                    self.old[sig] = signal.signal(sig, self._handler)
                except (ValueError, OSError):    # not the main thread
                    pass
        return self

    def __exit__(self, *exc):
        for sig, h in self.old.items():
            signal.signal(sig, h)
        self.old = {}
        return False


def _print_summary(summary: dict, extra: dict | None = None) -> None:
    s = summary
    lines = [
        f"pipeline     {s['pipeline']}  ({s['pipeline_sample_rate']} Hz, block {s['block_size']}, "
        f"latency {s['latency_ms']:.2f} ms)",
        f"input        {s['input']}  ({s['input_sample_rate']} Hz, {s['channels']} ch"
        f"{', resampled' if s['resampled'] else ''})",
        f"output       {s['output'] or '-'}"
        + (f"  ({s['output_sample_rate']} Hz: the pipeline's rate)"
           if s.get("output_sample_rate") and s["output_sample_rate"] != s["input_sample_rate"] else ""),
        *(f"bus          {b}: {v['output'] or '-'}  frames out {v['frames_out']}  latency {v['latency_ms']:.2f} ms"
          for b, v in (s.get("bus_outputs") or {}).items()),
        f"frames       in {s['frames_in']}  out {s['frames_out']}  ({s['duration_s']:.2f} s of audio)",
        f"speed        {s['speed']:.1f}x real time  (engine real-time factor {s['realtime_factor']:.4f})",
        f"blocks       {s['blocks']}  p50 {s['block_ms_p50'] * 1e3:.1f} us  p99 {s['block_ms_p99'] * 1e3:.1f} us"
        f"  max {s['block_ms_max'] * 1e3:.1f} us  budget {s['budget_ms']:.2f} ms"
        f"  deadline misses {s['deadline_misses']}",
        f"sanitized    {s['nonfinite_in']} NaN, Inf or out-of-range (|x| > 1000) input samples, {s['nonfinite_out']} at output",
        f"events       {s['events']}" + (f" ({s['events_dropped']} dropped)" if s["events_dropped"] else ""),
    ]
    for n in s.get("nodes") or ():
        if n.get("variant"):
            steps = "".join(f"; stepped down {w['from']} -> {w['to']} ({w['reason']})" for w in n["switches"])
            lines.append(f"model        {n['name']}: {n['variant']}  mean {n['mean_us']:.1f} us  "
                         f"max {n['max_us']:.1f} us{steps}")
    for n in s.get("nodes") or ():
        if n.get("report"):
            lines.append(f"{n['name']:<12} " + "  ".join(f"{k} {v}" for k, v in n["report"].items()))
    if s.get("stopped_by"):
        lines.append(f"stopped      by {s['stopped_by']} after {s['duration_s']:.2f} s (live input: "
                     f"outputs committed up to there)")
    for w in s.get("warnings") or ():
        lines.append(f"warning      {w}")
    for k, v in (extra or {}).items():
        lines.append(f"{k:<12} {v}")
    print("\n".join(lines))


def _event_writer(path: str | None, pipeline: str = "run"):
    """Return (callback, finish, close) writing events as JSON lines to ``path`` ('-' = stdout).
    ``finish()`` makes the file durable (a full disk shows there); ``close(ok)`` commits or
    discards it. Every OS error is one AudioOutputError naming the file. ``mqtt://`` and
    ``mqtts://`` URLs publish through serve's publisher and on-disk queue (service/mqtt.py)."""
    if path is None:
        return None, lambda: None, lambda ok: None
    if path.startswith(("mqtt://", "mqtts://")):
        from .service.mqtt import run_event_writer

        return run_event_writer(path, pipeline)[:3]
    if path == "-":
        def cb(ev):
            sys.stdout.write(json.dumps(ev.to_dict()) + "\n")
        return cb, sys.stdout.flush, lambda ok: sys.stdout.flush()
    from .atomic import AtomicFile
    from .errors import AudioOutputError, AudioWriteError

    def fail(what, e):
        # the file could not be created: usage (2); it failed once written to: runtime (1)
        return (AudioOutputError if what == "create" else AudioWriteError)(f"{path}: cannot {what} the events file: {e.strerror or e}")

    try:
        f = AtomicFile(path, "w")
    except OSError as e:
        raise fail("create", e) from None

    def cb(ev):
        try:
            f.write(json.dumps(ev.to_dict()) + "\n")
        except OSError as e:
            raise fail("write", e) from None

    def finish():
        try:
            f.finish()
        except OSError as e:
            raise fail("write", e) from None

    def close(ok):
        try:
            f.close(ok)
        except OSError as e:
            raise fail("commit", e) from None

    return cb, finish, close


def _run_stages(cfg, args) -> int:
    """A staged pipeline: each stage reads the previous one's output (a float WAV in a temporary
    folder beside the output) at its own rate; the last writes ``-o``. All or nothing."""
    from .errors import ConfigError

    names = " -> ".join(s.name for s in cfg.stages)
    if not args.output or args.output == "-" or args.output.startswith("alsa:"):
        raise ConfigError(f"{cfg.path}: the staged pipeline {cfg.name!r} ({names}) writes a file: give -o PATH")
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise ConfigError(f"{args.output}: directory {out_dir} does not exist")
    summaries = []
    # events of every stage in one file, each named by its stage's pipeline ("node": "bwe16k/bwe")
    on_event, finish_events, close_events = _event_writer(args.events, cfg.name)
    done = False
    try:
        _stages(cfg, args, summaries, on_event)
        finish_events()
        done = True
    finally:
        close_events(done)
    if args.json:
        first, last = summaries[0], summaries[-1]
        print(json.dumps({"pipeline": cfg.name, "input": first["input"], "output": last["output"],
                          "input_sample_rate": first["input_sample_rate"],
                          "output_sample_rate": last["output_sample_rate"], "frames_in": first["frames_in"],
                          "frames_out": last["frames_out"], "duration_s": first["duration_s"],
                          "blocks": sum(s["blocks"] for s in summaries), "stages": summaries}))
    elif not args.quiet:
        for s in summaries:
            _print_summary(s)
            print()
    return 0


def _stages(cfg, args, summaries: list, on_event) -> None:
    """Run each stage of ``cfg`` in turn; a summary per stage appended to ``summaries``."""
    import dataclasses
    import tempfile

    from .io import open_sink, open_source
    from .runner import run_stream

    out_dir = os.path.dirname(os.path.abspath(args.output))
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".edge_runtime-stages-") as tmp:
        src_path = args.input
        for i, stage in enumerate(cfg.stages):
            last = i == len(cfg.stages) - 1
            source = open_source(src_path, sample_rate=args.rate, channels=args.channels, raw_format=args.raw_format)
            sink, ok = None, False
            try:
                pipe = stage.build(source.sample_rate)
                rate = pipe.sample_rate if pipe.output_rate == "pipeline" else source.sample_rate
                path = args.output if last else os.path.join(tmp, f"stage{i}.wav")
                # between stages: float, so nothing is clipped or quantized on the way
                sink = open_sink(path, sample_rate=rate, channels=source.channels, raw_format=args.raw_format,
                                 subtype=args.subtype if last else "FLOAT")
                cb = None if on_event is None else (
                    lambda ev, _n=stage.name: on_event(dataclasses.replace(ev, node=f"{_n}/{ev.node}")))
                summaries.append(run_stream(pipe, source, sink, on_event=cb).to_dict())
                ok = True
            finally:
                source.close()
                if sink is not None:
                    sink.close(commit=ok)
            src_path = path


def _bus_sinks(pipeline, args, source, outputs: dict) -> dict:
    """``--output-dir``: one file per bus, named after it (``--stems`` picks some), written
    atomically like ``-o``; {} without it."""
    from .errors import ConfigError

    if args.stems and not args.output_dir:
        raise ConfigError("--stems picks the buses written to --output-dir; give --output-dir too")
    if not args.output_dir:
        return {}
    from .errors import AudioOutputError
    from .io import open_sink
    from .io.open import check_outputs

    where = getattr(pipeline, "config_path", pipeline.name)
    if not pipeline.buses:
        raise ConfigError(f"{where}: pipeline {pipeline.name!r} writes no buses; --output-dir writes one file per "
                          "bus (a pipeline with a separate node, e.g. `edge-runtime run separate`)")
    names = list(pipeline.buses)
    if args.stems:
        names = [n.strip() for n in args.stems.split(",") if n.strip()]
        bad = [n for n in names if n not in pipeline.buses]
        if bad or not names:
            raise ConfigError(f"--stems {args.stems!r}: {', '.join(map(repr, bad)) or 'nothing'} is not a bus of "
                              f"pipeline {pipeline.name!r} (expected some of: {', '.join(pipeline.buses)})")
    if not os.path.isdir(args.output_dir):
        # made here, as `mkdir` would: its parent must exist (a typo two levels up is an error, not a tree)
        parent = os.path.dirname(os.path.abspath(args.output_dir))
        if os.path.exists(args.output_dir) or not os.path.isdir(parent):
            raise AudioOutputError(f"--output-dir {args.output_dir}: not a directory, and it cannot be made "
                                   f"(expected a directory or a new name in an existing one; {parent} "
                                   f"{'exists' if os.path.isdir(parent) else 'does not exist'})")
        os.mkdir(args.output_dir)
    ext = args.stem_format.lower().lstrip(".")
    paths = {n: os.path.join(args.output_dir, f"{n}.{ext}") for n in names}
    check_outputs({"-i": args.input}, {**outputs, **{f"--output-dir ({n})": p for n, p in paths.items()}})
    out_rate = pipeline.sample_rate if pipeline.output_rate == "pipeline" else source.sample_rate
    sinks = {}
    try:
        for n, p in paths.items():
            sinks[n] = open_sink(p, sample_rate=out_rate, channels=source.channels, subtype=args.subtype)
    except BaseException:
        for s in sinks.values():
            s.close(commit=False)
        raise
    return sinks


def cmd_run(args) -> int:
    from .config import load_pipeline_config
    from .io import open_sink, open_source
    from .runner import run_stream

    from .io.open import check_outputs, resolve_output

    outputs = {"-o": args.output, "--events": args.events}
    if args.json:
        outputs["--json"] = "-"
    check_outputs({"-i": args.input}, outputs, overwrite_input=args.overwrite_input)
    args.output, args.events = resolve_output(args.output), resolve_output(args.events)
    cfg = load_pipeline_config(args.pipeline)
    if cfg.stages is not None:
        if args.output_dir or args.stems:
            from .errors import ConfigError

            raise ConfigError(f"{cfg.path}: a staged pipeline has no buses; --output-dir/--stems need a pipeline "
                              "whose nodes write buses (e.g. separate)")
        return _run_stages(cfg, args)
    source = open_source(args.input, sample_rate=args.rate, channels=args.channels,
                         raw_format=args.raw_format)
    try:
        pipeline = cfg.build(source.sample_rate)
    except BaseException:
        source.close()
        raise
    from .classify import cli as classify_cli

    if classify_cli.wants_labels(pipeline, args):   # a classify pipeline with no output: print labels
        return classify_cli.run_labels(pipeline, source, args, stop=_LiveStop(source.frames is None))
    governor = None
    if not args.no_governor:
        from .governor import Governor

        governor = Governor(pipeline)
    sink = None
    bus_sinks: dict = {}
    ok = False
    close_events = None
    live = source.frames is None        # raw PCM on stdin, alsa:, a streamed WAV of unknown length
    stop = _LiveStop(live)
    gc_guard = None
    if live:
        # a live input has a deadline per block: keep the collector and other threads' GIL turns
        # out of it, as serve does (service/interp.py; measured in docs/soak.md)
        from .service.interp import GcGuard

        gc_guard = GcGuard().install()
    try:
        on_event, finish_events, close_events = _event_writer(args.events, cfg.name)
        bus_sinks = _bus_sinks(pipeline, args, source, outputs)
        if args.output:
            # a pipeline may keep its own rate at the output (bandwidth extension): else the input's
            out_rate = pipeline.sample_rate if pipeline.output_rate == "pipeline" else source.sample_rate
            sink = open_sink(args.output, sample_rate=out_rate, channels=source.channels,
                             raw_format=args.raw_format, subtype=args.subtype)
        show = not args.quiet and sys.stderr.isatty()
        progress = _Progress(os.path.basename(str(args.input)), show, source.sample_rate)
        if gc_guard is not None:
            gc_guard.settle()           # everything is built: later collections skip it
        with stop:
            summary = run_stream(pipeline, source, sink, on_event=on_event, progress=progress,
                                 governor=governor, should_stop=stop.should_stop, bus_sinks=bus_sinks)
        progress.finish()
        finish_events()           # the events are on disk before any output is committed
        ok = True
    finally:
        if gc_guard is not None:
            gc_snapshot = gc_guard.snapshot()
            gc_guard.uninstall()
        # all or nothing: an output that fails to commit takes the events file with it
        source.close()
        try:
            if sink is not None:
                sink.close(commit=ok)
            for bsink in bus_sinks.values():
                bsink.close(commit=ok)
        except BaseException:
            if close_events is not None:
                close_events(False)
            raise
        if close_events is not None:
            close_events(ok)
    d = summary.to_dict()
    if gc_guard is not None:
        d["python_gc"] = gc_snapshot
    if stop.signum is not None:
        d["stopped_by"] = signal.Signals(stop.signum).name
    text_summary = not args.json and not args.quiet and args.output != "-" and args.events != "-"
    if not text_summary:
        for w in summary.warnings:       # in the text summary they have a line of their own
            log.warning("%s", w)
    if args.json:
        print(json.dumps(d))
    elif text_summary:
        _print_summary(d)
    elif stop.signum is not None and not args.quiet:
        # stdout carries audio or events: the summary goes to stderr
        sys.stdout.flush()
        with contextlib.redirect_stdout(sys.stderr):
            _print_summary(d)
    return 128 + stop.signum if stop.signum is not None else 0


def cmd_pipelines(args) -> int:
    from .config import list_pipelines, load_pipeline_config

    rows = []
    for name, path in sorted(list_pipelines().items()):
        try:
            cfg = load_pipeline_config(str(path))
            rows.append({"name": name, "path": str(path), "sample_rate": cfg.sample_rate or "input",
                         "block_size": cfg.block_size or f"{cfg.block_ms:g} ms", "channels": cfg.channels or "any",
                         "nodes": ([f"[{st.name}]" for st in cfg.stages] if cfg.stages is not None
                                   else [n["type"] for n in cfg.nodes]),
                         "description": cfg.description})
        except EdgeRuntimeError as e:
            rows.append({"name": name, "path": str(path), "error": str(e)})
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<14} INVALID: {r['error']}")
        else:
            print(f"{r['name']:<14} {r['sample_rate']:>6} Hz  block {r['block_size']:<5} "
                  f"{' -> '.join(r['nodes'])}   {r['description']}")
    return 0


def cmd_info(args) -> int:
    from .platform import detect

    info = detect()
    if args.json:
        print(json.dumps(info))
        return 0
    cpu = info["cpu"]
    b = info["board"]
    print(f"edge_runtime {info['edge_runtime']}  python {info['python']}  numpy {info['numpy']}")
    print(f"os           {info['os']}")
    print(f"board        {b['kind']}" + (f" ({b['model']})" if b["model"] else ""))
    print(f"cpu          {cpu['model']}  [{cpu['machine']}]  {cpu['cores_usable']}/{cpu['cores']} cores")
    print(f"int8 flags   {' '.join(cpu['int8_flags']) or 'none'}")
    print(f"memory       {info['memory_mb']} MB")
    print("backends     " + "  ".join(f"{k}={v or 'no'}" for k, v in info["backends"].items()))
    print(f"alsa         {'libasound.so.2 found' if info['alsa'] else 'not found'}")
    return 0


def cmd_demo(args) -> int:
    from .config import load_pipeline_config
    from .demo import make_clip, measure
    from .io import FileSink, FileSource
    from .runner import run_stream

    out_dir = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(out_dir, exist_ok=True)
    in_path = args.input_copy or os.path.join(out_dir, "demo_input.wav")
    cfg = load_pipeline_config(args.pipeline)
    pipeline = cfg.build(48000)
    sr = pipeline.sample_rate
    clip = make_clip(sr, seconds=args.seconds)
    with FileSink(in_path, sr, clip.shape[1], subtype="FLOAT") as sink:
        sink.write(clip)
    with FileSource(in_path) as source:
        ok = False
        sink = FileSink(args.output, sr, clip.shape[1], subtype="FLOAT")
        try:
            summary = run_stream(pipeline, source, sink)
            ok = True
        finally:
            sink.close(commit=ok)
    import soundfile as sf

    processed, _ = sf.read(args.output, dtype="float32", always_2d=True)
    effects = measure(clip, processed, sr)
    result = summary.to_dict()
    result["effects"] = effects
    speech = None if args.no_speech else _demo_speech(out_dir)
    if speech is not None:
        result["speech"] = speech
    if args.json:
        print(json.dumps(result))
    else:
        _print_summary(result, {
            "input clip": in_path,
            "effect": f"peak {effects['peak_in_dbfs']:+.2f} -> {effects['peak_out_dbfs']:+.2f} dBFS, "
                      f"35 Hz rumble {effects['rumble_35hz_change_db']:+.1f} dB, "
                      f"melody {effects['melody_200_2k_change_db']:+.1f} dB",
        })
        if speech is not None:
            m = speech["effects"]
            print()
            print(f"speech stage  {speech['pipeline']} on the bundled noisy speech clip "
                  f"({speech['duration_s']:.1f} s, 5 dB SNR, from the denoiser's test split)")
            print(f"  model     {speech['variant']}")
            print(f"  output    {speech['output']}")
            print(f"  SI-SDR    {m['si_sdr_in_db']:+.1f} dB noisy -> {m['si_sdr_out_db']:+.1f} dB denoised "
                  f"(against the clean reference)"
                  + (f"; noise in speech pauses {m['noise_in_pauses_change_db']:+.1f} dB"
                     if m["noise_in_pauses_change_db"] is not None else ""))
            print(f"  cost      {speech['realtime_factor']:.4f} of real time, "
                  f"block p99 {speech['block_ms_p99'] * 1e3:.0f} us of {speech['budget_ms']:.0f} ms, "
                  f"deadline misses {speech['deadline_misses']}")
    return 0


def _demo_speech(out_dir: str) -> dict:
    """Run the ``denoise`` pipeline on the bundled speech clip (the ML path of the demo)."""
    from .config import load_pipeline
    from .demo import measure_speech, speech_clip
    from .io import FileSink, FileSource
    from .runner import run_stream

    noisy, clean, sr, path = speech_clip()
    pipeline = load_pipeline("denoise")
    out_path = os.path.join(out_dir, "demo_speech_denoised.wav")
    with FileSource(path) as source:
        ok = False
        sink = FileSink(out_path, sr, 1, subtype="FLOAT")
        try:
            summary = run_stream(pipeline, source, sink)
            ok = True
        finally:
            sink.close(commit=ok)
    import soundfile as sf

    out, _ = sf.read(out_path, dtype="float32")
    d = summary.to_dict()
    d["variant"] = pipeline.nodes[0].variant_label
    d["effects"] = measure_speech(noisy, clean, out, sr)
    return d


def cmd_models(args) -> int:
    from .models.manifest import Registry, describe, format_models, manifest_paths

    paths = args.manifest or manifest_paths()
    reg = Registry.from_paths(paths)
    rows = describe(reg, check=not args.no_verify)
    if args.json:
        print(json.dumps({"manifests": [str(p) for p in paths], "models": rows}))
    else:
        print(format_models(rows, [str(p) for p in paths]))
    return 0


def _csv(text):
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def cmd_bench(args) -> int:
    from .models.bench import bench_files, format_table, parse_shape_args

    report = bench_files(args.models, backends=_csv(args.backends), threads=args.threads, runs=args.runs,
                         warmup=args.warmup, shapes=parse_shape_args(args.shape), seed=args.seed,
                         isolate=not args.in_process)
    print(json.dumps(report) if args.json else format_table(report))
    return 0


def cmd_profile(args) -> int:
    from .models.bench import parse_shape_args
    from .profiling import format_report, run_profile

    report = run_profile(args.pipeline, args.model or (), device=args.device, backends=_csv(args.backends),
                         threads=args.threads, runs=args.runs, warmup=args.warmup,
                         shapes=parse_shape_args(args.shape), budget_ms=args.budget_ms,
                         max_quality_drop=args.max_quality_drop, write=not args.no_write,
                         state_dir_=args.state_dir, service=args.service, isolate=not args.in_process)
    print(json.dumps(report, default=str) if args.json else format_report(report))
    return 0


def cmd_completion(args) -> int:
    try:
        import shtab
    except ImportError:
        from .errors import MissingExtraError

        raise MissingExtraError("edge-runtime completion needs shtab, which is not installed; "
                                "install it with pip install 'edge-runtime[cli]'") from None
    # generated from the same parser the commands run with, so it cannot drift from them
    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return 0


def cmd_man(args) -> int:
    from .manpage import render

    sys.stdout.write(render(build_parser()))
    return 0


# ---- batch: `run` on many files (edge_runtime/batch.py finds, schedules, records) ---------------------

def _batch_one(job: tuple[str, str, str, list]) -> dict:
    """Process one file through `edge-runtime run` (in this worker process); a result row."""
    import contextlib
    import io

    pipeline, src, dst, extra = job

    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(["run", pipeline, "-i", src, "-o", dst, "--json", "-q", *extra])
        except SystemExit as e:              # argparse
            rc = int(e.code or 2)
    row = {"input": src, "output": dst, "rc": rc, "wall_s": round(time.perf_counter() - t0, 4)}
    if rc == 0:
        try:
            s = json.loads(out.getvalue().strip().splitlines()[-1])
            row["audio_s"] = float(s.get("duration_s", 0.0))
            stages = s.get("stages") or [s]
            row["engine_s"] = sum(float(st.get("realtime_factor", 0.0)) * float(st.get("duration_s", 0.0))
                                  for st in stages)
        except (ValueError, IndexError):
            row["audio_s"] = row["engine_s"] = 0.0
    else:
        msg = err.getvalue().strip().splitlines()
        row["error"] = (msg[-1][len("error: "):] if msg[-1].startswith("error: ") else msg[-1]) if msg else f"exit status {rc}"
    return row


def cmd_batch(args) -> int:
    def progress(n, total, row):
        if sys.stderr.isatty() and not args.quiet:
            name = os.path.basename(row["input"])[:40]
            sys.stderr.write(f"\r{n}/{total} files  {'ok' if row['rc'] == 0 else 'FAILED'} {name:40s}")
            sys.stderr.flush()

    extra = []
    if args.subtype:
        extra += ["--subtype", args.subtype]
    from .batch import run_batch

    rep = run_batch(args.pipeline, args.input, args.output, _batch_one, jobs=args.jobs, engine=args.engine,
                    scheduler=args.scheduler, extra=extra, progress=progress)
    if sys.stderr.isatty() and not args.quiet:
        sys.stderr.write("\n")
    if args.json:
        print(json.dumps(rep))
    elif not args.quiet:
        print(f"batch        {rep['pipeline']} on {rep['files']} files ({rep['engine']}, {rep['jobs']} jobs): "
              f"{rep['done']} done, {len(rep['failed'])} failed, {rep['skipped']} skipped (done before)")
        print(f"speed        {rep['files_per_s']} files/s, {rep['audio_s_per_wall_s']} s of audio per s; engine "
              f"real-time factor per core {rep['engine_rtf_per_core']}")
        for f in rep["failed"]:
            print(f"failed       {f['input']}: {f['error']}")
        print(f"manifest     {rep['manifest']}")
    return 1 if rep["failed"] else 0


def _add_batch_parser(sub) -> None:
    from .cliutil import parser_kwargs

    b = sub.add_parser("batch", **parser_kwargs(
        "run a pipeline over many files: resumable, in parallel, failures reported",
        ("edge-runtime batch denoise --input archive/ --output cleaned/ --jobs 4",
         "edge-runtime batch declip --input 'calls/**/*.wav' --output fixed/ --json",
         "edge-runtime batch denoise -i archive/ -o cleaned/ --engine dask --scheduler tcp://10.0.0.5:8786",
         "# a rerun skips the files already done (cleaned/.edge_runtime-batch.jsonl)")))
    b.add_argument("pipeline", help="pipeline name (see `edge-runtime pipelines`) or a .toml path")
    b.add_argument("--input", "-i", required=True, help="a folder (every audio file under it) or a glob (quote it)")
    b.add_argument("--output", "-o", required=True, help="the output folder (paths relative to the input's)")
    b.add_argument("--jobs", "-j", type=int, default=0, help="parallel workers (default: the CPU count)")
    b.add_argument("--engine", choices=("local", "dask", "ray"), default="local",
                   help="local process pool (default), a Dask cluster ([dask] extra) or a Ray cluster ([ray] extra)")
    b.add_argument("--scheduler", help="with --engine dask/ray: a running cluster's address (default: a local one)")
    b.add_argument("--subtype", help="output file subtype, e.g. PCM_16 (default), FLOAT")
    b.add_argument("--json", action="store_true", help="print the report as one JSON object")
    b.set_defaults(func=cmd_batch)


def build_parser() -> argparse.ArgumentParser:
    from .cliutil import EXIT_CODES_EPILOG, add_global_options, deprecated_alias, examples, parser_kwargs

    p = argparse.ArgumentParser(
        prog="edge-runtime", description="Real-time ML audio processing for edge devices.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("edge-runtime demo                                    # no files needed",
                        "edge-runtime pipelines",
                        "edge-runtime run denoise -i noisy.wav -o clean.wav",
                        "edge-runtime run speech16k -i in.wav -o out.wav --events ev.jsonl --json",
                        "edge-runtime -v run default -i alsa:hw:1,0 --rate 48000 --channels 2 -o alsa:default",
                        "edge-runtime COMMAND --help                          # options and examples of a command")
        + "\n\n" + EXIT_CODES_EPILOG + "\n\nmore: docs/cli.md (options, exit codes, completion, man page), "
        "docs/events.md (event types)")
    p.add_argument("--version", action="version", version=f"edge-runtime {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", **parser_kwargs(
        "run a pipeline on a file, stdin or ALSA",
        ("edge-runtime run default -i in.wav -o out.wav",
         "edge-runtime run speech16k -i in.flac -o out.flac --events events.jsonl --json",
         "edge-runtime run classify -i street.wav                 # labels on stdout",
         "arecord -f S16_LE -r 16000 -c 1 | edge-runtime run speech16k -i - --rate 16000 --channels 1 -o - \\",
         "    | aplay -f S16_LE -r 16000 -c 1",
         "edge-runtime run default -i alsa:hw:1,0 --rate 48000 --channels 2 -o alsa:default",
         "# Ctrl-C on a live input (stdin, alsa:) stops cleanly: outputs kept, summary printed")))
    r.add_argument("pipeline", help="pipeline name (see `edge-runtime pipelines`) or a .toml path")
    r.add_argument("--input", "-i", required=True,
                   help="audio file (WAV/FLAC/OGG...), '-' for raw PCM on stdin, or alsa:DEVICE")
    r.add_argument("--output", "-o", help="audio file, '-' for raw PCM on stdout, or alsa:DEVICE")
    r.add_argument("--output-dir", help="write each of the pipeline's buses (a separator's stems) to "
                   "DIR/<bus>.wav, as many frames as went in (e.g. `run separate -i mix.wav --output-dir stems/`)")
    r.add_argument("--stems", help="with --output-dir: the buses to write, comma-separated (default: all)")
    r.add_argument("--stem-format", default="wav", help="file extension of --output-dir files (default wav; flac, ogg)")
    r.add_argument("--events", help="write node events as JSON lines to this file ('-' = stdout; "
                   "fields: docs/events.md), or publish them to mqtt://HOST:PORT/PREFIX ([mqtt] extra)")
    r.add_argument("--overwrite-input", action="store_true",
                   help="allow -o to be the input file (it is read whole before it is replaced)")
    r.add_argument("--rate", type=int, help="sample rate of raw/ALSA input, in Hz")
    deprecated_alias(r, "--sample-rate", dest="rate", new="--rate", type=int)
    r.add_argument("--channels", type=int, help="channel count of raw/ALSA input")
    r.add_argument("--raw-format", choices=RAW_FORMATS, default="s16le",
                   help="raw PCM sample format of '-' and alsa: (default s16le)")
    r.add_argument("--subtype", help="output file subtype, e.g. PCM_16 (default), PCM_24, FLOAT")
    r.add_argument("--json", action="store_true", help="print the summary as one JSON object "
                   "(a classify pipeline without -o/--events: its labels as JSON lines)")
    r.add_argument("--no-governor", action="store_true",
                   help="never step an ML node down to a cheaper variant when blocks are late")
    r.set_defaults(func=cmd_run)

    ls = sub.add_parser("pipelines", **parser_kwargs(
        "list the pipelines found on the search path",
        ("edge-runtime pipelines", "edge-runtime pipelines --json | jq -r '.[].name'")))
    ls.add_argument("--json", action="store_true", help="print one JSON array")
    ls.set_defaults(func=cmd_pipelines)

    i = sub.add_parser("info", **parser_kwargs(
        "platform, CPU features for INT8, backends installed",
        ("edge-runtime info", "edge-runtime info --json")))
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("demo", **parser_kwargs(
        "run the default pipeline on a synthesized clip, then the denoiser on a bundled speech clip",
        ("edge-runtime demo", "edge-runtime demo --no-speech --seconds 2 -o /tmp/demo/out.wav")))
    d.add_argument("--output", "-o", default=os.path.join("edge_runtime_demo", "demo_output.wav"),
                   help="processed clip (default edge_runtime_demo/demo_output.wav; the other demo files "
                        "go to its folder)")
    d.add_argument("--input-copy", help="where to write the synthesized input clip "
                   "(default: demo_input.wav next to --output)")
    d.add_argument("--pipeline", default="default", help="pipeline of the first stage (default 'default')")
    d.add_argument("--seconds", type=float, default=6.0, help="length of the synthesized clip (default 6)")
    d.add_argument("--no-speech", action="store_true",
                   help="skip the second stage (the denoiser on the bundled speech clip)")
    d.add_argument("--json", action="store_true", help="print the summary and measurements as one JSON object")
    d.set_defaults(func=cmd_demo)

    m = sub.add_parser("models", **parser_kwargs(
        "list the models in the manifest(s), their variants and checksums",
        ("edge-runtime models", "edge-runtime models --no-verify --json",
         "edge-runtime models --manifest my_models/manifest.toml")))
    m.add_argument("--manifest", action="append", help="read this manifest instead of the search path "
                   "(repeatable; default: $EDGE_RUNTIME_MODELS, models_int8/, the package's copy)")
    m.add_argument("--no-verify", action="store_true", help="do not hash the files (faster)")
    m.add_argument("--json", action="store_true", help="print one JSON object")
    m.set_defaults(func=cmd_models)

    b = sub.add_parser("bench", **parser_kwargs(
        "benchmark model files on every backend that reads them",
        ("edge-runtime bench models_int8/classify/classify_int8.onnx",
         "edge-runtime bench model.onnx --backends onnxruntime --threads 2 --runs 500",
         "edge-runtime bench dyn.onnx --shape x=1x16000 --json")))
    b.add_argument("models", nargs="+", metavar="MODEL", help=".onnx, .tflite or OpenVINO .xml files")
    b.add_argument("--backends", help="comma-separated subset of onnxruntime,openvino,litert (default: all installed)")
    b.add_argument("--threads", type=int, default=1, help="intra-op threads per session (default 1)")
    b.add_argument("--runs", type=int, default=200, help="timed calls per model and backend (default 200)")
    b.add_argument("--warmup", type=int, default=20, help="untimed calls first (default 20)")
    b.add_argument("--shape", action="append", metavar="NAME=DIMS",
                   help="concrete shape for an input with dynamic dims, e.g. x=1x16000 (repeatable)")
    b.add_argument("--seed", type=int, default=0, help="seed of the random input")
    b.add_argument("--in-process", action="store_true",
                   help="measure in this process instead of a fresh one per backend (RSS less honest)")
    b.add_argument("--json", action="store_true", help="print the report as one JSON object")
    b.set_defaults(func=cmd_bench)

    pr = sub.add_parser("profile", **parser_kwargs(
        "detect the device, benchmark model variants, choose per model",
        ("edge-runtime profile                      # every manifest model, profile written",
         "edge-runtime profile denoise --no-write   # only the denoise pipeline's models, print only",
         "sudo edge-runtime profile --service       # for the systemd service")))
    pr.add_argument("pipeline", nargs="?", help="pipeline whose ML nodes to profile (default: all manifest models)")
    pr.add_argument("--model", action="append", metavar="PATH", help="profile this model file (repeatable)")
    pr.add_argument("--device", help="use this device profile instead of the detected one")
    pr.add_argument("--backends", help="comma-separated subset of onnxruntime,openvino,litert")
    pr.add_argument("--threads", type=int, help="intra-op threads (default: the device profile's)")
    pr.add_argument("--runs", type=int, help="timed calls per variant (default: the device profile's)")
    pr.add_argument("--warmup", type=int, help="untimed calls first (default: the device profile's)")
    pr.add_argument("--shape", action="append", metavar="NAME=DIMS",
                    help="concrete shape for an input with dynamic dims (repeatable)")
    pr.add_argument("--budget-ms", type=float, help="latency budget per model (default: the pipeline's block)")
    pr.add_argument("--max-quality-drop", type=float,
                    help="allowed drop of the primary metric vs FP32, in its units (default: the device profile's)")
    pr.add_argument("--state-dir", help="where profiles/<device>.toml is written (default: $EDGE_RUNTIME_STATE, "
                    "$XDG_STATE_HOME/edge_runtime)")
    pr.add_argument("--service", action="store_true", help="write under /var/lib/edge_runtime")
    pr.add_argument("--no-write", action="store_true", help="print only; write no profile")
    pr.add_argument("--in-process", action="store_true",
                    help="measure in this process instead of a fresh one per backend")
    pr.add_argument("--json", action="store_true", help="print the report as one JSON object")
    pr.set_defaults(func=cmd_profile)

    from .service.cli import add_parsers as add_service_parsers

    add_service_parsers(sub)        # serve, status, install-service (edge_runtime/service)
    from .anomaly.cli import add_parser as add_anomaly_parser

    add_anomaly_parser(sub)
    from .personalize.cli import add_parser as add_personalize_parser

    add_personalize_parser(sub)
    from .generate import add_parser as add_generate_parser

    add_generate_parser(sub)        # generate: a MIDI file on a DDSP instrument (edge_runtime/generate.py)
    from .optimize.cli import add_parsers as add_optimize_parsers

    add_optimize_parsers(sub)       # optimize, preset (edge_runtime/optimize)
    _add_batch_parser(sub)          # batch: one pipeline over many files (the engine: edge_runtime/batch.py)

    c = sub.add_parser("completion", **parser_kwargs(
        "print a shell completion script generated from this parser (needs the [cli] extra: shtab)",
        ("edge-runtime completion bash > ~/.local/share/bash-completion/completions/edge-runtime",
         "edge-runtime completion zsh > \"${fpath[1]}/_edge-runtime\"",
         "source <(edge-runtime completion bash)")))
    c.add_argument("shell", choices=("bash", "zsh", "tcsh"), help="the shell to complete in")
    c.set_defaults(func=cmd_completion)

    mn = sub.add_parser("man", **parser_kwargs(
        "print the manual page (roff) generated from this parser",
        ("edge-runtime man | man -l -",
         "edge-runtime man > ~/.local/share/man/man1/edge-runtime.1")))
    mn.set_defaults(func=cmd_man)
    add_global_options(p)
    return p


class Terminated(BaseException):
    """SIGTERM/SIGHUP in a one-shot command: unwinds like Ctrl-C, so every ``finally`` runs and
    outputs are discarded (temporary files removed) instead of left behind by a hard kill."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate_on_signals() -> dict:
    def handler(signum, frame):
        raise Terminated(signum)

    old = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            old[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):    # not the main thread: leave the defaults
            pass
    return old


def main(argv: list[str] | None = None) -> int:
    from .cliutil import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)      # usage errors: argparse prints them and exits 2
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    is_serve = getattr(args.func, "__name__", "") == "cmd_serve"
    setup_logging(args, enable=not is_serve)    # serve: its JSON log, at -v/-q/--log-level if given
    # serve has its own handlers (SIGHUP reloads there)
    restore = {} if is_serve else _terminate_on_signals()
    try:
        return int(args.func(args) or 0)
    except EdgeRuntimeError as e:
        sys.stderr.write(f"error: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 128 + signal.SIGINT
    except Terminated as e:
        sys.stderr.write(f"stopped by {signal.Signals(e.signum).name}; nothing half-written was kept\n")
        return 128 + e.signum
    except BrokenPipeError:
        # the reader of stdout went away (e.g. `| head`): not an error of ours
        try:
            sys.stdout.close()
        except OSError:
            pass
        return 0
    finally:
        for sig, h in restore.items():
            signal.signal(sig, h)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

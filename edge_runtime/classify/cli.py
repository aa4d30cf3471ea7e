"""``edge-runtime run classify -i in.wav``: timestamped labels on stdout.

When the pipeline has a ``classify`` node and neither ``--output`` nor ``--events`` is given,
``run`` prints one line per decision change (the time is the end of the window that decided)
and, at the end, the time spent in each class; ``--json`` prints JSON lines instead
(``{"time_s": 1.25, "node": "classify", "label": "speech", "index": 1, "confidence": 0.93,
"ts": "2026-12-07T10:00:00.123Z"}``), flushed as they come, so it streams from ALSA or stdin as well as from files.
On a live input, Ctrl-C stops before the next read: the decisions so far, the time-per-class
line and ``# stopped by SIGINT`` are printed, exit status 130.
"""
from __future__ import annotations

import json
import sys

from ..nodes.classify import Classify


def classify_nodes(pipeline) -> dict:
    return {n.name: n for n in pipeline.nodes if isinstance(n, Classify)}


def wants_labels(pipeline, args) -> bool:
    return args.output is None and args.events is None and bool(classify_nodes(pipeline))


def _clock(t: float) -> str:
    m, s = divmod(t, 60.0)
    h, m = divmod(int(m), 60)
    return f"{h:02d}:{m:02d}:{s:06.3f}"


def run_labels(pipeline, source, args, stop=None) -> int:
    """Run ``pipeline`` on ``source`` (closed here) and print its class decisions. ``stop``: a
    context manager with ``should_stop()`` and ``signum`` (the CLI's Ctrl-C handler on a live input)."""
    import contextlib
    import signal

    from ..runner import run_stream

    nodes = classify_nodes(pipeline)
    gc_guard = None
    if source.frames is None:
        # a live input (stdin, alsa:) has a deadline per block: the collector frozen out of it and
        # the GIL handed over often, as in serve and run (service/interp.py, docs/soak.md)
        from ..service.interp import GcGuard

        gc_guard = GcGuard().install()
    governor = None
    if not args.no_governor:
        from ..governor import Governor

        governor = Governor(pipeline)
    segments: list[tuple[float, str, str]] = []
    out = sys.stdout
    pending = {}     # node -> its class event, printed with the confidence event that follows it

    def on_event(ev):
        node = nodes.get(ev.node)
        if node is None:
            return
        if ev.event == "class":
            pending[ev.node] = ev
            return
        if ev.event != "confidence" or ev.node not in pending:
            return
        cls = pending.pop(ev.node)
        label = node.labels[int(cls.value)]
        segments.append((cls.time_s, ev.node, label))
        if args.json:
            out.write(json.dumps({"time_s": round(cls.time_s, 3), "node": ev.node, "label": label,
                                  "index": int(cls.value), "confidence": round(ev.value, 4),
                                  "ts": cls.ts}) + "\n")
        else:
            prefix = f"{ev.node}: " if len(nodes) > 1 else ""
            out.write(f"{_clock(cls.time_s)}  {prefix}{label}\n")
        out.flush()

    gc_stats = None
    try:
        if gc_guard is not None:
            gc_guard.settle()           # everything is built: later collections skip it
        with (stop if stop is not None else contextlib.nullcontext()):
            summary = run_stream(pipeline, source, None, on_event=on_event, governor=governor,
                                 should_stop=None if stop is None else stop.should_stop)
    finally:
        if gc_guard is not None:
            gc_stats = gc_guard.snapshot()
            gc_guard.uninstall()
        source.close()
    signum = getattr(stop, "signum", None)
    if not args.json and not args.quiet:
        end = summary.duration_s
        for name in nodes:
            segs = [(t, lab) for t, n, lab in segments if n == name]
            total: dict[str, float] = {}
            for i, (t, lab) in enumerate(segs):
                nxt = segs[i + 1][0] if i + 1 < len(segs) else end
                total[lab] = total.get(lab, 0.0) + max(nxt - t, 0.0)
            parts = ", ".join(f"{lab} {sec:.2f} s" for lab, sec in sorted(total.items(), key=lambda kv: -kv[1]))
            out.write(f"# {name}: {len(segs)} decisions over {end:.2f} s; {parts or 'no window classified'}\n")
        if gc_stats is not None:
            c = gc_stats["collections"]
            out.write(f"# python gc: {gc_stats['frozen_objects']} objects frozen before the audio; collections "
                      f"during it {c[0]}/{c[1]}/{c[2]} (generation 0/1/2), longest {max(gc_stats['max_ms']):.1f} ms\n")
        if signum is not None:
            out.write(f"# stopped by {signal.Signals(signum).name}\n")
    out.flush()
    return 128 + signum if signum is not None else 0

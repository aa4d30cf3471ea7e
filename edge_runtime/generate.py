"""``edge-runtime generate``: a MIDI file played by a DDSP instrument, written to an audio file.

The same :class:`~edge_runtime.nodes.synth.Synth` node a pipeline runs, driven hop by hop; the
output appears only when complete (a temporary file renamed into place), so a bad MIDI file,
a missing model or a full disk leaves no half-written file.
"""
from __future__ import annotations

import os

import numpy as np

from .errors import AudioOutputError

__all__ = ["add_parser", "render_midi"]

TAIL_S = 0.5


def render_midi(midi: str, instrument: str = "violin", variant: str = "auto", reverb: float = 0.0,
                transpose: float = 0.0, gain_db: float = 0.0, threads: int = 1) -> tuple[np.ndarray, dict]:
    """(samples,) float32 at 16 kHz and a summary (hops, real-time factor of the loop, variant)."""
    import time

    from .nodes.synth import Synth
    from .synth import HOP, SAMPLE_RATE

    node = Synth(instrument=instrument, midi=midi, transpose=transpose, variant=variant, reverb=reverb,
                 gain_db=gain_db, threads=threads)
    node.prepare(SAMPLE_RATE, HOP, 1)
    n = node.frames + int(TAIL_S * SAMPLE_RATE / HOP)
    y = np.zeros((1, n * HOP), np.float32)
    silent = np.zeros((1, HOP), np.float32)
    t0 = time.perf_counter()
    for t in range(n):
        node.process(silent, y[:, t * HOP:(t + 1) * HOP])
    wall = time.perf_counter() - t0
    peak = float(np.abs(y).max())
    if peak > 0.99:                       # never clip a file: scale it down and say so
        y *= 0.99 / peak
    return y[0], {"hops": n, "seconds": n * HOP / SAMPLE_RATE, "rtf": wall / (n * HOP / SAMPLE_RATE),
                  "variant": node.variant_label, "peak": peak}


def cmd_generate(args) -> int:
    import json
    import sys

    import soundfile as sf

    from . import atomic
    from .synth import SAMPLE_RATE

    out = args.output
    ext = os.path.splitext(out)[1].lower().lstrip(".")
    if ext not in ("wav", "flac", "ogg"):
        raise AudioOutputError(f"{out}: output format {ext or '(none)'!r} is not supported; expected .wav, .flac or .ogg")
    if os.path.abspath(out) == os.path.abspath(args.midi):
        raise AudioOutputError(f"{out}: the output would overwrite the MIDI input")
    y, info = render_midi(args.midi, args.instrument, args.variant, args.reverb, args.transpose, args.gain_db,
                          args.threads)
    tmp = atomic.temp_path_for(out)
    try:
        sf.write(tmp, y, SAMPLE_RATE, format=ext.upper(), subtype="PCM_16" if ext == "wav" else None)
        atomic.commit(tmp, out)
    except BaseException as exc:
        atomic.discard(tmp)
        if isinstance(exc, (OSError, RuntimeError)):
            raise AudioOutputError(f"{out}: cannot write the output ({exc})") from None
        raise
    info["output"] = out
    print(json.dumps(info) if args.json else
          f"{out}: {info['seconds']:.2f} s of {args.instrument} ({info['variant']}), real-time factor {info['rtf']:.3f}",
          file=sys.stdout)
    return 0


def add_parser(sub) -> None:
    from .cliutil import parser_kwargs
    from .nodes.synth import INSTRUMENTS

    g = sub.add_parser("generate", **parser_kwargs(
        "play a MIDI file's melody on a DDSP instrument (16 kHz; needs mido: the [generate] extra)",
        ("edge-runtime generate --instrument violin --midi in.mid -o out.wav",
         "edge-runtime generate --instrument flute --midi tune.mid -o tune.flac --reverb 0.2 --transpose 12")))
    g.add_argument("--midi", required=True, help="MIDI file (its monophonic line: the newest note sounds)")
    g.add_argument("--output", "-o", required=True, help="audio file to write (.wav, .flac, .ogg)")
    g.add_argument("--instrument", default="violin", choices=tuple(INSTRUMENTS), help="the decoder to play")
    g.add_argument("--variant", default="auto", help="model variant (auto: the device profile's choice)")
    g.add_argument("--reverb", type=float, default=0.0, help="reverb wet level 0..1")
    g.add_argument("--transpose", type=float, default=0.0, help="semitones added to the notes")
    g.add_argument("--gain-db", type=float, default=0.0, help="output gain in dB")
    g.add_argument("--threads", type=int, default=1, help="inference threads")
    g.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    g.set_defaults(func=cmd_generate)

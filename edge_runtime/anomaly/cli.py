"""``edge-runtime anomaly learn|monitor|info``: the anomaly node driven from the command line.

Both commands run the same :class:`~edge_runtime.nodes.anomaly.AnomalyDetect` node a pipeline
config would, through the same runner (any input the runner reads: files, raw PCM on stdin,
``alsa:DEVICE``; resampled at the edge to the state's rate).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

from ..errors import AudioInputError, ConfigError

DEFAULT_RATE = 16000
BLOCK_MS = 16


def add_parser(sub) -> None:
    from ..cliutil import deprecated_alias, parser_kwargs

    a = sub.add_parser("anomaly", **parser_kwargs(
        "learn normal machine sound, then detect anomalies",
        ("edge-runtime anomaly learn -i normal_mon.wav normal_tue.wav -s pump.state",
         "edge-runtime anomaly monitor -s pump.state -i alsa:hw:1,0 --rate 16000 --channels 1",
         "edge-runtime anomaly info pump.state", "edge-runtime anomaly ACTION --help")))
    a.set_defaults(func=dispatch)
    asub = a.add_subparsers(dest="anomaly_command", metavar="ACTION")

    le = asub.add_parser("learn", **parser_kwargs(
        "fit a detector on normal audio and write a state file (needs the [learn] extra)",
        ("edge-runtime anomaly learn -i normal.wav -s pump.state",
         "edge-runtime anomaly learn -i mon.flac tue.flac wed.flac -s pump.state --false-alarms-per-hour 0.5",
         "arecord -f S16_LE -r 16000 -c 1 | edge-runtime anomaly learn -i - --rate 16000 --channels 1 \\",
         "    --minutes 10 -s pump.state")))
    le.add_argument("--input", "-i", required=True, nargs="+", help="normal audio: file(s), '-' (raw PCM on stdin) "
                    "or alsa:DEVICE; several files are separate recordings (e.g. other days): the threshold is "
                    "calibrated across them")
    le.add_argument("--state", "-s", help="state file to write (atomically; required)")
    deprecated_alias(le, "--out", "-o", dest="state", new="--state/-s")
    le.add_argument("--minutes", type=float, help="learn from at most this many minutes in all (default: the whole "
                    "files; required for stdin/ALSA)")
    le.add_argument("--detector", default="gmm", choices=("gmm", "kmeans", "iforest", "autoencoder"),
                    help="the model of normal (default gmm; docs/anomaly.md compares them)")
    # --rate is the input's rate (raw/ALSA); this one is the rate the features are computed at
    le.add_argument("--feature-rate", type=int, default=DEFAULT_RATE,
                    help="sample rate the features are computed at, in Hz (default 16000)")
    deprecated_alias(le, "--sample-rate", dest="feature_rate", new="--feature-rate", type=int)
    deprecated_alias(le, "--false_alarms_per_hour", dest="false_alarms_per_hour", new="--false-alarms-per-hour",
                     type=float)
    le.add_argument("--false-alarms-per-hour", dest="false_alarms_per_hour", type=float,
                    default=1.0, help="false-alarm budget: anomaly episodes per hour of normal audio the threshold "
                    "allows (default 1; calibrated on the learning audio, see docs/anomaly.md)")
    le.add_argument("--quantile", type=float, help="instead of the budget: threshold = this quantile of the "
                    "held-back normal scores (round 1's thresholds, e.g. 0.995)")
    le.add_argument("--on-frames", type=int, help="hops (32 ms) of the window above the threshold that start an "
                    "episode (default 140)")
    le.add_argument("--on-window", type=int, help="window of hops for --on-frames (default 156 = 5 s)")
    le.add_argument("--no-augment", action="store_true", help="learn without the speed/gain tolerance "
                    "(augmented copies of the learned frames)")
    le.add_argument("--seed", type=int, default=0, help="seed of the detector's fit and the augmentation")
    _io_args(le)
    le.set_defaults(func=cmd_learn)

    mo = asub.add_parser("monitor", **parser_kwargs(
        "score audio against a state; print anomaly events as JSON lines",
        ("edge-runtime anomaly monitor -s pump.state -i today.wav",
         "edge-runtime anomaly monitor -s pump.state -i alsa:hw:1,0 --rate 16000 --channels 1 --events ev.jsonl",
         "edge-runtime anomaly monitor -s pump.state -i today.wav --score-interval-ms 1000 --json")))
    mo.add_argument("--state", "-s", required=True, help="state file from `anomaly learn`")
    mo.add_argument("--input", "-i", required=True, help="audio: file, '-' (raw PCM on stdin) or alsa:DEVICE")
    mo.add_argument("--events", default="-", help="where the JSON lines go (default '-': stdout)")
    mo.add_argument("--on-frames", type=int, help="hops (32 ms) of the window above the threshold that start an "
                    "episode (default: the state's, 140)")
    mo.add_argument("--on-window", type=int, help="window of hops for --on-frames (default: the state's, 156)")
    mo.add_argument("--off-frames", type=int, help="hops below the off-threshold that end it (default: the state's, 10)")
    mo.add_argument("--score-interval-ms", type=float, default=0.0, help="also emit anomaly_score events this often (default 0: none)")
    _io_args(mo)
    mo.set_defaults(func=cmd_monitor)

    inf = asub.add_parser("info", **parser_kwargs(
        "describe a state file", ("edge-runtime anomaly info pump.state", "edge-runtime anomaly info pump.state --json")))
    inf.add_argument("state", help="state file from `anomaly learn`")
    inf.add_argument("--json", action="store_true", help="print one JSON object")
    inf.set_defaults(func=cmd_info)


def _io_args(p) -> None:
    p.add_argument("--rate", type=int, help="sample rate of raw/ALSA input, in Hz")
    p.add_argument("--channels", type=int, help="channel count of raw/ALSA input")
    p.add_argument("--raw-format", choices=("s16le", "s32le", "f32le"), default="s16le",
                   help="raw PCM sample format of '-' and alsa: (default s16le)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def _pipeline(node, sample_rate: int):
    from ..engine import Pipeline

    return Pipeline([node], sample_rate=sample_rate, block_size=sample_rate * BLOCK_MS // 1000, name="anomaly")


def _source(args, name=None):
    from ..io import open_source

    return open_source(args.input if name is None else name, sample_rate=args.rate, channels=args.channels,
                       raw_format=args.raw_format)


def cmd_learn(args) -> int:
    from ..anomaly.model import AnomalyModel
    from ..nodes.anomaly import AnomalyDetect
    from ..runner import run_stream

    if args.state is None:
        raise ConfigError("anomaly learn: --state/-s is required (the state file to write), "
                          "e.g. -s pump.state")
    if not 0.001 <= args.false_alarms_per_hour <= 3600:
        raise ConfigError(f"--false-alarms-per-hour {args.false_alarms_per_hour} is outside 0.001..3600")
    if args.quantile is not None and not 0.5 < args.quantile < 1:
        raise ConfigError(f"--quantile {args.quantile} is outside 0.5..1 (e.g. 0.995)")
    if args.minutes is not None and not 0.1 <= args.minutes <= 24 * 60:
        raise ConfigError(f"--minutes {args.minutes} is outside 0.1..1440")
    if args.feature_rate not in (8000, 16000, 22050, 32000, 44100, 48000):
        raise ConfigError(f"--feature-rate {args.feature_rate} is not supported (expected 8000, 16000, 22050, "
                          "32000, 44100 or 48000)")
    from ..io.open import check_outputs

    check_outputs({f"-i[{i}]" if len(args.input) > 1 else "-i": x for i, x in enumerate(args.input)},
                  {"--state": args.state})
    out_dir = os.path.dirname(os.path.abspath(args.state))
    if not os.path.isdir(out_dir):   # say so before minutes of learning, not after
        raise ConfigError(f"{args.state}: folder {out_dir} does not exist")
    from ..nodes.anomaly import MIN_LEARN_S

    inputs = list(args.input)
    left = None if args.minutes is None else args.minutes * 60.0   # over all inputs together
    parts, lengths, audio_s, node = [], [], 0.0, None
    for inp in inputs:
        if left is not None and left <= 0:
            break
        source = _source(args, inp)
        try:
            if left is not None:
                seconds = left if source.frames is None else min(left, source.frames / source.sample_rate)
            elif source.frames is not None:
                seconds = source.frames / source.sample_rate
            else:
                raise ConfigError(f"{source.name}: a live or piped input has no end; give --minutes")
            node = AnomalyDetect(state="", learn="always", learn_s=max(MIN_LEARN_S, seconds), detector=args.detector,
                                 false_alarms_per_hour=args.false_alarms_per_hour, quantile_on=args.quantile,
                                 on_frames=args.on_frames, on_window=args.on_window,
                                 augment={"copies": 0} if args.no_augment else None, seed=args.seed, auto_fit=False)
            pipe = _pipeline(node, args.feature_rate)
            summary = run_stream(pipe, source, None, should_stop=lambda: node.learn_full)
        finally:
            source.close()
        parts.append(node.learn_buf[:node.n_learned].copy())
        lengths.append(node.n_learned)
        audio_s += summary.duration_s
        if left is not None:
            left -= summary.duration_s
    n = int(sum(lengths))
    names = ", ".join(inputs)
    try:
        # several inputs are separate recordings (other days): the calibration's folds are them
        model = AnomalyModel.fit(np.concatenate(parts), args.detector,
                                 recordings=lengths if len(lengths) > 1 else None, **node.fit_settings())
    except ValueError as e:
        raise AudioInputError(f"{names}: cannot learn from {audio_s:.1f} s of audio: {e}") from None
    model.save(args.state)
    out = {"state": args.state, "detector": model.detector, "audio_s": round(audio_s, 3), "recordings": len(lengths),
           "frames": n, "fit_s": model.info["fit_s"], "threshold_on": model.threshold_on,
           "threshold_off": model.threshold_off, "false_alarms_per_hour": model.info.get("false_alarms_per_hour"),
           "features": model.features}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"learned      {model.detector} on {audio_s:.1f} s ({n} frames, {len(lengths)} recording(s)) "
              f"in {model.info['fit_s']:.2f} s")
        budget = model.info.get("false_alarms_per_hour")
        how = (f"for {budget:g} false episode(s)/h" if budget is not None
               else f"quantile {model.info.get('quantile_on')}")
        print(f"threshold    on {model.threshold_on:.6g}  off {model.threshold_off:.6g}  ({how})")
        print(f"state        {args.state}")
    return 0


def cmd_monitor(args) -> int:
    from ..anomaly.model import AnomalyModel
    from ..nodes.anomaly import AnomalyDetect
    from ..runner import run_stream

    from ..io.open import check_outputs

    check_outputs({"-i": args.input, "--state": args.state}, {"--events": args.events})
    model = AnomalyModel.load(args.state)   # refuse a bad state before touching the input
    node = AnomalyDetect(state=args.state, learn="never", on_frames=args.on_frames, on_window=args.on_window,
                         off_frames=args.off_frames, score_interval_ms=args.score_interval_ms)
    pipe = _pipeline(node, model.sample_rate)
    source = _source(args)
    from ..atomic import AtomicFile

    f = sys.stdout if args.events == "-" else AtomicFile(args.events, "w")
    counts = {"anomaly_start": 0, "anomaly_end": 0}

    def write(time_s: float, event: str, value: float) -> None:
        d = {"time_s": round(time_s, 4), "event": event,
             ("duration_s" if event == "anomaly_end" else "score"): round(value, 4), "detector": model.detector}
        counts[event] = counts.get(event, 0) + 1
        f.write(json.dumps(d) + "\n")
        if f is sys.stdout:
            f.flush()

    ok = False
    try:
        summary = run_stream(pipe, source, None, on_event=lambda ev: write(ev.time_s, ev.event, ev.value))
        if node.hyst.active:   # the stream ended inside an episode: close it
            dur = (node.hyst.frame + 1 - node.hyst.start_frame) * node.hop / model.sample_rate
            write(summary.duration_s, "anomaly_end", dur)
        ok = True
    finally:
        source.close()
        if f is not sys.stdout:
            f.close(ok)
    if args.events != "-" or args.json:
        out = {"input": summary.input, "audio_s": round(summary.duration_s, 3), "episodes": counts["anomaly_start"],
               "events": args.events, "detector": model.detector}
        print(json.dumps(out) if args.json else
              f"monitored    {summary.duration_s:.1f} s, {counts['anomaly_start']} anomaly episode(s) -> {args.events}",
              file=sys.stderr if args.events == "-" else sys.stdout)
    return 0


def cmd_info(args) -> int:
    from ..anomaly.model import AnomalyModel

    m = AnomalyModel.load(args.state)
    out = {"state": args.state, "detector": m.detector, "sample_rate": m.sample_rate, "dim": m.dim,
           "features": m.features, "threshold_on": m.threshold_on, "threshold_off": m.threshold_off,
           "info": m.info}
    print(json.dumps(out) if args.json else "\n".join(f"{k:<14} {v}" for k, v in out.items()))
    return 0


def dispatch(args) -> int:
    if not getattr(args, "anomaly_command", None):
        raise ConfigError("anomaly needs an action: learn, monitor or info (see `edge-runtime anomaly -h`)")
    return args.func(args)

"""``edge-runtime optimize`` (fit a chain to a target sound) and ``edge-runtime preset`` (render / show).

    edge-runtime optimize --target t.wav --chain synth --budget 2000 -o preset.toml
    edge-runtime optimize --target t.wav --chain synth --init regressor --budget 0 -o quick.toml
    edge-runtime optimize --target wet.wav --input dry.wav --chain effects -o fx.toml
    edge-runtime preset render preset.toml -o note.wav --note 64 --duration 1.5
"""
from __future__ import annotations

import json
import math

from ..errors import ConfigError

INIT_HELP = ("starting point: default (the middle of every range), regressor (the shipped audio -> preset "
             "model), or a preset file")


def _budget(text: str) -> int:
    import argparse

    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget {text!r} is not an integer number of evaluations") from None
    if not 0 <= v <= 10_000_000:
        raise argparse.ArgumentTypeError(f"budget {v} is outside 0..10000000 evaluations")
    return v


def _assignments(items, what: str) -> dict:
    out = {}
    for item in items or ():
        for part in item.split(","):
            k, sep, v = part.partition("=")
            if not sep or not k.strip():
                raise ConfigError(f"{what} {part!r}: expected NAME=VALUE")
            try:
                out[k.strip()] = float(v)
            except ValueError:
                raise ConfigError(f"{what} {part!r}: {v!r} is not a number") from None
    return out


def add_parsers(sub) -> None:
    from ..cliutil import parser_kwargs
    from .search import METHODS

    o = sub.add_parser("optimize", **parser_kwargs(
        "find a chain's parameters that reproduce a target sound (CMA-ES, GA, random search)",
        ("edge-runtime optimize --target t.wav --chain synth --budget 2000 -o preset.toml",
         "edge-runtime optimize --target t.wav --chain synth --init regressor --budget 0 -o quick.toml",
         "edge-runtime optimize --target wet.wav --input dry.wav --chain effects -o fx.toml  # a pipeline file",
         "edge-runtime optimize --target t.wav --chain synth --method ga --seed 3 --set note=64 --json")))
    o.add_argument("--target", required=True, help="the sound to match (WAV/FLAC/OGG, at most 10 s)")
    o.add_argument("--chain", default="synth", help="synth, effects or ddsp (one note of a DDSP instrument, see --instrument)")
    o.add_argument("--instrument", help="ddsp: violin (default), flute or trumpet")
    o.add_argument("--input", "-i", help="effects: the unprocessed signal the target was made from")
    o.add_argument("--budget", type=_budget, default=2000, help="loss evaluations at most (default 2000; "
                   "0: only the starting point)")
    o.add_argument("--method", choices=METHODS, default="cma", help="search method (default cma)")
    o.add_argument("--init", default="default", help=INIT_HELP)
    o.add_argument("--seed", type=int, default=0, help="random seed (same seed, same result; default 0)")
    o.add_argument("--jobs", "-j", type=int, default=0, help="evaluation processes (default: one per CPU)")
    o.add_argument("--max-seconds", type=float, help="stop after this long (wall clock)")
    o.add_argument("--patience", type=int, default=0, help="stop when the best loss has not improved by 0.1%% in "
                   "this many evaluations (default 0: never)")
    o.add_argument("--set", action="append", metavar="NAME=VALUE", help="fix a parameter (not searched), e.g. "
                   "note=60; repeatable or comma-separated")
    o.add_argument("--pitch", choices=("auto", "search"), default="auto", help="synth: auto (default) searches the "
                   "note within 0.5 semitone of the target's measured pitch (YIN) when it is periodic; search: the "
                   "whole range")
    o.add_argument("--sample-rate", type=int, default=16000, help="rate the chain renders and compares at "
                   "(default 16000)")
    o.add_argument("--output", "-o", help="preset file to write (TOML, atomically); without it, print only")
    o.add_argument("--json", action="store_true", help="print the result as one JSON object")
    o.set_defaults(func=cmd_optimize)

    p = sub.add_parser("preset", **parser_kwargs(
        "render, show, index and recommend presets",
        ("edge-runtime preset render preset.toml -o note.wav --note 64 --duration 1.5",
         "edge-runtime preset render fx.toml -i dry.wav -o wet.wav",
         "edge-runtime preset info preset.toml --json",
         "edge-runtime preset index presets/",
         "edge-runtime preset recommend presets/ --user ana --context pad --top 3",
         "edge-runtime preset feedback presets/ --user ana --context pad --preset warm_pad --accept")))
    p.set_defaults(func=_dispatch)
    ps = p.add_subparsers(dest="preset_command", metavar="ACTION")
    r = ps.add_parser("render", **parser_kwargs(
        "render a preset to an audio file", ("edge-runtime preset render preset.toml -o note.wav --note 60",)))
    r.add_argument("preset", help="preset file (TOML)")
    r.add_argument("--output", "-o", required=True, help="audio file to write (atomically)")
    r.add_argument("--input", "-i", help="effects presets: the signal to process")
    r.add_argument("--note", type=float, help="synth: MIDI note (default: the preset's)")
    r.add_argument("--duration", type=float, default=1.0, help="synth: seconds (default 1.0)")
    r.add_argument("--sample-rate", type=int, help="synth: output rate (default: the preset's)")
    r.set_defaults(func=cmd_preset_render)
    i = ps.add_parser("info", **parser_kwargs("show a preset's chain, parameters and fit",
                                              ("edge-runtime preset info preset.toml",)))
    i.add_argument("preset", help="preset file (TOML)")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=cmd_preset_info)
    x = ps.add_parser("index", **parser_kwargs(
        "render every preset of a folder and write its library (embeddings for recommendation)",
        ("edge-runtime preset index presets/",)))
    x.add_argument("folder", help="folder of generator preset files (*.toml, one chain)")
    x.add_argument("--duration", type=float, default=1.0, help="seconds rendered per preset (default 1.0)")
    x.set_defaults(func=cmd_preset_index)
    from .recommend import CONTEXTS

    for name, help_, ex in (
            ("recommend", "presets ranked for a listener and a context", "edge-runtime preset recommend presets/ "
             "--user ana --context lead --top 5"),
            ("feedback", "a listener's answer to a preset (learned at once)", "edge-runtime preset feedback presets/ "
             "--user ana --context lead --preset bright_lead --reject")):
        q = ps.add_parser(name, **parser_kwargs(help_, (ex,)))
        q.add_argument("folder", help="an indexed preset folder (edge-runtime preset index)")
        q.add_argument("--user", "-u", default="default", help="listener name (default 'default'); one state file "
                       "each")
        q.add_argument("--context", default=CONTEXTS[0], choices=CONTEXTS, help=f"default {CONTEXTS[0]}")
        q.add_argument("--state-dir", help="where listener states live (default: the state folder, "
                       "$EDGE_RUNTIME_STATE; <it>/presets/<user>.state)")
        q.add_argument("--population", help="a population prior (preset-population state) to start from")
        if name == "recommend":
            q.add_argument("--top", type=int, default=5, help="how many (default 5)")
            q.add_argument("--all", action="store_true", help="include presets already answered")
            q.add_argument("--json", action="store_true", help="print one JSON object")
            q.set_defaults(func=cmd_preset_recommend)
        else:
            q.add_argument("--preset", required=True, help="the preset's name (its file name without .toml)")
            g = q.add_mutually_exclusive_group(required=True)
            g.add_argument("--accept", action="store_true", help="the listener keeps it")
            g.add_argument("--reject", action="store_true", help="the listener does not")
            q.set_defaults(func=cmd_preset_feedback)


def _dispatch(args) -> int:
    if not getattr(args, "preset_command", None):
        raise ConfigError("preset needs an action: render, info, index, recommend or feedback "
                          "(see `edge-runtime preset -h`)")
    return args.func(args)


def _initial_point(init: str, chain, target):
    if init == "default":
        return None
    if init == "regressor":
        from .regressor import predict_preset

        return predict_preset(chain, target)
    from .preset import read_preset

    pre = read_preset(init)
    if pre.chain != chain.name:
        raise ConfigError(f"--init {init}: a {pre.chain!r} preset, expected one for chain {chain.name!r}")
    return pre.params


def cmd_optimize(args) -> int:
    import os

    from .chains import make_chain
    from .search import default_workers, optimize
    from .target import make_target

    kw = {"sample_rate": args.sample_rate}
    if args.instrument:
        if args.chain != "ddsp":
            from ..errors import ConfigError

            raise ConfigError(f"--instrument {args.instrument!r} is for --chain ddsp, not --chain {args.chain}")
        kw["instrument"] = args.instrument
    chain = make_chain(args.chain, **kw)
    chain.with_fixed(_assignments(args.set, "--set"))
    if args.output:
        parent = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(parent):
            from ..errors import AudioOutputError
            raise AudioOutputError(f"{args.output}: folder {parent} does not exist")
    if args.max_seconds is not None and not (args.max_seconds > 0 and math.isfinite(args.max_seconds)):
        raise ConfigError(f"--max-seconds {args.max_seconds}: expected a positive number of seconds")
    target = make_target(chain, args.target, args.input)
    measured = chain.adapt_to(target) if args.pitch == "auto" else {}
    if measured and not (getattr(args, "quiet", False) or args.json):
        print("measured     " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in measured.items()))
    x0 = _initial_point(args.init, chain, target)
    quiet = getattr(args, "quiet", False) or args.json
    budget = args.budget
    marks = sorted({max(1, int(round(budget * k / 20))) for k in range(1, 21)}) if budget else []
    state = {"next": 0}

    def progress(n, best, seconds):
        if quiet:
            return
        while state["next"] < len(marks) and n >= marks[state["next"]]:
            state["next"] += 1
            if state["next"] == 1:
                print(f"{'evaluations':>11}  {'best loss':>10}  {'seconds':>8}")
            print(f"{n:>11}  {best:>10.5f}  {seconds:>8.1f}", flush=True)

    workers = args.jobs or default_workers()
    res = optimize(chain, target, method=args.method, budget=budget, seed=args.seed, workers=workers, x0=x0,
                   sigma0=0.12 if x0 is not None else None, max_seconds=args.max_seconds,
                   patience=args.patience or None, callback=progress)
    fit = {"target": os.path.abspath(args.target), "method": args.method, "init": args.init, "seed": args.seed,
           "evaluations": res.evaluations, "loss": res.loss, "spectral": res.components["spectral"],
           "seconds": round(res.seconds, 3), "stopped_by": res.stopped_by}
    if args.input:
        fit["input"] = os.path.abspath(args.input)
    if args.output:
        from .preset import write_preset

        write_preset(args.output, chain, res.params, fit)
    if args.json:
        print(json.dumps({"chain": chain.name, "params": res.params, "fit": fit, "components": res.components,
                          "history": [list(h) for h in res.history], "output": args.output}))
    elif not getattr(args, "quiet", False):
        print(f"best loss {res.loss:.5f} (spectral {res.components['spectral']:.5f}, mfcc "
              f"{res.components['mfcc']:.5f}, loudness {res.components['loudness']:.5f}) after "
              f"{res.evaluations} evaluations, {res.seconds:.1f} s ({res.stopped_by})")
        print("  " + ", ".join(f"{k} {v:.4g}" for k, v in res.params.items()))
        if args.output:
            print(f"preset written to {args.output}")
    return 0


def cmd_preset_render(args) -> int:
    import numpy as np

    from ..io.files import FileSink
    from .preset import read_preset
    from .target import load_audio

    pre = read_preset(args.preset)
    params = dict(pre.params)
    if pre.chain == "effects":
        if not args.input:
            raise ConfigError(f"{args.preset}: an effects preset processes a signal: give --input")
        from ..io.files import FileSource

        src = FileSource(args.input)
        rate = src.sample_rate
        src.close()
        from .effects import EffectsChain

        x = load_audio(args.input, rate, max_seconds=3600.0, what="input")
        chain = EffectsChain(rate)
        y = chain.render(params, x.shape[0], x)
    else:
        cfg = dict(pre.chain_config)
        if args.sample_rate:
            cfg["sample_rate"] = args.sample_rate
        from .chains import make_chain

        chain = make_chain(pre.chain, **cfg)
        if args.note is not None:
            params["note"] = chain.space.check_value("note", args.note, "--note")
        if not (0.01 <= args.duration <= 60.0):
            raise ConfigError(f"--duration {args.duration}: expected 0.01..60 seconds")
        rate = chain.sample_rate
        y = chain.render(params, int(round(args.duration * rate)))
    sink = FileSink(args.output, rate, 1)
    ok = False
    try:
        sink.write(np.ascontiguousarray(y.reshape(-1, 1), np.float32))
        ok = True
    finally:
        sink.close(commit=ok)     # no half-written output
    if not getattr(args, "quiet", False):
        print(f"{args.output}: {y.shape[0] / rate:.2f} s at {rate} Hz ({pre.chain} preset {args.preset})")
    return 0


def cmd_preset_info(args) -> int:
    from .preset import read_preset

    pre = read_preset(args.preset)
    if args.json:
        print(json.dumps({"chain": pre.chain, "chain_config": pre.chain_config, "params": pre.params, "fit": pre.fit}))
        return 0
    print(f"chain        {pre.chain} {pre.chain_config or ''}")
    for k, v in pre.params.items():
        print(f"  {k:<14} {v:.6g}")
    for k, v in pre.fit.items():
        print(f"fit {k:<9} {v}")
    return 0




def cmd_preset_index(args) -> int:
    from .recommend import index_folder

    lib = index_folder(args.folder, duration_s=args.duration)
    print(f"{lib.path}: {len(lib)} {lib.chain} presets, {lib.embedding.shape[1]}-dim embeddings")
    return 0


def _recommender(args):
    import os

    from ..paths import state_dir
    from .recommend import Population, PresetLibrary, Recommender

    lib_path = os.path.join(args.folder, "library.state")
    if not os.path.isfile(lib_path):
        raise ConfigError(f"{args.folder}: no library.state; index it first: edge-runtime preset index {args.folder}")
    lib = PresetLibrary.load(lib_path)
    pop = Population.load(args.population) if args.population else None
    if any(c in args.user for c in "/\\\0") or args.user in ("", ".", ".."):
        raise ConfigError(f"--user {args.user!r}: expected a plain name (letters, digits, - _ .)")
    path = os.path.join(str(state_dir(args.state_dir)), "presets", f"{args.user}.state")
    rec = Recommender.load(path, lib, pop) if os.path.isfile(path) else Recommender(lib, pop, user=args.user)
    return rec, path


def cmd_preset_recommend(args) -> int:
    rec, _ = _recommender(args)
    if args.top < 1:
        raise ConfigError(f"--top {args.top}: expected at least 1")
    idx = rec.recommend(args.context, n=args.top, explore=False, new_only=not args.all)
    mean, sd = rec.posterior(idx, args.context)
    rows = [{"preset": rec.lib.names[i], "score": round(float(m), 4), "sd": round(float(d), 4)}
            for i, m, d in zip(idx, mean, sd)]
    if args.json:
        print(json.dumps({"user": rec.user, "context": args.context, "answers": rec.answers, "presets": rows}))
    else:
        for r in rows:
            print(f"{r['preset']:<24} {r['score']:+.3f}")
    return 0


def cmd_preset_feedback(args) -> int:
    import os

    rec, path = _recommender(args)
    i = rec.lib.index_of(args.preset)
    rec.feedback(i, args.context, bool(args.accept))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rec.save(path)
    print(f"{rec.user}: {'accepted' if args.accept else 'rejected'} {args.preset} ({args.context}); "
          f"{rec.answers} answers in {path}")
    return 0

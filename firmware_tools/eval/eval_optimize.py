"""Sound matching: loss vs evaluations of GA, CMA-ES, GA then CMA-ES (memetic), random search and
regressor-initialised CMA-ES and memetic search,
the regressor alone, parameter error where the truth is known.

    python firmware_tools/eval/eval_optimize.py --budget 800 --seeds 0,1 --n-synth 8 \
        --out firmware_tools/eval/results/optimize.md

Targets, 0.75 s at 16 kHz: ``--n-synth`` TEST presets of ``firmware_tools/data/build_presets.py``
(seed 1: never seen by the regressor, which trained on seed 0) and recorded instrument notes with
no true preset (lmms-common and sonic-pi-samples, :data:`RECORDED`; cut at the onset, peak -6 dBFS).
Every method searches the same space per target (the synth's note narrowed to +-0.5 semitone of the
YIN pitch when the target is periodic, ``SynthChain.adapt_to``), at the same budget, one process.
Writes the table (``--out``), ``optimize.json`` and ``optimize_curves.png`` beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)

from edge_runtime.optimize import Target, load_audio, make_chain  # noqa: E402
from edge_runtime.optimize.loss import MultiResolutionLoss  # noqa: E402
from edge_runtime.optimize.regressor import CLIP_SECONDS, predict_preset  # noqa: E402
from edge_runtime.optimize.search import optimize  # noqa: E402

RECORDED = ("/usr/share/lmms/samples/basses/synth_acid01.ogg", "/usr/share/lmms/samples/basses/bass_acid01.ogg",
            "/usr/share/lmms/samples/instruments/flute01.ogg", "/usr/share/sonic-pi/samples/bass_hard_c.flac")
METHODS = ("random", "ga", "cma", "cma+regressor", "memetic", "memetic+regressor")
SR = 16000


def recorded_target(path: str) -> np.ndarray:
    x = load_audio(path, SR, max_seconds=60.0)
    start = max(0, int(np.argmax(np.abs(x) > 0.05 * np.abs(x).max())) - int(0.01 * SR))
    n = int(CLIP_SECONDS * SR)
    y = x[start:start + n]
    y = np.pad(y, (0, n - y.shape[0]))
    return (y * (0.5 / np.abs(y).max())).astype(np.float32)


def targets(n_synth: int, data: str):
    te = np.load(os.path.join(data, "test.npz"))
    out = []
    for i in range(n_synth):
        out.append({"name": f"preset_test_{i}", "audio": te["audio"][i].astype(np.float32) / 32767.0,
                    "unit": te["unit"][i]})
    for p in RECORDED:
        if os.path.exists(p):
            out.append({"name": os.path.basename(p), "audio": recorded_target(p), "unit": None})
    return out


def run(args) -> dict:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    full = make_chain("synth")
    names = [p.name for p in full.space.free]
    rows = []
    predict_preset(full, Target(np.ones(int(CLIP_SECONDS * SR), np.float32) * 0.1, SR))  # load the session
    t_start = time.time()
    for tg in targets(args.n_synth, args.data):
        chain = make_chain("synth")
        target = Target(tg["audio"], SR, name=tg["name"])
        measured = chain.adapt_to(target)
        ref = MultiResolutionLoss(target.audio, SR)
        t0 = time.perf_counter()
        reg_params = predict_preset(chain, target)
        reg_ms = (time.perf_counter() - t0) * 1e3
        reg = optimize(chain, target, method="cma", budget=0, x0=reg_params)
        row = {"target": tg["name"], "known": tg["unit"] is not None, "measured": measured, "regressor_ms": reg_ms,
               "regressor": {"loss": reg.loss, "spectral": reg.components["spectral"]}, "runs": {}}
        truth = full.space.decode(tg["unit"]) if tg["unit"] is not None else None

        def perr(params):
            if truth is None:
                return None
            u = full.space.encode(params)
            return {"unit_mae": float(np.mean(np.abs(u - tg["unit"]))),
                    "per_param": {n: float(abs(a - b)) for n, a, b in zip(names, u, tg["unit"])},
                    "note_err": float(abs(params["note"] - truth["note"]))}

        row["regressor"]["param_error"] = perr(reg.params)
        for m in METHODS:
            for seed in args.seeds:
                t0 = time.time()
                if m == "cma+regressor":
                    r = optimize(chain, target, method="cma", budget=args.budget, seed=seed, x0=reg_params, sigma0=0.12)
                elif m == "memetic+regressor":
                    r = optimize(chain, target, method="memetic", budget=args.budget, seed=seed, x0=reg_params)
                else:
                    r = optimize(chain, target, method=m, budget=args.budget, seed=seed)
                curve = np.minimum.accumulate(r.losses)
                row["runs"][f"{m}/{seed}"] = {"loss": r.loss, "spectral": ref.components(
                    chain.render(r.params, target.n_frames))["spectral"], "seconds": time.time() - t0,
                    "curve": curve[np.unique(np.geomspace(1, len(curve), 40).astype(int)) - 1].tolist(),
                    "curve_at": (np.unique(np.geomspace(1, len(curve), 40).astype(int))).tolist(),
                    "param_error": perr(r.params)}
        print(f"{tg['name']:<24} reg {reg.loss:.3f} " + " ".join(
            f"{m} {np.median([row['runs'][f'{m}/{s}']['loss'] for s in args.seeds]):.3f}" for m in METHODS)
            + f"  ({time.time() - t_start:.0f} s)", flush=True)
        rows.append(row)
    return {"command": sys.argv[1:], "budget": args.budget, "seeds": args.seeds, "rows": rows,
            "wall_s": time.time() - t_start}


def summarize(res: dict) -> str:
    rows, seeds, B = res["rows"], res["seeds"], res["budget"]

    def final(rows_, m, key="loss"):
        return np.array([[r["runs"][f"{m}/{s}"][key] for s in seeds] for r in rows_])

    lines = []
    for label, sel in (("held-out presets (truth known)", [r for r in rows if r["known"]]),
                       ("recorded sounds (no true preset)", [r for r in rows if not r["known"]]),
                       ("all targets", rows)):
        if not sel:
            continue
        lines += [f"### {label}: {len(sel)} targets x {len(seeds)} seeds, budget {B}", "",
                  "| method | total loss median [IQR] | spectral median | median ratio random / method (spectral) | "
                  "param unit MAE | note error (st) |", "|---|---|---|---|---|---|"]
        rnd = final(sel, "random", "spectral")
        for m in METHODS:
            tot, spec = final(sel, m), final(sel, m, "spectral")
            ratio = np.median(rnd / np.maximum(spec, 1e-9))
            pe = [r["runs"][f"{m}/{s}"]["param_error"] for r in sel for s in seeds if r["known"]]
            mae = f"{np.median([p['unit_mae'] for p in pe]):.3f}" if pe else "-"
            ne = f"{np.median([p['note_err'] for p in pe]):.2f}" if pe else "-"
            lines.append(f"| {m} | {np.median(tot):.3f} [{np.percentile(tot, 25):.3f}, {np.percentile(tot, 75):.3f}] | "
                         f"{np.median(spec):.3f} | {ratio:.2f}x | {mae} | {ne} |")
        reg = np.array([r["regressor"]["loss"] for r in sel])
        regs = np.array([r["regressor"]["spectral"] for r in sel])
        pe = [r["regressor"]["param_error"] for r in sel if r["known"]]
        mae = f"{np.median([p['unit_mae'] for p in pe]):.3f}" if pe else "-"
        ne = f"{np.median([p['note_err'] for p in pe]):.2f}" if pe else "-"
        lines.append(f"| regressor alone (1 evaluation) | {np.median(reg):.3f} [{np.percentile(reg, 25):.3f}, "
                     f"{np.percentile(reg, 75):.3f}] | {np.median(regs):.3f} | "
                     f"{np.median(rnd / np.maximum(regs[:, None], 1e-9)):.2f}x | {mae} | {ne} |")
        best = min(METHODS, key=lambda m: np.median(final(sel, m)))
        ratio_reg = np.median(reg / np.median(final(sel, best), axis=1))
        lines += ["", f"Best optimizer here: **{best}**; regressor alone / its final loss (median over targets): "
                      f"{ratio_reg:.2f}x; regressor time median {np.median([r['regressor_ms'] for r in sel]):.1f} ms "
                      f"(max {max(r['regressor_ms'] for r in sel):.1f} ms) per clip.", ""]
    return "\n".join(lines)


def figure(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, known, title in ((axes[0], True, "held-out presets"), (axes[1], False, "recorded sounds")):
        sel = [r for r in res["rows"] if r["known"] == known]
        if not sel:
            continue
        for m in METHODS:
            curves = [r["runs"][f"{m}/{s}"]["curve"] for r in sel for s in res["seeds"]]
            at = sel[0]["runs"][f"{m}/{res['seeds'][0]}"]["curve_at"]
            n = min(len(c) for c in curves)
            c = np.array([cc[:n] for cc in curves])
            med, lo, hi = np.median(c, 0), np.percentile(c, 25, 0), np.percentile(c, 75, 0)
            ax.plot(at[:n], med, label=m)
            ax.fill_between(at[:n], lo, hi, alpha=0.15)
        reg = np.median([r["regressor"]["loss"] for r in sel])
        ax.axhline(reg, color="k", ls=":", label="regressor alone")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("loss evaluations")
        ax.set_ylabel("best total loss (median, IQR)")
        ax.set_title(f"{title} ({len(sel)} targets x {len(res['seeds'])} seeds)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=int, default=800)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--n-synth", type=int, default=8)
    ap.add_argument("--data", default="firmware_tools/work/presets")
    ap.add_argument("--out", default="firmware_tools/eval/results/optimize.md")
    a = ap.parse_args(argv)
    a.seeds = [int(s) for s in a.seeds.split(",")]
    res = run(a)
    base = os.path.splitext(a.out)[0]
    with open(base + ".json", "w") as f:
        json.dump(res, f, indent=1)
    with open(base + "_table.md", "w") as f:
        f.write(summarize(res))
    print(summarize(res))
    try:   # the table first: a missing matplotlib loses only the figure
        figure(res, base + "_curves.png")
    except ImportError as e:
        print(f"no figure ({e}): pip install matplotlib", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

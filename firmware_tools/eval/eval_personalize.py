"""Personalization benchmark: acceptance before and after 10, 50, 200 answers, per listener family.

    python firmware_tools/eval/eval_personalize.py --families loudness,linear,compromise,hearing \
        --seed 1000000 --out firmware_tools/eval/results/personalize.md

The listeners (``personalize_users.py``) are written apart from the recommender; ``hearing``
was kept aside while designing and run once at the end. Per family:

1. **Population** (collaborative): ``--train-users`` listeners of the family each give
   ``--interactions`` answers to the recommender with the generic prior (no population yet);
   :meth:`Population.fit` learns the crowd's prior from their state (what a hub holding many
   users' states does with ``edge-runtime personalize population``).
2. **Test listeners** (``--test-users``, other seeds) under four policies:
   ``default`` (the parameter defaults 0.5 / 0 dB / 0 dB/oct, never learning),
   ``population`` (the crowd's prior mean, never learning), ``personal`` (learning, generic
   prior) and ``ours`` (learning on top of the population prior: what the device runs).
3. **Acceptance** after 0, 10, 50, 200 answers: the recommendation (explore 0) for 30 fresh
   contexts per listener is accepted when every parameter lies within the tolerance of the
   listener's ideal (answers aside: noise-free), and per parameter. Training recommendations
   use ``--explore``; the answers include the family's 10 % noise.

The first ``--state-users`` test listeners of ``ours`` go through a state save and load after
every answer (the device path); recommend time is measured on every training recommendation
of ``ours`` right after an answer (the posterior is recomputed), one BLAS thread.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from personalize_users import DESIGN_FAMILIES, FAMILIES, draw_context  # noqa: E402

from edge_runtime.personalize.model import PARAM_NAMES, PARAMS, Population, UserModel  # noqa: E402

CHECKPOINTS = (0, 10, 50, 200)
DEFAULTS = np.array([p.default for p in PARAMS])


def eval_contexts(seed: int, n: int):
    r = np.random.default_rng([seed, 7])
    return [draw_context(r) for _ in range(n)]


def score(listener, ctxs, recommend) -> np.ndarray:
    """(n contexts, P) booleans: each parameter within the tolerance of the ideal."""
    return np.array([listener.within(c, recommend(c)) for c in ctxs])


def run_learner(family, seed: int, population, n: int, n_eval: int, explore: float, state_path=None,
                times=None, checkpoints=CHECKPOINTS):
    listener = FAMILIES[family](seed)
    model = UserModel(user=f"sim{seed}", population=population)
    rng = np.random.default_rng([seed, 3])
    ctxs = eval_contexts(seed, n_eval)
    out = {}
    for i in range(n + 1):
        if i in checkpoints:
            out[i] = score(listener, ctxs, model.recommend)
        if i == n:
            break
        ctx = draw_context(listener.rng)
        t0 = time.perf_counter()
        rec = model.recommend(ctx, rng, explore)
        if times is not None:
            times.append(time.perf_counter() - t0)
        action, adj = listener.answer(ctx, rec)
        model.feedback(ctx, action, params=rec, adjusted=adj)
        if state_path is not None:
            model.save(state_path)
            model = UserModel.load(state_path, population)
    return out, model


def run_family(family: str, a, tmp: str) -> dict:
    t0 = time.perf_counter()
    base = a.seed + 1_000_003 * sorted(FAMILIES).index(family)
    train = [run_learner(family, base + i, None, a.interactions, 0, a.explore, checkpoints=())[1]
             for i in range(a.train_users)]
    pop = Population.fit(train)
    pop.save(os.path.join(tmp, f"{family}.population"))
    fit_s = time.perf_counter() - t0
    res = {"default": [], "population": [], "personal": [], "ours": []}
    times, sizes = [], []
    for u in range(a.test_users):
        seed = base + 500_000 + u
        listener, ctxs = FAMILIES[family](seed), eval_contexts(seed, a.eval_contexts)
        res["default"].append({k: score(listener, ctxs, lambda c: DEFAULTS) for k in CHECKPOINTS})
        res["population"].append({k: score(listener, ctxs, pop.predict) for k in CHECKPOINTS})
        res["personal"].append(run_learner(family, seed, None, a.interactions, a.eval_contexts, a.explore)[0])
        sp = os.path.join(tmp, f"{family}-{u}.state") if u < a.state_users else None
        r, model = run_learner(family, seed, pop, a.interactions, a.eval_contexts, a.explore, sp, times)
        res["ours"].append(r)
        if sp is not None:
            sizes.append(os.path.getsize(sp))
    out = {"fit_s": fit_s, "wall_s": time.perf_counter() - t0, "population_users": a.train_users,
           "test_users": a.test_users, "recommend_ms": {"median": 1e3 * float(np.median(times)),
                                                        "p99": 1e3 * float(np.percentile(times, 99)),
                                                        "max": 1e3 * float(np.max(times))},
           "state_bytes": max(sizes) if sizes else None, "policies": {}}
    for pol, runs in res.items():
        out["policies"][pol] = {str(k): {"all": float(np.mean([r[k].all(axis=1).mean() for r in runs])),
                                         **{p: float(np.mean([r[k][:, j].mean() for r in runs]))
                                            for j, p in enumerate(PARAM_NAMES)}} for k in CHECKPOINTS}
    return out


def figure(results: dict, path: str) -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_runtime import atomic

    fams = list(results)
    fig, axes = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.6), sharey=True)
    for ax, fam in zip(np.atleast_1d(axes), fams):
        for pol in ("default", "population", "personal", "ours"):
            ys = [100 * results[fam]["policies"][pol][str(k)]["all"] for k in CHECKPOINTS]
            ax.plot(CHECKPOINTS, ys, marker="o", label=pol)
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xticks(CHECKPOINTS, [str(k) for k in CHECKPOINTS])
        ax.set_title(fam)
        ax.set_xlabel("answers")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("accepted (all 3 parameters), %")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    atomic.commit(tmp, path)
    return True


def render(results: dict, a, argv, fig_note: str) -> str:
    lines = ["# Personalization benchmark (simulated listeners, issue 32)", "",
             f"Command: `python firmware_tools/eval/eval_personalize.py {' '.join(argv)}`", "",
             f"Per family: a population prior fitted from {a.train_users} listeners x {a.interactions} answers, "
             f"then {a.test_users} other listeners; acceptance of the recommendation (explore 0) on "
             f"{a.eval_contexts} fresh contexts per listener after 0 / 10 / 50 / 200 answers (training "
             f"explore={a.explore}, 10 % noisy answers). *Accepted* = all three parameters within the model's "
             "tolerance of the listener's ideal. Families: `firmware_tools/eval/personalize_users.py` "
             f"(design: {', '.join(DESIGN_FAMILIES)}; held out: hearing).", "",
             "| family | policy | before | after 10 | after 50 | after 200 |", "|---|---|---|---|---|---|"]
    label = {"default": "defaults (no personalization)", "population": "population only (the crowd's prior)",
             "personal": "personal, generic prior (no population)", "ours": "**personal + population (ours)**"}
    for fam, r in results.items():
        for pol in ("default", "population", "personal", "ours"):
            v = r["policies"][pol]
            lines.append(f"| {fam} | {label[pol]} | " + " | ".join(f"{100 * v[str(k)]['all']:.1f}%" for k in CHECKPOINTS) + " |")
    lines += ["", "Per parameter (ours; within tolerance, %): denoise / gain / tilt", "",
              "| family | before | after 10 | after 50 | after 200 |", "|---|---|---|---|---|"]
    for fam, r in results.items():
        v = r["policies"]["ours"]
        lines.append(f"| {fam} | " + " | ".join(" / ".join(f"{100 * v[str(k)][p]:.0f}" for p in PARAM_NAMES)
                                               for k in CHECKPOINTS) + " |")
    lines += ["", "| family | recommend median / p99 / max (ms) | state file (bytes) | population fit + run (s) |",
              "|---|---|---|---|"]
    for fam, r in results.items():
        t = r["recommend_ms"]
        lines.append(f"| {fam} | {t['median']:.2f} / {t['p99']:.2f} / {t['max']:.2f} | {r['state_bytes']} | "
                     f"{r['fit_s']:.0f} + {r['wall_s'] - r['fit_s']:.0f} |")
    lines += ["", fig_note, ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", default=",".join(DESIGN_FAMILIES))
    ap.add_argument("--train-users", type=int, default=100)
    ap.add_argument("--test-users", type=int, default=100)
    ap.add_argument("--interactions", type=int, default=200)
    ap.add_argument("--eval-contexts", type=int, default=30)
    ap.add_argument("--explore", type=float, default=0.0)
    ap.add_argument("--state-users", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1_000_000, help="development used seed 0")
    ap.add_argument("--out", help="markdown report (a .json with the same stem is written beside it)")
    a = ap.parse_args(argv)
    fams = [f.strip() for f in a.families.split(",") if f.strip()]
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown:
        ap.error(f"--families: unknown family {unknown[0]!r} (expected {', '.join(FAMILIES)})")
    if max(CHECKPOINTS) > a.interactions:
        ap.error(f"--interactions {a.interactions} is below the last checkpoint {max(CHECKPOINTS)}")
    from threadpoolctl import threadpool_limits   # a dependency of scikit-learn

    tmp = tempfile.mkdtemp(prefix="personalize_")
    results = {}
    with threadpool_limits(limits=1):
        for fam in fams:
            results[fam] = run_family(fam, a, tmp)
            v = results[fam]["policies"]
            print(fam, {p: [round(100 * v[p][str(k)]["all"], 1) for k in CHECKPOINTS] for p in v},
                  f"{results[fam]['wall_s']:.0f}s", flush=True)
    fig_note = "No figure: matplotlib is not installed in this environment."
    if a.out:
        png = os.path.splitext(a.out)[0] + ".png"
        if figure(results, png):
            fig_note = f"Figure: `{os.path.relpath(png, os.path.dirname(os.path.abspath(a.out)))}`."
    text = render(results, a, argv, fig_note)
    print(text)
    if a.out:
        from edge_runtime.atomic import write_bytes

        write_bytes(a.out, text.encode())
        write_bytes(os.path.splitext(a.out)[0] + ".json",
                    json.dumps({"command": argv, "families": results}, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 32's diagnosis probe: does the round-1 recommender's gain follow the input level?

    python firmware_tools/eval/probe_personalize_round1.py      # needs the git history (round 1 = dd1514e)

One listener whose ideal gain is ``clip(-28 - level, -12, 12)`` dB (denoise and tilt at the
defaults), speech at levels U(-45, -10) dBFS, every miss answered with an adjust to the exact
ideal. Runs the round-1 ``UserModel`` (read from git), then refits its reward model on the
probe's own rows with the variations in ``docs/personalize.md``, then the current model.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np

ROUND1 = "dd1514e"
LEVELS = (-40.0, -30.0, -20.0, -12.0)


def round1_module():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    src = subprocess.run(["git", "-C", root, "show", f"{ROUND1}:edge_runtime/personalize/model.py"],
                         check=True, capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("edge_runtime.personalize._round1", loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "edge_runtime.personalize"
    sys.modules[spec.name] = mod
    exec(compile(src, "round1/model.py", "exec"), mod.__dict__)
    return mod


def ideal(ctx):
    return np.array([0.5, float(np.clip(-28.0 - ctx.level_dbfs, -12.0, 12.0)), 0.0])


def main() -> int:
    R = round1_module()
    tol = np.array([p.tolerance for p in R.PARAMS])
    G = 1
    print("| answers | explore | recommended gain at -40 / -30 / -20 / -12 dBFS | accepted (last 50) | gain curvature |")
    print("|---|---|---|---|---|")
    rows = None
    for explore in (0.15, 0.0):
        m, rng, r2 = R.UserModel(user="p"), np.random.default_rng(0), np.random.default_rng(1)
        acc, data = [], []
        for i in range(1000):
            ctx = R.Context("speech", float(r2.uniform(-45, -10)), -60.0, 12.0)
            rec = m.recommend(ctx, rng, explore) if explore > 0 else m.recommend(ctx)
            want = ideal(ctx)
            ok = bool(np.all(np.abs(rec - want) <= tol))
            acc.append(ok)
            if ok:
                m.feedback(ctx, "accept", params=rec)
                data.append((m.features(ctx, rec), 1.0, "accept", 0.0))
            else:
                m.feedback(ctx, "adjust", params=rec, adjusted=want)
                data += [(m.features(ctx, rec), 0.0, "off", abs(rec[G] - want[G]) / tol[G]),
                         (m.features(ctx, want), 1.0, "ideal", 0.0)]
            if i + 1 in (10, 200, 1000):
                g = [m.recommend(R.Context("speech", lv, -60.0, 12.0))[G] for lv in LEVELS]
                print(f"| {i + 1} | {explore} | {' / '.join(f'{x:.2f}' for x in g)} dB | {np.mean(acc[-50:]):.0%} | "
                      f"{m.mean()[m._sq][G]:+.3f} |")
        if explore == 0.0:
            rows = data
    X = np.array([r[0] for r in rows])
    y = np.array([r[1] for r in rows])
    kind = np.array([r[2] for r in rows])
    dist = np.array([r[3] for r in rows])
    print(f"\nexplore 0 rows: {len(y)}, refused offers {int((kind == 'off').sum())}, their median gain distance "
          f"{np.median(dist[kind == 'off']):.2f} tolerance steps")
    base = R.UserModel()
    lv = X[:, 1 + len(R.CLASSES)]

    def refit(mask, pin=False, extra=None):
        Xm, A, b = X[mask], base.A.copy(), base.b.copy()
        if extra is not None:
            Xm = np.hstack([Xm, extra[mask, None]])
            A = np.pad(A, ((0, 1), (0, 1)))
            A[-1, -1] = base.prior_precision
            b = np.pad(b, (0, 1))
        if pin:
            A[base._sq, base._sq] += 1e9 * np.eye(3)
            b[base._sq] += 1e9 * base.m0[base._sq]
        w = np.linalg.solve(A + Xm.T @ Xm, b + Xm.T @ y[mask])
        lin = w[base.nc:base.nc + base.nc * base.np_].reshape(base.np_, base.nc)
        q = w[base._sq][G]
        g = [lin[G] @ R.Context("speech", v, -60.0, 12.0).vector() / (-2 * min(q, -0.05)) * tol[G] for v in LEVELS]
        pred = (Xm @ w)[kind[mask] == "off"]
        return q, g, pred

    print("\n| refit | gain curvature | argmax gain at -40 / -30 / -20 / -12 dBFS |\n|---|---|---|")
    allm = np.ones(len(y), bool)
    for label, args in (("as round 1", (allm,)), ("curvature pinned at -0.5", (allm, True)),
                        ("pinned + level^2 feature", (allm, True, lv ** 2)),
                        ("without refused offers", (kind != "off",))):
        q, g, pred = refit(*args)
        print(f"| {label} | {q:+.3f} | {' / '.join(f'{x:.1f}' for x in g)} dB |")
        if label.startswith("curvature"):
            pinned_pred = pred
    print(f"\npinned: predicted reward of refused offers median {np.median(pinned_pred):.2f}, "
          f"min {pinned_pred.min():.2f} (observed 0)")

    from edge_runtime.personalize.model import Context, UserModel
    m, r2 = UserModel(), np.random.default_rng(1)
    for i in range(200):
        ctx = Context("speech", float(r2.uniform(-45, -10)), -60.0, 12.0)
        rec, want = m.recommend(ctx), ideal(ctx)
        if np.all(np.abs(rec - want) <= tol):
            m.feedback(ctx, "accept", params=rec)
        else:
            m.feedback(ctx, "adjust", params=rec, adjusted=want)
        if i + 1 in (5, 50, 200):
            g = [m.recommend(Context("speech", v, -60.0, 12.0))[G] for v in LEVELS]
            print(f"current model, {i + 1} answers: gain {' / '.join(f'{x:.1f}' for x in g)} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

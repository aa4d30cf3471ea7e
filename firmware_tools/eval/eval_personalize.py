"""Personalization benchmark with simulated users: acceptance over time vs a fixed default.

    python firmware_tools/eval/eval_personalize.py --users 400 --seed 100000 \
        --out firmware_tools/eval/results/personalize.md

Each simulated user has hidden preferences drawn from the family below; the recommender
(:class:`edge_runtime.personalize.model.UserModel`, the code ``edge-runtime personalize`` runs,
including a state save/load after every feedback) sees only the user's answers.

**User family.** In the parameters' tolerance units (denoise strength 0.2, gain 3 dB, EQ tilt
1.5 dB/oct), a user's ideal setting in context ``c`` is
``u*(c) = base + class_offset[class] + s_noise * noise + s_level * level + s_hour * cos(hour)``:
``base ~ N(0, 1.2^2)`` per parameter, class offsets ``~ N(0, 0.8^2)``, denoise strength rising with
the noise floor (``s_noise ~ N(0.8, 0.3^2)``), gain falling with the level (``s_level ~ N(-0.6,
0.3^2)``), an evening/morning effect on gain (``s_hour ~ N(0, 0.4^2)``). With ``d`` the distance
from the recommended setting to ``u*(c)``:

* parameters: P(accept) = 0.03 + 0.94 * sigmoid(5 (1 - d / tol)), tol ~ U(1.2, 2.0); on a reject
  the user adjusts (to ``u*(c)`` + N(0, 0.3^2)) with probability ~ U(0.3, 0.7);
* presets: users judge a preset against the other presets: P(accept) = 0.03 + 0.94 *
  sigmoid(5 (1 - (d - d_best(c)) / 0.8)); on a reject they pick their best preset with
  probability ~ U(0.3, 0.7) (recorded as the reject plus an accept of the preset they chose).

Contexts per interaction: class (speech .4, music .3, noise .15, silence .05, other .1),
level ~ N(-30, 8) dBFS, noise floor ~ N(-55, 10) dBFS, hour ~ U(0, 24).

**Baselines.** Non-personalized default: the parameter defaults (0.5, 0 dB, 0 dB/oct) and the
factory class -> preset rule (speech -> clear_speech, music -> music, noise -> strong_cleanup,
silence -> neutral, other -> light). Oracle: the user's own ideal (parameters) / best preset.
Development (choosing explore, curvature, prior, reject boost) used seeds 0, 7, ..., 413; report with ``--seed`` >= 100000.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from edge_runtime.personalize.model import CLASSES, PARAMS, PRESETS, Context, UserModel, from_unit, to_unit

CLASS_P = (0.4, 0.3, 0.15, 0.05, 0.1)
FACTORY = {"speech": "clear_speech", "music": "music", "noise": "strong_cleanup", "silence": "neutral",
           "other": "light"}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class SimUser:
    def __init__(self, seed: int):
        r = np.random.default_rng(seed)
        k = len(PARAMS)
        self.base = r.normal(0, 1.2, k)
        self.cls = {c: r.normal(0, 0.8, k) for c in CLASSES}
        self.s_noise = r.normal(0.8, 0.3)
        self.s_level = r.normal(-0.6, 0.3)
        self.s_hour = r.normal(0, 0.4)
        self.tol = r.uniform(1.2, 2.0)
        self.p_adjust = r.uniform(0.3, 0.7)
        self.rng = np.random.default_rng(seed + 1)

    def context(self) -> Context:
        r = self.rng
        return Context(str(r.choice(CLASSES, p=CLASS_P)), float(np.clip(r.normal(-30, 8), -70, -3)),
                       float(np.clip(r.normal(-55, 10), -90, -20)), float(r.uniform(0, 24)))

    def ideal_u(self, ctx: Context) -> np.ndarray:
        v = ctx.vector()
        level, noise, hc = v[1 + len(CLASSES)], v[2 + len(CLASSES)], v[4 + len(CLASSES)]
        u = self.base + self.cls[ctx.audio_class]
        u = u.copy()
        u[0] += self.s_noise * noise
        u[1] += self.s_level * level + self.s_hour * hc
        return to_unit(from_unit(u))   # the ideal within the parameters' ranges

    def p_accept_params(self, ctx, params) -> float:
        d = np.linalg.norm(to_unit(params) - self.ideal_u(ctx))
        return 0.03 + 0.94 * sigmoid(5 * (1 - d / self.tol))

    def preset_dists(self, ctx):
        u = self.ideal_u(ctx)
        return {n: float(np.linalg.norm(to_unit(p) - u)) for n, p in PRESETS.items()}

    def p_accept_preset(self, ctx, name) -> float:
        d = self.preset_dists(ctx)
        return 0.03 + 0.94 * sigmoid(5 * (1 - (d[name] - min(d.values())) / 0.8))


def run_user(seed: int, n: int, mode: str, policy: str, explore: float, state_path: str | None) -> np.ndarray:
    user = SimUser(seed)
    model = UserModel(user=f"sim{seed}")
    rng = np.random.default_rng(seed + 2)
    acc = np.zeros(n)
    for i in range(n):
        ctx = user.context()
        if mode == "params":
            if policy == "default":
                rec = np.array([p.default for p in PARAMS])
            elif policy == "oracle":
                rec = from_unit(user.ideal_u(ctx))
            else:
                rec = model.recommend(ctx, rng, explore)
            ok = user.rng.random() < user.p_accept_params(ctx, rec)
            acc[i] = ok
            if policy == "learn":
                if ok:
                    model.feedback(ctx, "accept", params=rec)
                elif user.rng.random() < user.p_adjust:
                    adj = from_unit(user.ideal_u(ctx) + user.rng.normal(0, 0.3, len(PARAMS)))
                    model.feedback(ctx, "adjust", params=rec, adjusted=adj)
                else:
                    model.feedback(ctx, "reject", params=rec)
        else:
            if policy == "default":
                name = FACTORY[ctx.audio_class]
            elif policy == "oracle":
                d = user.preset_dists(ctx)
                name = min(d, key=d.get)
            else:
                name = model.rank_presets(ctx, rng, explore)[0][0]
            ok = user.rng.random() < user.p_accept_preset(ctx, name)
            acc[i] = ok
            if policy == "learn":
                if ok:
                    model.feedback(ctx, "accept", preset=name)
                elif user.rng.random() < user.p_adjust:
                    d = user.preset_dists(ctx)
                    best = min(d, key=d.get)
                    model.feedback(ctx, "reject", preset=name)
                    if best != name:
                        model.feedback(ctx, "accept", preset=best)
                else:
                    model.feedback(ctx, "reject", preset=name)
        if policy == "learn" and state_path is not None:
            model.save(state_path)          # the device saves after every feedback
            model = UserModel.load(state_path)
    return acc


def summarize(acc: np.ndarray) -> dict:
    return {"first10": float(acc[:, :10].mean()), "i40_50": float(acc[:, 40:50].mean()),
            "i50_100": float(acc[:, 50:].mean()) if acc.shape[1] > 50 else float("nan"), "all": float(acc.mean())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=400)
    ap.add_argument("--seed", type=int, default=100000, help="first user seed (development used 0, 7, ..., 413)")
    ap.add_argument("--interactions", type=int, default=100)
    ap.add_argument("--explore", type=float, default=0.15)
    ap.add_argument("--no-state", action="store_true", help="skip the save/load after every feedback (faster)")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="personalize_")
    res = {}
    t0 = time.perf_counter()
    for mode in ("params", "presets"):
        for policy in ("default", "oracle", "learn"):
            accs = []
            for u in range(a.users):
                sp = None if (a.no_state or policy != "learn") else os.path.join(tmp, f"u{u}.state")
                accs.append(run_user(a.seed + 7 * u, a.interactions, mode, policy, a.explore, sp))
            res[(mode, policy)] = summarize(np.array(accs))
            print(mode, policy, {k: round(v, 3) for k, v in res[(mode, policy)].items()}, flush=True)
    wall = time.perf_counter() - t0
    lines = ["# Personalization benchmark (simulated users)", "",
             f"Command: `python firmware_tools/eval/eval_personalize.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             "", f"{a.users} simulated users (seeds {a.seed}, {a.seed}+7, ...; development used seeds 0, 7, ..., 413), "
             f"{a.interactions} interactions each, Thompson sampling explore={a.explore}"
             f"{'' if a.no_state else ', state saved and reloaded after every feedback'}. "
             "User family and baselines: see the script's docstring.", "",
             "| recommends | policy | acceptance, interactions 1-10 | 41-50 | 51-100 | change 1-10 -> 41-50 |",
             "|---|---|---|---|---|---|"]
    for mode in ("params", "presets"):
        for policy, label in (("default", "non-personalized default"), ("learn", "**personalized (ours)**"),
                              ("oracle", "oracle (knows the hidden preference)")):
            r = res[(mode, policy)]
            ch = (r["i40_50"] / r["first10"] - 1) * 100 if r["first10"] > 0 else float("nan")
            lines.append(f"| {mode} | {label} | {100 * r['first10']:.1f}% | {100 * r['i40_50']:.1f}% | "
                         f"{100 * r['i50_100']:.1f}% | {ch:+.1f}% |")
    lines += ["", f"Wall time {wall:.0f} s.", ""]
    text = "\n".join(lines)
    print(text)
    if a.out:
        from edge_runtime.atomic import write_bytes

        write_bytes(a.out, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

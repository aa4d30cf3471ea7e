"""Recommend time of the personalization model on its slowest path, one BLAS thread.

    python firmware_tools/bench/bench_personalize.py --out firmware_tools/eval/results/personalize_timing.md

Slowest path: an answer has just been recorded (the posterior is recomputed) and the reject
memory is full (64 rejects: 128 posterior samples are weighed), under a fitted population prior.
Also the fast path (no rejects in memory: the posterior mean) and one feedback.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from edge_runtime.personalize.model import REJECT_MEMORY, Context, Population, UserModel


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    ctxs = [Context(str(rng.choice(["speech", "music", "noise"])), float(rng.uniform(-50, -10)),
                    float(rng.uniform(-90, -50)), float(rng.uniform(0, 24))) for _ in range(256)]
    users = []
    for i in range(20):
        u = UserModel()
        for c in ctxs[:40]:
            u.feedback(c, "adjust", params=[0.5, 0, 0], adjusted=[float(rng.uniform(0, 1)), float(rng.uniform(-9, 9)), 0])
        users.append(u)
    pop = Population.fit(users)
    rows = []
    with threadpool_limits(limits=1):
        for label, rejects in (("posterior recomputed, no rejects in memory", 0),
                               (f"posterior recomputed, {REJECT_MEMORY} rejects in memory", REJECT_MEMORY)):
            m = UserModel(population=pop)
            for c in ctxs[:rejects]:
                m.feedback(c, "reject", params=[0.5, 0, 0])
            rec_t, fb_t = [], []
            for i in range(a.calls):
                c = ctxs[i % len(ctxs)]
                t0 = time.perf_counter()
                m.feedback(c, "accept", params=[0.5, 0.0, 0.0])
                t1 = time.perf_counter()
                m.recommend(c)
                t2 = time.perf_counter()
                fb_t.append(t1 - t0)
                rec_t.append(t2 - t1)
            rows.append((label, np.array(rec_t) * 1e3, np.array(fb_t) * 1e3))
    lines = ["# Personalization: recommend and feedback time", "",
             f"Command: `python firmware_tools/bench/bench_personalize.py {' '.join(argv)}`", "",
             f"{a.calls} calls each, one BLAS thread, on a shared 2-core VM (other jobs running).", "",
             "| path | recommend median / p99 / max (ms) | feedback median / p99 (ms) |", "|---|---|---|"]
    for label, r, f in rows:
        lines.append(f"| {label} | {np.median(r):.2f} / {np.percentile(r, 99):.2f} / {r.max():.2f} | "
                     f"{np.median(f):.2f} / {np.percentile(f, 99):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        from edge_runtime.atomic import write_bytes

        write_bytes(a.out, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`edge-runtime batch` throughput: the local process pool vs Dask vs Ray on this machine.

Builds an archive of ``--files`` recordings of ``--seconds`` each (the denoise test clips, noisy
speech, tiled; under firmware_tools/work/bench_batch/) and runs ``edge-runtime batch PIPELINE``
over it once per engine into a fresh output folder, each in a fresh process (so the engine's
start-up -- a process pool, a Dask LocalCluster, a local Ray instance -- is in the wall time, as a
user sees it). Prints files/s, audio seconds per wall second and the engine's real-time factor per
core, from the batch's own ``--json`` report.

    python firmware_tools/eval/bench_batch.py [--files 40] [--seconds 10] [--pipeline denoise] [--jobs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
FIX = ROOT / "tests" / "fixtures" / "audio"


def make_archive(d: Path, files: int, seconds: float) -> None:
    clips = [sf.read(FIX / f"denoise_{snr}db_{k}_noisy.flac", dtype="float32")[0]
             for snr in (0, 5, 10) for k in (0, 1, 2)]
    n = int(seconds * 16000)
    d.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        x = np.tile(clips[i % len(clips)], int(np.ceil(n / len(clips[i % len(clips)]))))[:n]
        sf.write(d / f"rec{i:03d}.flac", x, 16000)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--pipeline", default="denoise")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--engines", default="local1,local,dask,ray",
                    help="comma-separated: local1 (one process, no pool), local, dask, ray")
    args = ap.parse_args()
    work = ROOT / "firmware_tools" / "work" / "bench_batch"
    src = work / f"in_{args.files}x{args.seconds:g}s"
    if not src.is_dir():
        make_archive(src, args.files, args.seconds)
    print(f"python firmware_tools/eval/bench_batch.py --files {args.files} --seconds {args.seconds:g} "
          f"--pipeline {args.pipeline} --jobs {args.jobs}   ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    print("| engine | jobs | files | wall s | files/s | audio s per wall s | engine RTF per core |")
    print("|---|---|---|---|---|---|---|")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for eng in args.engines.split(","):
        out = work / f"out_{eng}"
        shutil.rmtree(out, ignore_errors=True)
        engine, jobs = ("local", 1) if eng == "local1" else (eng, args.jobs)
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "edge_runtime", "batch", args.pipeline, "-i", str(src), "-o", str(out),
                            "-j", str(jobs), "--engine", engine, "--json"], capture_output=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            print(f"| {eng} | {jobs} | failed: {r.stderr.decode().strip().splitlines()[-1:]} |")
            continue
        rep = json.loads(r.stdout.decode().strip().splitlines()[-1])
        print(f"| {eng} | {jobs} | {rep['done']} | {wall:.1f} | {rep['done'] / wall:.2f} | "
              f"{rep['audio_s'] / wall:.1f} | {rep['engine_rtf_per_core']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build the machine-sound anomaly set (see machines.py) as WAV files.

    python firmware_tools/data/build_machines.py --out firmware_tools/work/machines \
        --train-minutes 10 --normal-clips 40 --anomaly-clips 4 --seconds 5 --jobs 2

Layout (DCASE-like, so real recordings in the same layout evaluate the same way)::

    <out>/<machine id>/train/normal_0000.wav ...       one-minute files of normal operation
    <out>/<machine id>/test/normal_0000.wav ...        normal clips
    <out>/<machine id>/test/anomaly_<kind>_s<1-3>_0000.wav ...

Seeds: train, test-normal and test-anomaly clips draw from disjoint seed ranges per ID.
Needs scipy, soundfile, soxr and the Debian package sonic-pi-samples.
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import soundfile as sf

from edge_runtime import atomic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machines as M  # noqa: E402


def _job(args):
    mid, path, seconds, seed, kind, sev = args
    if not os.path.exists(path):
        x = M.render(mid, seconds, seed, kind, sev)
        tmp = path + ".tmp.wav"
        sf.write(tmp, x, M.SR, subtype="PCM_16")
        atomic.commit(tmp, path)
    return path


def jobs_for(mid, out, train_minutes, normal_clips, anomaly_clips, seconds):
    base = M.hash_name(mid.name) % 100_000 * 100
    d_train = os.path.join(out, mid.name, "train")
    d_test = os.path.join(out, mid.name, "test")
    os.makedirs(d_train, exist_ok=True)
    os.makedirs(d_test, exist_ok=True)
    jobs = []
    for i in range(int(round(train_minutes))):
        jobs.append((mid, os.path.join(d_train, f"normal_{i:04d}.wav"), 60.0, 10_000_000 + base + i, None, 0))
    for i in range(normal_clips):
        jobs.append((mid, os.path.join(d_test, f"normal_{i:04d}.wav"), seconds, 20_000_000 + base + i, None, 0))
    k = 0
    for kind in M.KINDS:
        for sev in (1, 2, 3):
            for i in range(anomaly_clips):
                jobs.append((mid, os.path.join(d_test, f"anomaly_{kind}_s{sev}_{i:04d}.wav"), seconds,
                             30_000_000 + base + k, kind, sev))
                k += 1
    return jobs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="firmware_tools/work/machines")
    ap.add_argument("--train-minutes", type=float, default=10)
    ap.add_argument("--normal-clips", type=int, default=40)
    ap.add_argument("--anomaly-clips", type=int, default=4, help="clips per kind and severity")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--per-family", type=int, default=3)
    ap.add_argument("--ids", help="comma-separated subset of machine IDs")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    if not os.path.isdir(M.SAMPLES_DIR):
        print(f"error: {M.SAMPLES_DIR} not found: apt-get install sonic-pi-samples", file=sys.stderr)
        return 2
    ids = M.machine_ids(a.per_family)
    if a.ids:
        want = set(a.ids.split(","))
        ids = [m for m in ids if m.name in want]
    jobs = [j for mid in ids for j in jobs_for(mid, a.out, a.train_minutes, a.normal_clips, a.anomaly_clips, a.seconds)]
    with ProcessPoolExecutor(a.jobs) as ex:
        for n, _ in enumerate(ex.map(_job, jobs, chunksize=8), 1):
            if n % 200 == 0 or n == len(jobs):
                print(f"{n}/{len(jobs)} files", flush=True)
    print(f"{len(ids)} machine IDs -> {a.out}: {', '.join(m.name for m in ids)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

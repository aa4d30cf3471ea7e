"""Build a machine-sound anomaly set as WAV files: the design set (machines.py) or the field set
(machines_field.py: machine types never used while designing, real recorded machinery).

    python firmware_tools/data/build_machines.py --out firmware_tools/work/machines \
        --train-minutes 10 --normal-clips 40 --anomaly-clips 4 --seconds 5 --jobs 2
    python firmware_tools/data/build_machines.py --set field --out firmware_tools/work/machines_field \
        --train-minutes 10 --normal-clips 40 --anomaly-clips 4 --seconds 10 --streams 8 --jobs 2

Layout (DCASE-like, so real recordings in the same layout evaluate the same way)::

    <out>/<machine id>/train/normal_0000.wav ...       one-minute files of normal operation
    <out>/<machine id>/test/normal_0000.wav ...        normal clips
    <out>/<machine id>/test/anomaly_<kind>_s<1-3>_0000.wav ...
    <out>/<machine id>/stream/normal_0000.wav ...      5-minute normal recordings, each another day,
                                                       for false alarms per hour (--streams)

Seeds: train, test-normal and test-anomaly clips draw from disjoint seed ranges per ID.
Needs scipy, soundfile, soxr and the Debian package sonic-pi-samples (design set) or
lincity-ng-data, ktuberling-data and colobot-common-sounds (field set). In the field set the
training files of an ID are one day (one operating point); every test clip and stream is
another.
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
import machines_field as F  # noqa: E402

SETS = {"design": M, "field": F}


def _job(args):
    mod, mid, path, seconds, seed, kind, sev, kw = args
    if not os.path.exists(path):
        x = SETS[mod].render(mid, seconds, seed, kind, sev, **kw)
        tmp = path + ".tmp.wav"
        sf.write(tmp, x, M.SR, subtype="PCM_16")
        atomic.commit(tmp, path)
    return path


def jobs_for(mid, out, train_minutes, normal_clips, anomaly_clips, seconds, mod="design", streams=0):
    G = SETS[mod]
    base = G.hash_name(mid.name) % 100_000 * 100
    field = mod == "field"
    train_kw = {"day": 0, "train": True} if field else {}
    d_train = os.path.join(out, mid.name, "train")
    d_test = os.path.join(out, mid.name, "test")
    os.makedirs(d_train, exist_ok=True)
    os.makedirs(d_test, exist_ok=True)
    jobs = []
    for i in range(int(round(train_minutes))):
        jobs.append((mod, mid, os.path.join(d_train, f"normal_{i:04d}.wav"), 60.0, 10_000_000 + base + i, None, 0,
                     train_kw))
    for i in range(normal_clips):
        jobs.append((mod, mid, os.path.join(d_test, f"normal_{i:04d}.wav"), seconds, 20_000_000 + base + i, None, 0,
                     {}))
    k = 0
    for kind in G.KINDS:
        for sev in (1, 2, 3):
            for i in range(anomaly_clips):
                jobs.append((mod, mid, os.path.join(d_test, f"anomaly_{kind}_s{sev}_{i:04d}.wav"), seconds,
                             30_000_000 + base + k, kind, sev, {}))
                k += 1
    if streams:
        d_stream = os.path.join(out, mid.name, "stream")
        os.makedirs(d_stream, exist_ok=True)
        for i in range(streams):
            jobs.append((mod, mid, os.path.join(d_stream, f"normal_{i:04d}.wav"), 300.0, 40_000_000 + base + i,
                         None, 0, {"bursts_per_s": 1 / 40} if field else {}))
    return jobs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", choices=tuple(SETS), default="design",
                    help="design: the set features and settings were tuned on; field: machine types never used")
    ap.add_argument("--out", help="default firmware_tools/work/machines (design) or machines_field (field)")
    ap.add_argument("--streams", type=int, help="5-minute normal streams per ID (default 8 for the field set, 0 for "
                    "the design set)")
    ap.add_argument("--train-minutes", type=float, default=10)
    ap.add_argument("--normal-clips", type=int, default=40)
    ap.add_argument("--anomaly-clips", type=int, default=4, help="clips per kind and severity")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--per-family", type=int, default=3, help="design set: IDs per family")
    ap.add_argument("--per-family-field", type=int, default=2, help="field set: IDs per family (index 00 and 01; "
                    "the recorded families have two recordings each)")
    ap.add_argument("--ids", help="comma-separated subset of machine IDs")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    G = SETS[a.set]
    out = a.out or ("firmware_tools/work/machines" if a.set == "design" else "firmware_tools/work/machines_field")
    streams = (8 if a.set == "field" else 0) if a.streams is None else a.streams
    need = [M.SAMPLES_DIR] if a.set == "design" else [F.LINCITY, F.KTUBERLING, F.COLOBOT]
    missing = [d for d in need if not os.path.isdir(d)]
    if missing:
        pkgs = "sonic-pi-samples" if a.set == "design" else F.PACKAGES
        print(f"error: {', '.join(missing)} not found: apt-get install {pkgs}", file=sys.stderr)
        return 2
    ids = G.machine_ids(a.per_family if a.set == "design" else a.per_family_field)
    if a.ids:
        want = set(a.ids.split(","))
        ids = [m for m in ids if m.name in want]
    jobs = [j for mid in ids for j in jobs_for(mid, out, a.train_minutes, a.normal_clips, a.anomaly_clips, a.seconds,
                                               a.set, streams)]
    with ProcessPoolExecutor(a.jobs) as ex:
        for n, _ in enumerate(ex.map(_job, jobs, chunksize=8), 1):
            if n % 200 == 0 or n == len(jobs):
                print(f"{n}/{len(jobs)} files", flush=True)
    print(f"{len(ids)} machine IDs -> {out}: {', '.join(m.name for m in ids)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

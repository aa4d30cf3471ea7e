"""Learning from one, two or three days: false episodes per hour and detection on the field set.

    python firmware_tools/eval/eval_anomaly_days.py factory-01,mine-01,powerplant-01,gearbox-01,transformer-01,blower-01,compressor-01,conveyor-01 \
        > firmware_tools/eval/results/anomaly_days.txt

Per machine ID (a folder of ``build_machines.py --set field``; ``MACHINES_FIELD`` names the set,
default firmware_tools/work/machines_field): one day = the 10 train files; two days = 5 train
files + 5 minutes rendered on another day (day seed 5000, never a test or stream day); three
days = 4 train files + 3 minutes each of two other days. The recordings go to
``AnomalyModel.fit(recordings=)`` as ``edge-runtime anomaly learn -i day1.wav day2.wav`` passes
them; false episodes per hour on the ID's 5-minute streams and the share of anomalous clips
with an episode, both at the model's own threshold (budget 1/h), GMM.
"""
from __future__ import annotations

import glob
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "data"))
import machines_field as F  # noqa: E402
from eval_anomaly import episodes, read  # noqa: E402

from edge_runtime.anomaly import AnomalyModel, Hysteresis  # noqa: E402
from edge_runtime.features import LogMelStats, extract, make_extractor  # noqa: E402

#: learning audio per setting: (train files of the ID's own day, minutes of each other day)
SETTINGS = {"one day": (10, ()), "two days": (5, (5,)), "three days": (4, (3, 3))}


def evaluate(folder: str, name: str) -> list[str]:
    cfg = LogMelStats().config()   # the product's default features

    def ex(x):
        return extract(make_extractor(cfg), x, 16000)

    fam, idx = name.rsplit("-", 1)
    mid = F.MachineID(fam, int(idx))
    train = [ex(read(f)) for f in sorted(glob.glob(os.path.join(folder, "train", "*.wav")))]
    S = [ex(read(f)) for f in sorted(glob.glob(os.path.join(folder, "stream", "*.wav")))]
    T = [ex(read(f)) for f in sorted(glob.glob(os.path.join(folder, "test", "anomaly*.wav")))]
    minutes = {}   # (other day k, minute i) -> frames, rendered once

    def other_day(k, i):
        if (k, i) not in minutes:
            minutes[k, i] = ex(F.render(mid, 60, 990_000 + 100 * k + i, day=5000 + k))
        return minutes[k, i]

    out = []
    for mode, (own, others) in SETTINGS.items():
        parts = [np.concatenate(train[:own])]
        parts += [np.concatenate([other_day(k, i) for i in range(n)]) for k, n in enumerate(others)]
        m = AnomalyModel.fit(np.concatenate(parts), "gmm", features=cfg, sample_rate=16000,
                             recordings=[len(p) for p in parts] if len(parts) > 1 else None)
        h = Hysteresis.for_model(m)

        def n_episodes(frames):
            return len(episodes(m.score_batch(frames), m.threshold_on, m.threshold_off, h.on_frames,
                                h.off_frames, h.on_window))

        fa = sum(n_episodes(s) for s in S) / (sum(len(s) for s in S) * 0.032 / 3600)
        det = np.mean([n_episodes(t) > 0 for t in T])
        out.append(f"{mode}: FA/h {fa:.1f} det {det:.2f}")
    return out


def main(argv=None) -> int:
    from threadpoolctl import threadpool_limits

    ids = (argv if argv is not None else sys.argv[1:])[0].split(",")
    data = os.environ.get("MACHINES_FIELD", "firmware_tools/work/machines_field")
    with threadpool_limits(limits=1):
        for name in ids:
            print(" | ".join([name] + evaluate(os.path.join(data, name), name)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

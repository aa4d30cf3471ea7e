#!/usr/bin/env python3
"""Compare denoiser checkpoints on validation mixtures drawn from the TRAINING pool.

    python firmware_tools/train/validate_denoise.py --pool firmware_tools/work/pool16k \\
        firmware_tools/work/denoise_run2/checkpoint.npz firmware_tools/work/denoise_run3/checkpoint.npz

The mixtures are made by the training mixer with a seed training never uses (--seed, default
20261201), so checkpoints and loss settings can be compared without touching the test split
(which only ``firmware_tools/eval/eval_denoise.py`` reads, for the reported numbers). Prints,
per checkpoint, mean SI-SDR improvement, mean SI-SDR of the output on speech-only inputs
(how much clean speech is damaged), and mean PESQ-WB gain, over SNR bands.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from denoise_model import SAMPLE_RATE  # noqa: E402
from export_denoise import load_checkpoint  # noqa: E402
from pool import load_pool  # noqa: E402
from train_denoise import Mixer  # noqa: E402


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    ref = ref.astype(np.float64) - ref.mean()
    est = est.astype(np.float64) - est.mean()
    a = np.dot(est, ref) / (np.dot(ref, ref) + 1e-12)
    t = a * ref
    return float(10 * np.log10(np.sum(t ** 2) / (np.sum((est - t) ** 2) + 1e-12) + 1e-12))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", required=True)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--n", type=int, default=120, help="mixtures")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--pesq", action="store_true", help="also PESQ-WB (slower)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    pool = load_pool(args.pool)
    mixer = Mixer(pool, args.seconds, args.seed)
    items = []
    while len(items) < args.n:
        mix, clean = mixer.draw()
        if np.sqrt(np.mean(clean ** 2)) < 1e-4:
            continue  # noise-only segments have no SI-SDR
        items.append((mix, clean))
    models = [(p, load_checkpoint(p)) for p in args.checkpoints]
    if args.pesq:
        from pesq import pesq
    for path, model in models:
        rows = []
        with torch.no_grad():
            for mix, clean in items:
                noisy_in = si_sdr(clean, mix)
                est = model(torch.from_numpy(mix)[None])[0].numpy()
                ref = model(torch.from_numpy(clean)[None])[0].numpy()  # clean speech through the model
                r = {"snr": noisy_in, "sisdri": si_sdr(clean, est) - noisy_in, "clean": si_sdr(clean, ref)}
                if args.pesq:
                    r["pesq_gain"] = (pesq(SAMPLE_RATE, clean, est, "wb", on_error=1)
                                      - pesq(SAMPLE_RATE, clean, mix, "wb", on_error=1))
                rows.append(r)
        snr = np.array([r["snr"] for r in rows])
        line = [f"{path}:"]
        for lo, hi in ((-99, 2), (2, 10), (10, 99)):
            m = (snr >= lo) & (snr < hi)
            if m.any():
                line.append(f"SI-SDRi[{lo},{hi}) {np.mean([r['sisdri'] for r, k in zip(rows, m) if k]):+.2f}")
        line.append(f"SI-SDRi all {np.mean([r['sisdri'] for r in rows]):+.2f} dB")
        line.append(f"clean-through {np.median([r['clean'] for r in rows]):.1f} dB (median)")
        if args.pesq:
            line.append(f"PESQ gain {np.mean([r['pesq_gain'] for r in rows]):+.3f}")
        print("  ".join(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

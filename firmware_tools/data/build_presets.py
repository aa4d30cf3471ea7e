"""Renders of random synth presets with their parameters: the preset regressor's data.

    python firmware_tools/data/build_presets.py --out firmware_tools/work/presets --n-train 10000 --n-test 500

Each example is one random preset (``edge_runtime.optimize.regressor.sample_presets``: uniform in the
unit cube of the synth's 15 parameters, noise level squared) rendered for ``CLIP_SECONDS`` at 16 kHz,
its feature vector (``preset_features``) and its unit-cube parameters. Train and test presets come
from different seeds (``--seed`` and ``--seed + 1``), so no test preset was seen in training
(continuous draws: no two coincide). Output: ``<out>/train.npz``, ``<out>/test.npz`` with
``features`` (n, N_FEATURES) float32, ``unit`` (n, 15) float64, ``audio`` (test only, int16).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from edge_runtime.optimize import make_chain  # noqa: E402
from edge_runtime.optimize.features import preset_features  # noqa: E402
from edge_runtime.optimize.regressor import CLIP_SECONDS, sample_presets  # noqa: E402


def build(n: int, seed: int, keep_audio: bool, sample_rate: int = 16000) -> dict:
    chain = make_chain("synth", sample_rate=sample_rate)
    U = sample_presets(chain.space, np.random.default_rng(seed), n)
    frames = int(round(CLIP_SECONDS * sample_rate))
    X = np.zeros((n, len(preset_features(np.ones(frames, np.float32) * 0.1, sample_rate))), np.float32)
    audio = np.zeros((n, frames), np.int16) if keep_audio else None
    t0 = time.time()
    for i, u in enumerate(U):
        y = chain.render(chain.space.decode(u), frames)
        X[i] = preset_features(y, sample_rate)
        if keep_audio:
            audio[i] = np.clip(np.round(y * 32767), -32768, 32767)
        if i and i % 1000 == 0:
            print(f"  {i}/{n}  {time.time() - t0:.0f} s", flush=True)
    out = {"features": X, "unit": U, "sample_rate": sample_rate, "seed": seed}
    if keep_audio:
        out["audio"] = audio
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="firmware_tools/work/presets")
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    os.makedirs(a.out, exist_ok=True)
    for split, n, seed in (("test", a.n_test, a.seed + 1), ("train", a.n_train, a.seed)):
        d = build(n, seed, keep_audio=split == "test")
        tmp = os.path.join(a.out, f".{split}.tmp.npz")
        np.savez_compressed(tmp, **d)
        os.replace(tmp, os.path.join(a.out, f"{split}.npz"))
        print(f"{split}: {n} presets (seed {seed}) -> {a.out}/{split}.npz", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

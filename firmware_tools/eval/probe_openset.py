"""Probe for issue 21's open set: how well the shipped classifier's own outputs reject sounds of
no class, before any open-set training.

    python firmware_tools/eval/probe_openset.py      # needs build_classify.py's output in firmware_tools/work/classify16k

Out-of-set sounds: the OpenTTD OpenSFX recordings that build_classify.py gives no class (animals,
crashes, explosions, a crowd, wind, a smithy, trees, a till, ...), 1 s windows every 0.5 s (at most 20
per sound) at -25 dBFS. Known: TRAIN windows (7,000) for the class statistics, VAL windows (3,000) for
the threshold at 3 / 5 / 10 % rejected, TEST windows (3,500) for the known-clip rejection reported.
Scores: maximum softmax probability (MSP) and the Mahalanobis distance of the embedding to the
nearest class mean (shared covariance, 0.1 % shrinkage). A probe, not an evaluation: the shipped
model was fitted on TRAIN + VAL, so VAL thresholds are optimistic.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "firmware_tools", "data"))
sys.path.insert(0, ROOT)

# OpenSFX indices of sounds no class covers (build_classify.OPENSFX_CLASS leaves them out)
OUT_OF_SET = (0, 1, 4, 10, 15, 16, 17, 18, 19, 20, 23, 29, 30, 31, 36, 37, 38, 39, 41, 48, 52, 53, 54, 55, 58,
              66, 67, 68, 72)


def out_of_set_windows() -> np.ndarray:
    """Log-mel windows of the out-of-set sounds (at most 20 per sound, 50 % overlap, -25 dBFS RMS)."""
    import soxr

    from build_classify import opensfx_sounds
    from edge_runtime.classify.features import CLIP_SAMPLES, logmel_windows

    clips = []
    for _, _, read in opensfx_sounds(set(OUT_OF_SET)):
        x, rate = read()
        x = soxr.resample(x / 32768.0, rate, 16000).astype(np.float32)
        x = np.pad(x, (0, max(0, CLIP_SAMPLES - len(x))))
        for s in range(0, len(x) - CLIP_SAMPLES + 1, CLIP_SAMPLES // 2)[:20]:
            c = x[s:s + CLIP_SAMPLES]
            r = np.sqrt(np.mean(c ** 2))
            if r >= 1e-4:
                clips.append(c * (10 ** (-25 / 20) / r))
    return logmel_windows(np.stack(clips))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "firmware_tools", "work", "classify16k"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models_int8", "classify", "classify_fp32.onnx"))
    args = ap.parse_args(argv)
    from edge_runtime.backends import load_session

    sess = load_session(args.model, backend="onnxruntime", threads=1)

    def run(windows):
        probs, emb = [], []
        for x in windows:
            o = sess.run({"logmel": x[None].astype(np.float32)})
            probs.append(np.array(o["probs"][0]))
            emb.append(np.array(o["embedding"][0]))
        return np.array(probs), np.array(emb)

    x_oos = out_of_set_windows()
    print(f"out-of-set windows {len(x_oos)} from {len(OUT_OF_SET)} sounds")
    data = {k: np.load(os.path.join(args.data, f"{k}.npz")) for k in ("train", "val", "test")}
    rng = np.random.default_rng(0)
    rows = {k: np.sort(rng.choice(len(data[k]["y"]), min(n, len(data[k]["y"])), replace=False))
            for k, n in (("train", 7000), ("val", 3000), ("test", 3500))}
    out = {k: run(data[k]["x"][rows[k]]) for k in rows}
    out["oos"] = run(x_oos)
    y_train = data["train"]["y"][rows["train"]]
    e_train = out["train"][1]
    n_classes = out["train"][0].shape[1]
    means = np.stack([e_train[y_train == c].mean(0) for c in range(n_classes)])
    resid = e_train - means[y_train]
    cov = resid.T @ resid / len(resid)
    cov += 1e-3 * np.trace(cov) / len(cov) * np.eye(len(cov))
    prec = np.linalg.inv(cov)

    def mahalanobis(emb):
        return np.min([np.einsum("ij,jk,ik->i", emb - m, prec, emb - m) for m in means], axis=0)

    for name, score in (("MSP", lambda p, e: -p.max(1)), ("Mahalanobis", lambda p, e: mahalanobis(e))):
        s_val, s_test, s_oos = (score(*out[k]) for k in ("val", "test", "oos"))
        for rej in (0.03, 0.05, 0.10):
            t = np.quantile(s_val, 1 - rej)
            print(f"{name:12s} VAL rej {rej:.0%}: TEST known rejected {np.mean(s_test > t):.1%}, "
                  f"OOS rejected {np.mean(s_oos > t):.1%}")
    print("OOS taken for:", np.bincount(out["oos"][0].argmax(1), minlength=n_classes))
    return 0


if __name__ == "__main__":
    sys.exit(main())

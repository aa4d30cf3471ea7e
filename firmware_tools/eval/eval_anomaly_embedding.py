"""Measure the sound classifier's embedding as anomaly features (the issue's candidate).

    python firmware_tools/eval/eval_anomaly_embedding.py --data firmware_tools/work/machines_field \
        --ids blower-01,compressor-01 --out firmware_tools/eval/results/anomaly_embedding.md

For each machine ID: the shipped ``classify`` model's 224-d embedding (the layer before its
classes) of the 1 s log-mel window ending every 30 ms (3 of its 10 ms frames), computed in
batches by ONNX Runtime from :func:`edge_runtime.classify.features.logmel_frames` exactly as the
node computes the frames; a GMM (the product's default detector, no augmentation: the
embedding's layout has no known speed or gain axis) with its false-alarm-budget threshold; the
same AUC / false episodes per hour on the streams / detection at 1/h as ``eval_anomaly.py``, set
beside the log-mel statistics' numbers from that script's JSON when ``--compare`` names it.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_anomaly import episodes, read, roc_auc, threshold_for_budget  # noqa: E402

STRIDE = 3   # classifier frames (10 ms) between embeddings: 30 ms, about the log-mel statistics' 32 ms hop


class Embedder:
    def __init__(self):
        import onnxruntime as ort

        from edge_runtime.models.manifest import manifest_paths

        path = os.path.join(manifest_paths()[0].parent, "classify", "classify_fp32.onnx")
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.dim = next(int(o.shape[-1]) for o in self.sess.get_outputs() if o.name == "embedding")

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        from edge_runtime.classify.features import N_FRAMES, logmel_frames

        f = logmel_frames(audio[None, :])[0]
        starts = np.arange(0, len(f) - N_FRAMES + 1, STRIDE)
        out = np.empty((len(starts), self.dim), np.float32)
        for j, s in enumerate(starts):   # the shipped model takes one window at a time
            out[j] = self.sess.run(["embedding"], {"logmel": f[None, s:s + N_FRAMES]})[0][0]
        return out


def evaluate(folder: str, emb: Embedder) -> dict:
    from edge_runtime.anomaly import AnomalyModel, Hysteresis

    X = np.concatenate([emb(read(f)) for f in sorted(glob.glob(os.path.join(folder, "train", "*.wav")))])
    cfg = {"type": "embedding", "embedder": "classify"}
    m = AnomalyModel.fit(X, "gmm", features=cfg, sample_rate=16000)
    test = sorted(glob.glob(os.path.join(folder, "test", "*.wav")))
    labels = np.array([0 if os.path.basename(f).startswith("normal") else 1 for f in test])
    T = [m.score_batch(emb(read(f))) for f in test]
    S = [m.score_batch(emb(read(f))) for f in sorted(glob.glob(os.path.join(folder, "stream", "*.wav")))]
    clip = np.array([t.mean() for t in T])
    h = Hysteresis.for_model(m)
    on_f, on_w, off_f = h.on_frames, h.on_window, h.off_frames
    n_stream = sum(len(episodes(s, m.threshold_on, m.threshold_off, on_f, off_f, on_w)) for s in S)
    hours = sum(len(s) for s in S) * STRIDE * 0.01 / 3600
    t1 = threshold_for_budget(S, 1.0, 0.5, on_f, off_f, on_w, hop_s=STRIDE * 0.01)
    med = float(np.median(np.concatenate(S)))
    off1 = min(t1, med + 0.5 * (t1 - med))
    det1 = [len(episodes(T[i], t1, off1, on_f, off_f, on_w)) > 0 for i in np.where(labels == 1)[0]]
    det = [len(episodes(T[i], m.threshold_on, m.threshold_off, on_f, off_f, on_w)) > 0 for i in np.where(labels == 1)[0]]
    return {"auc": roc_auc(clip[labels == 0], clip[labels == 1]), "pauc": roc_auc(clip[labels == 0], clip[labels == 1], 0.1),
            "stream_false_episodes_per_h": n_stream / hours, "detected": float(np.mean(det)),
            "detected_at_1_per_h_oracle": float(np.mean(det1)), "fit_s": m.info["fit_s"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="firmware_tools/work/machines_field")
    ap.add_argument("--ids", required=True)
    ap.add_argument("--compare", help="eval_anomaly.py JSON with the log-mel statistics' results for these IDs")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    emb = Embedder()
    res = {}
    with threadpool_limits(limits=1):
        for i in a.ids.split(","):
            res[i] = evaluate(os.path.join(a.data, i), emb)
            print(i, {k: round(v, 3) for k, v in res[i].items()}, flush=True)
    ref = json.load(open(a.compare)) if a.compare else {}
    cmd = "python firmware_tools/eval/eval_anomaly_embedding.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["# The classifier's embedding as anomaly features", "", f"Command: `{cmd}`", "",
             "GMM, false-alarm budget 1/h, episodes 140 of 156 hops; log-mel statistics (with the speed/gain "
             "tolerance) from the `--compare` file.", "",
             "| machine ID | embedding AUC | log-mel AUC | embedding false ep./h | log-mel false ep./h "
             "| embedding detected at 1/h | log-mel detected at 1/h |", "|---|---|---|---|---|---|---|"]
    for i, r in res.items():
        q = ref.get(i, {}).get("detectors", {}).get("gmm", {})
        lines.append(f"| {i} | {r['auc']:.3f} | {q.get('auc', float('nan')):.3f} | {r['stream_false_episodes_per_h']:.1f} | "
                     f"{q.get('stream_false_episodes_per_h', float('nan')):.1f} | {100 * r['detected_at_1_per_h_oracle']:.0f}% | "
                     f"{100 * q.get('detected_at_1_per_h_oracle', float('nan')):.0f}% |")
    mean = lambda k: np.mean([r[k] for r in res.values()])  # noqa: E731
    qm = lambda k: np.mean([ref[i]["detectors"]["gmm"][k] for i in res if i in ref])  # noqa: E731
    if ref:
        lines.append(f"| **mean** | {mean('auc'):.3f} | {qm('auc'):.3f} | {mean('stream_false_episodes_per_h'):.1f} | "
                     f"{qm('stream_false_episodes_per_h'):.1f} | {100 * mean('detected_at_1_per_h_oracle'):.0f}% | "
                     f"{100 * qm('detected_at_1_per_h_oracle'):.0f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        from edge_runtime.atomic import write_bytes

        write_bytes(a.out, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

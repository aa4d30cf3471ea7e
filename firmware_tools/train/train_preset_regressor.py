"""Train, export and ship the preset regressor (audio features -> synth parameters).

    python firmware_tools/data/build_presets.py --out firmware_tools/work/presets --n-train 10000 --n-test 400
    python firmware_tools/train/train_preset_regressor.py --data firmware_tools/work/presets

StandardScaler -> MLPRegressor (256, 256; ReLU, Adam, early stopping on a 10 % validation share,
seed 0) on the unit-cube parameters (targets clipped to [0, 1] at run time); exported with skl2onnx
(no pickle), checked against scikit-learn in ONNX Runtime, written to
``models_int8/preset_synth/preset_synth_fp32.onnx`` with its manifest entry (provenance, metrics on
the TEST presets: mean absolute unit-cube error, per-parameter errors, the note error in semitones,
ms per clip for features + model on one thread). FP32 only: the model is ~0.2 MFLOP, INT8 would
save nothing measurable (DEPENDENCIES.md: tiny models gain nothing).
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)

from edge_runtime.optimize import make_chain  # noqa: E402
from edge_runtime.optimize.features import FEATURE_VERSION, N_FEATURES, preset_features  # noqa: E402
from edge_runtime.optimize.regressor import CLIP_SECONDS  # noqa: E402

MODEL_DIR = os.path.join(ROOT, "models_int8", "preset_synth")
ONNX_PATH = os.path.join(MODEL_DIR, "preset_synth_fp32.onnx")


def train(X, U, seed: int = 0, hidden=(256, 256), max_iter: int = 300):
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=hidden, alpha=1e-4, batch_size=256,
                                                         learning_rate_init=1e-3, max_iter=max_iter,
                                                         early_stopping=True, validation_fraction=0.1,
                                                         n_iter_no_change=15, random_state=seed))
    model.fit(X, U)
    return model


def export(model, path: str) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(model, initial_types=[("features", FloatTensorType([None, N_FEATURES]))],
                          target_opset={"": 17, "ai.onnx.ml": 3})
    onx.graph.output[0].name  # noqa: B018 - the single output ("variable")
    data = onx.SerializeToString()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    from edge_runtime.atomic import write_bytes

    write_bytes(path, data)
    return data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="firmware_tools/work/presets")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-ship", action="store_true", help="train and report only")
    a = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    tr, te = np.load(os.path.join(a.data, "train.npz")), np.load(os.path.join(a.data, "test.npz"))
    t0 = time.time()
    model = train(tr["features"], tr["unit"], a.seed)
    fit_s = time.time() - t0
    chain = make_chain("synth")
    names = [p.name for p in chain.space.free]
    pred = np.clip(model.predict(te["features"]), 0, 1)
    err = np.abs(pred - te["unit"])
    per = {n: float(e) for n, e in zip(names, err.mean(axis=0))}
    note_p = [chain.space.decode(u)["note"] for u in pred]
    note_t = [chain.space.decode(u)["note"] for u in te["unit"]]
    note_err = float(np.median(np.abs(np.array(note_p) - np.array(note_t))))
    print(f"fit {fit_s:.0f} s, {model[-1].n_iter_} epochs; test unit MAE {err.mean():.4f} "
          f"(chance, uniform guess ~0.33); median note error {note_err:.2f} semitones")
    for n, e in per.items():
        print(f"  {n:<14} {e:.4f}")
    if a.no_ship:
        return 0
    export(model, ONNX_PATH)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(ONNX_PATH, so, providers=["CPUExecutionProvider"])
    # skl2onnx writes a multi-output MLPRegressor's output as (n * outputs, 1): reshaped here and at run time
    onnx_pred = sess.run(None, {"features": te["features"]})[0].reshape(len(te["unit"]), -1)
    parity = float(np.max(np.abs(onnx_pred - model.predict(te["features"]))))
    # ms per clip: features + model, one thread, over the first 100 test clips
    audio = te["audio"][:100].astype(np.float32) / 32767.0
    t0 = time.perf_counter()
    for y in audio:
        sess.run(None, {"features": preset_features(y, 16000)[None, :]})
    ms = (time.perf_counter() - t0) / len(audio) * 1e3
    print(f"onnx vs sklearn max abs {parity:.2e}; {ms:.1f} ms per clip (features + model)")
    from edge_runtime.models.writer import manifest_entry, upsert_model

    frames = int(round(CLIP_SECONDS * 16000))
    metrics = {"unit_mae": round(float(err.mean()), 4), "note_median_err_semitones": round(note_err, 3),
               "ms_per_clip": round(ms, 2)}
    entry = manifest_entry(ONNX_PATH, os.path.join(ROOT, "models_int8"), precision="fp32",
                           metrics={**metrics, "onnx_vs_sklearn_max_abs": parity})
    upsert_model(os.path.join(ROOT, "models_int8", "manifest.toml"), {
        "name": "preset_synth", "task": "preset",
        "description": (f"preset regressor for the synth chain: {N_FEATURES} audio features (feature version "
                        f"{FEATURE_VERSION}: log-mel mean/std, loudness and centroid envelopes, flatness, YIN "
                        "pitch, attack) -> the 15 unit-cube parameters; StandardScaler + MLP 256x256 (scikit-learn, "
                        "skl2onnx)"),
        "sample_rate": 16000, "frame": frames, "hop": frames,
        "inputs": [{"name": "features", "shape": [-1, N_FEATURES], "dtype": "float32"}],
        "outputs": [{"name": sess.get_outputs()[0].name,
                     "shape": [-1 if not isinstance(d, int) else d for d in sess.get_outputs()[0].shape],
                     "dtype": "float32"}],
        "metrics": metrics, "primary_metric": "unit_mae", "lower_is_better": ["unit_mae", "note_median_err_semitones", "ms_per_clip"],
        "provenance": {
            "recipe": "firmware_tools/train/train_preset_regressor.py (data: firmware_tools/data/build_presets.py)",
            "data": (f"{len(tr['unit'])} random synth presets (seed {int(tr['seed'])}; sample_presets: uniform unit "
                     f"cube, noise level squared) rendered {CLIP_SECONDS} s at 16 kHz; synthetic by construction "
                     "(the chain is the data's only source)"),
            "trained_on": datetime.date.today().isoformat(),
            "evaluated_on": (f"{datetime.date.today().isoformat()}: {len(te['unit'])} TEST presets from another seed "
                             f"({int(te['seed'])}), never seen in training; recorded sounds in "
                             "firmware_tools/eval/eval_optimize.py"),
        },
        "variants": [entry],
    })
    print(f"shipped {ONNX_PATH} and its manifest entry")
    return 0


if __name__ == "__main__":
    sys.exit(main())

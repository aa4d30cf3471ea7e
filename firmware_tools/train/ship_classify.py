"""From a trained classifier checkpoint to shipped, verified variants and their manifest entry.

    python firmware_tools/train/ship_classify.py --checkpoint firmware_tools/work/classify_run/checkpoint.npz \
        --data firmware_tools/work/classify16k [--eval firmware_tools/eval/results/classify.json] [--skip-export]

1. exports the FP32 ONNX model (logmel (1, 96, 40) -> probs (1, 7), embedding (1, 4 or 8 x width, by pooling));
2. calibration rows: 1,000 TRAIN windows; held-out rows: 500 VAL windows (never TEST);
3. runs firmware_tools/quantize/quantize.py (FP16, INT8 dynamic, INT8 static QDQ, OpenVINO IR);
4. makes TFLite FP32, INT8 dynamic and INT8 static (firmware_tools/export/tflite.py) and checks
   every variant against the FP32 ONNX on the held-out rows (probability SNR, arg-max agreement;
   firmware_tools/eval/results/classify_variants.json); TFLite static INT8 is measured, not shipped;
5. copies the variants into models_int8/classify/ and writes the manifest entry (sha256, size,
   provenance, and the accuracy / macro-F1 of --eval when given).

``--skip-export`` keeps the files already in models_int8/classify/ and only rewrites the
manifest entry (to add the metrics of an evaluation run on exactly those files).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile

import numpy as np

from edge_runtime import atomic

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "firmware_tools"))

SHIP = [("onnx", "fp32", "classify_fp32.onnx"), ("onnx", "fp16", "classify_fp16.onnx"),
        ("onnx", "int8-static", "classify_int8.onnx"),
        ("openvino-ir", "fp16", "classify_fp16.xml"),
        ("tflite", "fp32", "classify_fp32.tflite"), ("tflite", "int8-dynamic", "classify_int8-dynamic.tflite")]
# made and measured, not shipped: ai-edge-quantizer's static INT8 of this CNN keeps only ~16 dB
# probability SNR vs FP32 (all ops, or only CONV_2D/DEPTHWISE_CONV_2D/FULLY_CONNECTED), while
# ONNX Runtime's static QDQ keeps 30-37 dB; ONNX Runtime's dynamic INT8 runs ~16x slower than
# FP32 (3.0 vs 0.19 ms per call: it re-quantizes every activation) and kept 13-34 dB in two
# trainings; see classify_variants.json
MEASURED_ONLY = [("tflite", "int8-static", "classify_int8.tflite"), ("onnx", "int8-dynamic", "classify_int8-dynamic.onnx")]


def compare(ref_path: str, path: str, backend: str, rows: np.ndarray) -> dict:
    """Probability SNR (dB) and arg-max agreement of ``path`` vs the FP32 ONNX on ``rows``."""
    from edge_runtime.backends import load_session

    ref = load_session(ref_path, backend="onnxruntime", threads=1)
    s = load_session(path, backend=backend, threads=1)
    sig = err = 0.0
    agree = 0
    for x in rows:
        feed = {"logmel": x[None]}
        want = np.array(ref.run(feed)["probs"], copy=True)
        got = np.array(s.run(feed)["probs"], copy=True)
        sig += float(np.sum(want.astype(np.float64) ** 2))
        err += float(np.sum((got.astype(np.float64) - want) ** 2))
        agree += int(np.argmax(got) == np.argmax(want))
    return {"probs_snr_vs_fp32_db": round(float(10 * np.log10(sig / max(err, 1e-30))), 2),
            "argmax_agreement_vs_fp32": round(agree / len(rows), 4)}


def make_tflite(model, tmp: str, calib: np.ndarray) -> dict[str, str]:
    from classify_model import N_FRAMES, N_MELS, ClassifierExport
    from export.tflite import export_tflite, quantize_tflite_dynamic, quantize_tflite_int8

    net = ClassifierExport(model.cpu().eval()).eval()
    q = os.path.join(tmp, "q")
    fp32 = export_tflite(net, {"logmel": np.zeros((1, N_FRAMES, N_MELS))}, ["probs", "embedding"],
                         os.path.join(q, "classify_fp32.tflite"))
    dyn = quantize_tflite_dynamic(fp32, os.path.join(q, "classify_int8-dynamic.tflite"))
    st = quantize_tflite_int8(fp32, [{"logmel": r[None]} for r in calib[:300]],
                              os.path.join(q, "classify_int8.tflite"))
    return {"classify_fp32.tflite": fp32, "classify_int8-dynamic.tflite": dyn, "classify_int8.tflite": st}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True, help="output folder of build_classify.py")
    ap.add_argument("--eval", help="results JSON of firmware_tools/eval/eval_classify.py")
    ap.add_argument("--manifest", default=os.path.join(ROOT, "models_int8", "manifest.toml"))
    ap.add_argument("--checks", default=os.path.join(ROOT, "firmware_tools", "eval", "results", "classify_variants.json"),
                    help="where the variant-vs-FP32 checks are written (read back with --skip-export)")
    ap.add_argument("--skip-export", action="store_true")
    ap.add_argument("--note", default="", help="appended to the provenance notes (e.g. the builder's commit)")
    args = ap.parse_args(argv)

    from classify_model import load_checkpoint, export_onnx
    from shipping import copy_variants, run_quantize, write_entry

    from edge_runtime.models.manifest import manifest_entry
    from edge_runtime.nodes.classify import LABELS

    model, classes, meta = load_checkpoint(args.checkpoint)
    if tuple(classes) != LABELS:
        raise SystemExit(f"{args.checkpoint}: classes {classes} differ from the node's LABELS {LABELS}")
    out_dir = os.path.join(os.path.dirname(args.manifest), "classify")
    os.makedirs(out_dir, exist_ok=True)
    checks_path = os.path.abspath(args.checks)
    if not args.skip_export:
        tr = np.load(os.path.join(args.data, "train.npz"))
        # agreement with FP32 is a check of the conversion, not a score: VAL rows even after a
        # final fit that trained on them (this tool never reads TEST)
        va = np.load(os.path.join(args.data, "val.npz"))
        rng = np.random.default_rng(7)
        calib = tr["x"][np.sort(rng.choice(len(tr["y"]), 1000, replace=False))].astype(np.float32)
        held = va["x"][np.sort(rng.choice(len(va["y"]), min(500, len(va["y"])), replace=False))].astype(np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = os.path.join(tmp, "classify_fp32.onnx")
            export_onnx(model, fp32)
            qdir, _ = run_quantize(fp32, {"logmel": calib[:, None]}, {"logmel": held[:, None]}, tmp, "classify",
                                   ("--calib-rows", "1000"))
            make_tflite(model, tmp, calib)
            checks = {}
            for fmt, prec, name in SHIP + MEASURED_ONLY:
                path = os.path.join(qdir, name)
                backend = {"onnx": "onnxruntime", "tflite": "litert", "openvino-ir": "openvino"}[fmt]
                try:
                    checks[name] = compare(os.path.join(qdir, "classify_fp32.onnx"), path, backend, held)
                except ImportError as e:
                    checks[name] = {"error": str(e)}
                print(f"{name:32} {checks[name]}")
            copy_variants(qdir, out_dir, [name for _, _, name in SHIP])
        os.makedirs(os.path.dirname(checks_path), exist_ok=True)
        with atomic.AtomicFile(checks_path) as f:
            json.dump({"held_out": f"{len(held)} VAL windows", "variants": checks}, f, indent=1)
    checks = json.load(open(checks_path))["variants"] if os.path.exists(checks_path) else {}
    results = json.load(open(args.eval)) if args.eval else None

    def metrics_for(name):
        m = {}
        r = ((results or {}).get("variants") or {}).get(name)
        if r:
            m["accuracy"] = round(float(r["accuracy"]), 4)
            m["macro_f1"] = round(float(r["macro_f1"]), 4)
            m["ms_per_window"] = round(float(r["ms_per_window_median"]), 3)
        for k, v in (checks.get(name) or {}).items():
            if k != "error":
                m[k] = v
        return m

    variants = [manifest_entry(os.path.join(out_dir, name), os.path.dirname(args.manifest), precision=prec,
                               format=fmt, metrics=metrics_for(name) or None) for fmt, prec, name in SHIP]
    today = datetime.date.today().isoformat()
    trained = datetime.date.fromtimestamp(os.path.getmtime(args.checkpoint)).isoformat()
    dim = model.embed_dim
    pooling = "; mean and max over time" if model.pool == "meanmax" else ""
    entry = {
        "name": "classify",
        "task": "sound-classification",
        "description": (f"DS-CNN ({sum(p.numel() for p in model.parameters())} parameters) over a 96 x 40 "
                        "log-mel window (32 ms Hann frames every 10 ms, 40 mel bands 50-8000 Hz, ln power)"
                        f"{pooling}; classes {', '.join(LABELS)}; outputs probs and the {dim}-d embedding "
                        "(the layer before the classifier)"),
        "sample_rate": 16000, "frame": 512, "hop": 160,
        "inputs": [{"name": "logmel", "shape": [1, 96, 40], "dtype": "float32"}],
        "outputs": [{"name": "probs", "shape": [1, len(LABELS)], "dtype": "float32"},
                    {"name": "embedding", "shape": [1, dim], "dtype": "float32"}],
        "metrics": {k: v for k, v in metrics_for("classify_fp32.onnx").items()
                    if k in ("accuracy", "macro_f1")},
        "primary_metric": "accuracy",
        "labels": list(LABELS),
        "provenance": {
            "recipe": "firmware_tools/train/train_classify.py (data: firmware_tools/data/build_classify.py, "
                      "ship: firmware_tools/train/ship_classify.py, eval: firmware_tools/eval/eval_classify.py)",
            "data": (("TRAIN and VAL splits" if bool(meta.get("train_on_val", False)) else "TRAIN split")
                     + " of firmware_tools/data/build_classify.py (split units - speakers, voices, "
                     "original recordings, GM programs, rendered scores, synthetic seeds - disjoint from "
                     + ("TEST" if bool(meta.get("train_on_val", False)) else "VAL and TEST") + "; "
                     "split.json); sources by class: " + used_sources(args.data, bool(meta.get("train_on_val", False)))
                     + ". Augmented: synthetic rooms, EQ, band limits, level -45..-4 dBFS, room-tone floor (or "
                     "digital silence), partial windows, speech over music/machines"),
            "trained_on": trained,
            "training": training_recipe(args.checkpoint),
            "evaluated_on": (f"{today}: TEST split of build_classify.py ({results.get('windows')} windows, "
                             "units never in TRAIN/VAL) by firmware_tools/eval/eval_classify.py")
                            if results else "not yet evaluated",
            "notes": args.note,
        },
    }
    write_entry(args.manifest, entry, variants, out_dir)
    return 0


def used_sources(data: str, with_val: bool) -> str:
    """The origins (Debian or PyPI package, rendering, synthesis) of each class in the splits the
    model trained on, read from the builder's split.json, so the manifest says what was used."""
    try:
        with open(os.path.join(data, "split.json")) as f:
            origins = json.load(f)["origins"]
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"{data}/split.json: cannot read the split's origins ({e}); expected the output "
                         "folder of firmware_tools/data/build_classify.py")
    splits = ["train", "val"] if with_val else ["train"]
    parts = []
    for cls in origins["train"]:
        names = sorted({o for sp in splits for o in origins[sp].get(cls, [])})
        parts.append(f"{cls}: " + ", ".join(names))
    return "; ".join(parts)


def training_recipe(checkpoint: str) -> str:
    """The run's settings, from the train_log.json train_classify.py wrote beside the checkpoint."""
    path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "train_log.json")
    if not os.path.exists(path):
        return "unknown (no train_log.json beside the checkpoint)"
    log = json.load(open(path))
    a = log["args"]
    return (f"train_classify.py: width {a.get('width')}, pooling {a.get('pool', 'mean')}, mixup on "
            f"{a.get('mixup', 0.0):.0%} of batches, batch {a.get('batch')}, lr {a.get('lr')}, "
            f"{len(log['epochs'])} epochs" + (", TRAIN+VAL, last epoch kept" if a.get("train_on_val")
                                              else f", best VAL epoch {log.get('best_epoch')}"))


if __name__ == "__main__":
    sys.exit(main())

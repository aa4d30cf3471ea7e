"""Re-make a shipped model's INT8 variants from its shipped FP32 file, with the current quantizer
(7-bit weights since 2026-12-07; see quantize.py's make_int8_dynamic and
``edge_runtime.anomaly.onnx_writer.WEIGHT_MAX``), leaving every other file as it is.

    python firmware_tools/quantize/requantize.py vad --data firmware_tools/work/vad16k
    python firmware_tools/quantize/requantize.py denoise --data firmware_tools/work/pool16k_v2
    python firmware_tools/quantize/requantize.py classify --data firmware_tools/work/classify16k
    python firmware_tools/quantize/requantize.py bwe --data firmware_tools/work/bwe
    python firmware_tools/quantize/requantize.py bwe48k --data firmware_tools/work/bwe48k

Calibration and held-out inputs are recorded as the model's ship script records them
(``ship_vad.py``: the first 60 TRAIN clips of ``build_vad.py``'s data and the next 20;
``ship_denoise.py``: 40 and 10 mixtures of the training pool, seeds 101 and 202;
``ship_classify.py``: 1,000 TRAIN and 500 VAL windows, seed 7; ``train_bwe.py``: the first
20,000 of its 250,000 shuffled TRAIN frames, seed 0, and every 50th held-out frame — its
feature cache is built when ``--data`` has none), so the only change is the quantizer's. The
files are replaced in ``models_int8/<model>/`` and their manifest rows get the new sha256, size
and SNR against FP32; re-measure the task metrics afterwards with the model's eval script.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "firmware_tools", "train"))
sys.path.insert(0, os.path.join(ROOT, "firmware_tools", "data"))
sys.path.insert(0, os.path.join(ROOT, "firmware_tools"))
sys.path.insert(0, ROOT)

MODELS = ("vad", "denoise", "classify", "bwe", "bwe48k")
# manifest metric key -> model output name, for the SNR rows quantize.py measures
SNR_KEYS = (("state_snr_vs_fp32_db", "state_out"), ("prob_snr_vs_fp32_db", "prob"),
            ("gain_snr_vs_fp32_db", "gain"), ("probs_snr_vs_fp32_db", "probs"), ("env_snr_vs_fp32_db", "env"))


def replace_row(text: str, manifest: str, rel: str, path: str, snr: dict, metrics: dict | None = None) -> str:
    """The manifest ``text`` with variant ``rel``'s sha256 and size taken from ``path``, its
    SNR metrics (output name -> dB) and any other ``metrics`` (manifest key -> value) replaced."""
    from edge_runtime.models.schema import sha256_file

    block = re.search(r'path = "' + re.escape(rel) + r'"\nsha256 = "[0-9a-f]{64}"\nsize = \d+\n', text)
    if block is None:
        raise SystemExit(f"{manifest}: no variant row for {rel}")
    text = text.replace(block.group(0), f'path = "{rel}"\nsha256 = "{sha256_file(path)}"\n'
                                         f"size = {os.path.getsize(path)}\n")
    start = text.index(f'path = "{rel}"')
    end = text.find("[[models", start)
    end = len(text) if end < 0 else end
    part = text[start:end]
    for key, out in SNR_KEYS:
        if out in snr:
            part = re.sub(rf"{key} = [0-9.]+", f"{key} = {round(float(snr[out]), 2)}", part)
    for key, value in (metrics or {}).items():
        part = re.sub(rf"{key} = [0-9.]+", f"{key} = {value}", part)
        print(f"{rel}: {key} {value}")
    print(f"{rel}: SNR vs FP32 on held-out inputs: " + ", ".join(f"{k} {v:.1f} dB" for k, v in snr.items()))
    return text[:start] + part + text[end:]


def _install(src: str, dst: str) -> None:
    import shutil

    shutil.copyfile(src, dst + ".new")
    os.replace(dst + ".new", dst)


def _quantized(name_: str, fp32: str, data: str, tmp: str) -> tuple[str, dict, dict]:
    """Run quantize.py with the model's own calibration: the output folder, SNR per variant and
    the held-out inputs."""
    import numpy as np

    from shipping import run_quantize

    if name_ == "vad":
        from ship_vad import record_calibration
        from train_vad import load_features

        feats, _ = load_features(data, tmp, "train")
        n_cal = min(60, (3 * len(feats)) // 4)
        calib = record_calibration(fp32, feats, range(0, n_cal), seed=101)
        held = record_calibration(fp32, feats, range(n_cal, min(len(feats), n_cal + 20)), seed=202)
        return (*run_quantize(fp32, calib, held, tmp, name_), held)
    if name_ == "denoise":
        from ship_denoise import record_calibration

        calib = record_calibration(fp32, data, clips=40, seed=101)
        held = record_calibration(fp32, data, clips=10, seed=202)
        return (*run_quantize(fp32, calib, held, tmp, name_), held)
    # classify, as ship_classify.py draws them
    tr = np.load(os.path.join(data, "train.npz"))
    va = np.load(os.path.join(data, "val.npz"))
    rng = np.random.default_rng(7)
    calib = tr["x"][np.sort(rng.choice(len(tr["y"]), 1000, replace=False))].astype(np.float32)
    held = va["x"][np.sort(rng.choice(len(va["y"]), min(500, len(va["y"])), replace=False))].astype(np.float32)
    held = {"logmel": held[:, None]}
    return (*run_quantize(fp32, {"logmel": calib[:, None]}, held, tmp, name_, ("--calib-rows", "1000")), held)


def _dense_bwe(name_: str, fp32: str, data: str, tmp: str) -> tuple[str, float]:
    """The bwe MLP's INT8 QDQ file written again by onnx_writer from the shipped FP32 weights."""
    from pathlib import Path

    import numpy as np
    import onnx
    from onnx import numpy_helper

    import train_bwe
    from edge_runtime.anomaly.onnx_writer import dense_int8
    from edge_runtime.atomic import write_bytes

    train_bwe.SR = 48000 if name_ == "bwe48k" else 16000
    work = Path(data)
    if not (work / "train_x.npy").exists():
        print("building train_bwe.py's feature cache:", train_bwe.build(work))
    X = np.load(work / "train_x.npy")
    calib = X[np.random.default_rng(0).permutation(len(X))[:250000]][:20000]
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(fp32).graph.initializer}
    n = sum(1 for k in init if re.fullmatch(r"w\d+", k))
    W, b = [init[f"w{i}"] for i in range(n)], [init[f"b{i}"] for i in range(n)]
    qdir = Path(tmp) / "q"
    qdir.mkdir()
    _install(fp32, str(qdir / f"{name_}_fp32.onnx"))
    write_bytes(str(qdir / f"{name_}_int8.onnx"),
                dense_int8(W, b, calib, name=name_, in_name="feat", out_name="env", batch=1))
    return str(qdir), train_bwe.int8_snr(qdir, work)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=MODELS)
    ap.add_argument("--data", required=True, help="vad: build_vad.py output (TRAIN split used); "
                                                  "denoise: the training pool (firmware_tools/train/pool.py); "
                                                  "classify: build_classify.py output; bwe/bwe48k: "
                                                  "train_bwe.py's feature cache (built when absent)")
    ap.add_argument("--manifest", default=os.path.join(ROOT, "models_int8", "manifest.toml"))
    args = ap.parse_args(argv)
    from edge_runtime import atomic

    name_ = args.model
    files = {"vad": {"int8-dynamic": "vad_int8-dynamic.onnx", "int8-static": "vad_int8.onnx"},
             "denoise": {"int8-dynamic": "denoise_int8-dynamic.onnx", "int8-static": "denoise_int8.onnx"},
             "classify": {"int8-static": "classify_int8.onnx"},
             "bwe": {"int8-static": "bwe_int8.onnx"}, "bwe48k": {"int8-static": "bwe48k_int8.onnx"}}[name_]
    out_dir = os.path.join(os.path.dirname(args.manifest), name_)
    fp32 = os.path.join(out_dir, f"{name_}_fp32.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        if name_.startswith("bwe"):
            qdir, env_snr = _dense_bwe(name_, fp32, args.data, tmp)
            snr = {("onnx", "int8-static"): {"env": env_snr}}
        else:
            qdir, snr, held = _quantized(name_, fp32, args.data, tmp)
        text = open(args.manifest).read()
        for prec, name in files.items():
            dst = os.path.join(out_dir, name)
            _install(os.path.join(qdir, name), dst)
            metrics = None
            if name_ == "classify":
                # ship_classify.py's own check (probability SNR and arg-max agreement, VAL windows)
                from ship_classify import compare

                metrics = compare(fp32, dst, "onnxruntime", held["logmel"][:, 0])
            text = replace_row(text, args.manifest, f"{name_}/{name}", dst, snr.get(("onnx", prec), {}), metrics)
        atomic.write_bytes(args.manifest, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

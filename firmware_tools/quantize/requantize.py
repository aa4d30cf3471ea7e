"""Re-make a shipped model's ONNX INT8 variants from its shipped FP32 file, with the current
quantizer (7-bit weights since 2026-12-07; see quantize.py's make_int8_dynamic), leaving every
other file as it is.

    python firmware_tools/quantize/requantize.py vad --data firmware_tools/work/vad16k
    python firmware_tools/quantize/requantize.py denoise --data firmware_tools/work/pool16k_v2

Calibration and held-out inputs are recorded as the model's ship script records them
(``ship_vad.py``: the first 60 TRAIN clips of ``build_vad.py``'s data and the next 20;
``ship_denoise.py``: 40 and 10 mixtures of the training pool, seeds 101 and 202), so the only
change is the quantizer's. The two files are replaced in ``models_int8/<model>/`` and their
manifest rows get the new sha256, size and SNR against FP32; re-measure the task metrics
afterwards with the model's eval script.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "firmware_tools", "train"))
sys.path.insert(0, os.path.join(ROOT, "firmware_tools", "data"))
sys.path.insert(0, ROOT)

MODELS = ("vad", "denoise")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=MODELS)
    ap.add_argument("--data", required=True, help="vad: build_vad.py output (TRAIN split used); "
                                                  "denoise: the training pool (firmware_tools/train/pool.py)")
    ap.add_argument("--manifest", default=os.path.join(ROOT, "models_int8", "manifest.toml"))
    args = ap.parse_args(argv)
    import re
    import shutil

    from shipping import run_quantize

    from edge_runtime import atomic
    from edge_runtime.models.schema import sha256_file

    name_ = args.model
    files = {"int8-dynamic": f"{name_}_int8-dynamic.onnx", "int8-static": f"{name_}_int8.onnx"}
    out_dir = os.path.join(os.path.dirname(args.manifest), name_)
    fp32 = os.path.join(out_dir, f"{name_}_fp32.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        if name_ == "vad":
            from ship_vad import record_calibration
            from train_vad import load_features

            feats, _ = load_features(args.data, tmp, "train")
            n_cal = min(60, (3 * len(feats)) // 4)
            calib = record_calibration(fp32, feats, range(0, n_cal), seed=101)
            held = record_calibration(fp32, feats, range(n_cal, min(len(feats), n_cal + 20)), seed=202)
        else:
            from ship_denoise import record_calibration

            calib = record_calibration(fp32, args.data, clips=40, seed=101)
            held = record_calibration(fp32, args.data, clips=10, seed=202)
        qdir, snr = run_quantize(fp32, calib, held, tmp, name_)
        text = open(args.manifest).read()
        for prec, name in files.items():
            dst = os.path.join(out_dir, name)
            shutil.copyfile(os.path.join(qdir, name), dst + ".new")
            os.replace(dst + ".new", dst)
            rel = f"{name_}/{name}"
            block = re.search(r'path = "' + re.escape(rel) + r'"\nsha256 = "[0-9a-f]{64}"\nsize = \d+\n', text)
            if block is None:
                raise SystemExit(f"{args.manifest}: no variant row for {rel}")
            text = text.replace(block.group(0), f'path = "{rel}"\nsha256 = "{sha256_file(dst)}"\n'
                                                 f"size = {os.path.getsize(dst)}\n")
            # the variant's SNR rows (measured by quantize.py on the held-out hops, on this machine)
            got = snr.get(("onnx", prec), {})
            start = text.index(f'path = "{rel}"')
            end = text.find("[[models", start)
            end = len(text) if end < 0 else end
            part = text[start:end]
            for key, out in (("state_snr_vs_fp32_db", "state_out"), ("prob_snr_vs_fp32_db", "prob"),
                             ("gain_snr_vs_fp32_db", "gain")):
                if out in got:
                    part = re.sub(rf"{key} = [0-9.]+", f"{key} = {round(float(got[out]), 2)}", part)
            text = text[:start] + part + text[end:]
            print(f"{name}: SNR vs FP32 on held-out hops: " + ", ".join(f"{k} {v:.1f} dB" for k, v in got.items()))
        atomic.write_bytes(args.manifest, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

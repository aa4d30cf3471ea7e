"""Re-make the shipped VAD's ONNX INT8 variants from its shipped FP32 file, with the current
quantizer (7-bit weights since 2026-12-07; see quantize.py's make_int8_dynamic), leaving every
other file as it is.

    python firmware_tools/quantize/requantize_vad.py --data firmware_tools/work/vad16k

Calibration and held-out inputs are recorded as ``ship_vad.py`` records them (the first 60 TRAIN
clips of ``build_vad.py``'s data, and the next 20), so the only change is the quantizer's. The
two files are replaced in ``models_int8/vad/`` and their manifest rows get the new sha256, size
and state SNR; re-measure the task metrics afterwards with ``eval_vad.py`` and
``ship_vad.py --metrics-only``.
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

FILES = {"int8-dynamic": "vad_int8-dynamic.onnx", "int8-static": "vad_int8.onnx"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="firmware_tools/data/build_vad.py output (TRAIN split used)")
    ap.add_argument("--manifest", default=os.path.join(ROOT, "models_int8", "manifest.toml"))
    args = ap.parse_args(argv)
    import re
    import shutil

    from ship_vad import record_calibration
    from shipping import run_quantize
    from train_vad import load_features

    from edge_runtime import atomic
    from edge_runtime.models.schema import sha256_file

    out_dir = os.path.join(os.path.dirname(args.manifest), "vad")
    fp32 = os.path.join(out_dir, "vad_fp32.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        feats, _ = load_features(args.data, tmp, "train")
        n_cal = min(60, (3 * len(feats)) // 4)
        calib = record_calibration(fp32, feats, range(0, n_cal), seed=101)
        held = record_calibration(fp32, feats, range(n_cal, min(len(feats), n_cal + 20)), seed=202)
        qdir, snr = run_quantize(fp32, calib, held, tmp, "vad")
        text = open(args.manifest).read()
        for prec, name in FILES.items():
            dst = os.path.join(out_dir, name)
            shutil.copyfile(os.path.join(qdir, name), dst + ".new")
            os.replace(dst + ".new", dst)
            rel = f"vad/{name}"
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
            for key, out in (("state_snr_vs_fp32_db", "state_out"), ("prob_snr_vs_fp32_db", "prob")):
                if out in got:
                    part = re.sub(rf"{key} = [0-9.]+", f"{key} = {round(float(got[out]), 2)}", part)
            text = text[:start] + part + text[end:]
            print(f"{name}: SNR vs FP32 on held-out hops: " + ", ".join(f"{k} {v:.1f} dB" for k, v in got.items()))
        atomic.write_bytes(args.manifest, text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

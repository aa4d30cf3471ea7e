"""What every ship script does the same way: run the quantization pipeline on an FP32 ONNX
model, copy the shipped variant files into models_int8/<model>/, and write the manifest entry."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def run_quantize(fp32: str, calib: dict, held: dict, tmp: str, name: str,
                 extra_args: tuple[str, ...] = ()) -> tuple[str, dict]:
    """Save the calibration and held-out inputs, run firmware_tools/quantize/quantize.py on
    ``fp32`` into ``tmp/q``; return that folder and the report's SNR vs FP32 per output, keyed
    by ``(format, precision)`` with the report's ``int8`` named ``int8-static`` as in the manifest."""
    np.savez(os.path.join(tmp, "calib.npz"), **calib)
    np.savez(os.path.join(tmp, "held.npz"), **held)
    qdir = os.path.join(tmp, "q")
    subprocess.run([sys.executable, os.path.join(ROOT, "firmware_tools", "quantize", "quantize.py"), fp32,
                    "--calib", os.path.join(tmp, "calib.npz"), "--heldout", os.path.join(tmp, "held.npz"),
                    "--out-dir", qdir, "--name", name, *extra_args], check=True)
    with open(os.path.join(qdir, "quantize_report.json")) as f:
        report = json.load(f)
    snr = {(v["format"], "int8-static" if v["precision"] == "int8" else v["precision"]): v["snr_vs_fp32_db"]
           for v in report["variants"]}
    return qdir, snr


def copy_variants(src_dir: str, out_dir: str, names) -> None:
    """Copy the variant files ``names`` (an OpenVINO ``.xml`` with its ``.bin``) from ``src_dir``."""
    for name in names:
        shutil.copyfile(os.path.join(src_dir, name), os.path.join(out_dir, name))
        if name.endswith(".xml"):
            shutil.copyfile(os.path.join(src_dir, name[:-4] + ".bin"), os.path.join(out_dir, name[:-4] + ".bin"))


def write_entry(manifest: str, entry: dict, variants: list, out_dir: str) -> None:
    """Upsert ``entry`` with its ``variants`` into ``manifest`` (an empty ``metrics`` table is
    left out) and say so."""
    from edge_runtime.models.manifest import upsert_model

    if not entry.get("metrics"):
        entry.pop("metrics", None)
    entry["variants"] = variants
    upsert_model(manifest, entry)
    print(f"shipped {len(variants)} variants to {out_dir}; manifest {manifest}")

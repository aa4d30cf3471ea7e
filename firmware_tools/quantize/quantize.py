"""One command from an FP32 ONNX model to every variant, each verified against FP32.

    python firmware_tools/quantize/quantize.py MODEL_fp32.onnx --calib calib.npz \
        --out-dir models_int8/NAME [--heldout heldout.npz] [--report report.json]

``calib.npz`` / ``heldout.npz`` hold one array per model input, stacked on a leading axis
(N, *input_shape) — real inputs recorded from the FP32 model running on calibration audio
(for a stateful model, the states it actually produced). Held-out inputs come from audio
not used for calibration.

Variants written (suffix in the file name):
  fp32.onnx            the input, copied
  fp16.onnx            weights and activations in float16 (inputs/outputs kept float32)
  int8-dynamic.onnx    ONNX Runtime dynamic quantization (weights int8, activations at run time)
  int8.onnx            ONNX Runtime static QDQ on MatMul/Gemm/Conv (weights per-channel int8,
                       activations uint8 from calibration; shipped as precision int8-static)
  openvino fp32/fp16   OpenVINO IR (.xml + .bin)
TFLite variants come from the recipe's own torch route (see firmware_tools/export).

Each variant is run on the held-out inputs; the report gives, per output, the SNR in dB of
the variant's output against FP32's, plus size and sha256. Task metrics (PESQ, accuracy)
are measured by the model's eval script on the variants written here.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys

import numpy as np

from edge_runtime import atomic


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Reader:
    """CalibrationDataReader over the rows of an npz."""

    def __init__(self, data: dict[str, np.ndarray], limit: int | None = None):
        self.data = data
        self.n = min(len(next(iter(data.values()))), limit or 1 << 30)
        self.i = 0

    def get_next(self):
        if self.i >= self.n:
            return None
        row = {k: np.ascontiguousarray(v[self.i]) for k, v in self.data.items()}
        self.i += 1
        return row

    def rewind(self):
        self.i = 0


def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k].astype(np.float32) for k in z.files}


def make_fp16(src: str, dst: str) -> None:
    import onnx
    from onnxconverter_common import float16

    m = onnx.load(src)
    # A tensor that is both a graph output and an input of other nodes trips the converter's
    # keep_io_types (it stays float32 for the output and float16 for the consumer): give
    # each graph output its own Identity so the cast lands between them.
    for out in m.graph.output:
        inner = out.name + "__fp16_inner"
        for node in m.graph.node:
            node.output[:] = [inner if o == out.name else o for o in node.output]
            node.input[:] = [inner if i == out.name else i for i in node.input]
        m.graph.node.append(onnx.helper.make_node("Identity", [inner], [out.name]))
    m = onnx.shape_inference.infer_shapes(m)
    # log/pow/div of raw spectra under- and overflow in float16: they stay float32
    m16 = float16.convert_float_to_float16(m, keep_io_types=True, op_block_list=["Log", "Pow", "Div", "Sqrt"])
    onnx.save(m16, dst)


def make_int8_dynamic(src: str, dst: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # reduce_range: 7-bit weights. On x86 CPUs without VNNI (AVX2 only), ONNX Runtime's u8 x s8
    # kernels sum pairs of products in int16 and saturate with full-range weights: the denoiser's
    # gains measured 15.9 dB SNR against FP32 on an AVX2 AMD EPYC with 8-bit weights, 34.3 dB
    # with 7-bit ones (tests/test_model_parity.py's inputs)
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)


def make_int8_static(src: str, dst: str, calib: dict, calib_rows: int) -> None:
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst + ".pre.onnx"
    quant_pre_process(src, pre, skip_symbolic_shape=True)
    try:
        quantize_static(pre, dst, _Reader(calib, calib_rows), quant_format=QuantFormat.QDQ,
                        per_channel=True, weight_type=QuantType.QInt8, reduce_range=True,
                        activation_type=QuantType.QUInt8,  # reduce_range: see make_int8_dynamic
                        calibrate_method=CalibrationMethod.Percentile,
                        # only the weight-bearing ops: front-ends on raw spectra or audio (log,
                        # powers) span far more than 8 bits and stay float
                        op_types_to_quantize=["MatMul", "Gemm", "Conv"],
                        extra_options={"CalibPercentile": 99.99})
    finally:
        if os.path.exists(pre):
            os.unlink(pre)


def make_openvino(src: str, dst_xml: str, fp16: bool) -> None:
    import openvino as ov

    model = ov.convert_model(src)
    ov.save_model(model, dst_xml, compress_to_fp16=fp16)


def run_all(path: str, data: dict[str, np.ndarray], backend: str = "onnxruntime") -> dict[str, np.ndarray]:
    """Run a model row by row on ``data`` with the runtime's backend layer."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from edge_runtime.backends import load_session

    sess = load_session(path, backend=backend, threads=1)
    n = len(next(iter(data.values())))
    outs: dict[str, list] = {}
    for i in range(n):
        res = sess.run({k: np.ascontiguousarray(v[i]) for k, v in data.items()})
        for k, v in res.items():
            outs.setdefault(k, []).append(np.array(v, copy=True))
    return {k: np.stack(v) for k, v in outs.items()}


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    err = np.sum((ref.astype(np.float64) - test) ** 2)
    return float(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(err, 1e-30)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="FP32 ONNX model")
    ap.add_argument("--calib", required=True, help="npz of calibration inputs")
    ap.add_argument("--heldout", help="npz of held-out inputs (default: last 20%% of --calib)")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--name", help="file name stem (default: the model's stem without _fp32)")
    ap.add_argument("--calib-rows", type=int, default=2000)
    ap.add_argument("--report", help="write the JSON report here (default OUT_DIR/quantize_report.json)")
    args = ap.parse_args(argv)

    os.makedirs(args.out_dir, exist_ok=True)
    stem = args.name or os.path.basename(args.model).rsplit(".", 1)[0].removesuffix("_fp32")
    calib = _load_npz(args.calib)
    if args.heldout:
        held = _load_npz(args.heldout)
    else:
        n = len(next(iter(calib.values())))
        cut = int(n * 0.8)
        held = {k: v[cut:] for k, v in calib.items()}
        calib = {k: v[:cut] for k, v in calib.items()}

    out = lambda suffix: os.path.join(args.out_dir, f"{stem}_{suffix}")  # noqa: E731
    variants = []
    fp32 = out("fp32.onnx")
    if os.path.abspath(fp32) != os.path.abspath(args.model):
        shutil.copyfile(args.model, fp32)
    variants.append(("onnx", "fp32", fp32, "onnxruntime"))
    make_fp16(fp32, out("fp16.onnx"))
    variants.append(("onnx", "fp16", out("fp16.onnx"), "onnxruntime"))
    make_int8_dynamic(fp32, out("int8-dynamic.onnx"))
    variants.append(("onnx", "int8-dynamic", out("int8-dynamic.onnx"), "onnxruntime"))
    make_int8_static(fp32, out("int8.onnx"), calib, args.calib_rows)
    variants.append(("onnx", "int8", out("int8.onnx"), "onnxruntime"))
    try:
        make_openvino(fp32, out("fp32.xml"), fp16=False)
        variants.append(("openvino-ir", "fp32", out("fp32.xml"), "openvino"))
        make_openvino(fp32, out("fp16.xml"), fp16=True)
        variants.append(("openvino-ir", "fp16", out("fp16.xml"), "openvino"))
    except ImportError:
        print("openvino not installed: no IR variants", file=sys.stderr)

    ref = run_all(fp32, held)
    report = {"model": args.model, "calib_rows": min(args.calib_rows, len(next(iter(calib.values())))),
              "heldout_rows": len(next(iter(held.values()))), "variants": []}
    for fmt, prec, path, backend in variants:
        got = run_all(path, held, backend)
        files = [path] + ([path[:-4] + ".bin"] if path.endswith(".xml") else [])
        entry = {"format": fmt, "precision": prec, "path": os.path.relpath(path, args.out_dir),
                 "size": sum(os.path.getsize(f) for f in files), "sha256": sha256(path),
                 "snr_vs_fp32_db": {k: round(snr_db(ref[k], got[k]), 2) for k in ref}}
        if path.endswith(".xml"):
            entry["weights_sha256"] = sha256(path[:-4] + ".bin")
        report["variants"].append(entry)
        print(f"{fmt:12} {prec:13} {entry['size']:>9} B  " +
              "  ".join(f"{k} SNR {v:6.1f} dB" for k, v in entry["snr_vs_fp32_db"].items()))
    rpt = args.report or os.path.join(args.out_dir, "quantize_report.json")
    with atomic.AtomicFile(rpt) as f:
        json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

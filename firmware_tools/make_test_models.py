"""Build the tiny fixture models under ``tests/fixtures/models/`` (commit-friendly, a few KB each).

No torch and no TensorFlow needed:

* ONNX models are written with the ``onnx`` helper API (``pip install onnx``).
* TFLite models are written as flatbuffers by hand with the schema bindings that
  ``ai-edge-litert`` ships (``ai_edge_litert.schema_py_generated``) and ``flatbuffers``;
  they are skipped, with a message, when those are not installed.

Models (all share one set of weights, saved to ``reference.npz`` so the tests can compute the
expected outputs with NumPy alone):

=============================  =====================================================================
gemm_relu_static.onnx          x float32 [1, 64] -> Gemm(W [64, 8], b [8]) -> Relu -> y float32 [1, 8]
gemm_relu_dynbatch.onnx        x float32 [batch, 64] -> same -> y float32 [batch, 8]
add_mul.onnx                   a, b float32 [1, 16] -> sum = a + b, prod = a * b (two in, two out)
fc_relu_float.tflite           x float32 [1, 64] -> FULLY_CONNECTED + fused RELU -> y float32 [1, 8]
fc_relu_dynbatch.tflite        same with shape_signature [-1, 64] (dynamic batch)
fc_relu_int8.tflite            x int8 [1, 64] (scale, zp) -> FULLY_CONNECTED int8 + RELU -> y int8 [1, 8]
=============================  =====================================================================

Run: ``python firmware_tools/make_test_models.py [--out tests/fixtures/models]``.
The output is deterministic (fixed seed), so re-running it gives the same bytes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "fixtures" / "models"

N_IN, N_OUT = 64, 8
ONNX_OPSET = 17  # old enough for the ONNX Runtime / OpenVINO versions found on edge boards
ONNX_IR_VERSION = 8


def reference_params(seed: int = 20240607) -> dict:
    """Weights and INT8 quantization parameters shared by every fixture model."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((N_IN, N_OUT)) * 0.25).astype(np.float32)  # y = relu(x @ w + b)
    b = (rng.standard_normal(N_OUT) * 0.1).astype(np.float32)
    # INT8 (TFLite conventions): input asymmetric per-tensor, weights symmetric per-tensor (zp 0),
    # bias int32 with scale s_x * s_w, output asymmetric per-tensor (relu: zp at the bottom).
    x_scale, x_zero = np.float32(4.0 / 128), -3
    w_scale = np.float32(np.abs(w).max() / 127.0)
    w_q = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
    b_q = np.round(b / (x_scale * w_scale)).astype(np.int32)
    # output range from calibration data: x uniform in the input's representable range
    cal = rng.uniform(-4.0, 4.0, (4096, N_IN)).astype(np.float32)
    y_max = float(np.maximum(cal @ w + b, 0).max())
    y_scale, y_zero = np.float32(y_max / 255.0), -128
    return {
        "w": w, "b": b,
        "x_scale": np.float32(x_scale), "x_zero": np.int32(x_zero),
        "w_scale": np.float32(w_scale), "w_q": w_q, "b_q": b_q,
        "y_scale": np.float32(y_scale), "y_zero": np.int32(y_zero),
    }


# ----------------------------------------------------------------------------------------- ONNX
def _onnx_gemm_relu(p: dict, batch) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, N_IN])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, N_OUT])
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["h"], name="gemm"),
         helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "gemm_relu", [x], [y],
        initializer=[numpy_helper.from_array(p["w"], "W"), numpy_helper.from_array(p["b"], "B")])
    return _onnx_bytes(graph)


def _onnx_add_mul() -> bytes:
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 16])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 16])
    s = helper.make_tensor_value_info("sum", TensorProto.FLOAT, [1, 16])
    m = helper.make_tensor_value_info("prod", TensorProto.FLOAT, [1, 16])
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"], name="add"),
         helper.make_node("Mul", ["a", "b"], ["prod"], name="mul")],
        "add_mul", [a, b], [s, m])
    return _onnx_bytes(graph)


def _onnx_bytes(graph) -> bytes:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                              producer_name="edge_runtime.make_test_models")
    model.ir_version = ONNX_IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# --------------------------------------------------------------------------------------- TFLite
def _tflite_fc_relu(p: dict, *, int8: bool, dynamic_batch: bool = False) -> bytes:
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb

    def quant(scale, zero):
        q = fb.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = [float(scale)], [int(zero)], 0
        return q

    def buffer(arr=None):
        buf = fb.BufferT()
        if arr is not None:
            buf.data = np.frombuffer(np.ascontiguousarray(arr).tobytes(), np.uint8)
        return buf

    def tensor(name, shape, ttype, buf, q=None, signature=None):
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer, t.quantization = name, list(shape), ttype, buf, q
        if signature is not None:
            t.shapeSignature = list(signature)
        return t

    sig_in = [-1, N_IN] if dynamic_batch else None
    sig_out = [-1, N_OUT] if dynamic_batch else None
    # buffer 0 is the conventional empty buffer; 1 = weights, 2 = bias
    if int8:
        buffers = [buffer(), buffer(p["w_q"].T), buffer(p["b_q"])]
        tensors = [
            tensor("x", [1, N_IN], fb.TensorType.INT8, 0, quant(p["x_scale"], p["x_zero"]), sig_in),
            tensor("fc/weights", [N_OUT, N_IN], fb.TensorType.INT8, 1, quant(p["w_scale"], 0)),
            tensor("fc/bias", [N_OUT], fb.TensorType.INT32, 2, quant(p["x_scale"] * p["w_scale"], 0)),
            tensor("y", [1, N_OUT], fb.TensorType.INT8, 0, quant(p["y_scale"], p["y_zero"]), sig_out),
        ]
    else:
        buffers = [buffer(), buffer(p["w"].T.astype(np.float32)), buffer(p["b"])]
        tensors = [
            tensor("x", [1, N_IN], fb.TensorType.FLOAT32, 0, None, sig_in),
            tensor("fc/weights", [N_OUT, N_IN], fb.TensorType.FLOAT32, 1),
            tensor("fc/bias", [N_OUT], fb.TensorType.FLOAT32, 2),
            tensor("y", [1, N_OUT], fb.TensorType.FLOAT32, 0, None, sig_out),
        ]
    opts = fb.FullyConnectedOptionsT()
    opts.fusedActivationFunction = fb.ActivationFunctionType.RELU
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType, op.builtinOptions = fb.BuiltinOptions.FullyConnectedOptions, opts
    code = fb.OperatorCodeT()
    code.builtinCode = fb.BuiltinOperator.FULLY_CONNECTED
    code.deprecatedBuiltinCode = fb.BuiltinOperator.FULLY_CONNECTED
    code.version = 4 if int8 else 1
    sub = fb.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = tensors, [0], [3], [op], "main"
    model = fb.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [sub], buffers
    model.description = "edge_runtime.make_test_models"
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# ----------------------------------------------------------------------------------------- main
def build(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    p = reference_params()
    written: list[Path] = []

    def write(name: str, data: bytes) -> None:
        path = out / name
        path.write_bytes(data)
        written.append(path)
        print(f"wrote {path} ({len(data)} bytes)")

    np.savez(out / "reference.npz", **p)
    written.append(out / "reference.npz")
    print(f"wrote {out / 'reference.npz'}")

    try:
        import onnx  # noqa: F401
    except ImportError:
        print("skipping ONNX fixtures: pip install onnx", file=sys.stderr)
    else:
        write("gemm_relu_static.onnx", _onnx_gemm_relu(p, 1))
        write("gemm_relu_dynbatch.onnx", _onnx_gemm_relu(p, "batch"))
        write("add_mul.onnx", _onnx_add_mul())

    try:
        import flatbuffers  # noqa: F401
        from ai_edge_litert import schema_py_generated  # noqa: F401
    except ImportError:
        print("skipping TFLite fixtures: pip install ai-edge-litert flatbuffers", file=sys.stderr)
    else:
        write("fc_relu_float.tflite", _tflite_fc_relu(p, int8=False))
        write("fc_relu_dynbatch.tflite", _tflite_fc_relu(p, int8=False, dynamic_batch=True))
        write("fc_relu_int8.tflite", _tflite_fc_relu(p, int8=True))
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    args = ap.parse_args(argv)
    build(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

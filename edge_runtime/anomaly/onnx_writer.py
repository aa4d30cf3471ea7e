"""A minimal ONNX writer for the dense INT8 autoencoder (no ``onnx`` package at run time).

The device fits the autoencoder itself (scikit-learn's ``MLPRegressor``), so its ONNX file
must be written where only the runtime dependencies exist. This module serializes the few
protobuf messages an ONNX model of ``Gemm``/``Relu``/``QuantizeLinear``/``DequantizeLinear``
nodes needs (field numbers from onnx/onnx.proto3, IR version 8, opset 13) and builds the
quantized graph: weights stored as INT8 per output channel, biases as INT32, activations
quantized to UINT8 with scales calibrated on the training features (the QDQ form ONNX
Runtime's quantizer writes, which it fuses into integer kernels).
"""
from __future__ import annotations

import struct

import numpy as np

# TensorProto.DataType
FLOAT, UINT8, INT8, INT32, INT64 = 1, 2, 3, 6, 7
_NP = {np.dtype(np.float32): FLOAT, np.dtype(np.uint8): UINT8, np.dtype(np.int8): INT8,
       np.dtype(np.int32): INT32, np.dtype(np.int64): INT64}


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _int(field: int, v: int) -> bytes:
    return _key(field, 0) + _varint(int(v))


def _bytes(field: int, b: bytes) -> bytes:
    return _key(field, 2) + _varint(len(b)) + b


def _str(field: int, s: str) -> bytes:
    return _bytes(field, s.encode())


def _float(field: int, v: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", float(v))


def tensor(name: str, arr: np.ndarray) -> bytes:
    """TensorProto: dims=1, data_type=2, name=8, raw_data=9."""
    arr = np.ascontiguousarray(arr)
    msg = b"".join(_int(1, d) for d in arr.shape)
    msg += _int(2, _NP[arr.dtype]) + _str(8, name) + _bytes(9, arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    return msg


def value_info(name: str, elem_type: int, shape) -> bytes:
    """ValueInfoProto: name=1, type=2 (TypeProto.tensor_type=1 {elem_type=1, shape=2})."""
    dims = b""
    for d in shape:
        dim = _str(2, d) if isinstance(d, str) else _int(1, d)
        dims += _bytes(1, dim)
    tt = _int(1, elem_type) + _bytes(2, dims)
    return _str(1, name) + _bytes(2, _bytes(1, tt))


def attr_int(name: str, v: int) -> bytes:
    """AttributeProto: name=1, i=3, type=20 (INT=2)."""
    return _str(1, name) + _int(3, v) + _int(20, 2)


def attr_float(name: str, v: float) -> bytes:
    return _str(1, name) + _float(2, v) + _int(20, 1)


def node(op: str, inputs, outputs, name: str, attrs=()) -> bytes:
    """NodeProto: input=1, output=2, name=3, op_type=4, attribute=5."""
    msg = b"".join(_str(1, i) for i in inputs) + b"".join(_str(2, o) for o in outputs)
    msg += _str(3, name) + _str(4, op)
    msg += b"".join(_bytes(5, a) for a in attrs)
    return msg


def model(nodes, initializers, inputs, outputs, name: str = "graph", opset: int = 13,
          producer: str = "edge_runtime") -> bytes:
    """ModelProto: ir_version=1, producer_name=2, graph=7, opset_import=8."""
    g = b"".join(_bytes(1, n) for n in nodes) + _str(2, name)
    g += b"".join(_bytes(5, t) for t in initializers)
    g += b"".join(_bytes(11, v) for v in inputs) + b"".join(_bytes(12, v) for v in outputs)
    op = _str(1, "") + _int(2, opset)
    return _int(1, 8) + _str(2, producer) + _bytes(7, g) + _bytes(8, op)


def _act_qparams(lo: float, hi: float) -> tuple[float, int]:
    """UINT8 asymmetric scale/zero point covering [min(lo, 0), max(hi, 0)]."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zp = int(np.clip(round(-lo / scale), 0, 255))
    return scale, zp


WEIGHT_MAX = 63


def dense_int8(weights, biases, calib: np.ndarray, activations: str = "relu", name: str = "autoencoder",
               in_name: str = "x", out_name: str = "y", batch="N") -> bytes:
    """INT8 QDQ ONNX of a dense net ``x -> [Gemm -> Relu]* -> Gemm`` (scikit-learn MLP layout:
    ``weights[i]`` is ``(in, out)``). Input ``x`` and output ``y`` are float32 ``(N, in)`` /
    ``(N, out)``; activation scales come from running ``calib`` through the float net."""
    nodes, inits = [], []
    n_layers = len(weights)
    # calibration: the range of every quantized activation on the training inputs
    acts = [np.asarray(calib, np.float64)]
    h = acts[0]
    for i, (W, b) in enumerate(zip(weights, biases)):
        h = h @ W + b
        if i < n_layers - 1:
            h = np.maximum(h, 0.0)
        acts.append(h)
    cur = in_name
    for i, (W, b) in enumerate(zip(weights, biases)):
        W = np.asarray(W, np.float64)
        b = np.asarray(b, np.float64)
        a = acts[i]
        s_in, zp_in = _act_qparams(np.percentile(a, 0.01), np.percentile(a, 99.99))
        inits += [tensor(f"s_in{i}", np.array(s_in, np.float32)), tensor(f"zp_in{i}", np.array(zp_in, np.uint8))]
        nodes.append(node("QuantizeLinear", [cur, f"s_in{i}", f"zp_in{i}"], [f"q_in{i}"], f"quant_in{i}"))
        nodes.append(node("DequantizeLinear", [f"q_in{i}", f"s_in{i}", f"zp_in{i}"], [f"dq_in{i}"], f"dequant_in{i}"))
        # per output channel, 7-bit (+-63): ONNX Runtime's u8 x s8 kernels on x86 CPUs without
        # VNNI add pairs of products in int16 (VPMADDUBSW), which saturates with 8-bit weights
        # (255 * 127 * 2 > 32767); measured on an AVX2-only EPYC, the bwe model's INT8 kept
        # 25.5 dB SNR against FP32 with +-127 weights
        s_w = np.maximum(np.abs(W).max(axis=0), 1e-12) / WEIGHT_MAX
        Wq = np.clip(np.round(W / s_w), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
        s_b = (s_in * s_w)
        bq = np.clip(np.round(b / s_b), -(2 ** 31) + 1, 2 ** 31 - 1).astype(np.int32)
        inits += [tensor(f"w{i}", Wq), tensor(f"s_w{i}", s_w.astype(np.float32)),
                  tensor(f"zp_w{i}", np.zeros(W.shape[1], np.int8)),
                  tensor(f"b{i}", bq), tensor(f"s_b{i}", s_b.astype(np.float32)),
                  tensor(f"zp_b{i}", np.zeros(W.shape[1], np.int32))]
        nodes.append(node("DequantizeLinear", [f"w{i}", f"s_w{i}", f"zp_w{i}"], [f"dq_w{i}"], f"dequant_w{i}",
                          [attr_int("axis", 1)]))
        nodes.append(node("DequantizeLinear", [f"b{i}", f"s_b{i}", f"zp_b{i}"], [f"dq_b{i}"], f"dequant_b{i}",
                          [attr_int("axis", 0)]))
        last = i == n_layers - 1
        out = out_name if last else f"h{i}"
        if last:
            nodes.append(node("Gemm", [f"dq_in{i}", f"dq_w{i}", f"dq_b{i}"], [out], f"dense{i}"))
        else:
            nodes.append(node("Gemm", [f"dq_in{i}", f"dq_w{i}", f"dq_b{i}"], [f"g{i}"], f"dense{i}"))
            nodes.append(node("Relu", [f"g{i}"], [out], f"relu{i}"))
        cur = out
    d_in = int(np.asarray(weights[0]).shape[0])
    d_out = int(np.asarray(weights[-1]).shape[1])
    return model(nodes, inits, [value_info(in_name, FLOAT, [batch, d_in])],
                 [value_info(out_name, FLOAT, [batch, d_out])], name=name)


def dense_fp32(weights, biases, name: str = "dense", in_name: str = "x", out_name: str = "y", batch="N") -> bytes:
    """Float32 ONNX of the same dense net ``x -> [Gemm -> Relu]* -> Gemm`` (the reference the INT8
    variant is measured against)."""
    nodes, inits = [], []
    cur = in_name
    n_layers = len(weights)
    for i, (W, b) in enumerate(zip(weights, biases)):
        inits += [tensor(f"w{i}", np.asarray(W, np.float32)), tensor(f"b{i}", np.asarray(b, np.float32))]
        last = i == n_layers - 1
        out = out_name if last else f"h{i}"
        nodes.append(node("Gemm", [cur, f"w{i}", f"b{i}"], [out if last else f"g{i}"], f"dense{i}"))
        if not last:
            nodes.append(node("Relu", [f"g{i}"], [out], f"relu{i}"))
        cur = out
    d_in, d_out = int(np.asarray(weights[0]).shape[0]), int(np.asarray(weights[-1]).shape[1])
    return model(nodes, inits, [value_info(in_name, FLOAT, [batch, d_in])],
                 [value_info(out_name, FLOAT, [batch, d_out])], name=name)

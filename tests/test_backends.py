"""Backend layer: ONNX Runtime, LiteRT, OpenVINO on the tiny fixture models.

Fixtures come from ``firmware_tools/make_test_models.py`` (``tests/fixtures/models/``):
``y = relu(x @ W + b)`` with x [1, 64] -> y [1, 8] as ONNX (static and dynamic batch) and as TFLite
(float, dynamic batch, full INT8); ``reference.npz`` holds W, b and the INT8 parameters.

Tolerances: float32 outputs within ``atol=1e-5, rtol=1e-5`` of the NumPy float32 reference (64-term
dot products of values ~1: rounding differences are ~1e-6); INT8 outputs within 1 LSB of the
integer reference (TFLite requantizes with a fixed-point multiplier, NumPy with float rounding).
Allocation bound: over 5,000 ``run_bound`` calls, traced memory may grow at most 2 KiB more than over
5,000 no-op calls (i.e. < 0.5 byte per call: nothing accumulates), and no call allocates more than
16 KiB at its peak.  Backends that are not installed are skipped with the reason.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.backends import (BACKENDS, LazySession, TensorSpec, backends_for, clear_cache, dequantize,
                                   get_backend, load_session, parse_shape, quantize, resolve_shapes)
from edge_runtime.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
REF = np.load(MODELS / "reference.npz")
ATOL = RTOL = 1e-5

# backend -> (static model, dynamic-batch model)
CASES = {
    "onnxruntime": ("gemm_relu_static.onnx", "gemm_relu_dynbatch.onnx"),
    "openvino": ("gemm_relu_static.onnx", "gemm_relu_dynbatch.onnx"),
    "litert": ("fc_relu_float.tflite", "fc_relu_dynbatch.tflite"),
}


def _param(name):
    b = BACKENDS[name]
    static, _ = CASES[name]
    marks = []
    if not b.available():
        marks.append(pytest.mark.skip(reason=f"backend {name} is not installed (pip install edge-runtime[{b.extra}])"))
    elif not (MODELS / static).exists():
        marks.append(pytest.mark.skip(reason=f"fixture {static} missing (python firmware_tools/make_test_models.py)"))
    return pytest.param(name, marks=marks, id=name)


ALL = [_param(n) for n in CASES]
ONNX_BACKENDS = [_param(n) for n in ("onnxruntime", "openvino")]
needs_litert = pytest.mark.skipif(not BACKENDS["litert"].available() or not (MODELS / "fc_relu_int8.tflite").exists(),
                                  reason="litert not installed or fc_relu_int8.tflite fixture missing")


def reference(x):
    return np.maximum(x @ REF["w"] + REF["b"], 0).astype(np.float32)


def reference_int8(xq):
    acc = (xq.astype(np.int32) - int(REF["x_zero"])) @ REF["w_q"].astype(np.int32) + REF["b_q"]
    mult = float(REF["x_scale"]) * float(REF["w_scale"]) / float(REF["y_scale"])
    return np.clip(np.round(acc * mult) + int(REF["y_zero"]), -128, 127).astype(np.int32)


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def static_path(name):
    return MODELS / CASES[name][0]


def dyn_path(name):
    return MODELS / CASES[name][1]


# ------------------------------------------------------------------------------------ registry
def test_registry_and_extensions():
    assert set(BACKENDS) == {"onnxruntime", "litert", "openvino", "native"}
    assert get_backend("native").formats == ("native",)
    assert [b.name for b in backends_for("lib/librnnoise.so")] == ["native"]
    assert get_backend("onnxruntime").formats == ("onnx",)
    assert get_backend("litert").formats == ("tflite",)
    assert get_backend("openvino").formats == ("onnx", "openvino-ir")
    assert [b.name for b in backends_for("m.onnx")] == ["onnxruntime", "openvino"]
    assert [b.name for b in backends_for("m.TFLITE")] == ["litert"]
    assert [b.name for b in backends_for("dir/m.xml")] == ["openvino"]
    with pytest.raises(ModelError, match=r"m\.pt.*'\.pt'.*expected one of \.onnx"):
        backends_for("m.pt")
    with pytest.raises(ModelError, match="unknown backend 'tensorrt'.*onnxruntime"):
        get_backend("tensorrt")


def test_import_loads_no_backend_library():
    code = ("import sys, edge_runtime.backends as b; b.BACKENDS['onnxruntime'].available(); "
            "b.BACKENDS['litert'].available(); b.BACKENDS['openvino'].available(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('onnxruntime', 'openvino', 'ai_edge_litert', 'tflite_runtime', 'tensorflow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_tensorspec():
    s = TensorSpec("x", ("batch", -1, 64), np.float32)
    assert s.shape == (None, None, 64) and s.dtype == np.dtype(np.float32)
    assert s.dynamic_dims == (0, 1) and s.is_dynamic
    assert s.matches((2, 3, 64)) and not s.matches((2, 3, 32)) and not s.matches((2, 64))
    assert str(s) == "x: float32 [?, ?, 64]"
    q = TensorSpec("q", (1, 4), "int8", (0.5, -3))
    x = np.array([[-1.0, 0.0, 0.5, 100.0]], np.float32)
    xq = quantize(x, q)
    assert xq.dtype == np.int8 and xq.tolist() == [[-5, -3, -2, 127]]
    np.testing.assert_allclose(dequantize(xq, q), [[-1.0, 0.0, 0.5, 65.0]])


# ----------------------------------------------------------------------------- per backend
@pytest.mark.parametrize("name", ALL)
def test_specs(name):
    s = load_session(static_path(name), name)
    assert s.backend == name and s.path == str(static_path(name))
    assert [(t.name, t.shape, t.dtype) for t in s.inputs] == [("x", (1, 64), np.dtype(np.float32))]
    assert [(t.name, t.shape, t.dtype) for t in s.outputs] == [("y", (1, 8), np.dtype(np.float32))]
    assert all(t.quant is None for t in s.inputs + s.outputs)
    d = load_session(dyn_path(name), name)
    assert d.inputs[0].shape == (None, 64) and d.outputs[0].shape == (None, 8)
    assert d.inputs[0].dynamic_dims == (0,)


@pytest.mark.parametrize("name", ALL)
def test_run_matches_reference(name, rng):
    s = load_session(static_path(name), name)
    for _ in range(5):
        x = rng.standard_normal((1, 64)).astype(np.float32)
        out = s.run({"x": x})
        assert list(out) == ["y"] and out["y"].dtype == np.float32 and out["y"].shape == (1, 8)
        np.testing.assert_allclose(out["y"], reference(x), atol=ATOL, rtol=RTOL)
    # writing into a caller's array
    y = np.full((1, 8), np.nan, np.float32)
    out = s.run({"x": x}, {"y": y})
    assert out["y"] is y
    np.testing.assert_allclose(y, reference(x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", ALL)
def test_bind_run_bound(name, rng):
    s = load_session(static_path(name), name)
    x = np.zeros((1, 64), np.float32)
    y = np.full((1, 8), np.nan, np.float32)
    ptr = y.ctypes.data
    binding = s.bind({"x": x}, {"y": y})
    assert binding.inputs["x"] is x and binding.outputs["y"] is y
    for _ in range(5):
        x[...] = rng.standard_normal((1, 64))  # in place: the bound array object stays
        out = s.run_bound()
        assert out["y"] is y and y.ctypes.data == ptr
        np.testing.assert_allclose(y, reference(x), atol=ATOL, rtol=RTOL)
        np.testing.assert_array_equal(y, s.run({"x": x.copy()})["y"])  # agrees with run()
        x[...] = rng.standard_normal((1, 64))
        binding.run()
        np.testing.assert_allclose(y, reference(x), atol=ATOL, rtol=RTOL)
    # run(None) runs the latest binding
    x[...] = 1.0
    assert s.run()["y"] is y
    np.testing.assert_allclose(y, reference(x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", ALL)
def test_two_bindings_on_one_shared_session(name, rng):
    """Nodes sharing a session each keep their own binding (and, dynamic, their own shapes)."""
    s = load_session(dyn_path(name), name)
    x1, y1 = rng.standard_normal((1, 64)).astype(np.float32), np.zeros((1, 8), np.float32)
    x4, y4 = rng.standard_normal((4, 64)).astype(np.float32), np.zeros((4, 8), np.float32)
    b1, b4 = s.bind({"x": x1}, {"y": y1}), s.bind({"x": x4}, {"y": y4})
    for _ in range(3):
        b1.run()
        b4.run()
        np.testing.assert_allclose(y1, reference(x1), atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(y4, reference(x4), atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(s.run({"x": x4[:2].copy()})["y"], reference(x4[:2]), atol=ATOL, rtol=RTOL)
        x1 += 0.5
        x4 -= 0.25


def _traced_growth(fn, n):
    for _ in range(200):
        fn()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            fn()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before, peak - before


@pytest.mark.parametrize("name", ALL)
def test_run_bound_allocates_nothing_per_call(name, rng):
    s = load_session(static_path(name), name)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    y = np.zeros((1, 8), np.float32)
    binding = s.bind({"x": x}, {"y": y})
    base_growth, _ = _traced_growth(lambda: None, 5000)
    growth, peak = _traced_growth(binding.run, 5000)
    assert growth - base_growth < 2048, f"{name}: run_bound grew traced memory by {growth - base_growth} B over 5000 calls"
    assert peak < 16384, f"{name}: one run_bound call peaked at {peak} B"
    growth2, _ = _traced_growth(s.run_bound, 5000)
    assert growth2 - base_growth < 2048
    np.testing.assert_allclose(y, reference(x), atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", ALL)
def test_dynamic_batch(name, rng):
    s = load_session(dyn_path(name), name)
    with pytest.raises(ModelError) as e:
        resolve_shapes(s)
    msg = str(e.value)
    assert str(dyn_path(name)) in msg and "'x'" in msg and "dynamic dims [0]" in msg
    assert "[?, 64]" in msg and "--shape x=1x64" in msg
    assert resolve_shapes(s, {"x": "4x64"}) == {"x": (4, 64)}
    assert resolve_shapes(s, {"x": (2, 64)}) == {"x": (2, 64)}
    with pytest.raises(ModelError, match=r"shape 4x32 for input 'x' does not fit the model's \[\?, 64\]"):
        resolve_shapes(s, {"x": "4x32"})
    with pytest.raises(ModelError, match=r"unknown input\(s\) \['audio'\].*\['x'\]"):
        resolve_shapes(s, {"audio": "1x16000"})
    for batch in (4, 1, 3):
        x = rng.standard_normal((batch, 64)).astype(np.float32)
        np.testing.assert_allclose(s.run({"x": x})["y"], reference(x), atol=ATOL, rtol=RTOL)
    x, y = rng.standard_normal((5, 64)).astype(np.float32), np.zeros((5, 8), np.float32)
    s.bind({"x": x}, {"y": y}).run()
    np.testing.assert_allclose(y, reference(x), atol=ATOL, rtol=RTOL)
    # an output array that does not fit the inputs' batch is an error, never a silent no-op
    with pytest.raises(ModelError, match=r"output 'y' will have shape \[5, 8\] for input shapes "
                                         r"\{'x': \[5, 64\]\}; the array bound to it has \[4, 8\]"):
        s.bind({"x": x}, {"y": np.zeros((4, 8), np.float32)})
    st = load_session(static_path(name), name)
    assert resolve_shapes(st) == {"x": (1, 64)}


@pytest.mark.parametrize("name", ALL)
def test_bad_arrays_are_model_errors(name):
    s = load_session(static_path(name), name)
    path = str(static_path(name))
    with pytest.raises(ModelError, match=r"input 'x' has dtype float64; expected float32"):
        s.run({"x": np.zeros((1, 64))})
    with pytest.raises(ModelError, match=r"input 'x' has shape \[1, 32\]; expected \[1, 64\]"):
        s.run({"x": np.zeros((1, 32), np.float32)})
    with pytest.raises(ModelError, match=r"input 'x' not given; expected x: float32 \[1, 64\]"):
        s.run({})
    with pytest.raises(ModelError, match=r"unknown input\(s\) \['z'\]"):
        s.run({"x": np.zeros((1, 64), np.float32), "z": np.zeros(1)})
    with pytest.raises(ModelError, match="bind\\(\\) needs an array for every output; missing \\['y'\\]"):
        s.bind({"x": np.zeros((1, 64), np.float32)}, {})
    with pytest.raises(ModelError, match="must be C-contiguous"):
        s.bind({"x": np.zeros((1, 128), np.float32)[:, ::2]}, {"y": np.zeros((1, 8), np.float32)})
    with pytest.raises(ModelError, match=r"output 'y' has shape \[8\]; expected \[1, 8\]"):
        s.bind({"x": np.zeros((1, 64), np.float32)}, {"y": np.zeros(8, np.float32)})
    fresh = type(s).__new__(type(s))
    fresh.path, fresh._last_binding = path, None
    with pytest.raises(ModelError, match="run_bound\\(\\) before bind\\(\\)"):
        fresh.run_bound()


@pytest.mark.parametrize("name", ALL)
def test_session_sharing(name, tmp_path):
    p = static_path(name)
    a = load_session(p, name)
    assert load_session(p, name) is a
    assert load_session(str(p), name, threads=1, device=None) is a
    assert load_session(p, name, threads=2) is not a
    # the same file through another path (symlink) is the same model
    link = tmp_path / ("link" + p.suffix)
    link.symlink_to(p)
    assert load_session(link, name) is a
    # a changed file loads anew
    copy = tmp_path / ("copy" + p.suffix)
    shutil.copy(p, copy)
    c1 = load_session(copy, name)
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    c2 = load_session(copy, name)
    assert c2 is not c1 and load_session(copy, name) is c2
    clear_cache()
    assert load_session(p, name) is not a


@pytest.mark.parametrize("name", ALL)
def test_lazy_session(name, rng, tmp_path):
    p = static_path(name)
    lazy = load_session(p, name, lazy=True)
    assert isinstance(lazy, LazySession) and not lazy.loaded
    assert load_session(p, name, lazy=True) is lazy
    x = rng.standard_normal((1, 64)).astype(np.float32)
    np.testing.assert_allclose(lazy.run({"x": x})["y"], reference(x), atol=ATOL, rtol=RTOL)
    assert lazy.loaded and lazy.session is load_session(p, name)  # shares the eager session
    # a corrupt file is reported at first use, still naming the file
    bad = tmp_path / ("bad" + p.suffix)
    bad.write_bytes(p.read_bytes()[:40])
    lz = load_session(bad, name, lazy=True)
    with pytest.raises(ModelError, match=str(bad)):
        lz.inputs


def _tampered(kind, data):
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "truncated_tiny":
        return data[:10]
    if kind == "garbled_header":
        return bytes(64) + data[64:]
    return np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("kind", ["truncated", "truncated_tiny", "garbled_header", "random"])
@pytest.mark.parametrize("name", ALL)
def test_tampered_file_is_model_error(name, kind, tmp_path):
    p = static_path(name)
    bad = tmp_path / ("tampered" + p.suffix)
    bad.write_bytes(_tampered(kind, p.read_bytes()))
    with pytest.raises(ModelError) as e:
        load_session(bad, name)
    msg = str(e.value)
    assert str(bad) in msg and name in msg and "expected a valid" in msg


@pytest.mark.parametrize("name", ALL)
def test_missing_and_empty_file(name, tmp_path):
    p = tmp_path / ("nope" + static_path(name).suffix)
    with pytest.raises(ModelError, match=f"model file {p} not found"):
        load_session(p, name)
    p.write_bytes(b"")
    with pytest.raises(ModelError, match=f"model file {p} is empty"):
        load_session(p, name)
    with pytest.raises(ModelError, match="is not a regular file"):
        load_session(tmp_path, name)


def test_missing_backend(monkeypatch):
    onnx = MODELS / "gemm_relu_static.onnx"
    for b in BACKENDS.values():
        monkeypatch.setattr(b, "available", lambda: False)
    with pytest.raises(ModelError, match=r"backend openvino is not installed; pip install edge-runtime\[openvino\]"):
        load_session(onnx, "openvino")
    with pytest.raises(ModelError, match=r"backend onnxruntime is not installed; pip install edge-runtime\[onnx\]"):
        BACKENDS["onnxruntime"].load(onnx)
    with pytest.raises(ModelError, match=r"no installed backend reads \.onnx files.*pip install "
                                         r"edge-runtime\[onnx\] or edge-runtime\[openvino\]"):
        load_session(onnx)
    with pytest.raises(ModelError, match=r"backend litert is not installed; pip install edge-runtime\[litert\]"):
        load_session(MODELS / "fc_relu_float.tflite", "litert")


def test_backend_does_not_read_extension():
    with pytest.raises(ModelError, match=r"backend litert does not read \.onnx files; use one of \['onnxruntime', 'openvino'\]"):
        load_session(MODELS / "gemm_relu_static.onnx", "litert")


def test_default_backend_is_first_installed():
    onnx = MODELS / "gemm_relu_static.onnx"
    installed = [b.name for b in backends_for(onnx) if b.available()]
    if not installed:
        pytest.skip("no ONNX backend installed")
    assert load_session(onnx).backend == installed[0]


def test_parse_shape():
    assert parse_shape("1x16000") == (1, 16000) and parse_shape("2,3") == (2, 3)
    for bad in ("", "1x0", "ax2", "1x-3"):
        with pytest.raises(ModelError, match="expected positive integers joined by 'x'"):
            parse_shape(bad)


@pytest.mark.parametrize("name", ALL)
def test_bad_threads_and_options(name):
    p = static_path(name)
    with pytest.raises(ModelError, match=r"threads=0 for backend .*expected an integer >= 1"):
        load_session(p, name, threads=0)
    with pytest.raises(ModelError, match=r"unknown option\(s\) \['bogus'\] for backend"):
        load_session(p, name, options={"bogus": 1})


@pytest.mark.parametrize("name", ONNX_BACKENDS)
def test_two_inputs_two_outputs(name, rng):
    s = load_session(MODELS / "add_mul.onnx", name)
    assert [t.name for t in s.inputs] == ["a", "b"] and [t.name for t in s.outputs] == ["sum", "prod"]
    a, b = (rng.standard_normal((1, 16)).astype(np.float32) for _ in range(2))
    out = s.run({"b": b, "a": a})
    np.testing.assert_allclose(out["sum"], a + b, rtol=1e-6)
    np.testing.assert_allclose(out["prod"], a * b, rtol=1e-6)
    sm, pr = np.zeros((1, 16), np.float32), np.zeros((1, 16), np.float32)
    bd = s.bind({"a": a, "b": b}, {"prod": pr, "sum": sm})
    a += 1.0
    bd.run()
    np.testing.assert_allclose(sm, a + b, rtol=1e-6)
    np.testing.assert_allclose(pr, a * b, rtol=1e-6)


# ------------------------------------------------------------------------ backend specifics
@needs_litert
def test_litert_int8(rng):
    s = load_session(MODELS / "fc_relu_int8.tflite", "litert")
    (xi,), (yo,) = s.inputs, s.outputs
    assert (xi.name, xi.shape, xi.dtype) == ("x", (1, 64), np.dtype(np.int8))
    assert (yo.name, yo.shape, yo.dtype) == ("y", (1, 8), np.dtype(np.int8))
    assert xi.quant == (pytest.approx(float(REF["x_scale"])), int(REF["x_zero"]))
    assert yo.quant == (pytest.approx(float(REF["y_scale"]), rel=1e-6), int(REF["y_zero"]))
    xq_b = np.zeros((1, 64), np.int8)
    yq_b = np.zeros((1, 8), np.int8)
    binding = s.bind({"x": xq_b}, {"y": yq_b})
    for _ in range(5):
        x = rng.uniform(-2, 2, (1, 64)).astype(np.float32)
        xq = quantize(x, xi)
        yq = s.run({"x": xq})["y"]
        assert yq.dtype == np.int8
        assert np.abs(yq.astype(np.int32) - reference_int8(xq)).max() <= 1
        # dequantized output approximates the float model
        np.testing.assert_allclose(dequantize(yq, yo), reference(x), atol=4 * yo.quant[0] + 0.1)
        xq_b[...] = xq
        binding.run()
        np.testing.assert_array_equal(yq_b, yq)


@pytest.mark.skipif(not BACKENDS["onnxruntime"].available(), reason="onnxruntime is not installed (pip install edge-runtime[onnx])")
def test_onnxruntime_session_options():
    s = load_session(MODELS / "gemm_relu_static.onnx", "onnxruntime", threads=2)
    so = s._sess.get_session_options()
    assert so.intra_op_num_threads == 2 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert s.providers[-1] == "CPUExecutionProvider"
    spin = load_session(MODELS / "gemm_relu_static.onnx", "onnxruntime", options={"allow_spinning": True})
    assert spin._sess.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert "cpu" in BACKENDS["onnxruntime"].devices()
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ModelError, match="device 'cuda' needs onnxruntime's CUDAExecutionProvider"):
            load_session(MODELS / "gemm_relu_static.onnx", "onnxruntime", device="cuda")
    with pytest.raises(ModelError, match="device 'fpga' for onnxruntime; expected one of"):
        load_session(MODELS / "gemm_relu_static.onnx", "onnxruntime", device="fpga")
    # 'auto' off a Jetson is the CPU
    auto = load_session(MODELS / "gemm_relu_static.onnx", "onnxruntime", device="auto")
    assert auto.providers[-1] == "CPUExecutionProvider"


@pytest.mark.skipif(not BACKENDS["openvino"].available(), reason="openvino is not installed (pip install edge-runtime[openvino])")
def test_openvino_devices_shapes_npu(monkeypatch, tmp_path, rng):
    ovb = BACKENDS["openvino"]
    assert "CPU" in ovb.devices()
    dyn = MODELS / "gemm_relu_dynbatch.onnx"
    if "NPU" not in ovb.devices():
        with pytest.raises(ModelError, match=r"device 'npu' is not present for openvino; available devices: \['CPU'"):
            load_session(dyn, "openvino", device="npu")
    # static reshape through options
    s = load_session(dyn, "openvino", options={"shapes": {"x": (3, 64)}})
    assert s.inputs[0].shape == (3, 64)
    x = rng.standard_normal((3, 64)).astype(np.float32)
    np.testing.assert_allclose(s.run({"x": x})["y"], reference(x), atol=ATOL, rtol=RTOL)
    with pytest.raises(ModelError, match=r"option shapes names unknown input\(s\) \['audio'\]"):
        load_session(dyn, "openvino", options={"shapes": {"audio": (1, 3)}})
    # NPU refuses dynamic shapes before compiling (pretend an NPU is there)
    monkeypatch.setattr(type(ovb), "_device", lambda self, device, path: "NPU")
    with pytest.raises(ModelError, match=r"NPU needs static shapes but input 'x' is \[\?, 64\].*--shape x=1x64"):
        ovb.load(dyn, device="NPU", options={"cache_dir": str(tmp_path / "ovcache")})


@pytest.mark.skipif(not BACKENDS["openvino"].available(), reason="openvino is not installed (pip install edge-runtime[openvino])")
def test_openvino_ir_needs_bin(tmp_path):
    xml = tmp_path / "m.xml"
    xml.write_text("<net/>")
    with pytest.raises(ModelError, match=r"OpenVINO IR weights .*m\.bin not found"):
        load_session(xml, "openvino")


# -------------------------------------------------------------------------------- benchmark
def _per_call_us(fn, n=20000, reps=5):
    for _ in range(500):
        fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(n // reps):
            fn()
        best = min(best, (time.perf_counter() - t) / (n // reps) * 1e6)
    return best


@pytest.mark.benchmark
@pytest.mark.parametrize("name", ALL)
def test_benchmark_call_overhead(name, capsys):
    """Per-call time (µs) on the 64->8 fixture: direct backend call vs Session.run vs bound path."""
    s = load_session(static_path(name), name)
    x, y = np.ones((1, 64), np.float32), np.zeros((1, 8), np.float32)
    rows = {}
    if name == "onnxruntime":
        rows["direct sess.run(None, {x})"] = _per_call_us(lambda: s._sess.run(None, {"x": x}))
    elif name == "litert":
        it, i, o = s._interp, s._in_idx[0], s._out_idx[0]

        def direct():
            it.set_tensor(i, x)
            it.invoke()
            return it.get_tensor(o)

        rows["direct set_tensor/invoke/get_tensor"] = _per_call_us(direct)
    else:
        req = s._compiled.create_infer_request()
        rows["direct req.infer([x])"] = _per_call_us(lambda: req.infer([x]), n=5000)
    rows["Session.run({x})"] = _per_call_us(lambda: s.run({"x": x}), n=5000 if name == "openvino" else 20000)
    b = s.bind({"x": x}, {"y": y})
    rows["Binding.run()"] = _per_call_us(b.run)
    rows["Session.run_bound()"] = _per_call_us(s.run_bound)
    with capsys.disabled():
        for k, v in rows.items():
            print(f"\n{name:12s} {k:40s} {v:8.2f} us", end="")
        print()

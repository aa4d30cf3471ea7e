"""``edge-runtime bench`` on the fixture models (``tests/fixtures/models``).

Most runs use ``--in-process`` (fast); one run uses the default fresh process per backend.
Parity tolerances: float32 backends within 1e-5 of each other (64-term dot products of values
~1); an INT8 TFLite vs the float ONNX of the same weights within 1.5 output LSB (``y_scale``) plus
the input quantization error propagated (|W| sum x half an input LSB).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.backends import BACKENDS
from edge_runtime.cli import main
from edge_runtime.models.bench import bench_files, make_inputs, parse_shape_args
from edge_runtime.backends import TensorSpec
from edge_runtime.errors import ModelError

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
REF = np.load(MODELS / "reference.npz")
HAVE = {n: b.available() for n, b in BACKENDS.items()}
KEYS = ("load_ms", "median_us", "p99_us", "max_abs_diff", "rss_mb", "import_ms", "backend", "model", "file",
        "format", "reference", "inputs", "outputs")

needs_all = pytest.mark.skipif(not all(HAVE.values()), reason=f"needs every backend installed: {HAVE}")
needs_ort = pytest.mark.skipif(not HAVE["onnxruntime"], reason="onnxruntime not installed")


def _run(capsys, *args):
    code = main(["bench", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@needs_all
def test_bench_all_fixtures_json(capsys):
    files = sorted(MODELS.glob("*.onnx")) + sorted(MODELS.glob("*.tflite"))
    code, out, err = _run(capsys, *files, "--shape", "x=1x64", "--runs", 30, "--warmup", 3, "--in-process", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["runs"] == 30 and rep["warmup"] == 3 and rep["threads"] == 1
    got = {(r["file"], r["backend"]) for r in rep["results"]}
    assert got == {("add_mul.onnx", "onnxruntime"), ("add_mul.onnx", "openvino"),
                   ("gemm_relu_dynbatch.onnx", "onnxruntime"), ("gemm_relu_dynbatch.onnx", "openvino"),
                   ("gemm_relu_static.onnx", "onnxruntime"), ("gemm_relu_static.onnx", "openvino"),
                   ("fc_relu_dynbatch.tflite", "litert"), ("fc_relu_float.tflite", "litert"),
                   ("fc_relu_int8.tflite", "litert")}
    for r in rep["results"]:
        for k in KEYS:
            assert k in r, (k, r)
        assert r["load_ms"] > 0 and 0 < r["median_us"] <= r["p99_us"]
        assert isinstance(r["max_abs_diff"], dict)
        assert set(r["max_abs_diff"]) == {o["name"] for o in r["outputs"]}
        if r["backend"] == "openvino":  # compared with onnxruntime on the same file
            assert r["reference"] == f"{r['file']}@onnxruntime"
            assert all(v <= 1e-5 for v in r["max_abs_diff"].values()), r["max_abs_diff"]
        else:
            assert all(v == 0.0 for v in r["max_abs_diff"].values())
    dyn = next(r for r in rep["results"] if r["file"] == "gemm_relu_dynbatch.onnx")
    assert dyn["inputs"][0]["shape"] == [None, 64] and dyn["inputs"][0]["bench_shape"] == [1, 64]
    i8 = next(r for r in rep["results"] if r["file"] == "fc_relu_int8.tflite")
    assert i8["inputs"][0]["dtype"] == "int8" and i8["inputs"][0]["quant"][1] == -3


@needs_all
def test_bench_isolated_table(capsys):
    code, out, err = _run(capsys, MODELS / "gemm_relu_static.onnx", "--runs", 20, "--warmup", 2)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["model", "file", "backend", "load"]
    assert any(l.startswith("gemm_relu_static.onnx") and "onnxruntime" in l and "(reference)" in l for l in lines)
    assert any("openvino" in l and "y=" in l for l in lines)
    assert "one fresh process per backend" in out


@needs_all
def test_bench_same_model_both_formats(tmp_path):
    """m.onnx and m.tflite (same weights) are compared with each other, INT8 too."""
    shutil.copyfile(MODELS / "gemm_relu_static.onnx", tmp_path / "m.onnx")
    shutil.copyfile(MODELS / "fc_relu_float.tflite", tmp_path / "m.tflite")
    shutil.copyfile(MODELS / "gemm_relu_static.onnx", tmp_path / "q.onnx")
    shutil.copyfile(MODELS / "fc_relu_int8.tflite", tmp_path / "q.tflite")
    rep = bench_files([tmp_path / "m.onnx", tmp_path / "m.tflite", tmp_path / "q.onnx", tmp_path / "q.tflite"],
                      runs=10, warmup=1, isolate=False)
    by = {(r["file"], r["backend"]): r for r in rep["results"]}
    lite = by[("m.tflite", "litert")]
    assert lite["reference"] == "m.onnx@onnxruntime" and lite["inputs_from_reference"]
    assert lite["max_abs_diff"]["y"] <= 1e-5
    q = by[("q.tflite", "litert")]
    assert q["reference"] == "q.onnx@onnxruntime" and q["inputs_from_reference"]
    bound = 1.5 * float(REF["y_scale"]) + np.abs(REF["w"]).sum(axis=0).max() * float(REF["x_scale"]) / 2
    assert 0 < q["max_abs_diff"]["y"] <= bound


def test_dynamic_dims_without_shape_is_a_clear_error(capsys):
    if not HAVE["onnxruntime"]:
        pytest.skip("onnxruntime not installed")
    code, out, err = _run(capsys, MODELS / "gemm_relu_dynbatch.onnx", "--backends", "onnxruntime", "--in-process")
    assert code == 2 and out == ""
    assert err.startswith("error: model ") and "gemm_relu_dynbatch.onnx" in err
    assert "input 'x' has dynamic dims [0] (shape [?, 64])" in err and "--shape x=1x64" in err


@pytest.mark.skipif(not HAVE["litert"], reason="litert not installed")
def test_dynamic_dims_error_from_the_isolated_process(capsys):
    code, out, err = _run(capsys, MODELS / "fc_relu_dynbatch.tflite", "--runs", 5)
    assert code == 2 and "dynamic dims" in err and "--shape x=1x64" in err


@needs_ort
def test_shape_fixes_dynamic_dims(capsys):
    code, out, err = _run(capsys, MODELS / "gemm_relu_dynbatch.onnx", "--backends", "onnxruntime",
                          "--shape", "3x64", "--runs", 5, "--warmup", 0, "--in-process", "--json")
    assert code == 0, err
    (r,) = json.loads(out)["results"]
    assert r["inputs"][0]["bench_shape"] == [3, 64] and r["outputs"][0]["bench_shape"] == [3, 8]


@needs_ort
@pytest.mark.parametrize("args, match", [
    (["--shape", "zz=1x64"], r"--shape names input\(s\) \['zz'\] that none of the models has"),
    (["--shape", "x=2x64"], r"shape 2x64 for input 'x' does not fit the model's \[1, 64\]"),
    (["--shape", "x=1xa"], r"shape '1xa'; expected positive integers"),
    (["--backends", "onnxruntime,tensorflow"], r"unknown backend\(s\) \['tensorflow'\]"),
    (["--backends", "litert"], r"none of --backends \['litert'\] reads .onnx files"),
    (["--runs", "0"], r"runs=0, warmup=20; expected runs >= 1"),
])
def test_bench_usage_errors(capsys, args, match):
    import re

    code, out, err = _run(capsys, MODELS / "gemm_relu_static.onnx", "--backends", "onnxruntime", *args,
                          "--in-process") if "--backends" not in args else \
        _run(capsys, MODELS / "gemm_relu_static.onnx", *args, "--in-process")
    assert code == 2, (out, err)
    assert err.startswith("error: ") and re.search(match, err), err


def test_bench_missing_and_corrupt_files(capsys, tmp_path):
    code, out, err = _run(capsys, tmp_path / "none.onnx")
    assert code == 2 and "none.onnx not found" in err
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    if HAVE["onnxruntime"]:
        code, out, err = _run(capsys, bad, "--backends", "onnxruntime", "--in-process")
        assert code == 2 and "bad.onnx" in err and "cannot load it" in err
    code, out, err = _run(capsys, tmp_path / "x.pt")
    assert code == 2 and "x.pt" in err


def test_make_inputs_seeded_and_in_range():
    f = TensorSpec("x", (1, 64), np.float32)
    q = TensorSpec("x", (1, 64), np.int8, quant=(0.03125, -3))
    a, real_a, _ = make_inputs([f], {"x": (1, 64)}, seed=7)
    b, _, _ = make_inputs([f], {"x": (1, 64)}, seed=7)
    np.testing.assert_array_equal(a["x"], b["x"])
    c, real_c, _ = make_inputs([q], {"x": (1, 64)}, seed=7)
    assert c["x"].dtype == np.int8 and c["x"].min() >= -128 and c["x"].max() <= 127
    # the float reference's values, quantized for an INT8 input
    d, real_d, reused = make_inputs([q], {"x": (1, 64)}, seed=99, real=real_a)
    assert reused
    s, zp = 0.03125, -3  # representable: s * (q - zp) for q in -128..127
    np.testing.assert_allclose(real_d[0], np.clip(real_a[0], s * (-128 - zp), s * (127 - zp)), atol=s / 2 + 1e-6)


def test_parse_shape_args():
    assert parse_shape_args(["x=1x16000", "2,3"]) == {"x": (1, 16000), None: (2, 3)}
    with pytest.raises(ModelError, match="given twice"):
        parse_shape_args(["x=1", "x=2"])
    with pytest.raises(ModelError, match="expected NAME=DIMS"):
        parse_shape_args(["=1x2"])

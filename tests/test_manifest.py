"""Model manifest: schema validation, sha256 verification, spec checks, registry, writing.

Manifests are built in ``tmp_path`` around copies of the fixture models (``tests/fixtures/models``):
``gemm_relu_static.onnx`` (fp32 ONNX), ``fc_relu_float.tflite`` (fp32 TFLite) and
``fc_relu_int8.tflite`` (full-INT8 TFLite, whose int8 I/O is stated per variant).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edge_runtime.backends import BACKENDS, clear_cache
from edge_runtime.errors import ModelError
from edge_runtime.models import manifest as mf
from edge_runtime.models._toml import dumps

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
REF = np.load(MODELS / "reference.npz")

needs_ort = pytest.mark.skipif(not BACKENDS["onnxruntime"].available(), reason="onnxruntime not installed")
needs_litert = pytest.mark.skipif(not BACKENDS["litert"].available(), reason="litert not installed")

IO = {"inputs": [{"name": "x", "shape": [1, 64], "dtype": "float32"}],
      "outputs": [{"name": "y", "shape": [1, 8], "dtype": "float32"}]}
IO_INT8 = {"inputs": [{"name": "x", "shape": [1, 64], "dtype": "int8"}],
           "outputs": [{"name": "y", "shape": [1, 8], "dtype": "int8"}]}


def _model_dict(variants, **over):
    d = {"name": "fc", "task": "test", "description": "relu(x @ W + b)", "sample_rate": 16000, "frame": 64,
         "hop": 64, **IO, "metrics": {"accuracy": 0.90}, "primary_metric": "accuracy",
         "provenance": {"recipe": "firmware_tools/make_test_models.py", "data": "random weights",
                        "trained_on": "2024-06-07", "evaluated_on": "2024-06-07"},
         "variants": variants}
    d.update(over)
    return d


@pytest.fixture
def repo(tmp_path):
    """A manifest in tmp_path with three variants; returns (manifest path, folder)."""
    d = tmp_path / "models"
    d.mkdir()
    for src, dst in (("gemm_relu_static.onnx", "fc.fp32.onnx"), ("fc_relu_float.tflite", "fc.fp32.tflite"),
                     ("fc_relu_int8.tflite", "fc.int8.tflite")):
        shutil.copyfile(MODELS / src, d / dst)
    variants = [
        mf.manifest_entry(d / "fc.fp32.onnx", d, precision="fp32", metrics={"accuracy": 0.90}),
        mf.manifest_entry(d / "fc.fp32.tflite", d, precision="fp32", metrics={"accuracy": 0.90}),
        mf.manifest_entry(d / "fc.int8.tflite", d, precision="int8", metrics={"accuracy": 0.88},
                          inputs=IO_INT8["inputs"], outputs=IO_INT8["outputs"]),
    ]
    path = d / "manifest.toml"
    mf.write_manifest(path, {"schema": 1, "models": [_model_dict(variants)]})
    mf.clear_verify_cache()
    clear_cache()
    yield path, d
    mf.clear_verify_cache()
    clear_cache()


def _bump_mtime(p):
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))


# ------------------------------------------------------------------------------------ reading
def test_shipped_manifest_is_valid_and_documented():
    path = ROOT / "models_int8" / "manifest.toml"
    m = mf.load_manifest(path)
    assert m.schema == 1
    text = path.read_text()
    for key in ("[[models]]", "[[models.variants]]", "sha256", "precision", "provenance", "frame", "hop"):
        assert key in text


def test_load_and_registry(repo):
    path, d = repo
    reg = mf.Registry.from_paths([path])
    assert reg.names == ["fc"] and "fc" in reg and len(reg) == 1
    m = reg["fc"]
    assert (m.task, m.sample_rate, m.frame, m.hop) == ("test", 16000, 64, 64)
    assert m.provenance.recipe == "firmware_tools/make_test_models.py"
    assert m.inputs[0] == mf.IOSpec("x", (1, 64), "float32")
    v = m.variant(format="tflite", precision="int8")
    assert v.path == (d / "fc.int8.tflite").resolve() and v.rel_path == "fc.int8.tflite"
    assert v.size == (d / "fc.int8.tflite").stat().st_size
    assert v.sha256 == hashlib.sha256((d / "fc.int8.tflite").read_bytes()).hexdigest()
    assert m.variant(precision="fp32").format == "onnx"  # first match in manifest order
    assert [x.format for x in m.variants_for_backend("openvino")] == ["onnx"]
    assert [x.precision for x in m.variants_for_backend("litert")] == ["fp32", "int8"]
    assert len(reg.variants_for_backend("onnxruntime")) == 1
    assert m.quality_drop(v) == pytest.approx(0.02)
    assert m.quality_drop(m.variant(format="onnx")) == 0.0
    with pytest.raises(ModelError, match=r"no variant format='openvino-ir'.*onnx/fp32, tflite/fp32, tflite/int8"):
        m.variant(format="openvino-ir")
    with pytest.raises(ModelError, match="unknown model 'nope'.*known: fc"):
        reg["nope"]


def test_lower_is_better_metric(tmp_path):
    (tmp_path / "a.onnx").write_bytes((MODELS / "gemm_relu_static.onnx").read_bytes())
    (tmp_path / "b.onnx").write_bytes((MODELS / "gemm_relu_dynbatch.onnx").read_bytes())
    e1 = mf.manifest_entry(tmp_path / "a.onnx", tmp_path, precision="fp32", metrics={"eer": 0.05})
    e2 = mf.manifest_entry(tmp_path / "b.onnx", tmp_path, precision="int8-static", metrics={"eer": 0.07})
    man = mf.write_manifest(tmp_path / "manifest.toml", {"schema": 1, "models": [
        _model_dict([e1, e2], metrics={}, primary_metric="eer", lower_is_better=["eer"])]})
    m = man.models[0]
    assert m.quality_drop(m.variants[1]) == pytest.approx(0.02)


def test_labels_round_trip_and_bad_labels_are_refused(tmp_path):
    (tmp_path / "a.onnx").write_bytes((MODELS / "gemm_relu_static.onnx").read_bytes())
    e = mf.manifest_entry(tmp_path / "a.onnx", tmp_path, precision="fp32")
    labels = [f"c{i}" for i in range(8)]
    man = mf.write_manifest(tmp_path / "manifest.toml", {"schema": 1, "models": [_model_dict([e], labels=labels)]})
    assert man.models[0].labels == tuple(labels)
    assert mf.load_manifest(tmp_path / "manifest.toml").models[0].labels == tuple(labels)
    for bad in (["a", "a"], "a,b", [1, 2], [""]):
        with pytest.raises(ModelError, match=r"manifest.toml.*labels = .*expected an array of distinct class names"):
            mf.parse_manifest({"schema": 1, "models": [_model_dict([e], labels=bad)]}, tmp_path / "manifest.toml")


def test_search_path_env(repo, monkeypatch):
    path, d = repo
    monkeypatch.setenv("EDGE_RUNTIME_MODELS", str(d))  # a folder holding manifest.toml
    paths = mf.manifest_paths()
    assert paths[0] == d / "manifest.toml"
    assert any(p.parent.name == "models_int8" for p in paths[1:])
    assert "fc" in mf.default_registry()
    monkeypatch.setenv("EDGE_RUNTIME_MODELS", str(path))  # or the file itself
    assert mf.manifest_paths()[0] == path


def _write(tmp_path, text):
    p = tmp_path / "manifest.toml"
    p.write_text(text)
    return p


GOOD_VARIANT = 'format = "onnx"\nprecision = "fp32"\npath = "m.onnx"\nsha256 = "' + "0" * 64 + '"\nsize = 10\n'
GOOD_MODEL = ('[[models]]\nname = "m"\ntask = "t"\ninputs = [{ name = "x", shape = [1, 4], dtype = "float32" }]\n'
              'outputs = [{ name = "y", shape = [1, 2], dtype = "float32" }]\n')


@pytest.mark.parametrize("text, match", [
    ("", r"missing key 'schema' \(expected schema = 1\)"),
    ("schema = 2\n", r"schema = 2; expected 1"),
    ("schema = 1\nfoo = 1\n", r"unknown key 'foo'"),
    ("schema = 1\nmodels = 3\n", r"models must be an array of tables"),
    ("schema = 1\n[[models]]\ntask = 't'\n", r"models\[0\]: missing key 'name'"),
    ("schema = 1\n" + GOOD_MODEL + "colour = 'red'\n", r"models\[0\] \(m\): unknown key 'colour'"),
    ("schema = 1\n[[models]]\nname = 'm'\ntask = 't'\noutputs = []\n", r"missing key 'inputs'"),
    ("schema = 1\n" + GOOD_MODEL.replace("[1, 4]", "[1, 0]"), r"inputs\[0\]: shape = \[1, 0\]: dim 0; expected"),
    ("schema = 1\n" + GOOD_MODEL.replace('"float32" }]\nout', '"float8" }]\nout'), r"dtype = 'float8'; expected one of"),
    ("schema = 1\n" + GOOD_MODEL + "sample_rate = -5\n", r"sample_rate = -5; expected an integer >= 1"),
    ("schema = 1\n" + GOOD_MODEL + "metrics = { acc = 'high' }\n", r"metrics.acc = 'high'; expected a number"),
    ("schema = 1\n" + GOOD_MODEL + "[[models.variants]]\n" + GOOD_VARIANT.replace('"onnx"\n', '"caffe"\n', 1),
     r"variants\[0\]: format = 'caffe'; expected one of onnx, tflite, openvino-ir"),
    ("schema = 1\n" + GOOD_MODEL + "[[models.variants]]\n" + GOOD_VARIANT.replace("fp32", "int4"),
     r"precision = 'int4'; expected one of fp32, fp16, int8-dynamic, int8-static, int8"),
    ("schema = 1\n" + GOOD_MODEL + "[[models.variants]]\n" + GOOD_VARIANT.replace("0" * 64, "abc"),
     r"sha256 = 'abc'; expected 64 hex digits"),
    ("schema = 1\n" + GOOD_MODEL + "[[models.variants]]\n" + GOOD_VARIANT.replace("m.onnx", "../m.onnx"),
     r"path = '../m.onnx'; expected a path relative to the manifest"),
    ("schema = 1\n" + GOOD_MODEL + "[[models.variants]]\n" + GOOD_VARIANT.replace("m.onnx", "m.tflite"),
     r"path = 'm.tflite' has extension '.tflite'; format onnx expects .onnx"),
    ("schema = 1\n" + GOOD_MODEL + "[[models.variants]]\n" + GOOD_VARIANT.replace("size = 10", "size = 0"),
     r"size = 0; expected an integer >= 1"),
    ("schema = 1\n" + GOOD_MODEL + "[[models.variants]]\n" + GOOD_VARIANT + "[[models.variants]]\n" + GOOD_VARIANT,
     r"variants\[1\]: duplicate variant format='onnx' precision='fp32' \(also variants\[0\]\)"),
    ("schema = 1\n" + GOOD_MODEL + GOOD_MODEL, r"models\[1\]: duplicate model name 'm'"),
    ("schema = 1\n[[models]]\nname = 'm'\n" + "=", r"not valid TOML"),
])
def test_validation_errors_name_file_key_expected(tmp_path, text, match):
    p = _write(tmp_path, text)
    with pytest.raises(ModelError, match=match) as ei:
        mf.load_manifest(p)
    assert str(p) in str(ei.value)


def test_openvino_ir_variant_needs_weights_checksum(tmp_path):
    p = _write(tmp_path, "schema = 1\n" + GOOD_MODEL + "[[models.variants]]\n"
               + GOOD_VARIANT.replace('"onnx"\n', '"openvino-ir"\n', 1).replace("m.onnx", "m.xml"))
    with pytest.raises(ModelError, match=r"missing key 'weights_sha256'"):
        mf.load_manifest(p)


def test_weights_file_is_for_native_variants_and_is_checked(tmp_path):
    p = _write(tmp_path, "schema = 1\n" + GOOD_MODEL + "[[models.variants]]\n" + GOOD_VARIANT + 'weights = "w.bin"\n')
    with pytest.raises(ModelError, match=r"weights = 'w.bin' is for format native"):
        mf.load_manifest(p)
    native = (GOOD_VARIANT.replace('"onnx"\n', '"native"\n', 1).replace("m.onnx", "libm.so")
              + 'name = "lib"\nweights = "w.bin"\n')
    p = _write(tmp_path, "schema = 1\n" + GOOD_MODEL + "[[models.variants]]\n" + native)
    with pytest.raises(ModelError, match=r"missing key 'weights_sha256'"):
        mf.load_manifest(p)
    (tmp_path / "libm.so").write_bytes(b"0123456789")
    (tmp_path / "w.bin").write_bytes(b"abc")
    good = native + f'weights_sha256 = "{mf.sha256_file(tmp_path / "w.bin")}"\nweights_size = 3\n'
    p = _write(tmp_path, "schema = 1\n" + GOOD_MODEL + "[[models.variants]]\n" + good.replace(
        GOOD_VARIANT.split("sha256 = ")[1].split("\n")[0], f'"{mf.sha256_file(tmp_path / "libm.so")}"'))
    v = mf.load_manifest(p).models[0].variants[0]
    assert v.weights_path == (tmp_path / "w.bin").resolve() and v.load_options == {"model_file": str(v.weights_path)}
    mf.verify(v)
    (tmp_path / "w.bin").write_bytes(b"abd")
    mf.clear_verify_cache()
    with pytest.raises(ModelError, match=r"w.bin failed verification"):
        mf.verify(v)


def test_missing_manifest(tmp_path):
    with pytest.raises(ModelError, match=r"manifest not found"):
        mf.load_manifest(tmp_path / "none.toml")


# ------------------------------------------------------------------------------------ verification
def test_verify_ok_and_cached(repo, monkeypatch):
    path, d = repo
    v = mf.Registry.from_paths([path])["fc"].variant(format="onnx")
    mf.verify(v)
    calls = []
    real = mf.sha256_file
    monkeypatch.setattr(mf, "sha256_file", lambda p, *a: calls.append(p) or real(p))
    mf.verify(v)
    assert calls == []  # same (path, mtime, size): not hashed again
    _bump_mtime(v.path)
    mf.verify(v)
    assert len(calls) == 1


def test_tampered_file_refused_naming_file_and_hashes(repo):
    path, d = repo
    v = mf.Registry.from_paths([path])["fc"].variant(format="onnx")
    mf.verify(v)  # passes and is cached
    data = bytearray(v.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    v.path.write_bytes(bytes(data))
    _bump_mtime(v.path)
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ModelError) as ei:
        mf.load(v)
    msg = str(ei.value)
    assert str(v.path) in msg and v.sha256 in msg and actual in msg
    assert "tampered" in msg and "Refusing" in msg


def test_truncated_file_refused(repo):
    path, d = repo
    v = mf.Registry.from_paths([path])["fc"].variant(format="tflite", precision="fp32")
    data = v.path.read_bytes()
    v.path.write_bytes(data[:100])
    with pytest.raises(ModelError) as ei:
        mf.verify(v)
    msg = str(ei.value)
    assert str(v.path) in msg and v.sha256 in msg and hashlib.sha256(data[:100]).hexdigest() in msg
    assert f"size 100 bytes, expected {len(data)}" in msg


def test_missing_variant_file(repo):
    path, d = repo
    v = mf.Registry.from_paths([path])["fc"].variant(format="onnx")
    v.path.unlink()
    with pytest.raises(ModelError, match=r"fc\.fp32\.onnx not found .*fc:onnx:fp32"):
        mf.load(v)


# ------------------------------------------------------------------------------------ loading
@needs_ort
def test_load_verified_onnx_runs(repo):
    path, d = repo
    m = mf.Registry.from_paths([path])["fc"]
    sess = mf.load(m.variant(format="onnx"), backend="onnxruntime", model=m)
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    y = sess.run({"x": x})["y"]
    np.testing.assert_allclose(y, np.maximum(x @ REF["w"] + REF["b"], 0), rtol=1e-5, atol=1e-5)
    # the model is looked up in the variant's manifest when not given
    assert mf.load(m.variant(format="onnx")) is sess


@needs_litert
def test_load_int8_tflite_with_variant_specs(repo):
    path, d = repo
    m = mf.Registry.from_paths([path])["fc"]
    sess = mf.load(m.variant(format="tflite", precision="int8"))
    assert sess.inputs[0].dtype == np.int8


def test_load_wrong_backend_for_format(repo):
    path, d = repo
    v = mf.Registry.from_paths([path])["fc"].variant(format="tflite")
    with pytest.raises(ModelError, match=r"backend onnxruntime does not read format tflite; use one of \['litert'\]"):
        mf.load(v, backend="onnxruntime")
    with pytest.raises(ModelError, match=r"unknown backend 'tensorflow'"):
        mf.load(v, backend="tensorflow")


@needs_ort
@pytest.mark.parametrize("io, match", [
    ({"inputs": [{"name": "x", "shape": [1, 32], "dtype": "float32"}]}, r"input 'x' has shape \[1, 64\], manifest says \[1, 32\]"),
    ({"inputs": [{"name": "x", "shape": [1, 64], "dtype": "int8"}]}, r"input 'x' has dtype float32, manifest says int8"),
    ({"inputs": [{"name": "audio", "shape": [1, 64], "dtype": "float32"}]}, r"input 'audio' missing"),
    ({"outputs": [{"name": "y", "shape": [-1, 8], "dtype": "float32"}]}, r"output 'y' has shape \[1, 8\], manifest says \[\?, 8\]"),
    ({"outputs": [{"name": "y", "shape": [1, 8], "dtype": "float32"},
                  {"name": "z", "shape": [1], "dtype": "float32"}]}, r"output 'z' missing"),
])
def test_spec_mismatch_refused(tmp_path, io, match):
    shutil.copyfile(MODELS / "gemm_relu_static.onnx", tmp_path / "m.onnx")
    e = mf.manifest_entry(tmp_path / "m.onnx", tmp_path, precision="fp32")
    man = mf.write_manifest(tmp_path / "manifest.toml", {"schema": 1, "models": [_model_dict([e], **io)]})
    clear_cache()
    with pytest.raises(ModelError, match="mismatched model") as ei:
        mf.load(man.models[0].variants[0], backend="onnxruntime")
    assert re_search(match, str(ei.value)) and str(tmp_path / "m.onnx") in str(ei.value)


def re_search(pattern, text):
    import re

    return re.search(pattern, text) is not None


@needs_ort
def test_dynamic_manifest_dim_matches_dynamic_file(tmp_path):
    shutil.copyfile(MODELS / "gemm_relu_dynbatch.onnx", tmp_path / "m.onnx")
    e = mf.manifest_entry(tmp_path / "m.onnx", tmp_path, precision="fp32")
    io = {"inputs": [{"name": "x", "shape": [-1, 64], "dtype": "float32"}],
          "outputs": [{"name": "y", "shape": ["batch", 8], "dtype": "float32"}]}
    man = mf.write_manifest(tmp_path / "manifest.toml", {"schema": 1, "models": [_model_dict([e], **io)]})
    sess = mf.load(man.models[0].variants[0], backend="onnxruntime")
    assert sess.inputs[0].shape == (None, 64)


# ------------------------------------------------------------------------------------ writing
def test_manifest_entry_fields(tmp_path):
    shutil.copyfile(MODELS / "gemm_relu_static.onnx", tmp_path / "a.onnx")
    e = mf.manifest_entry(tmp_path / "a.onnx", tmp_path, precision="int8-static", metrics={"acc": 1})
    assert e == {"format": "onnx", "precision": "int8-static", "path": "a.onnx",
                 "sha256": hashlib.sha256((tmp_path / "a.onnx").read_bytes()).hexdigest(),
                 "size": (tmp_path / "a.onnx").stat().st_size, "metrics": {"acc": 1.0}}
    with pytest.raises(ModelError, match="outside the manifest folder"):
        mf.manifest_entry(MODELS / "gemm_relu_static.onnx", tmp_path, precision="fp32")
    with pytest.raises(ModelError, match="precision 'int3'"):
        mf.manifest_entry(tmp_path / "a.onnx", tmp_path, precision="int3")
    (tmp_path / "m.xml").write_text("<net/>")
    with pytest.raises(ModelError, match=r"weights .*m\.bin not found"):
        mf.manifest_entry(tmp_path / "m.xml", tmp_path, precision="fp32")
    (tmp_path / "m.bin").write_bytes(b"\0" * 16)
    e = mf.manifest_entry(tmp_path / "m.xml", tmp_path, precision="fp16")
    assert e["format"] == "openvino-ir" and e["weights_size"] == 16 and len(e["weights_sha256"]) == 64


def test_write_manifest_round_trip_and_refuses_invalid(repo, tmp_path):
    path, d = repo
    man = mf.load_manifest(path)
    text = path.read_text()
    assert text.startswith("# edge_runtime model manifest")
    again = mf.write_manifest(tmp_path / "copy" / "manifest.toml", man)
    assert again.to_dict() == man.to_dict()
    bad = man.to_dict()
    bad["models"][0]["variants"][0]["precision"] = "int2"
    with pytest.raises(ModelError, match="precision = 'int2'"):
        mf.write_manifest(path, bad)
    assert path.read_text() == text  # untouched
    assert not [f for f in os.listdir(d) if f.startswith(".manifest.toml.tmp")]


def test_upsert_model(tmp_path):
    shutil.copyfile(MODELS / "gemm_relu_static.onnx", tmp_path / "a.onnx")
    e = mf.manifest_entry(tmp_path / "a.onnx", tmp_path, precision="fp32")
    p = tmp_path / "manifest.toml"
    mf.upsert_model(p, _model_dict([e]))
    mf.upsert_model(p, _model_dict([e], name="other"))
    mf.upsert_model(p, _model_dict([e], description="new"))
    man = mf.load_manifest(p)
    assert [m.name for m in man.models] == ["fc", "other"]     # replaced in its place
    assert man.models[0].description == "new"


def test_toml_writer_round_trip():
    data = {"schema": 1, "s": 'quote " back \\ nl \n tab \t é', "f": 0.1, "i": -3, "b": True, "nan_free": 1e-30,
            "l": [1, 2], "ll": [[1], [2, 3]], "flat": {"a": 1, "b": "x"}, "empty": [],
            "inl": [{"name": "x", "shape": [1, -1]}, {"name": "y", "shape": [2]}],
            "t": {"deep": {"deeper": {"k": "v"}}, "x": 1},
            "arr": [{"n": 1, "sub": {"m": 2}, "list": [{"q": 1, "nested": {"z": 1}}]}],
            "weird key.1": {"ok": True}}
    text = dumps(data, header="two\nlines")
    assert text.startswith("# two\n# lines\n")
    assert tomllib.loads(text) == data


# ------------------------------------------------------------------------------------ CLI
def test_cli_models_lists_and_flags_tampered(repo, cli):
    path, d = repo
    r = cli("models", "--manifest", path, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    (m,) = out["models"]
    assert m["name"] == "fc" and m["metrics"] == {"accuracy": 0.9}
    assert [(v["format"], v["precision"], v["sha_ok"]) for v in m["variants"]] == [
        ("onnx", "fp32", True), ("tflite", "fp32", True), ("tflite", "int8", True)]
    assert m["variants"][2]["metrics"] == {"accuracy": 0.88} and m["variants"][2]["size"] > 0
    (d / "fc.int8.tflite").write_bytes(b"x" * 10)
    r = cli("models", "--manifest", path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "SHA MISMATCH" in out and out.count("sha ok") == 2
    assert "fc  [test]  16000 Hz, frame 64 hop 64  accuracy=0.9" in out


def test_cli_models_bad_manifest(tmp_path, cli):
    p = _write(tmp_path, "schema = 7\n")
    r = cli("models", "--manifest", p)
    assert r.returncode == 2
    assert r.stderr.decode().startswith(f"error: {p}: schema = 7; expected 1")


def test_cli_models_empty(tmp_path, cli):
    p = _write(tmp_path, "schema = 1\n")
    r = cli("models", "--manifest", p)
    assert r.returncode == 0 and r.stdout.decode().startswith("no models in")


def test_cli_models_lists_the_shipped_manifest(cli):
    r = cli("models", "--manifest", ROOT / "models_int8" / "manifest.toml")
    out = r.stdout.decode()
    assert r.returncode == 0 and "denoise  [denoise]" in out and "SHA MISMATCH" not in out


def test_ship_vad_metrics_only_updates_metrics_and_keeps_files(tmp_path):
    # a re-measurement of the shipped VAD files replaces the entry's and variants' metrics and
    # evaluated_on; paths, hashes, sizes and the other models stay as they were
    sys.path.insert(0, str(ROOT / "firmware_tools" / "train"))
    import ship_vad

    shutil.copytree(ROOT / "models_int8", tmp_path / "m")
    man = tmp_path / "m" / "manifest.toml"
    before = {m["name"]: m for m in mf.load_manifest(man).to_dict()["models"]}

    def method(f1, ms):
        return {"groups": {"all": {"f1": f1, "precision": 0.9, "recall": 0.8, "auc": 0.93}}, "cpu_ms_per_audio_s": ms}
    results = {"clips": 225, "minutes": 30.0, "methods": {"fp32": method(0.861, 0.65), "silero": method(0.777, 2.5),
                                                          "tflite:fp32": method(0.862, 0.55)}}
    assert ship_vad.update_metrics(str(man), results) == 0
    after = {m["name"]: m for m in mf.load_manifest(man).to_dict()["models"]}
    vad, old = after["vad"], before["vad"]
    assert vad["metrics"]["f1"] == 0.861 and vad["metrics"]["cpu_ms_per_audio_s"] == 0.65
    assert "225 clips" in vad["provenance"]["evaluated_on"]
    by = {(v["format"], v["precision"], v.get("name", "")): v for v in vad["variants"]}
    assert by[("onnx", "fp32", "")]["metrics"]["f1"] == 0.861
    assert by[("tflite", "fp32", "")]["metrics"]["cpu_ms_per_audio_s"] == 0.55
    assert next(v for v in vad["variants"] if v.get("name") == "silero")["metrics"]["f1"] == 0.777
    assert [(v["path"], v["sha256"], v["size"]) for v in vad["variants"]] == \
        [(v["path"], v["sha256"], v["size"]) for v in old["variants"]]
    assert {k: v for k, v in after.items() if k != "vad"} == {k: v for k, v in before.items() if k != "vad"}
    with pytest.raises(SystemExit, match="fp32"):
        ship_vad.update_metrics(str(man), {"clips": 1, "minutes": 1.0, "methods": {}})

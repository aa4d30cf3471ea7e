"""Device profiler: detection (fake device-tree / release files), shipped defaults, choose() logic,
profiling manifest variants (sha256-refused ones reported, never loaded), writing the profile."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from edge_runtime import platform as plat
from edge_runtime.backends import BACKENDS
from edge_runtime.errors import ConfigError
from edge_runtime.models import manifest as mf
from edge_runtime.models import profiler as pf

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "fixtures" / "models"
HAVE = {n: b.available() for n, b in BACKENDS.items()}


# ------------------------------------------------------------------------------------ detection
def _fake_files(monkeypatch, files: dict, machine: str = "aarch64"):
    real_read = plat._read

    def fake(path):
        if path in files:
            return files[path]
        if path.startswith(("/proc/device-tree", "/sys/firmware/devicetree", "/etc/nv_tegra_release")):
            return None
        return real_read(path)

    monkeypatch.setattr(plat, "_read", fake)
    monkeypatch.setattr(plat._platform, "machine", lambda: machine)


@pytest.mark.parametrize("model, expected", [
    ("Raspberry Pi 5 Model B Rev 1.0\x00", "rpi5"),
    ("Raspberry Pi 4 Model B Rev 1.4\x00", "rpi4"),
    ("Raspberry Pi Compute Module 4 Rev 1.0\x00", "rpi4"),
    ("Raspberry Pi 3 Model B Plus Rev 1.3\x00", "rpi4"),  # older Pi: the closest defaults
    ("NVIDIA Jetson Orin Nano Developer Kit\x00", "jetson-orin-nano"),
    ("Pine64 RockPro64\x00", "generic-arm64"),
])
def test_detect_from_device_tree(monkeypatch, model, expected):
    _fake_files(monkeypatch, {"/proc/device-tree/model": model})
    d = pf.describe_device(openvino_devices=[])
    assert d["name"] == expected and pf.detect_device(openvino_devices=[]) == expected
    if expected.startswith("rpi"):
        assert model.strip("\x00") in d["reason"]


def test_detect_jetson_from_release_file(monkeypatch):
    _fake_files(monkeypatch, {"/etc/nv_tegra_release": "# R36 (release), REVISION: 3.0, GCID: 1\n"})
    d = pf.describe_device(openvino_devices=[])
    assert d["name"] == "jetson-orin-nano" and "R36" in d["reason"]


def test_detect_x86_with_and_without_npu(monkeypatch):
    _fake_files(monkeypatch, {}, machine="x86_64")
    assert pf.detect_device(openvino_devices=["CPU", "GPU"]) == "generic-x86"
    d = pf.describe_device(openvino_devices=["CPU", "GPU", "NPU"])
    assert d["name"] == "intel-npu" and "NPU" in d["reason"]
    # OpenVINO's own device list is asked when none is given
    monkeypatch.setattr(pf, "_openvino_devices", lambda: ["CPU", "NPU"])
    assert pf.detect_device() == "intel-npu"


def test_detect_from_info_dict():
    info = {"board": {"kind": "generic", "model": None}, "cpu": {"machine": "riscv64", "model": "x"}}
    assert pf.detect_device(info) == "generic-arm64"  # not x86, no known board
    assert pf.detect_device({"board": {"kind": "x86"}, "cpu": {}}, openvino_devices=["NPU.3720"]) == "intel-npu"


def test_detect_this_machine():
    assert pf.detect_device() in pf.DEVICES


# ------------------------------------------------------------------------------------ defaults
@pytest.mark.parametrize("name", pf.DEVICES)
def test_shipped_device_defaults(name):
    d = pf.load_device_defaults(name)
    assert d["name"] == name and d["threads"] >= 1 and d["backends"] and d["precisions"]
    assert d["alsa"]["period_frames"] >= 1 and d["alsa"]["periods"] >= 2 and d["notes"]
    assert Path(d["path"]).parent == ROOT / "configs" / "devices"


def test_device_defaults_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_RUNTIME_DEVICES", str(tmp_path))
    (tmp_path / "rpi4.toml").write_text('name = "rpi4"\nthreads = 0\n')
    with pytest.raises(ConfigError, match=r"rpi4.toml: threads = 0; expected an integer 1..256"):
        pf.load_device_defaults("rpi4")
    (tmp_path / "rpi4.toml").write_text('name = "rpi4"\nbackends = ["tensorflow"]\n')
    with pytest.raises(ConfigError, match=r"backends = \['tensorflow'\]; expected an array of"):
        pf.load_device_defaults("rpi4")
    (tmp_path / "rpi4.toml").write_text('name = "rpi4"\n[alsa]\nperiod_ms = 5\n')
    with pytest.raises(ConfigError, match=r"alsa.period_ms: unknown key"):
        pf.load_device_defaults("rpi4")
    (tmp_path / "rpi4.toml").write_text('name = "rpi4"\n[models]\ndenoise = "onnx/fp32"\n')
    with pytest.raises(ConfigError, match=r"models = .*expected a table model = \[\"format/precision"):
        pf.load_device_defaults("rpi4")
    with pytest.raises(ConfigError, match=r"no device profile 'toaster'"):
        pf.load_device_defaults("toaster")


def test_per_model_defaults_come_before_the_precision_order(tmp_path, monkeypatch):
    from edge_runtime.backends import BACKENDS
    from edge_runtime.models import default_registry
    from edge_runtime.models.select import resolve_variants

    monkeypatch.setenv("EDGE_RUNTIME_DEVICES", str(tmp_path))
    monkeypatch.setenv("EDGE_RUNTIME_STATE", str(tmp_path / "state"))   # no measured profile
    (tmp_path / "generic-x86.toml").write_text(
        'name = "generic-x86"\nprecisions = ["int8-static", "fp32"]\n'
        '[models]\ndenoise = ["onnx/nope", "tflite/int8-dynamic@litert", "onnx/fp16@onnxruntime"]\n')
    model = default_registry()["denoise"]
    got = resolve_variants(model, device="generic-x86")[0]
    # an entry that is not shipped is skipped; the first whose backend is installed wins
    want = "tflite/int8-dynamic@litert" if BACKENDS["litert"].available() else "onnx/fp16@onnxruntime"
    assert got.label == want and got.source.endswith("[models] denoise")
    # a forced backend skips entries for other backends
    assert resolve_variants(model, backend="onnxruntime", device="generic-x86")[0].label == "onnx/fp16@onnxruntime"
    # models without an entry follow the precision order
    assert resolve_variants(default_registry()["vad"], device="generic-x86")[0].label == "onnx/int8-static@onnxruntime"


# ------------------------------------------------------------------------------------ choose
def _r(precision, median, p99, drop, fmt="onnx", backend="onnxruntime", model="den", **kw):
    return dict(model=model, format=fmt, precision=precision, backend=backend, median_us=median, p99_us=p99,
                load_ms=5.0, rss_mb=3.0, quality_drop=drop, **kw)


RESULTS = [
    _r("fp32", 200, 250, 0.0),
    _r("fp16", 150, 180, 0.004),
    _r("int8-static", 80, 100, 0.03),
    _r("int8-dynamic", 220, 260, 0.002),
]


def test_choose_fastest_within_budget_and_quality():
    c = pf.choose(RESULTS, budget_ms=1.0, max_quality_drop=0.01)["den"]
    assert c["chosen"] == "onnx/fp16@onnxruntime" and c["within_budget"] and c["quality_ok"]
    assert c["ladder"] == ["onnx/int8-static@onnxruntime"]  # next cheaper first


def test_choice_changes_with_budget():
    picks = {b: pf.choose(RESULTS, budget_ms=b, max_quality_drop=0.01)["den"] for b in (1.0, 0.2, 0.12, 0.05)}
    assert picks[1.0]["chosen"] == "onnx/fp16@onnxruntime"
    assert picks[0.2]["chosen"] == "onnx/fp16@onnxruntime"   # p99 180 us fits 200 us
    # nothing within the quality limit fits 120 us: real time wins, flagged
    assert picks[0.12]["chosen"] == "onnx/int8-static@onnxruntime"
    assert picks[0.12]["within_budget"] and picks[0.12]["quality_ok"] is False
    # nothing fits 50 us: the fastest, flagged over budget
    assert picks[0.05]["chosen"] == "onnx/int8-static@onnxruntime" and not picks[0.05]["within_budget"]


def test_choice_changes_with_quality_limit():
    assert pf.choose(RESULTS, 1.0, max_quality_drop=0.05)["den"]["chosen"] == "onnx/int8-static@onnxruntime"
    assert pf.choose(RESULTS, 1.0, max_quality_drop=None)["den"]["chosen"] == "onnx/int8-static@onnxruntime"
    assert pf.choose(RESULTS, 1.0, max_quality_drop=0.003)["den"]["chosen"] == "onnx/fp32@onnxruntime"
    # a limit of 0 leaves fp32 only
    assert pf.choose(RESULTS, 1.0, max_quality_drop=0.0)["den"]["chosen"] == "onnx/fp32@onnxruntime"


def test_choose_budget_uses_p99_by_default():
    rs = [_r("fp32", 100, 900, 0.0), _r("fp16", 300, 400, 0.0)]
    assert pf.choose(rs, 0.5, 0.01)["den"]["chosen"] == "onnx/fp16@onnxruntime"
    assert pf.choose(rs, 0.5, 0.01, by="median_us")["den"]["chosen"] == "onnx/fp32@onnxruntime"


def test_choose_unknown_quality_errors_and_models():
    rs = [_r("fp32", 200, 220, 0.0), _r("int8", 50, 60, None, fmt="tflite", backend="litert"),
          _r("int8-static", 10, 12, 0.0, error="sha256 mismatch"),
          _r("fp32", 30, 40, 0.0, model="vad", backend="openvino"),
          _r("fp32", 10, 12, 0.0, model="kws", error="corrupt")]
    c = pf.choose(rs, 1.0, 0.01)
    assert c["den"]["chosen"] == "onnx/fp32@onnxruntime"  # unknown quality is not within a limit
    assert pf.choose(rs, 1.0, None)["den"]["chosen"] == "tflite/int8@litert"
    assert c["vad"]["chosen"] == "onnx/fp32@openvino"
    assert c["kws"]["chosen"] is None and "corrupt" in c["kws"]["reason"]
    only_unknown = pf.choose([_r("int8", 50, 60, None)], 1.0, 0.01)["den"]
    assert only_unknown["chosen"] == "onnx/int8@onnxruntime" and only_unknown["quality_ok"] is None


# ------------------------------------------------------------------------------------ profiling
@pytest.fixture
def manifest(tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    shutil.copyfile(MODELS / "gemm_relu_static.onnx", d / "fc.onnx")
    shutil.copyfile(MODELS / "fc_relu_float.tflite", d / "fc.tflite")
    shutil.copyfile(MODELS / "fc_relu_int8.tflite", d / "fc.int8.tflite")
    io = {"inputs": [{"name": "x", "shape": [1, 64], "dtype": "float32"}],
          "outputs": [{"name": "y", "shape": [1, 8], "dtype": "float32"}]}
    io8 = {k: [dict(s, dtype="int8") for s in v] for k, v in io.items()}
    variants = [mf.manifest_entry(d / "fc.onnx", d, precision="fp32", metrics={"snr_db": 40.0}),
                mf.manifest_entry(d / "fc.tflite", d, precision="fp32", metrics={"snr_db": 40.0}),
                mf.manifest_entry(d / "fc.int8.tflite", d, precision="int8", metrics={"snr_db": 31.0}, **io8)]
    man = mf.write_manifest(d / "manifest.toml", {"schema": 1, "models": [
        {"name": "fc", "task": "test", **io, "metrics": {"snr_db": 40.0}, "variants": variants}]})
    mf.clear_verify_cache()
    yield man, d
    mf.clear_verify_cache()


@pytest.mark.skipif(not HAVE["litert"], reason="litert not installed")
def test_profile_manifest_variants_refuses_tampered(manifest):
    man, d = manifest
    (d / "fc.tflite").write_bytes((d / "fc.tflite").read_bytes()[:-8])  # truncated
    seen = []
    results = pf.profile_models(man.models, runs=10, warmup=2, isolate=False, on_result=seen.append)
    assert seen == results
    by = {pf.variant_label(r): r for r in results}
    bad = by["tflite/fp32@litert"]
    assert "failed verification" in bad["error"] and str(d / "fc.tflite") in bad["error"]
    assert bad["median_us"] is None
    good = by["tflite/int8@litert"]
    assert good["quality_drop"] == pytest.approx(9.0) and good["metric"] == "snr_db" and good["median_us"] > 0
    if HAVE["onnxruntime"]:
        assert by["onnx/fp32@onnxruntime"]["quality_drop"] == 0.0
    if HAVE["openvino"]:
        assert by["onnx/fp32@openvino"]["load_ms"] > 0
    c = pf.choose(results, budget_ms=10, max_quality_drop=1.0)["fc"]
    assert c["precision"] == "fp32" and c["chosen"] != "tflite/fp32@litert"
    assert pf.choose(results, budget_ms=10, max_quality_drop=10.0)["fc"]["chosen"] in (
        pf.variant_label(min((r for r in results if not r.get("error")), key=lambda r: r["median_us"])),)


def test_write_and_load_profile(tmp_path, monkeypatch):
    choices = pf.choose(RESULTS, 1.0, 0.01)
    p = pf.write_profile("rpi5", RESULTS, choices, device_info={"reason": "test", "cores": 4, "cpu": None},
                         settings={"threads": 1, "budget_ms": 1.0}, state_dir_=tmp_path / "state")
    assert p == tmp_path / "state" / "profiles" / "rpi5.toml"
    data = pf.load_profile(p)
    assert data["schema"] == 1 and data["device"] == "rpi5" and data["host"] == {"reason": "test", "cores": 4}
    assert data["choices"]["den"]["chosen"] == "onnx/fp16@onnxruntime"
    assert data["choices"]["den"]["ladder"] == ["onnx/int8-static@onnxruntime"]
    assert [r["precision"] for r in data["results"]] == [r["precision"] for r in RESULTS]
    assert not [f for f in os.listdir(p.parent) if f.startswith(".")]  # no temp file left
    # default state folders
    monkeypatch.setenv("EDGE_RUNTIME_STATE", str(tmp_path / "s1"))
    assert pf.profile_path("rpi4") == tmp_path / "s1" / "profiles" / "rpi4.toml"
    monkeypatch.delenv("EDGE_RUNTIME_STATE")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert pf.profile_path("rpi4") == tmp_path / "xdg" / "edge_runtime" / "profiles" / "rpi4.toml"
    assert pf.profile_path("rpi4", service=True) == Path("/var/lib/edge_runtime/profiles/rpi4.toml")


def test_write_profile_unwritable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot write the device profile"):
        pf.write_profile("rpi4", [], {}, state_dir_=blocker)


# ------------------------------------------------------------------------------------ CLI
def test_cli_profile_pipeline_without_ml_nodes(cli, tmp_path):
    r = cli("profile", "speech16k", env={"EDGE_RUNTIME_STATE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert out.startswith("device       ") and "pipeline     speech16k" in out
    assert "has no ML nodes: no models to profile" in out
    assert not (tmp_path / "profiles").exists()


def test_cli_profile_nothing_to_profile_json(cli, tmp_path):
    r = cli("profile", "speech16k", "--json", "--device", "rpi4", env={"EDGE_RUNTIME_STATE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["device"] == "rpi4" and rep["results"] == [] and "no ML nodes" in rep["message"]
    assert rep["pipeline"]["budget_ms"] == pytest.approx(10.0)


@pytest.mark.skipif(not HAVE["onnxruntime"], reason="onnxruntime not installed")
def test_cli_profile_model_files(cli, tmp_path):
    r = cli("profile", "--model", MODELS / "gemm_relu_static.onnx", "--backends", "onnxruntime",
            "--runs", 10, "--warmup", 2, "--budget-ms", 5, "--json", "--in-process",
            env={"EDGE_RUNTIME_STATE": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    (res,) = rep["results"]
    assert res["backend"] == "onnxruntime" and res["precision"] == "fp32" and res["median_us"] > 0
    assert rep["choices"]["gemm_relu_static"]["chosen"] == "onnx/fp32@onnxruntime"
    p = Path(rep["profile_path"])
    assert p == tmp_path / "profiles" / f"{rep['device']}.toml"
    assert tomllib.loads(p.read_text())["choices"]["gemm_relu_static"]["backend"] == "onnxruntime"
    r = cli("profile", "--model", MODELS / "gemm_relu_static.onnx", "--backends", "onnxruntime",
            "--runs", 5, "--warmup", 1, "--no-write", "--in-process", env={"EDGE_RUNTIME_STATE": str(tmp_path / "n")})
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "*  gemm_relu_static  onnx/fp32@onnxruntime" in out and not (tmp_path / "n").exists()


def test_cli_profile_errors(cli, tmp_path):
    r = cli("profile", "nope-pipeline")
    assert r.returncode == 2 and b"unknown pipeline 'nope-pipeline'" in r.stderr
    r = cli("profile", "--device", "toaster", "speech16k")
    assert r.returncode == 2 and b"no device profile 'toaster'" in r.stderr

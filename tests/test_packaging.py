"""Packaging: the sdist carries everything a wheel needs, a wheel built from it installs into a
clean venv and runs `edge-runtime demo` there, and an incomplete source tree fails to build.

The default run builds the sdist only (about 10 s: an isolated build env, Cython once); the
wheel round trip compiles the kernels and installs the runtime dependencies into a new venv
(minutes), so it is marked ``slow``: ``python -m pytest -m slow tests/test_packaging.py``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what build_py copies into the package and the kernels it compiles: all must be in the sdist
SHIPPED_DIRS = ("kernels", "configs", "models_int8", "edge_runtime/_demo")
KERNELS = sorted(p.stem for p in (ROOT / "kernels").glob("*.pyx"))
LEARN_HINT = "pip install 'edge-runtime[learn]'"

pytestmark = pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                                reason="needs the git checkout (the sdist is built from its files)")


def _tracked(prefix: str = "") -> list[str]:
    """Files a fresh clone would have (tracked, plus untracked ones git does not ignore)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "--", prefix or "."], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def _clean_copy(dest: Path, drop=lambda rel: False) -> Path:
    """The working tree as a fresh clone would have it: no build/, no generated .c or .so."""
    for rel in _tracked():
        if not drop(rel):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


def _build(args, cwd, timeout):
    """``python -m build ARGS`` (isolated build envs, as pip and cibuildwheel build)."""
    return subprocess.run([sys.executable, "-m", "build", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    """The sdist of a clean copy of the working tree."""
    pytest.importorskip("build", reason="python -m build is in the dev extra")
    tmp = tmp_path_factory.mktemp("sdist")
    src = _clean_copy(tmp / "src")
    r = _build(["--sdist", "--outdir", str(tmp / "dist"), str(src)], tmp, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (path,) = (tmp / "dist").glob("edge_runtime-*.tar.gz")
    return path


def test_sdist_ships_kernel_sources_configs_models_and_demo_clips(sdist):
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    want = {f for d in SHIPPED_DIRS for f in _tracked(d)} | {"setup.py", "pyproject.toml", "MANIFEST.in",
                                                             "README.md", "LICENSE"}
    assert not want - names, f"missing from the sdist: {sorted(want - names)}"
    assert {f"kernels/{k}.pyx" for k in KERNELS} <= names and any(n.endswith(".pxd") for n in names)
    # generated C (Cython regenerates it) and build outputs never ship
    assert not [n for n in names if n.endswith((".c", ".so", ".pyc"))]
    with tarfile.open(sdist) as tf:
        pkg_info = tf.extractfile(next(m for m in tf.getmembers() if m.name.endswith("/PKG-INFO"))).read().decode()
    assert "License-Expression: Apache-2.0" in pkg_info and "License-File: LICENSE" in pkg_info
    # scikit-learn only behind the learn extra: a plain install runs every audio pipeline without it
    requires = [ln.split(":", 1)[1].strip() for ln in pkg_info.splitlines() if ln.startswith("Requires-Dist:")]
    assert [r for r in requires if r.startswith("scikit-learn")] == ["scikit-learn>=1.3; extra == \"learn\""]
    assert not [r for r in requires if r.startswith("scipy") and "extra" not in r]


def _so_files(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as z:
        return {n: z.read(n) for n in z.namelist() if n.endswith(".so")}


@pytest.mark.slow
def test_wheel_from_the_sdist_runs_the_demo_in_a_clean_venv(sdist, tmp_path):
    """sdist -> wheel (isolated build) -> new venv -> `edge-runtime demo` outside the repo."""
    unpacked = tmp_path / "unpacked"
    with tarfile.open(sdist) as tf:
        if hasattr(tarfile, "data_filter"):
            tf.extractall(unpacked, filter="data")
        else:  # Python < 3.10.12 / 3.11.4
            tf.extractall(unpacked)
    (src,) = unpacked.iterdir()
    r = _build(["--wheel", "--outdir", str(tmp_path / "wheels"), str(src)], tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    assert not wheel.name.endswith("-none-any.whl"), wheel.name   # compiled, not pure Python
    so = _so_files(wheel)
    assert sorted(Path(n).name.split(".")[0] for n in so) == KERNELS
    # release builds are stripped: no DWARF sections (their names sit in the section-name table)
    assert not [n for n, data in so.items() if b".debug_info" in data], "the .so files carry debug info"
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert {"edge_runtime/_configs/pipelines/default.toml", "edge_runtime/_models/manifest.toml",
            "edge_runtime/_demo/speech_noisy.flac"} <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", str(wheel)],
                         capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "EDGE_RUNTIME_PIPELINES", "EDGE_RUNTIME_MODELS", "VIRTUAL_ENV")}
    env["EDGE_RUNTIME_STATE"] = str(tmp_path / "state")
    run_dir = tmp_path / "run"   # outside the repository: nothing can come from the source tree
    run_dir.mkdir()
    exe = str(venv / "bin" / "edge-runtime")
    demo = subprocess.run([exe, "demo", "--json"], cwd=run_dir, env=env, capture_output=True, text=True,
                          timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    sp = json.loads(demo.stdout.strip().splitlines()[-1])["speech"]["effects"]
    # the shipped denoiser ran from the installed package (measured +5.0 -> +9.0 dB; 2 dB is margin)
    assert sp["si_sdr_out_db"] > sp["si_sdr_in_db"] + 2.0, sp
    assert (run_dir / "edge_runtime_demo" / "demo_speech_denoised.wav").is_file()
    # a plain install is lean: no scikit-learn, no SciPy; learning says which extra to install
    py = str(venv / "bin" / "python")
    for mod in ("sklearn", "scipy"):
        assert subprocess.run([py, "-c", f"import {mod}"], capture_output=True, timeout=60).returncode != 0, mod
    learn = subprocess.run([exe, "anomaly", "learn", "-i", str(run_dir / "edge_runtime_demo" / "demo_input.wav"),
                            "-o", str(run_dir / "m.state")], cwd=run_dir, env=env, capture_output=True, text=True,
                           timeout=300)
    assert learn.returncode != 0 and LEARN_HINT in learn.stderr, learn.stderr
    assert not (run_dir / "m.state").exists()


@pytest.mark.slow
def test_a_tree_without_the_kernel_sources_does_not_build(tmp_path):
    """The old sdist's failure (no .pyx: a pure-Python wheel without edge_runtime._engine) is now
    a build error that says what is missing."""
    pytest.importorskip("build", reason="python -m build is in the dev extra")
    src = _clean_copy(tmp_path / "src", drop=lambda rel: rel.startswith("kernels/"))
    r = _build(["--wheel", "--outdir", str(tmp_path / "wheels"), str(src)], tmp_path, timeout=300)
    assert r.returncode != 0
    assert "no Cython kernels (kernels/*.pyx)" in r.stdout + r.stderr
    assert not list((tmp_path / "wheels").glob("*.whl"))

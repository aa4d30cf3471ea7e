"""The Python API (edge_runtime.api): the same pipelines as the TOML, on arrays."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT


def test_whole_signal_matches_the_cli_pipeline_and_keeps_shape_and_rate():
    from edge_runtime.api import Pipeline, nodes

    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((22050, 2))).astype(np.float32)
    p = Pipeline([nodes.HighPass(80, order=4), nodes.Gain(-6), nodes.Limiter(-1)], sample_rate=48000, block_size=480)
    y = p.process(x, 22050)                  # another rate: converted at the edge, back at 22.05 kHz
    assert y.shape == x.shape and y.dtype == np.float32
    ratio = np.sqrt(np.mean(y[2000:] ** 2) / np.mean(x[2000:] ** 2))
    assert 0.4 < ratio < 0.55                # -6 dB (and a little less below 80 Hz)
    mono = p.process(x[:, 0], 22050)
    assert mono.shape == (22050,)


def test_streaming_equals_the_whole_signal_and_is_latency_late():
    from edge_runtime.api import Pipeline, nodes

    x = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    p = Pipeline([nodes.Gain(-3), nodes.Limiter(-6, lookahead_ms=2)], sample_rate=16000, block_size=160)
    whole = p.process(x, 16000)
    blocks = np.concatenate([p.process(x[i:i + 320], 16000, reset=False) for i in range(0, 16000, 320)])
    lat = p.latency_samples
    assert lat == 32 and np.allclose(blocks[lat:], whole[:len(x) - lat], atol=1e-6)
    with pytest.raises(ValueError, match="a multiple of the block size 160"):
        p.process(x[:100], 16000, reset=False)


def test_nodes_are_checked_like_the_toml_and_round_trip():
    from edge_runtime.api import Pipeline, nodes
    from edge_runtime.errors import ConfigError

    with pytest.raises(ConfigError, match=r"nodes\[0\].gain_db = 400.0 is outside -120..60"):
        nodes.Gain(400)
    with pytest.raises(ConfigError, match="unknown parameter for denoise"):
        nodes.Denoise(strenght=0.5)
    p = Pipeline([nodes.HighPass(120), nodes.Denoise(strength=0.8), nodes.Limiter(-1)], sample_rate=16000,
                 block_size=160)
    text = p.to_toml()
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
    q = Pipeline.from_toml(f.name)
    assert q.to_toml() == text
    shipped = Pipeline.from_toml("denoise")
    assert [type(n).__name__ for n in shipped.nodes] == ["Denoise"]
    assert "atten_limit_db" in nodes.Denoise.__doc__ and "0..1" in nodes.Denoise.__doc__
    assert {"HighPass", "Denoise", "Vad", "Classify", "Declip", "Bwe", "Route", "Anomaly"} <= set(dir(nodes))


def test_events_are_python_objects():
    from edge_runtime.api import Pipeline, nodes
    from edge_runtime.engine import Event

    p = Pipeline([nodes.Meter(100)], sample_rate=16000, block_size=160)
    p.process(np.full(16000, 0.25, np.float32), 16000)
    assert p.events and all(isinstance(e, Event) for e in p.events)
    assert {e.event for e in p.events} >= {"peak_dbfs"}


def test_models_are_listed():
    from edge_runtime.api import available_models

    names = {m["name"] for m in available_models()}
    assert {"denoise", "vad", "classify", "bwe"} <= names
    from edge_runtime.models import available

    assert {m["name"] for m in available(check=True)} == names


def test_example_runs(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "denoise_file.py"), str(ROOT / "edge_runtime/_demo/speech_noisy.flac"),
                        str(tmp_path / "out.wav")], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "equals the whole-file result: True" in r.stdout and (tmp_path / "out.wav").exists()

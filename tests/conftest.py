import gc
import os
import subprocess
import tempfile
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Hermetic model choices: a device profile measured on this machine (`edge-runtime profile`, in
# the user's state folder) would change which variant "auto" picks; tests that want one write it.
os.environ["EDGE_RUNTIME_STATE"] = tempfile.mkdtemp(prefix="edge_runtime_test_state_")


def run_cli(*args, env=None, input_bytes=None, cwd=None):
    """Run ``python -m edge_runtime ARGS`` in a subprocess; returns CompletedProcess."""
    e = dict(os.environ)
    e.pop("EDGE_RUNTIME_PIPELINES", None)
    # the package under test, whatever the working directory of the command
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "edge_runtime", *map(str, args)],
                          capture_output=True, input=input_bytes, env=e, cwd=cwd, timeout=300)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def write_wav(path, audio, sample_rate, subtype="FLOAT"):
    import soundfile as sf

    sf.write(str(path), np.asarray(audio, dtype=np.float32), sample_rate, subtype=subtype)
    return path


def node_growth(node, x, block, warmup=10, passes=20):
    """Bytes newly held (the positive per-file differences of two tracemalloc snapshots) after
    ``passes`` runs of ``node.process`` over ``x`` (channels, samples) in ``block``-sample
    blocks, after ``warmup`` untraced blocks: what a node allocates and keeps in steady state."""
    out = np.zeros((x.shape[0], block), np.float32)
    blocks = [np.ascontiguousarray(x[:, i:i + block]) for i in range(0, x.shape[1] - block + 1, block)]
    for b in blocks[:warmup]:
        node.process(b, out)
    tracemalloc.start()
    try:
        snap0 = tracemalloc.take_snapshot()
        for _ in range(passes):
            for b in blocks:
                node.process(b, out)
        snap1 = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(s.size_diff for s in snap1.compare_to(snap0, "filename") if s.size_diff > 0)


def traced(step, n, warmup=200):
    """Bytes (retained, peak) allocated over ``n`` calls of ``step``, after ``warmup`` untraced
    calls (caches, first-call allocations), as tracemalloc sees them."""
    for _ in range(warmup):
        step()
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(n):
            step()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before, peak - before

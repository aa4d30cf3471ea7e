"""Engine benchmarks: per-node overhead, Cython chain vs NumPy/SciPy loop, default pipeline RTF.

    python firmware_tools/bench/bench_engine.py [--json OUT.json] [--seconds 60]

Pinned to one CPU core. Prints a Markdown table (paste it as is into notes and the README).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from edge_runtime import filters  # noqa: E402
from edge_runtime.engine import Pipeline  # noqa: E402
from edge_runtime.nodes import Gain, Identity, Meter, SosFilter  # noqa: E402


def _best_of(fn, repeats=7):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return min(times)


def per_block_ns(pipe: Pipeline, blocks: int) -> tuple[float, float]:
    """(ns per block in the compiled loop, ns per block called one by one from Python)."""
    chain = pipe._chain
    chain.run_many(blocks // 10)
    compiled = _best_of(lambda: chain.run_many(blocks)) / blocks
    step = pipe.process_block

    def loop():
        for _ in range(blocks):
            step()
    from_python = _best_of(loop) / blocks
    return compiled, from_python


def bench_overhead(sample_rate: int, block: int, blocks: int = 20000) -> dict:
    res = {}
    for n in (0, 1, 5, 20):
        pipe = Pipeline([Identity() for _ in range(n)], sample_rate=sample_rate, block_size=block)
        pipe.prepare(1)
        res[n] = per_block_ns(pipe, blocks)
    slope = (res[20][0] - res[0][0]) / 20
    return {"rate": sample_rate, "block": block, "empty_ns": res[0][0], "one_ns": res[1][0],
            "five_ns": res[5][0], "twenty_ns": res[20][0], "per_node_ns": slope,
            "per_block_from_python_ns": res[5][1]}


def dsp_chain(sr: int) -> list:
    return [SosFilter(kind="highpass", cutoff_hz=80, order=4),
            SosFilter(kind="peak", cutoff_hz=3000, q=1.0, gain_db=4.0),
            SosFilter(kind="highshelf", cutoff_hz=6000, gain_db=-3.0),
            Gain(gain_db=3.0),
            Meter(interval_ms=1000)]


class NumpyChain:
    """The same 5 nodes as a per-block NumPy/SciPy loop (scipy's compiled sosfilt with zi)."""

    def __init__(self, sr: int, block: int, channels: int):
        import scipy.signal as ss

        self.ss = ss
        self.sos = [filters.design(sample_rate=sr, kind="highpass", cutoff_hz=80, order=4),
                    filters.design(sample_rate=sr, kind="peak", cutoff_hz=3000, q=1.0, gain_db=4.0),
                    filters.design(sample_rate=sr, kind="highshelf", cutoff_hz=6000, gain_db=-3.0)]
        self.zi = [np.zeros((s.shape[0], channels, 2)) for s in self.sos]
        self.gain = np.float32(10 ** (3 / 20))
        self.peak = np.zeros(channels, np.float32)
        self.sumsq = np.zeros(channels)

    def process(self, x: np.ndarray) -> np.ndarray:
        for i, sos in enumerate(self.sos):
            x, self.zi[i] = self.ss.sosfilt(sos, x, axis=1, zi=self.zi[i])
        x = (x * self.gain).astype(np.float32)
        np.maximum(self.peak, np.abs(x).max(axis=1), out=self.peak)
        self.sumsq += np.einsum("ij,ij->i", x, x)
        return x


def bench_chain(sr: int, block: int, channels: int = 2, seconds: float = 20.0) -> dict:
    blocks = int(seconds * sr / block)
    pipe = Pipeline(dsp_chain(sr), sample_rate=sr, block_size=block)
    pipe.prepare(channels)
    pipe.input[...] = np.random.default_rng(0).standard_normal((channels, block)).astype(np.float32)
    cy, cy_py = per_block_ns(pipe, blocks)
    ref = NumpyChain(sr, block, channels)
    x = pipe.input.copy()

    def loop():
        for _ in range(blocks):
            ref.process(x)
    ref.process(x)
    np_ns = _best_of(loop, 3) / blocks
    # both compute the same thing: check on a fresh chain
    a = Pipeline(dsp_chain(sr), sample_rate=sr, block_size=block).process_array(
        np.tile(x, 10), compensate_latency=False)
    r2 = NumpyChain(sr, block, channels)
    b = np.concatenate([r2.process(x) for _ in range(10)], axis=1)
    err = float(np.max(np.abs(a - b)))
    return {"rate": sr, "block": block, "channels": channels, "cython_ns": cy,
            "cython_from_python_ns": cy_py, "numpy_ns": np_ns, "speedup": np_ns / cy,
            "speedup_from_python": np_ns / cy_py, "max_abs_diff": err}


def bench_default_rtf(seconds: float) -> dict:
    from edge_runtime.config import load_pipeline
    from edge_runtime.demo import make_clip
    from edge_runtime.io import FileSink, FileSource
    from edge_runtime.runner import run_stream

    pipe = load_pipeline("default")
    sr = pipe.sample_rate
    with tempfile.TemporaryDirectory() as d:
        src_path = os.path.join(d, "in.wav")
        clip = make_clip(sr, seconds=6.0)
        reps = int(np.ceil(seconds / 6.0))
        with FileSink(src_path, sr, 2, subtype="PCM_16") as sink:
            for _ in range(reps):
                sink.write(np.clip(clip, -1, 1))
        out_path = os.path.join(d, "out.wav")
        with FileSource(src_path) as src:
            sink = FileSink(out_path, sr, 2)
            summary = run_stream(pipe, src, sink)
            sink.close()
    return {"audio_s": summary.duration_s, "wall_s": summary.wall_s,
            "speed_x": summary.speed, "file_rtf": summary.wall_s / summary.duration_s,
            "engine_rtf": summary.realtime_factor, "block_us_p50": summary.block_ms_p50 * 1e3,
            "block_us_p99": summary.block_ms_p99 * 1e3, "block_us_max": summary.block_ms_max * 1e3,
            "deadline_misses": summary.deadline_misses, "blocks": summary.blocks}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the RTF test file")
    ap.add_argument("--cpu", type=int, default=None, help="core to pin to (default: the first allowed)")
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        cpu = args.cpu if args.cpu is not None else sorted(os.sched_getaffinity(0))[0]
        os.sched_setaffinity(0, {cpu})
    from edge_runtime.platform import cpu_info

    info = cpu_info()
    results = {
        "machine": f"{info['model']} ({platform.machine()}), Python {platform.python_version()}, "
                   f"NumPy {np.__version__}, one core",
        "overhead": [bench_overhead(16000, 160), bench_overhead(48000, 480)],
        "chain": [bench_chain(16000, 160), bench_chain(48000, 480)],
        "default_rtf": bench_default_rtf(args.seconds),
    }
    print(f"Command: `python firmware_tools/bench/bench_engine.py`  \nMachine: {results['machine']}\n")
    print("| engine overhead (identity nodes) | empty chain | 1 node | 5 nodes | 20 nodes | per node | 5 nodes, block called from Python |")
    print("|---|---|---|---|---|---|---|")
    for o in results["overhead"]:
        print(f"| {o['rate'] // 1000} kHz / {o['block']} | {o['empty_ns'] / 1e3:.3f} µs | {o['one_ns'] / 1e3:.3f} µs | "
              f"{o['five_ns'] / 1e3:.3f} µs | {o['twenty_ns'] / 1e3:.3f} µs | **{o['per_node_ns'] / 1e3:.3f} µs** | "
              f"{o['per_block_from_python_ns'] / 1e3:.3f} µs |")
    print()
    print("| 5-node DSP chain, stereo (HP4, peak, shelf, gain, meter) | Cython loop | Cython, block called from Python | NumPy/SciPy loop | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|")
    for c in results["chain"]:
        print(f"| {c['rate'] // 1000} kHz / {c['block']} | {c['cython_ns'] / 1e3:.2f} µs | "
              f"{c['cython_from_python_ns'] / 1e3:.2f} µs | {c['numpy_ns'] / 1e3:.2f} µs | "
              f"**{c['speedup']:.1f}×** ({c['speedup_from_python']:.1f}× from Python) | {c['max_abs_diff']:.1e} |")
    print()
    d = results["default_rtf"]
    print("| default pipeline (48 kHz stereo, file to file) | audio | wall | speed | file RTF | engine RTF | block p50 / p99 / max | deadline misses |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| `edge-runtime run default` | {d['audio_s']:.0f} s | {d['wall_s']:.2f} s | {d['speed_x']:.0f}× | "
          f"{d['file_rtf']:.4f} | {d['engine_rtf']:.4f} | {d['block_us_p50']:.1f} / {d['block_us_p99']:.1f} / "
          f"{d['block_us_max']:.1f} µs | {d['deadline_misses']} / {d['blocks']} |")
    if args.json:
        from edge_runtime.atomic import write_bytes

        write_bytes(args.json, json.dumps(results, indent=2).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Model-layer benchmarks (issue 3): overhead vs the backend called directly, cold load and RSS
per shipped variant, INT8 vs FP32 latency.

    python firmware_tools/bench/bench_models.py [--rounds 7] [--calls 2000] [--json out.json]

1. **Overhead.** The same model file and input through the model layer (``load_session`` ->
   ``bind`` -> ``Binding.run()``) and through the backend library called directly in its
   fastest documented way (ONNX Runtime: ``InferenceSession.run_with_iobinding`` on OrtValues
   over the same arrays, and the plain ``sess.run(None, feeds)``; OpenVINO: ``InferRequest.infer()``
   on shared tensors; LiteRT: ``set_tensor`` / ``invoke`` / ``get_tensor``). Models: a trivial one
   (``tests/fixtures/models/add_mul.onnx``, ``fc_relu_float.tflite``) and a ~1 ms one made here
   (eight 1024x1024 MatMul+Relu, written with ``onnx.helper``). Calls are interleaved in
   ``--rounds`` rounds of ``--calls`` calls, in alternating order; the median of the round medians
   is reported.
2. **Cold load and RSS** of every shipped variant, each in a fresh process
   (``edge_runtime.models.bench.measure``, one thread): load time, RSS added while it runs.
3. **INT8 vs FP32**: the median/p99 latency of each shipped variant from the same runs.

Pinned to one core (``os.sched_setaffinity``) with one intra-op thread everywhere.
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
FIX = ROOT / "tests" / "fixtures" / "models"


def make_1ms_model(path: str, width: int = 1024, layers: int = 8) -> str:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        out = "y" if i == layers - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"m{i}"], [out]))
        prev = out
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def _time_calls(fn, n: int) -> float:
    """Median per-call time (us) of ``n`` calls, measured in groups of 10 to beat clock overhead."""
    per = []
    for _ in range(max(1, n // 10)):
        t0 = time.perf_counter_ns()
        for _ in range(10):
            fn()
        per.append((time.perf_counter_ns() - t0) / 10 / 1e3)
    return float(np.median(per))


def interleaved(fns: dict, rounds: int, calls: int) -> dict:
    for fn in fns.values():  # warm-up
        for _ in range(200):
            fn()
    res = {k: [] for k in fns}
    order = list(fns)
    for r in range(rounds):
        # alternate the order: whoever runs first after a switch pays for the cold caches
        for k in (order if r % 2 == 0 else order[::-1]):
            res[k].append(_time_calls(fns[k], calls))
    return {k: float(np.median(v)) for k, v in res.items()}


def ort_direct(path: str, feeds: dict, outs: dict):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    io = sess.io_binding()
    for k, v in feeds.items():
        io.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(v))
    for k, v in outs.items():
        io.bind_ortvalue_output(k, ort.OrtValue.ortvalue_from_numpy(v))
    keep = (feeds, outs)  # the OrtValues point into these arrays

    def bound():
        sess.run_with_iobinding(io)
        return keep
    return bound, (lambda: sess.run(None, feeds))


def ov_direct(path: str, feeds: dict, outs: dict):
    import openvino as ov

    core = ov.Core()
    cm = core.compile_model(core.read_model(path), "CPU", {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1,
                                                            "PERFORMANCE_HINT": "LATENCY",
                                                            "INFERENCE_PRECISION_HINT": "f32"})
    req = cm.create_infer_request()
    for k, v in feeds.items():
        req.set_tensor(k, ov.Tensor(v, shared_memory=True))
    for k, v in outs.items():
        req.set_tensor(k, ov.Tensor(v, shared_memory=True))
    keep = (feeds, outs)  # shared tensors point into these arrays

    def infer():
        req.infer()
        return keep
    return infer


def litert_direct(path: str, x: np.ndarray):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path, num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

    def run():
        it.set_tensor(i, x)
        it.invoke()
        return it.get_tensor(o)
    return run


def overhead(rounds: int, calls: int, tmp: str) -> list[dict]:
    from edge_runtime.backends import BACKENDS, load_session

    rows = []
    models = [("trivial (add_mul.onnx)", str(FIX / "add_mul.onnx"))]
    try:
        models.append(("~1 ms (8x MatMul 1024)", make_1ms_model(os.path.join(tmp, "mlp1ms.onnx"))))
    except ImportError:
        print("onnx not installed: the ~1 ms model is skipped (pip install onnx)", file=sys.stderr)
    for label, path in models:
        for backend in ("onnxruntime", "openvino"):
            if not BACKENDS[backend].available():
                continue
            s = load_session(path, backend=backend, threads=1)
            feeds = {t.name: np.random.default_rng(0).standard_normal(t.shape).astype(np.float32) for t in s.inputs}
            outs = {t.name: np.zeros(t.shape, np.float32) for t in s.outputs}
            ours = s.bind(feeds, outs).run
            fns = {"edge_runtime": ours}
            if backend == "onnxruntime":
                fns["direct io_binding"], fns["direct sess.run"] = ort_direct(path, feeds,
                                                                              {k: np.zeros_like(v) for k, v in outs.items()})
            else:
                fns["direct infer()"] = ov_direct(path, feeds, {k: np.zeros_like(v) for k, v in outs.items()})
            rows.append(_row(label, backend, interleaved(fns, rounds, calls)))
    if BACKENDS["litert"].available():
        path = str(FIX / "fc_relu_float.tflite")
        s = load_session(path, backend="litert", threads=1)
        feeds = {t.name: np.random.default_rng(0).standard_normal(t.shape).astype(np.float32) for t in s.inputs}
        outs = {t.name: np.zeros(t.shape, np.float32) for t in s.outputs}
        t = interleaved({"edge_runtime": s.bind(feeds, outs).run,
                         "direct set/invoke/get": litert_direct(path, next(iter(feeds.values())))}, rounds, calls)
        rows.append(_row("trivial (fc_relu_float.tflite)", "litert", t))
    return rows


def _row(label: str, backend: str, t: dict) -> dict:
    direct = {k: v for k, v in t.items() if k != "edge_runtime"}
    best = min(direct, key=direct.get)
    ours = t["edge_runtime"]
    return {"model": label, "backend": backend, "fastest direct call": best.removeprefix("direct "),
            "direct us": round(direct[best], 2), "edge_runtime us": round(ours, 2),
            "added us": round(ours - direct[best], 2), "ratio": round(ours / direct[best], 3),
            **({"sess.run us": round(direct["direct sess.run"], 2)} if "direct sess.run" in direct else {})}


def shipped(runs: int) -> list[dict]:
    from edge_runtime.backends import BACKENDS
    from edge_runtime.models import default_registry
    from edge_runtime.models.bench import measure

    rows = []
    for m in default_registry():
        for v in m.variants:
            for b in v.backends:
                if not BACKENDS[b].available():
                    continue
                r = measure(v.path, b, threads=1, runs=runs, warmup=50, isolate=True)
                rows.append({"model": m.name, "variant": f"{v.format}/{v.precision}", "backend": b,
                             "size_kb": round(v.size / 1024, 1), "load_ms": round(r["load_ms"], 2),
                             "rss_mb": round(r["rss_mb"], 2), "median_us": round(r["median_us"], 1),
                             "p99_us": round(r["p99_us"], 1)})
    return rows


def table(rows: list[dict]) -> str:
    if not rows:
        return "(none)"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    w = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    out = ["| " + " | ".join(c.ljust(w[c]) for c in cols) + " |", "|" + "|".join("-" * (w[c] + 2) for c in cols) + "|"]
    out += ["| " + " | ".join(str(r.get(c, "")).ljust(w[c]) for c in cols) + " |" for r in rows]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=1000, help="timed runs per shipped variant")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    try:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    except (AttributeError, OSError):
        pass
    with tempfile.TemporaryDirectory() as tmp:
        ov = overhead(args.rounds, args.calls, tmp)
    sh = shipped(args.runs)
    cmd = "python firmware_tools/bench/bench_models.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"`{cmd.strip()}` on {platform.processor() or platform.machine()}, one core, one thread\n")
    print("Model-layer overhead per call (us):\n")
    print(table(ov))
    print("\nShipped variants (each in a fresh process; load = cold load, RSS = added while running):\n")
    print(table(sh))
    if args.json:
        from edge_runtime.atomic import write_bytes

        write_bytes(args.json, json.dumps({"command": cmd, "overhead": ov, "shipped": sh}, indent=1).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

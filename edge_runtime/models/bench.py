"""Benchmark any ONNX / TFLite / OpenVINO IR file on every backend that reads it.

``edge-runtime bench MODEL...`` (and the device profiler) measure, per (file, backend):

* ``import_ms`` / ``rss_import_mb``: importing the backend library (once per process);
* ``load_ms``: cold load of the model file (``Backend.load``, the library already imported);
* ``rss_load_mb``: resident memory the load added; ``rss_mb``: added by the load *and* the warm-up
  and timed runs (arenas, compiled kernels), i.e. what the model costs while it runs;
* ``first_run_us``: the first inference (lazy initialisation shows up here);
* ``median_us`` / ``p99_us`` (also ``mean_us``, ``min_us``): latency of the bound fast path
  (``binding.run()`` on caller-owned arrays), ``runs`` calls after ``warmup`` calls, GC off;
* ``max_abs_diff``: per output, the largest absolute difference from the reference result (the
  first one of the same model name: the first backend of the first file with that stem, so
  ``m.onnx`` and ``m.tflite`` are compared too), in real units (quantized outputs dequantized).

Every backend gets the same seeded random input: float inputs ~ N(0, 1); integer inputs uniform over
their dtype's range (int8/uint8/int16/uint16; wider integers 0..127).  Later results of a group are
fed the reference's inputs converted to their own dtypes (quantized with the tensor's scale and
zero point for INT8 inputs), so a float ONNX and an INT8 TFLite of one model see the same signal.

By default each measurement runs in a fresh Python subprocess (``isolate=True``), so the RSS and
load numbers are not flattered by an earlier load; ``isolate=False`` runs in this process.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ..errors import ModelError

__all__ = ["bench_files", "measure", "format_table", "rss_bytes", "make_inputs", "parse_shape_args"]

MB = 1024 * 1024


def rss_bytes() -> int:
    """Resident set size of this process (``/proc/self/statm``; psutil elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:  # pragma: no cover - non-Linux
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # pragma: no cover
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _warm_import(backend) -> None:
    """Import the backend's library without loading a model (so load_ms is the model's own)."""
    backend.devices()  # onnxruntime: providers; openvino: Core()
    if backend.name == "litert":
        from ..backends import litert

        litert._interpreter_module()


def parse_shape_args(items: Iterable[str] | None) -> dict:
    """``["x=1x16000", "1x64"]`` -> ``{"x": (1, 16000), None: (1, 64)}`` (``None``: a model's only input)."""
    from ..backends import parse_shape

    out: dict = {}
    for item in items or ():
        name, sep, shape = str(item).rpartition("=")
        key = name.strip() if sep else None
        if sep and not key:
            raise ModelError(f"--shape {item!r}; expected NAME=DIMS, e.g. x=1x16000 (or DIMS alone for a "
                             "model with one input)")
        if key in out:
            raise ModelError(f"--shape given twice for {key or 'the single input'!r}")
        out[key] = parse_shape(shape)
    return out


def _overrides_for(session, shapes: Mapping | None) -> tuple[dict, list]:
    """The overrides that apply to ``session`` and the names used."""
    shapes = dict(shapes or {})
    names = [s.name for s in session.inputs]
    out, used = {}, []
    for k, v in shapes.items():
        if k is None:
            if len(names) != 1:
                raise ModelError(f"model {session.path}: --shape without a name needs a model with one input; "
                                 f"its inputs are {names} (use --shape NAME=DIMS)")
            if names[0] not in shapes:
                out[names[0]] = v
                used.append(None)
        elif k in names:
            out[k] = v
            used.append(k)
    return out, used


def _to_dtype(real: np.ndarray, spec) -> np.ndarray:
    from ..backends import quantize

    dt = spec.dtype
    if spec.quant is not None and np.issubdtype(dt, np.integer):
        return quantize(real, spec)
    if dt == np.bool_:
        return np.ascontiguousarray(real != 0)
    if np.issubdtype(dt, np.integer):
        info = np.iinfo(dt)
        return np.ascontiguousarray(np.clip(np.rint(real), info.min, info.max).astype(dt))
    return np.ascontiguousarray(real.astype(dt))


def _to_real(arr: np.ndarray, spec) -> np.ndarray:
    from ..backends import dequantize

    if spec.quant is not None and np.issubdtype(spec.dtype, np.integer):
        return dequantize(arr, spec).astype(np.float64)
    if arr.dtype == np.object_:
        return np.zeros(arr.shape)
    return np.asarray(arr, dtype=np.float64)


def make_inputs(specs, shapes: Mapping[str, tuple], seed: int = 0, real: list | None = None) -> tuple[dict, list, bool]:
    """Seeded inputs for ``specs`` at ``shapes``.  ``real``: a reference's real-valued inputs by
    position, converted to these specs' dtypes where the shapes match (quantized for INT8 inputs).
    Returns (arrays by name, their real values by position, whether every input came from ``real``)."""
    arrays, reals, reused = {}, [], True
    for i, spec in enumerate(specs):
        shape = tuple(shapes[spec.name])
        if real is not None and i < len(real) and tuple(real[i].shape) == shape:
            arr = _to_dtype(np.asarray(real[i], np.float64), spec)
        else:
            reused = False
            rng = np.random.default_rng([int(seed), i])
            dt = spec.dtype
            if np.issubdtype(dt, np.floating):
                arr = rng.standard_normal(shape).astype(dt)
            elif dt == np.bool_:
                arr = rng.integers(0, 2, shape).astype(np.bool_)
            elif np.issubdtype(dt, np.integer):
                info = np.iinfo(dt)
                lo, hi = (info.min, info.max) if info.bits <= 16 else (0, 127)
                arr = rng.integers(lo, hi, shape, endpoint=True, dtype=dt)
            else:
                raise ModelError(f"input {spec.name!r} has dtype {dt}; bench feeds numeric or bool inputs only")
        arrays[spec.name] = np.ascontiguousarray(arr)
        reals.append(_to_real(arrays[spec.name], spec))
    return arrays, reals, bool(real is not None and reused and len(real) == len(specs))


def _spec_dict(s) -> dict:
    d = {"name": s.name, "shape": [None if x is None else int(x) for x in s.shape], "dtype": str(s.dtype)}
    if s.quant is not None:
        d["quant"] = [float(s.quant[0]), int(s.quant[1])]
    return d


def _measure_here(job: dict) -> dict:
    """One (file, backend) measurement in this process; see module doc for the fields."""
    from ..backends import get_backend, resolve_shapes

    backend = get_backend(job["backend"])
    if not backend.available():
        raise backend.not_installed()
    runs, warmup = int(job["runs"]), int(job["warmup"])
    r0 = rss_bytes()
    t = time.perf_counter()
    _warm_import(backend)
    import_ms = (time.perf_counter() - t) * 1e3
    r1 = rss_bytes()
    t = time.perf_counter()
    sess = backend.load(job["path"], threads=int(job.get("threads", 1)), device=job.get("device"),
                        options=job.get("options"))
    load_ms = (time.perf_counter() - t) * 1e3
    r2 = rss_bytes()
    overrides, used = _overrides_for(sess, job.get("shapes"))
    shapes = resolve_shapes(sess, overrides)
    real_in = job.get("real_inputs")
    inputs, real_inputs, reused = make_inputs(sess.inputs, shapes, int(job.get("seed", 0)), real_in)
    t = time.perf_counter()
    first = sess.run(inputs)
    first_us = (time.perf_counter() - t) * 1e6
    outputs = {s.name: np.empty_like(first[s.name]) for s in sess.outputs}
    binding = sess.bind(inputs, outputs)
    run = binding.run
    for _ in range(warmup):
        run()
    times = [0] * runs
    pc = time.perf_counter_ns
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(runs):
            t0 = pc()
            run()
            times[i] = pc() - t0
    finally:
        if gc_was:
            gc.enable()
    r3 = rss_bytes()
    us = np.asarray(times, np.float64) / 1e3
    real_out = [_to_real(outputs[s.name], s) for s in sess.outputs]
    res = {
        "path": str(job["path"]), "backend": backend.name, "device": getattr(sess, "device", None) or "cpu",
        "threads": int(job.get("threads", 1)),
        "import_ms": import_ms, "load_ms": load_ms, "first_run_us": first_us,
        "median_us": float(np.median(us)) if runs else None,
        "p99_us": float(np.percentile(us, 99)) if runs else None,
        "mean_us": float(us.mean()) if runs else None,
        "min_us": float(us.min()) if runs else None,
        "runs": runs, "warmup": warmup,
        "rss_import_mb": (r1 - r0) / MB, "rss_load_mb": (r2 - r1) / MB, "rss_mb": (r3 - r1) / MB,
        "inputs": [dict(_spec_dict(s), bench_shape=list(shapes[s.name])) for s in sess.inputs],
        "outputs": [dict(_spec_dict(s), bench_shape=list(outputs[s.name].shape)) for s in sess.outputs],
        "inputs_from_reference": reused, "shapes_used": used,
        "_real_inputs": real_inputs, "_real_outputs": real_out,
    }
    sess.close()
    return res


def _worker_main(job_path: str) -> int:
    """Subprocess entry: read the job, measure, write ``result.json`` and ``arrays.npz`` next to it."""
    job = json.loads(Path(job_path).read_text())
    folder = Path(job_path).parent
    if job.get("real_inputs_npz"):
        with np.load(job["real_inputs_npz"]) as z:
            job["real_inputs"] = [z[f"in_{i}"] for i in range(len(z.files))]
    if job.get("shapes"):
        job["shapes"] = {(None if k == "" else k): tuple(v) for k, v in job["shapes"].items()}
    try:
        res = _measure_here(job)
    except Exception as exc:
        from ..errors import EdgeRuntimeError

        err = {"error": str(exc), "error_type": type(exc).__name__,
               "user_error": isinstance(exc, EdgeRuntimeError)}
        (folder / "result.json").write_text(json.dumps(err))
        return 0
    np.savez(folder / "arrays.npz", **{f"in_{i}": a for i, a in enumerate(res.pop("_real_inputs"))},
             **{f"out_{i}": a for i, a in enumerate(res.pop("_real_outputs"))})
    (folder / "result.json").write_text(json.dumps(res))
    return 0


def _package_root() -> str:
    return str(Path(__file__).resolve().parents[2])


def _measure_subprocess(job: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="edge_runtime_bench_") as tmp:
        tmp = Path(tmp)
        j = dict(job)
        real = j.pop("real_inputs", None)
        if real is not None:
            np.savez(tmp / "real_inputs.npz", **{f"in_{i}": a for i, a in enumerate(real)})
            j["real_inputs_npz"] = str(tmp / "real_inputs.npz")
        if j.get("shapes"):
            j["shapes"] = {("" if k is None else k): list(v) for k, v in j["shapes"].items()}
        (tmp / "job.json").write_text(json.dumps(j))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_package_root()] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        code = "import sys; from edge_runtime.models.bench import _worker_main; sys.exit(_worker_main(sys.argv[1]))"
        try:
            proc = subprocess.run([sys.executable, "-c", code, str(tmp / "job.json")], capture_output=True,
                                  text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ModelError(f"model {job['path']}: benchmarking on {job['backend']} took longer than "
                             f"{timeout:.0f} s; expected a model that runs (lower --runs?)") from None
        result_file = tmp / "result.json"
        if proc.returncode != 0 or not result_file.exists():
            tail = " ".join((proc.stderr or "").split())[-600:]
            raise ModelError(f"model {job['path']}: the {job['backend']} benchmark process failed "
                             f"(exit status {proc.returncode}): {tail or 'no message'}")
        res = json.loads(result_file.read_text())
        if "error" in res:
            return res
        with np.load(tmp / "arrays.npz") as z:
            n_in = sum(1 for k in z.files if k.startswith("in_"))
            n_out = sum(1 for k in z.files if k.startswith("out_"))
            res["_real_inputs"] = [z[f"in_{i}"] for i in range(n_in)]
            res["_real_outputs"] = [z[f"out_{i}"] for i in range(n_out)]
        return res


def measure(path, backend: str, threads: int = 1, runs: int = 200, warmup: int = 20,
            shapes: Mapping | None = None, seed: int = 0, real_inputs: list | None = None,
            isolate: bool = True, device: str | None = None, options: Mapping | None = None,
            timeout: float = 600.0) -> dict:
    """Measure one file on one backend (see the module doc); ``isolate`` runs it in a fresh process.

    Returns the result dict; ``_real_inputs`` / ``_real_outputs`` hold the inputs fed and outputs
    got, in real units.  Raises :class:`ModelError` for a user error (dynamic dims without a shape,
    a corrupt file ...) and when the benchmark process dies."""
    if runs < 1 or warmup < 0:
        raise ModelError(f"runs={runs}, warmup={warmup}; expected runs >= 1 and warmup >= 0")
    job = {"path": str(path), "backend": backend, "threads": int(threads), "runs": int(runs),
           "warmup": int(warmup), "shapes": dict(shapes or {}), "seed": int(seed), "device": device,
           "options": dict(options) if options else None}
    if real_inputs is not None:
        job["real_inputs"] = list(real_inputs)
    if isolate:
        res = _measure_subprocess(job, timeout)
        if "error" in res:
            if res.get("user_error"):
                raise ModelError(res["error"])
            raise ModelError(f"model {path}: {backend} failed while benchmarking ({res['error_type']}: "
                             f"{res['error']})")
        res["isolated"] = True
        return res
    try:
        res = _measure_here(job)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"model {path}: {backend} failed while benchmarking ({type(exc).__name__}: {exc})") from exc
    res["isolated"] = False
    return res


def compare_outputs(ref: dict, res: dict) -> dict | None:
    """Per output of ``res``: max |res - ref| (outputs matched by name, else by position); None when
    the two cannot be compared (different inputs, output count or shapes)."""
    if ref is res:
        return {o["name"]: 0.0 for o in res["outputs"]}
    if not res.get("inputs_from_reference"):
        return None
    ro, rr = ref["_real_outputs"], res["_real_outputs"]
    if len(ro) != len(rr):
        return None
    ref_names = [o["name"] for o in ref["outputs"]]
    names = [o["name"] for o in res["outputs"]]
    order = [ref_names.index(n) for n in names] if sorted(names) == sorted(ref_names) else list(range(len(names)))
    out = {}
    for name, i, a in zip(names, order, rr):
        b = ro[i]
        if a.shape != b.shape:
            return None
        d = float(np.max(np.abs(a - b))) if a.size else 0.0
        out[name] = d if np.isfinite(d) else None
    return out


def _readers(path, wanted: list[str] | None) -> tuple[list[str], list[dict]]:
    from ..backends import backends_for

    names, skipped = [], []
    for b in backends_for(path):
        if wanted is not None and b.name not in wanted:
            continue
        if not b.available():
            skipped.append({"path": str(path), "backend": b.name,
                            "reason": f"not installed (pip install edge-runtime[{b.extra}])"})
            continue
        names.append(b.name)
    return names, skipped


def bench_files(paths: Iterable, backends: Iterable[str] | None = None, threads: int = 1, runs: int = 200,
                warmup: int = 20, shapes: Mapping | None = None, seed: int = 0, isolate: bool = True,
                timeout: float = 600.0) -> dict:
    """Benchmark each file on every requested, installed backend that reads it; compare outputs
    within each model name (file stem).  Returns a JSON-ready report ``{"results": [...], ...}``."""
    from ..backends import BACKENDS, backends_for, check_model_file

    paths = [str(p) for p in paths]
    if not paths:
        raise ModelError("bench needs at least one model file (.onnx, .tflite or OpenVINO .xml)")
    wanted = None
    if backends is not None:
        wanted = [b.strip() for b in backends if b and b.strip()]
        unknown = [b for b in wanted if b not in BACKENDS]
        if unknown:
            raise ModelError(f"--backends names unknown backend(s) {unknown}; expected some of {list(BACKENDS)}")
    plan, skipped = [], []
    for p in paths:
        check_model_file(p)
        readers = [b.name for b in backends_for(p)]
        names, skip = _readers(p, wanted)
        skipped += skip
        if not names:
            why = (f"none of --backends {wanted} reads {Path(p).suffix} files (read by {readers})"
                   if wanted is not None and not any(r in wanted for r in readers)
                   else f"no backend that reads {Path(p).suffix} files is installed ({readers})")
            raise ModelError(f"model file {p}: {why}")
        plan.append((p, names))

    groups: dict[str, list] = {}
    for p, names in plan:
        groups.setdefault(Path(p).stem, []).append((p, names))

    results, used_shapes = [], set()
    for stem, items in groups.items():
        ref = None
        for p, names in items:
            for b in names:
                res = measure(p, b, threads=threads, runs=runs, warmup=warmup, shapes=shapes, seed=seed,
                              real_inputs=None if ref is None else ref["_real_inputs"], isolate=isolate,
                              timeout=timeout)
                used_shapes.update(res.pop("shapes_used", []))
                res["model"] = stem
                res["file"] = os.path.basename(p)
                res["format"] = {".onnx": "onnx", ".ort": "onnx", ".tflite": "tflite", ".xml": "openvino-ir"}.get(
                    Path(p).suffix.lower(), Path(p).suffix.lstrip("."))
                if ref is None:
                    ref = res
                diff = compare_outputs(ref, res)
                res["reference"] = f"{ref['file']}@{ref['backend']}"
                res["max_abs_diff"] = diff
                vals = [v for v in (diff or {}).values() if v is not None]
                res["max_abs_diff_all"] = max(vals) if vals else None
                results.append(res)
    unused = [k for k in (shapes or {}) if k not in used_shapes]
    if unused:
        raise ModelError(f"--shape names input(s) {['(single input)' if k is None else k for k in unused]} that "
                         f"none of the models has; their inputs: "
                         + "; ".join(f"{r['file']}: {[i['name'] for i in r['inputs']]}" for r in results))
    for r in results:
        r.pop("_real_inputs", None)
        r.pop("_real_outputs", None)
    return {"threads": int(threads), "runs": int(runs), "warmup": int(warmup), "seed": int(seed),
            "isolated": bool(isolate), "results": results, "skipped": skipped}


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None else format(v, spec)


def format_table(report: dict) -> str:
    """The bench report as a fixed-width table."""
    cols = ("model file", "backend", "load ms", "median us", "p99 us", "RSS MB", "max |diff| vs reference")
    rows = []
    for r in report["results"]:
        if r.get("reference") == f"{r['file']}@{r['backend']}":
            diff = "(reference)"
        elif r.get("max_abs_diff") is None:
            diff = "n/a (inputs or outputs differ)"
        else:
            diff = " ".join(f"{k}={_fmt(v, '.3g')}" for k, v in r["max_abs_diff"].items())
            diff += f" (vs {r['reference']})"
        rows.append((r["file"], r["backend"], _fmt(r["load_ms"], ".1f"), _fmt(r["median_us"], ".1f"),
                     _fmt(r["p99_us"], ".1f"), _fmt(r["rss_mb"], ".1f"), diff))
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    right = (False, False, True, True, True, True, False)

    def line(vals):
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(vals, widths, right)).rstrip()

    out = [line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows]
    out.append(f"({report['runs']} runs after {report['warmup']} warm-up, {report['threads']} thread(s), "
               f"{'one fresh process per backend' if report['isolated'] else 'in this process'}; "
               "RSS: added by load + runs)")
    for s in report.get("skipped", []):
        out.append(f"skipped {s['backend']} for {os.path.basename(s['path'])}: {s['reason']}")
    return "\n".join(out)

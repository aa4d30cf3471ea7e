"""``edge-runtime batch``: one pipeline over many files, resumable, in parallel.

    edge-runtime batch denoise --input archive/ --output cleaned/ --jobs 4
    edge-runtime batch declip --input 'calls/**/*.wav' --output fixed/ --engine dask

* **Inputs**: a folder (every audio file under it, recursively) or a glob; outputs keep each
  file's path relative to the folder (or the glob's fixed part) under ``--output``. Each file is
  processed exactly as ``edge-runtime run PIPELINE -i IN -o OUT`` would: the same code, the same
  atomic outputs.
* **Resumable**: ``<output>/.edge_runtime-batch.jsonl`` records each finished file: input, size,
  mtime, output, and the summary or the error. A rerun skips files done with the same size and
  mtime whose output still exists. The record is appended and fsync'ed per file, so a killed batch
  loses at most the files in flight.
* **Failures**: a corrupt or unreadable file is one line in the report; the rest are done. The
  exit status is 1 if any file failed.
* **Engines**: ``local`` (default) is a process pool of ``--jobs`` workers. ``dask`` runs the
  files on a Dask cluster (``--scheduler ADDRESS``, or a local cluster of ``--jobs`` workers;
  ``pip install 'edge-runtime[dask]'``). ``ray`` runs them as Ray tasks of one CPU each
  (``--scheduler`` = a running cluster's address, e.g. ``ray://head:10001`` or ``auto``; else a
  local Ray instance of ``--jobs`` CPUs; ``pip install 'edge-runtime[ray]'``).
* **Report**: files/s, audio seconds per wall second, and the engine's real-time factor per core
  (engine time / audio time, summed over files).
"""
from __future__ import annotations

import glob as _glob
import json
import os
import time
from pathlib import Path

from .errors import ConfigError, MissingExtraError

__all__ = ["find_inputs", "run_batch"]

AUDIO_EXTS = (".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".au", ".caf", ".w64", ".rf64")
MANIFEST = ".edge_runtime-batch.jsonl"


def find_inputs(spec: str) -> tuple[list[Path], Path]:
    """(audio files, the base their output paths are relative to) for a folder or a glob."""
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTS)
        return files, p
    files = sorted(Path(f) for f in _glob.glob(spec, recursive=True) if Path(f).is_file())
    fixed = spec.split("*")[0].split("?")[0].split("[")[0]
    base = Path(fixed) if fixed.endswith(os.sep) or Path(fixed).is_dir() else Path(fixed).parent
    if not files:
        raise ConfigError(f"--input {spec}: no audio files there (expected a folder or a glob matching "
                          f"{', '.join(AUDIO_EXTS)})")
    return files, base


def _done_before(manifest: Path) -> dict[str, dict]:
    done = {}
    try:
        with open(manifest, encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue                 # a torn last line of a killed batch
                if r.get("rc") == 0:
                    done[r["input"]] = r
                else:
                    done.pop(r.get("input"), None)
    except FileNotFoundError:
        pass
    return done


def run_batch(pipeline: str, inputs: str, output: str, worker, *, jobs: int = 0, engine: str = "local",
              scheduler: str | None = None, extra: list | None = None, progress=None) -> dict:
    """Process every file with ``worker((pipeline, src, dst, extra)) -> row`` (a module-level
    function, so process pools and Dask can send it: the CLI's is ``edge_runtime.cli._batch_one``,
    which runs ``edge-runtime run``); returns the report and writes the manifest as it goes."""
    from .config import load_pipeline_config

    load_pipeline_config(pipeline)                 # a bad pipeline is one error before any work
    files, base = find_inputs(inputs)
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST
    done = _done_before(manifest)
    jobs = jobs or max(1, (os.cpu_count() or 1))
    todo, skipped = [], 0
    for f in files:
        st = f.stat()
        dst = out_dir / f.relative_to(base)
        prev = done.get(str(f))
        if prev and prev.get("size") == st.st_size and prev.get("mtime") == st.st_mtime and Path(prev["output"]).exists():
            skipped += 1
            continue
        todo.append((pipeline, str(f), str(dst), list(extra or []), st.st_size, st.st_mtime))
    t0 = time.perf_counter()
    rows = []
    fd = os.open(manifest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        def record(row, size, mtime):
            row.update(size=size, mtime=mtime)
            os.write(fd, (json.dumps(row) + "\n").encode())
            os.fsync(fd)
            rows.append(row)
            if progress is not None:
                progress(len(rows), len(todo), row)

        if engine == "local":
            _local(todo, jobs, record, worker)
        elif engine == "dask":
            _dask(todo, jobs, scheduler, record, worker)
        elif engine == "ray":
            _ray(todo, jobs, scheduler, record, worker)
        else:
            raise ConfigError(f"--engine {engine!r}; expected local, dask or ray")
    finally:
        os.close(fd)
    wall = time.perf_counter() - t0
    ok = [r for r in rows if r["rc"] == 0]
    audio = sum(r.get("audio_s", 0.0) for r in ok)
    eng = sum(r.get("engine_s", 0.0) for r in ok)
    return {"pipeline": pipeline, "engine": engine, "jobs": jobs, "files": len(files), "done": len(ok),
            "failed": [{"input": r["input"], "error": r.get("error", "")} for r in rows if r["rc"] != 0],
            "skipped": skipped, "wall_s": round(wall, 3),
            "files_per_s": round(len(rows) / wall, 3) if wall > 0 and rows else 0.0,
            "audio_s": round(audio, 3), "audio_s_per_wall_s": round(audio / wall, 2) if wall > 0 else 0.0,
            "engine_rtf_per_core": round(eng / audio, 5) if audio else 0.0, "manifest": str(manifest)}


def _local(todo, jobs, record, worker) -> None:
    if jobs == 1 or len(todo) <= 1:
        for *job, size, mtime in todo:
            record(worker(tuple(job)), size, mtime)
        return
    import concurrent.futures as cf
    import multiprocessing as mp

    # spawn: a fresh interpreter per worker (no inherited threads or sessions)
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
        futs = {ex.submit(worker, tuple(job)): (size, mtime) for *job, size, mtime in todo}
        for fut in cf.as_completed(futs):
            size, mtime = futs[fut]
            record(fut.result(), size, mtime)


def _dask(todo, jobs, scheduler, record, worker) -> None:
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise MissingExtraError("--engine dask needs dask.distributed, which is not installed; install it with "
                                "pip install 'edge-runtime[dask]'") from None
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    try:
        futs = {}
        for *job, size, mtime in todo:
            futs[client.submit(worker, tuple(job), pure=False)] = (size, mtime)
        for fut in as_completed(list(futs)):
            size, mtime = futs[fut]
            record(fut.result(), size, mtime)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _ray(todo, jobs, scheduler, record, worker) -> None:
    try:
        import ray
    except ImportError:
        raise MissingExtraError("--engine ray needs ray, which is not installed; install it with "
                                "pip install 'edge-runtime[ray]'") from None
    started = not ray.is_initialized()
    if started:
        if scheduler:
            ray.init(address=scheduler, log_to_driver=False, logging_level="ERROR")
        else:
            # a local instance: --jobs CPUs, a small object store (rows are a few hundred bytes)
            ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                     object_store_memory=100 << 20)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(worker)
        pending = {}
        for *job, size, mtime in todo:
            pending[task.remote(tuple(job))] = (size, mtime)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                size, mtime = pending.pop(ref)
                record(ray.get(ref), size, mtime)
    finally:
        if started:
            ray.shutdown()

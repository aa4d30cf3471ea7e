"""What ``edge-runtime profile`` does: the models a pipeline (or the manifests) names, measured on
this device by the model layer's profiler, chosen and written as the device profile.

It sits above both the pipeline configs (:func:`edge_runtime.config.pipeline_models`) and the model
layer (:mod:`edge_runtime.models.profiler`), so neither has to import the other.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from .config import pipeline_models
from .errors import ConfigError
from .models.profiler import (choose, describe_device, format_table, load_device_defaults, parse_device_defaults,
                              profile_models, write_profile)

__all__ = ["run_profile", "format_report"]


def run_profile(pipeline: str | None = None, model_paths: Iterable[str] = (), *, device: str | None = None,
                backends: Iterable[str] | None = None, threads: int | None = None, runs: int | None = None,
                warmup: int | None = None, shapes: Mapping | None = None, budget_ms: float | None = None,
                max_quality_drop: float | None = None, write: bool = True, state_dir_=None, service: bool = False,
                isolate: bool = True, registry=None, on_result=None) -> dict:
    """What ``edge-runtime profile`` does; returns a JSON-ready report.

    Targets: ``model_paths`` when given; else the models the pipeline's nodes name; else (no
    pipeline) every model in the manifests.  Settings default to the device's shipped defaults; the
    budget to the pipeline's block duration."""
    info = describe_device()
    name = device or info["name"]
    if device and device != info["name"]:
        info = dict(info, reason=f"given with --device (detected: {info['name']})", name=device)
    try:
        defaults = load_device_defaults(name)
    except ConfigError:
        if device:
            raise
        defaults = parse_device_defaults({"name": name}, "<built-in>")
    prof = defaults.get("profiler", {})
    threads = int(threads or defaults["threads"])
    runs = int(runs or prof.get("runs", 100))
    warmup = int(warmup if warmup is not None else prof.get("warmup", 10))
    if max_quality_drop is None:
        max_quality_drop = prof.get("max_quality_drop")
    report: dict = {"device": name, "device_info": info, "defaults": defaults.get("path"), "pipeline": None,
                    "results": [], "choices": {}, "profile_path": None, "message": None}
    targets: list = list(model_paths or [])
    if not targets:
        from .models.manifest import default_registry

        reg = registry if registry is not None else default_registry()
        if pipeline:
            summary, names = pipeline_models(pipeline)
            report["pipeline"] = summary
            if budget_ms is None:
                budget_ms = summary["budget_ms"]
            targets = [reg[n] for n in names]
            if not targets:
                report["message"] = f"pipeline {summary['name']} has no ML nodes: no models to profile"
        else:
            targets = list(reg)
            if not targets:
                report["message"] = ("no ML nodes/models to profile: the model manifest lists no models "
                                     "(give --model PATH to profile a model file)")
    elif pipeline:
        summary, _ = pipeline_models(pipeline)
        report["pipeline"] = summary
        if budget_ms is None:
            budget_ms = summary["budget_ms"]
    settings = {"threads": threads, "runs": runs, "warmup": warmup, "budget_ms": budget_ms,
                "max_quality_drop": max_quality_drop, "backends": list(backends) if backends else None}
    report["settings"] = settings
    if not targets:
        return report
    # the defaults' backend order is a preference for ties; every installed backend is measured
    backends = list(backends) if backends else None
    devices = {b: d for b, d in defaults.get("devices", {}).items()}
    results = profile_models(targets, backends=backends, threads=threads, runs=runs, warmup=warmup, shapes=shapes,
                             isolate=isolate, devices=devices, on_result=on_result)
    choices = choose(results, budget_ms=budget_ms, max_quality_drop=max_quality_drop)
    report["results"] = results
    report["choices"] = choices
    if write:
        report["profile_path"] = str(write_profile(name, results, choices, device_info=info, settings=settings,
                                                   state_dir_=state_dir_, service=service))
    return report


def format_report(report: dict) -> str:
    info = report["device_info"]
    lines = [f"device       {report['device']}  ({info.get('reason')})",
             f"cpu          {info.get('cpu')}  [{info.get('machine')}]  {info.get('cores')} cores  "
             f"int8: {' '.join(info.get('int8_flags') or []) or 'none'}",
             f"memory       {info.get('memory_mb')} MB"]
    if info.get("openvino_devices") is not None:
        lines.append(f"openvino     {', '.join(info['openvino_devices']) or 'no devices'}")
    if report.get("defaults"):
        lines.append(f"defaults     {report['defaults']}")
    if report.get("pipeline"):
        p = report["pipeline"]
        lines.append(f"pipeline     {p['name']}  ({p['sample_rate']} Hz, block {p['block_size']} = {p['budget_ms']:.2f} ms)")
    s = report.get("settings") or {}
    if report["results"]:
        budget = "none" if s.get("budget_ms") is None else f"{s['budget_ms']:g} ms (p99)"
        qd = "any" if s.get("max_quality_drop") is None else f"{s['max_quality_drop']:g}"
        lines.append(f"settings     threads {s.get('threads')}, {s.get('runs')} runs after {s.get('warmup')} "
                     f"warm-up, budget {budget}, max quality drop {qd}")
        lines.append("")
        lines.append(format_table(report["results"], report["choices"]))
    if report.get("message"):
        lines.append(report["message"])
    if report.get("profile_path"):
        lines.append(f"profile written to {report['profile_path']}")
    return "\n".join(lines)

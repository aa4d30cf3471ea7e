"""Device profiler: which device this is, how fast each model variant runs here, which to use.

* :func:`detect_device` names the device profile (``configs/devices/<name>.toml``) from
  :mod:`edge_runtime.platform` (device-tree model, Jetson release file, CPU architecture) and, on
  x86, OpenVINO's device list (an ``NPU`` there -> ``intel-npu``).
* :func:`load_device_defaults` reads the shipped defaults for a device (threads, preferred backend
  and precision order, ALSA period hints, notes).
* :func:`profile_models` benchmarks every variant of the given models (manifest models, verified by
  sha256 first, or plain model files) on every installed backend that reads it: warm-up, median
  and p99 latency, load time, RSS (see :mod:`edge_runtime.models.bench`).
* :func:`choose` picks per model the fastest variant whose p99 latency fits the budget and whose
  quality drop versus FP32 (the manifest's primary metric) is within the allowed drop.
* :func:`write_profile` writes the measured profile atomically to the user's state directory
  (``$EDGE_RUNTIME_STATE``, else ``$XDG_STATE_HOME/edge_runtime``, else ``~/.local/state/edge_runtime``;
  a service passes ``state_dir="/var/lib/edge_runtime"``) as ``profiles/<device>.toml``.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
from pathlib import Path
from typing import Iterable, Mapping

from ..atomic import AtomicFile
from ..errors import ConfigError, ModelError
from ..paths import SERVICE_STATE_DIR, state_dir  # re-exported: the profile's folder
from ..tomlfile import read_toml
from . import _toml

__all__ = ["DEVICES", "SERVICE_STATE_DIR", "detect_device", "describe_device", "device_dirs",
           "load_device_defaults", "profile_models", "choose", "state_dir", "profile_path",
           "write_profile", "load_profile", "variant_label", "format_table"]

#: the device profiles shipped in configs/devices
DEVICES = ("generic-x86", "generic-arm64", "rpi4", "rpi5", "jetson-orin-nano", "intel-npu")
PROFILE_SCHEMA = 1
DEVICE_KEYS = ("name", "description", "threads", "backends", "precisions", "devices", "models", "alsa", "profiler",
               "notes")
ALSA_KEYS = ("period_frames", "periods", "sample_rate")
PROFILER_KEYS = ("runs", "warmup", "max_quality_drop", "budget_ms")


# ------------------------------------------------------------------------------------ detection
def _openvino_devices() -> list[str]:
    try:
        from ..backends import get_backend

        b = get_backend("openvino")
        return list(b.devices()) if b.available() else []
    except Exception:  # detection must never fail because of a backend
        return []


def describe_device(info: Mapping | None = None, openvino_devices: Iterable[str] | None = None) -> dict:
    """The detected device profile name and why: ``{"name", "reason", "board", "cpu", ...}``.

    ``info`` is :func:`edge_runtime.platform.detect`'s dict (read now when omitted);
    ``openvino_devices`` is OpenVINO's device list (asked only on x86 when omitted)."""
    if info is None:
        from ..platform import detect

        info = detect()
    board = dict(info.get("board") or {})
    cpu = dict(info.get("cpu") or {})
    kind = board.get("kind", "generic")
    model = board.get("model") or ""
    machine = (cpu.get("machine") or "").lower()
    ov = None
    if kind == "rpi5":
        name, reason = "rpi5", f"device tree: {model}"
    elif kind in ("rpi4", "rpi"):
        name, reason = "rpi4", f"device tree: {model}" + ("" if kind == "rpi4" else " (older Pi: rpi4 defaults)")
    elif kind == "jetson":
        name, reason = "jetson-orin-nano", (f"Jetson: {board.get('tegra_release') or model}"
                                            + ("" if "Orin" in model or not model else " (jetson-orin-nano defaults)"))
    else:
        is_x86 = kind == "x86" or machine in ("x86_64", "amd64", "i686")
        if is_x86:
            ov = list(_openvino_devices() if openvino_devices is None else openvino_devices)
            npus = [d for d in ov if d.split(".")[0].upper() == "NPU"]
            if npus:
                name, reason = "intel-npu", f"OpenVINO devices {ov} include {npus[0]}"
            else:
                name, reason = "generic-x86", f"x86 CPU {cpu.get('model') or ''}".strip() + " (no NPU in OpenVINO devices)"
        else:
            name, reason = "generic-arm64", f"{machine or 'unknown'} CPU {cpu.get('model') or ''}, no known board".strip()
    return {"name": name, "reason": reason, "board": board.get("kind"), "board_model": board.get("model"),
            "cpu": cpu.get("model"), "machine": cpu.get("machine"), "cores": cpu.get("cores_usable") or cpu.get("cores"),
            "int8_flags": list(cpu.get("int8_flags") or []), "memory_mb": info.get("memory_mb"),
            "openvino_devices": ov, "backends": dict(info.get("backends") or {})}


def detect_device(info: Mapping | None = None, openvino_devices: Iterable[str] | None = None) -> str:
    """The name of this device's profile (one of :data:`DEVICES`)."""
    return describe_device(info, openvino_devices)["name"]


# ------------------------------------------------------------------------------------ defaults
def device_dirs() -> list[Path]:
    """Where device profiles are looked up, first match wins: ``$EDGE_RUNTIME_DEVICES``, the user's
    and the system's config folders, the source tree's ``configs/devices``, the package's copy."""
    dirs: list[Path] = []
    env = os.environ.get("EDGE_RUNTIME_DEVICES")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    dirs.append(Path(xdg) / "edge_runtime" / "devices")
    dirs.append(Path("/etc/edge_runtime/devices"))
    here = Path(__file__).resolve().parents[1]
    dirs.append(here.parent / "configs" / "devices")
    dirs.append(here / "_configs" / "devices")
    return dirs


def _check(cond, path, msg):
    if not cond:
        raise ConfigError(f"{path}: {msg}")


def parse_device_defaults(data: Mapping, path="<device>") -> dict:
    """Validate a device profile document (see ``configs/devices/*.toml``)."""
    from ..backends import BACKENDS
    from .manifest import PRECISIONS

    unknown = [k for k in data if k not in DEVICE_KEYS]
    _check(not unknown, path, f"unknown key {unknown[0]!r} (expected keys: {', '.join(DEVICE_KEYS)})" if unknown else "")
    _check(isinstance(data.get("name"), str) and data["name"], path, f"name = {data.get('name')!r}; expected a non-empty string")
    t = data.get("threads", 1)
    _check(isinstance(t, int) and not isinstance(t, bool) and 1 <= t <= 256, path,
           f"threads = {t!r}; expected an integer 1..256")
    b = data.get("backends", list(BACKENDS))
    _check(isinstance(b, list) and all(x in BACKENDS for x in b), path,
           f"backends = {b!r}; expected an array of {list(BACKENDS)}")
    p = data.get("precisions", list(PRECISIONS))
    _check(isinstance(p, list) and all(x in PRECISIONS for x in p), path,
           f"precisions = {p!r}; expected an array of {list(PRECISIONS)}")
    devs = data.get("devices", {})
    _check(isinstance(devs, dict) and all(k in BACKENDS and isinstance(v, str) for k, v in devs.items()), path,
           f"devices = {devs!r}; expected a table backend = \"DEVICE\" with backends of {list(BACKENDS)}")
    models = data.get("models", {})
    _check(isinstance(models, dict) and all(isinstance(v, list) and v and all(isinstance(x, str) and x for x in v)
                                            for v in models.values()), path,
           f"models = {models!r}; expected a table model = [\"format/precision[@backend]\", ...]")
    alsa = data.get("alsa", {})
    _check(isinstance(alsa, dict), path, "alsa must be a table")
    for k, v in alsa.items():
        _check(k in ALSA_KEYS, path, f"alsa.{k}: unknown key (expected keys: {', '.join(ALSA_KEYS)})")
        _check(isinstance(v, int) and not isinstance(v, bool) and v >= 1, path, f"alsa.{k} = {v!r}; expected an integer >= 1")
    prof = data.get("profiler", {})
    _check(isinstance(prof, dict), path, "profiler must be a table")
    for k, v in prof.items():
        _check(k in PROFILER_KEYS, path, f"profiler.{k}: unknown key (expected keys: {', '.join(PROFILER_KEYS)})")
        _check(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0, path,
               f"profiler.{k} = {v!r}; expected a number >= 0")
    notes = data.get("notes", "")
    _check(isinstance(notes, str), path, f"notes = {notes!r}; expected a string")
    out = dict(data)
    out.update(threads=t, backends=b, precisions=p, devices=devs, models=models, alsa=alsa, profiler=prof,
               notes=notes, path=str(path))
    out.setdefault("description", "")
    return out


def load_device_defaults(name: str) -> dict:
    """The shipped (or user-overridden) defaults for device ``name``."""
    for d in device_dirs():
        f = d / f"{name}.toml"
        if f.is_file():
            return parse_device_defaults(read_toml(f, what="device profile"), f)
    raise ConfigError(f"no device profile {name!r} in {', '.join(map(str, device_dirs()))}; expected one of "
                      f"{', '.join(DEVICES)}")


# ------------------------------------------------------------------------------------ profiling
def variant_label(r: Mapping) -> str:
    return f"{r.get('format')}/{r.get('name') or r.get('precision')}@{r.get('backend')}"


def _guess_precision(res: dict) -> str:
    dts = {t["dtype"] for t in res.get("inputs", []) + res.get("outputs", [])}
    if dts & {"int8", "uint8"}:
        return "int8"
    if "float16" in dts:
        return "fp16"
    return "fp32"


def _failed(base: dict, exc: BaseException) -> dict:
    r = dict(base)
    r.update(error=str(exc), median_us=None, p99_us=None, load_ms=None, rss_mb=None)
    return r


def profile_models(models: Iterable, backends: Iterable[str] | None = None, threads: int = 1, runs: int = 100,
                   warmup: int = 10, shapes: Mapping | None = None, isolate: bool = True,
                   devices: Mapping[str, str] | None = None, seed: int = 0, on_result=None) -> list[dict]:
    """Benchmark every variant of ``models`` on every installed backend (of ``backends``) that reads it.

    ``models``: :class:`~edge_runtime.models.manifest.Model` objects (each variant verified by size
    and sha256 first: a failing one is reported with its error and never loaded) and/or model file
    paths (a path is its own model, named by its stem; precision guessed from its tensor dtypes).
    ``devices`` maps a backend to a device name (e.g. ``{"openvino": "NPU"}``).
    Returns one dict per (variant, backend): model, format, precision, backend, path, load_ms,
    median_us, p99_us, rss_mb, quality_drop (metric units vs FP32; None when unknown), metric, and
    ``error`` when it could not be measured.  ``on_result(dict)`` is called after each one."""
    from ..backends import BACKENDS
    from .bench import measure
    from .manifest import FORMATS, Model, package_dir, verify

    wanted = None if backends is None else [b for b in backends]
    if wanted is not None:
        unknown = [b for b in wanted if b not in BACKENDS]
        if unknown:
            raise ModelError(f"backends {unknown} are unknown; expected some of {list(BACKENDS)}")
    devices = dict(devices or {})
    results: list[dict] = []

    def emit(r):
        results.append(r)
        if on_result is not None:
            on_result(r)

    def run(path, backend, base, options=None):
        try:
            res = measure(path, backend, threads=threads, runs=runs, warmup=warmup, shapes=shapes, seed=seed,
                          isolate=isolate, device=devices.get(backend), options=options)
        except ModelError as exc:
            emit(_failed(base, exc))
            return None
        r = dict(base)
        for k in ("load_ms", "median_us", "p99_us", "mean_us", "first_run_us", "rss_mb", "rss_load_mb", "device"):
            r[k] = res.get(k)
        r["_bench"] = res
        return r

    for m in models:
        if isinstance(m, Model):
            ref = m.reference_metric()
            for v in m.variants:
                names = [b for b in v.backends if (wanted is None or b in wanted) and BACKENDS[b].available()]
                if not names:
                    continue
                base = {"model": m.name, "format": v.format, "precision": v.precision, "path": str(v.path),
                        "quality_drop": m.quality_drop(v), "metric": ref[0] if ref else None,
                        "metric_value": (m.metric(v) or (None, None))[1]}
                if v.alternative:
                    # another model (Silero VAD, RNNoise): measured and reported so a device can pick it
                    # by name (variant = "<name>"), never chosen by auto nor a rung of the ladder
                    if v.package and package_dir(v.package) is None:
                        continue  # its package is not installed: nothing to measure
                    base.update(name=v.name, alternative=True, quality_drop=None)
                try:
                    verify(v)
                except ModelError as exc:
                    for b in names:
                        emit(_failed(dict(base, backend=b), exc))
                    continue
                for b in names:
                    r = run(v.path, b, dict(base, backend=b), v.load_options or None)
                    if r is not None:
                        r.pop("_bench")
                        emit(r)
        else:
            path = str(m)
            from ..backends import backends_for

            fmt = next((f for f, exts in FORMATS.items() if Path(path).suffix.lower() in exts), "onnx")
            names = [b.name for b in backends_for(path) if (wanted is None or b.name in wanted) and b.available()]
            if not names:
                raise ModelError(f"model file {path}: no installed backend of {wanted or list(BACKENDS)} reads "
                                 f"{Path(path).suffix} files")
            for b in names:
                base = {"model": Path(path).stem, "format": fmt, "precision": None, "path": path, "backend": b,
                        "quality_drop": None, "metric": None, "metric_value": None}
                r = run(path, b, base)
                if r is not None:
                    bench = r.pop("_bench")
                    r["precision"] = _guess_precision(bench)
                    r["quality_drop"] = 0.0 if r["precision"] == "fp32" else None
                    emit(r)
    return results


def choose(results: Iterable[Mapping], budget_ms: float | None = None, max_quality_drop: float | None = None,
           by: str = "p99_us") -> dict:
    """Per model, the fastest (median) variant whose ``by`` latency (p99 by default) fits
    ``budget_ms`` and whose ``quality_drop`` is at most ``max_quality_drop`` (metric units versus
    FP32; ``None`` allows any drop, an unknown drop is allowed only then).

    When no variant meets both, real time wins over quality: the best-quality variant that meets
    the budget (``quality_ok`` False); when none meets the budget, the fastest (``within_budget``
    False).  Returns ``{model: choice}``; a choice holds the chosen result's fields plus
    ``within_budget``, ``quality_ok`` (None: unknown, no metrics), ``reason`` and ``ladder`` (the cheaper candidates, next
    cheaper first: what a governor steps down to)."""
    budget_us = math.inf if budget_ms is None else float(budget_ms) * 1e3
    by_model: dict[str, list] = {}
    for r in results:
        by_model.setdefault(r["model"], []).append(r)
    out = {}
    for model, rs in by_model.items():
        ok = [r for r in rs if not r.get("error") and r.get("median_us") is not None and not r.get("alternative")]
        if not ok:
            failed = [r for r in rs if r.get("error") or r.get("median_us") is None]
            alts = [variant_label(r) for r in rs if r.get("alternative") and r not in failed]
            why = ("no variant could be measured: " + "; ".join(f"{variant_label(r)}: {r.get('error')}"
                                                                  for r in failed)) if failed else ""
            if alts:
                why += ("; " if why else "") + (f"measured only {', '.join(alts)}, chosen by name "
                                                 "(variant = ...), never automatically")
            out[model] = {"model": model, "chosen": None, "within_budget": False, "quality_ok": False,
                          "reason": why, "ladder": []}
            continue

        def fits(r):
            return float(r[by] if r.get(by) is not None else r["median_us"]) <= budget_us

        def q_ok(r):
            if max_quality_drop is None:
                return True
            d = r.get("quality_drop")
            return d is not None and d <= float(max_quality_drop) + 1e-12

        def q_state(r):  # True / False / None (unknown: no metrics to compare)
            if max_quality_drop is None or q_ok(r):
                return True
            return None if r.get("quality_drop") is None else False

        def drop_key(r):
            d = r.get("quality_drop")
            return math.inf if d is None else d

        both = [r for r in ok if fits(r) and q_ok(r)]
        if both:
            pick = min(both, key=lambda r: r["median_us"])
            within, qual = True, True
            reason = "fastest variant within the latency budget and the allowed quality drop"
        else:
            in_budget = [r for r in ok if fits(r)]
            if in_budget:
                pick = min(in_budget, key=lambda r: (drop_key(r), r["median_us"]))
                within, qual = True, q_state(pick)
                reason = ("no variant within the allowed quality drop meets the latency budget; "
                          "the best-quality variant that meets it")
            else:
                pick = min(ok, key=lambda r: (r.get(by) if r.get(by) is not None else r["median_us"]))
                within, qual = False, q_state(pick)
                reason = "no variant meets the latency budget; the fastest one"
        ladder = sorted((r for r in ok if r["median_us"] < pick["median_us"]), key=lambda r: -r["median_us"])
        choice = {k: v for k, v in pick.items() if not k.startswith("_")}
        choice.update(within_budget=within, quality_ok=qual, reason=reason, chosen=variant_label(pick),
                      budget_ms=budget_ms, max_quality_drop=max_quality_drop,
                      ladder=[variant_label(r) for r in ladder])
        out[model] = choice
    return out


# ------------------------------------------------------------------------------------ writing
def profile_path(device: str, state_dir_=None, service: bool = False) -> Path:
    return state_dir(state_dir_, service) / "profiles" / f"{device}.toml"


_RESULT_FIELDS = ("model", "format", "precision", "backend", "device", "path", "load_ms", "median_us", "p99_us",
                  "mean_us", "first_run_us", "rss_mb", "rss_load_mb", "quality_drop", "metric", "metric_value",
                  "error", "name", "alternative")


def _clean(d: Mapping, fields=_RESULT_FIELDS) -> dict:
    out = {}
    for k in fields:
        v = d.get(k)
        if v is None:
            continue
        if isinstance(v, float):
            v = round(v, 4)
        out[k] = v
    return out


def write_profile(device: str, results: list, choices: Mapping, *, device_info: Mapping | None = None,
                  settings: Mapping | None = None, state_dir_=None, service: bool = False, path=None) -> Path:
    """Write the measured profile for ``device`` atomically; returns its path
    (``<state dir>/profiles/<device>.toml`` unless ``path`` is given)."""
    target = Path(os.fspath(path)) if path is not None else profile_path(device, state_dir_, service)
    doc: dict = {"schema": PROFILE_SCHEMA, "device": device,
                 "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()}
    if device_info:
        doc["host"] = {k: v for k, v in device_info.items()
                       if v is not None and k in ("reason", "board", "board_model", "cpu", "machine", "cores",
                                                  "int8_flags", "memory_mb", "openvino_devices")}
    if settings:
        doc["settings"] = {k: v for k, v in settings.items() if v is not None}
    doc["choices"] = {}
    for model, c in choices.items():
        entry = _clean(c, _RESULT_FIELDS + ("within_budget", "quality_ok", "reason", "chosen", "budget_ms",
                                            "max_quality_drop", "ladder"))
        entry.pop("model", None)
        doc["choices"][model] = entry
    doc["results"] = [_clean(r) for r in results]
    text = _toml.dumps(doc, header=f"edge_runtime measured device profile for {device} "
                                   "(written by `edge-runtime profile`; safe to delete)")
    try:
        os.makedirs(target.parent, exist_ok=True)
        with AtomicFile(str(target), "w") as f:
            f.write(text)
    except OSError as e:
        raise ConfigError(f"{target}: cannot write the device profile: {e.strerror or e}; expected a writable "
                          "state folder (set EDGE_RUNTIME_STATE or --state-dir)") from None
    return target


def load_profile(path) -> dict:
    """Read a measured profile written by :func:`write_profile`."""
    p = Path(os.fspath(path))
    try:
        data = read_toml(p, what="measured profile")
    except FileNotFoundError:
        raise ConfigError(f"{p}: device profile not found (run `edge-runtime profile`)") from None
    if data.get("schema") != PROFILE_SCHEMA:
        raise ConfigError(f"{p}: schema = {data.get('schema')!r}; expected {PROFILE_SCHEMA}")
    return data


def _f(v, spec):
    return "-" if v is None else format(v, spec)


def format_table(results: list, choices: Mapping) -> str:
    """Results as a table; the chosen variant of each model is marked ``*``."""
    chosen = {(m, c.get("chosen")) for m, c in choices.items()}
    cols = ("", "model", "variant", "load ms", "median us", "p99 us", "RSS MB", "quality drop", "note")
    rows = []
    for r in results:
        mark = "*" if (r["model"], variant_label(r)) in chosen else ""
        note = ("ERROR: " + " ".join(str(r["error"]).split())[:160]) if r.get("error") else ""
        qd = r.get("quality_drop")
        rows.append((mark, r["model"], variant_label(r), _f(r.get("load_ms"), ".1f"), _f(r.get("median_us"), ".1f"),
                     _f(r.get("p99_us"), ".1f"), _f(r.get("rss_mb"), ".1f"),
                     "?" if qd is None else f"{qd:+.4g}" + (f" {r['metric']}" if r.get("metric") else ""), note))
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    right = (False, False, False, True, True, True, True, True, False)

    def line(vals):
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(vals, widths, right)).rstrip()

    out = [line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows]
    for m, c in choices.items():
        flags = [] if c.get("within_budget") or not c.get("chosen") else ["OVER BUDGET"]
        if c.get("quality_ok") is False and c.get("chosen"):
            flags.append("quality drop above the limit")
        elif c.get("chosen") and c.get("quality_ok") is None:
            flags.append("quality unknown: no metrics to compare with FP32")
        out.append(f"{m}: {c.get('chosen') or 'nothing'} ({c['reason']}{'; ' + ', '.join(flags) if flags else ''})")
    return "\n".join(out)

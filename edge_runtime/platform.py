"""What this device is: board, CPU features that matter for INT8, memory, backends present.

Read from the files the kernel and vendors provide (``/proc/cpuinfo``, the device tree,
``/etc/nv_tegra_release``); nothing here imports a backend library (their presence is
checked with ``importlib`` metadata, which is cheap).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform as _platform
import sys
from pathlib import Path

import numpy as np

# CPU flags that decide how fast INT8 inference can be.
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "avx512f", "avx2", "fma", "f16c",
              "asimddp", "i8mm", "asimdhp", "sve", "sve2", "bf16")

BACKEND_PACKAGES = {
    "onnxruntime": ("onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")),
    "litert": ("ai_edge_litert", ("ai-edge-litert",)),
    "tflite_runtime": ("tflite_runtime", ("tflite-runtime",)),
    "openvino": ("openvino", ("openvino",)),
}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def cpu_info() -> dict:
    text = _read("/proc/cpuinfo") or ""
    model = None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and model is None:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    if model is None:
        model = _platform.processor() or _platform.machine()
    return {
        "model": model,
        "machine": _platform.machine(),
        "cores": os.cpu_count() or 1,
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "int8_flags": [f for f in INT8_FLAGS if f in flags],
    }


def memory_mb() -> int | None:
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def board() -> dict:
    """Raspberry Pi / Jetson / generic, from the device tree and vendor release files."""
    model = _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    model = model.strip("\x00 \n") if model else None
    tegra = _read("/etc/nv_tegra_release")
    kind = "generic"
    if model and "Raspberry Pi" in model:
        if "Raspberry Pi 5" in model:
            kind = "rpi5"
        elif "Raspberry Pi 4" in model or "Compute Module 4" in model:
            kind = "rpi4"
        else:
            kind = "rpi"
    elif tegra is not None or (model and ("Jetson" in model or "NVIDIA" in model)):
        kind = "jetson"
    elif _platform.machine() in ("x86_64", "AMD64", "i686"):
        kind = "x86"
    return {"kind": kind, "model": model, "tegra_release": tegra.splitlines()[0].strip() if tegra else None}


def backends() -> dict:
    """Backend name -> installed version (``None`` when not installed). Nothing is imported."""
    out = {}
    for name, (module, dists) in BACKEND_PACKAGES.items():
        version = None
        if importlib.util.find_spec(module) is not None:
            for dist in dists:
                try:
                    version = importlib.metadata.version(dist)
                    break
                except importlib.metadata.PackageNotFoundError:
                    continue
            version = version or "unknown"
        out[name] = version
    return out


def alsa_available() -> bool:
    import ctypes.util

    return ctypes.util.find_library("asound") is not None


def detect() -> dict:
    from ._version import __version__

    return {
        "edge_runtime": __version__,
        "python": _platform.python_version(),
        "numpy": np.__version__,
        "os": f"{_platform.system()} {_platform.release()}",
        "board": board(),
        "cpu": cpu_info(),
        "memory_mb": memory_mb(),
        "backends": backends(),
        "alsa": alsa_available(),
        "executable": sys.executable,
    }

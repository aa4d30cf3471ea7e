"""The model manifest's schema: its data types (:class:`Model`, :class:`Variant`, :class:`IOSpec`,
...) and the parser that validates a manifest document into them.

The format itself is documented in :mod:`edge_runtime.models.manifest` (whose names re-export
everything here); every validation error names the file, the key, the value and what was expected.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import ModelError

__all__ = ["SCHEMA", "FORMATS", "PRECISIONS", "FORMAT_BACKENDS", "DTYPES", "IOSpec", "Provenance",
           "Variant", "Model", "Manifest", "parse_manifest", "load_manifest", "package_dir", "sha256_file"]

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
                "weights", "weights_sha256", "weights_size", "notes", "name", "package")
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
    #: a native library's separate model file (``weights``, beside ``path``'s root; e.g. libDF's
    #: DeepFilterNet3 archive): absolute path and the relative path as written
    weights_file: Path | None = None
    weights_rel: str = ""

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
        """The second file the variant needs: an IR's ``.bin``, a native library's model file."""
        if self.format == "openvino-ir":
            return self.path.with_suffix(".bin")
        return self.weights_file

    @property
    def load_options(self) -> dict:
        """Backend options the variant's files imply (a native library's model file)."""
        return {"model_file": str(self.weights_file)} if self.weights_file is not None else {}

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
        if self.weights_rel:
            d["weights"] = self.weights_rel
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
    wrel = _get_str(v, "weights", path, where, required=False)
    if wrel and fmt != "native":
        _fail(path, where, f"weights = {wrel!r} is for format native (a library's model file); an "
                           f"{fmt} variant has none")
    if wrel and (os.path.isabs(wrel) or ".." in Path(wrel).parts):
        _fail(path, where, f"weights = {wrel!r}; expected a path relative to the "
                           f"{'package' if package else 'manifest'}, inside its folder")
    if fmt == "openvino-ir" or wrel:
        wsha = _get_str(v, "weights_sha256", path, where).lower()
        if len(wsha) != 64 or any(c not in "0123456789abcdef" for c in wsha):
            _fail(path, where, f"weights_sha256 = {v['weights_sha256']!r}; expected 64 hex digits")
        wsize = _get_int(v, "weights_size", path, where, required=True, minimum=0)
    elif "weights_sha256" in v or "weights_size" in v:
        _fail(path, where, f"weights_sha256/weights_size are for format openvino-ir (its .bin) or a native "
                           f"variant's weights file, not {fmt} without weights")
    metrics = _parse_metrics(v.get("metrics", {}), path, where)
    inputs = _parse_specs(v["inputs"], path, where + ".inputs") if "inputs" in v else None
    outputs = _parse_specs(v["outputs"], path, where + ".outputs") if "outputs" in v else None
    root = base if not package else (package_dir(package) or Path(f"/nonexistent/python-package/{package}"))
    return Variant(model=model, format=fmt, precision=prec, path=(root / rel).resolve(), rel_path=rel,
                   sha256=sha, size=size, metrics=metrics, inputs=inputs, outputs=outputs,
                   weights_sha256=wsha, weights_size=wsize, notes=_get_str(v, "notes", path, where, False),
                   manifest=str(path), name=vname, package=package,
                   weights_file=(root / wrel).resolve() if wrel else None, weights_rel=wrel)


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


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file: what a variant's ``sha256`` (and ``weights_sha256``) holds."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()

"""Model layer: the manifest of shipped models and their variants, benchmarks, device profiles.

    from edge_runtime.models import default_registry, load
    reg = default_registry()                       # models_int8/manifest.toml and friends
    v = reg["kws"].variant(format="onnx", precision="int8-static")
    sess = load(v, threads=1)                      # sha256-verified, I/O checked, shared session

* :mod:`.manifest`: the manifests on the search path (:class:`Registry`), ``verify`` / ``load``;
  it re-exports :mod:`.schema` (the data types, parse/validate) and :mod:`.writer`
  (``manifest_entry`` / ``write_manifest`` for the quantization tooling).
* :mod:`.bench`: ``edge-runtime bench`` on any ONNX/TFLite/IR file (imported on use).
* :mod:`.profiler`: device detection, device defaults, ``profile_models`` and ``choose``
  (imported on use).

Importing this package imports no backend library.
"""
from .manifest import (FORMAT_BACKENDS, FORMATS, PRECISIONS, SCHEMA, IOSpec, Manifest, Model, Provenance,
                       Registry, Variant, check_spec, default_registry, load, load_manifest, manifest_entry,
                       manifest_paths, parse_manifest, sha256_file, upsert_model, verify, write_manifest)



def available(check: bool = False) -> list[dict]:
    """The models on the manifest search path, each with its variants, metrics and provenance
    (``check=True`` verifies every file's sha256): what ``edge-runtime models`` lists."""
    from .manifest import describe

    return describe(default_registry(), check=check)


__all__ = ["available", "FORMAT_BACKENDS", "FORMATS", "PRECISIONS", "SCHEMA", "IOSpec", "Manifest", "Model", "Provenance",
           "Registry", "Variant", "check_spec", "default_registry", "load", "load_manifest", "manifest_entry",
           "manifest_paths", "parse_manifest", "sha256_file", "upsert_model", "verify", "write_manifest"]

"""Preset files (TOML), written atomically.

* a ``synth`` (or any generator chain's) preset::

      schema = 1
      chain = "synth"
      [chain_config]   # sample_rate, noise_seed: what make_chain() rebuilds the chain with
      [params]         # every parameter of the chain's space, by name
      [fit]            # how it was found: target, method, loss, evaluations, seconds, seed

  played with ``edge-runtime preset render p.toml -o note.wav``;
* an ``effects`` preset is a pipeline file (``sample_rate = "input"``, the five nodes with their
  fitted values), so ``edge-runtime run p.toml -i in.wav -o out.wav`` and
  ``edge_runtime.api.Pipeline.from_toml`` load it like any pipeline; the fit is in its description.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping

from ..atomic import AtomicFile
from ..errors import ConfigError
from ..models._toml import dumps
from .chains import Chain, make_chain

__all__ = ["Preset", "preset_doc", "write_preset", "read_preset"]

SCHEMA = 1


@dataclasses.dataclass
class Preset:
    """A chain (by name and config) and its parameter values."""

    chain: str
    chain_config: dict
    params: dict
    fit: dict = dataclasses.field(default_factory=dict)
    path: str = ""

    def make_chain(self) -> Chain:
        return make_chain(self.chain, **self.chain_config)


def preset_doc(chain: Chain, params: Mapping[str, float], fit: Mapping | None = None) -> dict:
    """The TOML data of a preset for ``chain`` (see the module doc)."""
    full = chain.space.complete(params)
    fit = {k: v for k, v in (fit or {}).items() if v is not None}
    if chain.name == "effects":
        from .effects import pipeline_doc

        desc = "effects preset (edge-runtime optimize)" + "".join(
            f"; {k} {v:.6g}" if isinstance(v, float) else f"; {k} {v}" for k, v in fit.items())
        return pipeline_doc(full, desc)
    return {"schema": SCHEMA, "chain": chain.name, "chain_config": chain.config(),
            "params": {k: round(float(v), 6) for k, v in full.items()}, "fit": dict(fit)}


def write_preset(path, chain: Chain, params: Mapping[str, float], fit: Mapping | None = None) -> str:
    """Write the preset atomically (no half-written file on any error); returns the path."""
    path = os.fspath(path)
    text = dumps(preset_doc(chain, params, fit),
                 header=f"edge_runtime preset ({chain.name}); written by edge-runtime optimize; docs/optimize.md")
    from ..errors import AudioOutputError

    try:
        with AtomicFile(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise AudioOutputError(f"{path}: cannot write the preset: {e.strerror or e}") from None
    return path


def read_preset(path) -> Preset:
    """Read and check a preset file (either form); a bad one is one ConfigError naming the file."""
    from ..tomlfile import read_toml

    path = os.fspath(path)
    try:
        doc = read_toml(path, what="preset")
    except FileNotFoundError:
        raise ConfigError(f"{path}: preset file not found") from None
    if "nodes" in doc:
        from ..config import parse_pipeline
        from .effects import params_from_pipeline

        parse_pipeline(doc, path)
        params = params_from_pipeline(doc, path)
        chain = make_chain("effects")
        return Preset("effects", {}, chain.space.complete(params, path), {"description": doc.get("description", "")},
                      path)
    if doc.get("schema") != SCHEMA:
        raise ConfigError(f"{path}: schema = {doc.get('schema')!r}; expected {SCHEMA} (an edge_runtime preset)")
    name = doc.get("chain")
    if not isinstance(name, str):
        raise ConfigError(f"{path}: missing chain = \"...\" (the chain the preset is for)")
    cfg = doc.get("chain_config", {})
    params = doc.get("params")
    if not isinstance(cfg, dict) or not isinstance(params, dict):
        raise ConfigError(f"{path}: expected [chain_config] and [params] tables")
    try:
        chain = make_chain(name, **cfg)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return Preset(name, dict(cfg), chain.space.complete(params, path), dict(doc.get("fit", {})), path)

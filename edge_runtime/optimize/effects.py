"""The ``effects`` chain: existing engine nodes (high-pass -> peak EQ -> high shelf -> gain ->
limiter) run through the engine; its target is an (input, processed) pair.

A fitted preset is a pipeline file (``sample_rate = "input"``): ``edge-runtime run preset.toml``
and :meth:`edge_runtime.api.Pipeline.from_toml` load it like any other pipeline.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import ConfigError
from .base import Chain
from .space import Param, ParameterSpace

__all__ = ["EffectsChain", "EFFECTS_PARAMS", "pipeline_doc", "params_from_pipeline"]

EFFECTS_PARAMS = (
    Param("highpass_hz", 20.0, 1000.0, 40.0, "log", "Hz", "high-pass corner (Butterworth, order 2)"),
    Param("peak_hz", 100.0, 6000.0, 1000.0, "log", "Hz", "peak EQ centre"),
    Param("peak_gain_db", -12.0, 12.0, 0.0, "lin", "dB", "peak EQ gain"),
    Param("peak_q", 0.3, 5.0, 1.0, "log", "Q", "peak EQ quality factor"),
    Param("shelf_hz", 1000.0, 6000.0, 4000.0, "log", "Hz", "high-shelf corner"),
    Param("shelf_gain_db", -12.0, 12.0, 0.0, "lin", "dB", "high-shelf gain"),
    Param("gain_db", -24.0, 12.0, 0.0, "lin", "dB", "gain before the limiter"),
    Param("limit_db", -24.0, 0.0, -1.0, "lin", "dBFS", "limiter ceiling"),
)
# node name -> (node type, {node param: chain param})
_NODES = (
    ("highpass", "highpass", {"cutoff_hz": "highpass_hz"}),
    ("peak", "peak", {"cutoff_hz": "peak_hz", "gain_db": "peak_gain_db", "q": "peak_q"}),
    ("shelf", "highshelf", {"cutoff_hz": "shelf_hz", "gain_db": "shelf_gain_db"}),
    ("gain", "gain", {"gain_db": "gain_db"}),
    ("limiter", "limiter", {"threshold_db": "limit_db"}),
)


def pipeline_doc(params: Mapping[str, float], description: str = "") -> dict:
    """The pipeline document (as TOML data) that applies ``params``."""
    nodes = []
    for name, ntype, keys in _NODES:
        node = {"type": ntype, "name": name}
        node.update({k: float(params[v]) for k, v in keys.items()})
        if ntype == "highpass":
            node["order"] = 2
        nodes.append(node)
    return {"name": "effects-preset", "description": description, "sample_rate": "input", "block_ms": 10.0,
            "channels": "any", "nodes": nodes}


def params_from_pipeline(doc: dict, where: str) -> dict[str, float]:
    """The chain parameters of a pipeline document written by :func:`pipeline_doc`."""
    by_name = {n.get("name"): n for n in doc.get("nodes", []) if isinstance(n, dict)}
    out = {}
    for name, ntype, keys in _NODES:
        node = by_name.get(name)
        if node is None or node.get("type") != ntype:
            raise ConfigError(f"{where}: not an effects preset: expected a node named {name!r} of type {ntype!r}")
        for k, v in keys.items():
            if k not in node:
                raise ConfigError(f"{where}: node {name!r} lacks {k!r}")
            out[v] = node[k]
    return out


class EffectsChain(Chain):
    """The effect chain of engine nodes; each render builds the pipeline the preset file describes."""

    name = "effects"
    needs_input = True

    def __init__(self, sample_rate: int = 16000):
        from ..config import SAMPLE_RATES

        sample_rate = int(sample_rate)
        if sample_rate not in SAMPLE_RATES:
            raise ConfigError(f"effects: sample_rate = {sample_rate} is not a pipeline rate "
                              f"(expected one of {', '.join(map(str, SAMPLE_RATES))})")
        self.sample_rate = sample_rate
        self.space = ParameterSpace(EFFECTS_PARAMS)

    def build(self, params: Mapping[str, float]):
        """The engine pipeline (prepared, mono) for ``params``."""
        from ..config import parse_pipeline

        cfg = parse_pipeline(pipeline_doc({**self.space.defaults(), **params}), "<effects chain>")
        return cfg.build(self.sample_rate)

    def render(self, params: Mapping[str, float], n_frames: int, input: np.ndarray | None = None) -> np.ndarray:
        if input is None:
            raise ValueError("effects: render needs the input signal (the target is an (input, processed) pair)")
        x = np.asarray(input, np.float32).reshape(-1)[:int(n_frames)]
        pipe = self.build(params)
        return pipe.process_array(x[np.newaxis, :])[0]

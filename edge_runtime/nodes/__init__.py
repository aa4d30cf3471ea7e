"""Node types a pipeline config can name, with their parameters.

Each capability is one more node: register it here with its parameter schema and the
config loader, the CLI and the docs pick it up.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .._nodes import Gain, Identity, Limiter, Meter, SosFilter
from ..filters import KINDS as FILTER_KINDS
from .anomaly import LEARN_MODES, AnomalyDetect
from .denoise import Denoise

__all__ = ["AnomalyDetect", "Denoise", "Gain", "Identity", "Limiter", "Meter", "NODE_TYPES", "NodeType", "Param", "SosFilter"]


@dataclasses.dataclass(frozen=True)
class Param:
    type: type
    default: Any
    help: str
    choices: tuple | None = None


@dataclasses.dataclass(frozen=True)
class NodeType:
    name: str
    factory: Callable
    params: dict[str, Param]
    help: str


def _filter(kind: str) -> Callable:
    def make(name=None, **kw):
        return SosFilter(kind=kind, name=name or kind, **kw)
    return make


_FILTER_PARAMS = {
    "cutoff_hz": Param(float, 80.0, "corner (high/low-pass) or centre frequency in Hz"),
    "order": Param(int, 2, "Butterworth order for highpass/lowpass (1..12)"),
    "q": Param(float, 0.7071067811865476, "quality factor for RBJ biquads"),
    "gain_db": Param(float, 0.0, "gain for peak/shelf biquads, dB"),
}

NODE_TYPES: dict[str, NodeType] = {
    "identity": NodeType("identity", Identity, {}, "copies its input (engine overhead baseline)"),
    "gain": NodeType("gain", Gain, {"gain_db": Param(float, 0.0, "gain in dB")},
                     "static gain, ramped over one block when changed"),
    "filter": NodeType("filter", SosFilter, {
        "kind": Param(str, "highpass", "filter kind", FILTER_KINDS), **_FILTER_PARAMS},
        "biquad cascade (Butterworth high/low-pass or an RBJ biquad)"),
    **{k: NodeType(k, _filter(k), _FILTER_PARAMS, f"{k} filter (alias of filter kind={k})")
       for k in FILTER_KINDS},
    "limiter": NodeType("limiter", Limiter, {
        "threshold_db": Param(float, -1.0, "output ceiling in dBFS"),
        "lookahead_ms": Param(float, 1.5, "look-ahead (adds this much latency)"),
        "release_ms": Param(float, 60.0, "gain recovery time constant"),
    }, "look-ahead peak limiter, channel-linked"),
    "denoise": NodeType("denoise", Denoise, {
        "model": Param(str, "denoise", "model name in the manifest, or a .onnx/.tflite path"),
        "variant": Param(str, "auto", "manifest variant (auto = the device profile's choice)"),
        "atten_limit_db": Param(float, 100.0, "most a bin is turned down, dB"),
        "strength": Param(float, 1.0, "0 = bypass .. 1 = full model gains"),
        "threads": Param(int, 1, "inference threads"),
        "backend": Param(str, "auto", "onnxruntime, litert, openvino or auto"),
    }, "speech noise reduction (causal GRU gains over a 20 ms STFT; 16 or 48 kHz)"),
    "anomaly": NodeType("anomaly", AnomalyDetect, {
        "state": Param(str, "", "learned state file (read, or written after learning)"),
        "learn": Param(str, "never", "learn at start: never (load state), if_missing, always", LEARN_MODES),
        "learn_s": Param(float, 60.0, "seconds of normal audio to learn from at start"),
        "detector": Param(str, "gmm", "detector used when learning", ("gmm", "kmeans", "iforest", "autoencoder")),
        "quantile_on": Param(float, 0.995, "threshold = this quantile of held-back normal scores"),
        "quantile_off": Param(float, 0.98, "episode ends below this quantile of held-back normal scores"),
        "on_frames": Param(int, 20, "hops above the threshold that start an episode (32 ms each)"),
        "off_frames": Param(int, 10, "hops below the off-threshold that end an episode"),
        "score_interval_ms": Param(float, 0.0, "emit anomaly_score events this often (0 = never)"),
        "seed": Param(int, 0, "random seed of the fit"),
    }, "anomaly detection on learned normal audio (events; audio passes through)"),
    "meter": NodeType("meter", Meter, {"interval_ms": Param(float, 1000.0, "reporting interval")},
                      "peak/RMS level events, audio passes through"),
}

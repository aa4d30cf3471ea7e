"""On-device anomaly detection: learn "normal" from audio, then score a stream.

See :mod:`.model` (fit, state, hysteresis), :mod:`.detectors` (the four detectors) and
:mod:`.cli` (``edge-runtime anomaly learn|monitor``); the pipeline node is
:class:`edge_runtime.nodes.anomaly.AnomalyDetect`.
"""
from .detectors import DETECTORS
from .model import KIND, SCHEMA, AnomalyModel, Hysteresis

__all__ = ["DETECTORS", "KIND", "SCHEMA", "AnomalyModel", "Hysteresis"]

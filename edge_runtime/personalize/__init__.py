"""Personalization: a per-user model of the effect settings a listener wants, learned online.

See :mod:`.model` (the per-parameter regressions, the population prior and their state) and
:mod:`.cli` (``edge-runtime personalize recommend|feedback|info|population``).
"""
from .model import CLASSES, KIND, PARAMS, PRESETS, SCHEMA, Context, Population, UserModel

__all__ = ["CLASSES", "KIND", "PARAMS", "PRESETS", "SCHEMA", "Context", "Population", "UserModel"]

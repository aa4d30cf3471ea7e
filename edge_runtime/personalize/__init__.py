"""Personalization: a per-user model of accepted effect settings, learned online from feedback.

See :mod:`.model` (the contextual bandit and its state) and :mod:`.cli`
(``edge-runtime personalize recommend|feedback|info``).
"""
from .model import CLASSES, KIND, PARAMS, PRESETS, SCHEMA, Context, UserModel

__all__ = ["CLASSES", "KIND", "PARAMS", "PRESETS", "SCHEMA", "Context", "UserModel"]

"""Exceptions with one clear message: what (file, key, value) was wrong and what was expected.

The CLI prints ``error: <message>`` for any :class:`EdgeRuntimeError` and exits non-zero,
so every message must stand on its own.
"""


class EdgeRuntimeError(Exception):
    """Base of all errors edge_runtime reports to a user."""

    exit_code = 2


class ConfigError(EdgeRuntimeError):
    """A pipeline or device config is malformed or names something unknown."""


class AudioInputError(EdgeRuntimeError):
    """Audio that cannot be read: missing, corrupt, truncated, unsupported, wrong shape."""


class AudioOutputError(EdgeRuntimeError):
    """Audio that cannot be written (bad path, unsupported format, disk full)."""


class AudioDeviceError(EdgeRuntimeError):
    """A live audio device (ALSA) cannot be opened or failed beyond recovery."""


class ModelError(EdgeRuntimeError):
    """A model file is missing, tampered with, or does not match its manifest."""


class MissingExtraError(EdgeRuntimeError):
    """A command needs an optional dependency that is not installed; the message names the
    extra that installs it (e.g. ``pip install 'edge-runtime[learn]'``)."""

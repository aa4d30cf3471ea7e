"""Exceptions with one clear message: what (file, key, value) was wrong and what was expected.

The CLI prints ``error: <message>`` for any :class:`EdgeRuntimeError` and exits with the
error's ``exit_code``, so every message must stand on its own. The codes (documented in
``edge-runtime --help`` and docs/cli.md):

* ``2`` (:data:`EXIT_USAGE`): the command cannot work as given -- a bad option, config, input
  file, model file or output path; running it again unchanged fails the same way.
* ``1`` (:data:`EXIT_FAILURE`): the command was right but something failed while it ran -- a
  device that cannot be opened or stops mid-run, a write that fails after the output was opened
  (disk full), an optional dependency that is not installed.
* ``128 + signal`` (130 SIGINT, 143 SIGTERM, 129 SIGHUP): interrupted (set by the CLI).
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class EdgeRuntimeError(Exception):
    """Base of all errors edge_runtime reports to a user."""

    exit_code = EXIT_USAGE


class ConfigError(EdgeRuntimeError):
    """A pipeline or device config is malformed or names something unknown."""


class AudioInputError(EdgeRuntimeError):
    """Audio that cannot be read: missing, corrupt, truncated, unsupported, wrong shape."""


class AudioOutputError(EdgeRuntimeError):
    """Audio that cannot be written as asked (bad path, unsupported format, two outputs on one file)."""


class AudioWriteError(AudioOutputError):
    """An output that was opened failed later (disk full, file system gone read-only, the
    rename into place refused): a runtime failure, not a usage error."""

    exit_code = EXIT_FAILURE


class AudioDeviceError(EdgeRuntimeError):
    """A live audio device (ALSA) asked for with parameters it cannot take (channels, format,
    period sizes)."""


class DeviceFailedError(AudioDeviceError):
    """A live audio device (ALSA) that cannot be opened (absent, busy) or failed beyond
    recovery while running."""

    exit_code = EXIT_FAILURE


class ModelError(EdgeRuntimeError):
    """A model file is missing, tampered with, or does not match its manifest."""


class MissingExtraError(EdgeRuntimeError):
    """A command needs an optional dependency that is not installed; the message names the
    extra that installs it (e.g. ``pip install 'edge-runtime[learn]'``)."""

    exit_code = EXIT_FAILURE

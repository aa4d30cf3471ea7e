"""Open a source or sink from one string, as given on the command line.

* a file path: an audio file (``.wav``, ``.flac``, ``.ogg``, ... through libsndfile), or
  headerless PCM if it ends in ``.raw`` / ``.pcm`` (then ``sample_rate`` and ``channels``
  are needed, and ``raw_format`` says the sample layout);
* ``'-'``: raw PCM on stdin / stdout (``sample_rate``, ``channels`` and ``raw_format``);
* ``'alsa:DEVICE'``: an ALSA PCM, e.g. ``alsa:default``, ``alsa:hw:1,0``, ``alsa:plughw:1``.
"""
from __future__ import annotations

import os

from ..errors import AudioDeviceError, AudioInputError, AudioOutputError
from .base import Sink, Source

RAW_EXTENSIONS = (".raw", ".pcm")


def _alsa_device(spec: str, err) -> str:
    device = spec[len("alsa:"):]
    if not device:
        raise err(f"{spec!r}: no ALSA device after 'alsa:', expected e.g. 'alsa:default' "
                  "or 'alsa:hw:1,0'")
    return device


def _need_rate_channels(spec, what, sample_rate, channels, err):
    if sample_rate is None or channels is None:
        missing = " and ".join(n for n, v in (("sample_rate (--rate)", sample_rate),
                                              ("channels (--channels)", channels)) if v is None)
        raise err(f"{spec}: {what} has no header to say its format; {missing} must be given, "
                  "e.g. --rate 16000 --channels 1")


def open_source(spec, *, sample_rate: int | None = None, channels: int | None = None,
                raw_format: str = "s16le", period_frames: int | None = None, periods: int = 4,
                alsa_format: str = "S16_LE") -> Source:
    """A :class:`Source` for ``spec`` (a path, ``'-'`` or ``'alsa:DEVICE'``).

    ``sample_rate`` / ``channels`` describe raw PCM and ALSA input (files carry their own and
    these are ignored for them); ``period_frames`` / ``periods`` size the ALSA buffer
    (default period: 20 ms).
    """
    spec = os.fspath(spec)
    if spec == "-" or spec.lower().endswith(RAW_EXTENSIONS):
        from .raw import RawSource

        what = "raw PCM on stdin" if spec == "-" else "raw PCM"
        _need_rate_channels("<stdin>" if spec == "-" else spec, what, sample_rate, channels,
                            AudioInputError)
        return RawSource(spec, sample_rate, channels, raw_format)
    if spec.startswith("alsa:"):
        from .alsa import AlsaSource

        device = _alsa_device(spec, AudioDeviceError)
        _need_rate_channels(spec, "ALSA capture", sample_rate, channels, AudioDeviceError)
        return AlsaSource(device, sample_rate, channels, period_frames=period_frames,
                          periods=periods, fmt=alsa_format)
    from .files import FileSource

    return FileSource(spec)


def open_sink(spec, sample_rate: int, channels: int, *, raw_format: str = "s16le",
              subtype: str | None = None, format: str | None = None,
              period_frames: int | None = None, periods: int = 4,
              alsa_format: str = "S16_LE") -> Sink:
    """A :class:`Sink` for ``spec`` (a path, ``'-'`` or ``'alsa:DEVICE'``).

    Files are written atomically (see :class:`~edge_runtime.io.files.FileSink`); ``subtype``
    and ``format`` apply to them only, ``raw_format`` to ``'-'`` and ``.raw``/``.pcm``.
    """
    spec = os.fspath(spec)
    if spec == "-" or spec.lower().endswith(RAW_EXTENSIONS):
        from .raw import RawSink

        return RawSink(spec, sample_rate, channels, raw_format)
    if spec.startswith("alsa:"):
        from .alsa import AlsaSink

        return AlsaSink(_alsa_device(spec, AudioDeviceError), sample_rate, channels,
                        period_frames=period_frames, periods=periods, fmt=alsa_format)
    from .files import FileSink

    if not spec:
        raise AudioOutputError("empty output path, expected a file name, '-' or 'alsa:DEVICE'")
    return FileSink(spec, sample_rate, channels, subtype=subtype, format=format)


def _is_stream(spec) -> bool:
    return spec is None or spec == "-" or str(spec).startswith("alsa:")


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:                       # one does not exist yet: compare where they would be
        return os.path.realpath(a) == os.path.realpath(b)


def resolve_output(spec):
    """Where an output path writes: through a symlink to its target (the atomic rename then
    replaces the target and the link stays, as an editor saving through a link does)."""
    if _is_stream(spec):
        return spec
    spec = os.fspath(spec)
    return os.path.realpath(spec) if os.path.islink(spec) else spec


def check_outputs(inputs: dict, outputs: dict, *, overwrite_input: bool = False) -> None:
    """Refuse outputs that would destroy an input or each other. ``inputs`` / ``outputs`` map an
    option name (``-i``, ``-o``, ``--events``) to its path (or ``-`` / ``alsa:...`` / None).

    * an output that is an input (the same file, also through symlinks or hard links) unless
      ``overwrite_input`` (then the input is read whole before the atomic rename replaces it);
    * two outputs that are the same file, or two outputs both on stdout (``-``): PCM and JSON
      lines would interleave.
    """
    outs = [(k, v) for k, v in outputs.items() if v is not None]
    on_stdout = [k for k, v in outs if v == "-"]
    if len(on_stdout) > 1:
        raise AudioOutputError(f"{' and '.join(on_stdout)} both write to stdout ('-'): their data would "
                               "interleave; send one of them to a file")
    files = [(k, os.fspath(v)) for k, v in outs if not _is_stream(v)]
    for i, (k, v) in enumerate(files):
        for k2, v2 in files[i + 1:]:
            if _same(v, v2):
                raise AudioOutputError(f"{k} {v} and {k2} {v2} are the same file; expected different outputs")
        if overwrite_input:
            continue
        for ki, vi in inputs.items():
            if not _is_stream(vi) and _same(v, os.fspath(vi)):
                raise AudioOutputError(f"{k} {v} is the input file ({ki} {vi}): it would be overwritten; "
                                       "write elsewhere, or pass --overwrite-input to replace it")

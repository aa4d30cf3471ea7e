"""Audio sources and sinks: files (soundfile), raw PCM on stdin/stdout, ALSA.

ALSA is reached through ctypes on libasound.so.2, loaded when a device is first opened, so
importing this package works on machines without alsa-lib.
"""
from .alsa import AlsaSink, AlsaSource
from .base import Sink, Source
from .files import FileSink, FileSource
from .open import open_sink, open_source
from .raw import RawSink, RawSource

__all__ = ["AlsaSink", "AlsaSource", "FileSink", "FileSource", "RawSink", "RawSource",
           "Sink", "Source", "open_sink", "open_source"]

"""Audio sources and sinks: files (soundfile), raw PCM on stdin/stdout, ALSA."""
from .base import Sink, Source

__all__ = ["Sink", "Source"]

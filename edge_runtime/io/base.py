"""Source and sink interface shared by files, raw PCM streams and ALSA.

Audio crosses this boundary as float32 arrays shaped ``(frames, channels)`` (interleaved,
the layout of every file and device API); the engine works on ``(channels, frames)`` and
the runner transposes into its preallocated block.
"""
from __future__ import annotations

import abc

import numpy as np

# Sample rates any input or output may have. Outside this range a header is broken or hostile:
# a 96 KB file saying 1 Hz or 1e9 Hz costs minutes of resampling CPU and hundreds of MB.
MIN_SAMPLE_RATE = 4000
MAX_SAMPLE_RATE = 768000


def check_sample_rate(name: str, rate, err, what: str = "sample rate") -> int:
    """``rate`` as an int, or ``err`` naming ``name``, the value and the accepted range."""
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or \
            not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise err(f"{name}: {what} {rate!r} Hz; expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    return int(rate)


class Source(abc.ABC):
    """A stream of audio frames read in blocks.

    Attributes set by every implementation: ``name`` (path or device, for messages),
    ``sample_rate`` (Hz), ``channels``, ``frames`` (total frames, or ``None`` when unknown,
    e.g. a live device or stdin).
    """

    name: str = "source"
    sample_rate: int
    channels: int
    frames: int | None = None

    @abc.abstractmethod
    def read_into(self, out: np.ndarray) -> int:
        """Fill ``out`` (float32, ``(n, channels)``, C-contiguous) from the start.

        Returns the number of frames written; fewer than ``n`` only at the end of the
        stream, 0 once it is exhausted. Raises :class:`~edge_runtime.errors.AudioInputError`
        on corrupt or truncated data.
        """

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False


class Sink(abc.ABC):
    """Where processed frames go. File sinks write to a temporary file and only put it
    under its final name on ``close(commit=True)``; ``close(commit=False)`` discards it,
    so a failed run never leaves a half-written output behind."""

    name: str = "sink"
    sample_rate: int
    channels: int

    @abc.abstractmethod
    def write(self, block: np.ndarray) -> None:
        """Write float32 frames shaped ``(n, channels)``."""

    def close(self, commit: bool = True) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(commit=exc_type is None)
        return False

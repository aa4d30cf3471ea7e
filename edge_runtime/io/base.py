"""Source and sink interface shared by files, raw PCM streams and ALSA.

Audio crosses this boundary as float32 arrays shaped ``(frames, channels)`` (interleaved,
the layout of every file and device API); the engine works on ``(channels, frames)`` and
the runner transposes into its preallocated block.
"""
from __future__ import annotations

import abc

import numpy as np


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

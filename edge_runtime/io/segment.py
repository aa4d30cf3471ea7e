"""Long recordings as a series of complete files: ``out.wav`` becomes ``out-20261207T010203Z-00001.wav``,
``out-20261207T011203Z-00002.wav``, ...

Each segment is an ordinary atomic file sink (temporary name, fsync, rename on commit): it
appears under its name, complete and valid, as soon as it holds ``segment_frames`` frames, so a
crash or power loss costs at most the segment being written, never the whole recording. Names
start with the segment's UTC start time, so they sort in recording order across restarts; the
number counts segments within one run. A block that crosses a boundary is split there; the next
file is opened at the first frame after the boundary (an end on a boundary leaves no empty file).
"""
from __future__ import annotations

import os
import time

import numpy as np

from .base import Sink

__all__ = ["SegmentedSink", "segment_path"]


def segment_path(path: str, index: int, start: float) -> str:
    """``dir/out.wav`` -> ``dir/out-YYYYmmddTHHMMSSZ-NNNNN.wav`` (UTC start time, 1-based index)."""
    stem, ext = os.path.splitext(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start))
    return f"{stem}-{stamp}-{index:05d}{ext}"


class SegmentedSink(Sink):
    """A sink that writes ``segment_frames`` frames per file through ``opener(path)``."""

    def __init__(self, path: str, sample_rate: int, channels: int, segment_frames: int, opener, clock=time.time):
        if segment_frames <= 0:
            raise ValueError(f"{path}: segment_frames must be > 0, got {segment_frames}")
        self.name = self.path = os.fspath(path)
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self.segment_frames = int(segment_frames)
        self._opener, self._clock = opener, clock
        self.index = 0
        self.committed: list[str] = []
        self.frames_written = 0
        self._in_segment = 0
        self._sink = None
        from ..atomic import sweep_stale

        stem, ext = os.path.splitext(os.path.basename(self.path))
        sweep_stale(self.path, prefix=stem + "-", suffix=ext)   # segments a killed run left unfinished
        self._open()                 # the first file now: a bad path fails at start, not later

    def _open(self) -> None:
        self.index += 1
        self._current = segment_path(self.path, self.index, self._clock())
        self._sink = self._opener(self._current)
        self._in_segment = 0

    def write(self, block: np.ndarray) -> None:
        n = block.shape[0]
        pos = 0
        while pos < n:
            if self._sink is None:
                self._open()
            k = min(n - pos, self.segment_frames - self._in_segment)
            self._sink.write(block[pos:pos + k] if (pos or k < n) else block)
            pos += k
            self._in_segment += k
            self.frames_written += k
            if self._in_segment >= self.segment_frames:
                sink, self._sink = self._sink, None
                sink.close(commit=True)
                self.committed.append(self._current)

    def close(self, commit: bool = True) -> None:
        if self._sink is None:
            return
        sink, self._sink = self._sink, None
        if self._in_segment == 0:           # nothing in it since the last boundary: no empty file
            sink.close(commit=False)
            return
        sink.close(commit=commit)
        if commit:
            self.committed.append(self._current)

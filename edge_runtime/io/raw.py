"""Headerless PCM (``s16le``, ``s32le``, ``f32le``, interleaved) on a stream or a file.

``'-'`` means stdin for :class:`RawSource` and stdout for :class:`RawSink`. Both convert
through buffers allocated once (and grown only if a larger block arrives), so steady-state
reads and writes allocate nothing but transient views.

Scaling: integers map to float as ``v / 2**(bits-1)``; float to integer multiplies by
``2**(bits-1)``, rounds to nearest (half to even) and clips to the integer range, so s16le
read and written back is bit-exact, and so is s32le holding up to 24 significant bits
(float32's mantissa; 24-bit audio in a 32-bit container). Conversions to float32 are exact
powers-of-two scalings, so f32le passes through unchanged.
"""
from __future__ import annotations

import os
import select
import sys
import weakref

import numpy as np

from .. import atomic
from ..errors import AudioInputError, AudioOutputError, AudioWriteError
from .base import Sink, Source, check_sample_rate

#: raw format -> (numpy dtype, scale to float, integer range or None)
RAW_FORMATS = {
    "s16le": (np.dtype("<i2"), 1.0 / 32768.0, (np.float64(-32768.0), np.float64(32767.0))),
    "s32le": (np.dtype("<i4"), 1.0 / 2147483648.0,
              (np.float64(-2147483648.0), np.float64(2147483647.0))),
    "f32le": (np.dtype("<f4"), 1.0, None),
}


def _check_params(name, sample_rate, channels, fmt, err):
    if fmt not in RAW_FORMATS:
        raise err(f"{name}: raw format {fmt!r}, expected one of {', '.join(RAW_FORMATS)}")
    if sample_rate is None or channels is None:
        raise err(f"{name}: raw PCM has no header: the sample rate and channel count must be "
                  f"given (--rate and --channels); got rate={sample_rate}, channels={channels}")
    check_sample_rate(name, sample_rate, err, "sample rate (--rate)")
    if not isinstance(channels, (int, np.integer)) or channels <= 0:
        raise err(f"{name}: {channels!r} channels, expected a positive integer")


class RawSource(Source):
    """Read interleaved raw PCM from a binary stream, a file path, or ``'-'`` (stdin).

    ``max_frames`` preallocates the conversion buffer; otherwise it is sized by the first
    :meth:`read_into` and grows only when a larger block is requested.
    """

    def __init__(self, stream, sample_rate: int, channels: int, fmt: str = "s16le", *,
                 max_frames: int | None = None):
        self._own = False
        if isinstance(stream, (str, bytes, os.PathLike)):
            path = os.fsdecode(stream)
            self.name = "<stdin>" if path == "-" else path
        else:
            self.name = getattr(stream, "name", None) or "<stream>"
            if not isinstance(self.name, str):
                self.name = "<stream>"
        _check_params(self.name, sample_rate, channels, fmt, AudioInputError)
        self.sample_rate, self.channels, self.fmt = int(sample_rate), int(channels), fmt
        self._dtype, scale, _ = RAW_FORMATS[fmt]
        self._scale = np.float32(scale)    # a power of two: exact in float32
        self.frame_bytes = self._dtype.itemsize * self.channels
        self.frames = None
        if isinstance(stream, (str, bytes, os.PathLike)):
            if path == "-":
                stream = sys.stdin.buffer
            else:
                try:
                    stream = open(path, "rb")
                except OSError as e:
                    raise AudioInputError(f"{path}: cannot open raw PCM input: "
                                          f"{e.strerror or e}") from None
                self._own = True
                try:
                    size = os.fstat(stream.fileno()).st_size
                except OSError:
                    size = None
                if size is not None and os.path.isfile(path):
                    if size % self.frame_bytes:
                        stream.close()
                        raise AudioInputError(
                            f"{path}: truncated: {size} bytes is not a whole number of "
                            f"{self.frame_bytes}-byte frames ({fmt}, {self.channels} ch); "
                            f"{size % self.frame_bytes} bytes of a partial frame at the end")
                    self.frames = size // self.frame_bytes
        self._stream = stream
        self._pos = 0
        self._buf = None
        self._alloc(max_frames or 0)

    def _alloc(self, frames: int) -> None:
        if frames <= 0:
            return
        self._cap = frames
        self._buf = bytearray(frames * self.frame_bytes)
        self._mv = memoryview(self._buf)
        self._samples = np.frombuffer(self._buf, dtype=self._dtype)

    def _fill(self, nbytes: int) -> int:
        """readinto until ``nbytes`` are in the buffer or the stream ends."""
        got = 0
        mv = self._mv
        readinto = self._stream.readinto
        while got < nbytes:
            k = readinto(mv[got:nbytes])
            if k is None:                    # non-blocking stream with nothing yet
                select.select([self._stream], [], [])
                continue
            if k == 0:
                break
            got += k
        return got

    def read_into(self, out: np.ndarray) -> int:
        """Read up to ``len(out)`` frames into ``out`` (float32, C-contiguous, ``(n, channels)``)."""
        if (out.dtype != np.float32 or out.ndim != 2 or out.shape[1] != self.channels
                or not out.flags.c_contiguous):
            raise ValueError(f"{self.name}: read_into needs a C-contiguous float32 array shaped "
                             f"(n, {self.channels}); got {out.dtype} {out.shape}")
        n = out.shape[0]
        if self._buf is None or n > self._cap:
            self._alloc(n)
        try:
            got = self._fill(n * self.frame_bytes)
        except OSError as e:
            raise AudioInputError(f"{self.name}: read failed after frame {self._pos}: "
                                  f"{e.strerror or e}") from None
        frames, rest = divmod(got, self.frame_bytes)
        if rest:
            raise AudioInputError(
                f"{self.name}: truncated: the stream ends inside a frame after {self._pos + frames} "
                f"whole frames ({rest} of {self.frame_bytes} bytes; {self.fmt}, {self.channels} ch)")
        m = frames * self.channels
        flat = out.reshape(-1)
        if self._scale == 1.0:
            flat[:m] = self._samples[:m]
        else:
            # cast, then scale in place: a mixed-type ufunc would allocate cast buffers per call
            np.copyto(flat[:m], self._samples[:m], casting="unsafe")
            np.multiply(flat[:m], self._scale, out=flat[:m])
        self._pos += frames
        return frames

    def close(self) -> None:
        if self._own and self._stream is not None:
            self._stream.close()
        self._stream = None


class RawSink(Sink):
    """Write interleaved raw PCM to a binary stream, ``'-'`` (stdout) or a file path.

    A path is written atomically like :class:`~edge_runtime.io.files.FileSink` (temporary
    file, renamed on ``close(commit=True)``). A stream is only flushed on close, never
    closed: it belongs to the caller.
    """

    def __init__(self, stream, sample_rate: int, channels: int, fmt: str = "s16le", *,
                 max_frames: int | None = None):
        self._f = None
        self.tmp = None
        self._finalizer = None
        is_path = isinstance(stream, (str, bytes, os.PathLike))
        if is_path:
            path = os.fsdecode(stream)
            self.name = "<stdout>" if path == "-" else path
        else:
            self.name = getattr(stream, "name", None)
            if not isinstance(self.name, str):
                self.name = "<stream>"
        _check_params(self.name, sample_rate, channels, fmt, AudioOutputError)
        self.sample_rate, self.channels, self.fmt = int(sample_rate), int(channels), fmt
        self._dtype, scale, self._range = RAW_FORMATS[fmt]
        self._scale = 1.0 / scale
        self.frame_bytes = self._dtype.itemsize * self.channels
        self.frames_written = 0
        if is_path and path != "-":
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                raise AudioOutputError(f"{path}: directory {directory} does not exist")
            self.path = path
            self.tmp = atomic.temp_path_for(path)
            try:
                stream = open(self.tmp, "wb")
            except OSError as e:
                raise AudioOutputError(f"{path}: cannot create the output file: "
                                       f"{e.strerror or e}") from None
            self._finalizer = weakref.finalize(self, _close_and_discard, stream, self.tmp)
        elif is_path:
            stream = sys.stdout.buffer
        self._f = stream
        self._cap = 0
        self._alloc(max_frames or 0)

    def _alloc(self, frames: int) -> None:
        if frames <= 0:
            return
        self._cap = frames
        m = frames * self.channels
        self._out = np.empty(m, dtype=self._dtype)
        self._outmv = memoryview(self._out).cast("B")
        # float64 work buffer: int32 full scale needs more than float32's 24-bit mantissa
        self._work = np.empty(m, dtype=np.float64) if self._range is not None else None

    def write(self, block: np.ndarray) -> None:
        """Write float32 frames shaped ``(n, channels)``."""
        if self._f is None:
            raise ValueError(f"{self.name}: write to a closed RawSink")
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError(f"{self.name}: write needs (n, {self.channels}) frames, "
                             f"got shape {block.shape}")
        n = block.shape[0]
        if n == 0:
            return
        if n > self._cap:
            self._alloc(n)
        m = n * self.channels
        dst = self._out[:m].reshape(n, self.channels)
        if self._range is None:
            np.copyto(dst, block, casting="unsafe")
        else:
            w = self._work[:m].reshape(n, self.channels)
            np.copyto(w, block, casting="unsafe")   # cast first: no per-call ufunc buffers
            np.multiply(w, self._scale, out=w)
            np.rint(w, out=w)
            np.minimum(w, self._range[1], out=w)    # not np.clip: its Python wrapper keeps
            np.maximum(w, self._range[0], out=w)    # small objects per call (numpy 2.4)
            np.copyto(dst, w, casting="unsafe")
        try:
            self._f.write(self._outmv[:m * self._dtype.itemsize])
        except OSError as e:
            raise AudioWriteError(f"{self.name}: write failed after {self.frames_written} "
                                   f"frames: {e.strerror or e}") from None
        self.frames_written += n

    def close(self, commit: bool = True) -> None:
        """Flush; for a path, rename into place (``commit=True``) or delete (``False``)."""
        if self._f is None:
            return
        f, self._f = self._f, None
        if self.tmp is None:
            try:
                f.flush()
            except (OSError, ValueError) as e:
                if commit:
                    raise AudioWriteError(f"{self.name}: flush failed: {e}") from None
            return
        self._finalizer.detach()
        try:
            try:
                f.close()
            except OSError as e:
                if commit:
                    raise AudioWriteError(f"{self.name}: could not finish the file: "
                                           f"{e.strerror or e}") from None
            if commit:
                try:
                    atomic.commit(self.tmp, self.path)
                except OSError as e:
                    raise AudioWriteError(f"{self.name}: could not move the finished file "
                                           f"into place: {e.strerror or e}") from None
        finally:
            atomic.discard(self.tmp)


def _close_and_discard(f, tmp):
    try:
        f.close()
    except Exception:
        pass
    atomic.discard(tmp)

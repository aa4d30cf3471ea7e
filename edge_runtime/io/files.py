"""Audio files through libsndfile (``soundfile``), streamed block by block.

:class:`FileSource` never holds the whole file: each :meth:`FileSource.read_into` decodes
straight into the caller's preallocated float32 block. It checks the file when it opens
(missing, not audio, unsupported, zero channels or rate, WAV data chunk cut short), so a bad
input is refused before any output is produced.

:class:`FileSink` writes to a hidden temporary file next to the destination and renames it
into place only on ``close(commit=True)``; a failed run leaves neither a partial file under
the final name nor the temporary file.

What libsndfile does with damaged files (libsndfile 1.2.2, measured; see tests/test_io.py):

* WAV whose data chunk is cut short: no error at all -- ``frames`` silently shrinks to the
  bytes present. We therefore read the RIFF chunk headers at open (a few small reads) and
  compare the data chunk's declared size with the bytes actually in the file.
* FLAC cut short: ``frames`` comes from STREAMINFO (the full length); decoding fails with
  "flac decoder lost sync" at the cut, which we report as corrupt or truncated.
* Ogg cut short: Ogg has no length header; libsndfile takes the length from the last page it
  finds, so a cut between pages is indistinguishable from a shorter file. A cut that leaves
  no complete audio page gives ``frames == 0``, which we refuse.
"""
from __future__ import annotations

import os
import stat
import struct
import weakref

import numpy as np
import soundfile as sf

from .. import atomic
from ..errors import AudioInputError, AudioOutputError, AudioWriteError
from .base import Sink, Source, check_sample_rate

#: output container by file extension
SINK_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".oga": "OGG"}
#: subtype used when none is given: 16-bit PCM for WAV and FLAC (what players expect and half
#: the size of FLOAT), Vorbis for Ogg. Pass ``subtype="FLOAT"`` to keep the float32 signal
#: bit-exact in a WAV, or "PCM_24" for 24-bit.
DEFAULT_SUBTYPES = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}

# formats whose header states the exact frame count, so a short read means lost data
# (MP3 lengths may be estimates; they are not checked)
_EXACT_LENGTH = {"WAV", "WAVEX", "FLAC", "AIFF", "AU", "CAF", "W64", "RF64", "OGG"}
_COMMON = ("WAV", "FLAC", "OGG", "MP3", "AIFF", "AU", "CAF", "W64", "RF64")


def supported_input_formats() -> str:
    """The readable formats for messages, e.g. ``'WAV, FLAC, OGG (Vorbis/Opus), MP3, ...'``."""
    avail = sf.available_formats()
    names = [("OGG (Vorbis/Opus)" if f == "OGG" else f) for f in _COMMON if f in avail]
    return ", ".join(names) + f" and other libsndfile {sf.__libsndfile_version__} formats"


def _one_line(msg) -> str:
    return " ".join(str(msg).split())


def _sf_reason(e, path: str) -> str:
    """libsndfile says only "System error." when the OS refused: find out what the OS said
    (a read-only file system, no permission, no space left), else libsndfile's own words."""
    text = _one_line(getattr(e, "error_string", None) or e)
    if "system error" not in text.lower():
        return text
    d = os.path.dirname(os.path.abspath(path))
    try:
        st = os.statvfs(d)
        if st.f_flag & os.ST_RDONLY:
            return f"{d} is on a read-only file system"
        if st.f_bavail * st.f_frsize < (1 << 20):
            return f"no space left on the device ({st.f_bavail * st.f_frsize} bytes free in {d})"
    except OSError:
        pass
    if not os.access(d, os.W_OK):
        return f"permission denied: cannot write in {d}"
    return text


def _riff_wave(path: str, file_size: int) -> dict | None:
    """Fields of a RIFF/WAVE header read from its chunk headers only (a few small reads):
    ``channels``, ``sample_rate``, ``block_align`` (from ``fmt ``), ``data_bytes``,
    ``data_offset`` (from ``data``, when found). None when the file is not RIFF/WAVE."""
    info: dict = {}
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            for _ in range(64):             # a WAV has a handful of chunks; stop on garbage
                f.seek(pos)
                hdr = f.read(8)
                if len(hdr) < 8:
                    break
                cid, size = hdr[:4], struct.unpack("<I", hdr[4:])[0]
                if cid == b"fmt ":
                    fmt = f.read(min(size, 16))
                    if len(fmt) < 14:
                        break
                    ch, rate, _, align = struct.unpack("<HIIH", fmt[2:14])
                    info.update(channels=ch, sample_rate=rate, block_align=align)
                elif cid == b"data":
                    info.update(data_bytes=size, data_offset=pos + 8)
                    break
                pos += 8 + size + (size & 1)
                if pos > file_size:
                    break
    except OSError:
        return None
    return info


def _streamed_frames(f) -> int:
    """The frame count libsndfile reports for a header whose data size is the streaming
    placeholder (0xFFFFFFFF) when it cannot seek to the end to count (a pipe): minus one for
    rounding."""
    width = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8,
             "ULAW": 1, "ALAW": 1}.get(f.subtype, 2)
    return min(0xFFFFFFFF // (width * max(1, f.channels)), 0x7FFFFFFF) - 1


def _ogg_ends_cleanly(path: str, file_size: int) -> bool | None:
    """Whether an Ogg file ends with a complete page flagged end-of-stream, as every finished
    encoder writes it (None: not readable as Ogg). libsndfile takes the length from the last page
    present, so a file cut short reads as a shorter, valid one; the missing EOS page tells."""
    window = min(file_size, 65536 + 282)            # the largest possible Ogg page, and a bit
    try:
        with open(path, "rb") as f:
            f.seek(file_size - window)
            tail = f.read(window)
    except OSError:
        return None
    at = tail.rfind(b"OggS")
    while at >= 0:
        if at + 27 <= len(tail) and tail[at + 4] == 0:                # stream structure version 0
            nseg = tail[at + 26]
            table = tail[at + 27:at + 27 + nseg]
            if len(table) == nseg:
                end = at + 27 + nseg + sum(table)
                return end == len(tail) and bool(tail[at + 5] & 0x04)
            return False
        at = tail.rfind(b"OggS", 0, at)
    return None


class FileSource(Source):
    """Read an audio file in blocks of float32 ``(frames, channels)``.

    ``allow_truncated=True`` reads what is there from a WAV whose data chunk was cut short or an
    Ogg file without its end-of-stream page (e.g. a recorder that lost power) instead of refusing
    it; ``truncated`` then says so.
    """

    def __init__(self, path, *, allow_truncated: bool = False):
        self.name = path = os.fspath(path)
        self.path = path
        self.truncated = False
        self._sf = None
        self._pos = 0
        if not os.path.exists(path):
            raise AudioInputError(f"{path}: no such file (expected an audio file: "
                                  f"{supported_input_formats()})")
        if os.path.isdir(path):
            raise AudioInputError(f"{path}: is a directory, expected an audio file")
        if not os.access(path, os.R_OK):
            raise AudioInputError(f"{path}: permission denied (cannot read the file)")
        # a pipe, FIFO or /dev/stdin: read once, front to back; nothing here may read it a second time
        self.seekable = stat.S_ISREG(os.stat(path).st_mode)
        try:
            f = sf.SoundFile(path, "r")
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
            err = _one_line(getattr(e, "error_string", None) or e)
            if not self.seekable:
                raise AudioInputError(
                    f"{path}: not readable as a stream ({err}); from a pipe or FIFO only WAV, AU and "
                    "raw PCM ('-i -' with --rate/--channels) can be read, other formats need a file") from None
            riff = _riff_wave(path, os.path.getsize(path)) or {}
            if riff.get("channels") == 0:
                raise AudioInputError(f"{path}: WAV header says 0 channels, expected at least 1"
                                      ) from None
            if riff.get("sample_rate") == 0:
                raise AudioInputError(f"{path}: WAV header says sample rate 0 Hz, expected a "
                                      "positive rate") from None
            raise AudioInputError(
                f"{path}: not a readable audio file ({err}); supported formats: "
                f"{supported_input_formats()}") from None
        self._sf = f
        try:
            self.sample_rate = int(f.samplerate)
            self.channels = int(f.channels)
            self.format, self.subtype = f.format, f.subtype
            self.frames = int(f.frames)
            if self.channels <= 0:
                raise AudioInputError(f"{path}: header says {self.channels} channels, "
                                      "expected at least 1")
            check_sample_rate(path, self.sample_rate, AudioInputError, "header says sample rate")
            if not self.seekable:
                if self.frames >= _streamed_frames(f):    # a streamed header: the length is unknown
                    self.frames = None
            elif self.format in ("WAV", "WAVEX"):
                self._check_wav_length(allow_truncated)
            elif self.format == "OGG" and self.frames == 0:
                raise AudioInputError(
                    f"{path}: truncated or empty: no complete Ogg audio page was found "
                    f"({os.path.getsize(path)} bytes), expected at least one frame of audio")
            elif self.format == "OGG" and _ogg_ends_cleanly(path, os.path.getsize(path)) is False:
                if not allow_truncated:
                    raise AudioInputError(
                        f"{path}: truncated: the Ogg stream has no end-of-stream page (it stops after "
                        f"{self.frames} frames, {os.path.getsize(path)} bytes); expected a complete file")
                self.truncated = True
        except BaseException:
            self.close()
            raise
        self._strict = self.format in _EXACT_LENGTH and not self.truncated and self.frames is not None

    def _check_wav_length(self, allow_truncated: bool) -> None:
        size = os.path.getsize(self.path)
        info = _riff_wave(self.path, size) or {}
        block_align, declared = info.get("block_align"), info.get("data_bytes")
        # streamed WAVs write 0 or 0xFFFFFFFF as the data size: nothing to check against
        if not block_align or declared in (None, 0, 0xFFFFFFFF):
            return
        offset = info["data_offset"]
        if offset + declared <= size:
            return
        promised = declared // block_align
        present = max(0, size - offset) // block_align
        if not allow_truncated:
            raise AudioInputError(
                f"{self.path}: truncated: header says {promised} frames, data ends at {present} "
                f"({size} of {offset + declared} bytes present)")
        self.truncated = True
        self.frames = min(self.frames, present)

    def read_into(self, out: np.ndarray) -> int:
        """Decode up to ``len(out)`` frames into ``out`` (float32, C-contiguous, ``(n, channels)``)."""
        if (out.dtype != np.float32 or out.ndim != 2 or out.shape[1] != self.channels
                or not out.flags.c_contiguous):
            raise ValueError(f"{self.name}: read_into needs a C-contiguous float32 array shaped "
                             f"(n, {self.channels}); got {out.dtype} {out.shape}")
        n = out.shape[0]
        if self._sf is None:
            raise ValueError(f"{self.name}: read from a closed FileSource")
        try:
            got = len(self._sf.read(n, dtype="float32", out=out))
        except sf.LibsndfileError as e:
            raise AudioInputError(
                f"{self.name}: corrupt or truncated {self.format} data after frame {self._pos} "
                f"(header says {self.frames} frames): {_one_line(e.error_string)}") from None
        self._pos += got
        if got < n and self._strict and self._pos < self.frames:
            raise AudioInputError(f"{self.name}: truncated: header says {self.frames} frames, "
                                  f"data ends at {self._pos}")
        return got

    def close(self) -> None:
        if self._sf is not None:
            try:
                self._sf.close()
            finally:
                self._sf = None


def _close_and_discard(f, tmp):
    """Finalizer: a sink dropped without close() must not leave its temporary file."""
    try:
        if not f.closed:
            f.close()
    except Exception:
        pass
    atomic.discard(tmp)


class FileSink(Sink):
    """Write float32 ``(frames, channels)`` blocks to an audio file, atomically.

    The container comes from the extension (``.wav``, ``.flac``, ``.ogg``) unless ``format``
    names one. ``subtype`` defaults to PCM_16 for WAV and FLAC and VORBIS for Ogg (see
    :data:`DEFAULT_SUBTYPES`); samples beyond [-1, 1) are clipped, not wrapped.
    """

    def __init__(self, path, sample_rate: int, channels: int, subtype: str | None = None,
                 format: str | None = None):
        self.name = self.path = path = os.fspath(path)
        self._f = None
        self._finalizer = None
        ext = os.path.splitext(path)[1].lower()
        if format is None:
            format = SINK_FORMATS.get(ext)
            if format is None:
                raise AudioOutputError(
                    f"{path}: unsupported output format {ext or '(no extension)'!r}; expected one "
                    f"of {', '.join(SINK_FORMATS)} (raw PCM: '-' for stdout, or a .raw/.pcm path)")
        format = str(format).upper()
        if format not in sf.available_formats():
            raise AudioOutputError(f"{path}: unknown output format {format!r}; expected one of "
                                   f"{', '.join(sorted(set(SINK_FORMATS.values())))}")
        subtype = (subtype or DEFAULT_SUBTYPES.get(format) or sf.default_subtype(format)).upper()
        if not sf.check_format(format, subtype):
            raise AudioOutputError(
                f"{path}: subtype {subtype!r} cannot be written as {format}; expected one of "
                f"{', '.join(sf.available_subtypes(format))}")
        check_sample_rate(path, sample_rate, AudioOutputError)
        if not isinstance(channels, (int, np.integer)) or channels <= 0:
            raise AudioOutputError(f"{path}: {channels!r} channels, expected a positive integer")
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise AudioOutputError(f"{path}: directory {directory} does not exist")
        if os.path.isdir(path):
            raise AudioOutputError(f"{path}: is a directory, expected a file name")
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self.format, self.subtype = format, subtype
        self.frames_written = 0
        self.tmp = atomic.temp_path_for(path)
        try:
            self._f = sf.SoundFile(self.tmp, "w", self.sample_rate, self.channels, subtype,
                                   format=format)
        except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
            atomic.discard(self.tmp)
            raise AudioOutputError(f"{path}: cannot create {format}/{subtype} file with "
                                   f"{self.channels} channels at {self.sample_rate} Hz: "
                                   f"{_sf_reason(e, path)}") from None
        self._finalizer = weakref.finalize(self, _close_and_discard, self._f, self.tmp)

    def write(self, block: np.ndarray) -> None:
        """Append float32 frames shaped ``(n, channels)``."""
        if self._f is None:
            raise ValueError(f"{self.name}: write to a closed FileSink")
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError(f"{self.name}: write needs (n, {self.channels}) frames, "
                             f"got shape {block.shape}")
        try:
            self._f.write(block)
        except (sf.LibsndfileError, AssertionError, OSError) as e:
            raise AudioWriteError(f"{self.name}: write failed after {self.frames_written} "
                                   f"frames: {_sf_reason(e, self.path)}") from None
        self.frames_written += block.shape[0]

    def close(self, commit: bool = True) -> None:
        """``commit=True``: finish the file and move it under its final name (fsync'ed);
        ``commit=False``: delete it. Either way the temporary file is gone afterwards."""
        if self._f is None:
            return
        f, self._f = self._f, None
        if self._finalizer is not None:
            self._finalizer.detach()
        try:
            try:
                f.close()           # writes the final header
            except (sf.LibsndfileError, RuntimeError, OSError) as e:
                if commit:
                    raise AudioWriteError(
                        f"{self.name}: could not finish the file: {_sf_reason(e, self.path)}") from None
            if commit:
                try:
                    atomic.commit(self.tmp, self.path)
                except OSError as e:
                    raise AudioWriteError(f"{self.name}: could not move the finished file "
                                           f"into place: {e.strerror or e}") from None
        finally:
            atomic.discard(self.tmp)

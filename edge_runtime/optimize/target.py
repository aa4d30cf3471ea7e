"""Target sounds: read, checked, mono, at the chain's rate."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import AudioInputError

__all__ = ["Target", "load_audio", "make_target"]

MAX_SECONDS = 10.0


@dataclasses.dataclass
class Target:
    """What a chain is fitted to: ``audio`` (mono float32 at ``sample_rate``) and, for chains that
    process an input, the ``input`` it was made from (same length)."""

    audio: np.ndarray
    sample_rate: int
    input: np.ndarray | None = None
    name: str = "<array>"

    @property
    def n_frames(self) -> int:
        return int(self.audio.shape[0])


def load_audio(path, sample_rate: int, max_seconds: float = MAX_SECONDS, what: str = "target") -> np.ndarray:
    """An audio file as mono float32 at ``sample_rate`` (soxr), at most ``max_seconds`` long; a file
    that is missing, corrupt, truncated, empty, silent or holds NaN/Inf is one AudioInputError."""
    import soxr

    from ..io.files import FileSource

    src = FileSource(path)
    try:
        if src.frames is None:
            raise AudioInputError(f"{path}: {what} must be a file of known length, not a stream")
        if src.frames == 0:
            raise AudioInputError(f"{path}: {what} has no audio frames (expected a sound of 0.05..{max_seconds:g} s)")
        limit = int(round(max_seconds * src.sample_rate))
        if src.frames > limit:
            raise AudioInputError(f"{path}: {what} is {src.frames / src.sample_rate:.2f} s long; expected at most "
                                  f"{max_seconds:g} s (one note or a short phrase: cut it first)")
        buf = np.zeros((src.frames, src.channels), np.float32)
        got = src.read_into(buf)
        buf = buf[:got]
        rate = src.sample_rate
    finally:
        src.close()
    if not np.all(np.isfinite(buf)):
        raise AudioInputError(f"{path}: {what} holds NaN or Inf samples; expected finite audio")
    x = buf.mean(axis=1)
    if x.shape[0] < int(0.05 * rate):
        raise AudioInputError(f"{path}: {what} is {x.shape[0] / rate * 1000:.0f} ms long; expected at least 50 ms")
    if float(np.max(np.abs(x))) < 1e-5:
        raise AudioInputError(f"{path}: {what} is silent (peak below -100 dBFS); expected a sound to match")
    if rate != sample_rate:
        x = soxr.resample(x, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(x, dtype=np.float32)


def make_target(chain, target_path=None, input_path=None, *, audio=None, input=None,
                max_seconds: float = MAX_SECONDS) -> Target:
    """The target for ``chain`` from files (``target_path``, and ``input_path`` for a chain that
    processes an input) or arrays already at the chain's rate."""
    if audio is None:
        audio = load_audio(target_path, chain.sample_rate, max_seconds)
        name = str(target_path)
    else:
        audio = np.ascontiguousarray(np.asarray(audio, np.float32).reshape(-1))
        name = "<array>"
    if chain.needs_input:
        if input is None:
            if input_path is None:
                raise AudioInputError(f"chain {chain.name!r} fits an (input, processed) pair: give the input "
                                      "signal (--input) as well as the processed target (--target)")
            input = load_audio(input_path, chain.sample_rate, max_seconds, what="input")
        input = np.ascontiguousarray(np.asarray(input, np.float32).reshape(-1))
        n = min(input.shape[0], audio.shape[0])
        if abs(input.shape[0] - audio.shape[0]) > 0.01 * max(input.shape[0], audio.shape[0]) + 1:
            raise AudioInputError(f"{input_path or '<input>'}: input is {input.shape[0]} frames, target {audio.shape[0]} "
                                  f"at {chain.sample_rate} Hz; expected the same length (a processed copy of the input)")
        audio, input = audio[:n].copy(), input[:n].copy()
    elif input is not None or input_path is not None:
        raise AudioInputError(f"chain {chain.name!r} makes its sound from nothing: --input is not used")
    return Target(audio=audio, sample_rate=chain.sample_rate, input=input, name=name)

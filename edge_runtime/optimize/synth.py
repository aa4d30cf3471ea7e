"""The ``synth`` chain: one note of a subtractive synthesizer (kernel: ``kernels/_subsynth.pyx``)."""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from .._subsynth import N_PARAMS, render as _render
from ..errors import ConfigError
from .base import Chain
from .space import Param, ParameterSpace

__all__ = ["SynthChain", "SYNTH_PARAMS"]

SYNTH_PARAMS = (
    Param("note", 24.0, 96.0, 60.0, "lin", "MIDI", "pitch of the note (fractional: between semitones)"),
    Param("saw", 0.0, 1.0, 1.0, "lin", "", "saw level (the four levels are normalised to sum 1)"),
    Param("square", 0.0, 1.0, 0.0, "lin", "", "square level"),
    Param("sine", 0.0, 1.0, 0.0, "lin", "", "sine level"),
    Param("noise", 0.0, 1.0, 0.0, "lin", "", "white-noise level"),
    Param("detune_cents", 0.0, 50.0, 10.0, "lin", "cents", "spread of the two saw/square voices"),
    Param("attack_s", 0.001, 1.0, 0.01, "log", "s", "envelope attack"),
    Param("decay_s", 0.01, 2.0, 0.2, "log", "s", "envelope decay to the sustain level"),
    Param("sustain", 0.0, 1.0, 0.7, "lin", "", "sustain level"),
    Param("release_s", 0.01, 2.0, 0.2, "log", "s", "release after the gate closes"),
    Param("gate", 0.2, 0.95, 0.7, "lin", "", "gate-off time as a fraction of the sound's length"),
    Param("cutoff_hz", 40.0, 7000.0, 1500.0, "log", "Hz", "low-pass cutoff with the envelope at 0"),
    Param("resonance", 0.5, 10.0, 0.7071, "log", "Q", "low-pass resonance (Q)"),
    Param("env_amount", 0.0, 5.0, 2.0, "lin", "octaves", "cutoff raised by this many octaves at envelope 1"),
    Param("gain_db", -30.0, 0.0, -6.0, "lin", "dB", "output gain"),
)
_MIX = ("saw", "square", "sine", "noise")


class SynthChain(Chain):
    """Subtractive synth voice; ``render`` allocates only its output (the kernel allocates nothing)."""

    name = "synth"
    needs_input = False

    def __init__(self, sample_rate: int = 16000, noise_seed: int = 1):
        sample_rate = int(sample_rate)
        if not 8000 <= sample_rate <= 192000:
            raise ConfigError(f"synth: sample_rate = {sample_rate} is outside 8000..192000 Hz")
        self.sample_rate = sample_rate
        self.noise_seed = int(noise_seed) & 0xFFFFFFFFFFFFFFFF
        self.space = ParameterSpace(SYNTH_PARAMS)
        self._p = np.zeros(N_PARAMS, np.float64)

    def config(self) -> dict:
        return {"sample_rate": self.sample_rate, "noise_seed": self.noise_seed}

    def adapt_to(self, target, semitones: float = 0.5, min_voiced: float = 0.5) -> dict:
        """Search the note within +-``semitones`` of the target's YIN pitch when at least ``min_voiced``
        of its loud frames are periodic (a fixed ``note`` is left alone)."""
        from .pitch import narrow_note

        return narrow_note(self, target, semitones, min_voiced)

    def kernel_params(self, params: Mapping[str, float]) -> np.ndarray:
        """The kernel's float64 vector for ``params`` (mix normalised, gain linear)."""
        full = {**self.space.defaults(), **params}
        mix = [max(0.0, float(full[k])) for k in _MIX]
        total = sum(mix)
        mix = [m / total for m in mix] if total > 1e-6 else [1.0, 0.0, 0.0, 0.0]
        p = self._p
        p[:] = (full["note"], *mix, full["detune_cents"], full["attack_s"], full["decay_s"], full["sustain"],
                full["release_s"], full["gate"], full["cutoff_hz"], full["resonance"], full["env_amount"],
                10.0 ** (full["gain_db"] / 20.0))
        if not np.all(np.isfinite(p)) or p[12] <= 0:
            raise ValueError(f"synth: non-finite or non-positive parameter in {dict(params)}")
        return p

    def render(self, params: Mapping[str, float], n_frames: int, input: np.ndarray | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
        n_frames = int(n_frames)
        if n_frames <= 0:
            raise ValueError(f"synth: n_frames = {n_frames}, expected > 0")
        if out is None:
            out = np.empty(n_frames, np.float32)
        elif out.dtype != np.float32 or out.shape != (n_frames,) or not out.flags.c_contiguous:
            raise ValueError(f"synth: out must be C-contiguous float32 ({n_frames},), got {out.dtype} {out.shape}")
        _render(self.kernel_params(params), out, self.noise_seed, float(self.sample_rate))
        return out


def mix_weights(params: Mapping[str, float]) -> np.ndarray:
    """The normalised (saw, square, sine, noise) weights a preset renders with."""
    w = np.array([max(0.0, float(params[k])) for k in _MIX])
    return w / w.sum() if w.sum() > 1e-6 else np.array([1.0, 0.0, 0.0, 0.0])


def note_hz(note: float) -> float:
    return 440.0 * math.pow(2.0, (note - 69.0) / 12.0)

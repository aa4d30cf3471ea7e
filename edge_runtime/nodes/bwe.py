"""``bwe``: bandwidth extension of narrow-band speech: 8 -> 16 kHz (``bwe16k``, telephone and
low-rate audio) and 16 -> 48 kHz (``bwe48k``). Each rate has a :class:`Profile` (:data:`PROFILES`).

The 16 kHz profile (the 48 kHz one is the same at twice the band edges): an 8 kHz input is
upsampled at the edge, so its band ends near 4 kHz; a 320/160 sqrt-Hann STFT (50 Hz bins, 10 ms
hops, 10 ms latency). Per hop:

* **features** (causal): the log energies of ``n_low`` (20) bands over 0.1-3.8 kHz relative to
  the frame's low-band level ``L`` (so the model is level-independent), plus ``L`` itself
  scaled, for the current and ``context - 1`` (3) previous hops;
* **model** (a small MLP, INT8/FP32 ONNX from the manifest, ``firmware_tools/train/train_bwe.py``):
  the log energies of ``n_high`` (12) bands over 3.8-8 kHz, relative to ``L``;
* **excitation**: the 1.8-3.8 kHz bins copied up, repeated, to 3.8-8 kHz (spectral translation:
  the harmonic fine structure and the phase evolution of real speech), each high band scaled to
  the predicted energy; bins below 3.8 kHz are the input's, untouched.

The input's band is watched (a slow average of the power above 4.2 kHz against 0.3-3.8 kHz): an
input that already has a high band (wide-band audio) passes through unchanged, and the summary
reports the band limit found.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ModelError
from ..spectral import stft_analyzer, stft_synthesizer
from .model import ModelNode

__all__ = ["Bwe", "PROFILES", "Profile", "band_edges", "features_offline", "targets_offline"]


@dataclasses.dataclass(frozen=True)
class Profile:
    """Bands of one rate: STFT, the band the model sees, the band it predicts, the excitation."""

    rate: int
    frame: int
    hop: int
    low: tuple[int, int]        # bins of the model's input band
    high_lo: int                # first predicted bin (the rest up to Nyquist)
    src: tuple[int, int]        # bins copied up as excitation
    n_low: int
    n_high: int
    wide_from: int              # power above this bin ...
    narrow: tuple[int, int]     # ... against this band tells a wide-band input
    context: int = 4
    model: str = "bwe"

    @property
    def n_bins(self) -> int:
        return self.frame // 2 + 1

    @property
    def n_feat(self) -> int:
        return self.context * (self.n_low + 1)


PROFILES = {
    # 8 -> 16 kHz: sees 0.1-3.8 kHz, predicts 3.8-8 kHz from 1.8-3.8 kHz copied up (50 Hz bins)
    16000: Profile(16000, 320, 160, (2, 76), 76, (36, 76), 20, 12, 84, (6, 76), model="bwe"),
    # 16 -> 48 kHz: sees 0.1-7.8 kHz, predicts 7.8-24 kHz from 3.9-7.8 kHz copied up (50 Hz bins)
    48000: Profile(48000, 960, 480, (2, 156), 156, (78, 156), 24, 16, 168, (6, 156), model="bwe48k"),
}
FLOOR = 1e-10
WIDE_DB = -35.0                          # a high band within this of the low band's level is real


def band_edges(prof: Profile = PROFILES[16000]) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges of the low (model input) and high (predicted) bands: (n_low+1,), (n_high+1,)."""
    lo, hi = prof.low
    low = np.round(np.geomspace(lo, hi, prof.n_low + 1)).astype(int)
    low = np.maximum.accumulate(np.maximum(low, np.arange(prof.n_low + 1) + lo))    # strictly rising
    high = np.round(np.linspace(prof.high_lo, prof.n_bins, prof.n_high + 1)).astype(int)
    return low, high


def _band_log(power: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """log10 of the mean power in each band; power (..., bins)."""
    c = np.concatenate([np.zeros(power.shape[:-1] + (1,)), np.cumsum(power, axis=-1)], axis=-1)
    s = c[..., edges[1:]] - c[..., edges[:-1]]
    return np.log10(s / (edges[1:] - edges[:-1]) + FLOOR)


def _stft(x: np.ndarray, prof: Profile) -> np.ndarray:
    """The node's STFT offline: frames k cover x[(k+1)*hop - frame, (k+1)*hop) (zeros before)."""
    from .._spectral import make_window

    w = make_window("sqrt_hann", prof.frame).astype(np.float32)
    xp = np.concatenate([np.zeros(prof.frame - prof.hop, np.float32), np.asarray(x, np.float32)])
    n = (len(xp) - prof.frame) // prof.hop + 1
    idx = np.arange(prof.frame)[None, :] + prof.hop * np.arange(n)[:, None]
    return np.fft.rfft(xp[idx] * w, axis=-1)


def _frame_features(low_log: np.ndarray) -> np.ndarray:
    """(frames, n_low) band logs -> (frames, n_low + 1): relative bands and the scaled level."""
    level = low_log.mean(axis=-1, keepdims=True)
    return np.concatenate([low_log - level, (level + 5.0) / 5.0], axis=-1)


def _silent_frame(prof: Profile) -> np.ndarray:
    """The features of a hop of digital silence (what the history holds before the stream starts)."""
    return _frame_features(np.full((1, prof.n_low), np.log10(FLOOR)))


def features_offline(x: np.ndarray, prof: Profile = PROFILES[16000]) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs for every hop of a signal at ``prof.rate``, as the node computes them
    streaming: (frames, n_feat) features (oldest hop first) and (frames,) levels L."""
    spec = _stft(x, prof)
    p = (spec.real ** 2 + spec.imag ** 2).astype(np.float64)
    low, _ = band_edges(prof)
    ll = _band_log(p, low)
    f = _frame_features(ll)
    sil = _silent_frame(prof)
    ctx = [np.concatenate([np.repeat(sil, k, axis=0), f[:len(f) - k]]) for k in range(prof.context - 1, -1, -1)]
    return np.concatenate(ctx, axis=-1).astype(np.float32), ll.mean(axis=-1)


def targets_offline(x_wide: np.ndarray, level: np.ndarray, prof: Profile = PROFILES[16000]) -> np.ndarray:
    """Training targets: the wide-band signal's high-band logs relative to the narrow-band level."""
    spec = _stft(x_wide, prof)
    p = (spec.real ** 2 + spec.imag ** 2).astype(np.float64)
    _, high = band_edges(prof)
    return (_band_log(p, high) - level[:, None]).astype(np.float32)


class Bwe(ModelNode):
    """Bandwidth-extension node, 16 kHz (8 -> 16 kHz, model ``bwe``) or 48 kHz (16 -> 48 kHz, model
    ``bwe48k``; ``model = "auto"`` picks by the pipeline's rate). ``gain_db`` scales the
    synthesized band against the prediction: 0 gives the lowest log-spectral distance, the
    default -24 dB the best PESQ-WB on the design split (held-out speakers; PESQ punishes an
    over-estimated band far more than a missing one, see docs/restore.md); ``mode = "auto"``
    passes wide-band input through, ``"always"`` extends anyway."""

    event_names = ModelNode.event_names

    def __init__(self, model: str = "auto", variant: str = "auto", gain_db: float = -24.0, mode: str = "auto",
                 threads: int = 1, backend: str = "auto", name: str | None = None):
        super().__init__(model, variant, backend, threads, name or "bwe")
        if mode not in ("auto", "always"):
            raise ValueError(f"mode={mode!r}, expected auto or always")
        self.gain_db, self.mode = float(gain_db), mode
        self._model_arg = model

    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        super().prepare(sample_rate, block_size, channels)
        if sample_rate not in PROFILES:
            raise ValueError(f"bwe runs at {' or '.join(map(str, PROFILES))} Hz, not {sample_rate} (the bwe16k / "
                             "bwe48k pipelines; inputs are resampled at the edge)")
        prof = self.prof = PROFILES[sample_rate]
        if self._model_arg == "auto":
            self.model = prof.model
        hop, nb, hl = prof.hop, prof.n_bins, prof.high_lo
        if block_size % hop:
            raise ValueError(f"bwe at {sample_rate} Hz needs block_size a multiple of {hop}, got {block_size}")
        ch = channels
        self.ana = stft_analyzer(prof.frame, hop, "sqrt_hann", ch)
        self.syn = stft_synthesizer(prof.frame, hop, "sqrt_hann", ch)
        self.latency_samples = prof.frame - hop
        low, high = band_edges(prof)
        nf = prof.n_low + 1
        self.feat = np.zeros((ch, 1, prof.n_feat), np.float32)     # the model's input, oldest hop first
        self.hist = np.zeros((ch, prof.context, nf), np.float32)   # ring of the last hops' features
        self.silent = _silent_frame(prof)[0].astype(np.float32)
        self.slot = 0
        self.tmp = np.zeros(nb, np.float64)
        self.tmp_h = np.zeros(nb - hl, np.float64)
        self.tgt = np.zeros(prof.n_high, np.float64)
        self.env = np.zeros((ch, 1, prof.n_high), np.float32)
        self.power = np.zeros((ch, nb), np.float64)
        self.bands = np.zeros((ch, prof.n_low), np.float64)
        self.hbands = np.zeros((ch, prof.n_high), np.float64)
        # band means as matrix products (one call each, into preallocated outputs)
        self.m_low = np.zeros((nb, prof.n_low))
        for j in range(prof.n_low):
            self.m_low[low[j]:low[j + 1], j] = 1.0 / (low[j + 1] - low[j])
        self.m_high = np.zeros((nb - hl, prof.n_high))
        for j in range(prof.n_high):
            self.m_high[high[j] - hl:high[j + 1] - hl, j] = 1.0 / (high[j + 1] - high[j])
        self.m_expand = np.ascontiguousarray((self.m_high > 0).T.astype(np.float64))    # band -> its bins
        # the input's band: the power above wide_from against the narrow band, one dot product
        self.m_band = np.zeros((nb, 2))
        self.m_band[prof.wide_from:, 0] = 1.0
        self.m_band[prof.narrow[0]:prof.narrow[1], 1] = 1.0
        self.band2 = np.zeros(2)
        # excitation: the source bins repeated up as contiguous slice copies (dst_start, src_start, length)
        s0, s1 = prof.src
        self.copies = []
        k = hl
        while k < nb:
            n = min(s1 - s0, nb - k)
            self.copies.append((k - hl, s0, n))
            k += n
        self.exc_re = np.zeros((ch, nb - hl), np.float32)
        self.exc_im = np.zeros((ch, nb - hl), np.float32)
        self.exc_p = np.zeros((ch, nb - hl), np.float64)
        self.scale = np.zeros((ch, nb - hl), np.float64)
        self.hop_in = np.zeros((ch, hop), np.float32)
        self.hop_out = np.zeros((ch, hop), np.float32)
        self.gain_lin = 10.0 ** (self.gain_db / 20.0)
        self.wide_lin = np.zeros(ch)             # slow averages of the two band powers
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
        if int(ins["feat"].shape[-1]) != self.feat.shape[-1] or int(outs["env"].shape[-1]) != self.prof.n_high:
            raise ModelError(f"{path}: bwe at {self.prof.rate} Hz expects feat (1, {self.feat.shape[-1]}) -> env "
                             f"(1, {self.prof.n_high}); the model has {list(ins['feat'].shape)} -> "
                             f"{list(outs['env'].shape)}")
        return [session.bind({"feat": self.feat[c]}, {"env": self.env[c]}) for c in range(self.channels)]

    def reset(self) -> None:
        if not hasattr(self, "prof"):
            return
        nf = self.prof.n_low + 1
        self.hist[:] = self.silent
        for k in range(self.prof.context):
            self.feat[:, 0, k * nf:(k + 1) * nf] = self.silent
        self.slot = 0
        self.wide_lin[:] = 0.0
        self.narrow_lin[:] = 0.0
        self.hops = self.hops_extended = 0
        self.ana.reset()
        self.syn.reset()

    def _is_wide(self, c: int) -> bool:
        return self.narrow_lin[c] > 0 and 10 * np.log10(self.wide_lin[c] / self.narrow_lin[c] + 1e-30) > WIDE_DB

    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        self.swap_pending()
        prof = self.prof
        nf, hop, hl, ctx = prof.n_low + 1, prof.hop, prof.high_lo, prof.context
        re, im = self.ana.re, self.ana.im
        for k in range(0, self.block_size, hop):
            np.copyto(self.hop_in, inp[:, k:k + hop])
            self.ana.push(self.hop_in)
            self.hops += 1
            slot = self.slot
            self.slot = (slot + 1) % ctx
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
                for j in range(ctx):                      # oldest hop first: slot + 1, ..., slot
                    np.copyto(f[j * nf:(j + 1) * nf], self.hist[c, (slot + 1 + j) % ctx])
                # the input's band: slow averages (about 2 s at 16 kHz) of the two band powers
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
                np.multiply(er, sc, out=re[c, hl:], casting="same_kind")
                np.multiply(ei, sc, out=im[c, hl:], casting="same_kind")
                if c == 0:
                    self.hops_extended += 1
            self.syn.pull(re, im, self.hop_out)
            np.copyto(out[:, k:k + hop], self.hop_out)

    def report(self) -> dict:
        """Band limit found in the input and the share of hops extended (channel 0)."""
        if not self.hops:
            return {}
        wide = self._is_wide(0)
        cut = self.prof.high_lo * self.prof.rate // self.prof.frame
        return {"input_band": "wide (passed through)" if wide and self.mode == "auto"
                else f"narrow (<= {cut / 1000:g} kHz)",
                "high_band_db": round(float(10 * np.log10(self.wide_lin[0] / self.narrow_lin[0] + 1e-30)), 1)
                if self.narrow_lin[0] > 0 else None,
                "extended_pct": round(100.0 * self.hops_extended / self.hops, 1)}

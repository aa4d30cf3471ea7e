"""``declip``: find clipped runs and restore them with A-SPADE (:class:`edge_runtime._restore.Declipper`).

Samples that were not clipped come out unchanged (to float rounding: the method only fills in
the clipped ones, consistently with what was observed); the node adds ``window`` samples of
latency (64 ms by default). Summary report: the fraction of input samples found clipped and the
fraction of output samples still on a clipped plateau. Measured settings (design clips, see
``docs/restore.md``): a 2x-redundant DFT frame of 64 ms, hop 1/4, and per iteration 4 more
coefficients per 1024 samples of frame (4 at 16-22 kHz: the SDR gain of step 1 at a quarter of
the CPU; 8 at 44.1-48 kHz: on design music the gain of step 4 at half its CPU); at 16-22 kHz step
1 on frames at least 60 % clipped and 250 iterations a frame at most; at 44.1-48 kHz coarse to fine
(step 8 falling to 2 near the target residual) and 60 iterations at most. ``slack = 1`` solves each
frame while the next hop arrives (one hop more latency) for blocks shorter than the hop.
"""
from __future__ import annotations

import numpy as np

from ..engine import Node

__all__ = ["Declip"]


def _pow2_window(sample_rate: int, window_ms: float) -> int:
    """The power of two nearest ``window_ms`` at ``sample_rate`` (the DFT frame needs one)."""
    n = window_ms * sample_rate / 1000.0
    return int(2 ** round(np.log2(max(n, 16.0))))


class Declip(Node):
    """A-SPADE declipper node; parameters as in the config (see ``NODE_TYPES['declip']``)."""

    event_names = ()

    def __init__(self, name: str | None = None, window_ms: float = 64.0, sparsity_step: int = 0,
                 max_iter: int = 0, eps: float = 0.1, tolerance: float = 0.0, min_run: int = 2,
                 min_plateaus: int = 2, mark_run: int = 1, heavy_frac: float = 0.6, heavy_step: int = 0,
                 soft_ratio: float = 1.0, release_db_per_s: float = 0.0, fine_ratio: float = -1.0,
                 fine_step: int = 2, slack: int = 0, iters_per_hop: int = 64):
        super().__init__(name or "declip")
        if not 8.0 <= window_ms <= 500.0:
            raise ValueError(f"window_ms={window_ms} is outside 8..500")
        if not (fine_ratio == -1.0 or fine_ratio >= 0.0):
            raise ValueError(f"fine_ratio={fine_ratio}: expected -1 (the frame's rule), 0 (off) or > 0")
        self.window_ms, self.sparsity_step, self.max_iter, self.eps = window_ms, sparsity_step, max_iter, eps
        self.tolerance, self.min_run, self.soft_ratio, self.release = tolerance, min_run, soft_ratio, release_db_per_s
        self.min_plateaus, self.mark_run, self.heavy_frac, self.heavy_step = min_plateaus, mark_run, heavy_frac, heavy_step
        self.fine_ratio, self.fine_step, self.slack, self.iters_per_hop = fine_ratio, fine_step, slack, iters_per_hop
        self.kernel = None
        self.frames_in = 0

    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        from .._restore import Declipper

        super().prepare(sample_rate, block_size, channels)
        window = _pow2_window(sample_rate, self.window_ms)
        step = self.sparsity_step or max(1, 4 * window // 1024)
        # step 1 on heavily clipped frames: on design speech +0.46 dB at a 1.5x CPU (docs/restore.md);
        # at 2048-sample frames (44.1/48 kHz) it cost up to 3.5x real time on design music: off there
        long_frames = window > 1024                     # 44.1 kHz: 2048 samples, 48 kHz: 4096
        heavy = self.heavy_step or (0 if long_frames else 1)          # 0: the frame's own step
        # 44.1/48 kHz (2048-sample frames), on design music (docs/restore.md): step 8 falling to 2
        # once the residual is within 16 eps, at most 60 iterations a frame: +6.05 dB against +5.16
        # for plain step 8, at a lower CPU (RTF worst 0.30 against 0.50); step 1 throughout +5.23 at
        # 3.5x real time. At 16-22 kHz the same rule lost 0.05-0.2 dB on design speech: off there,
        # and 250 iterations at most (-0.05 dB, the longest 16 ms block 18.6 -> 11.3 ms)
        fine = self.fine_ratio if self.fine_ratio >= 0.0 else (16.0 if long_frames else 0.0)
        max_iter = self.max_iter or (60 if long_frames else 250)
        self.kernel = Declipper(window=window, channels=channels, eps=self.eps, sparsity_step=step,
                                max_iter=max_iter,
                                tolerance=self.tolerance, min_run=self.min_run, min_plateaus=self.min_plateaus,
                                mark_run=self.mark_run, heavy_frac=self.heavy_frac, heavy_step=heavy,
                                soft_ratio=self.soft_ratio, fine_ratio=fine, fine_step=self.fine_step,
                                slack=self.slack, iters_per_hop=self.iters_per_hop,
                                release_db_per_s=self.release, sample_rate=sample_rate)
        self.latency_samples = self.kernel.latency_samples
        self.frames_in = 0

    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        self.kernel.process(inp, out)
        self.frames_in += inp.shape[1]

    def reset(self) -> None:
        if self.kernel is not None:
            self.kernel.reset()
        self.frames_in = 0

    def report(self) -> dict:
        """What the summary prints: clipped fraction in, still-clipped fraction out."""
        k = self.kernel
        n = max(1, self.frames_in * self.channels)
        if k is None:
            return {}
        hi, lo = k.peaks
        return {"clipped_in_pct": round(100.0 * k.samples_clipped / n, 3),
                "clipped_out_pct": round(100.0 * k.samples_flat_out / n, 3),
                "clip_level": round(float(max(max(hi), max(lo))), 5),
                "frames_restored": int(k.frames_solved), "iterations": int(k.iterations)}

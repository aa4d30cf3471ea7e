"""The streaming separator (the ``separate`` node's model): STFT power -> per-stem masks.

Open-Unmix-class, causal, one call per 16 ms hop with explicit state:

    power (1, 257)  -> log10(power + 1e-8), per-bin standardized (the training set's statistics,
                       baked in)
                    -> Linear 257 -> H, tanh
                    -> GRU (2 layers of H, unrolled as explicit matmuls so it exports as
                       MatMul/Gemm that INT8 quantizes)
                    -> [GRU output, the first layer's input] -> Linear 2H -> H, ReLU
                    -> Linear H -> S x 257, softmax over the S stems
    mask (1, S, 257)   masks that sum to 1 in every bin: the stems sum back to the mix
    state (1, 2H)   -> state_out (1, 2H)

Training runs the same weights through ``torch.nn.GRU`` over whole sequences (fast);
:class:`StepModel` is the one-hop graph exported to ONNX, with the identical arithmetic
(``tests/test_separate.py`` checks the two agree).
"""
from __future__ import annotations

import torch
from torch import nn

N_FFT = 512
HOP = 256
N_BINS = N_FFT // 2 + 1
EPS = 1e-8


class Separator(nn.Module):
    """Sequence model for training: ``forward(power (B, T, F)) -> masks (B, T, S, F)``."""

    def __init__(self, n_stems: int = 4, hidden: int = 128, n_bins: int = N_BINS):
        super().__init__()
        self.n_stems, self.hidden, self.n_bins = n_stems, hidden, n_bins
        self.register_buffer("mean", torch.zeros(n_bins))
        self.register_buffer("std", torch.ones(n_bins))
        self.fc_in = nn.Linear(n_bins, hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=2, batch_first=True)
        self.fc_mid = nn.Linear(2 * hidden, hidden)
        self.fc_out = nn.Linear(hidden, n_stems * n_bins)

    def features(self, power: torch.Tensor) -> torch.Tensor:
        return (torch.log10(power + EPS) - self.mean) / self.std

    def head(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.fc_mid(torch.cat([g, x], dim=-1)))
        logits = self.fc_out(y).unflatten(-1, (self.n_stems, self.n_bins))
        return torch.softmax(logits, dim=-2)

    def forward(self, power: torch.Tensor, h0: torch.Tensor | None = None):
        x = torch.tanh(self.fc_in(self.features(power)))
        g, h = self.gru(x, h0)
        return self.head(x, g), h


class StepModel(nn.Module):
    """One hop of :class:`Separator` with the GRU state as input and output (for ONNX)."""

    def __init__(self, sep: Separator):
        super().__init__()
        self.sep = sep

    @staticmethod
    def _cell(x, h, w_ih, w_hh, b_ih, b_hh):
        gi = x @ w_ih.T + b_ih
        gh = h @ w_hh.T + b_hh
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h

    def forward(self, power: torch.Tensor, state: torch.Tensor):
        s = self.sep
        H = s.hidden
        x = torch.tanh(s.fc_in(s.features(power)))
        h0, h1 = state[:, :H], state[:, H:]
        g = s.gru
        h0 = self._cell(x, h0, g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)
        h1 = self._cell(h0, h1, g.weight_ih_l1, g.weight_hh_l1, g.bias_ih_l1, g.bias_hh_l1)
        mask = s.head(x, h1)
        return mask, torch.cat([h0, h1], dim=-1)


def export_onnx(sep: Separator, path: str) -> None:
    """The one-hop graph: inputs power (1, F), state (1, 2H); outputs mask (1, S, F), state_out."""
    sep = sep.eval()
    step = StepModel(sep)
    power = torch.rand(1, sep.n_bins)
    state = torch.zeros(1, 2 * sep.hidden)
    torch.onnx.export(step, (power, state), path, input_names=["power", "state"],
                      output_names=["mask", "state_out"], opset_version=17, dynamo=False)

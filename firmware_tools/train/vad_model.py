"""Our voice-activity model: a small causal GRU over 32 log-mel energies, one step per 10 ms.

Signal path (identical in training, export and the runtime node ``edge_runtime/nodes/vad.py``):
  25 ms Hann frame every 10 ms (causal: frame t ends at sample 160 (t + 1)) -> |rfft|^2
  -> 32 Slaney mel bands 60..7800 Hz -> ln(max(., 1e-10))      [edge_runtime.nodes.vad.VadFrontEnd]
  -> (x - mean) / std (constants from the training data, stored in the model)
  -> K consecutive frames stacked (one model step per K x 10 ms; K = 1..4)
  -> dense(32 K -> P) + tanh -> GRU(H) [-> GRU(H)] -> dense([h1, h2] -> K) -> sigmoid = P(speech)
     of each of the K frames

Training uses ``nn.GRU``; export uses :class:`VadStep`, the same weights as explicit matrix products
(no GRU op: ONNX Runtime quantizes MatMul/Gemm, and the runtime wants one call per hop with the
recurrent state passed in and out): inputs ``feat [1, 32 K]``, ``state [1, layers x H]``; outputs
``prob [1, K]``, ``state_out [1, layers x H]``.
"""
from __future__ import annotations

import torch
from torch import nn

from denoise_model import _GRUCell as _DenseGRUCell

N_MELS = 32
HIDDEN = 64
PROJ = 48


class VadNet(nn.Module):
    def __init__(self, hidden: int = HIDDEN, proj: int = PROJ, stack: int = 1, layers: int = 2):
        super().__init__()
        if layers not in (1, 2):
            raise ValueError(f"layers={layers}; expected 1 or 2")
        self.hidden, self.proj, self.stack, self.layers = hidden, proj, stack, layers
        self.register_buffer("feat_mean", torch.zeros(N_MELS * stack))
        self.register_buffer("feat_std", torch.ones(N_MELS * stack))
        self.inp = nn.Linear(N_MELS * stack, proj)
        self.gru1 = nn.GRU(proj, hidden, batch_first=True)
        self.gru2 = nn.GRU(hidden, hidden, batch_first=True) if layers == 2 else None
        self.out = nn.Linear(layers * hidden, stack)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 32) log-mel, frames a multiple of ``stack`` -> (batch, frames) logits."""
        b, t, _ = feat.shape
        x = feat.reshape(b, t // self.stack, N_MELS * self.stack)
        x = torch.tanh(self.inp((x - self.feat_mean) / self.feat_std))
        h1, _ = self.gru1(x)
        if self.gru2 is None:
            return self.out(h1).reshape(b, t)
        h2, _ = self.gru2(h1)
        return self.out(torch.cat([h1, h2], dim=-1)).reshape(b, t)


class _GRUCell(_DenseGRUCell):
    """The denoiser's dense GRU step (same weights layout), written with fewer graph nodes (one
    Split per gate group; (1 - z) n + z h as n + z (h - n)): ONNX Runtime's cost per call of a
    model this small is mostly per-node overhead."""

    def forward(self, x, h):
        hs = self.h
        i_rz, i_n = self.ih(x).split([2 * hs, hs], dim=-1)
        h_rz, h_n = self.hh(h).split([2 * hs, hs], dim=-1)
        r, z = torch.sigmoid(i_rz + h_rz).split([hs, hs], dim=-1)
        n = torch.tanh(i_n + r * h_n)
        return n + z * (h - n)


class VadStep(nn.Module):
    """One model step (``stack`` 10 ms frames): (feat, state) -> (prob, new state). The exported
    model; the input normalization is folded into the first dense layer."""

    def __init__(self, model: VadNet):
        super().__init__()
        self.hidden = model.hidden
        self.stack = model.stack
        self.layers = model.layers
        self.inp = nn.Linear(model.inp.in_features, model.inp.out_features)
        with torch.no_grad():
            w = model.inp.weight / model.feat_std[None, :]
            self.inp.weight.copy_(w)
            self.inp.bias.copy_(model.inp.bias - w @ model.feat_mean)
        self.cell1 = _GRUCell(model.gru1)
        self.cell2 = _GRUCell(model.gru2) if model.gru2 is not None else None
        self.out = model.out

    def forward(self, feat, state):
        x = torch.tanh(self.inp(feat))
        if self.cell2 is None:
            h1 = self.cell1(x, state)
            return torch.sigmoid(self.out(h1)), h1
        s1, s2 = state.split([self.hidden, self.hidden], dim=-1)
        h1 = self.cell1(x, s1)
        h2 = self.cell2(h1, s2)
        hs = torch.cat([h1, h2], dim=-1)
        return torch.sigmoid(self.out(hs)), hs


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""Our voice-activity model: a small causal GRU over 32 log-mel energies, one step per 10 ms.

Signal path (identical in training, export and the runtime node ``edge_runtime/nodes/vad.py``):
  25 ms Hann frame every 10 ms (causal: frame t ends at sample 160 (t + 1)) -> |rfft|^2
  -> 32 Slaney mel bands 60..7800 Hz -> ln(max(., 1e-10))      [edge_runtime.nodes.vad.VadFrontEnd]
  -> (x - mean) / std (constants from the training data, stored in the model)
  -> dense(32 -> P) + tanh -> GRU(H) -> GRU(H) -> dense([h1, h2] -> 1) -> sigmoid = P(speech)

Training uses ``nn.GRU``; export uses :class:`VadStep`, the same weights as explicit matrix products
(no GRU op: ONNX Runtime quantizes MatMul/Gemm, and the runtime wants one call per hop with the
recurrent state passed in and out): inputs ``feat [1, 32]``, ``state [1, 2H]``; outputs
``prob [1, 1]``, ``state_out [1, 2H]``.
"""
from __future__ import annotations

import torch
from torch import nn

N_MELS = 32
HIDDEN = 64
PROJ = 48


class VadNet(nn.Module):
    def __init__(self, hidden: int = HIDDEN, proj: int = PROJ):
        super().__init__()
        self.hidden, self.proj = hidden, proj
        self.register_buffer("feat_mean", torch.zeros(N_MELS))
        self.register_buffer("feat_std", torch.ones(N_MELS))
        self.inp = nn.Linear(N_MELS, proj)
        self.gru1 = nn.GRU(proj, hidden, batch_first=True)
        self.gru2 = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(2 * hidden, 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 32) log-mel -> (batch, frames) logits."""
        x = torch.tanh(self.inp((feat - self.feat_mean) / self.feat_std))
        h1, _ = self.gru1(x)
        h2, _ = self.gru2(h1)
        return self.out(torch.cat([h1, h2], dim=-1))[..., 0]


class _GRUCell(nn.Module):
    """nn.GRU's single step as two dense layers (PyTorch's r, z, n gate order)."""

    def __init__(self, gru: nn.GRU):
        super().__init__()
        h = gru.hidden_size
        self.h = h
        self.ih = nn.Linear(gru.input_size, 3 * h)
        self.hh = nn.Linear(h, 3 * h)
        with torch.no_grad():
            self.ih.weight.copy_(gru.weight_ih_l0)
            self.ih.bias.copy_(gru.bias_ih_l0)
            self.hh.weight.copy_(gru.weight_hh_l0)
            self.hh.bias.copy_(gru.bias_hh_l0)

    def forward(self, x, h):
        gi = self.ih(x)
        gh = self.hh(h)
        hs = self.h
        r = torch.sigmoid(gi[..., :hs] + gh[..., :hs])
        z = torch.sigmoid(gi[..., hs:2 * hs] + gh[..., hs:2 * hs])
        n = torch.tanh(gi[..., 2 * hs:] + r * gh[..., 2 * hs:])
        return (1 - z) * n + z * h


class VadStep(nn.Module):
    """One 10 ms hop: (feat, state) -> (prob, new state). The exported model."""

    def __init__(self, model: VadNet):
        super().__init__()
        self.hidden = model.hidden
        self.register_buffer("feat_mean", model.feat_mean.clone())
        self.register_buffer("feat_std", model.feat_std.clone())
        self.inp = model.inp
        self.cell1 = _GRUCell(model.gru1)
        self.cell2 = _GRUCell(model.gru2)
        self.out = model.out

    def forward(self, feat, state):
        x = torch.tanh(self.inp((feat - self.feat_mean) / self.feat_std))
        h1 = self.cell1(x, state[:, :self.hidden])
        h2 = self.cell2(h1, state[:, self.hidden:])
        prob = torch.sigmoid(self.out(torch.cat([h1, h2], dim=-1)))
        return prob, torch.cat([h1, h2], dim=-1)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

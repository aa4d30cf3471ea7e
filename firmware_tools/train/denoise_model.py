"""The speech denoiser: a causal GRU mask estimator over a 20 ms / 10 ms STFT.

Training uses ``nn.GRU`` (fast, cuDNN on a GPU); export uses :class:`DenoiseStep`, the same
weights written as explicit matrix products so the exported graph has no GRU op: ONNX
Runtime quantizes MatMul/Gemm but not GRU, and the runtime wants one call per 10 ms hop
with the recurrent state passed in and out explicitly.

Signal path (identical in training, export and the runtime node):
  frame of 320 samples, periodic sqrt-Hann -> rfft (161 bins) -> log10(|X|^2 + 1e-10)
  -> (x - mean) / std  (constants from the training data, stored in the model)
  -> dense(161 -> H) + tanh -> GRU(H) -> GRU(H) -> dense([g1, g2] -> 161) + sigmoid = gain
  -> X * gain -> irfft -> sqrt-Hann -> overlap-add.   Algorithmic latency 20 ms (one frame).
"""
from __future__ import annotations

import math

import torch
from torch import nn

SAMPLE_RATE = 16000
FRAME = 320
HOP = 160
BINS = FRAME // 2 + 1
HIDDEN = 224
LOG_FLOOR = 1e-10


def sqrt_hann(n: int = FRAME) -> torch.Tensor:
    # periodic Hann, as edge_runtime.spectral.window("sqrt_hann", n)
    k = torch.arange(n, dtype=torch.float64)
    return torch.sqrt(0.5 - 0.5 * torch.cos(2 * math.pi * k / n)).float()


def stft(x: torch.Tensor) -> torch.Tensor:
    """(batch, samples) -> complex (batch, frames, BINS); frame t ends at sample (t+1)*HOP.

    Causal framing like the streaming analyzer: FRAME - HOP zeros of history are prepended,
    so frame t covers samples [t*HOP - (FRAME-HOP), t*HOP + HOP).
    """
    x = nn.functional.pad(x, (FRAME - HOP, 0))
    frames = x.unfold(-1, FRAME, HOP) * sqrt_hann().to(x.device)
    return torch.fft.rfft(frames, dim=-1)


def istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of :func:`stft` with sqrt-Hann synthesis and overlap-add (50% overlap: COLA).

    Output sample n corresponds to input sample n - (FRAME - HOP): the 10 ms synthesis delay
    of the streaming node. Returned aligned with the input (delay removed), for training.
    """
    frames = torch.fft.irfft(spec, n=FRAME, dim=-1) * sqrt_hann().to(spec.device)
    b, t, _ = frames.shape
    out = nn.functional.fold(frames.transpose(1, 2), output_size=(1, (t - 1) * HOP + FRAME),
                             kernel_size=(1, FRAME), stride=(1, HOP)).reshape(b, -1)
    return out[:, FRAME - HOP:FRAME - HOP + length]


class Denoiser(nn.Module):
    def __init__(self, hidden: int = HIDDEN):
        super().__init__()
        self.hidden = hidden
        self.register_buffer("feat_mean", torch.zeros(BINS))
        self.register_buffer("feat_std", torch.ones(BINS))
        self.inp = nn.Linear(BINS, hidden)
        self.gru1 = nn.GRU(hidden, hidden, batch_first=True)
        self.gru2 = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(2 * hidden, BINS)

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        power = spec.real ** 2 + spec.imag ** 2
        return (torch.log10(power + LOG_FLOOR) - self.feat_mean) / self.feat_std

    def gains(self, spec: torch.Tensor) -> torch.Tensor:
        """complex (batch, frames, BINS) -> gains in [0, 1], same shape."""
        h = torch.tanh(self.inp(self.features(spec)))
        g1, _ = self.gru1(h)
        g2, _ = self.gru2(g1)
        return torch.sigmoid(self.out(torch.cat([g1, g2], dim=-1)))

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        spec = stft(noisy)
        return istft(spec * self.gains(spec), noisy.shape[-1])


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


class DenoiseStep(nn.Module):
    """One 10 ms hop: (re, im, state) -> (gain, new state). The exported model."""

    def __init__(self, model: Denoiser):
        super().__init__()
        self.hidden = model.hidden
        self.register_buffer("feat_mean", model.feat_mean.clone())
        self.register_buffer("feat_std", model.feat_std.clone())
        self.inp = model.inp
        self.cell1 = _GRUCell(model.gru1)
        self.cell2 = _GRUCell(model.gru2)
        self.out = model.out

    def forward(self, re, im, state):
        # re, im: (1, BINS); state: (1, 2*H) = [h1, h2]
        feat = (torch.log10(re * re + im * im + LOG_FLOOR) - self.feat_mean) / self.feat_std
        x = torch.tanh(self.inp(feat))
        h1 = self.cell1(x, state[:, :self.hidden])
        h2 = self.cell2(h1, state[:, self.hidden:])
        gain = torch.sigmoid(self.out(torch.cat([h1, h2], dim=-1)))
        return gain, torch.cat([h1, h2], dim=-1)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

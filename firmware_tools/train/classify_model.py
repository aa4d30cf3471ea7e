"""The sound classifier: a DS-CNN over one 96 x 40 log-mel window.

    logmel (1, 96, 40) -> per-band normalization (constants from the training set)
      -> conv 3x3/2, w                                    (48 x 20)
      -> depthwise-separable blocks 2w/2, 2w, 4w/2, 4w     (12 x 5)
      -> pool -> embedding  [second output]
      -> linear -> softmax -> probs (1, n_classes)   [first output]

Pooling ``mean``: the global average (embedding 4w); ``meanmax``: the average over frequency,
then the average and the maximum over time side by side (embedding 8w), so a sound that is
loud in a short part of the window (a chime, a beep) is told from one that goes on (music)
without more weights in the convolutions.

Width w = 32: 36 k parameters and 3.5 M multiply-adds per window; w = 48: 77 k and 7.5 M;
w = 56 (shipped): 103 k and ~10 M. The embedding (the layer before the classifier) is an output of its own for the
anomaly / personalization work.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edge_runtime import atomic

N_FRAMES, N_MELS = 96, 40


class DSBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = torch.relu(self.bn1(self.dw(x)))
        return torch.relu(self.bn2(self.pw(x)))


class SoundClassifier(nn.Module):
    def __init__(self, n_classes: int, width: int = 32, mean=None, std=None, dropout: float = 0.2,
                 pool: str = "mean"):
        super().__init__()
        if pool not in ("mean", "meanmax"):
            raise ValueError(f"pool {pool!r}: expected 'mean' or 'meanmax'")
        self.n_classes, self.width, self.pool = n_classes, width, pool
        self.register_buffer("mean", torch.as_tensor(np.zeros(N_MELS) if mean is None else mean,
                                                     dtype=torch.float32).reshape(1, 1, 1, N_MELS))
        self.register_buffer("inv_std", torch.as_tensor(1.0 / (1.0 if std is None else std),
                                                        dtype=torch.float32).reshape(1, 1, 1, 1))
        w = width
        self.stem = nn.Conv2d(1, w, 3, stride=2, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(w)
        self.blocks = nn.Sequential(DSBlock(w, 2 * w, 2), DSBlock(2 * w, 2 * w, 1),
                                    DSBlock(2 * w, 4 * w, 2), DSBlock(4 * w, 4 * w, 1))
        self.embed_dim = 4 * w * (2 if pool == "meanmax" else 1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.embed_dim, n_classes)

    def embed(self, logmel):
        x = (logmel.unsqueeze(1) - self.mean) * self.inv_std
        x = torch.relu(self.bn0(self.stem(x)))
        x = self.blocks(x)
        if self.pool == "meanmax":
            x = x.mean(dim=3)                      # (B, C, T)
            return torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)
        return x.mean(dim=(2, 3))

    def forward(self, logmel):
        """Logits and embedding (training)."""
        e = self.embed(logmel)
        return self.head(self.drop(e)), e


class ClassifierExport(nn.Module):
    """The shipped graph: logmel -> (probs, embedding)."""

    def __init__(self, model: SoundClassifier):
        super().__init__()
        self.model = model.eval()

    def forward(self, logmel):
        e = self.model.embed(logmel)
        return torch.softmax(self.model.head(e), dim=-1), e


def save_checkpoint(model: SoundClassifier, path: str, classes, **meta) -> None:
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays["meta_n_classes"] = np.array(model.n_classes)
    arrays["meta_width"] = np.array(model.width)
    arrays["meta_pool"] = np.array(model.pool)
    arrays["meta_classes"] = np.array(list(classes))
    for k, v in meta.items():
        arrays[f"meta_{k}"] = np.array(v)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    atomic.commit(tmp, path)


def load_checkpoint(path: str) -> tuple[SoundClassifier, list[str], dict]:
    z = np.load(path, allow_pickle=False)
    pool = str(z["meta_pool"]) if "meta_pool" in z.files else "mean"   # checkpoints before the option
    model = SoundClassifier(int(z["meta_n_classes"]), int(z["meta_width"]), pool=pool)
    model.load_state_dict({k: torch.from_numpy(z[k]) for k in model.state_dict()})
    meta = {k[5:]: z[k] for k in z.files if k.startswith("meta_")}
    return model.eval(), [str(c) for c in z["meta_classes"]], meta


def export_onnx(model: SoundClassifier, out: str) -> None:
    net = ClassifierExport(model.cpu().eval()).eval()
    torch.onnx.export(net, (torch.zeros(1, N_FRAMES, N_MELS),), out, input_names=["logmel"],
                      output_names=["probs", "embedding"], opset_version=17, dynamo=False,
                      do_constant_folding=True)

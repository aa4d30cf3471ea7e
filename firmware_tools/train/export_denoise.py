"""Export a trained denoiser checkpoint (.npz of arrays, no pickle) to the one-hop ONNX model.

    python firmware_tools/train/export_denoise.py CKPT.npz OUT.onnx

The exported graph: inputs re, im (1, 161) float32 and state (1, 2H); outputs gain (1, 161)
and state_out (1, 2H). Only MatMul/Gemm/elementwise ops, so ONNX Runtime can quantize it.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

from edge_runtime import atomic

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from denoise_model import BINS, Denoiser, DenoiseStep  # noqa: E402


def load_checkpoint(path: str) -> Denoiser:
    """A model from a checkpoint ``.npz``, or from an exported FP32 ``.onnx`` (the shipped file:
    its initializers carry every weight under the state-dict names of :class:`DenoiseStep`)."""
    if str(path).endswith(".onnx"):
        return model_from_onnx(path)
    arrays = np.load(path, allow_pickle=False)
    hidden = int(arrays["hidden"])
    model = Denoiser(hidden)
    state = {k: torch.from_numpy(arrays[k]) for k in model.state_dict()}
    model.load_state_dict(state)
    return model.eval()


def model_from_onnx(path: str) -> Denoiser:
    """Rebuild the training model from the one-hop FP32 ONNX export (inverse of export_onnx)."""
    import onnx
    from onnx import numpy_helper

    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    need = ("feat_mean", "feat_std", "inp.weight", "cell1.ih.weight", "cell2.hh.weight", "out.weight")
    missing = [k for k in need if k not in init]
    if missing:
        raise SystemExit(f"{path}: not an FP32 denoise export (missing initializers {missing})")
    hidden = int(init["inp.weight"].shape[0])
    model = Denoiser(hidden)
    sd = {"feat_mean": init["feat_mean"], "feat_std": init["feat_std"],
          "inp.weight": init["inp.weight"], "inp.bias": init["inp.bias"],
          "out.weight": init["out.weight"], "out.bias": init["out.bias"]}
    for k in (1, 2):
        sd[f"gru{k}.weight_ih_l0"] = init[f"cell{k}.ih.weight"]
        sd[f"gru{k}.bias_ih_l0"] = init[f"cell{k}.ih.bias"]
        sd[f"gru{k}.weight_hh_l0"] = init[f"cell{k}.hh.weight"]
        sd[f"gru{k}.bias_hh_l0"] = init[f"cell{k}.hh.bias"]
    model.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in sd.items()})
    return model.eval()


def save_checkpoint(model: Denoiser, path: str, **meta) -> None:
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays["hidden"] = np.array(model.hidden)
    for k, v in meta.items():
        arrays[f"meta_{k}"] = np.array(v)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    atomic.commit(tmp, path)


def export_onnx(model: Denoiser, out: str) -> None:
    step = DenoiseStep(model.cpu().eval()).eval()
    re = torch.zeros(1, BINS)
    im = torch.zeros(1, BINS)
    state = torch.zeros(1, 2 * model.hidden)
    torch.onnx.export(step, (re, im, state), out, input_names=["re", "im", "state"],
                      output_names=["gain", "state_out"], opset_version=17, dynamo=False,
                      do_constant_folding=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    args = ap.parse_args(argv)
    export_onnx(load_checkpoint(args.checkpoint), args.out)
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Train our VAD on the clips of ``firmware_tools/data/build_vad.py`` (TRAIN split only).

    python firmware_tools/train/train_vad.py --data firmware_tools/work/vad16k \
        --out firmware_tools/work/vad_run [--minutes 20] [--threads 2]

Features are computed once with the runtime's own front end (``edge_runtime.nodes.vad.features``:
the node computes exactly these), cached in ``<out>/features_train.npy``. Batches are random
4 s crops; each crop gets a random level change applied in the log-mel domain (-20..+20 dB; the
log floor of digital silence is kept). Loss: binary cross-entropy per 10 ms frame. 4% of the train
clips are held out to pick the best checkpoint (frame F1 at 0.5). Writes ``checkpoint.npz`` (arrays,
no pickle), ``vad_fp32.onnx`` (one-hop model) and ``train_log.json``.

``--init`` continues from a checkpoint, or from a shipped one-hop ONNX model (``vad_fp32.onnx``:
its weights, with the input normalization it has folded in, become a ``VadNet`` again).

``--neg-noise P`` (default 0: the earlier recipe): a share P of each batch's crops is a synthetic
negative from a bank made at the start: digital silence or a -85..-45 dBFS floor for 0.3..3 s,
then stationary noise of random colour (power slope f^-2.2 .. f^+0.6: brown to blue) at -60..-6
dBFS, all labelled non-speech. This is augmentation for the case the real data lacks (a steady
noise that begins after silence, which the shipped model took for speech), not the base. The
checkpoint is then picked on ``F1 - 0.25 x`` the false-speech frame rate on 48 such streams made
with another seed (``onset_fp`` in the log).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from edge_runtime import atomic

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "firmware_tools", "data"))

LOG_FLOOR = math.log(1e-10)


def load_features(data: str, out: str, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(features clips x frames x 32 float32, labels clips x frames uint8), cached in ``out``."""
    from build_vad import load_split

    from edge_runtime.nodes.vad import features

    audio, labels = load_split(data, split)
    cache = os.path.join(out, f"features_{split}.npy")
    if os.path.exists(cache):
        f = np.load(cache, mmap_mode="r")
        if f.shape[0] == audio.shape[0]:
            return np.asarray(f), labels
    t0 = time.time()
    feats = np.stack([features(a.astype(np.float32) / 32768.0) for a in audio])
    n = min(feats.shape[1], labels.shape[1])
    feats, labels = feats[:, :n], labels[:, :n]
    np.save(cache + ".tmp.npy", feats)
    atomic.commit(cache + ".tmp.npy", cache)
    print(f"features of {len(audio)} {split} clips in {time.time() - t0:.0f} s", flush=True)
    return feats, labels


def save_checkpoint(model, path: str, **meta) -> None:
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays["hidden"] = np.array(model.hidden)
    arrays["proj"] = np.array(model.proj)
    arrays["stack"] = np.array(model.stack)
    arrays["layers"] = np.array(model.layers)
    for k, v in meta.items():
        arrays[f"meta_{k}"] = np.array(v)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    atomic.commit(tmp, path)


def load_checkpoint(path: str):
    import torch

    from vad_model import VadNet

    arrays = np.load(path, allow_pickle=False)
    model = VadNet(int(arrays["hidden"]), int(arrays["proj"]), int(arrays["stack"]) if "stack" in arrays else 1,
                   int(arrays["layers"]) if "layers" in arrays else 2)
    model.load_state_dict({k: torch.from_numpy(arrays[k]) for k in model.state_dict()})
    return model.eval()


def checkpoint_from_onnx(path: str):
    """A ``VadNet`` (eval mode) with the weights of a one-hop model exported by :func:`export_onnx`
    (one GRU layer; the input normalization stays folded into ``inp``: mean 0, std 1)."""
    import onnx
    import torch
    from onnx import numpy_helper

    from vad_model import N_MELS, VadNet

    w = {i.name: numpy_helper.to_array(i) for i in onnx.load(path).graph.initializer}
    if "cell2.ih.weight" in w or "cell1.ih.weight" not in w:
        raise SystemExit(f"{path}: expected a one-layer vad model (inp, cell1, out), got {sorted(w)}")
    proj, width = w["inp.weight"].shape
    hidden = w["cell1.hh.weight"].shape[1]
    model = VadNet(hidden, proj, width // N_MELS, 1)
    with torch.no_grad():
        model.inp.weight.copy_(torch.from_numpy(w["inp.weight"]))
        model.inp.bias.copy_(torch.from_numpy(w["inp.bias"]))
        model.gru1.weight_ih_l0.copy_(torch.from_numpy(w["cell1.ih.weight"]))
        model.gru1.bias_ih_l0.copy_(torch.from_numpy(w["cell1.ih.bias"]))
        model.gru1.weight_hh_l0.copy_(torch.from_numpy(w["cell1.hh.weight"]))
        model.gru1.bias_hh_l0.copy_(torch.from_numpy(w["cell1.hh.bias"]))
        model.out.weight.copy_(torch.from_numpy(w["out.weight"]))
        model.out.bias.copy_(torch.from_numpy(w["out.bias"]))
    return model.eval()


def onset_negatives(n: int, frames: int, seed: int) -> np.ndarray:
    """``n`` synthetic negative streams of ``frames`` 10 ms frames as runtime features: silence or a
    floor, then stationary coloured noise (see the module docstring). (n, frames, 32) float32."""
    from edge_runtime.nodes.vad import features

    rng = np.random.default_rng(seed)
    L = frames * 160
    f = np.fft.rfftfreq(L, 1 / 16000.0)
    f[0] = f[1]
    out = np.empty((n, frames, 32), np.float32)
    for i in range(n):
        a0 = int(rng.uniform(0.3, 3.0) * 16000)
        x = np.zeros(L)
        if rng.random() < 0.6:
            x += rng.standard_normal(L) * 10 ** (rng.uniform(-85, -45) / 20)
        beta = rng.uniform(-2.2, 0.6)
        y = np.fft.irfft(np.fft.rfft(rng.standard_normal(L)) * f ** (beta / 2), L)
        y = y / np.sqrt(np.mean(y ** 2)) * 10 ** (rng.uniform(-60, -6) / 20)
        x[a0:] += y[a0:]
        out[i] = features(np.clip(x, -1, 1).astype(np.float32))[:frames]
    return out


def export_onnx(model, out: str) -> None:
    import torch

    from vad_model import N_MELS, VadStep

    step = VadStep(model.cpu().eval()).eval()
    torch.onnx.export(step, (torch.zeros(1, N_MELS * model.stack), torch.zeros(1, model.layers * model.hidden)), out,
                      input_names=["feat", "state"], output_names=["prob", "state_out"], opset_version=17,
                      dynamo=False, do_constant_folding=True)


def f1(pred: np.ndarray, ref: np.ndarray) -> float:
    tp = float(np.sum(pred & ref))
    fp = float(np.sum(pred & ~ref))
    fn = float(np.sum(~pred & ref))
    return 2 * tp / max(2 * tp + fp + fn, 1.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--proj", type=int, default=48)
    ap.add_argument("--stack", type=int, default=1, help="10 ms frames per model step (1..4)")
    ap.add_argument("--layers", type=int, default=2, help="GRU layers (1 or 2)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=400)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", help="continue from this checkpoint.npz or shipped vad_fp32.onnx (its architecture "
                    "and normalization)")
    ap.add_argument("--neg-noise", type=float, default=0.0,
                    help="share of each batch that is a synthetic noise-after-silence negative (default 0)")
    a = ap.parse_args(argv)

    import torch

    from vad_model import VadNet, count_params

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    feats, labels = load_features(a.data, a.out, "train")
    # the held-out clips do not depend on --seed (a run continued with --init keeps them held out);
    # with seed 0 the batches continue the same generator
    split_rng = np.random.default_rng(0)
    order = split_rng.permutation(len(feats))
    rng = split_rng if a.seed == 0 else np.random.default_rng(a.seed)
    n_val = max(8, int(0.04 * len(feats)))
    val_idx, tr_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    model = VadNet(a.hidden, a.proj, a.stack, a.layers)
    if a.init:
        model = (checkpoint_from_onnx(a.init) if a.init.endswith(".onnx") else load_checkpoint(a.init)).train()
        a.hidden, a.proj, a.stack, a.layers = model.hidden, model.proj, model.stack, model.layers
    K = a.stack
    usable = (feats.shape[1] // K) * K
    feats, labels = feats[:, :usable], labels[:, :usable]
    tr = feats[tr_idx]
    live = tr > LOG_FLOOR + 1e-3
    mean = np.array([tr[..., k][live[..., k]].mean() for k in range(tr.shape[-1])], np.float32)
    std = np.array([tr[..., k][live[..., k]].std() for k in range(tr.shape[-1])], np.float32)
    mean, std = np.tile(mean, K), np.tile(std, K)
    if not a.init:
        model.feat_mean.copy_(torch.from_numpy(mean))
        model.feat_std.copy_(torch.from_numpy(np.maximum(std, 1e-3)))
    print(f"model: {count_params(model)} parameters; {len(tr_idx)} train clips, {n_val} held out; "
          f"speech in {100 * labels[tr_idx].mean():.1f}% of train frames", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-4)
    budget = a.minutes * 60.0
    t0 = time.time()
    vf = torch.from_numpy(np.ascontiguousarray(feats[val_idx]))
    vl = labels[val_idx].astype(bool)
    best, log, step = -1.0, [], 0
    T, B = (min(a.frames, feats.shape[1]) // K) * K, a.batch
    neg_bank = onset_vf = None
    if a.neg_noise > 0:
        t1 = time.time()
        neg_bank = onset_negatives(800, T, seed=20261207)
        onset_vf = torch.from_numpy(onset_negatives(48, T, seed=7))
        print(f"{len(neg_bank)} synthetic noise-onset negatives (+48 for selection) in {time.time() - t1:.0f} s",
              flush=True)

    def evaluate():
        """(selection score, held-out F1, false-speech frame rate on the onset streams or None)"""
        model.eval()
        with torch.no_grad():
            score = f1(torch.sigmoid(model(vf)).numpy() > 0.5, vl)
            fp = None if onset_vf is None else float((torch.sigmoid(model(onset_vf)) > 0.5).float().mean())
        model.train()
        return (score if fp is None else score - 0.25 * fp), score, fp

    if a.init:  # the starting point is the one to beat
        best, score, fp = evaluate()
        save_checkpoint(model, os.path.join(a.out, "checkpoint.npz"), step=0, val_f1=score)
        print(f"from {a.init}: held-out F1 {score:.4f}, onset false-speech {fp}", flush=True)
    lab_t = labels[tr_idx]
    while True:
        el = time.time() - t0
        if el > budget:
            break
        lr = a.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(el / budget, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr
        ci = rng.integers(0, len(tr_idx), B)
        st = rng.integers(0, (feats.shape[1] - T) // K + 1, B) * K  # steps aligned as in the node
        x = np.stack([tr[c, s:s + T] for c, s in zip(ci, st)])
        y = np.stack([lab_t[c, s:s + T] for c, s in zip(ci, st)]).astype(np.float32)
        if neg_bank is not None:
            swap = rng.random(B) < a.neg_noise
            if swap.any():
                x[swap] = neg_bank[rng.integers(0, len(neg_bank), int(swap.sum()))]
                y[swap] = 0.0
        shift = (rng.uniform(-20, 20, (B, 1, 1)) * math.log(10) / 10).astype(np.float32)
        floor = x <= LOG_FLOOR + 1e-3
        x = np.where(floor, x, np.maximum(x + shift, LOG_FLOOR)).astype(np.float32)
        logits = model(torch.from_numpy(x))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0 or time.time() - t0 > budget:
            sel, score, fp = evaluate()
            log.append({"step": step, "seconds": round(time.time() - t0, 1), "loss": float(loss.detach()),
                        "val_f1": score, "onset_fp": fp, "lr": lr})
            print(f"step {step} {time.time() - t0:.0f}s loss {float(loss.detach()):.4f} val F1 {score:.4f}"
                  + ("" if fp is None else f" onset false-speech {fp:.4f}"), flush=True)
            if sel > best:
                best = sel
                save_checkpoint(model, os.path.join(a.out, "checkpoint.npz"), step=step, val_f1=score,
                                **({} if fp is None else {"onset_fp": fp}))
    model = load_checkpoint(os.path.join(a.out, "checkpoint.npz"))
    export_onnx(model, os.path.join(a.out, "vad_fp32.onnx"))
    with open(os.path.join(a.out, "train_log.json"), "w") as f:
        json.dump({"args": vars(a), "steps": step, "best_val_f1": best, "params": count_params(model),
                   "log": log}, f, indent=1)
    print(f"done: {step} steps, best held-out F1 {best:.4f}; {a.out}/vad_fp32.onnx", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

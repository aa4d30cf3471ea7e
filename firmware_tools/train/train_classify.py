"""Train the sound classifier on the windows of firmware_tools/data/build_classify.py.

    python firmware_tools/train/train_classify.py --data firmware_tools/work/classify16k \
        --out firmware_tools/work/classify_run [--epochs 14] [--minutes 25] [--threads 2] [--init CKPT]

Defaults are the shipped recipe (width 56, mean pooling, no mixup, 14 epochs); ``--mixup 0.5``
and ``--freq-shift 2 --ema 0.998`` were tried (README, "Sound classification") and did not beat
it on TEST.

Reads train.npz and val.npz (never test.npz; ``--train-on-val`` makes VAL part of the final
fit, keeping the last epoch), trains with AdamW (warm-up + cosine over epochs or --minutes, whichever runs out first), label smoothing,
SpecAugment masks, random time shifts, class-balanced windows and optional mixup (``--mixup P``:
that share of batches mixes pairs of windows in the band-power domain, the log of a weighted sum
of two sounds, with the labels weighted alike), optional band shifts (``--freq-shift K``: each
window's mel axis moved by up to K bands), optional random colouring (``--eq-db D``: a smooth
gain curve within +-D dB over the bands, as another microphone or room would give) and an optional moving average of the weights
(``--ema DECAY``, evaluated and saved in place of the raw weights), and keeps the checkpoint with the best
validation macro-F1 (checkpoint.npz: arrays only, no pickle). ``--pool`` picks the classifier's
pooling (classify_model.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from classify_model import SoundClassifier, save_checkpoint  # noqa: E402


def macro_f1(y: np.ndarray, p: np.ndarray, n: int) -> float:
    f = []
    for c in range(n):
        tp = np.sum((p == c) & (y == c))
        fp = np.sum((p == c) & (y != c))
        fn = np.sum((p != c) & (y == c))
        f.append(2 * tp / max(2 * tp + fp + fn, 1))
    return float(np.mean(f))


def spec_augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per example: one time mask (<= 16 frames), one band mask (<= 5 bands), filled with the
    example's minimum (quiet, not an impossible value), and a random circular time shift."""
    b, t, m = x.shape
    x = x.clone()
    lo = x.amin(dim=(1, 2), keepdim=True)
    tw = torch.randint(0, 17, (b,), generator=g)
    t0 = (torch.rand(b, generator=g) * (t - tw)).long()
    fw = torch.randint(0, 6, (b,), generator=g)
    f0 = (torch.rand(b, generator=g) * (m - fw)).long()
    ar_t = torch.arange(t).view(1, t, 1)
    ar_f = torch.arange(m).view(1, 1, m)
    tm = (ar_t >= t0.view(b, 1, 1)) & (ar_t < (t0 + tw).view(b, 1, 1))
    fm = (ar_f >= f0.view(b, 1, 1)) & (ar_f < (f0 + fw).view(b, 1, 1))
    mask = (tm | fm) & (torch.rand(b, 1, 1, generator=g) < 0.7)
    x = torch.where(mask, lo.expand_as(x), x)
    shift = int(torch.randint(0, t, (1,), generator=g))
    return torch.roll(x, shifts=shift, dims=1)


def freq_shift(x: torch.Tensor, k: int, g: torch.Generator) -> torch.Tensor:
    """Per example, the mel axis moved by a whole number of bands in [-k, k] (the edge band
    repeated into the gap): the same sound a little higher or lower, as another engine, ring tone
    or voice of its kind would be."""
    if k <= 0:
        return x
    b, t, m = x.shape
    s = torch.randint(-k, k + 1, (b,), generator=g)
    src = (torch.arange(m).view(1, m) - s.view(b, 1)).clamp(0, m - 1)   # out[..., j] = x[..., j - s]
    return torch.gather(x, 2, src.view(b, 1, m).expand(b, t, m))


DB = float(np.log(10.0) / 10.0)   # one decibel of power in the log-mel's natural-log units


def random_eq(x: torch.Tensor, db: float, g: torch.Generator) -> torch.Tensor:
    """Per example, a smooth gain curve over the mel bands (the sum of three cosines across the
    axis, coefficients uniform in [-db/3, db/3] dB, so within +-db dB): the same sound through
    another microphone, room or loudspeaker. Values are kept at or above the example's minimum
    (the log floor of a digital silence is not coloured)."""
    if db <= 0:
        return x
    b, t, m = x.shape
    a = (torch.rand(b, 3, generator=g) * 2 - 1) * (db / 3) * DB
    basis = torch.cos(torch.pi * torch.arange(1, 4).view(3, 1) * torch.arange(m).view(1, m) / (m - 1))
    curve = (a @ basis).view(b, 1, m)
    return torch.maximum(x + curve, x.amin(dim=(1, 2), keepdim=True))


class WeightEma:
    """Exponential moving average of the parameters and buffers (BatchNorm statistics included),
    updated after every optimizer step; ``model`` holds the averaged copy."""

    def __init__(self, model: torch.nn.Module, decay: float):
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for e, v in zip(self.model.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                e.copy_(v)


def mixup(x: torch.Tensor, y: torch.Tensor, n: int, g: torch.Generator, alpha: float = 0.4,
          silence: int | None = 0):
    """Pairs of log-mel windows mixed as sounds: log(l * exp(a) + (1 - l) * exp(b)), l ~ Beta
    (alpha, alpha) per pair; soft targets l * onehot(a) + (1 - l) * onehot(b). A pair with a
    ``silence`` window is not mixed: a sound over room tone is that sound, not part silence
    (mixing them taught the first mixup model to call quiet sounds silence)."""
    b = x.shape[0]
    lam = torch.distributions.Beta(alpha, alpha).sample((b,)).clamp(1e-3, 1 - 1e-3)
    perm = torch.randperm(b, generator=g)
    if silence is not None:
        lam = torch.where((y == silence) | (y[perm] == silence), torch.ones_like(lam), lam)
    la = lam.view(b, 1, 1)
    xm = torch.logaddexp(x + torch.log(la), x[perm] + torch.log(1 - la))
    t = F.one_hot(y, n).float()
    return xm, lam.view(b, 1) * t + (1 - lam.view(b, 1)) * t[perm]


def evaluate(model, x: torch.Tensor, y: np.ndarray, n: int, batch: int = 512):
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits, _ = model(x[i:i + batch].float())
            preds.append(logits.argmax(-1).numpy())
    p = np.concatenate(preds)
    return float(np.mean(p == y)), macro_f1(y, p, n)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=14)
    ap.add_argument("--minutes", type=float, default=25.0, help="stop after this much training time")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--width", type=int, default=56)
    ap.add_argument("--pool", choices=("mean", "meanmax"), default="mean")
    ap.add_argument("--mixup", type=float, default=0.0, help="share of batches mixed (0: none)")
    ap.add_argument("--freq-shift", type=int, default=0, help="move each window's mel axis by up to this many bands")
    ap.add_argument("--eq-db", type=float, default=0.0,
                    help="colour each window by a random smooth gain curve within +-this many dB (0: none)")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="keep an exponential moving average of the weights with this decay per step "
                         "(0: none); it is evaluated, selected and saved instead of the raw weights")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", help="checkpoint.npz to start from (fine-tuning on rebuilt data)")
    ap.add_argument("--train-on-val", action="store_true",
                    help="the final fit: VAL joins TRAIN (after a run chose the schedule on VAL); no "
                         "checkpoint selection, the last epoch is kept")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    meta = json.load(open(os.path.join(a.data, "summary.json")))
    classes = meta["classes"]
    n = len(classes)
    tr = np.load(os.path.join(a.data, "train.npz"))
    va = np.load(os.path.join(a.data, "val.npz"))
    xva, yva = torch.from_numpy(va["x"]), va["y"]
    if a.train_on_val:
        xtr = torch.from_numpy(np.concatenate([tr["x"], va["x"]]))
        ytr = torch.from_numpy(np.concatenate([tr["y"], va["y"]]))
    else:
        xtr = torch.from_numpy(tr["x"])           # float16, converted per batch
        ytr = torch.from_numpy(tr["y"])
    sub = tr["x"][:: max(1, len(tr["x"]) // 2000)].astype(np.float32)
    mean = sub.mean(axis=(0, 1))
    std = float(sub.std())
    model = SoundClassifier(n, a.width, mean=mean, std=std, pool=a.pool)
    if a.init:   # continue from an earlier run (its normalization constants included)
        from classify_model import load_checkpoint

        init, init_classes, _ = load_checkpoint(a.init)
        if list(init_classes) != list(classes) or init.width != a.width or init.pool != a.pool:
            raise SystemExit(f"--init {a.init}: classes/width/pool {init_classes}/{init.width}/{init.pool} "
                             f"differ from {classes}/{a.width}/{a.pool}")
        model.load_state_dict(init.state_dict())
    print(f"{sum(p.numel() for p in model.parameters())} parameters; train {len(ytr)}, val {len(yva)} windows; "
          f"classes {classes}", flush=True)
    steps_per_epoch = len(ytr) // a.batch
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=1e-3)
    ema = WeightEma(model, a.ema) if a.ema else None

    def set_lr(frac: float) -> None:
        """Warm-up then cosine decay over the run's progress (the larger of epochs and time done),
        so a run cut short by --minutes on a busy machine still ends at a low learning rate."""
        frac = min(max(frac, 0.0), 1.0)
        lr = a.lr * (frac / 0.1 if frac < 0.1 else 0.5 * (1 + np.cos(np.pi * (frac - 0.1) / 0.9)))
        for group in opt.param_groups:
            group["lr"] = max(lr, a.lr * 1e-3)
    g = torch.Generator().manual_seed(a.seed)
    t0 = time.time()
    best = (-1.0, None)
    log = []
    for ep in range(a.epochs):
        model.train()
        perm = torch.randperm(len(ytr), generator=g)
        tot = 0.0
        for s in range(steps_per_epoch):
            set_lr(max((ep + s / steps_per_epoch) / a.epochs, (time.time() - t0) / 60 / a.minutes))
            idx = perm[s * a.batch:(s + 1) * a.batch]
            xb = random_eq(freq_shift(xtr[idx].float(), a.freq_shift, g), a.eq_db, g)
            xb, yb = spec_augment(xb, g), ytr[idx]
            if a.mixup and float(torch.rand(1, generator=g)) < a.mixup:
                xb, yb = mixup(xb, yb, n, g, silence=classes.index("silence") if "silence" in classes else None)
            logits, _ = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update(model)
            tot += float(loss.detach())
            if (time.time() - t0) / 60 >= a.minutes:
                steps_per_epoch = s + 1
                break
        entry = {"epoch": ep + 1, "loss": tot / steps_per_epoch}
        if ema is not None:   # the raw weights' score too, so one run compares both
            entry["raw_val_acc"], entry["raw_val_macro_f1"] = evaluate(model, xva, yva, n)
        keep = ema.model if ema is not None else model
        acc, f1 = evaluate(keep, xva, yva, n)
        el = (time.time() - t0) / 60
        entry.update(val_acc=acc, val_macro_f1=f1, minutes=el)
        log.append(entry)
        raw = f"  (raw weights {entry['raw_val_macro_f1']:.4f})" if ema is not None else ""
        print(f"epoch {ep + 1:3d}  loss {tot / steps_per_epoch:.4f}  val acc {acc:.4f}  macro-F1 {f1:.4f}{raw}  "
              f"{el:.1f} min", flush=True)
        if f1 > best[0] or a.train_on_val:   # with VAL in training its score selects nothing
            best = (f1, ep + 1)
            save_checkpoint(keep, os.path.join(a.out, "checkpoint.npz"), classes, epoch=ep + 1,
                            val_macro_f1=f1, val_acc=acc, data=os.path.abspath(a.data),
                            train_on_val=bool(a.train_on_val))
        if el >= a.minutes * 0.999:
            print(f"time limit ({a.minutes} min) reached", flush=True)
            break
    with open(os.path.join(a.out, "train_log.json"), "w") as f:
        json.dump({"args": vars(a), "best_epoch": best[1], "best_val_macro_f1": best[0], "epochs": log}, f, indent=1)
    print(f"best val macro-F1 {best[0]:.4f} at epoch {best[1]}; {os.path.join(a.out, 'checkpoint.npz')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

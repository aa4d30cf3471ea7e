"""Train the streaming separator (``separate``: vocals/drums/bass/other; ``separate2``: speech/background).

    python firmware_tools/data/build_separate.py --out firmware_tools/work/separate
    python firmware_tools/train/train_separate.py --task music4 --minutes 20
    python firmware_tools/train/train_separate.py --task speech2 --minutes 12
    python firmware_tools/eval/eval_separate.py            # metrics for the manifest
    python firmware_tools/train/train_separate.py --task music4 --ship

Data: ``train.npy`` of the builder (held-out pieces, sound font, programmes, speakers and drum
samples are in ``test.npy`` and never read here); 8 % of the training pieces (by hash) are the
validation set that picks the checkpoint. Every step draws 16 crops of 2.05 s (128 hops):
half keep an excerpt's own stems, half mix stems of different excerpts (Open-Unmix's
augmentation), each stem at a random gain of -6..+6 dB and silent 10 % of the time.
``speech2``: the speech vocals of one excerpt over the drums+bass+other of another at -5..+10 dB.

Loss: L1 between each stem's masked mixture magnitude and the stem's magnitude (each crop
normalized by its mixture's mean magnitude), the STFT exactly the node's (512-point sqrt-Hann,
hop 256, frames ending at each hop). Adam 1e-3 -> 1e-4 (cosine), one CPU thread, a wall-clock
budget (``--minutes``); the best validation checkpoint is exported.

Export: the one-hop graph to ONNX (``separate_model.StepModel``), INT8 through
``firmware_tools/quantize/quantize.py`` on states recorded from the FP32 model on training
audio (held-out rows: validation audio); ``--ship`` copies FP32 and INT8 to
``models_int8/<name>`` and writes the manifest entry with the eval's metrics.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from separate_model import HOP, N_FFT, Separator, export_onnx  # noqa: E402

TASKS = {"music4": ("separate", ("vocals", "drums", "bass", "other")),
         "speech2": ("separate2", ("speech", "background"))}
T_FRAMES = 128
SR = 16000


def _h(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def window():
    from edge_runtime._spectral import make_window

    return np.asarray(make_window("sqrt_hann", N_FFT), np.float32)


def stft_torch(x, win):
    """(B, N) -> complex (B, frames, F): frame k covers x[(k+1)*hop - n_fft, (k+1)*hop) (zeros before), as the node."""
    import torch

    xp = torch.nn.functional.pad(x, (N_FFT - HOP, 0))
    return torch.stft(xp, N_FFT, HOP, window=win, center=False, return_complex=True).transpose(1, 2)


class Batches:
    """Random crops (see the module docstring) from ``stems`` (N, 4, L) float16."""

    def __init__(self, stems: np.ndarray, speech_rows: np.ndarray, task: str, seed: int):
        self.x, self.task = stems, task
        self.speech_rows = speech_rows
        self.rng = np.random.default_rng(seed)
        self.L = T_FRAMES * HOP

    def crop(self, i: int, ch) -> np.ndarray:
        off = int(self.rng.integers(0, self.x.shape[-1] - self.L + 1))
        return self.x[i, ch, off:off + self.L].astype(np.float32)

    def __call__(self, batch: int = 16) -> np.ndarray:
        rng, n = self.rng, len(self.x)
        if self.task == "speech2":
            out = np.zeros((batch, 2, self.L), np.float32)
            for b in range(batch):
                s = self.crop(int(rng.choice(self.speech_rows)), 0)
                m = self.crop(int(rng.integers(0, n)), slice(1, 4)).sum(axis=0)
                rs, rm = np.sqrt(np.mean(s ** 2)) + 1e-8, np.sqrt(np.mean(m ** 2)) + 1e-8
                if rs < 1e-4:                         # a pause: no speech in this crop
                    s[:] = 0
                else:
                    s *= rm / rs * 10 ** (rng.uniform(-5, 10) / 20)
                if rng.random() < 0.05:
                    m[:] = 0
                out[b, 0], out[b, 1] = s, m
        else:
            out = np.zeros((batch, 4, self.L), np.float32)
            for b in range(batch):
                if rng.random() < 0.5:
                    i = int(rng.integers(0, n))
                    out[b] = self.crop(i, slice(0, 4))
                else:
                    for k in range(4):
                        out[b, k] = self.crop(int(rng.integers(0, n)), k)
                out[b] *= (10 ** (rng.uniform(-6, 6, size=4) / 20) * (rng.random(4) > 0.1))[:, None]
        scale = rng.uniform(0.3, 1.5) / max(float(np.max(np.abs(out.sum(axis=1)))), 1e-3)
        return out * min(scale, 30.0)


def loss_fn(model, stems, win):
    import torch

    mix = stems.sum(dim=1)
    X = stft_torch(mix, win)
    S = torch.stack([stft_torch(stems[:, k], win) for k in range(stems.shape[1])], dim=2)  # (B, T, S, F)
    mag_x = X.abs()
    masks, _ = model(mag_x ** 2)
    est = masks * mag_x.unsqueeze(2)
    norm = mag_x.mean(dim=(1, 2), keepdim=True).unsqueeze(-1) + 1e-6
    return ((est - S.abs()).abs() / norm).mean()


def feature_stats(batches: Batches, win, n: int = 40):
    import torch

    acc = []
    for _ in range(n):
        x = torch.from_numpy(batches(16)).sum(dim=1)
        p = stft_torch(x, win).abs() ** 2
        acc.append(torch.log10(p + 1e-8).reshape(-1, p.shape[-1]))
    a = torch.cat(acc)
    return a.mean(dim=0), a.std(dim=0).clamp_min(0.1)


def load_split(data: Path):
    stems = np.load(data / "train.npy", mmap_mode="r")
    man = json.loads((data / "manifest.json").read_text())
    ex = man["excerpts"]["train"]
    val = np.array([_h("val", e["piece"]) % 100 < 8 for e in ex])
    if not val.any() or val.all():           # a tiny build (smoke tests): the last excerpts
        val = np.arange(len(ex)) >= int(0.9 * len(ex))
    speech = np.array([e["vocals"].startswith("speech") for e in ex])
    return np.asarray(stems), ex, val, speech


def train(task: str, data: Path, out: Path, minutes: float, hidden: int, seed: int = 0, init: str | None = None,
          lr_max: float = 1e-3) -> dict:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    stems, ex, val, speech = load_split(data)
    tr_idx, va_idx = np.nonzero(~val)[0], np.nonzero(val)[0]
    name, stem_names = TASKS[task]
    tr = Batches(stems[tr_idx], np.nonzero(speech[tr_idx])[0], task, seed)
    va = Batches(stems[va_idx], np.nonzero(speech[va_idx])[0], task, seed + 1)
    val_set = [torch.from_numpy(va(16)) for _ in range(6)]       # fixed validation crops
    win = torch.from_numpy(window())
    model = Separator(n_stems=len(stem_names), hidden=hidden)
    prior = {}
    if init:                                  # continue from a checkpoint (a second session of the budget)
        model.load_state_dict(torch.load(init, weights_only=True))
        rep0 = Path(init).with_name("init_report.json")
        prior = json.loads(rep0.read_text()) if rep0.is_file() else {}
    else:
        m, s = feature_stats(tr, win)
        model.mean.copy_(m)
        model.std.copy_(s)
    opt = torch.optim.Adam(model.parameters(), lr=lr_max)
    budget = minutes * 60.0
    t0 = time.time()
    best, best_state, step, hist = math.inf, None, 0, []
    out.mkdir(parents=True, exist_ok=True)
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = 1e-4 + 0.5 * (lr_max - 1e-4) * (1 + math.cos(math.pi * frac))
        model.train()
        loss = loss_fn(model, torch.from_numpy(tr(16)), win)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        if step % 100 == 0 or time.time() - t0 >= budget:
            model.eval()
            with torch.no_grad():
                v = float(np.mean([float(loss_fn(model, b, win)) for b in val_set]))
            hist.append({"step": step, "s": round(time.time() - t0), "train": round(float(loss), 4), "val": round(v, 4)})
            print(f"step {step} {time.time() - t0:.0f}s train {float(loss):.4f} val {v:.4f}", flush=True)
            if v < best:
                best, best_state = v, {k: t.clone() for k, t in model.state_dict().items()}
                torch.save(best_state, out / "best.pt")
    model.load_state_dict(best_state)
    model.eval()
    onnx_path = out / f"{name}_fp32.onnx"
    export_onnx(model, str(onnx_path))
    rep = {"task": task, "name": name, "stems": stem_names, "hidden": hidden,
           "steps": step + int(prior.get("steps", 0)),
           "minutes": round((time.time() - t0) / 60 + float(prior.get("minutes", 0)), 1),
           "sessions": [*prior.get("sessions", [{"steps": prior["steps"], "minutes": prior["minutes"]}] if prior else []),
                        {"steps": step, "minutes": round((time.time() - t0) / 60, 1), "lr_max": lr_max}], "best_val": round(best, 4), "history": hist,
           "params": int(sum(p.numel() for p in model.parameters())),
           "train_excerpts": int(len(tr_idx)), "val_excerpts": int(len(va_idx))}
    (out / "train_report.json").write_text(json.dumps(rep, indent=1))
    return rep


def record_inputs(onnx_path: Path, audio: np.ndarray, path: Path, hidden: int, every: int = 3) -> None:
    """Run the FP32 one-hop model over ``audio`` (clips, samples) recording its inputs (power, state)."""
    import onnxruntime as ort

    from edge_runtime.spectral import stft_analyzer

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    P, St = [], []
    for x in audio:
        ana = stft_analyzer(N_FFT, HOP, "sqrt_hann", 1)
        state = np.zeros((1, 2 * hidden), np.float32)
        for k in range(0, len(x) - HOP + 1, HOP):
            ana.push(np.ascontiguousarray(x[None, k:k + HOP], np.float32))
            p = (ana.re[0] ** 2 + ana.im[0] ** 2).astype(np.float32)[None]
            if (k // HOP) % every == 0:
                P.append(p)
                St.append(state.copy())
            _, state = sess.run(None, {"power": p, "state": state})
    np.savez(path, power=np.stack(P), state=np.stack(St))


def quantize(task: str, data: Path, out: Path, hidden: int) -> dict:
    stems, ex, val, speech = load_split(data)
    name = TASKS[task][0]
    mix = stems.astype(np.float32).sum(axis=1)
    calib_rows = np.nonzero(~val)[0][:: max(1, int((~val).sum()) // 24)][:24]
    held_rows = np.nonzero(val)[0][:8]
    record_inputs(out / f"{name}_fp32.onnx", mix[calib_rows], out / "calib.npz", hidden)
    record_inputs(out / f"{name}_fp32.onnx", mix[held_rows], out / "heldout.npz", hidden)
    subprocess.run([sys.executable, str(ROOT / "firmware_tools/quantize/quantize.py"), str(out / f"{name}_fp32.onnx"),
                    "--calib", str(out / "calib.npz"), "--heldout", str(out / "heldout.npz"), "--out-dir", str(out / "q")],
                   check=True)
    return json.loads((out / "q" / "quantize_report.json").read_text())


def ship(task: str, out: Path, eval_json: Path) -> dict:
    """Copy FP32 and INT8 (dynamic: the better of the two INT8 on the eval) to models_int8 and upsert the entry."""
    import datetime
    import shutil

    from edge_runtime.models.manifest import manifest_entry, upsert_model

    name, stem_names = TASKS[task]
    rep = json.loads((out / "train_report.json").read_text())
    res = json.loads(eval_json.read_text())
    mdir = ROOT / "models_int8"
    dest = mdir / name
    dest.mkdir(exist_ok=True)
    qrep = json.loads((out / "q" / "quantize_report.json").read_text())
    snr = {v["precision"]: v["snr_vs_fp32_db"]["mask"] for v in qrep["variants"]}
    files = {"fp32": f"{name}_fp32.onnx", "int8-dynamic": f"{name}_int8-dynamic.onnx"}
    for f in files.values():
        shutil.copyfile(out / "q" / f, dest / f)
    H, S = rep["hidden"], len(stem_names)
    io = {"inputs": [{"name": "power", "shape": [1, N_FFT // 2 + 1], "dtype": "float32"},
                     {"name": "state", "shape": [1, 2 * H], "dtype": "float32"}],
          "outputs": [{"name": "mask", "shape": [1, S, N_FFT // 2 + 1], "dtype": "float32"},
                      {"name": "state_out", "shape": [1, 2 * H], "dtype": "float32"}]}
    m = res["models"][name]
    variants = [manifest_entry(dest / files["fp32"], mdir, precision="fp32", format="onnx",
                               metrics=m.get("fp32") or None),
                manifest_entry(dest / files["int8-dynamic"], mdir, precision="int8-dynamic", format="onnx",
                               metrics={**(m.get("int8-dynamic") or {}), "mask_snr_vs_fp32_db": snr["int8-dynamic"]})]
    metrics = m["fp32"]
    primary = "sdr_mean_db" if task == "music4" else "si_sdri_speech_db"
    today = datetime.date.today().isoformat()
    entry = {
        "name": name, "task": "source-separation",
        "description": (f"causal mask estimator: log STFT power (512-point sqrt-Hann, hop 256) -> Linear {H}, tanh "
                        f"-> 2-layer GRU {H} -> Linear {2 * H} -> {H}, ReLU -> Linear -> {S} x 257 masks, softmax over "
                        f"the stems ({', '.join(stem_names)}; they sum to 1, so the stems sum to the mix); one call per "
                        "16 ms hop, state in/out (edge_runtime/nodes/separate.py)"),
        "sample_rate": SR, "frame": N_FFT, "hop": HOP, **io,
        "labels": list(stem_names),
        "metrics": metrics, "primary_metric": primary,
        "provenance": {
            "recipe": "firmware_tools/train/train_separate.py (data: firmware_tools/data/build_separate.py; "
                      "eval: firmware_tools/eval/eval_separate.py)",
            "data": (f"{rep['train_excerpts']} training excerpts of 6 s (16 kHz): openmsx (openttd) songs, music21 "
                     "corpus scores and generated songs rendered per instrument group with fluidsynth (FluidR3_GM, "
                     "MuseScore_General_Lite), sonic-pi drum samples sequenced, vocals = recorded speech "
                     "(fillets-ng-data-cs, ktuberling-data) or a synthesized singing voice; stems sum exactly to "
                     "the mix"),
            "trained_on": today,
            "evaluated_on": (f"{today}: held-out pieces rendered with TimGM6mb (sound font never in training), organ/"
                             "reed programmes and bass programmes 34/37/39 (never in training), lmms drum samples, "
                             "pocketsphinx-testdata + held-out fillets-cs/ktuberling speakers, by "
                             "firmware_tools/eval/eval_separate.py"),
        },
        "variants": variants,
    }
    upsert_model(mdir / "manifest.toml", entry)
    return entry


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=sorted(TASKS), default="music4")
    ap.add_argument("--data", default=str(ROOT / "firmware_tools/work/separate"))
    ap.add_argument("--out", help="default firmware_tools/work/separate/<model name>")
    ap.add_argument("--minutes", type=float, default=20.0, help="wall-clock training budget (default 20)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--no-quantize", action="store_true")
    ap.add_argument("--init", help="continue from this checkpoint (best.pt of an earlier session)")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    ap.add_argument("--ship", action="store_true", help="only copy the trained files to models_int8 and write the "
                    "manifest entry (needs --eval)")
    ap.add_argument("--eval", default=str(ROOT / "firmware_tools/eval/results/separate.json"))
    a = ap.parse_args(argv)
    data = Path(a.data)
    out = Path(a.out) if a.out else data / TASKS[a.task][0]
    if a.ship:
        ship(a.task, out, Path(a.eval))
        return 0
    init = None
    if a.init:                                # keep the earlier session's files beside this one's
        import shutil

        init = str(out / "init.pt")
        shutil.copyfile(a.init, init)
        shutil.copyfile(Path(a.init).with_name("train_report.json"), out / "init_report.json")
    rep = train(a.task, data, out, a.minutes, a.hidden, init=init, lr_max=a.lr)
    print(json.dumps({k: v for k, v in rep.items() if k != "history"}))
    if not a.no_quantize:
        quantize(a.task, data, out, a.hidden)
    return 0


if __name__ == "__main__":
    sys.exit(main())

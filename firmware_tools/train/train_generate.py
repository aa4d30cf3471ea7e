"""Train the DDSP decoders (``ddsp_violin``, ``ddsp_flute``, ``ddsp_trumpet``), export and ship them.

    python firmware_tools/data/build_generate.py --out firmware_tools/work/generate
    python firmware_tools/train/train_generate.py --instrument violin [--minutes 10]   # train + export
    python firmware_tools/train/train_generate.py --instrument violin --ship [--eval generate.json]

The decoder (DDSP's RNN-FC shape, small): per 10 ms hop, f0 (Hz) and A-weighted loudness (dB) from
the node's own causal front end (:func:`edge_runtime.synth.analyze`, so training sees what the
node will see) -> MLP 2-64-64 (leaky ReLU) -> GRU 128 -> MLP [GRU, input MLP] 192-128-128 ->
an overall amplitude, a distribution over 50 harmonics (softmax over those below Nyquist) and 65
noise-filter magnitudes (DDSP's exp-sigmoid scaling). The differentiable synthesizer in torch
is the kernels' arithmetic (per-sample linear ramps, phase by cumulative sum, the same IR basis
and overlap-add), so the loss is measured on what :mod:`edge_runtime._synth` plays. Loss: DDSP's
multi-scale spectral loss (FFT 1024..64, 75 % overlap; L1 of magnitudes + L1 of log magnitudes),
on 1.5 s crops of the training phrases, batch 4, Adam 2e-3 decayed, torch on one thread, stopped by
wall clock (``--minutes``).

Export: one hop per call with the GRU written out as MatMul/Gemm (ONNX Runtime does not quantize
the GRU op; written out, the gates' matrices are INT8), explicit state: inputs ``f0_hz`` (1, 1),
``loudness_db`` (1, 1), ``state`` (1, 128) -> ``amps`` (1, 50), ``mags`` (1, 65), ``state_out``.
INT8 static through firmware_tools/quantize/quantize.py (7-bit weights, reduce_range), calibrated
on inputs and states recorded streaming the FP32 model over training phrases.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = Path(HERE).parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, HERE)

from edge_runtime.synth import HOP, N_BANDS, N_HARMONICS, SAMPLE_RATE, analyze  # noqa: E402

HIDDEN = 128
CROP = 150            # hops per training crop (1.5 s)
BATCH = 4
FFT_SIZES = (1024, 512, 256, 128, 64)
LOG_EPS = 1e-5


def load_split(data: Path, instrument: str, split: str) -> list[dict]:
    """Audio and front-end features of one split: [{'x', 'f0', 'ld', 'file'}], audio cut to whole hops."""
    import soundfile as sf

    index = json.loads((data / "index.json").read_text())
    items = []
    for rel in index["instruments"][instrument]["splits"][split]["files"]:
        x, sr = sf.read(data / rel, dtype="float32")
        assert sr == SAMPLE_RATE
        fe = analyze(x)
        n = len(fe["f0"])
        items.append({"x": x[:n * HOP], "f0": fe["f0"], "ld": fe["loudness_db"], "voiced": fe["voiced"], "file": rel})
    return items


def features_cache(data: Path, instrument: str, split: str) -> list[dict]:
    cache = data / instrument / f"{split}_features.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        k = int(z["n"])
        return [{"x": z[f"x{i}"], "f0": z[f"f{i}"], "ld": z[f"l{i}"], "voiced": z[f"v{i}"], "file": str(z[f"n{i}"])}
                for i in range(k)]
    items = load_split(data, instrument, split)
    arrs = {"n": np.array(len(items))}
    for i, it in enumerate(items):
        arrs.update({f"x{i}": it["x"], f"f{i}": it["f0"], f"l{i}": it["ld"], f"v{i}": it["voiced"],
                     f"n{i}": np.array(it["file"])})
    np.savez(cache, **arrs)
    return items


# ---- torch: model and differentiable synthesizer ------------------------------------------------
def torch_modules():
    import torch
    from torch import nn

    def exp_sigmoid(x):
        return 2.0 * torch.sigmoid(x) ** math.log(10.0) + 1e-7

    def scale_inputs(f0, ld):
        midi = 69.0 + 12.0 * torch.log2(torch.clamp(f0, min=1.0) / 440.0)
        return torch.stack([(midi - 64.0) / 16.0, (torch.clamp(ld, -100.0, 0.0) + 50.0) / 25.0], dim=-1)

    def heads(y, f0):
        K = N_HARMONICS
        amp = exp_sigmoid(y[..., :1])
        k = torch.arange(1, K + 1, dtype=y.dtype)
        below = (f0.unsqueeze(-1) * k) < (SAMPLE_RATE / 2)
        logits = torch.where(below, y[..., 1:1 + K], torch.full_like(y[..., 1:1 + K], -30.0))
        dist = torch.softmax(logits, dim=-1) * below.to(y.dtype)
        return amp * dist, exp_sigmoid(y[..., 1 + K:] - 5.0)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Sequential(nn.Linear(2, 64), nn.LeakyReLU(0.1), nn.Linear(64, 64), nn.LeakyReLU(0.1))
            self.gru = nn.GRU(64, HIDDEN, batch_first=True)
            self.out = nn.Sequential(nn.Linear(HIDDEN + 64, 128), nn.LeakyReLU(0.1), nn.Linear(128, 128),
                                     nn.LeakyReLU(0.1), nn.Linear(128, 1 + N_HARMONICS + N_BANDS))

        def forward(self, f0, ld):                     # (B, T) each -> amps (B,T,K), mags (B,T,NB)
            x = self.inp(scale_inputs(f0, ld))
            h, _ = self.gru(x)
            return heads(self.out(torch.cat([h, x], dim=-1)), f0)

    class Step(nn.Module):
        """One hop with the GRU written out (MatMul/Gemm, quantizable), explicit state."""

        def __init__(self, dec: Decoder):
            super().__init__()
            self.inp, self.out = dec.inp, dec.out
            H = HIDDEN
            self.ih = nn.Linear(64, 3 * H)
            self.hh = nn.Linear(H, 3 * H)
            with torch.no_grad():
                self.ih.weight.copy_(dec.gru.weight_ih_l0)
                self.ih.bias.copy_(dec.gru.bias_ih_l0)
                self.hh.weight.copy_(dec.gru.weight_hh_l0)
                self.hh.bias.copy_(dec.gru.bias_hh_l0)

        def forward(self, f0_hz, loudness_db, state):   # (1,1), (1,1), (1,H)
            H = HIDDEN
            f0 = f0_hz[:, 0]
            x = self.inp(scale_inputs(f0, loudness_db[:, 0]))
            gi, gh = self.ih(x), self.hh(state)
            r = torch.sigmoid(gi[:, :H] + gh[:, :H])
            z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
            n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
            h = (1.0 - z) * n + z * state
            amps, mags = heads(self.out(torch.cat([h, x], dim=-1)), f0)
            return amps, mags, h

    return Decoder, Step


def noise_basis(n_bands: int = N_BANDS) -> np.ndarray:
    """(taps, n_bands): the IR of magnitudes, exactly as edge_runtime._synth.FilteredNoise builds it."""
    N = n_bands - 1
    L = 2 * N
    mm, kk = np.arange(L), np.arange(n_bands)
    w = np.full(n_bands, 2.0)
    w[0] = w[N] = 1.0
    shifted = (mm - L // 2) % L
    basis = w[None, :] * np.cos(2 * np.pi * kk[None, :] * shifted[:, None] / L) / L
    return basis * (0.5 - 0.5 * np.cos(2 * np.pi * mm / L))[:, None]


def torch_synth(f0, amps, mags, basis, gen=None):
    """Differentiable synthesizer: f0 (B,T), amps (B,T,K), mags (B,T,NB) -> (B, T*hop)."""
    import torch

    B, T, K = amps.shape
    t = torch.arange(1, HOP + 1, dtype=torch.float32) / HOP

    def ramp(v, first):                              # per-sample linear ramps from the previous frame
        prev = torch.cat([first, v[:, :-1]], dim=1)
        return (prev.unsqueeze(2) + (v - prev).unsqueeze(2) * t.view(1, 1, -1, *([1] * (v.dim() - 2)))).reshape(
            B, T * HOP, *v.shape[2:])

    f = ramp(f0, f0[:, :1])
    # f0 is an input (no gradient), so the sines are constants: computed once without a graph,
    # then the per-hop amplitude ramps are two batched matmuls (no (B, N, K) ramp materialized)
    with torch.no_grad():
        ph = torch.cumsum(2 * math.pi * f.double() / SAMPLE_RATE, dim=1)
        ph = torch.remainder(ph, 2 * math.pi).float()
        # sin(k ph) by the Chebyshev recursion, as the kernel (6x faster than K sines here)
        S = torch.empty(K, B, T * HOP)
        S[0] = torch.sin(ph)
        c2 = 2 * torch.cos(ph)
        if K > 1:
            S[1] = c2 * S[0]
        for i in range(2, K):
            torch.addcmul(-S[i - 2], c2, S[i - 1], out=S[i])
        S = S.permute(1, 2, 0).contiguous().view(B, T, HOP, K)
        # Nyquist: a harmonic above it anywhere in a hop is zeroed for that hop (the kernel zeros it
        # per sample; the two differ only in a hop where a harmonic crosses Nyquist)
        k = torch.arange(1, K + 1, dtype=torch.float32)
        fmax = torch.maximum(f0, torch.cat([f0[:, :1], f0[:, :-1]], dim=1))
        below = ((fmax.unsqueeze(-1) * k) < SAMPLE_RATE / 2).float()
    prev = torch.cat([amps[:, :1], amps[:, :-1]], dim=1) * below
    cur = amps * below
    # sum_k S[n,k] (prev_k + t_n (cur_k - prev_k)) = S @ prev + t_n * (S @ (cur - prev))
    harm = (S @ prev.unsqueeze(-1) + t.view(1, 1, HOP, 1) * (S @ (cur - prev).unsqueeze(-1))).reshape(B, T * HOP)
    L = basis.shape[0]
    h = mags @ basis.T                                # (B,T,L)
    noise = torch.rand((B, T, HOP), generator=gen) * 2 - 1
    nfft = 512
    y = torch.fft.irfft(torch.fft.rfft(noise, nfft) * torch.fft.rfft(h, nfft), nfft)[..., :2 * HOP]
    assert HOP + L - 1 <= 2 * HOP
    first = y[..., :HOP].reshape(B, -1)
    second = y[..., HOP:].reshape(B, -1)
    noise_out = first + torch.nn.functional.pad(second[:, :-HOP], (HOP, 0))
    return harm + noise_out


def ms_loss(pred, target):
    import torch

    total = 0.0
    for n in FFT_SIZES:
        w = torch.hann_window(n)
        P = torch.stft(pred, n, n // 4, window=w, return_complex=True).abs()
        Q = torch.stft(target, n, n // 4, window=w, return_complex=True).abs()
        total = total + (P - Q).abs().mean() + (torch.log(P + LOG_EPS) - torch.log(Q + LOG_EPS)).abs().mean()
    return total


def train(instrument: str, data: Path, out: Path, minutes: float, seed: int = 0, log=print, init: str | None = None,
          lr0: float = 2e-3) -> dict:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    Decoder, _ = torch_modules()
    items = features_cache(data, instrument, "train")
    held = features_cache(data, instrument, "heldout")
    log(f"{instrument}: {len(items)} train phrases ({sum(len(i['f0']) for i in items) * HOP / SAMPLE_RATE / 60:.1f} min), "
        f"{len(held)} held out")
    dec = Decoder()
    if init:                                            # continue a run (its checkpoint.npz: arrays, no pickle)
        with np.load(init, allow_pickle=False) as z:
            dec.load_state_dict({k: torch.tensor(z[k]) for k in z.files})
        log(f"  continuing from {init}")
    opt = torch.optim.Adam(dec.parameters(), lr=lr0)
    basis = torch.tensor(noise_basis(), dtype=torch.float32)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)

    def batch(src, n, r):
        f0s, lds, xs = [], [], []
        for _ in range(n):
            it = src[int(r.integers(len(src)))]
            s = int(r.integers(0, len(it["f0"]) - CROP))
            f0s.append(it["f0"][s:s + CROP])
            lds.append(it["ld"][s:s + CROP])
            xs.append(it["x"][s * HOP:(s + CROP) * HOP])
        return (torch.tensor(np.stack(f0s)), torch.tensor(np.stack(lds)), torch.tensor(np.stack(xs)))

    hb = batch(held, 12, np.random.default_rng(123))

    def held_loss():
        with torch.no_grad():
            amps, mags = dec(hb[0], hb[1])
            return float(ms_loss(torch_synth(hb[0], amps, mags, basis, torch.Generator().manual_seed(1)), hb[2]))

    t0, step, hist, best = time.time(), 0, [], (1e9, None)
    budget = minutes * 60
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = lr0 * (0.1 ** frac)             # exponential decay to lr0 / 10 over the run
        f0, ld, x = batch(items, BATCH, rng)
        amps, mags = dec(f0, ld)
        loss = ms_loss(torch_synth(f0, amps, mags, basis, gen), x)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dec.parameters(), 3.0)
        opt.step()
        step += 1
        if step % 100 == 0:
            hl = held_loss()
            hist.append((step, round(time.time() - t0), float(loss), hl))
            log(f"  step {step} {time.time() - t0:.0f}s train {float(loss):.3f} held {hl:.3f}")
            if hl < best[0]:
                best = (hl, {k: v.detach().clone() for k, v in dec.state_dict().items()})
    if best[1] is not None:
        dec.load_state_dict(best[1])
    out.mkdir(parents=True, exist_ok=True)
    prev = json.loads((out / "train_report.json").read_text()) if init and (out / "train_report.json").exists() else {}
    rep = {"instrument": instrument, "steps": step + prev.get("steps", 0), "continued_from": init,
           "seconds": round(time.time() - t0) + prev.get("seconds", 0), "best_held_loss": best[0],
           "history": hist, "train_phrases": len(items),
           "train_minutes": sum(len(i["f0"]) for i in items) * HOP / SAMPLE_RATE / 60,
           "params": sum(p.numel() for p in dec.parameters()), "date": datetime.date.today().isoformat()}
    np.savez(out / "checkpoint.npz", **{k: v.detach().numpy() for k, v in dec.state_dict().items()})  # no pickle
    export(dec, items, out / f"ddsp_{instrument}_fp32.onnx")
    (out / "train_report.json").write_text(json.dumps(rep, indent=1))
    return rep


def export(dec, items, path: Path) -> None:
    import torch

    _, Step = torch_modules()
    step = Step(dec).eval()
    args = (torch.full((1, 1), 440.0), torch.full((1, 1), -30.0), torch.zeros(1, HIDDEN))
    torch.onnx.export(step, args, str(path), input_names=["f0_hz", "loudness_db", "state"],
                      output_names=["amps", "mags", "state_out"], opset_version=17, dynamo=False)
    # check the written-out cell against the training GRU on one phrase
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    it = items[0]
    n = min(300, len(it["f0"]))
    with torch.no_grad():
        ref, _ = dec(torch.tensor(it["f0"][None, :n]), torch.tensor(it["ld"][None, :n]))
    h = np.zeros((1, HIDDEN), np.float32)
    got = []
    for t in range(n):
        a, m, h = s.run(None, {"f0_hz": it["f0"][t:t + 1, None], "loudness_db": it["ld"][t:t + 1, None], "state": h})
        got.append(a[0])
    err = np.abs(np.stack(got) - ref[0].numpy()).max()
    assert err < 1e-4 * max(1.0, float(ref.abs().max())), f"exported step differs from the GRU by {err}"


def record_calibration(fp32: Path, items, every: int = 7) -> tuple[dict, dict]:
    """Inputs and states of the FP32 model streaming over phrases: every ``every``-th hop of the
    first 3/4 of the phrases (calibration), of the rest (held-out rows for the SNR check)."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])
    cut = max(1, 3 * len(items) // 4)
    out = []
    for part in (items[:cut], items[cut:] or items[-1:]):
        rows = {"f0_hz": [], "loudness_db": [], "state": []}
        for it in part:
            h = np.zeros((1, HIDDEN), np.float32)
            for t in range(len(it["f0"])):
                feed = {"f0_hz": it["f0"][t:t + 1, None], "loudness_db": it["ld"][t:t + 1, None], "state": h}
                if t % every == 0:
                    for k, v in feed.items():
                        rows[k].append(v.copy())
                h = s.run(None, feed)[2]
        out.append({k: np.stack(v) for k, v in rows.items()})
    return out[0], out[1]


def ship(instrument: str, data: Path, work: Path, eval_json: Path | None) -> dict:
    from shipping import copy_variants, write_entry

    from edge_runtime.models.manifest import manifest_entry

    name = f"ddsp_{instrument}"
    fp32 = work / f"{name}_fp32.onnx"
    items = features_cache(data, instrument, "train")
    calib, held = record_calibration(fp32, items)
    # INT8 static by quantize.py's own function (its full run also makes FP16, whose converter
    # breaks on this graph's bool->float Cast of the Nyquist mask); SNR vs FP32 on held-out rows
    sys.path.insert(0, str(ROOT / "firmware_tools" / "quantize"))
    from quantize import make_int8_static, run_all, snr_db

    mdir = ROOT / "models_int8"
    dest = mdir / name
    dest.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        q = os.path.join(tmp, f"{name}_int8.onnx")
        make_int8_static(str(fp32), q, calib, 2000)
        ref, got = run_all(str(fp32), held), run_all(q, held)
        snr = {("onnx", "int8-static"): {k: snr_db(ref[k], got[k]) for k in ref}}
        copy_variants(str(fp32.parent), str(dest), [f"{name}_fp32.onnx"])
        copy_variants(tmp, str(dest), [f"{name}_int8.onnx"])
    rep = json.loads((work / "train_report.json").read_text())
    metrics = {}
    if eval_json is not None and eval_json.is_file():
        res = json.loads(eval_json.read_text())
        for variant in ("fp32", "int8"):
            row = res.get("summary", {}).get(instrument, {}).get(f"ours_{variant}", {})
            metrics[variant] = {k: round(float(row[k]), 3) for k in ("msd", "f0_cents_median", "loudness_err_db") if k in row}
    io = {"inputs": [{"name": "f0_hz", "shape": [1, 1], "dtype": "float32"},
                     {"name": "loudness_db", "shape": [1, 1], "dtype": "float32"},
                     {"name": "state", "shape": [1, HIDDEN], "dtype": "float32"}],
          "outputs": [{"name": "amps", "shape": [1, N_HARMONICS], "dtype": "float32"},
                      {"name": "mags", "shape": [1, N_BANDS], "dtype": "float32"},
                      {"name": "state_out", "shape": [1, HIDDEN], "dtype": "float32"}]}
    int8_snr = {k: round(float(v), 2) for k, v in snr[("onnx", "int8-static")].items()}
    variants = [manifest_entry(dest / f"{name}_fp32.onnx", mdir, precision="fp32", format="onnx",
                               metrics=metrics.get("fp32") or None),
                manifest_entry(dest / f"{name}_int8.onnx", mdir, precision="int8-static", format="onnx",
                               metrics={**(metrics.get("int8") or {}),
                                        **{f"{k}_snr_vs_fp32_db": v for k, v in int8_snr.items() if k != "state_out"}})]
    index = json.loads((data / "index.json").read_text())["instruments"][instrument]
    top = metrics.get("int8") or {}
    entry = {
        "name": name, "task": "generation",
        "description": (f"DDSP decoder for {instrument}: per 10 ms hop f0 (Hz) + A-weighted loudness (dB) -> MLP 2-64-64 -> "
                        f"GRU {HIDDEN} (written out as MatMul, state explicit) -> MLP 192-128-128 -> {N_HARMONICS} "
                        f"harmonic amplitudes + {N_BANDS} noise magnitudes for edge_runtime._synth "
                        "(edge_runtime/nodes/synth.py)"),
        "sample_rate": SAMPLE_RATE, "frame": 512, "hop": HOP, **io,   # frame: the front end's longest window (loudness)
        **({"metrics": top, "primary_metric": "msd", "lower_is_better": sorted(top)} if top else {}),
        "provenance": {
            "recipe": "firmware_tools/train/train_generate.py (data: firmware_tools/data/build_generate.py; "
                      "eval: firmware_tools/eval/eval_generate.py)",
            "data": (f"{rep['train_phrases']} generated monophonic phrases ({rep['train_minutes']:.1f} min) of GM program "
                     f"{index['program']} rendered dry by fluidsynth on FluidR3_GM (fluid-soundfont-gm) at 16 kHz; "
                     f"{rep['steps']} steps in {rep['seconds']} s on one thread"),
            "trained_on": rep["date"],
            "evaluated_on": (f"{datetime.date.today().isoformat()}: held-out phrases (other seeds) on FluidR3_GM and "
                             "the same phrases on MuseScore_General_Lite.sf3 (a sound font not in training), and the "
                             "lmms recorded sample, by firmware_tools/eval/eval_generate.py"),
        },
    }
    write_entry(str(ROOT / "models_int8" / "manifest.toml"), entry, variants, str(dest))
    return {"int8_snr_db": int8_snr, "metrics": metrics}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instrument", required=True, choices=("violin", "flute", "trumpet"))
    ap.add_argument("--data", default=str(ROOT / "firmware_tools" / "work" / "generate"))
    ap.add_argument("--work", help="default firmware_tools/work/generate/model_<instrument>")
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-clock training budget")
    ap.add_argument("--init", help="checkpoint.npz of an earlier run to continue from")
    ap.add_argument("--lr", type=float, default=2e-3, help="initial learning rate (decays 10x over the run)")
    ap.add_argument("--ship", action="store_true", help="quantize the exported model, copy to models_int8 and "
                    "write the manifest entry")
    ap.add_argument("--eval", help="eval_generate.py's JSON for the manifest metrics")
    args = ap.parse_args(argv)
    data = Path(args.data)
    work = Path(args.work or data / f"model_{args.instrument}")
    if args.ship:
        print(json.dumps(ship(args.instrument, data, work, Path(args.eval) if args.eval else None), indent=1))
        return 0
    rep = train(args.instrument, data, work, args.minutes, init=args.init, lr0=args.lr)
    print(json.dumps({k: v for k, v in rep.items() if k != "history"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

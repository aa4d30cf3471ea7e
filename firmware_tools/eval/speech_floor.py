#!/usr/bin/env python3
"""How clean are the "clean" speech targets?  Noise floor and floor SNR of every speech source.

    python firmware_tools/eval/speech_floor.py --catalogue firmware_tools/work/cache/catalogue.json \\
        --out firmware_tools/eval/results/denoise_speech_floor.md [--json firmware_tools/work/speech_floor.json]

A denoiser trained to reproduce a target keeps whatever the target carries: a voice recorded over
hiss, hum or a music bed teaches the model that such noise is speech. For every usable speech
source in the data builder's catalogue (resampled to 16 kHz) this measures, on 20 ms frames:

* ``speech_db``: the 90th percentile of the frame levels (dBFS): the loud part of the voice;
* ``floor_db``: the 10th percentile of the frames that are not digital silence (> -100 dBFS):
  the level of what sits under the pauses (hiss, hum, room, music bed);
* ``floor_snr_db`` = speech_db - floor_db, the "energy in VAD-silent frames" estimate of the
  recording's own SNR. Clips whose pauses are digital silence (gated/edited) get the floor of
  their quietest non-silent frames, which still shows a noise bed under the voice;
* ``wada_snr_db``: WADA-SNR (Kim & Stern, Interspeech 2008): the waveform-amplitude
  statistic G = log(mean|x|) - mean(log|x|) mapped to an SNR through a table made here by
  simulation of the method's own model (Gamma(0.4)-distributed speech amplitude plus Gaussian
  noise); independent of pauses, it saturates near 45 dB;
* ``hum_share``: the share of the quiet frames' energy below 150 Hz (mains hum and rumble);
* ``flatness``: the spectral flatness of the quiet frames' mean spectrum (hiss is flat, near 1;
  a music bed or room tone is not).

The per-origin table (median, share of clips above 30 / 40 dB) goes to ``--out``; the per-clip
values (``--json``) are what ``firmware_tools/train/pool.py --floor-json`` filters on.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "data"))
sys.path.insert(0, str(HERE.parents[1]))

RATE = 16000
HOP = 320  # 20 ms


_WADA = None


def _wada_table():
    """(SNR dB, G) for the WADA model, simulated once with a fixed seed."""
    global _WADA
    if _WADA is None:
        rng = np.random.default_rng(0)
        n = 400_000
        s = rng.gamma(0.4, 1.0, n) * rng.choice([-1.0, 1.0], n)
        s /= np.sqrt(np.mean(s ** 2))
        v = rng.standard_normal(n)
        snrs = np.arange(-20.0, 61.0, 1.0)
        g = []
        for snr in snrs:
            y = np.abs(s * 10 ** (snr / 20) + v) + 1e-20
            g.append(np.log(np.mean(y)) - np.mean(np.log(y)))
        _WADA = (snrs, np.array(g))
    return _WADA


def wada_snr(x: np.ndarray) -> float:
    """WADA-SNR of a waveform (dB), clipped to the table's -20..60 dB."""
    y = np.abs(np.asarray(x, np.float64))
    y = y[y > 1e-7]  # digital silence carries no noise to measure
    if len(y) < 1000:
        return float("nan")
    g = np.log(np.mean(y)) - np.mean(np.log(y))
    snrs, gs = _wada_table()
    return float(np.interp(g, gs, snrs))  # G rises with SNR


def floor_stats(x: np.ndarray, sr: int = RATE) -> dict:
    """Noise-floor statistics of one mono clip at ``sr`` (see the module docstring)."""
    hop = int(0.02 * sr)
    n = len(x) // hop
    if n < 10:
        return {"frames": int(n)}
    fr = np.asarray(x[: n * hop], np.float64).reshape(n, hop)
    e = 10 * np.log10(np.mean(fr ** 2, axis=1) + 1e-20)
    live = e > -100.0
    out = {"frames": int(n), "silent_frames": round(float(1 - live.mean()), 3)}
    if live.sum() < 10:
        return out
    el = e[live]
    speech = float(np.percentile(el, 90))
    floor = float(np.percentile(el, 10))
    quiet = fr[live][el <= np.percentile(el, 15)]
    spec = np.mean(np.abs(np.fft.rfft(quiet * np.hanning(hop), axis=1)) ** 2, axis=0) + 1e-20
    f = np.fft.rfftfreq(hop, 1 / sr)
    band = (f > 0) & (f < sr / 2 * 0.95)
    out.update(wada_snr_db=round(wada_snr(x), 2), speech_db=round(speech, 2), floor_db=round(floor, 2), floor_snr_db=round(speech - floor, 2),
               hum_share=round(float(spec[(f > 0) & (f < 150)].sum() / spec[band].sum()), 4),
               flatness=round(float(np.exp(np.mean(np.log(spec[band]))) / np.mean(spec[band])), 4))
    return out


def _job(item):
    import soxr
    from sources import load_audio

    sid, path = item
    try:
        x, sr = load_audio(path)
    except Exception as e:  # noqa: BLE001 - reported per file
        return sid, {"error": repr(e)}
    if sr != RATE:
        x = soxr.resample(x, sr, RATE)
    return sid, floor_stats(x)


def summarize(cat: list[dict], stats: dict) -> list[dict]:
    rows = {}
    for c in cat:
        st = stats.get(c["id"])
        if not st or "floor_snr_db" not in st:
            continue
        rows.setdefault(c["origin"], []).append((c, st))
    out = []
    for origin, items in sorted(rows.items()):
        snr = np.array([s["floor_snr_db"] for _, s in items])
        out.append({
            "origin": origin, "clips": len(items), "speakers": len({c.get("speaker") for c, _ in items}),
            "minutes": round(sum(c.get("duration", 0) for c, _ in items) / 60, 1),
            "floor_snr_median_db": round(float(np.median(snr)), 1),
            "floor_snr_p10_db": round(float(np.percentile(snr, 10)), 1),
            "wada_snr_median_db": round(float(np.nanmedian([s["wada_snr_db"] for _, s in items])), 1),
            "floor_dbfs_median": round(float(np.median([s["floor_db"] for _, s in items])), 1),
            "share_ge_30db": round(float(np.mean(snr >= 30)), 3),
            "share_ge_40db": round(float(np.mean(snr >= 40)), 3),
            "digital_silence_median": round(float(np.median([s["silent_frames"] for _, s in items])), 3),
            "hum_share_median": round(float(np.median([s["hum_share"] for _, s in items])), 3),
            "flatness_median": round(float(np.median([s["flatness"] for _, s in items])), 3),
        })
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalogue", default=str(HERE.parent / "work" / "cache" / "catalogue.json"))
    ap.add_argument("--out", default=str(HERE / "results" / "denoise_speech_floor.md"))
    ap.add_argument("--json", default=str(HERE.parent / "work" / "speech_floor.json"),
                    help="per-clip values (input of pool.py --floor-json)")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    from edge_runtime.atomic import AtomicFile

    cat = [c for c in json.load(open(args.catalogue)) if c["kind"] == "speech" and c.get("usable", True)]
    items = [(c["id"], c["path"]) for c in cat]
    if args.jobs > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(args.jobs) as pool:
            res = pool.map(_job, items, chunksize=16)
    else:
        res = [_job(i) for i in items]
    stats = dict(res)
    rows = summarize(cat, stats)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with AtomicFile(args.json) as f:
        json.dump({"rate": RATE, "clips": stats}, f)
    lines = ["# Noise floor of the speech sources (are the clean targets clean?)", "",
             f"`python firmware_tools/eval/speech_floor.py` on the data builder's catalogue "
             f"({len(cat)} usable speech clips, resampled to 16 kHz). Floor SNR = 90th minus 10th "
             "percentile of the 20 ms frame levels (digital-silence frames left out); hum share = "
             "energy below 150 Hz in the quietest 15% of frames; flatness of their mean spectrum "
             "(1 = white hiss).", "",
             "| origin | clips | speakers | minutes | floor SNR median (dB) | p10 | floor median (dBFS) "
             "| >= 30 dB | >= 40 dB | WADA-SNR median (dB) | digital-silence frames | hum share | flatness |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['origin']} | {r['clips']} | {r['speakers']} | {r['minutes']} | "
                     f"{r['floor_snr_median_db']} | {r['floor_snr_p10_db']} | {r['floor_dbfs_median']} | "
                     f"{r['share_ge_30db']:.0%} | {r['share_ge_40db']:.0%} | {r['wada_snr_median_db']} | "
                     f"{r['digital_silence_median']:.0%} | "
                     f"{r['hum_share_median']:.3f} | {r['flatness_median']:.3f} |")
    with AtomicFile(args.out) as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

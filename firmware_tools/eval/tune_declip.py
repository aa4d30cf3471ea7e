#!/usr/bin/env python3
"""Declipper design measurements on the *design* clips only (issue 24): never the held-out set.

    python firmware_tools/eval/tune_declip.py --variant base:mark_run=2 --variant single:mark_run=1 \\
        [--levels 1,3,5,7,10] [--material speech,music] [--out firmware_tools/eval/results/tune_declip]

Design clips (``build_restore.py`` refuses them for the held-out split, ``TUNING``):

* speech: fillets-ng-data-cs Czech game dialogue (Debian, GPL-2+), the first ``--n-speech``
  (default 5) files of ``sound/*/cs/*.ogg`` in sorted order that are 2-6 s long, resampled
  22.05 -> 16 kHz (``scipy.signal.resample_poly``), peak-normalised;
* music: lmms-common ``samples/instruments`` piano01, cello01, violin_fingered01, trumpet01
  (44.1 kHz; none of them is in the held-out list), 4 s from 40 % of the file.

Each clip is clipped by the SPADE protocol of ``eval_restore.py`` (symmetric hard clip at the
threshold that gives each input SDR) and run through ``Declipper`` directly, in 256-sample blocks,
the latency trimmed. A variant is ``name:key=value,...`` of ``Declipper`` arguments (the node's
frame: the power of two nearest 64 ms; ``sparsity_step`` defaults to the node's rule, 4 per 1024
samples of frame). Reported per variant and material: mean ΔSDR over the levels, the samples
the kernel found clipped over those truly clipped (``samples_clipped`` / oracle count), iterations per solved frame,
the real-time factor on one core (CPU time / audio time, this process pinned) and the longest
``process`` call (a 256-sample block: 16 ms at 16 kHz, 5.8 ms at 44.1 kHz).
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parent / "data"))      # build_restore: the held-out list

from eval_restore import clip_signal, clip_threshold, node_window, pin_one_core, sdr  # noqa: E402

FILLETS_CS = "/usr/share/games/fillets-ng/sound/*/cs/*.ogg"
LMMS = "/usr/share/lmms/samples/instruments"
DESIGN_MUSIC = ("piano01", "cello01", "violin_fingered01", "trumpet01")


def _mono(x: np.ndarray) -> np.ndarray:
    x = x.mean(axis=1) if x.ndim == 2 else x
    x = x - x.mean()
    return (x / max(1e-9, np.max(np.abs(x)))).astype(np.float64)


def design_clips(n_speech: int, materials: list[str], music: tuple[str, ...] = DESIGN_MUSIC) -> list[dict]:
    from scipy.signal import resample_poly

    clips = []
    if "speech" in materials:
        files = sorted(glob.glob(FILLETS_CS))
        if not files:
            raise SystemExit(f"no design speech: {FILLETS_CS} is empty (apt-get install fillets-ng-data-cs)")
        for f in files:
            info = sf.info(f)
            if not 2.0 <= info.duration <= 6.0:
                continue
            x, sr = sf.read(f, dtype="float64", always_2d=True)
            x = resample_poly(x, 320, 441, axis=0) if sr == 22050 else x
            clips.append({"id": Path(f).stem, "material": "speech", "sr": 16000 if sr == 22050 else sr,
                          "x": _mono(x)})
            if sum(c["material"] == "speech" for c in clips) >= n_speech:
                break
    if "music" in materials:
        held_out = held_out_files()
        for name in music:
            f = f"{LMMS}/{name}.ogg"
            if os.path.realpath(f) in held_out:
                raise SystemExit(f"{f} is in the held-out evaluation set (firmware_tools/data/build_restore.py): "
                                 "not a design clip")
            if not os.path.exists(f):
                raise SystemExit(f"no design music: {f} is missing (apt-get install lmms-common)")
            x, sr = sf.read(f, dtype="float64", always_2d=True)
            n = 4 * sr
            s = int(0.4 * max(0, len(x) - n))
            clips.append({"id": name, "material": "music", "sr": sr, "x": _mono(x[s:s + n])})
    return clips


def held_out_files() -> set[str]:
    """The held-out music files of ``build_restore.py`` (design runs must not use them)."""
    from build_restore import MUSIC

    return {os.path.realpath(f) for _, _, f in MUSIC}


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    kw = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        kw[k] = float(v) if "." in v or "e" in v.lower() else int(v)
    return name, kw


def run_declipper(y: np.ndarray, sr: int, kw: dict, block: int = 256) -> tuple[np.ndarray, float, dict]:
    from edge_runtime._restore import Declipper

    window = node_window(sr)
    kw = dict(kw)
    kw.setdefault("sparsity_step", max(1, 4 * window // 1024))
    d = Declipper(window=window, channels=1, sample_rate=sr, **kw)
    lat = d.latency_samples
    n = len(y)
    total = n + lat
    pad = ((total + block - 1) // block) * block
    inp = np.zeros((1, pad), np.float32)
    inp[0, :n] = y
    out = np.zeros((1, pad), np.float32)
    worst = 0.0
    t0 = time.process_time()
    for s in range(0, pad, block):
        t1 = time.perf_counter()
        d.process(inp[:, s:s + block], out[:, s:s + block])
        worst = max(worst, time.perf_counter() - t1)
    cpu = time.process_time() - t0
    return out[0, lat:lat + n].astype(np.float64), cpu, {"iterations": d.iterations, "frames_solved": d.frames_solved,
                                                         "samples_clipped": d.samples_clipped,
                                                         "worst_block_ms": 1e3 * worst}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", action="append", required=True, help="name:key=value,... (Declipper arguments)")
    p.add_argument("--levels", default="1,3,5,7,10")
    p.add_argument("--material", default="speech,music")
    p.add_argument("--n-speech", type=int, default=5)
    p.add_argument("--music", default=",".join(DESIGN_MUSIC),
                   help="lmms-common instruments (samples/instruments/NAME.ogg) for the design music; "
                        "the held-out ones are refused")
    p.add_argument("--out", default=None, help="write <out>.json and <out>.md")
    a = p.parse_args(argv)
    pinned = pin_one_core()
    levels = [float(v) for v in a.levels.split(",")]
    clips = design_clips(a.n_speech, a.material.split(","), tuple(filter(None, a.music.split(","))))
    variants = [parse_variant(v) for v in a.variant]
    rows = []
    for c in clips:
        for lv in levels:
            t = clip_threshold(c["x"], lv)
            y, mask = clip_signal(c["x"], t)
            s_in = sdr(c["x"], y)
            for name, kw in variants:
                z, cpu, d = run_declipper(y, c["sr"], kw)
                rows.append({"variant": name, "material": c["material"], "id": c["id"], "level": lv,
                             "dsdr": sdr(c["x"], z) - s_in, "rtf": cpu / (len(y) / c["sr"]),
                             "found_ratio": d["samples_clipped"] / max(1, int(np.sum(mask != 0))),
                             "worst_block_ms": d["worst_block_ms"],
                             "iters_per_frame": d["iterations"] / max(1, d["frames_solved"])})
    summary = []
    lines = [f"# Declipper design measurements ({pinned})", "", "Command: `python firmware_tools/eval/tune_declip.py "
             + " ".join(argv if argv is not None else sys.argv[1:]) + "`", "",
             "| variant | material | clips | ΔSDR mean (dB) | found / clipped | iterations / frame | RTF mean | RTF worst | worst block ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, kw in variants:
        for mat in dict.fromkeys(c["material"] for c in clips):
            r = [x for x in rows if x["variant"] == name and x["material"] == mat]
            s = {"variant": name, "args": kw, "material": mat, "clips": len({x["id"] for x in r}),
                 "dsdr": float(np.mean([x["dsdr"] for x in r])),
                 "found_ratio": float(np.mean([x["found_ratio"] for x in r])),
                 "iters": float(np.mean([x["iters_per_frame"] for x in r])),
                 "rtf_mean": float(np.mean([x["rtf"] for x in r])), "rtf_worst": float(np.max([x["rtf"] for x in r])),
                 "worst_block_ms": float(np.max([x["worst_block_ms"] for x in r])),
                 "dsdr_by_level": {lv: float(np.mean([x["dsdr"] for x in r if x["level"] == lv])) for lv in levels}}
            summary.append(s)
            lines.append(f"| {name} `{kw}` | {mat} | {s['clips']} | {s['dsdr']:+.2f} | "
                         f"{s['found_ratio']:.3f} | {s['iters']:.0f} | {s['rtf_mean']:.3f} | {s['rtf_worst']:.3f} | "
                         f"{s['worst_block_ms']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    for s in summary:
        print(s["variant"], s["material"], {k: round(v, 2) for k, v in s["dsdr_by_level"].items()})
    if a.out:
        from edge_runtime import atomic

        atomic.write_bytes(a.out + ".md", text.encode())
        atomic.write_bytes(a.out + ".json", (json.dumps({"summary": summary, "rows": rows}) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Pick and write the speech clip that ``edge-runtime demo`` runs the denoiser on.

    python firmware_tools/data/make_demo_clip.py --data firmware_tools/work/denoise16k \
        --results firmware_tools/work/eval_denoise/results.json

Rule (so the demo shows typical behaviour, not a chosen best case): among the TEST split's
5 dB clips without a synthetic room, the one whose SI-SDR improvement by the shipped INT8
model is the median in the evaluation's per-clip results. The whole 4 s clip is written,
noisy and clean, to edge_runtime/_demo/speech_{noisy,clean}.flac (16 kHz, PCM_16).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import soundfile as sf

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "edge_runtime", "_demo")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--results", required=True, help="results.json of firmware_tools/eval/eval_denoise.py")
    ap.add_argument("--snr", type=float, default=5.0)
    args = ap.parse_args(argv)
    rows = [json.loads(line) for line in open(os.path.join(args.data, "manifest.jsonl"))]
    test = [r for r in rows if r["split"] == "test"]
    index = {r["clip"]: i for i, r in enumerate(test)}
    res = json.load(open(args.results))["clips"]
    cands = [c for c in res if c["snr"] == args.snr and not test[index[c["clip"]]].get("rir")]
    cands.sort(key=lambda c: c["methods"]["ours_int8"]["si_sdri"])
    pick = cands[len(cands) // 2]
    i = index[pick["clip"]]
    d = os.path.join(args.data, "test")
    noisy = np.concatenate([np.load(os.path.join(d, f), allow_pickle=False)
                            for f in sorted(os.listdir(d)) if f.startswith("noisy")])[i]
    clean = np.concatenate([np.load(os.path.join(d, f), allow_pickle=False)
                            for f in sorted(os.listdir(d)) if f.startswith("clean")])[i]
    os.makedirs(OUT, exist_ok=True)
    sf.write(os.path.join(OUT, "speech_noisy.flac"), noisy.astype(np.float32), 16000, subtype="PCM_16")
    sf.write(os.path.join(OUT, "speech_clean.flac"), clean.astype(np.float32), 16000, subtype="PCM_16")
    m = pick["methods"]["ours_int8"]
    print(f"{pick['clip']} ({test[i]['speech']}, noise {test[i]['noise']}): median of {len(cands)} clips, "
          f"SI-SDRi {m['si_sdri']:+.1f} dB, PESQ {pick['methods']['noisy']['pesq']:.2f} -> {m['pesq']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

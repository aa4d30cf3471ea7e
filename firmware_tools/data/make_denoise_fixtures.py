"""Cut the small noisy/clean fixtures of the denoise quality guard from the TEST split.

    python firmware_tools/data/make_denoise_fixtures.py --data firmware_tools/work/denoise16k

Writes tests/fixtures/audio/denoise_<snr>db_<k>_{noisy,clean}.flac (16 kHz, PCM_16, 3 s): a
seeded random sample of ``--per-snr`` test clips (k = 0, 1, ...) at each of 0, 5 and 10 dB SNR,
recorded or synthesized speech as in the evaluation, without a synthetic room. The 3 s window
is a random one in which speech is active (20 ms frames within 30 dB of the clip's loudest)
at least half the time and that has pauses (its 5th-percentile frame energy at least 20 dB
under the median; game dialog lines over a music bed have none). Not the loudest 3 s: that
picks shouts and screams (the first version of this script did). ``denoise_fixtures.json`` records
which clip and offset each fixture is. The test split shares no speaker or noise group with
training (split.json).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import soundfile as sf

from edge_runtime import atomic

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "audio")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--per-snr", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rows = [json.loads(line) for line in open(os.path.join(args.data, "manifest.jsonl"))]
    test = [r for r in rows if r["split"] == "test"]
    noisy = np.concatenate([np.load(os.path.join(args.data, "test", f), allow_pickle=False)
                            for f in sorted(os.listdir(os.path.join(args.data, "test"))) if f.startswith("noisy")])
    clean = np.concatenate([np.load(os.path.join(args.data, "test", f), allow_pickle=False)
                            for f in sorted(os.listdir(os.path.join(args.data, "test"))) if f.startswith("clean")])
    os.makedirs(OUT, exist_ok=True)
    n = int(args.seconds * 16000)
    rng = np.random.default_rng(args.seed)
    picked = {}
    for snr in (0, 5, 10):
        k = 0
        # a seeded random sample of the split's clips at this SNR (any speech source: recorded
        # and synthesized, as in the evaluation), so the guard sees what the evaluation sees
        for i in rng.permutation(len(test)):
            r = test[i]
            if k >= args.per_snr:
                break
            if round(r["snr_db"]) != snr or r.get("rir") or np.abs(clean[i]).max() <= 0.05:
                continue
            c = clean[i].astype(np.float32)
            fe = 10 * np.log10(np.mean(c[: len(c) // 320 * 320].reshape(-1, 320) ** 2, axis=1) + 1e-12)
            active = fe > fe.max() - 30            # 20 ms frames within 30 dB of the loudest
            w = n // 320
            frac = np.convolve(active, np.ones(w), "valid") / w
            starts = np.nonzero(frac >= 0.5)[0]
            if not starts.size:
                continue
            # a random 3 s window (not the loudest one: that picks shouts and screams) in which
            # speech is active half the time or more and has pauses between words (a window
            # whose frame energies stay within 20 dB of their median is a music bed or a
            # continuous effect, not speech)
            s = int(starts[int(rng.integers(0, starts.size))]) * 320
            seg = fe[s // 320: s // 320 + w]
            if np.percentile(seg, 50) - np.percentile(seg, 5) < 20.0:
                continue
            sf.write(os.path.join(OUT, f"denoise_{snr}db_{k}_noisy.flac"),
                     noisy[i, s:s + n].astype(np.float32), 16000, subtype="PCM_16")
            sf.write(os.path.join(OUT, f"denoise_{snr}db_{k}_clean.flac"), c[s:s + n], 16000, subtype="PCM_16")
            picked[f"denoise_{snr}db_{k}"] = {"clip": r["clip"], "offset_s": s / 16000, "speech": r["speech"],
                                              "noise": r["noise"], "snr_db_clip": round(r["snr_db"], 2)}
            print(snr, k, r["clip"], r["speech"], r["noise"])
            k += 1
    with atomic.AtomicFile(os.path.join(OUT, "denoise_fixtures.json")) as f:
        json.dump(picked, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

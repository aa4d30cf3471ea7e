"""Every denoiser of the evaluation on the quality guard's nine fixed clips (tests/test_denoise.py).

    python firmware_tools/eval/eval_denoise_fixtures.py [--out firmware_tools/eval/results/denoise_fixtures.md]

The clips (tests/fixtures/audio/denoise_<snr>db_<k>_{noisy,clean}.flac, made by
firmware_tools/data/make_denoise_fixtures.py from the TEST split) are short and hard: a
scream under babble, dialog under a recorded laugh, a shout over music. This prints, per clip
and on average, the SI-SDR change and PESQ-WB gain of our INT8 model, RNNoise, DeepFilterNet3
and spectral gating, scored exactly as eval_denoise.py scores (delay aligned first), so the
guard's margins can be read against what the other denoisers do on the same audio.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import eval_denoise as E  # noqa: E402
import metrics as M  # noqa: E402
from methods import build_methods  # noqa: E402

FIX = ROOT / "tests" / "fixtures" / "audio"
CLIPS = [(snr, k) for snr in (0, 5, 10) for k in (0, 1, 2)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-int8", default=str(ROOT / "models_int8" / "denoise" / "denoise_int8.onnx"))
    ap.add_argument("--methods", default="ours_int8,rnnoise,dfn3,noisereduce")
    ap.add_argument("--out", default=str(ROOT / "firmware_tools" / "eval" / "results" / "denoise_fixtures.md"))
    a = ap.parse_args(argv)
    names = a.methods.split(",")
    methods = build_methods({"methods": names, "model_int8": a.model_int8, "model_fp32": a.model_int8})
    si = {n: [] for n in names}
    pq = {n: [] for n in names}
    rows = []
    for snr, k in CLIPS:
        noisy, sr = sf.read(FIX / f"denoise_{snr}db_{k}_noisy.flac", dtype="float32")
        clean, _ = sf.read(FIX / f"denoise_{snr}db_{k}_clean.flac", dtype="float32")
        assert sr == E.SR
        base, pbase = M.si_sdr(noisy, clean), M.pesq_wb(clean, noisy, sr)
        cells = []
        for n, m in methods.items():
            s = E.score(E.enhance(m, noisy), clean, base)
            si[n].append(s["si_sdri"])
            pq[n].append(s["pesq"] - pbase)
            cells.append(f"{s['si_sdri']:+.1f} / {s['pesq'] - pbase:+.2f}")
        rows.append(f"| denoise_{snr}db_{k} | {base:+.1f} | " + " | ".join(cells) + " |")
    head = "| clip | noisy SI-SDR dB | " + " | ".join(f"{E.LABELS.get(n, n)}" for n in names) + " |"
    lines = ["# Denoisers on the quality guard's nine clips", "",
             f"`python firmware_tools/eval/eval_denoise_fixtures.py` (model {os.path.relpath(a.model_int8, ROOT)}). "
             "Cells: SI-SDR change dB / PESQ-WB gain, after delay alignment (as eval_denoise.py).", "",
             head, "|" + "---|" * (len(names) + 2), *rows,
             "| **mean** | | " + " | ".join(f"**{np.mean(si[n]):+.2f} / {np.mean(pq[n]):+.3f}**" for n in names) + " |",
             "| median SI-SDR change | | " + " | ".join(f"{np.median(si[n]):+.2f}" for n in names) + " |", ""]
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    E.write_atomic(Path(a.out), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fit the MIDI velocity -> loudness line of each instrument (edge_runtime/nodes/synth.py INSTRUMENTS
``velocity_db``) on its training phrases: per note, the median front-end loudness (dB) over the
note (from 30 ms after its start); least squares over all notes; prints a, b and the residual std.

    python firmware_tools/data/fit_velocity.py [--data firmware_tools/work/generate]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "firmware_tools" / "train"))

from edge_runtime.midi import read_notes  # noqa: E402
from train_generate import features_cache  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "firmware_tools" / "work" / "generate"))
    data = Path(ap.parse_args(argv).data)
    for inst in ("violin", "flute", "trumpet"):
        V, L = [], []
        for it in features_cache(data, inst, "train"):
            for s, e, p, v in read_notes(str(data / it["file"].replace(".flac", ".mid"))):
                a, b = int(s * 100) + 3, int(e * 100)
                if b - a >= 5:
                    V.append(v)
                    L.append(np.median(it["ld"][a:b]))
        V, L = np.array(V, float), np.array(L)
        b, a = np.polyfit(V, L, 1)
        print(f"{inst}: velocity_db = ({a:.2f}, {b:.4f}), residual std {np.std(L - (a + b * V)):.2f} dB, {len(V)} notes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

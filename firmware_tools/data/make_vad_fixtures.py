"""Test fixtures for the VAD tests, from the TEST split of build_vad.py (never trained on).

    python firmware_tools/data/make_vad_fixtures.py --data firmware_tools/work/vad16k

Writes tests/fixtures/audio/vad_speech.flac (the first test clip of recorded, not synthesized,
speech at 10..20 dB SNR with speech in 50..85% of its frames) and vad_speech_labels.npy (its 10 ms
labels, uint8), and vad_nospeech.flac (the first test clip without speech that has a noise or music
layer and no tones).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import soundfile as sf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
from build_vad import load_split  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "firmware_tools", "work", "vad16k"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "audio"))
    a = ap.parse_args(argv)
    audio, labels = load_split(a.data, "test")
    infos = [json.loads(x) for x in open(os.path.join(a.data, "clips.jsonl"))]
    infos = [i for i in infos if i["split"] == "test"]
    speech = next(k for k, i in enumerate(infos)
                  if i.get("speaker") and not i["speaker"].startswith(("espeak", "festival"))
                  and 10 <= i.get("snr_db", -99) <= 20 and 0.5 <= i["speech_fraction"] <= 0.85
                  and "tones" not in i["noise"])
    quiet = next(k for k, i in enumerate(infos) if not i.get("speaker") and i["noise"] and "tones" not in i["noise"])
    os.makedirs(a.out, exist_ok=True)
    sf.write(os.path.join(a.out, "vad_speech.flac"), audio[speech], 16000, subtype="PCM_16")
    np.save(os.path.join(a.out, "vad_speech_labels.npy"), labels[speech])
    sf.write(os.path.join(a.out, "vad_nospeech.flac"), audio[quiet], 16000, subtype="PCM_16")
    print(f"speech fixture: {infos[speech]}\nno-speech fixture: {infos[quiet]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Monophonic instrument phrases for the DDSP decoder (``synth`` / ``timbre_transfer``).

    python firmware_tools/data/build_generate.py --out firmware_tools/work/generate [--train 70 --heldout 12]

Per instrument family (violin, flute, trumpet: :data:`INSTRUMENTS`) generated phrases -- a random
walk on a major/minor scale inside the instrument's range, durations of 1/8 to 2 beats at 66-144
bpm, rests, velocities 40-120 with phrase-level crescendi, expression (CC11) swells inside long
notes -- are written as MIDI (``mido``) and rendered by fluidsynth at 16 kHz with its reverb and
chorus off (the decoder learns the dry instrument; the node's reverb is separate).

Splits, by source: ``train`` and ``heldout`` phrases come from disjoint seeds (other melodies)
on FluidR3_GM; ``font`` renders the held-out phrases on another sound font (MuseScore_General_Lite,
not in training) -- a held-out instrument recording of the same family. The lmms recorded samples
(``/usr/share/lmms/samples/instruments``: violin_fingered01, flute01, trumpet01) are listed as
``recorded`` for the evaluation only (one file each: too little to train on).

Output: ``<out>/<instrument>/<split>/NNN.flac`` (+ ``.mid``) and ``<out>/index.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SR = 16000
FONTS = {"fluidr3": "/usr/share/sounds/sf2/FluidR3_GM.sf2",
         "musescore": "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"}
# GM programs (0-based) and comfortable MIDI ranges
INSTRUMENTS = {
    "violin": {"program": 40, "range": (55, 88), "recorded": "violin_fingered01.ogg"},
    "flute": {"program": 73, "range": (60, 91), "recorded": "flute01.ogg"},
    "trumpet": {"program": 56, "range": (55, 80), "recorded": "trumpet01.ogg"},
}
LMMS = "/usr/share/lmms/samples/instruments"
SCALES = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10]}


def phrase(rng: np.random.Generator, lo: int, hi: int, seconds: float = 8.0) -> list[tuple[float, float, int, int, list]]:
    """Notes (start_s, dur_s, pitch, velocity, expression ramps) of one phrase."""
    tonic = int(rng.integers(lo, lo + 12))
    scale = SCALES[str(rng.choice(list(SCALES)))]
    pitches = [p for p in range(lo, hi + 1) if (p - tonic) % 12 in scale]
    beat = 60.0 / rng.uniform(66, 144)
    idx = int(rng.integers(len(pitches) // 4, 3 * len(pitches) // 4))
    t, notes = 0.25, []
    v0, v1 = rng.uniform(40, 120, 2)
    legato = rng.uniform(0.75, 1.0)
    while t < seconds:
        dur = beat * float(rng.choice([0.25, 0.5, 0.5, 1, 1, 1, 1.5, 2]))
        if rng.random() < 0.1:                      # a rest
            t += dur
            continue
        step = int(rng.choice([-3, -2, -1, -1, 0, 1, 1, 2, 3, 4, -4]))
        idx = int(np.clip(idx + step, 0, len(pitches) - 1))
        vel = int(np.clip(v0 + (v1 - v0) * t / seconds + rng.normal(0, 8), 25, 127))
        ramps = []
        if dur > 0.5 and rng.random() < 0.5:        # a swell or a fade inside the note
            a, b = (40, 127) if rng.random() < 0.5 else (127, 50)
            ramps = [(t + k * dur / 8, int(a + (b - a) * k / 8)) for k in range(9)]
        notes.append((t, dur * legato, pitches[idx], vel, ramps))
        t += dur
    return notes


def write_midi(notes, program: int, path: str) -> None:
    import mido

    tpb, tempo = 480, 500000                        # 120 bpm: 960 ticks a second
    mid = mido.MidiFile(ticks_per_beat=tpb)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    ev = [(0.0, mido.Message("program_change", program=program, channel=0)),
          (0.0, mido.Message("control_change", control=11, value=127, channel=0))]
    for start, dur, pitch, vel, ramps in notes:
        ev.append((start, mido.Message("note_on", note=pitch, velocity=vel, channel=0)))
        ev.append((start + dur, mido.Message("note_off", note=pitch, velocity=0, channel=0)))
        for tt, val in ramps:
            ev.append((tt, mido.Message("control_change", control=11, value=val, channel=0)))
        if ramps:
            ev.append((start + dur, mido.Message("control_change", control=11, value=127, channel=0)))
    ev.sort(key=lambda e: (e[0], e[1].type != "note_off"))
    tr.append(mido.MetaMessage("set_tempo", tempo=tempo))
    last = 0
    for tt, msg in ev:
        tick = int(round(tt * 960))
        tr.append(msg.copy(time=tick - last))
        last = tick
    mid.save(path)


def render(midi: str, font: str, out_flac: str) -> None:
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "o.wav")
        subprocess.run(["fluidsynth", "-ni", "-q", "-R", "0", "-C", "0", "-g", "0.6", "-r", str(SR), "-F", wav,
                        font, midi], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        x, sr = sf.read(wav, dtype="float32", always_2d=True)
    assert sr == SR, sr
    x = x.mean(axis=1)
    sf.write(out_flac, x, SR)


def build(out: Path, n_train: int, n_heldout: int, log=print) -> dict:
    index = {"sample_rate": SR, "instruments": {}}
    for k, (name, spec) in enumerate(INSTRUMENTS.items()):
        lo, hi = spec["range"]
        entry = {"program": spec["program"], "range": [lo, hi], "splits": {}}
        for split, n, seed0, font in (("train", n_train, 1000, "fluidr3"), ("heldout", n_heldout, 9000, "fluidr3"),
                                      ("font", n_heldout, 9000, "musescore")):
            d = out / name / split
            d.mkdir(parents=True, exist_ok=True)
            files = []
            for i in range(n):
                rng = np.random.default_rng(seed0 + 100 * k + i)
                notes = phrase(rng, lo, hi)
                mid = d / f"{i:03d}.mid"
                write_midi(notes, spec["program"], str(mid))
                flac = d / f"{i:03d}.flac"
                render(str(mid), FONTS[font], str(flac))
                files.append(str(flac.relative_to(out)))
            entry["splits"][split] = {"font": FONTS[font], "seeds": [seed0 + 100 * k, seed0 + 100 * k + n - 1],
                                      "files": files}
            log(f"{name} {split}: {n} phrases on {font}")
        rec = os.path.join(LMMS, spec["recorded"])
        entry["recorded"] = [rec] if os.path.isfile(rec) else []
        index["instruments"][name] = entry
    (out / "index.json").write_text(json.dumps(index, indent=1))
    return index


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="firmware_tools/work/generate")
    ap.add_argument("--train", type=int, default=70, help="training phrases per instrument (~8 s each)")
    ap.add_argument("--heldout", type=int, default=12, help="held-out phrases per instrument (and as many on the other font)")
    args = ap.parse_args(argv)
    build(Path(args.out), args.train, args.heldout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

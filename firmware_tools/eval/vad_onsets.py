"""False ``speech`` decisions at noise onsets, and speech detection delay, of the ``vad`` node.

Streams (from a reset, as a run starts) 1 s of white, pink and brown noise at -60..-10 dBFS
(``--trials`` seeds each) and counts the streams with any ``speech`` decision; then streams the
speech clips (the VAD fixture with its labels, the bundled demo clip, the denoiser's clean
fixtures) and reports the delay from the speech onset (labels, else the first 10 ms frame within
30 dB of the loudest) to the ``speech`` decision. ``before`` is the node without the start-up
hold-off (``startup_ms = 0``), ``after`` with its defaults.

``--after-silence S``: each noise stream starts after S seconds of digital silence (the case the
start-up hold-off does not cover: a noise that begins mid-stream); only decisions in the noise
part count.

    python firmware_tools/eval/vad_onsets.py [--variants fp32,int8-static,silero] [--trials 4] [--after-silence 2]
"""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
SR, HOP = 16000, 160


def _which(variant: str) -> dict:
    """A manifest variant (``fp32``, ``silero``...) or a candidate model file (``path/vad_fp32.onnx``)."""
    return {"model": variant} if variant.endswith((".onnx", ".tflite")) else {"variant": variant}
LEVELS = (-60, -50, -40, -30, -20, -10)
KINDS = ("white", "pink", "brown")


def noise(kind: str, n: int, rng) -> np.ndarray:
    """Unit-RMS white, pink (1/f power) or brown (1/f^2 power) noise."""
    w = rng.standard_normal(n)
    if kind != "white":
        spec = np.fft.rfft(w)
        f = np.fft.rfftfreq(n, 1 / SR)
        f[0] = f[1]
        w = np.fft.irfft(spec / (np.sqrt(f) if kind == "pink" else f), n)
    return w / np.sqrt(np.mean(w ** 2))


def decisions(node, x: np.ndarray) -> np.ndarray:
    """The node's decision after each 10 ms block, from a reset."""
    node.reset()
    out = np.zeros((1, HOP), np.float32)
    x = np.asarray(x, np.float32)
    dec = np.zeros(len(x) // HOP, bool)
    for t in range(len(dec)):
        node.process(np.ascontiguousarray(x[None, t * HOP:(t + 1) * HOP]), out)
        dec[t] = node.current_index == 1
    return dec


def speech_clips():
    x, _ = sf.read(ROOT / "tests/fixtures/audio/vad_speech.flac", dtype="float32")
    ref = np.load(ROOT / "tests/fixtures/audio/vad_speech_labels.npy").astype(bool)
    yield "vad_speech.flac", x, int(np.argmax(ref))
    for f in [ROOT / "edge_runtime/_demo/speech_clean.flac"] + sorted(
            Path(p) for p in glob.glob(str(ROOT / "tests/fixtures/audio/denoise_*_clean.flac"))):
        x, _ = sf.read(f, dtype="float32")
        e = 10 * np.log10(np.mean(x[:len(x) // HOP * HOP].reshape(-1, HOP) ** 2, axis=1) + 1e-12)
        yield f.name, x, int(np.argmax(e > e.max() - 30))


def measure(variant: str, startup: bool, trials: int, after_silence: float = 0.0) -> dict:
    from edge_runtime.nodes.vad import Vad

    node = Vad(**_which(variant), **({} if startup else {"startup_ms": 0.0}))
    node.prepare(SR, HOP, 1)
    rng = np.random.default_rng(3)
    false = {k: 0 for k in KINDS}
    first = []
    for kind in KINDS:
        for db in LEVELS:
            for _ in range(trials):
                lead = int(after_silence * SR) // HOP * HOP
                x = np.concatenate([np.zeros(lead), 10 ** (db / 20) * noise(kind, SR, rng)])
                d = decisions(node, x)[lead // HOP:]
                if d.any():
                    false[kind] += 1
                    first.append(np.argmax(d) * HOP / SR)
    delays = []
    for _, x, onset in speech_clips():
        d = decisions(node, x)
        delays.append((int(np.argmax(d)) - onset) * HOP / SR * 1000 if d.any() else float("nan"))
    return {"false": false, "n": len(LEVELS) * trials, "first_s": first, "delays_ms": delays}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="fp32,int8-static,silero", help="comma-separated vad variants")
    ap.add_argument("--trials", type=int, default=4, help="noise streams per type and level")
    ap.add_argument("--after-silence", type=float, default=0.0,
                    help="seconds of digital silence before each noise stream (default 0: noise from the start)")
    a = ap.parse_args(argv)
    print("command: python firmware_tools/eval/vad_onsets.py " + " ".join(sys.argv[1:]))
    print(f"{'variant':<12} {'':<7} " + " ".join(f"{k + ' false':>12}" for k in KINDS)
          + f" {'first at (s)':>14} {'speech delay ms median/max':>28}")
    for v in a.variants.split(","):
        for label, startup in (("before", False), ("after", True)):
            try:
                r = measure(v, startup, a.trials, a.after_silence)
            except Exception as e:          # e.g. silero-vad not installed
                print(f"{v:<12} skipped: {e}")
                break
            first = f"{min(r['first_s']):.2f}-{max(r['first_s']):.2f}" if r["first_s"] else "-"
            dl = np.array(r["delays_ms"])
            print(f"{v:<12} {label:<7} " + " ".join(f"{r['false'][k]:>6}/{r['n']:<5}" for k in KINDS)
                  + f" {first:>14} {np.nanmedian(dl):>15.0f}/{np.nanmax(dl):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

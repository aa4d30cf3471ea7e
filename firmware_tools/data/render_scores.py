"""Music from real compositions: music21's corpus scores rendered with fluidsynth.

    python firmware_tools/data/render_scores.py --cache firmware_tools/work/cache [--scores 150]

The classifier's fluidsynth material (``sources.noise_render_specs``) is one GM program
playing a random melody over random chords; music heard on a device is mostly ensembles. This
renders pieces of the music21 corpus (Bach chorales, Palestrina and Monteverdi, Beethoven,
Mozart and Haydn quartets, Irish, Scottish and other folk tunes ...: the ``music21`` wheel's
own scores, nothing downloaded): each score's parts get GM programs from one ensemble palette
(keys, strings, winds, guitars, mallets, synths, organ, brass), a random transposition and
tempo, in 45% of renders a drum kit on the score's beats, and one of two sound fonts
(FluidR3_GM from ``fluid-soundfont-gm``, TimGM6mb from the ``pretty_midi`` wheel). Each
rendering is one split unit (its score): the score file never appears in two splits. Files
over 60 KB (whole quartets, song collections) and renders over 30 s are skipped, as are the
scores music21 cannot expand or write (their reasons go to stderr).

Output: 16 kHz mono FLAC under ``cache/scores``, at most ``--seconds`` per piece, and
``cache/scores/index.json`` (score path -> file, palette, sound font, drums).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edge_runtime import atomic

SR = 16000
FLUID_SF2 = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
# GM program palettes (0-based program numbers); the last part of a score (its bass line)
# takes a bass program in half of the renders
PALETTES = {
    "keys": [0, 1, 2, 4, 5, 6, 7], "organ": [16, 17, 19, 20], "strings": [40, 41, 42, 48, 49, 44, 45],
    "winds": [68, 69, 70, 71, 72, 73, 74, 64, 65, 66], "brass": [56, 57, 58, 60, 61], "guitar": [24, 25, 26, 27, 28],
    "mallets": [8, 9, 11, 12, 13], "synth": [80, 81, 88, 89, 90, 91, 94, 62, 63], "choir": [52, 53, 54],
}
BASS = [32, 33, 34, 35, 38, 43, 58]
# corpus collections and how many scores each contributes at most (large ones are sampled)
COLLECTIONS = ("bach", "palestrina", "monteverdi", "trecento", "beethoven", "mozart", "haydn", "ryansMammoth",
               "oneills1850", "essenFolksong", "josquin", "schumann_robert", "schumann_clara", "airdsAirs",
               "joplin", "handel", "corelli", "schubert", "verdi", "weber", "chopin", "cpebach", "luca", "miscFolk")


MAX_FILE_BYTES = 60_000
RENDER_TIMEOUT_S = 30   # some scores take minutes to parse or expand: skipped


class _Timeout(Exception):
    pass


def _h(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def pick_scores(n: int) -> list[str]:
    """``n`` corpus files, spread over the collections (round robin in a stable hashed order)."""
    from music21 import corpus

    by: dict[str, list[str]] = {}
    for p in corpus.getPaths():
        rel = str(p).split("/corpus/", 1)[1]
        coll = rel.split("/", 1)[0]
        # whole quartets and song collections in one file take minutes to parse: skip them
        if coll in COLLECTIONS and os.path.getsize(p) <= MAX_FILE_BYTES:
            by.setdefault(coll, []).append(rel)
    for c in by:
        by[c].sort(key=lambda r: _h("score", r))
    out: list[str] = []
    k = 0
    while len(out) < n and any(k < len(v) for v in by.values()):
        for c in COLLECTIONS:
            if c in by and k < len(by[c]) and len(out) < n:
                out.append(by[c][k])
        k += 1
    return out


def timgm_sf2() -> str | None:
    try:
        import pretty_midi
    except ImportError:
        return None
    p = os.path.join(os.path.dirname(pretty_midi.__file__), "TimGM6mb.sf2")
    return p if os.path.exists(p) else None


def fluidsynth_mono(mid: str, sf2: str, tmp: str) -> np.ndarray:
    """``mid`` rendered by fluidsynth with ``sf2`` (48 kHz, gain 0.5, in folder ``tmp``) as
    16 kHz mono float32; raises what fluidsynth or the WAV reader raise."""
    import soundfile as sf
    import soxr

    wav = os.path.join(tmp, "out.wav")
    subprocess.run(["fluidsynth", "-ni", "-q", "-r", "48000", "-g", "0.5", "-F", wav, sf2, mid],
                   check=True, capture_output=True, timeout=300)
    x, sr = sf.read(wav, dtype="float32", always_2d=True)
    return soxr.resample(x.mean(axis=1), sr, SR)


def write_flac(x: np.ndarray, out: str) -> None:
    """16-bit FLAC at 16 kHz, written to a temporary name and renamed (no half-written file)."""
    import soundfile as sf

    t = out + ".tmp.flac"
    sf.write(t, x, SR, subtype="PCM_16")
    atomic.commit(t, out)


def render_score(rel: str, out_dir: Path, seconds: float) -> dict | None:
    """Render one score (deterministic given its path); None if it has no notes or fails."""
    import pretty_midi
    from music21 import corpus

    rng = np.random.default_rng(_h("render", rel))
    out = out_dir / (hashlib.sha256(rel.encode()).hexdigest()[:16] + ".flac")
    palette = sorted(PALETTES)[int(rng.integers(0, len(PALETTES)))]
    sf2s = [s for s in (FLUID_SF2, timgm_sf2()) if s and os.path.exists(s)]
    sf2 = sf2s[0] if len(sf2s) == 1 or rng.random() < 0.65 else sf2s[1]
    drums = bool(rng.random() < 0.45)
    info = {"file": str(out), "palette": palette, "sf2": os.path.basename(sf2), "drums": drums}
    if out.exists():
        return info
    tmp = tempfile.mkdtemp(prefix="score_")

    def _alarm(*_):
        raise _Timeout(f"over {RENDER_TIMEOUT_S} s")
    old_handler = signal.signal(signal.SIGALRM, _alarm)   # a worker's (or the main) thread only
    signal.alarm(RENDER_TIMEOUT_S)
    try:
        score = corpus.parse(rel)
        if hasattr(score, "scores"):   # an opus: its first score
            score = score.scores[0]
        mid = os.path.join(tmp, "in.mid")
        score.write("midi", fp=mid)
        pm = pretty_midi.PrettyMIDI(mid)
        pm.instruments = [i for i in pm.instruments if i.notes]
        if not pm.instruments:
            return None
        # tempo and transposition
        scale = float(rng.uniform(0.7, 1.35))
        end = pm.get_end_time()
        pm.adjust_times([0, end], [0, end * scale])
        shift = int(rng.integers(-5, 6))
        progs = PALETTES[palette]
        for k, inst in enumerate(pm.instruments):
            inst.is_drum = False
            last = k == len(pm.instruments) - 1 and len(pm.instruments) > 1
            inst.program = int(rng.choice(BASS)) if last and rng.random() < 0.5 else int(rng.choice(progs))
            for nt in inst.notes:
                nt.pitch = int(np.clip(nt.pitch + shift - (12 if last and inst.program in BASS else 0), 24, 100))
                nt.velocity = int(np.clip(rng.normal(80, 15), 30, 127))
        limit = min(seconds, pm.get_end_time())
        for inst in pm.instruments:
            inst.notes = [nt for nt in inst.notes if nt.start < limit]
        if drums:
            beats = [b for b in pm.get_beats() if b < limit]
            kit = pretty_midi.Instrument(program=0, is_drum=True)
            hat = int(rng.choice([42, 44, 46, 51]))
            for j, b in enumerate(beats):
                step = beats[j + 1] - b if j + 1 < len(beats) else 0.5
                for note, t in ((36 if j % 2 == 0 else 38, b), (hat, b), (hat, b + step / 2)):
                    kit.notes.append(pretty_midi.Note(int(rng.integers(60, 115)), note, t, t + 0.1))
            pm.instruments.append(kit)
        mid2 = os.path.join(tmp, "out.mid")
        pm.write(mid2)
        x = fluidsynth_mono(mid2, sf2, tmp)[: int((limit + 1.5) * SR)]
        nz = np.nonzero(np.abs(x) > 1e-4)[0]
        if nz.size < SR:
            return None
        x = x[nz[0]: nz[-1] + 1]
        x *= 0.9 / max(float(np.max(np.abs(x))), 1e-9)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_flac(x, str(out))
        return info
    except Exception as e:   # a score music21 cannot parse or write (in time) is skipped, with its reason
        print(f"render_scores: {rel}: skipped ({e!r})"[:200], file=sys.stderr)
        return None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)
        shutil.rmtree(tmp, ignore_errors=True)


def _job(args):
    rel, out_dir, seconds = args
    return rel, render_score(rel, Path(out_dir), seconds)


def render_all(cache: Path, n_scores: int = 150, seconds: float = 40.0, jobs: int = 2) -> dict:
    """Render (or reuse) ``n_scores`` pieces; returns {score path: info}. Empty without music21,
    pretty_midi or fluidsynth (the builder then runs without this material)."""
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("music21", "pretty_midi")):
        return {}
    if not shutil.which("fluidsynth") or not os.path.exists(FLUID_SF2):
        return {}
    out_dir = cache / "scores"
    tasks = [(rel, str(out_dir), seconds) for rel in pick_scores(n_scores)]
    if jobs > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(jobs) as p:
            res = p.map(_job, tasks, chunksize=1)
    else:
        res = [_job(t) for t in tasks]
    index = {rel: info for rel, info in res if info}
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic.AtomicFile(str(out_dir / "index.json")) as f:
        json.dump(index, f, indent=1)
    return index


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=str(Path(__file__).resolve().parents[1] / "work" / "cache"))
    ap.add_argument("--scores", type=int, default=150)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    idx = render_all(Path(a.cache), a.scores, a.seconds, a.jobs)
    print(json.dumps({"rendered": len(idx), "palettes": sorted({v["palette"] for v in idx.values()})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

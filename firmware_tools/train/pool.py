"""A compact pool of TRAIN-split source audio for on-the-fly mixing (and for carrying to a
training machine): clips resampled to 16 kHz, concatenated into a few Ogg Vorbis files per
kind, with ``pool.json`` listing each clip's offset, length and speaker.

    python firmware_tools/train/pool.py --data firmware_tools/work/denoise16k \
        --out firmware_tools/work/pool16k [--speech-minutes 60 --noise-minutes 60]

Only source ids that ``split.json`` (written by ``firmware_tools/data/build_denoise.py``)
puts in the train split are packed; the test split never enters the pool.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from edge_runtime.atomic import AtomicFile

RATE = 16000
RESERVED = ("fillets-ng-data-nl", "bucklespring")


def _load_audio(path: str, rate: int) -> np.ndarray:
    """Mono float32 at ``rate`` through the data builder's loader (headerless .raw speech, and
    the refusal of reserved evaluation data)."""
    import soxr

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data"))
    from sources import load_audio

    x, sr = load_audio(path)
    if sr != rate:
        x = soxr.resample(x, sr, rate)
    return x.astype(np.float32)


def train_ids(split: dict) -> set[str]:
    """Source ids in the train split (split.json: {"sources": {id: "train" | "test"}})."""
    if isinstance(split.get("sources"), dict):
        return {k for k, v in split["sources"].items() if v == "train"}
    node = split["train"]
    ids: set[str] = set()

    def walk(v):
        if isinstance(v, str):
            ids.add(v)
        elif isinstance(v, dict):
            for k, w in v.items():
                if k in ("ids", "sources") or isinstance(w, (list, dict)):
                    walk(w)
        elif isinstance(v, list):
            for w in v:
                walk(w)
    walk(node)
    return ids


def clean_enough(floor: dict | None, min_floor_snr: float, cid: str) -> tuple[bool, str]:
    """Keep a speech clip as a training target only when its own noise floor is low enough:
    ``floor`` is firmware_tools/eval/speech_floor.py's per-clip output (None: no filter)."""
    if floor is None:
        return True, ""
    st = floor.get(cid)
    if st is None or "floor_snr_db" not in st:
        return False, "no floor measurement"
    if st["floor_snr_db"] < min_floor_snr:
        return False, f"floor SNR {st['floor_snr_db']:.1f} dB < {min_floor_snr:g} dB"
    return True, ""


def pack(catalogue: list[dict], ids: set[str], out: str, speech_minutes: float, noise_minutes: float,
         seed: int = 0, floor: dict | None = None, min_floor_snr: float = 0.0,
         exclude_origins: tuple = ()) -> dict:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    meta = {"rate": RATE, "speech": [], "noise": [], "dropped": {}}
    for kind, minutes in (("speech", speech_minutes), ("noise", noise_minutes)):
        items = [c for c in catalogue if c["id"] in ids and c.get("usable", True)
                 and (c["kind"] == kind or (kind == "noise" and c["kind"] == "music"))
                 and c.get("origin") not in exclude_origins]
        if kind == "speech":
            kept = []
            for c in items:
                ok, why = clean_enough(floor, min_floor_snr, c["id"])
                if ok:
                    kept.append(c)
                else:
                    d = meta["dropped"].setdefault(c.get("origin", ""), {"clips": 0, "minutes": 0.0})
                    d["clips"] += 1
                    d["minutes"] = round(d["minutes"] + c.get("duration", 0) / 60, 2)
            items = kept
        for c in items:
            if any(r in c.get("path", "") or r in c.get("origin", "") for r in RESERVED):
                raise SystemExit(f"refusing reserved evaluation source {c['id']}")
        order = rng.permutation(len(items))
        budget = minutes * 60 * RATE
        total = 0
        chunks, clips = [], []
        for i in order:
            c = items[i]
            x = _load_audio(c["path"], RATE)
            if kind == "noise" and len(x) > 60 * RATE:  # long tracks: a random minute
                s = int(rng.integers(0, len(x) - 60 * RATE))
                x = x[s:s + 60 * RATE]
            peak = np.max(np.abs(x)) if len(x) else 0
            if len(x) < RATE // 10 or peak < 1e-4:
                continue
            x = x * (0.5 / peak)
            clips.append({"id": c["id"], "offset": total, "length": len(x),
                          "speaker": c.get("speaker") or c["id"], "origin": c.get("origin")})
            chunks.append(x)
            total += len(x)
            if total >= budget:
                break
        fname = f"{kind}.ogg"
        audio = np.clip(np.concatenate(chunks), -1.0, 1.0)
        # libsndfile's Vorbis encoder crashes on very large single writes: write in pieces
        with sf.SoundFile(os.path.join(out, fname), "w", RATE, 1, format="OGG", subtype="VORBIS") as f:
            for i in range(0, len(audio), 1 << 14):
                f.write(audio[i:i + (1 << 14)])
        meta[kind] = {"file": fname, "clips": clips, "minutes": total / RATE / 60}
        print(f"{kind}: {len(clips)} clips, {total / RATE / 60:.1f} min", flush=True)
    with AtomicFile(os.path.join(out, "pool.json")) as f:
        json.dump(meta, f)
    return meta


def load_pool(path: str) -> dict:
    """-> {"speech": [arrays], "speaker": [ids], "origin": [origins], "noise": [arrays]}"""
    import soundfile as sf

    with open(os.path.join(path, "pool.json")) as f:
        meta = json.load(f)
    out = {"speech": [], "speaker": [], "origin": [], "noise": []}
    for kind in ("speech", "noise"):
        audio, sr = sf.read(os.path.join(path, meta[kind]["file"]), dtype="float32")
        assert sr == meta["rate"]
        for c in meta[kind]["clips"]:
            out[kind].append(np.ascontiguousarray(audio[c["offset"]:c["offset"] + c["length"]]))
            if kind == "speech":
                out["speaker"].append(c["speaker"])
                out["origin"].append(c.get("origin") or "")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="builder output dir with split.json")
    ap.add_argument("--catalogue", default=None, help="catalogue.json (default: the builder's cache)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--speech-minutes", type=float, default=60)
    ap.add_argument("--noise-minutes", type=float, default=60)
    ap.add_argument("--floor-json", help="per-clip noise floors (firmware_tools/eval/speech_floor.py --json): "
                                         "speech clips below --min-floor-snr are not packed")
    ap.add_argument("--min-floor-snr", type=float, default=35.0)
    ap.add_argument("--exclude-origin", action="append", default=[],
                    help="leave out speech/noise of this origin (e.g. render:espeak-ng); repeatable")
    args = ap.parse_args(argv)
    with open(os.path.join(args.data, "split.json")) as f:
        split = json.load(f)
    cat_path = args.catalogue or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "work",
                                              "cache", "catalogue.json")
    with open(cat_path) as f:
        catalogue = json.load(f)
    ids = train_ids(split)
    print(f"{len(ids)} train source ids", flush=True)
    floor = json.load(open(args.floor_json))["clips"] if args.floor_json else None
    meta = pack(catalogue, ids, args.out, args.speech_minutes, args.noise_minutes, floor=floor,
                min_floor_snr=args.min_floor_snr, exclude_origins=tuple(args.exclude_origin))
    if meta["dropped"]:
        print(f"speech left out for their noise floor: {meta['dropped']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

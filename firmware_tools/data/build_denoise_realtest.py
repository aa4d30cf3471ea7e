#!/usr/bin/env python3
"""The denoiser's headline test split: real recorded speech of held-out speakers under real noise
recordings never used in training, 0-20 dB, at 48 kHz and 16 kHz.

    python firmware_tools/data/build_denoise_realtest.py --data firmware_tools/work/denoise16k \\
        --out firmware_tools/work/denoise_real [--per-cell 5] [--seconds 4] [--min-floor-snr 25]

Inputs: ``split.json`` of ``build_denoise.py`` (which speakers and noise groups are TEST) and the
source catalogue (``firmware_tools/work/cache/catalogue.json``); optionally the per-clip noise
floors of ``firmware_tools/eval/speech_floor.py`` (``--floor-json``), so references with a noise
bed of their own (floor SNR below ``--min-floor-snr``) are left out: a reference that carries
hiss scores a denoiser for removing it.

* Speech: **recorded** voices only (no espeak-ng/festival), from TEST speakers of
  fillets-ng-data-cs (Czech dialog, 44.1/22.05 kHz), ktuberling-data (words) and
  pocketsphinx-testdata; utterances of one speaker chained with 0.15-0.6 s pauses to
  ``--seconds``; dry (no room is added: the reference is the recording itself).
* Noise families, each from TEST groups only (never in any training pool):
  ``keyboard`` (real key and enter presses of fillets-ng-data's linux level, sequenced as typing),
  ``recorded`` (the other TEST effects and ambiences: arcade, fillets-ng-data, sonic-pi-samples,
  sound-theme-freedesktop), ``babble`` (3-5 other TEST speakers), ``music`` (TEST music tracks,
  loops and GM programs), ``stationary`` (pink / white / brown noise generated here with seeds no
  training draw uses: the broadband case a fan, hiss or a room makes).
* Speakers: a package (origin) first, uniformly, then one of its TEST speakers, so the many
  fillets-ng-data-cs level characters (game voices, some with effects) do not make the whole split.
* SNR exactly 0/5/10/15/20 dB on whole-clip energies **in the scored band** (0-8 kHz: measured on
  the 16 kHz versions, so noise energy above 8 kHz does not count), speech active level
  -35..-15 dBFS.

Everything is mixed at 48 kHz from the native-rate sources (the 48 kHz baselines get real
48 kHz material; sources recorded at 22.05/16 kHz are upsampled: their band ends at 11/8 kHz,
recorded in the manifest as ``speech_native_rate``), then the noisy and clean signals are
resampled to 16 kHz. Output (under --out): ``test/noisy_00000.npy`` / ``clean_00000.npy``
(16 kHz) and ``test48/noisy_00000.npy`` / ``clean_00000.npy`` (48 kHz), float32
[clips, samples]; ``manifest.jsonl`` in the format eval_denoise.py reads (``shard48`` added).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))
import sources as S  # noqa: E402
import synth  # noqa: E402

SR48, SR16 = 48000, 16000
SNRS = (0.0, 5.0, 10.0, 15.0, 20.0)
FAMILIES = ("stationary", "keyboard", "recorded", "babble", "music")
REAL_SPEECH = ("deb:fillets-ng-data-cs", "deb:ktuberling-data", "deb:pocketsphinx-testdata")
SALT = "denoise-realtest-v1"


def _seed(*parts) -> int:
    return int(hashlib.sha256("|".join(map(str, (SALT,) + parts)).encode()).hexdigest()[:12], 16)


_CACHE: dict[str, np.ndarray] = {}


def load48(path: str) -> tuple[np.ndarray, int]:
    import soxr

    if path not in _CACHE:
        x, sr = S.load_audio(path)
        _CACHE[path] = (soxr.resample(x, sr, SR48).astype(np.float64) if sr != SR48 else x.astype(np.float64), sr)
    return _CACHE[path]


def active_rms(x: np.ndarray, sr: int) -> float:
    hop = int(0.02 * sr)
    n = len(x) // hop
    e = np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)
    act = e > e.max() * 10 ** (-4.0)
    return float(np.sqrt(e[act].mean()))


def chain(clips: list[str], n: int, rng) -> tuple[np.ndarray, int]:
    """Utterances of one speaker end to end with short pauses, cut to n samples."""
    out = np.zeros(n)
    pos = int(rng.integers(SR48 // 20, SR48 // 4))
    rates = []
    order = rng.permutation(len(clips))
    k = 0
    while pos < n - SR48 // 4:
        x, sr = load48(clips[order[k % len(order)]])
        rates.append(sr)
        x = x / (active_rms(x, SR48) + 1e-12)
        m = min(len(x), n - pos)
        out[pos:pos + m] = x[:m]
        pos += m + int(rng.uniform(0.15, 0.6) * SR48)
        k += 1
        if k > 200:
            break
    return out, min(rates) if rates else SR48


def scatter(clips: list[str], n: int, rng, gap=(0.08, 0.3)) -> np.ndarray:
    """Short recorded events sequenced at random gaps (typing, clicks)."""
    out = np.zeros(n)
    pos = int(rng.integers(0, SR48 // 5))
    while pos < n:
        x, _ = load48(clips[rng.integers(len(clips))])
        x = x * rng.uniform(0.5, 1.0) / (np.max(np.abs(x)) + 1e-12)
        m = min(len(x), n - pos)
        out[pos:pos + m] += x[:m]
        pos += int(rng.uniform(*gap) * SR48)
    return out


def loop(path: str, n: int, rng) -> np.ndarray:
    x, _ = load48(path)
    if len(x) < n:
        x = np.tile(x, -(-n // len(x)))
    s = int(rng.integers(0, len(x) - n + 1))
    return x[s:s + n].copy()


def make_noise(family: str, pools: dict, n: int, rng, target_spk: str) -> tuple[np.ndarray, list[str]]:
    if family == "stationary":
        kind = ("pink", "white", "brown")[int(rng.integers(3))]
        return synth.coloured_noise(n, {"pink": 1.0, "white": 0.0, "brown": 2.0}[kind], rng), [f"generated:{kind}"]
    if family == "keyboard":
        return scatter(pools["keyboard"], n, rng), ["fillets-sfx:linux keys"]
    if family == "recorded":
        c = pools["recorded"][int(rng.integers(len(pools["recorded"])))]
        x = loop(c["path"], n, rng)
        if rng.random() < 0.5:  # a second one on top
            c2 = pools["recorded"][int(rng.integers(len(pools["recorded"])))]
            x = x + loop(c2["path"], n, rng) * rng.uniform(0.2, 1.0) * np.std(x) / (np.std(loop(c2["path"], n, rng)) + 1e-9)
            return x, [c["id"], c2["id"]]
        return x, [c["id"]]
    if family == "music":
        c = pools["music"][int(rng.integers(len(pools["music"])))]
        return loop(c["path"], n, rng), [c["id"]]
    if family == "babble":
        spk = [s for s in pools["speakers"] if s != target_spk]
        pick = rng.choice(len(spk), size=int(rng.integers(3, 6)), replace=False)
        x = np.zeros(n)
        for i in pick:
            y, _ = chain(pools["speakers"][spk[i]], n, rng)
            x += y * rng.uniform(0.5, 1.0)
        return x, [f"babble:{spk[i]}" for i in pick]
    raise ValueError(family)


def build(args) -> dict:
    import soxr

    from edge_runtime import atomic

    split = json.load(open(Path(args.data) / "split.json"))["sources"]
    cat = json.load(open(args.catalogue))
    floor = json.load(open(args.floor_json))["clips"] if args.floor_json else None
    test = [c for c in cat if split.get(c["id"]) == "test" and c.get("usable", True) and c.get("path")]
    for c in test:
        S.check_allowed(c["path"])
    speakers: dict[str, list[str]] = {}
    dropped = 0
    for c in test:
        if c["kind"] != "speech" or c["origin"] not in REAL_SPEECH:
            continue
        st = (floor or {}).get(c["id"], {})
        if floor is not None and st.get("floor_snr_db", -1) < args.min_floor_snr:
            dropped += 1
            continue
        speakers.setdefault(c["speaker"], []).append(c["path"])
    speakers = {k: v for k, v in speakers.items() if len(v) >= 2}
    noise = [c for c in test if c["kind"] in ("noise", "music") and c["origin"] != "synth"]
    kb = [c["path"] for c in noise if c["id"].startswith("fillets-sfx:linux/")]
    pools = {"keyboard": kb, "speakers": speakers,
             "recorded": [c for c in noise if c["kind"] == "noise" and not c["id"].startswith("fillets-sfx:linux/")
                          and c.get("duration", 0) >= 0.3],
             "music": [c for c in noise if c["kind"] == "music"]}
    for k in ("keyboard", "recorded", "music"):
        if not pools[k]:
            raise SystemExit(f"no TEST sources for the {k} family: build the data with build_denoise.py first")
    spk_names = sorted(speakers)
    spk_origin = {}
    for c in test:
        if c["kind"] == "speech" and c["speaker"] in speakers:
            spk_origin[c["speaker"]] = c["origin"]
    origins = sorted(set(spk_origin.values()))
    n48 = int(args.seconds * SR48)
    out = Path(args.out)
    (out / "test").mkdir(parents=True, exist_ok=True)
    (out / "test48").mkdir(parents=True, exist_ok=True)
    rows16, rows48, man = [[], []], [[], []], []
    k = 0
    for fam in FAMILIES:
        for snr in SNRS:
            for j in range(args.per_cell):
                rng = np.random.default_rng(_seed(fam, snr, j))
                o = origins[int(rng.integers(len(origins)))]
                mine = [x for x in spk_names if spk_origin[x] == o]
                spk = mine[int(rng.integers(len(mine)))]
                s, native = chain(speakers[spk], n48, rng)
                v, nid = make_noise(fam, pools, n48, rng, spk)
                # SNR in the scored band: energies of the 16 kHz versions (0-8 kHz)
                ps = np.sum(soxr.resample(s, SR48, SR16, quality="VHQ") ** 2)
                pv = np.sum(soxr.resample(v, SR48, SR16, quality="VHQ") ** 2)
                v = v * np.sqrt(ps / (pv * 10 ** (snr / 10)))
                g = 10 ** (rng.uniform(-35, -15) / 20) / active_rms(s, SR48)
                s, v = s * g, v * g
                peak = np.max(np.abs(s + v))
                if peak > 0.95:
                    s, v = s * 0.95 / peak, v * 0.95 / peak
                noisy48, clean48 = (s + v).astype(np.float32), s.astype(np.float32)
                noisy16 = soxr.resample(noisy48, SR48, SR16, quality="VHQ").astype(np.float32)
                clean16 = soxr.resample(clean48, SR48, SR16, quality="VHQ").astype(np.float32)
                rows48[0].append(noisy48)
                rows48[1].append(clean48)
                rows16[0].append(noisy16)
                rows16[1].append(clean16)
                man.append({"clip": f"real-{k:05d}", "split": "test", "speaker": spk, "noise": nid,
                            "noise_kind": [fam], "snr_db": snr, "speech_native_rate": int(native),
                            "shard": "test/noisy_00000.npy", "shard48": "test48/noisy_00000.npy", "row": k})
                k += 1
    for d, rows in (("test", rows16), ("test48", rows48)):
        for name, arr in (("noisy", rows[0]), ("clean", rows[1])):
            tmp = out / d / f".{name}_00000.tmp.npy"
            np.save(tmp, np.stack(arr))
            atomic.commit(str(tmp), str(out / d / f"{name}_00000.npy"))
    with atomic.AtomicFile(str(out / "manifest.jsonl")) as f:
        for m in man:
            f.write(json.dumps(m) + "\n")
    info = {"clips": k, "seconds": args.seconds, "speakers": spk_names,
            "clips_per_origin": {o: sum(1 for m in man if spk_origin[m["speaker"]] == o) for o in origins}, "dropped_for_floor": dropped,
            "families": {f: sum(1 for m in man if m["noise_kind"] == [f]) for f in FAMILIES},
            "pools": {"keyboard": len(kb), "recorded": len(pools["recorded"]), "music": len(pools["music"])}}
    with atomic.AtomicFile(str(out / "info.json")) as f:
        json.dump(info, f, indent=1)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="build_denoise.py output (split.json)")
    ap.add_argument("--catalogue", default=str(HERE.parent / "work" / "cache" / "catalogue.json"))
    ap.add_argument("--floor-json", default=None, help="speech_floor.py per-clip floors")
    ap.add_argument("--min-floor-snr", type=float, default=25.0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-cell", type=int, default=5, help="clips per (noise family, SNR)")
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args(argv)
    info = build(args)
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

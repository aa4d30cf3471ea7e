"""Voice-activity data: speech of disjoint voices over noise, music and tones, with 10 ms labels.

    python firmware_tools/data/build_vad.py --out firmware_tools/work/vad16k \
        --minutes-train 150 --minutes-test 30 [--cache firmware_tools/work/cache] [--jobs 2]

Sources are the denoise builder's catalogue (``firmware_tools/data/sources.py``: recorded speech
from Debian/PyPI packages, espeak-ng and festival voices; noise, music and events from packages,
fluidsynth renders and synthetic noise; sources named like voices -- robot, choir, vocal -- are left
out of the non-speech pool) and its speaker/group-disjoint split
(``build_denoise.make_split``, same salt: a voice or noise family in the VAD test split is in the
denoise test split too, and never in either train split). Babble is never used as non-speech.

Each clip (``--clip-seconds``, default 8 s at 16 kHz) is, with probability 0.7, utterances of one
speaker separated by pauses of 0.1..2 s, else no speech at all; plus noise/music/event layers at
-5..30 dB SNR (or, without speech, at any level), sometimes synthetic tones/beeps/sweeps, a
low floor of coloured noise (a microphone's), occasional synthetic room reverberation, an overall
level of -50..-6 dBFS. A sine, a beep or a hum is not speech; digital silence is silence.

``--p-onset P`` (default 0: the data of the earlier builds, bit for bit): in a share P of the
clips that have noise layers, the noise starts abruptly 1..5 s into the clip (before it: the
floor alone, or digital silence), so a model meets noise that begins after silence, which
the stream start hold-off of the ``vad`` node does not cover. The choice uses its own random
stream, so every other part of every clip is unchanged.

Labels: one per 10 ms frame (frame t = samples [160 t, 160 t + 160)), from each utterance's clean
signal before mixing: frames within 35 dB of the utterance's loudest 10 ms frame (and above -75 dB
relative to full scale at its final level), pauses shorter than 150 ms inside speech bridged,
islands shorter than 30 ms dropped, onsets/offsets widened by 20 ms. Stored as uint8 (1 = speech).

Output: ``<out>/<split>/audio_NNN.npy`` (int16, clips x samples), ``labels_NNN.npy`` (uint8, clips x
frames), ``<out>/clips.jsonl`` (what each clip is made of), ``<out>/meta.json`` (split, sources).
Deterministic for (seed, catalogue): clip i of a split is a function of (seed, split, i) only.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from edge_runtime import atomic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import build_denoise as B  # noqa: E402
import sources as S  # noqa: E402
import synth  # noqa: E402

RATE = 16000
HOP = 160
VERSION = 2
SHARD = 256
P_SPEECH = 0.7
# non-speech sources that are (or may be) voices: never used as non-speech
VOICE_LIKE = ("robot", "choir", "vocal", "voice", "speech", "talk", "sing")


# ------------------------------------------------------------------------------------- labels
def frame_db(x: np.ndarray, hop: int = HOP) -> np.ndarray:
    n = len(x) // hop
    e = np.mean(x[: n * hop].reshape(n, hop).astype(np.float64) ** 2, axis=1)
    return 10 * np.log10(e + 1e-20)


def _runs(mask: np.ndarray):
    """(start, stop) of runs of True."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]))


def speech_labels(clean: np.ndarray, rel_db: float = 35.0, abs_db: float = -75.0, bridge_ms: float = 150.0,
                  min_ms: float = 30.0, widen_ms: float = 20.0, hop: int = HOP, sr: int = RATE) -> np.ndarray:
    """10 ms speech labels (bool) of a clean utterance (see the module docstring)."""
    e = frame_db(clean, hop)
    if e.size == 0:
        return np.zeros(0, bool)
    act = (e > e.max() - rel_db) & (e > abs_db)
    fr_ms = 1000.0 * hop / sr
    # bridge short pauses (between words), then drop clicks, then widen edges
    for a, b in _runs(~act):
        if a > 0 and b < len(act) and (b - a) * fr_ms < bridge_ms:
            act[a:b] = True
    for a, b in _runs(act):
        if (b - a) * fr_ms < min_ms:
            act[a:b] = False
    w = int(round(widen_ms / fr_ms))
    if w:
        out = act.copy()
        for a, b in _runs(act):
            out[max(0, a - w):min(len(act), b + w)] = True
        act = out
    return act


# ------------------------------------------------------------------------------------- synthesis
def tones(n: int, rng: np.random.Generator) -> np.ndarray:
    """Sines, beeps, alarms, sweeps, DTMF-like pairs: periodic signals that are not speech."""
    t = np.arange(n) / RATE
    kind = rng.integers(5)
    if kind == 0:      # steady sine (or a few)
        y = sum(np.sin(2 * np.pi * rng.uniform(80, 4000) * t + rng.uniform(0, 6.3)) for _ in range(rng.integers(1, 4)))
    elif kind == 1:    # beeps on/off
        f = rng.uniform(300, 3500)
        period = rng.uniform(0.1, 1.2)
        duty = rng.uniform(0.2, 0.8)
        y = np.sin(2 * np.pi * f * t) * ((t % period) < duty * period)
    elif kind == 2:    # two-tone alarm / siren
        f1, f2 = rng.uniform(400, 2500, 2)
        rate = rng.uniform(0.5, 8)
        f = f1 + (f2 - f1) * (0.5 + 0.5 * np.sign(np.sin(2 * np.pi * rate * t))) if rng.random() < 0.5 else \
            f1 + (f2 - f1) * (0.5 + 0.5 * np.sin(2 * np.pi * rate * t))
        y = np.sin(2 * np.pi * np.cumsum(f) / RATE)
    elif kind == 3:    # repeated sweeps
        f0, f1 = rng.uniform(100, 4000, 2)
        period = rng.uniform(0.2, 2.0)
        ph = (t % period) / period
        f = f0 * (f1 / f0) ** ph
        y = np.sin(2 * np.pi * np.cumsum(f) / RATE)
    else:              # harmonic buzz with vibrato (a voice-like source that is not speech)
        f0 = rng.uniform(80, 400) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(3, 7) * t))
        ph = 2 * np.pi * np.cumsum(f0) / RATE
        y = sum(np.sin(k * ph) / k for k in range(1, 12))
    y = np.asarray(y, dtype=np.float64)
    return y / (np.max(np.abs(y)) + 1e-9)


def floor_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    y = synth.coloured_noise(n, rng.uniform(0.0, 2.0), rng)
    return y / (np.sqrt(np.mean(y ** 2)) + 1e-12)


def reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h = synth.synthetic_rir(RATE, rng.uniform(0.2, 0.9), rng)
    n = len(x) + len(h) - 1
    nf = 1 << int(np.ceil(np.log2(n)))
    y = np.fft.irfft(np.fft.rfft(x, nf) * np.fft.rfft(h, nf), nf)[: len(x)]
    return y


# ------------------------------------------------------------------------------------- clips
G: dict = {}


def _get(sid: str) -> np.ndarray:
    off, n = G["index"][sid]
    return np.asarray(G["pool"][off:off + n], dtype=np.float64)


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def make_clip(split: str, i: int):
    a = G["args"]
    rng = np.random.default_rng(_seed(a["seed"], VERSION, split, i))
    L = int(a["clip_seconds"] * RATE)
    nf = L // HOP
    speech = np.zeros(L)
    labels = np.zeros(nf, bool)
    info: dict = {"clip": f"{split}-{i:06d}", "split": split}
    has_speech = rng.random() < P_SPEECH
    if has_speech:
        spk_list = G["speakers"][split]
        spk = spk_list[int(rng.integers(len(spk_list)))]
        utts = G["by_speaker"][split][spk]
        pos = int(rng.uniform(0.0, 2.0) * RATE)
        used = []
        while pos < L - int(0.3 * RATE):
            sid = utts[int(rng.integers(len(utts)))]
            x = _get(sid)[: L - pos] * 10 ** (rng.uniform(-6, 6) / 20)
            lab = speech_labels(x)
            speech[pos:pos + len(x)] += x
            f0 = pos // HOP
            m = min(len(lab), nf - f0)
            labels[f0:f0 + m] |= lab[:m]
            used.append(sid)
            pos += len(x) + int(rng.uniform(0.1, 2.0) * RATE)
        info.update(speaker=spk, speech=used)
    # noise / music / event layers
    layers = []
    n_layers = rng.choice([0, 1, 1, 1, 2]) if has_speech else rng.choice([1, 1, 2])
    noise = np.zeros(L)
    for _ in range(n_layers):
        cat = rng.choice(list(G["noise_ids"][split]))
        ids = G["noise_ids"][split][cat]
        sid = ids[int(rng.integers(len(ids)))]
        y = B._noise_layer(sid, L, rng, RATE)
        if not np.any(y):
            continue
        y = y / (np.sqrt(np.mean(y ** 2)) + 1e-12) * 10 ** (rng.uniform(-10, 0) / 20)
        noise += y
        layers.append(sid)
    if rng.random() < (0.15 if has_speech else 0.3):
        y = tones(L, rng)
        if rng.random() < 0.5:  # only part of the clip
            a0 = int(rng.integers(0, L // 2))
            y[:a0] = 0
            y[a0 + int(rng.uniform(0.3, 0.9) * L):] = 0
        noise += y / (np.sqrt(np.mean(y ** 2)) + 1e-12) * 10 ** (rng.uniform(-10, 0) / 20)
        layers.append("tones")
    info["noise"] = layers
    wet = rng.random() < 0.25
    if wet:
        speech = reverb(speech, rng)
        if rng.random() < 0.5:
            noise = reverb(noise, rng)
    info["reverb"] = bool(wet)
    level = rng.uniform(-50, -6)
    if has_speech:
        act = B.active_rms(speech, RATE)
        g = 10 ** (level / 20) / max(act, 1e-9)
        speech *= g
        if np.any(noise):
            snr = rng.uniform(-5, 30)
            nr = np.sqrt(np.mean(noise ** 2)) + 1e-12
            noise *= 10 ** (level / 20) / nr * 10 ** (-snr / 20)
            info["snr_db"] = round(float(snr), 2)
    elif np.any(noise):
        noise *= 10 ** (level / 20) / (np.sqrt(np.mean(noise ** 2)) + 1e-12)
    orng = np.random.default_rng(_seed(a["seed"], VERSION, split, i, "onset"))
    if a.get("p_onset", 0.0) > 0 and np.any(noise) and orng.random() < a["p_onset"]:
        a0 = int(orng.uniform(1.0, min(5.0, a["clip_seconds"] - 1.0)) * RATE)
        noise[:a0] = 0.0
        info["noise_onset_s"] = round(a0 / RATE, 3)
    mix = speech + noise
    if rng.random() < 0.9:  # a microphone / room floor (else digital silence between events)
        mix += floor_noise(L, rng) * 10 ** (rng.uniform(-85, -45) / 20)
    peak = np.max(np.abs(mix))
    if peak > 0.99:
        mix *= 0.99 / peak
    info["level_dbfs"] = round(float(level), 2)
    info["speech_fraction"] = round(float(labels.mean()), 4)
    pcm = np.clip(np.round(mix * 32767), -32768, 32767).astype(np.int16)
    return pcm, labels.astype(np.uint8), info


def _init(pool_path, index, args, by_speaker, speakers, noise_ids):
    G["pool"] = np.memmap(pool_path, dtype=np.float16, mode="r")
    G.update(index=index, args=args, by_speaker=by_speaker, speakers=speakers, noise_ids=noise_ids)
    B.G["pool"], B.G["index"] = G["pool"], index  # B._noise_layer reads the pool through B.G


def build(out: Path, minutes: dict, seed: int, clip_seconds: float, cache: Path, jobs: int, log=print,
          p_onset: float = 0.0) -> dict:
    t0 = time.time()
    sources = S.build_catalogue(cache, jobs=jobs, log=log)
    split = B.make_split(sources)
    pool, index = B.build_pool(sources, RATE, cache, jobs, log=log)
    pool_path = pool.filename
    usable = [s for s in sources if s.usable and s.id in split["sources"]]
    by_speaker: dict = {"train": {}, "test": {}}
    noise_ids: dict = {"train": {}, "test": {}}
    for s in usable:
        sp = split["sources"][s.id]
        if s.kind == "speech":
            by_speaker[sp].setdefault(s.speaker, []).append(s.id)
        elif any(w in s.id.lower() for w in VOICE_LIKE):
            continue
        else:
            cat = "music" if s.kind == "music" else ("synth" if s.origin == "synth" else "real")
            noise_ids[sp].setdefault(cat, []).append(s.id)
    for sp in by_speaker:
        for d in (by_speaker[sp], noise_ids[sp]):
            for k in d:
                d[k].sort()
    speakers = {sp: sorted(by_speaker[sp]) for sp in by_speaker}
    args = {"seed": seed, "clip_seconds": clip_seconds, "p_onset": float(p_onset)}
    out.mkdir(parents=True, exist_ok=True)
    init = (pool_path, index, args, by_speaker, speakers, noise_ids)
    infos = []
    for sp in ("train", "test"):
        n = int(round(minutes[sp] * 60 / clip_seconds))
        d = out / sp
        d.mkdir(exist_ok=True)
        for f in d.glob("*.npy"):
            f.unlink()
        jobs_list = [(sp, i) for i in range(n)]
        if jobs > 1:
            import multiprocessing as mp
            with mp.get_context("fork").Pool(jobs, initializer=_init, initargs=init) as p:
                results = p.starmap(make_clip, jobs_list, chunksize=8)
        else:
            _init(*init)
            results = [make_clip(*j) for j in jobs_list]
        for k in range(0, n, SHARD):
            chunk = results[k:k + SHARD]
            tmp_a, tmp_l = d / f"audio_{k // SHARD:03d}.tmp.npy", d / f"labels_{k // SHARD:03d}.tmp.npy"
            np.save(tmp_a, np.stack([c[0] for c in chunk]))
            np.save(tmp_l, np.stack([c[1] for c in chunk]))
            atomic.commit(tmp_a, d / f"audio_{k // SHARD:03d}.npy")
            atomic.commit(tmp_l, d / f"labels_{k // SHARD:03d}.npy")
        infos += [c[2] for c in results]
        frac = float(np.mean([c[1].mean() for c in results])) if results else 0.0
        log(f"{sp}: {n} clips ({n * clip_seconds / 60:.1f} min), speech in {100 * frac:.1f}% of frames")
    with atomic.AtomicFile(str(out / "clips.jsonl")) as f:
        for inf in infos:
            f.write(json.dumps(inf) + "\n")
    meta = {"version": VERSION, "rate": RATE, "hop": HOP, "clip_seconds": clip_seconds, "seed": seed,
            "p_onset": float(p_onset),
            "minutes": minutes, "split_rule": split["rule"],
            "speakers": speakers, "noise_groups": {sp: {k: len(v) for k, v in noise_ids[sp].items()}
                                                   for sp in noise_ids},
            "sources": {sp: sorted({sid for v in by_speaker[sp].values() for sid in v}
                                   | {sid for v in noise_ids[sp].values() for sid in v}) for sp in by_speaker},
            "label_rule": "utterance frames within 35 dB of its loudest 10 ms frame, >-75 dBFS; pauses <150 ms "
                          "bridged, islands <30 ms dropped, edges widened 20 ms",
            "seconds": round(time.time() - t0, 1)}
    with atomic.AtomicFile(str(out / "meta.json")) as f:
        json.dump(meta, f, indent=1)
    return meta


def load_split(data: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(audio int16 clips x samples, labels uint8 clips x frames) of one split."""
    d = Path(data) / split
    a = sorted(d.glob("audio_[0-9][0-9][0-9].npy"))
    if not a:
        raise FileNotFoundError(f"{d}: no audio_NNN.npy shards (run firmware_tools/data/build_vad.py)")
    audio = np.concatenate([np.load(p) for p in a])
    labels = np.concatenate([np.load(str(p).replace("audio_", "labels_")) for p in a])
    return audio, labels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "firmware_tools" / "work" / "vad16k"))
    ap.add_argument("--cache", default=str(ROOT / "firmware_tools" / "work" / "cache"))
    ap.add_argument("--minutes-train", type=float, default=150.0)
    ap.add_argument("--minutes-test", type=float, default=30.0)
    ap.add_argument("--clip-seconds", type=float, default=8.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--p-onset", type=float, default=0.0,
                    help="share of clips with noise whose noise starts 1..5 s in, after silence (default 0)")
    a = ap.parse_args(argv)
    if not 0.0 <= a.p_onset <= 1.0:
        ap.error(f"--p-onset {a.p_onset} is outside 0..1")
    meta = build(Path(a.out), {"train": a.minutes_train, "test": a.minutes_test}, a.seed, a.clip_seconds,
                 Path(a.cache), a.jobs, p_onset=a.p_onset)
    print(f"built {a.out} in {meta['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

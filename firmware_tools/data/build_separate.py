"""Multitrack music for source separation: stems that sum exactly to the mix.

    python firmware_tools/data/build_separate.py --out firmware_tools/work/separate [--jobs 1]

Stems (4): ``vocals``, ``drums``, ``bass``, ``other``; the 2-stem task (``speech`` /
``background``) is made from the same material (recorded speech over the three music stems).
Everything is rendered at **16 kHz** mono: the edge model's rate (the pipeline's other speech
nodes run there, a 512-point STFT hop costs half of what it would at 32 kHz, and the stems'
energy that decides SDR lies below 8 kHz; a 22.05 kHz model would cost 40 % more per second
for a band that holds cymbal air and little else).

Sources (nothing downloaded):

* **MIDI**: the 31 songs of OpenTTD's ``openmsx`` music set (Debian ``openttd-openmsx``: full
  band arrangements with drums and bass), music21 corpus scores (their last part played by a
  bass programme, a drum groove on the beats) and generated songs (a GM-kit groove, a bass line
  on the chord roots, pads / arpeggios / a lead on the chords). Each MIDI file is split by
  instrument group -- channel 10 -> ``drums``, programmes 32-39 -> ``bass``, the rest ->
  ``other`` -- and each group is rendered separately through fluidsynth (in-process,
  ``pyfluidsynth``), so the stems sum exactly to the mix.
* **Recorded drum samples** sequenced into grooves (``sonic-pi-samples`` for training,
  ``lmms-common``'s drum kit for the test split), replacing the GM kit in 40 % of generated songs.
* **Vocals**: recorded human speech (``fillets-ng-data-cs`` Czech dialogue, ``ktuberling-data``
  words in ~27 languages, ``pocketsphinx-testdata`` read English) laid in phrases with pauses,
  and singing-like synthesized voices: a glottal-pulse source with vibrato and jitter on the
  song's melody through vowel formant filters that glide from vowel to vowel.

The split (held out by piece, by sound font, by programme, by speaker and by sample package):

=============  ============================================  ===========================================
               train                                          test
=============  ============================================  ===========================================
pieces         openmsx songs, music21 scores, generated       other openmsx songs (sha256 of the name
               seeds whose hash puts them in train            mod 5 == 0), other scores, other seeds
sound fonts    FluidR3_GM (fluid-soundfont-gm),               TimGM6mb (timgm6mb-soundfont), never
               MuseScore_General_Lite (musescore-general-     used in training
               soundfont)
programmes     ``other``: never organ (16-23) or reed         ``other`` parts all played by organ and
               (64-71), remapped to the same part's           reed programmes; ``bass``: 34, 37, 39
               family elsewhere; ``bass``: 32, 33, 35, 36, 38
speech         fillets-cs small/big fish and level            pocketsphinx-testdata (all), the held-out
               characters, ktuberling languages, by hash      fillets-cs characters and ktuberling
                                                              languages
singing        synthesized, seeds and vowel sets of train     other seeds, other formant sets (a
                                                              different vowel table: no shared voice)
drum samples   sonic-pi-samples                               lmms-common
=============  ============================================  ===========================================

Output (``--out``): ``train.npy`` / ``test.npy`` float16 arrays ``(excerpts, 4, samples)``
(stems in the order vocals, drums, bass, other; the mix is their sum, computed by the reader
in float32, so "stems sum exactly to the mix" holds by construction), ``speech_test.npz`` (the
2-stem test: held-out speech over held-out music at -5..+10 dB SNR) and ``manifest.json``
(every excerpt: piece, sound font, programmes, vocal source, gains; the split table above).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SR = 16000
STEMS = ("vocals", "drums", "bass", "other")
TRAIN_FONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3")
TEST_FONTS = ("/usr/share/sounds/sf2/TimGM6mb.sf2",)
OPENMSX = "/usr/share/games/openttd/baseset/openmsx"
HELD_OTHER = tuple(range(16, 24)) + tuple(range(64, 72))    # organ, reed: test only
TRAIN_BASS = (32, 33, 35, 36, 38)
TEST_BASS = (34, 37, 39)
# programmes a train "other" part that was organ/reed is moved to (keys, guitar, strings, brass, synth)
TRAIN_OTHER = (0, 1, 2, 4, 5, 6, 8, 11, 24, 25, 26, 27, 29, 40, 41, 42, 45, 46, 48, 49, 52, 56, 57, 60, 61,
               73, 75, 80, 81, 88, 89, 90, 91, 94, 104, 105)


def _h(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def split_of(kind: str, key: str) -> str:
    """The split of a piece / speaker / seed: one in five to test, by hash (stable)."""
    return "test" if _h(kind, key) % 5 == 0 else "train"


# ----------------------------------------------------------------------------- MIDI rendering

class Renderer:
    """One fluidsynth synthesizer per sound font (loaded once), rendering instrument lists."""

    def __init__(self):
        self._synths: dict[str, tuple] = {}

    def _synth(self, sf2: str):
        if sf2 not in self._synths:
            import fluidsynth

            fs = fluidsynth.Synth(samplerate=float(SR), gain=0.4)
            sid = fs.sfload(sf2)
            if sid < 0:
                raise RuntimeError(f"{sf2}: fluidsynth could not load the sound font")
            self._synths[sf2] = (fs, sid)
        return self._synths[sf2]

    def render(self, instruments: list, sf2: str, seconds: float) -> np.ndarray:
        """pretty_midi instruments rendered together (one channel each), ``seconds`` long, mono float32."""
        fs, sid = self._synth(sf2)
        n_total = int(seconds * SR)
        out = np.zeros(n_total, np.float32)
        if not instruments:
            return out
        events = []
        chans = []
        ch_free = [c for c in range(16) if c != 9]
        for inst in instruments:
            ch = 9 if inst.is_drum else ch_free.pop(0) if ch_free else 0
            chans.append(ch)
            fs.program_select(ch, sid, 128 if inst.is_drum else 0, 0 if inst.is_drum else int(inst.program))
            for nt in inst.notes:
                events.append((nt.start, 1, ch, nt.pitch, nt.velocity))
                events.append((nt.end, 0, ch, nt.pitch, 0))
            for cc in inst.control_changes:
                if cc.number in (1, 7, 10, 11, 64, 91, 93):
                    events.append((cc.time, 2, ch, cc.number, cc.value))
            for pb in inst.pitch_bends:
                events.append((pb.time, 3, ch, pb.pitch, 0))
        events.sort(key=lambda e: (e[0], e[1]))
        pos = 0
        for t, kind, ch, a, b in events:
            k = min(int(round(t * SR)), n_total)
            if k > pos:
                s = np.asarray(fs.get_samples(k - pos), np.float32).reshape(-1, 2).mean(axis=1)
                out[pos:k] = s / 32768.0
                pos = k
            if pos >= n_total:
                break
            if kind == 1:
                fs.noteon(ch, a, b)
            elif kind == 0:
                fs.noteoff(ch, a)
            elif kind == 2:
                fs.cc(ch, a, b)
            else:
                fs.pitch_bend(ch, a)
        if pos < n_total:
            s = np.asarray(fs.get_samples(n_total - pos), np.float32).reshape(-1, 2).mean(axis=1)
            out[pos:] = s / 32768.0
        # silence the synth for the next render: notes off, controllers back, reverb tails flushed
        for ch in set(chans):
            fs.cc(ch, 123, 0)
            fs.cc(ch, 121, 0)
            fs.pitch_bend(ch, 0)
        fs.system_reset()
        fs.get_samples(SR * 2)
        return out


def group_of(inst) -> str:
    if inst.is_drum:
        return "drums"
    if 32 <= inst.program <= 39:
        return "bass"
    return "other"


def assign_programmes(pm, split: str, rng) -> list[int]:
    """Programmes by the split's rule (see the docstring): held-out organ/reed and bass programmes."""
    progs = []
    for inst in pm.instruments:
        if inst.is_drum:
            continue
        g = group_of(inst)
        if g == "bass":
            pool = TRAIN_BASS if split == "train" else TEST_BASS
            if inst.program not in pool:
                inst.program = int(rng.choice(pool))
        elif split == "train":
            if inst.program in HELD_OTHER:
                inst.program = int(rng.choice(TRAIN_OTHER))
        else:
            inst.program = int(rng.choice(HELD_OTHER))
        progs.append(int(inst.program))
    return progs


# ----------------------------------------------------------------------------- MIDI pieces

def openmsx_pieces() -> list[tuple[str, str]]:
    if not os.path.isdir(OPENMSX):
        return []
    return [("openmsx", os.path.join(OPENMSX, f)) for f in sorted(os.listdir(OPENMSX)) if f.endswith(".mid")]


def music21_pieces(n: int) -> list[tuple[str, str]]:
    try:
        from render_scores import pick_scores
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from render_scores import pick_scores
    try:
        return [("music21", rel) for rel in pick_scores(n)]
    except ImportError:
        return []


def drum_groove(pm_mod, beats: list[float], rng, kit: str = "rock"):
    """A GM-kit groove on ``beats``: kick/snare back-beat, eighth hats, fills now and then."""
    inst = pm_mod.Instrument(program=0, is_drum=True, name="drums")
    hat = int(rng.choice([42, 44, 46, 51, 53]))
    snare = int(rng.choice([38, 40, 37]))
    kick = int(rng.choice([35, 36]))
    for j, b in enumerate(beats[:-1]):
        step = beats[j + 1] - b
        v = lambda lo=70, hi=120: int(rng.integers(lo, hi))  # noqa: E731
        if j % 2 == 0 or rng.random() < 0.2:
            inst.notes.append(pm_mod.Note(v(), kick, b, b + 0.1))
        if j % 2 == 1:
            inst.notes.append(pm_mod.Note(v(), snare, b, b + 0.1))
        for sub in (0, 0.5) if rng.random() < 0.85 else (0, 0.25, 0.5, 0.75):
            inst.notes.append(pm_mod.Note(v(40, 100), hat, b + sub * step, b + sub * step + 0.05))
        if j % 16 == 15 and rng.random() < 0.6:
            for q, tom in enumerate((50, 47, 45, 43)):
                inst.notes.append(pm_mod.Note(v(), tom, b + q * step / 4, b + q * step / 4 + 0.1))
        if j % 16 == 0 and rng.random() < 0.5:
            inst.notes.append(pm_mod.Note(v(), 49, b, b + 0.5))
    return inst


def generated_song(seed: int, seconds: float):
    """A generated song (pretty_midi): groove, bass on chord roots, chords / arpeggio / lead, and a melody
    (returned separately for the singing voice)."""
    import pretty_midi as pmod

    rng = np.random.default_rng(seed)
    pm = pmod.PrettyMIDI(initial_tempo=float(rng.uniform(80, 160)))
    bpm = pm.get_tempo_changes()[1][0]
    beat = 60.0 / bpm
    beats = list(np.arange(0, seconds + beat, beat))
    key = int(rng.integers(0, 12))
    scale = np.array([0, 2, 4, 5, 7, 9, 11] if rng.random() < 0.6 else [0, 2, 3, 5, 7, 8, 10])
    degrees = [0, 3, 4, 5, 1, 2, 6]
    prog = [int(rng.choice(degrees[:4] if rng.random() < 0.7 else degrees)) for _ in range(4)]
    bar = 4 * beat
    bass = pmod.Instrument(program=int(rng.choice(TRAIN_BASS)), name="bass")
    chords = pmod.Instrument(program=int(rng.choice(TRAIN_OTHER)), name="chords")
    arp = pmod.Instrument(program=int(rng.choice(TRAIN_OTHER)), name="arp")
    melody = []
    style = int(rng.integers(0, 3))
    t, k = 0.0, 0
    while t < seconds:
        d = prog[k % 4]
        root = 36 + key + int(scale[d])
        triad = [48 + key + int(scale[(d + i) % 7]) + 12 * ((d + i) // 7) for i in (0, 2, 4)]
        # bass: roots on beats, an octave or fifth now and then
        for b in range(4):
            p = root + (12 if rng.random() < 0.15 else 7 if rng.random() < 0.1 else 0)
            dur = beat * (0.9 if style else 0.45)
            bass.notes.append(pmod.Note(int(rng.integers(80, 115)), p, t + b * beat, t + b * beat + dur))
            if style == 0:
                bass.notes.append(pmod.Note(int(rng.integers(70, 100)), p, t + (b + 0.5) * beat,
                                            t + (b + 0.5) * beat + dur))
        if style != 2:
            for p in triad:
                chords.notes.append(pmod.Note(int(rng.integers(50, 85)), p, t, t + bar * 0.95))
        if style != 1:
            for q in range(8):
                p = triad[q % 3] + 12
                arp.notes.append(pmod.Note(int(rng.integers(50, 90)), p, t + q * beat / 2, t + (q + 1) * beat / 2))
        # melody: scale steps near the chord tones, notes of 1/2..2 beats
        m = t
        while m < t + bar:
            dur = float(rng.choice([0.5, 1, 1, 1.5, 2])) * beat
            deg = d + int(rng.choice([0, 2, 4, 1, -1, 3]))
            pitch = 60 + key + int(scale[deg % 7]) + 12 * (deg // 7)
            if rng.random() < 0.85:
                melody.append((m, min(m + dur * 0.95, t + bar), pitch))
            m += dur
        t += bar
        k += 1
    pm.instruments = [bass, chords, arp]
    pm.instruments.append(drum_groove(pmod, beats, rng))
    for inst in pm.instruments:
        inst.notes = [n for n in inst.notes if n.start < seconds]
    return pm, melody, beats


# ----------------------------------------------------------------------------- drum samples

def sample_kit(split: str) -> dict[str, list[np.ndarray]]:
    """Kick / snare / hat samples: sonic-pi (train) or lmms (test), at 16 kHz."""
    import soundfile as sf
    import soxr

    if split == "train":
        root = "/usr/share/sonic-pi/samples"
        pats = {"kick": ("bd_",), "snare": ("sn_", "drum_snare"), "hat": ("hat_", "drum_cymbal_closed", "drum_cymbal_pedal")}
    else:
        root = "/usr/share/lmms/samples/drums"
        pats = {"kick": ("kick", "bassdrum"), "snare": ("snare", "clap"), "hat": ("hihat", "shaker", "ride")}
    kit: dict[str, list[np.ndarray]] = {k: [] for k in pats}
    if not os.path.isdir(root):
        return kit
    for f in sorted(os.listdir(root)):
        for k, pre in pats.items():
            if f.startswith(pre) and f.endswith((".flac", ".ogg", ".wav")):
                try:
                    x, sr = sf.read(os.path.join(root, f), dtype="float32", always_2d=True)
                except Exception:            # a few lmms files are mislabelled WAVs libsndfile refuses
                    continue
                x = soxr.resample(x.mean(axis=1), sr, SR)[: SR * 2]
                if np.max(np.abs(x)) > 1e-3:
                    kit[k].append((x / np.max(np.abs(x))).astype(np.float32))
    return kit


def sampled_groove(kit, beats: list[float], n: int, rng) -> np.ndarray:
    out = np.zeros(n, np.float32)
    if not all(kit.values()):
        return out
    kick, snare, hat = (kit[k][int(rng.integers(0, len(kit[k])))] for k in ("kick", "snare", "hat"))

    def put(x, t, g):
        i = int(t * SR)
        if i < n:
            m = min(len(x), n - i)
            out[i:i + m] += g * x[:m]
    for j, b in enumerate(beats[:-1]):
        step = beats[j + 1] - b
        if j % 2 == 0 or rng.random() < 0.15:
            put(kick, b, rng.uniform(0.6, 1.0))
        if j % 2 == 1:
            put(snare, b, rng.uniform(0.5, 0.9))
        for sub in (0, 0.5):
            put(hat, b + sub * step, rng.uniform(0.2, 0.5))
    return out


# ----------------------------------------------------------------------------- vocals

def speech_pool(split: str, max_clips: int = 800) -> list[tuple[str, np.ndarray]]:
    """Recorded speech clips of the split's speakers (at 16 kHz), with their speaker."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from firmware_tools.data import sources as S
    import soxr

    clips = []
    files = [s for s in S.discover_files() if s.kind == "speech" and s.usable
             and s.origin in ("deb:fillets-ng-data-cs", "deb:ktuberling-data", "deb:pocketsphinx-testdata")]
    for s in files:
        if s.origin == "deb:fillets-ng-data-cs" and S.fillets_voice_code(s.id.split("/")[-1]) is None:
            continue
        if s.origin == "deb:pocketsphinx-testdata":
            sp = "test"
        elif s.speaker in ("fillets-cs:m", "fillets-cs:v"):
            sp = "train"                      # the two main actors: training only
        else:
            sp = split_of("speaker", s.speaker)
        if sp != split:
            continue
        clips.append(s)
    clips.sort(key=lambda s: _h("clip", s.id))
    out = []
    for s in clips[:max_clips]:
        try:
            x, sr = S.load_audio(s.path)
        except Exception:
            continue
        if sr != SR:
            x = soxr.resample(x, sr, SR)
        x = x.astype(np.float32)
        pk = float(np.max(np.abs(x))) if x.size else 0.0
        if pk < 1e-3 or x.size < SR // 4:
            continue
        out.append((s.speaker, x / pk))
    return out


def speech_track(pool, n: int, rng) -> tuple[np.ndarray, list[str]]:
    """Phrases from the pool laid one after another with pauses (0.1-1.5 s) over ``n`` samples."""
    out = np.zeros(n, np.float32)
    who = []
    t = int(rng.uniform(0, 1.0) * SR)
    while t < n and pool:
        sp, x = pool[int(rng.integers(0, len(pool)))]
        m = min(len(x), n - t)
        out[t:t + m] = x[:m] * rng.uniform(0.5, 1.0)
        who.append(sp)
        t += m + int(rng.uniform(0.1, 1.5) * SR)
    return out, sorted(set(who))


# vowel formants (F1, F2, F3 Hz): train and test use different tables (no shared voice)
VOWELS = {"train": [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410)],
          "test": [(660, 1720, 2410), (390, 1990, 2550), (440, 1020, 2240), (490, 1350, 1690), (640, 1190, 2390)]}


def sung_track(melody, n: int, rng, split: str) -> np.ndarray:
    """A singing-like voice on ``melody`` [(start, end, midi pitch)]: glottal pulses (vibrato,
    jitter, shimmer, breath noise) through 3 formant resonators gliding between vowels."""
    from scipy.signal import lfilter

    f0 = np.zeros(n)
    amp = np.zeros(n)
    shift = int(rng.choice([-12, 0, 0, 12])) if split == "train" else int(rng.choice([-12, 0]))
    for s, e, p in melody:
        a, b = max(int(s * SR), 0), min(int(e * SR), n)
        if b <= a:
            continue
        f0[a:b] = 440.0 * 2 ** ((p + shift - 69) / 12)
        env = np.ones(b - a)
        r = min(int(0.03 * SR), (b - a) // 3)
        if r > 0:
            env[:r] = np.linspace(0, 1, r)
            env[-r:] = np.linspace(1, 0, r)
        amp[a:b] = env
    t = np.arange(n) / SR
    vib = 1 + 0.012 * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t) + 0.003 * rng.standard_normal(n).cumsum() / np.sqrt(
        np.arange(1, n + 1))
    f = np.maximum(f0 * vib, 1.0)
    phase = np.cumsum(f / SR)
    saw = (phase % 1.0) * 2 - 1                                   # bright pulse-like source
    src = (saw - lfilter([1], [1, -0.95], saw) * 0.05) * (f0 > 0)
    src += 0.03 * rng.standard_normal(n) * (f0 > 0)               # breath
    table = VOWELS[split]
    y = np.zeros(n)
    seg = int(rng.uniform(0.25, 0.6) * SR)
    vow = [table[int(rng.integers(0, len(table)))] for _ in range(n // seg + 2)]
    for j in range(3):
        fr = np.interp(np.arange(n), np.arange(len(vow)) * seg, [v[j] for v in vow])
        # one resonator per formant, its frequency updated per 10 ms chunk
        bw = (80, 100, 150)[j]
        r = np.exp(-np.pi * bw / SR)
        zi = np.zeros(2)
        for c in range(0, n, 160):
            w = 2 * np.pi * fr[c] / SR
            a = [1, -2 * r * np.cos(w), r * r]
            part, zi = lfilter([1 - r], a, src[c:c + 160], zi=zi)
            y[c:c + 160] += part * (1.0, 0.6, 0.3)[j]
    y *= amp
    pk = np.max(np.abs(y))
    return (y / pk).astype(np.float32) if pk > 0 else y.astype(np.float32)


# ----------------------------------------------------------------------------- excerpts

def rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def cut_excerpts(stems: dict, seconds: float, rng, max_n: int) -> list[tuple[int, dict]]:
    """Excerpts of ``seconds`` where at least two of drums/bass/other sound."""
    n = len(next(iter(stems.values())))
    L = int(seconds * SR)
    starts = list(range(0, max(n - L, 0) + 1, L))
    rng.shuffle(starts)
    out = []
    for s in starts:
        seg = {k: v[s:s + L] for k, v in stems.items()}
        if len(seg["other"]) < L:
            continue
        active = sum(rms(seg[k]) > 3e-3 for k in ("drums", "bass", "other"))
        if active >= 2:
            out.append((s, seg))
        if len(out) >= max_n:
            break
    return out


def finish_excerpt(seg: dict, vocals: np.ndarray | None, rng) -> tuple[np.ndarray, dict]:
    """Stems (4, L) with random levels (the mix is their sum), peak kept below 1."""
    L = len(seg["other"])
    out = np.zeros((4, L), np.float32)
    gains = {}
    for i, k in enumerate(STEMS):
        x = vocals if k == "vocals" else seg[k]
        if x is None or rms(x) < 1e-5:
            gains[k] = None
            continue
        g = 10 ** (rng.uniform(-6, 3) / 20) * 0.1 / rms(x)     # each stem near -20 dBFS +-
        out[i] = x * g
        gains[k] = round(20 * np.log10(g), 2)
    pk = float(np.max(np.abs(out.sum(axis=0))))
    if pk > 0.95:
        out *= 0.95 / pk
    return out, gains


def build(out: Path, n_music21: int = 60, n_generated: int = 50, n_openmsx: int = 100, seconds_train: float = 6.0,
          seconds_test: float = 10.0, per_piece_train: int = 8, per_piece_test: int = 3, log=print) -> dict:
    import pretty_midi as pmod

    t0 = time.time()
    rend = Renderer()
    pools = {sp: speech_pool(sp) for sp in ("train", "test")}
    kits = {sp: sample_kit(sp) for sp in ("train", "test")}
    log(f"speech clips: train {len(pools['train'])}, test {len(pools['test'])}; drum samples "
        f"train {sum(map(len, kits['train'].values()))}, test {sum(map(len, kits['test'].values()))}")
    data = {"train": [], "test": []}
    meta = {"train": [], "test": []}
    pieces = openmsx_pieces()[:n_openmsx] + music21_pieces(n_music21) + [("generated", f"seed{s}") for s in range(n_generated)]
    for kind, key in pieces:
        split = split_of("piece", key if kind != "openmsx" else os.path.basename(key))
        rng = np.random.default_rng(_h("render", kind, key))
        fonts = TRAIN_FONTS if split == "train" else TEST_FONTS
        fonts = [f for f in fonts if os.path.exists(f)]
        sf2 = fonts[int(rng.integers(0, len(fonts)))]
        seconds = seconds_train if split == "train" else seconds_test
        melody = None
        sampled = None
        try:
            if kind == "openmsx":
                pm = pmod.PrettyMIDI(key)
            elif kind == "music21":
                from music21 import corpus
                import tempfile

                score = corpus.parse(key)
                if hasattr(score, "scores"):
                    score = score.scores[0]
                with tempfile.TemporaryDirectory() as tmp:
                    mid = os.path.join(tmp, "s.mid")
                    score.write("midi", fp=mid)
                    pm = pmod.PrettyMIDI(mid)
                pm.instruments = [i for i in pm.instruments if i.notes]
                if len(pm.instruments) < 2:
                    continue
                scale = float(rng.uniform(0.6, 1.0))           # chorales are slow: up to 1.6x faster
                end = pm.get_end_time()
                pm.adjust_times([0, end], [0, end * scale])
                for i, inst in enumerate(pm.instruments):
                    inst.is_drum = False
                    inst.program = int(rng.choice(TRAIN_BASS)) if i == len(pm.instruments) - 1 else int(
                        rng.choice(TRAIN_OTHER))
                    if i == len(pm.instruments) - 1:
                        for nt in inst.notes:
                            nt.pitch = max(28, nt.pitch - 12)
                    melody = melody or [(nt.start, nt.end, nt.pitch) for nt in pm.instruments[0].notes]
                if rng.random() < 0.7:
                    pm.instruments.append(drum_groove(pmod, list(pm.get_beats()) + [pm.get_end_time()], rng))
            else:
                seed = int(key[4:])
                pm, melody, beats = generated_song(_h("song", seed), 40.0)
                if rng.random() < 0.4:
                    sampled = beats
            if pm.get_end_time() < seconds:
                continue
            progs = assign_programmes(pm, split, rng)
            dur = min(pm.get_end_time() + 1.0, 200.0)
            groups = {g: [i for i in pm.instruments if group_of(i) == g] for g in ("drums", "bass", "other")}
            if sampled is not None:
                groups["drums"] = []
            stems = {g: rend.render(groups[g], sf2, dur) for g in groups}
            if sampled is not None:
                stems["drums"] = sampled_groove(kits[split], sampled, len(stems["other"]), rng)
        except Exception as e:              # a score music21 cannot parse or a MIDI file pretty_midi refuses
            log(f"  {kind} {key}: skipped ({e!r})"[:200])
            continue
        if melody is None:                  # openmsx: the highest "other" part's notes as the sung line
            cand = [i for i in groups["other"] if i.notes]
            if cand:
                top = max(cand, key=lambda i: np.mean([n.pitch for n in i.notes]) * min(len(i.notes), 200))
                melody = [(n.start, n.end, n.pitch) for n in top.notes]
        per = per_piece_train if split == "train" else per_piece_test
        for start, seg in cut_excerpts(stems, seconds, rng, per):
            L = len(seg["other"])
            u = rng.random()
            vocal_src = "none"
            voc = None
            if u < 0.45 and pools[split]:
                voc, who = speech_track(pools[split], L, rng)
                vocal_src = "speech:" + ",".join(who[:4])
            elif u < 0.8 and melody:
                t0s = start / SR
                mel = [(s - t0s, e - t0s, p) for s, e, p in melody if e > t0s and s < t0s + seconds]
                if mel:
                    voc = sung_track(mel, L, rng, split)
                    vocal_src = "sung"
            x, gains = finish_excerpt(seg, voc, rng)
            data[split].append(x.astype(np.float16))
            meta[split].append({"piece": f"{kind}:{os.path.basename(key)}", "start_s": start / SR,
                                "sound_font": os.path.basename(sf2), "programmes": progs,
                                "drums": "samples" if sampled is not None else "gm-kit",
                                "vocals": vocal_src, "gains_db": gains})
        log(f"  {kind} {os.path.basename(key)} -> {split} ({os.path.basename(sf2)}): "
            f"{len(data['train'])} train / {len(data['test'])} test excerpts, {time.time() - t0:.0f} s")
    out.mkdir(parents=True, exist_ok=True)
    from edge_runtime import atomic

    for split in ("train", "test"):
        arr = np.stack(data[split]) if data[split] else np.zeros((0, 4, 0), np.float16)
        tmp = out / f".{split}.tmp.npy"
        np.save(tmp, arr)
        atomic.commit(str(tmp), str(out / f"{split}.npy"))
    # the 2-stem test: held-out speech over held-out music (drums + bass + other) at -5..+10 dB SNR
    rng = np.random.default_rng(_h("speech-test"))
    sp, bg, snrs = [], [], []
    for i, x in enumerate(data["test"]):
        music = x[1:].astype(np.float32).sum(axis=0)
        s, _ = speech_track(pools["test"], music.size, rng)
        if rms(s) < 1e-4 or rms(music) < 1e-4:
            continue
        snr = float(rng.uniform(-5, 10))
        s = s * (rms(music) / rms(s)) * 10 ** (snr / 20)
        k = 0.9 / max(float(np.max(np.abs(s + music))), 0.9)
        sp.append((s * k).astype(np.float32))
        bg.append((music * k).astype(np.float32))
        snrs.append(snr)
    tmp = out / ".speech_test.tmp.npz"
    np.savez(tmp, speech=np.stack(sp), background=np.stack(bg), snr_db=np.array(snrs))
    atomic.commit(str(tmp), str(out / "speech_test.npz"))
    manifest = {"sample_rate": SR, "stems": STEMS,
                "split": {"pieces": "sha256(piece) % 5 == 0 -> test", "sound_fonts": {
                    "train": [os.path.basename(f) for f in TRAIN_FONTS], "test": [os.path.basename(f) for f in TEST_FONTS]},
                    "programmes": {"train_other_excludes": list(HELD_OTHER), "test_other": list(HELD_OTHER),
                                   "train_bass": list(TRAIN_BASS), "test_bass": list(TEST_BASS)},
                    "speech": {"train": "fillets-ng-data-cs m/v + characters by hash, ktuberling languages by hash",
                               "test": "pocketsphinx-testdata, held-out fillets-cs characters and ktuberling languages"},
                    "drum_samples": {"train": "sonic-pi-samples", "test": "lmms-common"},
                    "singing": {"train": VOWELS["train"], "test": VOWELS["test"]}},
                "counts": {s: len(data[s]) for s in data}, "speech_test": len(sp),
                "excerpts": meta, "build_s": round(time.time() - t0, 1)}
    tmp = out / ".manifest.tmp.json"
    tmp.write_text(json.dumps(manifest, indent=1))
    atomic.commit(str(tmp), str(out / "manifest.json"))
    log(f"wrote {out}: {manifest['counts']}, speech test {len(sp)}, {time.time() - t0:.0f} s")
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="firmware_tools/work/separate")
    ap.add_argument("--music21", type=int, default=60, help="music21 scores (default 60)")
    ap.add_argument("--generated", type=int, default=50, help="generated songs (default 50)")
    ap.add_argument("--openmsx", type=int, default=100, help="openmsx songs at most (default: all 31)")
    ap.add_argument("--per-piece", type=int, default=8, help="train excerpts per piece at most (default 8)")
    a = ap.parse_args(argv)
    build(Path(a.out), a.music21, a.generated, a.openmsx, per_piece_train=a.per_piece, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

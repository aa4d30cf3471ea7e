"""MIDI files to the synthesizer's control frames (f0 and loudness per hop), with ``mido``.

A file becomes one monophonic line: notes of all channels but the drum channel (10), the newest
note sounding (a new note-on cuts the one before: last-note priority), so a melody in a
polyphonic file keeps its top entries in time order. Loudness per hop is an envelope in dB
from the velocity by a line fitted per instrument on its training renders (``velocity_db``), a
30 ms attack, a 100 ms decay to the sustain, a 300 ms release after the note-off; expression
(CC11) scales it as GM does.
"""
from __future__ import annotations

import os

import numpy as np

from .errors import EdgeRuntimeError

__all__ = ["MidiInputError", "read_midi", "read_notes", "controls_from_notes", "read_controls"]

SILENT_DB = -100.0
ATTACK_S, DECAY_S, RELEASE_S = 0.03, 0.10, 0.30
MAX_SECONDS = 3600.0


class MidiInputError(EdgeRuntimeError):
    """A MIDI file that cannot be read: missing, corrupt, truncated, without notes."""


def read_notes(path: str) -> list[tuple[float, float, int, int]]:
    """(start_s, end_s, pitch, velocity) of the monophonic line of the MIDI file ``path``."""
    return read_midi(path)[0]


def read_midi(path: str) -> tuple[list[tuple[float, float, int, int]], list[tuple[float, int]]]:
    """The monophonic line's notes and its expression changes (time_s, CC11 value 0..127)."""
    try:
        import mido
    except ImportError:  # pragma: no cover - depends on the install
        from .errors import MissingExtraError

        raise MissingExtraError("reading MIDI needs mido: pip install 'edge-runtime[generate]' (or pip install mido)")
    if not os.path.isfile(path):
        raise MidiInputError(f"{path}: MIDI file not found")
    try:
        mid = mido.MidiFile(path)
        events, expression = [], []
        t = 0.0
        for msg in mid:                  # merged tracks, times in seconds (tempo map applied)
            t += msg.time
            if msg.type in ("note_on", "note_off") and msg.channel != 9:
                events.append((t, msg.type == "note_on" and msg.velocity > 0, msg.note, msg.velocity))
            elif msg.type == "control_change" and msg.control == 11 and msg.channel != 9:
                expression.append((t, int(msg.value)))
    except (OSError, EOFError, ValueError, KeyError, IndexError, TypeError) as exc:
        why = str(exc) or ("the file ends early (truncated)" if isinstance(exc, EOFError) else type(exc).__name__)
        raise MidiInputError(f"{path}: not a readable MIDI file ({why}); expected a standard MIDI file (.mid)") from None
    notes: list[list] = []
    current = None
    for t, on, pitch, vel in events:
        if on:
            if current is not None:
                current[1] = t
            current = [t, None, pitch, vel]
            notes.append(current)
        elif current is not None and current[2] == pitch:
            current[1] = t
            current = None
    if current is not None:
        current[1] = events[-1][0] if events else current[0]
    out = [(float(s), float(e), int(p), int(v)) for s, e, p, v in notes if e is not None and e > s]
    if not out:
        raise MidiInputError(f"{path}: no notes (outside the drum channel) in the MIDI file; expected a melody")
    if out[-1][1] > MAX_SECONDS:
        raise MidiInputError(f"{path}: the melody lasts {out[-1][1]:.0f} s; at most {MAX_SECONDS:.0f} s is rendered")
    return out, expression


def controls_from_notes(notes, velocity_db: tuple[float, float], sample_rate: int = 16000, hop: int = 160,
                        transpose: float = 0.0, expression=()) -> tuple[np.ndarray, np.ndarray]:
    """(frames,) f0 in Hz (held through rests) and (frames,) loudness in dB per hop; the end of
    each hop is its time (as the node's causal front end measures it). A note's sustain level is
    ``velocity_db[0] + velocity_db[1] * velocity`` dB (fitted per instrument). ``expression`` (time_s,
    CC11) changes scale the level by the GM curve, 40 log10(value / 127) dB."""
    end = max(e for _, e, _, _ in notes) + RELEASE_S + 0.3
    n = int(np.ceil(end * sample_rate / hop))
    t = (np.arange(n) + 1) * hop / sample_rate
    f0 = np.full(n, 440.0 * 2 ** ((notes[0][2] + transpose - 69) / 12))
    ld = np.full(n, SILENT_DB)
    for i, (s, e, p, v) in enumerate(notes):
        nxt = notes[i + 1][0] if i + 1 < len(notes) else end
        hz = 440.0 * 2 ** ((p + transpose - 69) / 12)
        f0[(t >= s) & (t < nxt)] = hz
        sus = velocity_db[0] + velocity_db[1] * v
        peak = sus + 3.0
        dt = t - s
        env = np.where(dt < ATTACK_S, SILENT_DB + (peak - SILENT_DB) * np.clip(dt / ATTACK_S, 0, 1),
                       np.where(dt < ATTACK_S + DECAY_S, peak + (sus - peak) * (dt - ATTACK_S) / DECAY_S, sus))
        rel = t - e
        env = np.where(rel > 0, sus + (SILENT_DB - sus) * np.clip(rel / RELEASE_S, 0, 1), env)
        span = (t >= s) & (t < min(nxt, e + RELEASE_S))
        ld[span] = env[span]
    if expression:
        times = np.array([e[0] for e in expression])
        vals = np.array([e[1] for e in expression], np.float64)
        k = np.searchsorted(times, t, side="right") - 1
        cc = np.where(k >= 0, vals[np.maximum(k, 0)], 127.0)
        ld = np.maximum(ld + 40.0 * np.log10(np.maximum(cc, 1.0) / 127.0), SILENT_DB)
    return f0.astype(np.float32), ld.astype(np.float32)


def read_controls(path: str, velocity_db: tuple[float, float], sample_rate: int = 16000, hop: int = 160,
                  transpose: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_midi` then :func:`controls_from_notes`."""
    notes, expression = read_midi(path)
    return controls_from_notes(notes, velocity_db, sample_rate, hop, transpose, expression)

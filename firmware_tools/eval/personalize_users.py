"""Simulated listeners for ``eval_personalize.py``, written apart from the recommender.

A family draws one listener per seed; a listener has an *ideal setting* in every context (in
the parameters' own units: denoise strength 0..1, gain dB, EQ tilt dB/oct) and answers an
offered setting as the issue-32 listeners do:

* **accept** when every parameter lies within the model's tolerance of the ideal (the step a
  listener notices: :data:`edge_runtime.personalize.model.PARAMS`);
* otherwise **adjust** (moves the sliders to the ideal, each within a quarter of a tolerance
  step: N(0, (tol/4)^2)) with the listener's own probability ``p_adjust`` ~ U(0.4, 0.8), else
  **reject**;
* 10 % of answers are noise: accept, reject or an adjust to a uniformly random setting, one
  third each, whatever was offered.

Nothing here imports the recommender's features or priors: only the parameter ranges and
tolerances (what the listener hears) and the :class:`Context` type (what the device measures).

Families ``loudness``, ``linear`` and ``compromise`` were used while designing the recommender.
``hearing`` was written before the recommender's first run and kept aside: it is run once, at
the end, and reported as it comes.
"""
from __future__ import annotations

import math

import numpy as np

from edge_runtime.personalize.model import CLASSES, PARAMS, Context

LO = np.array([p.lo for p in PARAMS])
HI = np.array([p.hi for p in PARAMS])
TOL = np.array([p.tolerance for p in PARAMS])
CLASS_P = (0.4, 0.3, 0.15, 0.05, 0.1)
NOISE_ANSWERS = 0.10


def draw_context(r: np.random.Generator) -> Context:
    """Class by the shares above; level ~ N(-30, 9) dBFS in -60..-3; SNR ~ U(-5, 45) dB (noise floor at most 0 dBFS); hour ~ U(0, 24)."""
    level = float(np.clip(r.normal(-30.0, 9.0), -60.0, -3.0))
    snr = float(r.uniform(-5.0, 45.0))
    return Context(str(r.choice(CLASSES, p=CLASS_P)), level, min(0.0, max(-120.0, level - snr)), float(r.uniform(0.0, 24.0)))


def _snr(c: Context) -> float:
    return c.level_dbfs - c.noise_floor_dbfs


def _hc(h: float, peak: float) -> float:
    """cos of the hour's distance to ``peak`` on the 24 h circle."""
    return math.cos(2 * math.pi * (h - peak) / 24.0)


class Listener:
    """One simulated listener; ``ideal(ctx)`` is the setting they want, within the ranges."""

    family = ""

    def __init__(self, seed: int):
        self.r = np.random.default_rng(seed)           # taste, drawn once
        self.rng = np.random.default_rng(seed + 1)     # answers and contexts
        self.p_adjust = float(self.r.uniform(0.4, 0.8))
        self.draw(self.r)

    def draw(self, r):  # pragma: no cover - each family
        raise NotImplementedError

    def raw_ideal(self, c: Context) -> np.ndarray:  # pragma: no cover - each family
        raise NotImplementedError

    def ideal(self, c: Context) -> np.ndarray:
        return np.clip(self.raw_ideal(c), LO, HI)

    def within(self, c: Context, params) -> np.ndarray:
        """Per parameter: is the offered value within the tolerance of the ideal?"""
        return np.abs(np.asarray(params, float) - self.ideal(c)) <= TOL + 1e-9

    def answer(self, c: Context, params) -> tuple[str, np.ndarray | None]:
        """``("accept", None)``, ``("reject", None)`` or ``("adjust", the listener's setting)``."""
        r = self.rng
        if r.random() < NOISE_ANSWERS:
            k = int(r.integers(3))
            if k == 2:
                return "adjust", r.uniform(LO, HI)
            return ("accept", "reject")[k], None
        if self.within(c, params).all():
            return "accept", None
        if r.random() < self.p_adjust:
            return "adjust", np.clip(self.ideal(c) + r.normal(0.0, 0.25 * TOL), LO, HI)
        return "reject", None


class Loudness(Listener):
    """The issue's listeners: gain aims at a personal loudness (``T - level``), denoising switches
    on below a personal SNR, the tilt depends on the class and the hour."""

    family = "loudness"

    def draw(self, r):
        self.target = r.normal(-27.0, 4.0)
        self.snr_on = r.uniform(5.0, 25.0)
        self.d_on, self.d_off = r.uniform(0.6, 1.0), r.uniform(0.0, 0.3)
        self.tilt_class = {c: r.normal(0.0, 1.5) for c in CLASSES}
        self.tilt_hour, self.tilt_peak = r.uniform(0.0, 2.0), r.uniform(0.0, 24.0)

    def raw_ideal(self, c):
        d = self.d_on if _snr(c) < self.snr_on else self.d_off
        g = self.target - c.level_dbfs
        t = self.tilt_class[c.audio_class] + self.tilt_hour * _hc(c.hour, self.tilt_peak)
        return np.array([d, g, t])


class Linear(Listener):
    """Round-1's kind of listener: every parameter a linear function of level, noise floor and
    the hour's cosine, plus a per-class offset."""

    family = "linear"

    def draw(self, r):
        self.base = r.normal([0.5, 0.0, 0.0], [0.2, 3.0, 1.5])
        self.cls = {c: r.normal(0.0, [0.12, 2.0, 1.0]) for c in CLASSES}
        self.s_level = r.normal([0.0, -0.2, 0.0], [0.005, 0.1, 0.03])     # per dB
        self.s_noise = r.normal([0.012, 0.0, 0.0], [0.006, 0.05, 0.03])   # per dB
        self.s_hour = r.normal(0.0, [0.05, 1.0, 0.6])
        self.peak = r.uniform(0.0, 24.0)

    def raw_ideal(self, c):
        return (self.base + self.cls[c.audio_class] + self.s_level * (c.level_dbfs + 30.0)
                + self.s_noise * (c.noise_floor_dbfs + 55.0) + self.s_hour * _hc(c.hour, self.peak))


class Compromise(Listener):
    """Gain makes up only part of the distance to a loudness target (speech a little louder);
    denoising rises smoothly with the noise floor; the tilt depends on class *and* hour (music
    darker at night, speech brighter in the morning)."""

    family = "compromise"

    def draw(self, r):
        self.k = r.uniform(0.3, 1.0)
        self.target = r.normal(-30.0, 5.0)
        self.speech_boost = r.uniform(0.0, 4.0)
        self.noise_mid, self.noise_width = r.uniform(-60.0, -35.0), r.uniform(2.0, 6.0)
        self.d_max = r.uniform(0.6, 1.0)
        self.tilt0 = r.normal(0.0, 1.0)
        self.music_night, self.speech_morning = r.uniform(0.5, 3.0), r.uniform(0.5, 3.0)

    def raw_ideal(self, c):
        g = self.k * (self.target - c.level_dbfs) + (self.speech_boost if c.audio_class == "speech" else 0.0)
        d = self.d_max / (1.0 + math.exp(-(c.noise_floor_dbfs - self.noise_mid) / self.noise_width))
        t = self.tilt0
        if c.audio_class == "music":
            t -= self.music_night * max(0.0, _hc(c.hour, 2.0))
        elif c.audio_class == "speech":
            t += self.speech_morning * max(0.0, _hc(c.hour, 8.0))
        return np.array([d, g, t])


class Hearing(Listener):
    """Kept aside (run once at the end). A listener with mild hearing loss: speech aims at its own
    loudness target plus a lift, music at another target, noise held down; denoising is always
    strong for noise, never much for music, and for speech ramps down between two personal SNRs;
    the tilt steps up at night (22:00-06:00, ear fatigue), plus a speech lift."""

    family = "hearing"

    def draw(self, r):
        self.t_speech, self.t_music = r.normal(-24.0, 4.0), r.normal(-30.0, 4.0)
        self.noise_gain = r.uniform(-9.0, -3.0)
        self.snr_lo = r.uniform(0.0, 15.0)
        self.snr_hi = self.snr_lo + r.uniform(5.0, 20.0)
        self.d_speech = r.uniform(0.6, 1.0)
        self.d_music = r.uniform(0.0, 0.2)
        self.t_day, self.t_night = r.normal(0.0, 1.0), r.uniform(1.0, 3.5)
        self.t_speech_lift = r.uniform(0.0, 2.0)

    def raw_ideal(self, c):
        cls, snr = c.audio_class, _snr(c)
        if cls == "speech":
            g = self.t_speech - c.level_dbfs
            x = min(1.0, max(0.0, (snr - self.snr_lo) / (self.snr_hi - self.snr_lo)))
            d = self.d_speech + (0.2 - self.d_speech) * x
        elif cls == "music":
            g, d = self.t_music - c.level_dbfs, self.d_music
        elif cls == "noise":
            g, d = self.noise_gain, 1.0
        else:
            g, d = 0.0, 0.5
        night = c.hour >= 22.0 or c.hour < 6.0
        t = self.t_day + (self.t_night if night else 0.0) + (self.t_speech_lift if cls == "speech" else 0.0)
        return np.array([d, g, t])


FAMILIES = {f.family: f for f in (Loudness, Linear, Compromise, Hearing)}
DESIGN_FAMILIES = ("loudness", "linear", "compromise")
HELD_OUT = ("hearing",)

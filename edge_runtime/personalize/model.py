"""A per-user model of which effect settings a listener accepts, learned online from feedback.

What the device recommends is a *setting*: effect parameters (denoise strength, gain, EQ tilt)
or a named preset (a fixed setting). What it knows is the *context*: the audio class, the
level and the noise floor the pipeline measures, and the time of day. The user answers
``accept``, ``reject`` or ``adjust`` (their own setting).

The model is a contextual bandit on a Bayesian linear reward model,
``P(accept | context c, setting u) ~ w . phi(c, u)``, with
``phi = [c, c (x) u, u**2, preset one-hot]`` (``u``: the parameters scaled to their tolerance,
centred on the defaults). For a fixed context the reward is a concave quadratic in ``u`` when
the ``u**2`` weights are negative, so the best parameters are closed-form,
``u_j* = (w_{c,u_j} . c) / (-2 w_{u_j^2})``: a per-user, per-context linear preference. The
prior makes the defaults the first recommendation; each feedback is one exact rank-1 update
of the posterior (``partial_fit``), so learning is online, costs microseconds, and the state
is two arrays (precision matrix and information vector). Exploration is Thompson sampling
from the posterior (``explore`` scales it; 0 recommends the posterior mean).

scikit-learn's online regressors (``SGDRegressor.partial_fit``) were the first candidate, but
they give no uncertainty, which a bandit needs to explore; the conjugate Gaussian model is
exact, order-independent and stores as plain arrays (no pickle).

Feedback: ``accept`` -> reward 1 for the recommended setting; ``reject`` -> 0; ``adjust`` ->
0 for the recommended setting and 1 for the user's.
"""
from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from ..state import StateError, load_state, require, require_array, save_state

KIND = "personalize"
SCHEMA = 1
CLASSES = ("speech", "music", "noise", "silence", "other")


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str
    lo: float
    hi: float
    default: float
    tolerance: float   # the step a listener notices; parameters are scaled by it
    unit: str = ""


PARAMS = (
    ParamSpec("denoise_strength", 0.0, 1.0, 0.5, 0.2),
    ParamSpec("gain_db", -12.0, 12.0, 0.0, 3.0, "dB"),
    ParamSpec("eq_tilt_db", -6.0, 6.0, 0.0, 1.5, "dB/oct"),
)
PARAM_NAMES = tuple(p.name for p in PARAMS)

#: name -> (denoise_strength, gain_db, eq_tilt_db)
PRESETS = {
    "neutral": (0.0, 0.0, 0.0),
    "light": (0.3, 0.0, 0.0),
    "clear_speech": (0.7, 3.0, 2.0),
    "strong_cleanup": (1.0, 4.0, 1.0),
    "music": (0.1, 0.0, -1.0),
    "warm": (0.3, -2.0, -3.0),
    "bright": (0.4, 2.0, 3.0),
    "quiet": (0.5, -6.0, 0.0),
}


@dataclasses.dataclass
class Context:
    audio_class: str = "other"
    level_dbfs: float = -30.0
    noise_floor_dbfs: float = -60.0
    hour: float = 12.0

    def __post_init__(self):
        if self.audio_class not in CLASSES:
            raise ValueError(f"audio class {self.audio_class!r} is not one of {', '.join(CLASSES)}")
        for name, v, lo, hi in (("level_dbfs", self.level_dbfs, -120, 0), ("noise_floor_dbfs", self.noise_floor_dbfs, -120, 0),
                                ("hour", self.hour, 0, 24)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi):
                raise ValueError(f"context {name}={v!r} is outside {lo}..{hi}")

    def vector(self) -> np.ndarray:
        """``[1, class one-hot, level, noise floor, sin/cos of the hour]``, each of order 1."""
        v = np.zeros(len(CONTEXT_NAMES))
        v[0] = 1.0
        v[1 + CLASSES.index(self.audio_class)] = 1.0
        v[1 + len(CLASSES)] = (self.level_dbfs + 30.0) / 15.0
        v[2 + len(CLASSES)] = (self.noise_floor_dbfs + 55.0) / 15.0
        a = 2 * math.pi * self.hour / 24.0
        v[3 + len(CLASSES)] = math.sin(a)
        v[4 + len(CLASSES)] = math.cos(a)
        return v


CONTEXT_NAMES = ("bias",) + tuple(f"class={c}" for c in CLASSES) + ("level", "noise_floor", "hour_sin", "hour_cos")


def to_unit(params) -> np.ndarray:
    return np.array([(float(v) - p.default) / p.tolerance for v, p in zip(params, PARAMS)])


def from_unit(u) -> np.ndarray:
    return np.array([min(p.hi, max(p.lo, p.default + float(x) * p.tolerance)) for x, p in zip(u, PARAMS)])


def check_params(values: dict, where: str = "parameters") -> np.ndarray:
    """A full parameter vector from ``{name: value}`` (missing names take the defaults)."""
    unknown = sorted(set(values) - set(PARAM_NAMES))
    if unknown:
        raise ValueError(f"{where}: unknown parameter {unknown[0]!r} (expected {', '.join(PARAM_NAMES)})")
    out = []
    for p in PARAMS:
        v = float(values.get(p.name, p.default))
        if not (math.isfinite(v) and p.lo <= v <= p.hi):
            raise ValueError(f"{where}: {p.name}={v:g} is outside {p.lo:g}..{p.hi:g}{' ' + p.unit if p.unit else ''}")
        out.append(v)
    return np.array(out)


class UserModel:
    """The per-user reward model: a Bayesian linear regression updated one feedback at a time."""

    def __init__(self, presets: dict | None = None, prior_precision: float = 4.0, noise: float = 0.5,
                 curvature: float = 0.5, user: str = "", reject_boost: float = 1.5):
        self.presets = dict(PRESETS if presets is None else presets)
        self.preset_names = tuple(self.presets)
        self.nc, self.np_ = len(CONTEXT_NAMES), len(PARAMS)
        self.dim = self.nc + self.nc * self.np_ + self.np_ + len(self.preset_names)
        self.noise, self.curvature, self.prior_precision = float(noise), float(curvature), float(prior_precision)
        self.user = user
        self.reject_boost = float(reject_boost)
        # prior: accept the defaults (reward 1 - curvature * |u|^2), no preset preferred
        m0 = np.zeros(self.dim)
        m0[0] = 1.0
        m0[self._sq] = -self.curvature
        self.m0 = m0
        self.A = np.eye(self.dim) * self.prior_precision       # posterior precision (without noise scaling)
        self.b = self.A @ m0                                    # information vector
        self.n = 0
        self.accepts = 0

    # ---- features ---------------------------------------------------------------------------
    @property
    def _sq(self) -> slice:
        s = self.nc + self.nc * self.np_
        return slice(s, s + self.np_)

    def features(self, ctx: Context, params, preset: str | None = None) -> np.ndarray:
        c = ctx.vector()
        u = to_unit(params)
        phi = np.zeros(self.dim)
        phi[:self.nc] = c
        phi[self.nc:self.nc + self.nc * self.np_] = np.outer(u, c).ravel()
        phi[self._sq] = u * u
        if preset is not None:
            phi[self.nc + self.nc * self.np_ + self.np_ + self.preset_names.index(preset)] = 1.0
        return phi

    # ---- learning ----------------------------------------------------------------------------
    def partial_fit(self, X, y, sample_weight=None) -> "UserModel":
        """Rank-k update with feature rows ``X`` and rewards ``y`` (sklearn's partial_fit shape)."""
        X = np.atleast_2d(np.asarray(X, np.float64))
        y = np.atleast_1d(np.asarray(y, np.float64))
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, np.float64)
        self.A += (X * w[:, None]).T @ X
        self.b += X.T @ (w * y)
        return self

    def mean(self) -> np.ndarray:
        return np.linalg.solve(self.A, self.b)

    def sample(self, rng: np.random.Generator, explore: float = 1.0) -> np.ndarray:
        m = self.mean()
        if explore <= 0:
            return m
        L = np.linalg.cholesky(np.linalg.inv(self.A))
        return m + explore * self.noise * (L @ rng.standard_normal(self.dim))

    def feedback(self, ctx: Context, action: str, params=None, preset: str | None = None, adjusted=None) -> None:
        """Learn from one answer: ``action`` is accept, reject or adjust (with ``adjusted`` params)."""
        if action not in ("accept", "reject", "adjust"):
            raise ValueError(f"feedback action {action!r} is not accept, reject or adjust")
        if preset is not None:
            if preset not in self.presets:
                raise ValueError(f"preset {preset!r} is not known (expected one of {', '.join(self.preset_names)})")
            params = self.presets[preset]
        if params is None:
            raise ValueError("feedback needs the recommended parameters or a preset")
        rows, ys = [self.features(ctx, params, preset)], [1.0 if action == "accept" else 0.0]
        if action == "adjust":
            if adjusted is None:
                raise ValueError("adjust feedback needs the user's parameters")
            rows.append(self.features(ctx, adjusted))
            ys.append(1.0)
        self.partial_fit(np.array(rows), np.array(ys))
        self.n += 1
        self.accepts += action == "accept"

    # ---- recommending -------------------------------------------------------------------------
    def best_params(self, ctx: Context, w: np.ndarray) -> np.ndarray:
        c = ctx.vector()
        lin = w[self.nc:self.nc + self.nc * self.np_].reshape(self.np_, self.nc) @ c
        quad = np.minimum(w[self._sq], -0.05)            # keep it concave: a finite optimum
        return from_unit(np.clip(lin / (-2.0 * quad), -8, 8))

    def _weights(self, ctx: Context, rng, explore: float, score_best) -> np.ndarray:
        """Posterior mean, or a Thompson sample whose spread grows when even the best setting
        is predicted to be rejected: a listener who only ever says "no" (never adjusts) gives
        no direction, and a small spread would keep offering the same setting."""
        m = self.mean()
        if rng is None or explore <= 0:
            return m
        p_best = float(score_best(m))
        scale = explore + self.reject_boost * max(0.0, 0.5 - p_best) * 2.0
        return self.sample(rng, scale)

    def recommend(self, ctx: Context, rng: np.random.Generator | None = None, explore: float = 0.0) -> np.ndarray:
        """Parameters with the highest (sampled) acceptance in ``ctx``."""
        best = lambda w: self.features(ctx, self.best_params(ctx, w)) @ w  # noqa: E731
        return self.best_params(ctx, self._weights(ctx, rng, explore, best))

    def rank_presets(self, ctx: Context, rng: np.random.Generator | None = None,
                     explore: float = 0.0) -> list[tuple[str, float]]:
        """Presets by predicted acceptance in ``ctx``, best first."""
        score = lambda w, n: float(self.features(ctx, self.presets[n], n) @ w)  # noqa: E731
        w = self._weights(ctx, rng, explore, lambda m: max(score(m, n) for n in self.preset_names))
        return sorted(((n, score(w, n)) for n in self.preset_names), key=lambda s: -s[1])

    # ---- state -------------------------------------------------------------------------------
    def save(self, path) -> None:
        meta = {"user": self.user, "presets": {k: [float(x) for x in v] for k, v in self.presets.items()},
                "params": [dataclasses.asdict(p) for p in PARAMS], "context": list(CONTEXT_NAMES),
                "noise": self.noise, "curvature": self.curvature, "prior_precision": self.prior_precision,
                "n": self.n, "accepts": self.accepts}
        save_state(path, KIND, SCHEMA, meta, {"A": self.A, "b": self.b})

    @classmethod
    def load(cls, path) -> "UserModel":
        meta, arrays = load_state(path, KIND, SCHEMA)
        presets = require(path, meta, "presets", dict, "a table of preset name -> 3 parameters")
        try:
            presets = {str(k): tuple(float(x) for x in check_params(dict(zip(PARAM_NAMES, v)), f"preset {k}"))
                       for k, v in presets.items()}
        except (TypeError, ValueError) as e:
            raise StateError(f"{path}: state presets: {e}") from None
        if require(path, meta, "context", list, "the context feature names") != list(CONTEXT_NAMES):
            raise StateError(f"{path}: state context features {meta['context']} differ from this version's "
                             f"{list(CONTEXT_NAMES)}")
        if [p.get("name") for p in meta.get("params", [])] != list(PARAM_NAMES):
            raise StateError(f"{path}: state parameters {[p.get('name') for p in meta.get('params', [])]} differ "
                             f"from this version's {list(PARAM_NAMES)}")
        m = cls(presets, float(require(path, meta, "prior_precision", (int, float), "a number")),
                float(require(path, meta, "noise", (int, float), "a number")),
                float(require(path, meta, "curvature", (int, float), "a number")), str(meta.get("user", "")))
        m.A = require_array(path, arrays, "A", (m.dim, m.dim)).astype(np.float64)
        m.b = require_array(path, arrays, "b", (m.dim,)).astype(np.float64)
        if not np.allclose(m.A, m.A.T) or np.linalg.eigvalsh(m.A).min() <= 0:
            raise StateError(f"{path}: state array 'A' is not a symmetric positive-definite precision matrix")
        m.n = int(require(path, meta, "n", int, "a feedback count"))
        m.accepts = int(meta.get("accepts", 0))
        return m


USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def check_user(user: str) -> str:
    if not isinstance(user, str) or not USER_RE.match(user):
        raise ValueError(f"user name {user!r} is not valid (expected 1-64 characters: letters, digits, _ . @ -, "
                         "starting with a letter or digit)")
    return user

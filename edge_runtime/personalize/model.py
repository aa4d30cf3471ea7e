"""A per-user model of the effect settings a listener wants, learned online from feedback.

What the device recommends is a *setting*: effect parameters (denoise strength, gain, EQ tilt)
or a named preset (a fixed setting). What it knows is the *context*: the audio class, the
level and the noise floor the pipeline measures (their difference is the SNR), and the time of
day. The listener answers ``accept``, ``reject`` or ``adjust`` (moves the sliders).

**What is learned** is the listener's *ideal setting* as a function of the context, one
regression per parameter (in tolerance steps, the change a listener notices)::

    ideal_j(c) = w_j . phi(c),   phi = [1, level hats, SNR hats, hour harmonics,
                                        per class: 1, level, SNR, hour sin/cos]

The hats are piecewise-linear ("tent") functions at 10 dB level and noise-floor knots and 5 dB
SNR knots, so
``phi`` can represent a loudness target (gain = target - level, with its knee at the range
limit), a denoising threshold at a personal SNR, and class- and hour-dependent tilts. The
weights are Bayesian: a Gaussian prior (the **population**, see :class:`Population`) and a
Gaussian likelihood of each answer:

* ``adjust``: the slider position is an observation of the ideal (noise ``noise_adjust``
  steps); a parameter the listener left where it was counts as accepted;
* ``accept``: the ideal lies within one step of the offered value, an observation with the
  variance of a uniform on +-1 step (1/3);
* observations far outside the posterior's prediction (> ``outlier_z`` standard deviations)
  are down-weighted (a noisy answer, a slip of the finger);
* ``reject``: no direction, only "at least one parameter is a step or more off". Kept in a
  memory of the last :data:`REJECT_MEMORY` rejects; recommending then weighs samples of the
  posterior by how well they explain those rejects, so a listener who only says "no" still
  moves the recommendation.

The recommendation is the setting most likely to be accepted under the posterior (with no
rejects in memory: the posterior mean; otherwise the best of the mean and 128 posterior
samples, each scored by the reject-weighted samples lying within a step of it); ``explore``
is the probability of offering a posterior sample instead (Thompson sampling).

A user's state holds only the sufficient statistics of their answers (``X'WX``, ``X'Wy`` per
parameter: 3 x 56 x 56 + 3 x 56 numbers) and the reject memory, not the prior: a new
population prior, fitted across users by :meth:`Population.fit` (empirical Bayes: an EM of the
users' posteriors), applies to every user at once, and a new user's first recommendation is
the crowd's. Why not the round-1 reward model: ``docs/personalize.md``.
"""
from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from ..state import StateError, load_state, read_header, require, require_array, save_state

KIND = "personalize"
SCHEMA = 2
POPULATION_KIND = "personalize-population"
POPULATION_SCHEMA = 1
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
_LO = np.array([(p.lo - p.default) / p.tolerance for p in PARAMS])
_HI = np.array([(p.hi - p.default) / p.tolerance for p in PARAMS])

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

LEVEL_KNOTS = (-60.0, -50.0, -40.0, -30.0, -20.0, -10.0, 0.0)
SNR_KNOTS = tuple(float(x) for x in range(-5, 50, 5))
NOISE_KNOTS = tuple(float(x) for x in range(-90, -10, 10))
CLASS_TERMS = ("1", "level", "snr", "hour_sin", "hour_cos")
FEATURE_NAMES = (("bias",) + tuple(f"level_hat{k:g}" for k in LEVEL_KNOTS) + tuple(f"snr_hat{k:g}" for k in SNR_KNOTS)
                 + tuple(f"noise_hat{k:g}" for k in NOISE_KNOTS)
                 + ("hour_sin", "hour_cos", "hour_sin2", "hour_cos2")
                 + tuple(f"{c}*{t}" for c in CLASSES for t in CLASS_TERMS))
N_FEATURES = len(FEATURE_NAMES)
N_PARAMS = len(PARAMS)
REJECT_MEMORY = 64
N_SAMPLES = 128


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
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= hi):
                raise ValueError(f"context {name}={v!r} is outside {lo}..{hi}")

    @property
    def snr_db(self) -> float:
        return self.level_dbfs - self.noise_floor_dbfs


def _hats(x: float, knots, out: np.ndarray) -> None:
    """Tent functions at ``knots`` (``x`` clamped to their range): a piecewise-linear basis."""
    x = min(knots[-1], max(knots[0], x))
    i = min(len(knots) - 2, int(np.searchsorted(knots, x, side="right")) - 1)
    t = (x - knots[i]) / (knots[i + 1] - knots[i])
    out[i] = 1.0 - t
    out[i + 1] = t


_L0, _S0 = 1, 1 + len(LEVEL_KNOTS)
_N0 = _S0 + len(SNR_KNOTS)
_H0 = _N0 + len(NOISE_KNOTS)
_C0 = _H0 + 4


def features(ctx: Context) -> np.ndarray:
    """``phi(ctx)``: the :data:`FEATURE_NAMES` values, each of order 1."""
    v = np.zeros(N_FEATURES)
    v[0] = 1.0
    _hats(ctx.level_dbfs, LEVEL_KNOTS, v[_L0:_S0])
    _hats(ctx.snr_db, SNR_KNOTS, v[_S0:_N0])
    _hats(ctx.noise_floor_dbfs, NOISE_KNOTS, v[_N0:_H0])
    a = 2 * math.pi * ctx.hour / 24.0
    v[_H0:_C0] = math.sin(a), math.cos(a), math.sin(2 * a), math.cos(2 * a)
    k = _C0 + len(CLASS_TERMS) * CLASSES.index(ctx.audio_class)
    lv = (min(0.0, max(-60.0, ctx.level_dbfs)) + 30.0) / 15.0
    sn = (min(45.0, max(-5.0, ctx.snr_db)) - 20.0) / 15.0
    v[k:k + len(CLASS_TERMS)] = 1.0, lv, sn, math.sin(a), math.cos(a)
    return v


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


def _params_array(params, where: str) -> np.ndarray:
    a = np.asarray(params, dtype=np.float64).reshape(-1)
    if a.shape != (N_PARAMS,):
        raise ValueError(f"{where}: {a.size} values, expected {N_PARAMS} ({', '.join(PARAM_NAMES)})")
    return check_params(dict(zip(PARAM_NAMES, a)), where)


def _tri_inv(L: np.ndarray) -> np.ndarray:
    """The inverse of a lower-triangular matrix (LAPACK's dtrtri where SciPy is installed)."""
    try:
        from scipy.linalg import lapack
    except ImportError:  # pragma: no cover - scikit-learn brings SciPy
        return np.linalg.solve(L, np.eye(len(L)))
    R, info = lapack.dtrtri(L, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"dtrtri failed ({info})")
    return R


# ---- the population prior -----------------------------------------------------------------------
def _generic_cov() -> np.ndarray:
    """The prior before any population is learned, in tolerance steps: the defaults, a smooth
    function of level and SNR (neighbouring knots correlated), smaller hour and class terms."""
    sd = np.zeros(N_FEATURES)
    corr = np.eye(N_FEATURES)
    sd[0] = 1.5
    for lo, hi, length in ((_L0, _S0, 1.5), (_S0, _N0, 2.0), (_N0, _H0, 1.5)):
        n = hi - lo
        i = np.arange(n)
        corr[lo:hi, lo:hi] = np.exp(-0.5 * ((i[:, None] - i[None, :]) / length) ** 2)
        sd[lo:hi] = 1.0
    sd[_H0:_H0 + 2], sd[_H0 + 2:_C0] = 0.6, 0.3
    sd[_C0:] = np.tile([0.8, 0.4, 0.4, 0.4, 0.4], len(CLASSES))
    block = corr * np.outer(sd, sd) + 1e-6 * np.eye(N_FEATURES)
    return np.kron(np.eye(N_PARAMS), block)


def _spd(path, name: str, a: np.ndarray) -> np.ndarray:
    if not np.allclose(a, a.T, rtol=1e-9, atol=1e-9):
        raise StateError(f"{path}: state array {name!r} is not symmetric")
    try:
        np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        raise StateError(f"{path}: state array {name!r} is not positive-definite") from None
    return a


class Population:
    """The prior over every user's weights: ``N(mean, cov)``, fitted across users.

    ``Population()`` is the generic prior (the defaults everywhere); :meth:`fit` learns the
    crowd: the mean weights (what listeners want on average, e.g. their loudness target) and
    the covariance (how they differ, e.g. mostly by a constant gain offset), so one answer of
    a new user moves the whole function the way listeners usually differ.
    """

    def __init__(self, mean: np.ndarray | None = None, cov: np.ndarray | None = None, n_users: int = 0):
        self.mean = np.zeros((N_PARAMS, N_FEATURES)) if mean is None else np.asarray(mean, np.float64)
        self.cov = _generic_cov() if cov is None else np.asarray(cov, np.float64)
        self.n_users = int(n_users)
        self.precision = np.linalg.inv(self.cov)
        self.precision = 0.5 * (self.precision + self.precision.T)
        self.h = self.precision @ self.mean.ravel()

    @classmethod
    def fit(cls, users, iterations: int = 30, shrink: float = 5.0, base: "Population | None" = None) -> "Population":
        """Empirical Bayes over ``users`` (:class:`UserModel` s): EM of the prior's mean and
        covariance, the covariance shrunk towards ``base``'s (default: the generic prior) with
        the weight of ``shrink`` users."""
        base = base or cls()
        users = [u for u in users if u.n > 0]
        if not users:
            raise ValueError("fitting a population needs at least one user with feedback")
        mu, cov = base.mean.ravel().copy(), base.cov.copy()
        for _ in range(iterations):
            prec = np.linalg.inv(cov)
            h0 = prec @ mu
            ms, spread = [], np.zeros_like(cov)
            for u in users:
                P = prec + u.data_precision()
                C = np.linalg.inv(P)
                ms.append(C @ (h0 + u.r.ravel()))
                spread += C
            ms = np.array(ms)
            mu = ms.mean(axis=0)
            d = ms - mu
            cov = (spread + d.T @ d + shrink * base.cov) / (len(users) + shrink)
            cov = 0.5 * (cov + cov.T)
        return cls(mu.reshape(N_PARAMS, N_FEATURES), cov, len(users))

    def predict(self, ctx: Context) -> np.ndarray:
        """The crowd's ideal setting for ``ctx`` (parameters in their units)."""
        return from_unit(self.mean @ features(ctx))

    def save(self, path) -> None:
        meta = {"features": list(FEATURE_NAMES), "params": list(PARAM_NAMES), "n_users": self.n_users}
        save_state(path, POPULATION_KIND, POPULATION_SCHEMA, meta, {"mean": self.mean, "cov": self.cov})

    @classmethod
    def load(cls, path) -> "Population":
        meta, arrays = load_state(path, POPULATION_KIND, POPULATION_SCHEMA)
        _check_names(path, meta)
        n_users = require(path, meta, "n_users", int, "a user count")
        if n_users < 0:
            raise StateError(f"{path}: state n_users = {n_users} (expected a user count >= 0)")
        mean = require_array(path, arrays, "mean", (N_PARAMS, N_FEATURES)).astype(np.float64)
        cov = _spd(path, "cov", require_array(path, arrays, "cov", (N_PARAMS * N_FEATURES,) * 2).astype(np.float64))
        return cls(mean, cov, n_users)


def _check_names(path, meta) -> None:
    feats = require(path, meta, "features", list, "the context feature names")
    if feats != list(FEATURE_NAMES):
        raise StateError(f"{path}: state context features ({len(feats)}: {feats[:3]}...) differ from this "
                         f"version's ({len(FEATURE_NAMES)}: {list(FEATURE_NAMES[:3])}...)")
    names = [p.get("name") if isinstance(p, dict) else p for p in require(path, meta, "params", list, "the parameter names")]
    if names != list(PARAM_NAMES):
        raise StateError(f"{path}: state parameters {names} differ from this version's {list(PARAM_NAMES)}")


# ---- one user -----------------------------------------------------------------------------------
class UserModel:
    """One listener's answers as sufficient statistics; the posterior under a :class:`Population`."""

    def __init__(self, presets: dict | None = None, user: str = "", population: Population | None = None,
                 noise_adjust: float = 0.35, outlier_z: float = 3.0, reject_noise: float = 0.1):
        self.presets = {k: tuple(float(x) for x in v) for k, v in (PRESETS if presets is None else presets).items()}
        self.preset_names = tuple(self.presets)
        self.user = user
        self.population = population or Population()
        self.noise_adjust, self.outlier_z, self.reject_noise = float(noise_adjust), float(outlier_z), float(reject_noise)
        self.S = np.zeros((N_PARAMS, N_FEATURES, N_FEATURES))    # sum of w phi phi' / var, per parameter
        self.r = np.zeros((N_PARAMS, N_FEATURES))                # sum of w phi y / var
        self.rej_phi = np.zeros((0, N_FEATURES))                  # the last rejects: context features
        self.rej_u = np.zeros((0, N_PARAMS))                      # ... and the setting (tolerance steps)
        self.n = self.accepts = self.adjusts = self.rejects = 0
        self._post = None

    # ---- posterior -----------------------------------------------------------------------------
    def data_precision(self) -> np.ndarray:
        P = np.zeros((N_PARAMS * N_FEATURES,) * 2)
        for j in range(N_PARAMS):
            s = slice(j * N_FEATURES, (j + 1) * N_FEATURES)
            P[s, s] = self.S[j]
        return P

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean weights (P, F), R)`` with ``R' R`` the posterior covariance (``R`` = the inverse
        of the precision's Cholesky factor), computed once per answer."""
        if self._post is None:
            pop = self.population
            L = np.linalg.cholesky(pop.precision + self.data_precision())
            R = _tri_inv(L)
            m = R.T @ (R @ (pop.h + self.r.ravel()))
            self._post = (m.reshape(N_PARAMS, N_FEATURES), R)
        return self._post

    def set_population(self, population: Population) -> None:
        self.population = population
        self._post = None

    def _predict_u(self, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance of the ideal (tolerance steps) at features ``phi``."""
        m, R = self.posterior()
        v = R.reshape(len(R), N_PARAMS, N_FEATURES) @ phi                # (P*F, P)
        return m @ phi, np.einsum("ip,ip->p", v, v)

    def _samples(self, rng: np.random.Generator, k: int) -> np.ndarray:
        """``k`` posterior weight samples, shape (k, P, F)."""
        m, R = self.posterior()
        z = rng.standard_normal((k, len(R)))
        return m[None] + (z @ R).reshape(k, N_PARAMS, N_FEATURES)

    def _sample_weights(self, W: np.ndarray) -> np.ndarray:
        """How well each sample explains the remembered rejects (a reject of a setting within a
        step of the sample's ideal is a noisy answer: likelihood ``reject_noise``)."""
        if not len(self.rej_u):
            return np.full(len(W), 1.0 / len(W))
        pred = np.clip(np.einsum("kpf,rf->krp", W, self.rej_phi), _LO, _HI)        # (k, R, P)
        inside = np.all(np.abs(pred - self.rej_u[None]) <= 1.0, axis=2)            # (k, R)
        logw = inside.sum(axis=1) * math.log(self.reject_noise)
        w = np.exp(logw - logw.max())
        return w / w.sum()

    # ---- learning ------------------------------------------------------------------------------
    def _observe(self, phi: np.ndarray, y: np.ndarray, var: np.ndarray) -> None:
        """Add observations ``y`` (tolerance steps, one per parameter) of the ideal at ``phi``,
        down-weighted where they lie more than ``outlier_z`` predictive sd from the posterior."""
        mean, pvar = self._predict_u(phi)
        z = np.abs(y - mean) / np.sqrt(pvar + var)
        w = np.where(z > self.outlier_z, (self.outlier_z / np.maximum(z, 1e-12)) ** 2, 1.0) / var
        for j in range(N_PARAMS):
            self.S[j] += w[j] * np.outer(phi, phi)
            self.r[j] += w[j] * y[j] * phi
        self._post = None

    def feedback(self, ctx: Context, action: str, params=None, preset: str | None = None, adjusted=None) -> None:
        """Learn from one answer: ``action`` is accept, reject or adjust (with ``adjusted`` params)."""
        if action not in ("accept", "reject", "adjust"):
            raise ValueError(f"feedback action {action!r} is not accept, reject or adjust")
        if not isinstance(ctx, Context):
            raise ValueError(f"feedback context is a {type(ctx).__name__}, expected a personalize Context")
        if preset is not None:
            if preset not in self.presets:
                raise ValueError(f"preset {preset!r} is not known (expected one of {', '.join(self.preset_names)})")
            params = self.presets[preset]
        if params is None:
            raise ValueError("feedback needs the recommended parameters or a preset")
        offered = to_unit(_params_array(params, "feedback parameters"))
        phi = features(ctx)
        if action == "adjust":
            if adjusted is None:
                raise ValueError("adjust feedback needs the user's parameters")
            mine = to_unit(_params_array(adjusted, "adjusted parameters"))
            moved = np.abs(mine - offered) > 1e-6
            self._observe(phi, mine, np.where(moved, self.noise_adjust ** 2, 1.0 / 3.0))
            self.adjusts += 1
        elif action == "accept":
            self._observe(phi, offered, np.full(N_PARAMS, 1.0 / 3.0))   # uniform within +-1 step
            self.accepts += 1
        else:
            self.rej_phi = np.vstack([self.rej_phi, phi])[-REJECT_MEMORY:]
            self.rej_u = np.vstack([self.rej_u, offered])[-REJECT_MEMORY:]
            self.rejects += 1
        self.n += 1

    # ---- recommending --------------------------------------------------------------------------
    def _rng(self, rng, seed: int) -> np.random.Generator:
        return rng if rng is not None else np.random.default_rng([int(seed), self.n])

    def recommend(self, ctx: Context, rng: np.random.Generator | None = None, explore: float = 0.0,
                  seed: int = 0) -> np.ndarray:
        """The setting most likely to be accepted in ``ctx``; with probability ``explore`` a
        posterior sample instead. Without ``rng`` the answer depends only on the state and
        ``seed``."""
        if not isinstance(ctx, Context):
            raise ValueError(f"recommend context is a {type(ctx).__name__}, expected a personalize Context")
        if not (isinstance(explore, (int, float)) and 0.0 <= explore <= 1.0):
            raise ValueError(f"explore={explore!r} is outside 0..1")
        phi = features(ctx)
        m, _ = self.posterior()
        mean = np.clip(m @ phi, _LO, _HI)
        r = self._rng(rng, seed)
        thompson = explore > 0 and r.random() < explore
        if not len(self.rej_u) and not thompson:
            return from_unit(mean)
        W = self._samples(r, N_SAMPLES)
        wt = self._sample_weights(W)
        preds = np.clip(W @ phi, _LO, _HI)                                          # (k, P)
        if thompson:
            return from_unit(preds[r.choice(len(wt), p=wt)])
        cands = np.vstack([mean[None], preds])
        inside = np.all(np.abs(cands[:, None, :] - preds[None, :, :]) <= 1.0, axis=2)   # (1+k, k)
        return from_unit(cands[int(np.argmax(inside @ wt))])

    def rank_presets(self, ctx: Context, rng: np.random.Generator | None = None, explore: float = 0.0,
                     seed: int = 0) -> list[tuple[str, float]]:
        """Presets by their probability of being accepted in ``ctx`` (every parameter within a
        step of the ideal, under the reject-weighted posterior), best first."""
        if not isinstance(ctx, Context):
            raise ValueError(f"rank_presets context is a {type(ctx).__name__}, expected a personalize Context")
        r = self._rng(rng, seed)
        W = self._samples(r, 4 * N_SAMPLES)
        wt = self._sample_weights(W)
        preds = np.clip(W @ features(ctx), _LO, _HI)
        scores = {}
        for name in self.preset_names:
            inside = np.all(np.abs(preds - to_unit(self.presets[name])) <= 1.0, axis=1)
            scores[name] = float(inside @ wt)
        if explore > 0 and r.random() < explore:
            k = r.choice(len(wt), p=wt)
            near = {n: -float(np.abs(preds[k] - to_unit(p)).max()) for n, p in self.presets.items()}
            first = max(near, key=near.get)
            return [(first, scores[first])] + sorted(((n, s) for n, s in scores.items() if n != first),
                                                      key=lambda s: -s[1])
        return sorted(scores.items(), key=lambda s: -s[1])

    # ---- state ---------------------------------------------------------------------------------
    def save(self, path) -> None:
        meta = {"user": self.user, "presets": {k: [float(x) for x in v] for k, v in self.presets.items()},
                "params": [dataclasses.asdict(p) for p in PARAMS], "features": list(FEATURE_NAMES),
                "noise_adjust": self.noise_adjust, "outlier_z": self.outlier_z, "reject_noise": self.reject_noise,
                "n": self.n, "accepts": self.accepts, "adjusts": self.adjusts, "rejects": self.rejects}
        save_state(path, KIND, SCHEMA, meta, {"S": self.S, "r": self.r, "rej_phi": self.rej_phi, "rej_u": self.rej_u})

    @classmethod
    def load(cls, path, population: Population | None = None) -> "UserModel":
        header = read_header(path)
        if header.get("kind") == KIND and header.get("schema") == 1:
            n = header.get("meta", {}).get("n") if isinstance(header.get("meta"), dict) else None
            raise StateError(f"{path}: a round-1 personalize state (schema 1, {n!r} feedbacks) cannot be migrated: "
                             "its reward model keeps no answers to relearn from; move the file aside to start "
                             "this user again")
        meta, arrays = load_state(path, KIND, SCHEMA)
        presets = require(path, meta, "presets", dict, "a table of preset name -> 3 parameters")
        try:
            presets = {str(k): tuple(float(x) for x in _params_array(v, f"preset {k}")) for k, v in presets.items()}
        except (TypeError, ValueError) as e:
            raise StateError(f"{path}: state presets: {e}") from None
        _check_names(path, meta)
        user = require(path, meta, "user", str, "a user name")
        hyper = {}
        for key, lo, hi in (("noise_adjust", 1e-3, 10.0), ("outlier_z", 0.5, 100.0), ("reject_noise", 1e-6, 1.0)):
            v = require(path, meta, key, (int, float), f"a number in {lo:g}..{hi:g}")
            if not lo <= v <= hi:
                raise StateError(f"{path}: state {key} = {v!r} (expected a number in {lo:g}..{hi:g})")
            hyper[key] = float(v)
        counts = {}
        for key in ("n", "accepts", "adjusts", "rejects"):
            v = require(path, meta, key, int, "a feedback count >= 0")
            if v < 0:
                raise StateError(f"{path}: state {key} = {v} (expected a feedback count >= 0)")
            counts[key] = v
        if counts["accepts"] + counts["adjusts"] + counts["rejects"] != counts["n"]:
            raise StateError(f"{path}: state counts disagree: accepts {counts['accepts']} + adjusts "
                             f"{counts['adjusts']} + rejects {counts['rejects']} != n {counts['n']}")
        m = cls(presets, user, population, **hyper)
        m.S = require_array(path, arrays, "S", (N_PARAMS, N_FEATURES, N_FEATURES)).astype(np.float64)
        m.r = require_array(path, arrays, "r", (N_PARAMS, N_FEATURES)).astype(np.float64)
        m.rej_phi = require_array(path, arrays, "rej_phi", (None, N_FEATURES)).astype(np.float64)
        m.rej_u = require_array(path, arrays, "rej_u", (len(m.rej_phi), N_PARAMS)).astype(np.float64)
        if len(m.rej_u) > REJECT_MEMORY:
            raise StateError(f"{path}: state holds {len(m.rej_u)} rejects (at most {REJECT_MEMORY})")
        for j in range(N_PARAMS):
            if not np.allclose(m.S[j], m.S[j].T) or np.linalg.eigvalsh(m.S[j]).min() < -1e-8 * max(1.0, np.abs(m.S[j]).max()):
                raise StateError(f"{path}: state array 'S' [{PARAM_NAMES[j]}] is not a symmetric positive "
                                 "semi-definite matrix")
        m.n, m.accepts, m.adjusts, m.rejects = counts["n"], counts["accepts"], counts["adjusts"], counts["rejects"]
        return m


USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def check_user(user: str) -> str:
    if not isinstance(user, str) or not USER_RE.match(user):
        raise ValueError(f"user name {user!r} is not valid (expected 1-64 characters: letters, digits, _ . @ -, "
                         "starting with a letter or digit)")
    return user

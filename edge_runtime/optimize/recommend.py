"""Preset recommendation: presets ranked for a listener and a context, learned from their answers.

**Library** (:class:`PresetLibrary`, ``edge-runtime preset index DIR``): every preset file of a
folder, rendered (one note, 1 s) and described by :func:`~edge_runtime.optimize.features.preset_features`
(log-mel statistics, loudness and brightness envelopes, pitch, attack); the vectors are
standardised over the library and projected on their first ``dim`` principal axes: the preset's
*embedding*. Written as a state file (no pickle, SHA-256 checked) beside the presets.
Nearest neighbours are found by brute force over the embeddings (a library of a few thousand
presets is a (n x 16) matrix-vector product, ~10 us; no index structure needed).

**Listener model** (:class:`Recommender`): Bayesian like the round-1 personalization model
(:mod:`edge_runtime.personalize.model`): a population prior that every answer updates, the state
only the answers, saved atomically per listener. An answer is ``accept`` (+1) or ``reject`` (-1)
of one preset in one context. The listener's expected answer is a Gaussian process over the
presets: its prior mean the population's (:class:`Population`: the kernel-smoothed mean answer per
preset and context across listeners), its covariance an RBF kernel on the embeddings (length:
half the median distance between presets) times ``CROSS + (1 - CROSS) [same context]``, so an
answer moves the presets that sound like it, most in its own context. With n answers the
posterior is one n x n Cholesky solve (50 answers: ~1 ms per recommendation).

**Ranking** (:meth:`Recommender.recommend`): candidates are the nearest neighbours of the presets
this listener accepted in this context (the last :data:`SEEDS` of them, :data:`NEIGHBOURS` each)
plus the model's best anywhere; the best by posterior mean not yet shown to this listener is
offered (``EXPLORE`` > 0 adds Thompson-style noise). A new listener gets the population's
ranking, which is what a non-personalized recommender offers everyone;
``firmware_tools/eval/eval_presets.py`` measures both on simulated listeners.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..state import StateError, load_state, require, require_array, save_state

__all__ = ["PresetLibrary", "Recommender", "Population", "CONTEXTS", "index_folder"]

LIBRARY_KIND, LIBRARY_SCHEMA = "preset-library", 1
USER_KIND, USER_SCHEMA = "preset-recommender", 1
POP_KIND, POP_SCHEMA = "preset-population", 1
CONTEXTS = ("lead", "bass", "pad", "fx")
DIM = 16
SEEDS, NEIGHBOURS, POP_TOP = 5, 12, 24
# measured on simulated listeners (firmware_tools/eval/eval_presets.py, tuning seed 100, not the
# reported seeds): prior sd 1.0 -> 0.5 raised acceptance after 40 answers from 32 % to 44 %; a
# Thompson noise of 0.3 posterior sd lowered it to 41 %, so the offer is the posterior mean's best
# unseen preset (a new preset each time explores by itself)
PRIOR_SD, NOISE_SD = 0.5, 1.0     # the answer's prior spread around the population's, and its noise
CROSS = 0.5                       # how much an answer in one context tells about another (kernel share)
EXPLORE = 0.0                     # Thompson-style noise on the ranking, in posterior standard deviations


class PresetLibrary:
    """Preset names, their unit-cube parameters and embeddings (n x dim, float32)."""

    def __init__(self, names: Sequence[str], embedding: np.ndarray, params: np.ndarray | None = None,
                 chain: str = "synth", path: str = ""):
        self.names = [str(n) for n in names]
        self.embedding = np.ascontiguousarray(embedding, np.float32)
        self.params = None if params is None else np.ascontiguousarray(params, np.float32)
        self.chain, self.path = chain, path
        if self.embedding.ndim != 2 or self.embedding.shape[0] != len(self.names) or not self.names:
            raise ConfigError(f"{path or 'preset library'}: {len(self.names)} names but embedding "
                              f"{self.embedding.shape}; expected one row per preset")
        self._index = {n: i for i, n in enumerate(self.names)}
        if len(self._index) != len(self.names):
            raise ConfigError(f"{path or 'preset library'}: preset names repeat")

    def __len__(self) -> int:
        return len(self.names)

    def index_of(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise ConfigError(f"{self.path or 'preset library'}: no preset named {name!r} "
                              f"(it has {len(self.names)}: {', '.join(self.names[:5])}...)") from None

    @classmethod
    def from_features(cls, names, features: np.ndarray, params=None, chain="synth", dim: int = DIM):
        """Standardise ``features`` (n x F) over the library and keep the first ``dim`` principal
        axes, not whitened: distances stay those of the standardised features (whitening gave the
        weak axes, mostly noise, the weight of the strong ones: neighbours of a pad were leads)."""
        f = np.asarray(features, np.float64)
        z = (f - f.mean(axis=0)) / np.maximum(f.std(axis=0), 1e-6)
        _, _, vt = np.linalg.svd(z, full_matrices=False)
        k = min(dim, vt.shape[0])
        return cls(names, z @ vt[:k].T / np.sqrt(z.shape[1]), params, chain)

    def neighbours(self, i: int, k: int) -> np.ndarray:
        """The ``k`` presets nearest to preset ``i`` in the embedding (itself excluded), nearest first."""
        d = np.sum((self.embedding - self.embedding[i]) ** 2, axis=1)
        d[i] = np.inf
        k = min(k, len(d) - 1)
        part = np.argpartition(d, k)[:k]
        return part[np.argsort(d[part])]

    def save(self, path) -> None:
        save_state(path, LIBRARY_KIND, LIBRARY_SCHEMA, {"chain": self.chain, "names": self.names},
                   {"embedding": self.embedding, **({} if self.params is None else {"params": self.params})})

    @classmethod
    def load(cls, path) -> "PresetLibrary":
        meta, arrays = load_state(path, LIBRARY_KIND, LIBRARY_SCHEMA)
        names = require(path, meta, "names", (list,), "a list of preset names")
        emb = require_array(path, arrays, "embedding")
        if emb.ndim != 2 or emb.shape[0] != len(names):
            raise StateError(f"{path}: embedding {emb.shape} for {len(names)} presets; expected one row each")
        return cls(names, emb, arrays.get("params"), str(meta.get("chain", "synth")), str(path))


def index_folder(folder, duration_s: float = 1.0, dim: int = DIM, out=None) -> PresetLibrary:
    """Render every ``*.toml`` preset of ``folder`` and write its library (``<folder>/library.state``)."""
    from .features import preset_features
    from .preset import read_preset

    folder = Path(folder)
    files = sorted(folder.glob("*.toml"))
    if len(files) < 2:
        raise ConfigError(f"{folder}: {len(files)} preset file(s) (*.toml); a library needs at least 2")
    names, feats, params, chain_name = [], [], [], None
    for f in files:
        p = read_preset(f)
        if p.chain == "effects":
            raise ConfigError(f"{f}: an effects preset has no sound of its own to index; index generator presets "
                              "(synth, ddsp)")
        if chain_name is None:
            chain_name = p.chain
        elif p.chain != chain_name:
            raise ConfigError(f"{f}: chain {p.chain!r}, but {files[0].name} is {chain_name!r}; one chain per library")
        chain = p.make_chain()
        audio = chain.render(p.params, int(duration_s * chain.sample_rate))
        names.append(f.stem)
        feats.append(preset_features(audio, chain.sample_rate))
        params.append(chain.space.encode(p.params))
    lib = PresetLibrary.from_features(names, np.array(feats), np.array(params), chain_name, dim)
    lib.path = str(out or folder / "library.state")
    lib.save(lib.path)
    return lib


class Population:
    """The prior every listener starts from: how well each preset does in each context across
    listeners (``prior``: n_presets x n_contexts, in answer units -1..1), smoothed over the
    embedding so a preset few people were shown borrows from its neighbours."""

    def __init__(self, prior: np.ndarray, contexts: Sequence[str] = CONTEXTS):
        self.prior = np.asarray(prior, np.float64)
        self.contexts = tuple(contexts)

    @classmethod
    def flat(cls, n_presets: int, contexts: Sequence[str] = CONTEXTS) -> "Population":
        return cls(np.zeros((n_presets, len(contexts))), contexts)

    @classmethod
    def fit(cls, library: PresetLibrary, users: Sequence["Recommender"], contexts: Sequence[str] = CONTEXTS,
            strength: float = 3.0) -> "Population":
        """Kernel-smoothed mean answer per (preset, context) over every listener's answers; shrunk
        towards 0 by ``strength`` pseudo-answers."""
        contexts = tuple(contexts)
        prior = np.zeros((len(library), len(contexts)))
        idx = np.concatenate([u.obs_idx for u in users]) if users else np.zeros(0, np.int64)
        ctx = np.concatenate([u.obs_ctx for u in users]) if users else np.zeros(0, np.int64)
        y = np.concatenate([u.obs_y for u in users]) if users else np.zeros(0)
        k = _kernel(library.embedding, library.embedding[idx], _length(library)) if idx.size else None
        for c in range(len(contexts)):
            sel = ctx == c
            if k is not None and sel.any():
                kc = k[:, sel]
                prior[:, c] = kc @ y[sel] / (kc.sum(axis=1) + strength)
        return cls(prior, contexts)

    def save(self, path) -> None:
        save_state(path, POP_KIND, POP_SCHEMA, {"contexts": list(self.contexts)}, {"prior": self.prior})

    @classmethod
    def load(cls, path) -> "Population":
        meta, arrays = load_state(path, POP_KIND, POP_SCHEMA)
        contexts = require(path, meta, "contexts", (list,), "a list of contexts")
        prior = require_array(path, arrays, "prior")
        if prior.ndim != 2 or prior.shape[1] != len(contexts):
            raise StateError(f"{path}: prior {prior.shape} for {len(contexts)} contexts")
        return cls(prior, contexts)


def _length(lib: PresetLibrary) -> float:
    """The kernel's length scale: half the median distance between presets (cached per library)."""
    ell = getattr(lib, "_ell", None)
    if ell is None:
        e = lib.embedding[:: max(1, len(lib) // 256)].astype(np.float64)
        d = np.sqrt(np.maximum(np.sum((e[:, None] - e[None]) ** 2, axis=-1), 0))
        ell = lib._ell = 0.5 * float(np.median(d[d > 0])) if np.any(d > 0) else 1.0
    return ell


def _kernel(a: np.ndarray, b: np.ndarray, ell: float) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d2 = np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None] - 2.0 * a @ b.T
    return np.exp(-np.maximum(d2, 0.0) / (2.0 * ell * ell))


class Recommender:
    """One listener's model over one library (see the module doc)."""

    def __init__(self, library: PresetLibrary, population: Population | None = None,
                 contexts: Sequence[str] = CONTEXTS, user: str = "default", seed: int = 0):
        self.lib, self.contexts, self.user = library, tuple(contexts), str(user)
        self.pop = population or Population.flat(len(library), self.contexts)
        if self.pop.prior.shape != (len(library), len(self.contexts)):
            raise ConfigError(f"population prior {self.pop.prior.shape}; this library and its contexts need "
                              f"({len(library)}, {len(self.contexts)})")
        self.obs_idx = np.zeros(0, np.int64)
        self.obs_ctx = np.zeros(0, np.int64)
        self.obs_y = np.zeros(0, np.float64)
        self.shown: set[int] = set()
        self.rng = np.random.default_rng(seed)
        self._solved = None

    @property
    def answers(self) -> int:
        return int(self.obs_idx.size)

    def _ctx(self, context: str) -> int:
        try:
            return self.contexts.index(context)
        except ValueError:
            raise ConfigError(f"context {context!r}; expected one of {', '.join(self.contexts)}") from None

    # ---- the posterior ------------------------------------------------------------------------
    def _k(self, idx_a, ctx_a, idx_b, ctx_b) -> np.ndarray:
        e = self.lib.embedding
        same = (np.asarray(ctx_a)[:, None] == np.asarray(ctx_b)[None]).astype(np.float64)
        return _kernel(e[idx_a], e[idx_b], _length(self.lib)) * (CROSS + (1.0 - CROSS) * same)

    def _solve(self):
        if self._solved is None and self.answers:
            k = self._k(self.obs_idx, self.obs_ctx, self.obs_idx, self.obs_ctx) + NOISE_SD ** 2 * np.eye(self.answers)
            chol = np.linalg.cholesky(k)
            resid = self.obs_y - self.pop.prior[self.obs_idx, self.obs_ctx]
            self._solved = (chol, np.linalg.solve(chol.T, np.linalg.solve(chol, resid)))
        return self._solved

    def posterior(self, idx: np.ndarray, context: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of this listener's answer to each preset in ``context``."""
        c = self._ctx(context)
        idx = np.asarray(idx, np.int64)
        mean = self.pop.prior[idx, c].copy()
        var = np.full(idx.shape, PRIOR_SD ** 2)
        solved = self._solve()
        if solved is not None:
            chol, alpha = solved
            ks = self._k(idx, np.full(idx.shape, c), self.obs_idx, self.obs_ctx) * PRIOR_SD ** 2
            mean += ks @ alpha
            v = np.linalg.solve(chol, ks.T)
            var = np.maximum(var - np.sum(v * v, axis=0), 1e-9)
        return mean, np.sqrt(var)

    # ---- recommend and learn ------------------------------------------------------------------
    def candidates(self, context: str, mean: np.ndarray | None = None) -> np.ndarray:
        """Nearest neighbours of this listener's recent accepts here, plus the best by the model
        (``mean``: the posterior mean over the whole library, if the caller has it)."""
        c = self._ctx(context)
        pool: list[int] = []
        acc = self.obs_idx[(self.obs_ctx == c) & (self.obs_y > 0)]
        for i in acc[-SEEDS:]:
            pool.extend(self.lib.neighbours(int(i), NEIGHBOURS).tolist())
        if mean is None:
            mean, _ = self.posterior(np.arange(len(self.lib)), context)
        pool.extend(np.argsort(-mean)[:POP_TOP].tolist())
        return np.array(sorted(set(pool)), np.int64)

    def recommend(self, context: str, n: int = 1, explore: bool = True, new_only: bool = True) -> list[int]:
        """The ``n`` presets to offer, best first (library indices)."""
        mean, sd = self.posterior(np.arange(len(self.lib)), context)   # once, for the pool and the score
        cand = self.candidates(context, mean)
        if new_only:
            fresh = np.array([i for i in cand if i not in self.shown], np.int64)
            if fresh.size < n:    # everything near was shown: widen to the whole library
                fresh = np.array([i for i in range(len(self.lib)) if i not in self.shown], np.int64)
            cand = fresh if fresh.size else cand
        mean, sd = mean[cand], sd[cand]
        score = mean + EXPLORE * sd * self.rng.standard_normal(sd.shape) if explore else mean
        return cand[np.argsort(-score)[:n]].tolist()

    def feedback(self, i: int, context: str, accept: bool) -> None:
        """One answer: preset ``i`` accepted (or rejected) in ``context``."""
        c = self._ctx(context)
        if not 0 <= int(i) < len(self.lib):
            raise ConfigError(f"preset index {i} outside the library's {len(self.lib)}")
        self.obs_idx = np.append(self.obs_idx, int(i))
        self.obs_ctx = np.append(self.obs_ctx, c)
        self.obs_y = np.append(self.obs_y, 1.0 if accept else -1.0)
        self.shown.add(int(i))
        self._solved = None

    # ---- state --------------------------------------------------------------------------------
    def save(self, path) -> None:
        save_state(path, USER_KIND, USER_SCHEMA,
                   {"user": self.user, "contexts": list(self.contexts), "n_presets": len(self.lib),
                    "library": os.path.basename(self.lib.path), "shown": sorted(self.shown)},
                   {"obs_idx": self.obs_idx, "obs_ctx": self.obs_ctx, "obs_y": self.obs_y})

    @classmethod
    def load(cls, path, library: PresetLibrary, population: Population | None = None) -> "Recommender":
        meta, arrays = load_state(path, USER_KIND, USER_SCHEMA)
        contexts = require(path, meta, "contexts", (list,), "a list of contexts")
        n = require(path, meta, "n_presets", (int,), "the library's preset count")
        if n != len(library):
            raise StateError(f"{path}: learned over a library of {n} presets; {library.path} has {len(library)} "
                             "(re-indexed?); start a new user state")
        r = cls(library, population, contexts, str(meta.get("user", "default")))
        idx = require_array(path, arrays, "obs_idx").astype(np.int64)
        ctx = require_array(path, arrays, "obs_ctx").astype(np.int64)
        y = require_array(path, arrays, "obs_y").astype(np.float64)
        if not (idx.shape == ctx.shape == y.shape and idx.ndim == 1) or (idx.size and (
                idx.min() < 0 or idx.max() >= n or ctx.min() < 0 or ctx.max() >= len(contexts)
                or not np.all(np.abs(y) == 1.0))):
            raise StateError(f"{path}: answers out of range (presets 0..{n - 1}, contexts 0..{len(contexts) - 1}, "
                             "answers +-1)")
        r.obs_idx, r.obs_ctx, r.obs_y = idx, ctx, y
        r.shown = {int(i) for i in require(path, meta, "shown", (list,), "a list")}
        return r

"""Search a chain's parameters for a target: CMA-ES (``cma``), a genetic algorithm (DEAP's
operators), the two in sequence (``memetic``: GA, then CMA-ES refining its best), random search;
parallel evaluation in a process pool; budget, time limit, early stopping.

All methods search the unit cube of the chain's free parameters (:class:`ParameterSpace`) through one
ask/tell loop, so budget (evaluations), time limit and early stopping mean the same for each. With
the same ``seed`` a run gives the same result for any number of workers (evaluations are
deterministic; the synth's noise is seeded).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
import random as _random
import time
from typing import Callable, Mapping

import numpy as np

from ..errors import ConfigError, MissingExtraError
from .chains import Chain, make_chain
from .loss import LossConfig, MultiResolutionLoss
from .target import Target

__all__ = ["METHODS", "Evaluator", "OptimizeResult", "optimize"]

METHODS = ("cma", "ga", "random", "memetic")
EXTRA = "pip install 'edge-runtime[optimize]'"


def _need(module: str, method: str):
    try:
        return __import__(module)
    except ImportError:
        raise MissingExtraError(f"--method {method} needs the {module!r} package, which is not installed: "
                                f"{EXTRA}") from None


# ---- evaluation -----------------------------------------------------------------------------
class _Job:
    """What a worker needs to score candidates: the chain (rebuilt by name), the target, the loss."""

    def __init__(self, chain: Chain, target: Target, loss_config: LossConfig):
        self.chain_name, self.chain_config = chain.name, chain.config()
        self.fixed, self.ranges = dict(chain.space.fixed), dict(chain.space.ranges)
        self.target, self.loss_config = target, loss_config

    def build(self):
        chain = make_chain(self.chain_name, **self.chain_config)
        chain.space = chain.space.with_fixed(self.fixed).with_ranges(self.ranges)
        loss = MultiResolutionLoss(self.target.audio, self.target.sample_rate, self.loss_config)
        return chain, loss


_WORKER: tuple | None = None


def _one_blas_thread():
    """One BLAS thread: the loss's small matrix products ran 9x slower (49 vs 5.5 ms per loss) with
    OpenBLAS threads spinning on a busy 2-core machine; the pool is the parallelism."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with the [optimize] extra
        return contextlib.nullcontext()
    return threadpool_limits(1)


def _init_worker(job: _Job) -> None:
    global _WORKER
    _one_blas_thread()
    _WORKER = job.build() + (job.target,)


def _score(chain: Chain, loss: MultiResolutionLoss, target: Target, u: np.ndarray) -> float:
    y = chain.render(chain.space.decode(u), target.n_frames, target.input)
    v = loss(y)
    return v if math.isfinite(v) else 1e9


def _score_in_worker(u: np.ndarray) -> float:
    chain, loss, target = _WORKER
    return _score(chain, loss, target, u)


class Evaluator:
    """Scores unit-cube points of a chain against a target, in this process (``workers = 1``) or a
    process pool (``workers > 1``, ``forkserver`` start: no state of the caller is inherited)."""

    def __init__(self, chain: Chain, target: Target, loss_config: LossConfig | None = None, workers: int = 1):
        self.loss_config = loss_config or LossConfig()
        self.workers = max(1, int(workers))
        self.job = _Job(chain, target, self.loss_config)
        self.chain, self.loss = self.job.build()
        self.target = target
        self._pool = None
        if self.workers > 1:
            from concurrent.futures import ProcessPoolExecutor

            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context(method),
                                             initializer=_init_worker, initargs=(self.job,))

    def __call__(self, U: np.ndarray) -> np.ndarray:
        U = np.atleast_2d(np.clip(np.asarray(U, np.float64), 0.0, 1.0))
        if self._pool is None or U.shape[0] < 2:
            return np.array([_score(self.chain, self.loss, self.target, u) for u in U])
        chunk = max(1, U.shape[0] // (4 * self.workers))
        return np.fromiter(self._pool.map(_score_in_worker, list(U), chunksize=chunk), np.float64, U.shape[0])

    def render(self, u: np.ndarray) -> np.ndarray:
        return self.chain.render(self.chain.space.decode(u), self.target.n_frames, self.target.input)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- optimizers (ask / tell on the unit cube) ---------------------------------------------------
class _RandomSearch:
    def __init__(self, dim: int, seed: int, x0=None, batch: int = 16, **_):
        self.rng = np.random.default_rng(seed)
        self.dim, self.batch, self.x0 = dim, batch, x0

    def ask(self) -> np.ndarray:
        U = self.rng.random((self.batch, self.dim))
        if self.x0 is not None:   # the starting point is the first candidate
            U[0], self.x0 = self.x0, None
        return U

    def tell(self, U, f) -> None:
        pass


def _cma_es(cma, x0, sigma0: float, seed: int, popsize: int, tolx: float):
    """One ``cma`` CMA-ES run on the unit cube from ``x0`` (clipped into it)."""
    opts = {"bounds": [0.0, 1.0], "seed": seed, "popsize": popsize, "verbose": -9, "tolfun": 1e-9, "tolx": tolx}
    return cma.CMAEvolutionStrategy(list(np.clip(x0, 0, 1)), sigma0, opts)


def _cma_popsize(dim: int) -> int:
    """CMA-ES's default population for ``dim`` parameters (the ``cma`` package's own default)."""
    return 4 + int(3 * math.log(dim))


class _CmaEs:
    """``cma``'s CMA-ES with IPOP restarts (popsize doubled from a fresh random start) when it stops."""

    def __init__(self, dim: int, seed: int, x0=None, sigma0: float | None = None, popsize: int | None = None, **_):
        self.cma = _need("cma", "cma")
        self.dim, self.seed, self.rng = dim, seed, np.random.default_rng(seed + 7919)
        self.popsize = popsize or _cma_popsize(dim)
        self.restarts = 0
        x0 = np.full(dim, 0.5) if x0 is None else np.asarray(x0, np.float64)
        self._start(x0, 0.3 if sigma0 is None else sigma0)

    def _start(self, x0, sigma0) -> None:
        self.es = _cma_es(self.cma, x0, sigma0, self.seed * 1000 + self.restarts + 1, self.popsize, 1e-6)

    def ask(self) -> np.ndarray:
        if self.es.stop():
            self.restarts += 1
            self.popsize *= 2
            self._start(self.rng.random(self.dim), 0.3)
        self._X = self.es.ask()
        return np.array(self._X)

    def tell(self, U, f) -> None:
        if len(f) == len(self._X):
            self.es.tell(self._X, list(map(float, f)))


class _Genetic:
    """Real-coded GA with DEAP's operators: tournament selection (3), simulated binary crossover
    (eta 15, p 0.9), polynomial mutation (eta 20, 1/d per gene), two elites kept."""

    def __init__(self, dim: int, seed: int, x0=None, popsize: int | None = None, **_):
        deap = _need("deap", "ga")
        from deap import base, tools

        class Fitness(base.Fitness):
            weights = (-1.0,)

        self.tools, self.Fitness = tools, Fitness
        self.dim = dim
        self.popsize = popsize or max(16, 4 * dim)
        # DEAP's operators draw from the `random` module: a private, seeded state swapped in per call
        self._rstate = _random.Random(seed).getstate()
        rng = np.random.default_rng(seed)
        init = rng.random((self.popsize, dim))
        if x0 is not None:  # half the population around the starting point
            x0 = np.asarray(x0, np.float64)
            k = self.popsize // 2
            init[:k] = np.clip(x0 + 0.08 * rng.standard_normal((k, dim)), 0, 1)
            init[0] = x0
        self._pending = [self._ind(u) for u in init]
        self.pop: list = []
        del deap

    def _ind(self, u):
        ind = list(map(float, u))
        ind = type("Ind", (list,), {})(ind)
        ind.fitness = self.Fitness()
        return ind

    def _with_random(self, fn):
        saved = _random.getstate()
        _random.setstate(self._rstate)
        try:
            return fn()
        finally:
            self._rstate = _random.getstate()
            _random.setstate(saved)

    def ask(self) -> np.ndarray:
        if not self._pending:
            self._pending = self._with_random(self._breed)
        return np.array(self._pending)

    def _breed(self) -> list:
        t = self.tools
        elite = t.selBest(self.pop, 2)
        parents = [self._ind(p) for p in t.selTournament(self.pop, self.popsize - len(elite), tournsize=3)]
        for a, b in zip(parents[::2], parents[1::2]):
            if _random.random() < 0.9:
                t.cxSimulatedBinaryBounded(a, b, eta=15.0, low=0.0, up=1.0)
        for c in parents:
            t.mutPolynomialBounded(c, eta=20.0, low=0.0, up=1.0, indpb=1.0 / self.dim)
        self._elite = [self._ind(e) for e in elite]
        for e, old in zip(self._elite, elite):
            e.fitness.values = old.fitness.values
        return parents

    def tell(self, U, f) -> None:
        evaluated = self._pending[:len(f)]
        for ind, v in zip(evaluated, f):
            ind.fitness.values = (float(v),)
        self.pop = evaluated + getattr(self, "_elite", [])
        self._pending = []


class _Memetic:
    """A global phase, then local refinement: the GA (:class:`_Genetic`, half its population around
    ``x0`` when given) for ``global_share`` of the budget, then CMA-ES started at the best point so far
    with a small step (``sigma0``, default 0.05), restarted there with half the step whenever it stops.

    Why (measured, ``firmware_tools/eval/results/optimize_b2000.md``): the synth's loss is steep and
    rugged (0.003 of the unit cube on one coordinate costs up to 0.09 in detune, 0.4 in pitch), so
    sampling methods stall while CMA-ES started within ~0.03 of the truth converges (loss 1.0 ->
    0.04-0.09 in 1000 evaluations); the GA finds basins but does not refine. Measured on 8 held-out
    presets it beats the GA (budget 800 and 2000), but not CMA-ES with IPOP restarts at budget 2000."""

    def __init__(self, dim: int, seed: int, x0=None, sigma0: float | None = None, popsize: int | None = None,
                 budget: int | None = None, global_share: float = 0.4, **_):
        self.cma = _need("cma", "memetic")
        self.seed, self.popsize = seed, _cma_popsize(dim)
        self.switch = max(1, int(global_share * (budget if budget else 1000)))
        self.ga = _Genetic(dim, seed, x0=x0, popsize=popsize)
        self.sigma = 0.05 if sigma0 is None else float(sigma0)
        self.seen, self.best_u, self.best_f, self.es, self.restarts = 0, None, float("inf"), None, 0

    def _start(self) -> None:
        self.es = _cma_es(self.cma, self.best_u, self.sigma, self.seed * 1000 + self.restarts + 1, self.popsize,
                          1e-7)

    def ask(self) -> np.ndarray:
        if self.seen < self.switch:
            return self.ga.ask()
        if self.es is None:
            self._start()
        elif self.es.stop():
            self.restarts += 1
            self.sigma = max(0.005, self.sigma * 0.5)
            self._start()
        self._X = self.es.ask()
        return np.array(self._X)

    def tell(self, U, f) -> None:
        f = np.asarray(f, np.float64)
        if f.size:
            i = int(np.argmin(f))
            if f[i] < self.best_f:
                self.best_f, self.best_u = float(f[i]), np.array(U[i], np.float64)
        if self.seen < self.switch:
            self.ga.tell(U, f)
        elif len(f) == len(self._X):
            self.es.tell(self._X, list(map(float, f)))
        self.seen += len(f)


_OPTIMIZERS = {"random": _RandomSearch, "cma": _CmaEs, "ga": _Genetic, "memetic": _Memetic}


@dataclasses.dataclass
class OptimizeResult:
    """The best parameters found and how the search went (``history``: (evaluations, best loss,
    seconds) after every batch; ``losses``: every evaluation's loss in order)."""

    chain: str
    method: str
    params: dict
    unit: np.ndarray
    loss: float
    components: dict
    evaluations: int
    seconds: float
    stopped_by: str
    seed: int
    history: list
    losses: np.ndarray

    def best_after(self, n: int) -> float:
        """Best loss within the first ``n`` evaluations."""
        if n <= 0 or self.losses.size == 0:
            return float("inf")
        return float(np.min(self.losses[:n]))


def optimize(chain: Chain, target: Target, *, method: str = "cma", budget: int = 2000, seed: int = 0,
             workers: int = 1, x0: np.ndarray | Mapping | None = None, sigma0: float | None = None,
             max_seconds: float | None = None, patience: int | None = None, min_delta: float = 1e-3,
             target_loss: float | None = None, popsize: int | None = None, loss_config: LossConfig | None = None,
             callback: Callable[[int, float, float], None] | None = None,
             evaluator: Evaluator | None = None) -> OptimizeResult:
    """Fit ``chain`` to ``target`` with ``method`` in at most ``budget`` loss evaluations.

    ``x0``: a starting point (parameters by name, e.g. the regressor's, or a unit-cube point);
    ``budget = 0`` evaluates only ``x0`` (or the defaults). Stops early after ``max_seconds``, when the
    best loss has not improved by ``min_delta`` (relative) in ``patience`` evaluations, or when it
    falls to ``target_loss``. ``callback(evaluations, best_loss, seconds)`` runs after every batch."""
    if method not in METHODS:
        raise ConfigError(f"method {method!r} is not known (expected one of {', '.join(METHODS)})")
    if not isinstance(budget, (int, np.integer)) or isinstance(budget, bool) or budget < 0 or budget > 10_000_000:
        raise ConfigError(f"budget = {budget!r} evaluations; expected an integer 0..10000000")
    if max_seconds is not None and not (max_seconds > 0):
        raise ConfigError(f"max_seconds = {max_seconds!r}; expected > 0")
    if patience is not None and patience < 1:
        raise ConfigError(f"patience = {patience!r}; expected >= 1 evaluations")
    space = chain.space
    if isinstance(x0, Mapping):
        x0 = space.encode(x0)
    t0 = time.monotonic()
    own = evaluator is None
    ev = evaluator or Evaluator(chain, target, loss_config, workers)
    try:
        with _one_blas_thread():
            return _run(chain, ev, method, budget, seed, x0, sigma0, max_seconds, patience, min_delta,
                        target_loss, popsize, callback, t0)
    finally:
        if own:
            ev.close()


def _run(chain, ev, method, budget, seed, x0, sigma0, max_seconds, patience, min_delta, target_loss, popsize,
         callback, t0) -> OptimizeResult:
    space = chain.space
    if True:  # noqa: SIM108 - keeps the loop's indentation
        if budget == 0 or space.dim == 0:
            u = space.encode(space.defaults()) if x0 is None else np.asarray(x0, np.float64)
            losses = ev(u[None, :])
            return _result(chain, method, ev, u, losses, [(1, float(losses[0]), time.monotonic() - t0)], "budget",
                           seed, t0)
        opt = _OPTIMIZERS[method](space.dim, seed, x0=x0, sigma0=sigma0, popsize=popsize, budget=budget)
        all_losses: list[float] = []
        all_u: list[np.ndarray] = []
        history, best, best_at, stopped = [], float("inf"), 0, "budget"
        while len(all_losses) < budget:
            U = opt.ask()[:budget - len(all_losses)]
            f = ev(U)
            opt.tell(U, f)
            all_losses.extend(map(float, f))
            all_u.extend(U)
            n = len(all_losses)
            i = int(np.argmin(f))
            if f[i] < best * (1.0 - min_delta) or best == float("inf"):
                best_at = n
            if f[i] < best:
                best = float(f[i])
            el = time.monotonic() - t0
            history.append((n, best, el))
            if callback:
                callback(n, best, el)
            if target_loss is not None and best <= target_loss:
                stopped = "target_loss"
                break
            if patience is not None and n - best_at >= patience:
                stopped = "patience"
                break
            if max_seconds is not None and el >= max_seconds:
                stopped = "time"
                break
        losses = np.array(all_losses)
        return _result(chain, method, ev, np.asarray(all_u[int(np.argmin(losses))]), losses, history, stopped, seed,
                       t0)


def _result(chain, method, ev, u, losses, history, stopped, seed, t0) -> OptimizeResult:
    y = ev.render(u)
    return OptimizeResult(chain=chain.name, method=method, params=chain.space.decode(u), unit=np.asarray(u),
                          loss=float(np.min(losses)), components=ev.loss.components(y), evaluations=int(losses.size),
                          seconds=time.monotonic() - t0, stopped_by=stopped, seed=int(seed), history=history,
                          losses=np.asarray(losses))


def default_workers() -> int:
    """One worker per CPU this process may use (at most 16)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        n = os.cpu_count() or 1
    return max(1, min(16, n))

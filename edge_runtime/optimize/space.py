"""A chain's parameter space: names, ranges and scales, and the map to the unit cube the optimizers
search (``u`` in ``[0, 1]^d``; a ``log`` parameter is uniform in its logarithm)."""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np

from ..errors import ConfigError

__all__ = ["Param", "ParameterSpace"]


@dataclasses.dataclass(frozen=True)
class Param:
    """One searchable parameter: ``low..high`` (inclusive) on a ``lin`` or ``log`` scale."""

    name: str
    low: float
    high: float
    default: float
    scale: str = "lin"
    unit: str = ""
    help: str = ""

    def __post_init__(self):
        if self.scale not in ("lin", "log"):
            raise ValueError(f"param {self.name}: scale {self.scale!r} (expected lin or log)")
        if not self.low < self.high or (self.scale == "log" and self.low <= 0):
            raise ValueError(f"param {self.name}: bad range {self.low}..{self.high} for a {self.scale} scale")

    def to_unit(self, value: float) -> float:
        if self.scale == "log":
            u = (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        else:
            u = (value - self.low) / (self.high - self.low)
        return min(1.0, max(0.0, u))

    def from_unit(self, u: float) -> float:
        u = min(1.0, max(0.0, float(u)))
        if self.scale == "log":
            return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)


class ParameterSpace:
    """Ordered parameters; ``fixed`` ones keep their value and are not searched."""

    def __init__(self, params: Sequence[Param], fixed: Mapping[str, float] | None = None,
                 ranges: Mapping[str, tuple[float, float]] | None = None):
        self.base = tuple(params)
        self.ranges = {}
        out = []
        for p in self.base:   # a narrowed range (e.g. the pitch around a measured f0) inside the full one
            r = (ranges or {}).get(p.name)
            if r is not None:
                lo, hi = max(p.low, float(r[0])), min(p.high, float(r[1]))
                if lo < hi:
                    self.ranges[p.name] = (lo, hi)
                    p = dataclasses.replace(p, low=lo, high=hi, default=min(hi, max(lo, (lo + hi) / 2)))
            out.append(p)
        self.params = tuple(out)
        self.by_name = {p.name: p for p in self.params}
        self.fixed: dict[str, float] = {}
        for k, v in (fixed or {}).items():
            self.fixed[k] = self.check_value(k, v, "fixed")
        self.free = tuple(p for p in self.params if p.name not in self.fixed)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def dim(self) -> int:
        """Number of searched (free) parameters."""
        return len(self.free)

    def with_fixed(self, fixed: Mapping[str, float]) -> "ParameterSpace":
        return ParameterSpace(self.base, {**self.fixed, **fixed}, self.ranges)

    def with_ranges(self, ranges: Mapping[str, tuple[float, float]]) -> "ParameterSpace":
        return ParameterSpace(self.base, self.fixed, {**self.ranges, **ranges})

    def check_value(self, name: str, value, where: str = "preset") -> float:
        p = next((q for q in self.base if q.name == name), None)   # the full range: presets are not narrowed
        if p is None:
            raise ConfigError(f"{where}: unknown parameter {name!r} (expected one of {', '.join(self.names)})")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {name} = {value!r} is not a number") from None
        if not (math.isfinite(v) and p.low <= v <= p.high):
            raise ConfigError(f"{where}: {name} = {value!r} is outside {p.low:g}..{p.high:g}")
        return v

    def defaults(self) -> dict[str, float]:
        return {p.name: self.fixed.get(p.name, p.default) for p in self.params}

    def complete(self, params: Mapping[str, float], where: str = "preset") -> dict[str, float]:
        """All parameters: the given ones checked, the rest from ``fixed`` or the defaults."""
        out = self.defaults()
        for k, v in params.items():
            out[k] = self.check_value(k, v, where)
        out.update(self.fixed)
        return out

    def decode(self, u: np.ndarray) -> dict[str, float]:
        """Unit-cube point (free parameters only) -> all parameters by name."""
        u = np.asarray(u, dtype=np.float64).reshape(-1)
        if u.shape[0] != self.dim:
            raise ValueError(f"expected {self.dim} unit coordinates, got {u.shape[0]}")
        out = self.defaults()
        for p, ui in zip(self.free, u):
            out[p.name] = p.from_unit(ui)
        return out

    def encode(self, params: Mapping[str, float]) -> np.ndarray:
        """Parameters by name -> the unit-cube point of the free ones (missing: the default)."""
        full = self.defaults()
        full.update(params)
        return np.array([p.to_unit(full[p.name]) for p in self.free], dtype=np.float64)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` uniform points of the unit cube, ``(n, dim)``."""
        return rng.random((n, self.dim))

    def describe(self) -> list[dict]:
        return [dict(name=p.name, low=p.low, high=p.high, scale=p.scale, unit=p.unit, default=p.default,
                     help=p.help, fixed=p.name in self.fixed) for p in self.params]

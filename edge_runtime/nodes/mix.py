"""``mix``: sum named buses (and optionally the main path) with gains into the main path.

```toml
[[nodes]]
type = "separate"               # writes the buses vocals, drums, bass, other

[[nodes]]
type = "gain"
bus = "drums"                   # runs on the drums bus only
gain_db = -6.0

[[nodes]]
type = "mix"                    # karaoke with quieter drums: everything but the vocals
buses = { drums = 0.0, bass = 0.0, other = 0.0 }
```
The pipeline hands the node each bus's block and the delay that aligns it with the latest input
(a bus that went through a node with look-ahead is later than the others); the node delays the
earlier ones, so the sum is aligned in time.
"""
from __future__ import annotations

import math

import numpy as np

from ..engine import Node
from .route import _Delay

__all__ = ["Mix", "make_mix", "parse_bus_gains"]


class Mix(Node):
    """Writes ``sum(gain_b * bus_b) + main_gain * inp`` to the main path (see the module docstring)."""

    def __init__(self, buses: dict[str, float] | None = None, main_gain_db: float | None = None,
                 name: str | None = None):
        super().__init__(name or "mix")
        if not buses:
            raise ValueError("mix needs at least one bus (buses = { <bus> = <gain_db>, ... })")
        self.gains_db = {str(k): float(v) for k, v in buses.items()}
        self.input_buses = tuple(self.gains_db)
        self.main_gain_db = main_gain_db
        self.bus_in: dict[str, np.ndarray] = {}

    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        super().prepare(sample_rate, block_size, channels)
        self.tmp = np.zeros((channels, block_size), np.float32)
        self.gains = [np.float32(10 ** (self.gains_db[b] / 20)) for b in self.input_buses]
        self.main_gain = None if self.main_gain_db is None else np.float32(10 ** (self.main_gain_db / 20))
        self.delays = {b: _Delay(channels, block_size, 0) for b in self.input_buses}
        self.main_delay = _Delay(channels, block_size, 0)

    def bind_input_buses(self, blocks, delays, main_delay) -> None:
        super().bind_input_buses(blocks, delays, main_delay)
        self.delays = {b: _Delay(self.channels, self.block_size, delays[b]) for b in self.input_buses}
        self.main_delay = _Delay(self.channels, self.block_size, main_delay)

    def reset(self) -> None:
        for d in self.delays.values():
            d.reset()
        self.main_delay.reset()

    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        if not self.bus_in:
            raise RuntimeError(f"{self.name}: not bound to its buses (run it in a pipeline after the node "
                               f"that writes {', '.join(self.input_buses)})")
        if self.main_gain is not None:
            np.copyto(out, self.main_delay.push(inp))
            out *= self.main_gain
        else:
            out[...] = 0.0
        for b, g in zip(self.input_buses, self.gains):
            # the delayed view is strided; a ufunc on it would buffer (allocate), a copy does not
            np.copyto(self.tmp, self.delays[b].push(self.bus_in[b]))
            self.tmp *= g
            np.add(out, self.tmp, out=out)


def parse_bus_gains(value, where: str, path, parse_nodes=None) -> dict[str, float]:
    """Validate ``buses = { name = gain_db, ... }`` (gains in -120..24 dB)."""
    from ..errors import ConfigError

    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{path}: {where} = {value!r}; expected a table of bus names to gains in dB, "
                          "e.g. buses = {{ drums = 0.0, bass = -6.0 }}")
    out = {}
    for k, g in value.items():
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or not -120.0 <= g <= 24.0:
            raise ConfigError(f"{path}: {where}.{k} = {g!r}; expected a gain in -120..24 dB")
        out[str(k)] = float(g)
    return out


def make_mix(name=None, build_nodes=None, **kw) -> Mix:
    """Factory for the config loader (``build_nodes`` is passed to nodes with table parameters)."""
    return Mix(name=name, **kw)

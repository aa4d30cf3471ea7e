"""Pipeline of nodes at a fixed block size.

A node has one shape everywhere (see ``shared/DESIGN.md``)::

    node.prepare(sample_rate, block_size, channels)   # allocates everything
    node.process(inp, out)                            # one (channels, block_size) block, allocates nothing
    node.reset()                                      # clears signal state
    node.latency_samples, node.name                   # attributes

Nodes written in Cython derive from :class:`NativeNode` and are called from the compiled
block loop without going through Python; nodes written in Python derive from :class:`Node`.

**Buses.** Besides its main output a node may write named output buses (``output_buses``, e.g.
a separator's stems): the pipeline allocates one block per bus and hands them to the node
(``bind_buses``). A later node can run on a bus instead of the main path (``Pipeline(...,
on_bus=[...])``, the config's ``bus = "vocals"`` key): it reads and writes that bus's blocks. A
node that reads several buses (``input_buses``, e.g. ``mix``) gets their blocks and latencies
(``bind_input_buses``). Every bus carries its own latency, so a runner writes one file per bus,
each aligned with the input. A pipeline without buses runs exactly as before.
"""
from __future__ import annotations

import abc
import dataclasses
from typing import Sequence

import numpy as np

from ._engine import BlockBuffer, Chain, EventBuffer, NativeNode  # noqa: F401 (re-exported)

__all__ = ["Event", "NativeNode", "Node", "Pipeline"]


class Node(abc.ABC):
    """Base of nodes written in Python.

    ``process`` must write every sample of ``out`` and must not allocate in steady state
    (use arrays made in ``prepare`` and NumPy's ``out=`` arguments).
    """

    event_names: tuple[str, ...] = ()
    #: named output buses this node writes besides ``out`` (a separator's stems); empty: none
    output_buses: tuple[str, ...] = ()
    #: buses this node reads besides ``inp`` (e.g. a mix), bound by the pipeline
    input_buses: tuple[str, ...] = ()

    def __init__(self, name: str | None = None):
        self.name = name or type(self).__name__.lower()
        self.latency_samples = 0
        self.sample_rate = 0
        self.block_size = 0
        self.channels = 0
        self.events: EventBuffer | None = None
        self.node_index = -1

    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        """Allocate everything the node needs for blocks of ``(channels, block_size)``."""
        self.sample_rate, self.block_size, self.channels = sample_rate, block_size, channels

    @abc.abstractmethod
    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        """Read one block from ``inp`` and write one block into ``out``."""

    def reset(self) -> None:
        """Clear signal state (between files, after an xrun)."""

    def bind_events(self, events: EventBuffer, node_index: int) -> None:
        self.events = events
        self.node_index = node_index

    def bind_buses(self, blocks: dict[str, np.ndarray]) -> None:
        """Receive the pipeline's ``(channels, block_size)`` block of each of ``output_buses``
        (called after :meth:`prepare`); ``process`` writes every sample of each."""
        self.bus_out = blocks

    def bind_input_buses(self, blocks: dict[str, np.ndarray], delays: dict[str, int], main_delay: int) -> None:
        """Receive the blocks of ``input_buses`` (valid while ``process`` runs) and the delay, in
        samples, that aligns each (and ``inp``, ``main_delay``) with the latest of them: the
        pipeline counts that alignment in the node's output latency, so the node must apply it."""
        self.bus_in = blocks

    def emit(self, event: str, value: float, offset: int = 0) -> None:
        """Record event ``event`` (one of ``event_names``) ``offset`` frames into this block."""
        if self.events is not None:
            self.events.push(self.node_index, self.event_names.index(event), value, offset)


@dataclasses.dataclass(frozen=True)
class Event:
    """A timestamped event emitted by a node: ``time_s``/``frame`` in the stream, ``ts`` the wall
    clock (ISO-8601, UTC) when the runner received it (``None`` straight from :meth:`Pipeline.drain_events`)."""

    time_s: float
    frame: int
    node: str
    event: str
    value: float
    ts: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Pipeline:
    """Nodes run in order on fixed blocks of ``block_size`` frames at ``sample_rate``.

    ``channels`` fixes the channel count the pipeline accepts; ``None`` accepts any
    (fixed at :meth:`prepare`). After ``prepare``, fill :attr:`input`, call
    :meth:`process_block`, read :attr:`output`: that path allocates nothing.
    """

    def __init__(self, nodes: Sequence, *, sample_rate: int, block_size: int,
                 channels: int | None = None, name: str = "pipeline", event_capacity: int = 1024,
                 on_bus: Sequence[str | None] | None = None):
        if sample_rate <= 0 or block_size <= 0:
            raise ValueError(f"pipeline {name!r}: sample_rate and block_size must be > 0, "
                             f"got {sample_rate} and {block_size}")
        if channels is not None and channels <= 0:
            raise ValueError(f"pipeline {name!r}: channels must be > 0 or None (any), got {channels}")
        for node in nodes:
            if not isinstance(node, (Node, NativeNode)):
                raise TypeError(f"pipeline {name!r}: {node!r} is not a Node or NativeNode")
        if on_bus is not None and len(on_bus) != len(nodes):
            raise ValueError(f"pipeline {name!r}: on_bus names {len(on_bus)} buses for {len(nodes)} nodes")
        # the bus each node runs on (None: the main path)
        self.on_bus = [None if b in (None, "") else str(b) for b in (on_bus or [None] * len(nodes))]
        # "input": runners write the output at the input's rate (resampled back); "pipeline": at this
        # pipeline's rate (a bandwidth extension must not be undone)
        self.output_rate = "input"
        self.nodes = list(nodes)
        self.name = name
        self.sample_rate = int(sample_rate)
        self.block_size = int(block_size)
        self.channels = channels
        self.fixed_channels = channels
        self.events = EventBuffer(event_capacity)
        self._chain: Chain | None = None
        self._sources = self.nodes
        self.buses: tuple[str, ...] = ()
        self.bus_latency_samples: dict[str, int] = {}
        self._bus_out_index: dict[str, int] = {}
        self._main_latency = 0

    # ---- set-up -----------------------------------------------------------------------
    def prepare(self, channels: int | None = None) -> "Pipeline":
        """Allocate all buffers and prepare every node for ``channels`` channels."""
        if channels is None:
            channels = self.fixed_channels or 1
        if self.fixed_channels is not None and channels != self.fixed_channels:
            raise ValueError(f"pipeline {self.name!r} processes {self.fixed_channels} channel(s), "
                             f"got {channels}")
        self.channels = int(channels)
        sources = list(self.nodes)
        for i, node in enumerate(self.nodes):
            node.prepare(self.sample_rate, self.block_size, self.channels)
            node.bind_events(self.events, i)
        for node in self.nodes:  # nodes inside a node (a route's branches) emit events too
            for sub in getattr(node, "sub_nodes", tuple)():
                sub.bind_events(self.events, len(sources))
                sources.append(sub)
        self._sources = sources
        routes = self._plan_buses()
        self._chain = Chain(self.nodes, self.sample_rate, self.block_size, self.channels, self.events,
                            routes)
        if routes is not None:
            self._bind_buses()
        return self

    def _plan_buses(self):
        """Block indices of every node's input and output, and each bus's latency, when any node
        writes or runs on a bus; ``None`` (the plain chain) otherwise."""
        self._bus_binds = []
        if not any(self.on_bus) and not any(getattr(n, "output_buses", ()) or getattr(n, "input_buses", ())
                                            for n in self.nodes):
            self.buses, self.bus_latency_samples, self._bus_out_index = (), {}, {}
            self._main_latency = sum(int(n.latency_samples) for n in self.nodes)
            return None
        where = f"pipeline {self.name!r}"
        main, n_blocks, main_lat = 0, 1, 0
        cur: dict[str, int] = {}        # bus -> the block that holds it now
        lat: dict[str, int] = {}        # bus -> its latency so far
        ins, outs = [], []
        for i, (node, bus) in enumerate(zip(self.nodes, self.on_bus)):
            if bus is not None and bus not in cur:
                raise ValueError(f"{where}: node {node.name!r} runs on bus {bus!r}, which no earlier node "
                                 f"writes (buses so far: {', '.join(cur) or 'none'})")
            src = main if bus is None else cur[bus]
            src_lat = main_lat if bus is None else lat[bus]
            reads = tuple(getattr(node, "input_buses", ()))
            for b in reads:
                if b not in cur:
                    raise ValueError(f"{where}: node {node.name!r} reads bus {b!r}, which no earlier node "
                                     f"writes (buses so far: {', '.join(cur) or 'none'})")
            # a node that reads buses gets its inputs aligned to the latest of them (it delays the others)
            align = max([src_lat] + [lat[b] for b in reads])
            binds = [i, node, {b: cur[b] for b in reads}, {b: align - lat[b] for b in reads}, align - src_lat, {}]
            ins.append(src)
            outs.append(n_blocks)
            n_blocks += 1
            out_lat = align + int(node.latency_samples)
            if bus is None:
                main, main_lat = outs[-1], out_lat
            else:
                cur[bus], lat[bus] = outs[-1], out_lat
            for b in getattr(node, "output_buses", ()):
                if b in cur:
                    raise ValueError(f"{where}: node {node.name!r} writes bus {b!r}, which an earlier node "
                                     "already writes; expected distinct bus names")
                cur[b], lat[b] = n_blocks, out_lat
                binds[5][b] = n_blocks
                n_blocks += 1
            self._bus_binds.append(binds)
        self.buses = tuple(cur)
        self.bus_latency_samples = dict(lat)
        self._bus_out_index = dict(cur)
        self._main_latency = main_lat
        return n_blocks, ins, outs, main, [cur[b] for b in self.buses]

    def _bind_buses(self) -> None:
        chain = self._chain
        for i, node, reads, lats, src_lat, writes in self._bus_binds:
            if writes:
                node.bind_buses({b: chain.block(k) for b, k in writes.items()})
            if reads:
                node.bind_input_buses({b: chain.block(k) for b, k in reads.items()}, lats, src_lat)

    @property
    def prepared(self) -> bool:
        return self._chain is not None

    def _require(self) -> Chain:
        if self._chain is None:
            raise RuntimeError(f"pipeline {self.name!r}: call prepare() before processing")
        return self._chain

    @property
    def latency_samples(self) -> int:
        """Total look-ahead of the nodes on the main path, in samples at the pipeline rate (a
        bus's own is in :attr:`bus_latency_samples`)."""
        if self.prepared and self.buses:
            return self._main_latency
        return int(sum(int(n.latency_samples) for n, b in zip(self.nodes, self.on_bus) if b is None))

    def bus_output(self, bus: str) -> np.ndarray:
        """The preallocated ``(channels, block_size)`` block holding bus ``bus`` after the
        last node that runs on it (valid after :meth:`process_block`)."""
        chain = self._require()
        if bus not in self._bus_out_index:
            raise KeyError(f"pipeline {self.name!r} has no bus {bus!r} (buses: {', '.join(self.buses) or 'none'})")
        return chain.block(self._bus_out_index[bus])

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.sample_rate

    @property
    def budget_ms(self) -> float:
        """Real-time budget of one block."""
        return 1000.0 * self.block_size / self.sample_rate

    # ---- hot path ---------------------------------------------------------------------
    @property
    def input(self) -> np.ndarray:
        """The preallocated ``(channels, block_size)`` input block."""
        return self._require().input

    @property
    def output(self) -> np.ndarray:
        """The preallocated ``(channels, block_size)`` output block."""
        return self._require().output

    def process_block(self) -> None:
        """Process :attr:`input` into :attr:`output` (no allocation)."""
        self._chain.run()

    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        """Process one block from ``inp`` into ``out`` (both ``(channels, block_size)`` float32)."""
        chain = self._require()
        expected = (self.channels, self.block_size)
        if inp.shape != expected or out.shape != expected:
            raise ValueError(f"pipeline {self.name!r}: blocks must be {expected}, "
                             f"got inp {inp.shape} and out {out.shape}")
        np.copyto(chain.input, inp)
        chain.run()
        np.copyto(out, chain.output)

    def reset(self) -> None:
        """Clear every node's state and the stream position (statistics are kept)."""
        for node in self.nodes:
            node.reset()
        if self._chain is not None:
            self._chain.reset_position()
        self.events.clear()

    # ---- offline convenience -----------------------------------------------------------
    def _prepared_for(self, audio) -> np.ndarray:
        """``audio`` as float32 ``(channels, frames)`` (a 1-D signal is one channel), the pipeline
        prepared for its channel count."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[np.newaxis, :]
        if audio.ndim != 2:
            raise ValueError(f"pipeline {self.name!r}: audio must be (channels, frames), got shape {audio.shape}")
        if not self.prepared or audio.shape[0] != self.channels:
            self.prepare(audio.shape[0])
        return audio

    def process_array(self, audio: np.ndarray, *, compensate_latency: bool = True) -> np.ndarray:
        """Process a whole ``(channels, frames)`` array block by block; returns the same shape.

        With ``compensate_latency`` the output is aligned with the input (the look-ahead is
        flushed with zeros and trimmed from the start).
        """
        audio = self._prepared_for(audio)
        chain = self._require()
        lat = self.latency_samples if compensate_latency else 0
        n = audio.shape[1]
        total = n + lat
        n_blocks = -(-total // self.block_size)
        padded = np.zeros((audio.shape[0], n_blocks * self.block_size), dtype=np.float32)
        padded[:, :n] = audio
        out = np.empty_like(padded)
        inp_block, out_block = chain.input, chain.output
        bs = self.block_size
        for b in range(n_blocks):
            inp_block[...] = padded[:, b * bs:(b + 1) * bs]
            chain.run()
            out[:, b * bs:(b + 1) * bs] = out_block
        return np.ascontiguousarray(out[:, lat:lat + n])

    def process_array_buses(self, audio: np.ndarray, buses: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Process a whole ``(channels, frames)`` array; returns ``{bus: (channels, frames)}`` for
        ``buses`` (default: all), each aligned with the input (its own latency flushed and trimmed)."""
        audio = self._prepared_for(audio)
        chain = self._require()
        names = list(self.buses if buses is None else buses)
        blocks = [self.bus_output(b) for b in names]      # raises naming the buses there are
        lats = [self.bus_latency_samples[b] for b in names]
        n, bs = audio.shape[1], self.block_size
        n_blocks = -(-(n + max(lats, default=0)) // bs)
        padded = np.zeros((audio.shape[0], n_blocks * bs), dtype=np.float32)
        padded[:, :n] = audio
        outs = [np.empty_like(padded) for _ in names]
        for k in range(n_blocks):
            chain.input[...] = padded[:, k * bs:(k + 1) * bs]
            chain.run()
            for o, blk in zip(outs, blocks):
                o[:, k * bs:(k + 1) * bs] = blk
        return {b: np.ascontiguousarray(o[:, d:d + n]) for b, o, d in zip(names, outs, lats)}

    # ---- observation -------------------------------------------------------------------
    def drain_events(self) -> list[Event]:
        """Return and clear the events emitted since the last drain."""
        if self.events.count == 0:
            return []
        out = []
        for frame, source, code, value in self.events.drain():
            node = self._sources[source]
            names = node.event_names
            out.append(Event(time_s=frame / self.sample_rate, frame=int(frame), node=node.name,
                             event=names[code] if 0 <= code < len(names) else str(code),
                             value=float(value)))
        return out

    def stats(self) -> dict:
        """Timing against the real-time budget, deadline misses and sanitizing counts."""
        chain = self._require()
        blocks = chain.blocks
        recent = chain.recent_block_ns()
        tot, mx, last = chain.node_times()
        audio_s = blocks * self.block_size / self.sample_rate
        proc_s = chain.total_ns / 1e9

        def pct(q):
            return float(np.percentile(recent, q) / 1e6) if len(recent) else 0.0

        return {
            "blocks": int(blocks),
            "block_size": self.block_size,
            "sample_rate": self.sample_rate,
            "budget_ms": self.budget_ms,
            "deadline_misses": int(chain.deadline_misses),
            "realtime_factor": proc_s / audio_s if audio_s else 0.0,
            "block_ms_mean": proc_s * 1e3 / blocks if blocks else 0.0,
            "block_ms_p50": pct(50),
            "block_ms_p99": pct(99),
            "block_ms_max": chain.max_ns / 1e6,
            "latency_ms": self.latency_ms,
            "nonfinite_in": int(chain.nonfinite_in),
            "nonfinite_out": int(chain.nonfinite_out),
            "events_dropped": int(self.events.dropped),
            "nodes": [
                {"name": node.name, "type": type(node).__name__,
                 "mean_us": float(tot[i]) / blocks / 1e3 if blocks else 0.0,
                 "max_us": float(mx[i]) / 1e3,
                 "latency_samples": int(node.latency_samples),
                 **({"variant": node.variant_label, "switches": list(node.switches)}
                    if hasattr(node, "variant_label") else {}),
                 # what a node found in the audio (e.g. declip: the clipped fraction before and after)
                 **({"report": node.report()} if hasattr(node, "report") else {})}
                for i, node in enumerate(self.nodes)
            ],
        }

    def reset_stats(self) -> None:
        self._require().reset_stats()

    def __repr__(self) -> str:
        names = " -> ".join(n.name for n in self.nodes) or "(empty)"
        return (f"Pipeline({self.name!r}, {self.sample_rate} Hz, block {self.block_size}, "
                f"channels {self.channels}: {names})")

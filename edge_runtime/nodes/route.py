"""``route``: branch the pipeline on a decision node's label, with crossfades and hysteresis.

```toml
[[nodes]]
type = "vad"                    # any decision node (labels, current_index, probabilities)

[[nodes]]
type = "route"
decision = "vad"                # the name of a decision node earlier in the pipeline
crossfade_ms = 20.0             # click-free switch
curve = "linear"                # linear (default: branches of one input are correlated) or equal-power
attack_ms = 0.0                 # a new label must last this long before a switch starts
hold_ms = 100.0                 # after a switch, no other switch for this long (>= crossfade)
lookahead_ms = 0.0              # delay the audio so a decision applies this much earlier
idle = "run"                    # "run": every branch runs always; "reset": only the live ones

[nodes.branches.speech]         # a branch per label (or `when = ["a", "b"]`); `else` takes the rest
nodes = [{ type = "denoise", atten_limit_db = 30 }]

[nodes.branches.else]
gain_db = -20.0                 # after the branch's nodes; `mute = true` for silence
```

Semantics (decided here, see the README's routing section):

* Every branch is a sub-chain run by the compiled block loop (:class:`edge_runtime.engine.Chain`:
  per-node timing, deadline blame) on preallocated blocks. Branch outputs are aligned in time: each
  branch is delayed to the largest branch latency (the route's ``latency_samples``, plus
  ``lookahead_ms``), so a switch never jumps in time.
* ``idle = "run"`` (default): branches not selected keep running, so their state (a denoiser's
  recurrent state, filter memories) is warm and a switch crossfades between two live signals.
  ``idle = "reset"``: a branch that is neither selected nor fading out is not run (CPU saved) and is
  reset once; when it is selected again it starts from a clean state under the crossfade.
* A switch starts at a block boundary and crossfades over ``crossfade_ms`` (linear, which keeps
  the level of correlated branches -- they all process the same input -- or equal-power
  ``cos/sin``, for uncorrelated ones) from the old branch's output to the new one's; ``attack_ms``/``hold_ms``
  give hysteresis on top of the decision node's own, so a decision that toggles every block does
  not make the output chatter.
* Each switch is an event of the route named after the branch it switches to (value: the
  branch's index); the decision node emits its own label events.
* Model nodes inside branches stay under the governor: the route reports the deadline misses the
  block loop blames on it and steps down its slowest model node.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..engine import Chain, EventBuffer, Node
from .decision import is_decision_node

CURVES = ("equal-power", "linear")
IDLE = ("run", "reset")
BRANCH_KEYS = ("nodes", "when", "gain_db", "mute")
ELSE = ("else", "default")


class _Delay:
    """A fixed delay of ``d`` samples on (channels, block) blocks, two ping-pong buffers."""

    def __init__(self, channels: int, block: int, d: int):
        self.d, self.block = int(d), block
        self.a = np.zeros((channels, self.d + block), np.float32)
        self.b = np.zeros_like(self.a)
        self.out = self.a[:, :block]

    def reset(self) -> None:
        self.a[...] = 0.0
        self.b[...] = 0.0

    def push(self, x: np.ndarray) -> np.ndarray:
        """Return ``x`` delayed (a view valid until the next push)."""
        if self.d == 0:
            return x
        a, b, d, n = self.a, self.b, self.d, self.block
        b[:, :d] = a[:, n:n + d]
        b[:, d:] = x
        self.a, self.b = b, a
        return b[:, :n]


class Branch:
    def __init__(self, name: str, when: tuple, nodes: list, gain_db: float, mute: bool):
        self.name, self.when, self.nodes = name, tuple(when), list(nodes)
        self.gain_db, self.mute = float(gain_db), bool(mute)
        self.gain = np.float32(0.0 if mute else 10 ** (gain_db / 20))
        self.chain: Chain | None = None
        self.delay: _Delay | None = None
        self.out: np.ndarray | None = None
        self.idle = False

    @property
    def latency_samples(self) -> int:
        return int(sum(int(n.latency_samples) for n in self.nodes))


class Route(Node):
    """Selects one of several branches by the label of a decision node (see the module docstring)."""

    def __init__(self, decision: str, branches: list[Branch], crossfade_ms: float = 20.0,
                 curve: str = "linear", attack_ms: float = 0.0, hold_ms: float = 100.0,
                 lookahead_ms: float = 0.0, idle: str = "run", name: str | None = None):
        super().__init__(name or "route")
        if curve not in CURVES:
            raise ValueError(f"curve={curve!r}; expected one of {', '.join(CURVES)}")
        if idle not in IDLE:
            raise ValueError(f"idle={idle!r}; expected one of {', '.join(IDLE)}")
        for key, v, hi in (("crossfade_ms", crossfade_ms, 2000.0), ("attack_ms", attack_ms, 10000.0),
                           ("hold_ms", hold_ms, 60000.0), ("lookahead_ms", lookahead_ms, 2000.0)):
            if not 0.0 <= v <= hi:
                raise ValueError(f"{key}={v} is outside 0..{hi:g} ms")
        if not branches:
            raise ValueError("a route needs at least one branch ([nodes.branches.<label>] tables)")
        self.decision_name = str(decision)
        self.branches = list(branches)
        self.crossfade_ms, self.curve, self.idle = float(crossfade_ms), curve, idle
        self.attack_ms, self.hold_ms, self.lookahead_ms = float(attack_ms), float(hold_ms), float(lookahead_ms)
        self.event_names = tuple(b.name for b in self.branches)
        self.decision = None
        self.label_to_branch: np.ndarray | None = None
        for b in self.branches:
            for n in b.nodes:
                n.name = f"{self.name}.{b.name}.{n.name}"
        self.switch_count = 0

    # ---- linking (pipeline build time) ----------------------------------------------------
    def link(self, earlier: list) -> None:
        """Find the decision node among the nodes before this one and map its labels to branches.
        Raises ValueError naming what is wrong."""
        cands = [n for n in earlier if is_decision_node(n)]
        node = next((n for n in cands if n.name == self.decision_name), None)
        if node is None:
            have = ", ".join(repr(n.name) for n in cands) or "none"
            raise ValueError(f"decision = {self.decision_name!r} is not a decision node earlier in the "
                             f"pipeline (decision nodes before this route: {have})")
        labels = node.labels
        mapping = [-1] * len(labels)
        fallback = -1
        for i, b in enumerate(self.branches):
            if b.name in ELSE and not b.when:
                if fallback >= 0:
                    raise ValueError(f"branches.{b.name}: a second catch-all branch (also "
                                     f"branches.{self.branches[fallback].name})")
                fallback = i
                continue
            for lab in (b.when or (b.name,)):
                if lab not in labels:
                    raise ValueError(f"branches.{b.name}: label {lab!r} is not one of {node.name}'s labels "
                                     f"({', '.join(labels)})")
                if mapping[labels.index(lab)] >= 0:
                    raise ValueError(f"branches.{b.name}: label {lab!r} already goes to branches."
                                     f"{self.branches[mapping[labels.index(lab)]].name}")
                mapping[labels.index(lab)] = i
        missing = [labels[k] for k, m in enumerate(mapping) if m < 0]
        if missing and fallback < 0:
            raise ValueError(f"label(s) {', '.join(map(repr, missing))} of {node.name} have no branch "
                             "(add a [nodes.branches.else] table)")
        self.decision = node
        self.label_to_branch = np.array([m if m >= 0 else fallback for m in mapping], np.int64)

    def sub_nodes(self) -> list:
        """Every node inside the branches (the pipeline binds their events)."""
        return [n for b in self.branches for n in b.nodes]

    # ---- set-up -----------------------------------------------------------------------------
    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        super().prepare(sample_rate, block_size, channels)
        if self.decision is None:
            raise ValueError(f"{self.name}: route is not linked to its decision node {self.decision_name!r} "
                             "(build pipelines from a config, or call link(nodes_before_it))")
        for b in self.branches:
            for n in b.nodes:
                n.prepare(sample_rate, block_size, channels)
                if n.latency_samples < 0:
                    raise ValueError(f"{n.name}: negative latency")
        lat = max(b.latency_samples for b in self.branches)
        self.lookahead = int(round(self.lookahead_ms * sample_rate / 1000.0))
        self.latency_samples = lat + self.lookahead
        self.in_delay = _Delay(channels, block_size, self.lookahead)
        for b in self.branches:
            # the branch's own block loop; its events buffer only carries the block frame (nodes
            # inside emit into the pipeline's buffer, bound by Pipeline.prepare)
            b.chain = Chain(b.nodes, sample_rate, block_size, channels, EventBuffer(1))
            b.delay = _Delay(channels, block_size, lat - b.latency_samples)
            b.out = np.zeros((channels, block_size), np.float32)
            b.idle = False
        f = max(1, int(round(self.crossfade_ms * sample_rate / 1000.0)))
        self.fade_len = f
        t = np.minimum(np.arange(f + block_size, dtype=np.float64) / f, 1.0)
        if self.curve == "equal-power":
            fin, fout = np.sin(0.5 * np.pi * t), np.cos(0.5 * np.pi * t)
        else:
            fin, fout = t, 1.0 - t
        self.fade_in = fin.astype(np.float32)
        self.fade_out = fout.astype(np.float32)
        self.tmp = np.zeros((channels, block_size), np.float32)
        self.attack = int(round(self.attack_ms * sample_rate / 1000.0))
        self.hold = max(int(round(self.hold_ms * sample_rate / 1000.0)), f)
        self._rewind()

    def _rewind(self) -> None:
        self.active = int(self.label_to_branch[self.decision.current_index])
        self.prev = -1                  # branch fading out, -1 when no fade runs
        self.fade_pos = 0
        self.candidate = self.active
        self.candidate_run = 0
        self.since_switch = self.hold   # a first switch may happen at once

    def reset(self) -> None:
        for b in self.branches:
            for n in b.nodes:
                n.reset()
            if b.delay is not None:
                b.delay.reset()
            b.idle = False
        if self.label_to_branch is not None and hasattr(self, "in_delay"):
            self.in_delay.reset()
            self._rewind()

    # ---- hot path ---------------------------------------------------------------------------
    def _select(self) -> None:
        want = int(self.label_to_branch[self.decision.current_index])
        n = self.block_size
        self.since_switch += n
        if want != self.candidate:
            self.candidate = want
            self.candidate_run = 0
        self.candidate_run += n
        if (want != self.active and self.prev < 0 and self.candidate_run > self.attack
                and self.since_switch >= self.hold):
            self.prev = self.active
            self.active = want
            self.fade_pos = 0
            self.since_switch = 0
            self.switch_count += 1
            self.emit(self.branches[want].name, float(want))

    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        self._select()
        x = self.in_delay.push(inp)
        reset_idle = self.idle == "reset"
        for i, b in enumerate(self.branches):
            if reset_idle and i != self.active and i != self.prev:
                if not b.idle:
                    b.idle = True
                    for n in b.nodes:
                        n.reset()
                    b.delay.reset()
                continue
            b.idle = False
            chain = b.chain
            np.copyto(chain.input, x)
            chain.run()
            y = b.delay.push(chain.output)
            np.multiply(y, b.gain, out=b.out)
        cur = self.branches[self.active].out
        if self.prev < 0:
            np.copyto(out, cur)
            return
        p, n = self.fade_pos, self.block_size
        old = self.branches[self.prev].out
        np.multiply(cur, self.fade_in[p:p + n], out=out)
        np.multiply(old, self.fade_out[p:p + n], out=self.tmp)
        np.add(out, self.tmp, out=out)
        self.fade_pos = p + n
        if self.fade_pos >= self.fade_len:
            self.prev = -1

    # ---- observation ------------------------------------------------------------------------
    @property
    def active_branch(self) -> str:
        return self.branches[self.active].name

    def branch_stats(self) -> list[dict]:
        rows = []
        for b in self.branches:
            if b.chain is None:
                continue
            tot, mx, _ = b.chain.node_times()
            blocks = max(b.chain.blocks, 1)
            rows.append({"branch": b.name, "blocks_run": int(b.chain.blocks),
                         "nodes": [{"name": n.name, "mean_us": float(tot[i]) / blocks / 1e3,
                                    "max_us": float(mx[i]) / 1e3} for i, n in enumerate(b.nodes)]})
        return rows


class GovernedRoute(Route):
    """A route with model nodes in its branches: the governor steps the slowest one down.

    The block loop blames a late block on the route (its slowest top-level node); the route passes
    the step-down to the model node inside that spent the most time since the last look."""

    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        super().prepare(sample_rate, block_size, channels)
        self._models = [(b, i, n) for b in self.branches for i, n in enumerate(b.nodes) if hasattr(n, "step_down")]
        self._seen = [0] * len(self._models)

    def can_step_down(self) -> bool:
        return any(n.can_step_down() for _, _, n in self._models)

    @property
    def _loading(self) -> bool:
        return any(getattr(n, "_loading", False) for _, _, n in self._models)

    def step_down(self, reason: str = "", wait: bool = False):
        best, best_t = None, -1
        for k, (b, i, n) in enumerate(self._models):
            t = int(b.chain.node_time_ns(i))
            d = t - self._seen[k] if t >= self._seen[k] else t
            self._seen[k] = t
            if n.can_step_down() and d > best_t:
                best, best_t = n, d
        if best is None:
            return None
        label = best.step_down(reason=reason, wait=wait)
        return f"{best.name}:{label}" if label else None

    @property
    def variant_label(self) -> str:
        return ", ".join(f"{n.name}={n.variant_label}" for _, _, n in self._models)

    @property
    def switches(self) -> list:
        return [dict(s, node=n.name) for _, _, n in self._models for s in n.switches]


# ---- config -----------------------------------------------------------------------------
def parse_branches(value: Any, where: str, path, parse_nodes) -> list[dict]:
    """Validate ``[nodes.branches.<name>]`` tables; ``parse_nodes(list, where)`` parses sub-chains."""
    from ..errors import ConfigError

    if not isinstance(value, dict) or not value:
        raise ConfigError(f"{path}: {where} must be a table of branches ([{where}.<label>] sections with "
                          "nodes = [...], gain_db, mute, when)")
    out = []
    for bname, spec in value.items():
        w = f"{where}.{bname}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: {w} must be a table (keys: {', '.join(BRANCH_KEYS)})")
        unknown = [k for k in spec if k not in BRANCH_KEYS]
        if unknown:
            raise ConfigError(f"{path}: {w}.{unknown[0]}: unknown key (expected one of: {', '.join(BRANCH_KEYS)})")
        nodes = spec.get("nodes", [])
        if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
            raise ConfigError(f"{path}: {w}.nodes must be an array of node tables")
        if any(n.get("type") == "route" for n in nodes):
            raise ConfigError(f"{path}: {w}.nodes: a route inside a route branch is not supported")
        when = spec.get("when", [])
        if not isinstance(when, list) or not all(isinstance(x, str) and x for x in when):
            raise ConfigError(f"{path}: {w}.when = {when!r}; expected an array of label names")
        gain = spec.get("gain_db", 0.0)
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not math.isfinite(gain) \
                or not -120.0 <= gain <= 24.0:
            raise ConfigError(f"{path}: {w}.gain_db = {gain!r}; expected a number in -120..24 dB")
        mute = spec.get("mute", False)
        if not isinstance(mute, bool):
            raise ConfigError(f"{path}: {w}.mute = {mute!r}; expected true or false")
        out.append({"name": str(bname), "when": list(when), "gain_db": float(gain), "mute": mute,
                    "nodes": parse_nodes(nodes, f"{w}.nodes")})
    return out


def make_route(name=None, branches=(), build_nodes=None, **kw) -> Route:
    """Factory for the config loader: ``branches`` as parsed by :func:`parse_branches`,
    ``build_nodes(specs, where)`` instantiates a sub-chain."""
    built = []
    for b in branches:
        nodes = build_nodes(b["nodes"], f"branches.{b['name']}") if build_nodes else list(b["nodes"])
        built.append(Branch(b["name"], b.get("when") or (), nodes, b.get("gain_db", 0.0), b.get("mute", False)))
    cls = GovernedRoute if any(hasattr(n, "step_down") for b in built for n in b.nodes) else Route
    return cls(branches=built, name=name, **kw)

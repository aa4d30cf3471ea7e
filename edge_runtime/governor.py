"""The governor: steps an ML node down to a cheaper variant when it makes blocks late.

The compiled block loop blames every late block (time > the block's real-time budget) on its
slowest node. The runner calls :meth:`Governor.after_block` after each block; once per
``window_blocks`` the governor compares each ML node's blamed misses with ``max_miss_ratio`` and,
above it, calls the node's ``step_down`` (the next cheaper variant of the device profile's
ladder, loaded in the background and swapped in between blocks: no gap, no click; see
:mod:`edge_runtime.nodes.model`). Each step is logged (logger ``edge_runtime.governor``) and
emitted as the node's ``variant_step_down`` event.
"""
from __future__ import annotations

import logging

log = logging.getLogger("edge_runtime.governor")

__all__ = ["Governor"]


class Governor:
    """Watch ``pipeline``'s deadline misses per node and step the guilty ML node down.

    ``window_blocks``: how many blocks between looks (100 = 1 s at 10 ms blocks);
    ``max_miss_ratio``: the share of a window's blocks a node may make late before it is stepped
    down; ``cooldown_windows``: windows to wait after a step before judging that node again
    (its new variant is measured on fresh blocks).
    """

    def __init__(self, pipeline, *, window_blocks: int = 100, max_miss_ratio: float = 0.05,
                 cooldown_windows: int = 2):
        if window_blocks < 1:
            raise ValueError(f"governor window_blocks={window_blocks}; expected >= 1")
        if not 0.0 <= max_miss_ratio < 1.0:
            raise ValueError(f"governor max_miss_ratio={max_miss_ratio}; expected 0 <= ratio < 1")
        self.pipeline = pipeline
        self.window = int(window_blocks)
        self.max_misses = int(max_miss_ratio * window_blocks)
        self.cooldown = int(cooldown_windows)
        self.steps: list[dict] = []
        self._count = 0
        self._nodes: list = []
        self._last: list[int] = []
        self._hold: list[int] = []
        self._warned: set = set()
        self._chain = None

    def attach(self) -> "Governor":
        """(Re)read the pipeline's steppable nodes; called by the runner after ``prepare``."""
        self._chain = self.pipeline._require()
        self._nodes = [(i, n) for i, n in enumerate(self.pipeline.nodes) if hasattr(n, "step_down")]
        self._last = [0] * len(self._nodes)
        self._hold = [0] * len(self._nodes)
        self._count = 0
        return self

    def after_block(self) -> None:
        """Count one block; every ``window_blocks`` blocks, judge the nodes."""
        self._count += 1
        if self._count >= self.window:
            self._count = 0
            self.check()

    def check(self) -> None:
        chain = self._chain
        if chain is None:
            return
        for k, (i, node) in enumerate(self._nodes):
            m = chain.node_misses(i)
            d = m - self._last[k] if m >= self._last[k] else m  # statistics were reset
            self._last[k] = m
            if self._hold[k] > 0:
                self._hold[k] -= 1
                continue
            if d <= self.max_misses:
                continue
            reason = f"{d} of the last {self.window} blocks were late"
            if node.can_step_down():
                old = node.variant_label
                new = node.step_down(reason=reason)
                if new is not None:
                    self._hold[k] = self.cooldown
                    self.steps.append({"node": node.name, "from": old, "to": new, "reason": reason,
                                       "block": int(chain.blocks)})
                    log.warning("%s: %s; stepping down %s -> %s", node.name, reason, old, new)
            elif node.name not in self._warned and not getattr(node, "_loading", False):
                self._warned.add(node.name)
                log.warning("%s: %s and no cheaper measured variant is left (running %s); run "
                            "`edge-runtime profile` to measure this device's variants", node.name, reason,
                            node.variant_label)

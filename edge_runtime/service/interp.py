"""Keep the Python interpreter out of the audio threads' way while ``serve`` runs.

A model node calls ONNX Runtime or LiteRT, which release the GIL while the model runs; the audio
thread must take it back before its block can finish. Two things in the rest of the process can
hold it meanwhile (measured with ``denoise`` on the 2-core x86 VM, docs/soak.md):

* **Another thread running Python** (a metrics scrape, an MQTT publish, the log): CPython hands
  the GIL over only every ``sys.getswitchinterval()`` (5 ms by default). With a thread busy 20 ms
  of every 100 ms beside it, ``denoise``'s 10 ms blocks took p99 6.5 ms and up to 10.3 ms; with
  the interval at 0.5 ms, p99 0.37 ms and at most 0.94 ms. :data:`SWITCH_INTERVAL_S` is that.
* **The cyclic garbage collector**: a full (generation 2) collection walks every tracked object
  — 43 000 of them once a model pipeline, ``serve`` and paho are loaded — and takes 8-21 ms here
  (41 ms under a busy allocating thread), holding the GIL throughout. That was the long tail of
  the first soak's deadline misses (31-65 ms, only in pipelines with a model; the pure-Cython DSP
  pipelines never release the GIL mid-block and had none). Once everything is built,
  :meth:`GcGuard.settle` collects once and ``gc.freeze()``-s what is left: those objects live as
  long as the service, and later collections walk only what was made since.

The reference counts still free everything at once; only reference cycles made before a freeze
wait for :meth:`GcGuard.unfreeze` (a reload calls it, so a replaced pipeline can be collected, and
the daemon freezes again once the swap is over).
"""
from __future__ import annotations

import gc
import sys
import time

__all__ = ["SWITCH_INTERVAL_S", "GcGuard"]

SWITCH_INTERVAL_S = 0.0005


class GcGuard:
    """Collections counted and timed per generation (for ``/status``), freezes on request."""

    def __init__(self, switch_interval_s: float | None = SWITCH_INTERVAL_S):
        self.counts = [0, 0, 0]
        self.max_ms = [0.0, 0.0, 0.0]
        self.total_ms = [0.0, 0.0, 0.0]
        self.freezes = 0
        self.dirty = False              # objects made by a reload wait to be frozen
        self._t = 0.0
        self._old_switch = None
        self._switch = switch_interval_s
        self._installed = False
        self._settling = False

    def install(self) -> "GcGuard":
        if not self._installed:
            gc.callbacks.append(self._cb)
            self._old_switch = sys.getswitchinterval()
            if self._switch:
                sys.setswitchinterval(self._switch)
            self._installed = True
        return self

    def uninstall(self) -> None:
        if self._installed:
            try:
                gc.callbacks.remove(self._cb)
            except ValueError:
                pass
            sys.setswitchinterval(self._old_switch)
            gc.unfreeze()               # an embedding process (the tests) gets its collector back
            self._installed = False

    def _cb(self, phase: str, info: dict) -> None:
        if self._settling:              # settle's own collection is not one the audio waited for
            return
        if phase == "start":
            self._t = time.perf_counter()
            return
        g = info.get("generation", 0)
        ms = (time.perf_counter() - self._t) * 1e3
        self.counts[g] += 1
        self.total_ms[g] += ms
        if ms > self.max_ms[g]:
            self.max_ms[g] = ms

    def settle(self) -> None:
        """One full collection now, then freeze what survived (call before the audio starts, or
        when no swap is in flight). The first one also zeroes the counts: ``/status`` reports the
        collections the audio threads lived with, not those of the start-up's imports."""
        if self.freezes == 0:
            self.counts, self.max_ms, self.total_ms = [0, 0, 0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        self._settling = True
        try:
            gc.collect()
        finally:
            self._settling = False
        gc.freeze()
        self.freezes += 1
        self.dirty = False

    def unfreeze(self) -> None:
        """Back to ordinary collection (before a reload replaces pipelines)."""
        gc.unfreeze()
        self.dirty = True

    def snapshot(self) -> dict:
        return {"collections": list(self.counts), "max_ms": [round(v, 3) for v in self.max_ms],
                "total_ms": [round(v, 3) for v in self.total_ms], "frozen_objects": gc.get_freeze_count(),
                "freezes": self.freezes, "switch_interval_ms": round(sys.getswitchinterval() * 1e3, 3)}

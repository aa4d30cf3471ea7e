"""Base of ML nodes: a model from the manifest (or a file), its variant, and stepping down.

An ML node names a ``model`` and a ``variant`` (``auto``: the device profile's choice, see
:mod:`edge_runtime.models.select`). In ``prepare`` it loads the session and binds it to arrays
it owns (:meth:`ModelNode.bind`, the subclass's part). :meth:`ModelNode.step_down` switches to
the next cheaper measured variant without a gap: the new session is loaded and bound on a
background thread while the current one keeps running, and the swap happens between two blocks
(one attribute store). Recurrent state lives in the node's arrays, not in the session, so the
new variant carries on from the old one's state: no reset, no click.
"""
from __future__ import annotations

import abc
import logging
import threading

from ..engine import Node
from ..errors import ModelError

log = logging.getLogger("edge_runtime.governor")

MODEL_SUFFIXES = (".onnx", ".tflite", ".xml")


class ModelNode(Node):
    """An ML node whose model variant can be chosen per device and stepped down at run time.

    Subclasses implement :meth:`bind` (make the per-call bindings of a session onto the node's
    arrays, after checking the session's inputs and outputs) and call ``self.calls`` from
    ``process``; they call :meth:`swap_pending` first thing in ``process``.
    """

    event_names = ("variant_step_down",)

    def __init__(self, model: str, variant: str = "auto", backend: str = "auto", threads: int = 1,
                 name: str | None = None):
        super().__init__(name)
        self.model, self.variant = model, variant
        self.backend = None if backend in (None, "auto") else backend
        self.threads = int(threads)
        self.session = None
        self.calls = None
        self.choice = None           # the VariantChoice running now (None for a model file)
        self.ladder: list = []       # cheaper variants not tried yet, next first
        self.switches: list[dict] = []
        self._pending = None
        self._loading = False
        self._generation = 0         # bumped by prepare: a step-down loaded for older arrays is dropped
        self._lock = threading.Lock()

    # ---- loading -------------------------------------------------------------------------
    def choices(self) -> list:
        """The variants to run, first the one to start with (see models.select)."""
        from ..models import default_registry
        from ..models.select import resolve_variants

        return resolve_variants(default_registry()[self.model], self.variant, self.backend)

    def open_session(self, choice):
        """Load ``choice`` (a VariantChoice) through the model layer: verified, shared."""
        from ..models import load

        return load(choice.variant, backend=choice.backend, threads=self.threads)

    def load_first(self):
        """Resolve the variant ladder and load the first rung; returns the session."""
        if self.model.endswith(MODEL_SUFFIXES):
            from ..backends import load_session

            self.choice, self.ladder = None, []
            return load_session(self.model, backend=self.backend, threads=self.threads)
        chain = self.choices()
        self.choice, self.ladder = chain[0], list(chain[1:])
        return self.open_session(self.choice)

    @abc.abstractmethod
    def bind(self, session):
        """Check ``session``'s I/O and return the callable(s) ``process`` uses (bound once)."""

    def prepare_model(self) -> None:
        """Load and bind the first variant (call from ``prepare`` after allocating arrays)."""
        with self._lock:
            self._pending = None
            self._loading = False
            self._generation += 1
        session = self.load_first()
        self.calls = self.bind(session)
        self.session = session

    @property
    def variant_label(self) -> str:
        return self.choice.label if self.choice is not None else str(self.model)

    # ---- stepping down -------------------------------------------------------------------
    def can_step_down(self) -> bool:
        return bool(self.ladder) and not self._loading

    def step_down(self, reason: str = "", wait: bool = False) -> str | None:
        """Start switching to the next cheaper variant; returns its label, or None when there is
        none (or a switch is already loading). The audio keeps flowing on the current variant
        until the new one is loaded and bound; ``wait`` blocks until then (tests, tools)."""
        with self._lock:
            if self._loading or not self.ladder:
                return None
            nxt = self.ladder.pop(0)
            self._loading = True
            gen = self._generation
        t = threading.Thread(target=self._load_next, args=(nxt, reason, gen), daemon=True,
                             name=f"edge_runtime-stepdown-{self.name}")
        t.start()
        if wait:
            t.join()
        return nxt.label

    def _load_next(self, nxt, reason: str, gen: int) -> None:
        try:
            session = self.open_session(nxt)
            calls = self.bind(session)
        except (ModelError, OSError, ValueError, RuntimeError) as exc:
            log.warning("%s: cannot step down to %s (%s)", self.name, nxt.label, exc)
            with self._lock:
                if gen == self._generation:
                    self._loading = False
            return
        with self._lock:
            if gen == self._generation:  # not re-prepared meanwhile (its bindings use live arrays)
                self._pending = (nxt, session, calls, reason)

    def swap_pending(self) -> None:
        """Between blocks: put a loaded cheaper variant in place (a no-op almost always)."""
        if self._pending is None:
            return
        with self._lock:
            nxt, session, calls, reason = self._pending
            self._pending = None
            self._loading = False
        old = self.variant_label
        self.choice, self.session, self.calls = nxt, session, calls
        self.switches.append({"from": old, "to": nxt.label, "reason": reason})
        log.warning("%s: stepped down %s -> %s%s", self.name, old, nxt.label, f" ({reason})" if reason else "")
        self.emit("variant_step_down", float(len(self.switches)))

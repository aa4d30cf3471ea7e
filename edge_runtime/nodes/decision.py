"""The decision interface: nodes that label the stream (``vad``, ``classify``) for ``route``.

A decision node passes its audio through unchanged and keeps, updated every block after its own
smoothing and hysteresis:

* ``labels: tuple[str, ...]`` -- fixed at construction (a route checks its branches against them
  when the pipeline is built);
* ``current_index: int`` and ``current_label: str`` -- the decision now;
* ``probabilities`` -- a preallocated float32 array, one value per label (the smoothed scores the
  decision was taken from; written in place, never replaced).

When the decision changes it emits an event through :meth:`Node.emit` whose name is the new label
and whose value is that label's probability; every label is therefore in ``event_names``.
:class:`DecisionMixin` holds the attributes and the change/emit logic; a node mixes it in before
its engine base class and calls :meth:`DecisionMixin.set_decision`.
"""
from __future__ import annotations

import numpy as np

__all__ = ["DecisionMixin", "is_decision_node"]


class DecisionMixin:
    """Attributes and event of a decision node (see the module docstring)."""

    labels: tuple[str, ...] = ()

    def init_decision(self, labels, initial: int = 0) -> None:
        labels = tuple(str(x) for x in labels)
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"{getattr(self, 'name', '?')}: a decision node needs two or more distinct labels, "
                             f"got {labels}")
        self.labels = labels
        self.probabilities = np.zeros(len(labels), np.float32)
        self.current_index = int(initial)
        self.current_label = labels[initial]
        self.decision_changes = 0
        self._initial = int(initial)

    def reset_decision(self) -> None:
        self.probabilities[...] = 0.0
        self.current_index = self._initial
        self.current_label = self.labels[self._initial]

    def set_decision(self, index: int, offset: int = 0) -> None:
        """Make ``index`` the decision (no-op when unchanged); emits the label's event at ``offset``
        frames into the current block."""
        if index == self.current_index:
            return
        self.current_index = index
        self.current_label = self.labels[index]
        self.decision_changes += 1
        self.emit(self.current_label, float(self.probabilities[index]), offset)


def is_decision_node(node) -> bool:
    return (isinstance(getattr(node, "labels", None), tuple) and len(node.labels) >= 2
            and hasattr(node, "current_index") and hasattr(node, "probabilities"))

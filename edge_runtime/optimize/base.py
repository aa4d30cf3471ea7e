"""The chain base class (a leaf module: the chains and the registry both import it)."""
from __future__ import annotations

import abc
from typing import Mapping

import numpy as np

from .space import ParameterSpace

__all__ = ["Chain"]


class Chain(abc.ABC):
    """A parameterised DSP chain the optimizer can fit to a target sound."""

    name: str = ""
    sample_rate: int = 16000
    #: True: the target is an (input, processed) pair and ``render`` needs the input
    needs_input: bool = False
    space: ParameterSpace

    @abc.abstractmethod
    def render(self, params: Mapping[str, float], n_frames: int, input: np.ndarray | None = None) -> np.ndarray:
        """Mono float32 audio of ``n_frames`` at :attr:`sample_rate` for ``params`` (all names of the
        space; :meth:`ParameterSpace.complete` fills the rest)."""

    def config(self) -> dict:
        """Keyword arguments that rebuild this chain with :func:`make_chain` (written to presets)."""
        return {"sample_rate": self.sample_rate}

    def with_fixed(self, fixed: Mapping[str, float]) -> "Chain":
        self.space = self.space.with_fixed(fixed)
        return self

    def adapt_to(self, target) -> dict:
        """Narrow the search from what can be measured on the target (the synth: its pitch); returns
        what was measured. The default does nothing."""
        return {}

"""The chain registry: a chain is a parameter space and a ``render(params, n_frames, input)``.

A chain renders mono float32 audio at its ``sample_rate``: a synthesizer from nothing (``synth``),
an effect chain from an input signal (``effects``, whose target is an (input, processed) pair).
Chains are built by name in every worker process of the optimizer, so a factory takes only plain
keyword arguments (numbers, strings).

Adding a chain::

    from edge_runtime.optimize.chains import Chain, register_chain
    register_chain("mychain", MyChain, "what it renders")

``ddsp`` (:mod:`.ddsp`) is issue 25's DDSP instruments: the searched parameters are a note's
controls. Chains from modules that may be missing from a build go in ``LAZY_CHAINS``
(name -> (module, help); the module defines ``make_chain(**kwargs) -> Chain``).
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

import numpy as np

from ..errors import ConfigError
from .base import Chain

__all__ = ["Chain", "ChainType", "CHAINS", "LAZY_CHAINS", "register_chain", "make_chain", "chain_names"]


@dataclasses.dataclass(frozen=True)
class ChainType:
    name: str
    factory: Callable[..., Chain]
    help: str


CHAINS: dict[str, ChainType] = {}
#: chains provided by modules that may not be part of this build: name -> (module, help)
LAZY_CHAINS: dict[str, tuple[str, str]] = {}


def register_chain(name: str, factory: Callable[..., Chain], help: str) -> None:
    CHAINS[name] = ChainType(name, factory, help)


def _builtin() -> None:
    if "synth" not in CHAINS:
        from .effects import EffectsChain
        from .synth import SynthChain

        register_chain("synth", SynthChain, "subtractive synth: saw/square/sine/noise, detune, ADSR, "
                                            "resonant low-pass with envelope, gain; one note")
        from .ddsp import DdspChain

        register_chain("ddsp", DdspChain, "one note of a DDSP instrument (violin, flute, trumpet decoders): pitch, "
                                          "level, ADSR loudness envelope, vibrato")
        register_chain("effects", EffectsChain, "high-pass -> peak EQ -> high shelf -> gain -> limiter (engine "
                                                "nodes); target = (input, processed)")


def chain_names() -> list[str]:
    _builtin()
    return list(CHAINS) + [n for n in LAZY_CHAINS if n not in CHAINS]


def make_chain(name: str, **kwargs) -> Chain:
    """The chain ``name`` built with ``kwargs``; an unknown or unavailable name is one ConfigError."""
    _builtin()
    if name not in CHAINS and name in LAZY_CHAINS:
        module, help_ = LAZY_CHAINS[name]
        try:
            mod = importlib.import_module(module)
        except ImportError:
            raise ConfigError(f"chain {name!r} ({help_}) is not available in this build: {module} is missing "
                              f"(available: {', '.join(CHAINS)})") from None
        register_chain(name, mod.make_chain, help_)
    ct = CHAINS.get(name)
    if ct is None:
        raise ConfigError(f"chain {name!r} is not known (expected one of {', '.join(chain_names())})")
    try:
        return ct.factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"chain {name!r}: {e}") from None

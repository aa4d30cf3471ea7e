"""Sound matching: fit a chain's parameters to a target sound, presets, preset generation.

* :mod:`.chains` the chain registry (``synth``, ``effects``; ``ddsp`` plugs in there),
* :mod:`.space` parameter spaces, :mod:`.loss` the multi-resolution STFT loss,
* :mod:`.search` CMA-ES, GA, random search with a process pool, :mod:`.preset` preset files,
* :mod:`.regressor` audio -> preset (an ONNX model), :mod:`.cli` the ``optimize`` and ``preset`` commands.

See docs/optimize.md.
"""
from .chains import CHAINS, Chain, chain_names, make_chain, register_chain
from .loss import LossConfig, MultiResolutionLoss
from .space import Param, ParameterSpace
from .target import Target, load_audio, make_target

__all__ = ["CHAINS", "Chain", "LossConfig", "MultiResolutionLoss", "Param", "ParameterSpace", "Target",
           "chain_names", "load_audio", "make_chain", "make_target", "register_chain"]

"""Preset generation: audio -> a preset of the ``synth`` chain in one model call (< 50 ms per clip).

A scikit-learn MLP (StandardScaler -> MLPRegressor) from :func:`~.features.preset_features` to the
chain's unit-cube parameters, trained on renders of random presets drawn from :func:`sample_presets`
(recipe: ``firmware_tools/train/train_preset_regressor.py``, data:
``firmware_tools/data/build_presets.py``), shipped as ONNX (skl2onnx; no pickle) under the manifest
name ``preset_synth`` and run through the model layer. Its answer is the optimizer's starting point
(``--init regressor``) or, with ``--budget 0``, the preset itself.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["MODEL_NAMES", "CLIP_SECONDS", "sample_presets", "predict_unit", "predict_preset"]

#: chain -> manifest model name
MODEL_NAMES = {"synth": "preset_synth"}
#: the clip length the regressor is trained on (longer or shorter targets still work: the features
#: are time-normalised, but attack/decay/release are seconds, so expect more error there)
CLIP_SECONDS = 0.75
_SESSIONS: dict = {}


def sample_presets(space, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random presets (unit-cube points of ``space``): uniform, except the noise level, whose
    unit value is squared (a preset mostly noise is rare; uniform made a third of them noise)."""
    U = rng.random((n, space.dim))
    names = [p.name for p in space.free]
    if "noise" in names:
        U[:, names.index("noise")] **= 2
    return U


def _session(chain_name: str):
    name = MODEL_NAMES.get(chain_name)
    if name is None:
        raise ConfigError(f"no preset regressor for chain {chain_name!r} (there is one for: "
                          f"{', '.join(MODEL_NAMES)}); use --init default")
    if name not in _SESSIONS:
        from ..models import default_registry, load

        reg = default_registry()
        if name not in reg:
            raise ConfigError(f"model {name!r} is not in the manifest (train it: "
                              "firmware_tools/train/train_preset_regressor.py)")
        model = reg[name]
        variant = model.variant(format="onnx", precision="fp32")
        _SESSIONS[name] = (load(variant, threads=1, model=model), model)
    return _SESSIONS[name]


def predict_unit(chain, audio: np.ndarray) -> np.ndarray:
    """The regressor's unit-cube point of all the chain's parameters (fixed ones included) for
    ``audio`` (mono, at the chain's rate)."""
    from .features import preset_features

    sess, model = _session(chain.name)
    x = preset_features(audio, chain.sample_rate)[None, :]
    out = sess.run({model.inputs[0].name: x})
    u = np.asarray(next(iter(out.values())), np.float64).reshape(-1)
    return np.clip(u, 0.0, 1.0)


def predict_preset(chain, target) -> dict:
    """The regressor's preset for ``target`` (a :class:`~.target.Target`), parameters by name; the
    note comes from the measured pitch where the search range was narrowed to it."""
    from .space import ParameterSpace

    full = ParameterSpace(chain.space.base)
    params = full.decode(predict_unit(chain, target.audio))
    if "note" in chain.space.ranges:
        lo, hi = chain.space.ranges["note"]
        params["note"] = (lo + hi) / 2.0
    return params

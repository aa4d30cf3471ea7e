"""edge_runtime: real-time ML audio processing for edge devices.

``from edge_runtime.api import Pipeline, nodes``: pipelines of nodes on NumPy arrays, the same
pipelines the CLI and the TOML files run (see :mod:`edge_runtime.api`). ``edge_runtime.nodes`` is
the package of the node implementations the engine runs.
"""
from ._version import __version__

__all__ = ["Pipeline", "available_models", "__version__"]


def __getattr__(name):  # the API on first use: `import edge_runtime` stays light (the CLI, the service)
    if name in ("Pipeline", "available_models"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'edge_runtime' has no attribute {name!r}")

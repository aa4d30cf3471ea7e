"""Where edge_runtime keeps its state on disk (measured device profiles, learned states).

A leaf module: the model layer (profiles), the nodes (an anomaly node's learned state) and the
commands all ask it, so none of them imports another for a folder name.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SERVICE_STATE_DIR", "state_dir"]

#: a service's state folder (``edge-runtime profile --service``, the systemd unit)
SERVICE_STATE_DIR = "/var/lib/edge_runtime"


def state_dir(state_dir=None, service: bool = False) -> Path:
    """The state folder: ``state_dir`` if given; ``/var/lib/edge_runtime`` for a service; else
    ``$EDGE_RUNTIME_STATE``, ``$XDG_STATE_HOME/edge_runtime``, ``~/.local/state/edge_runtime``."""
    if state_dir is not None:
        return Path(os.fspath(state_dir))
    if service:
        return Path(SERVICE_STATE_DIR)
    env = os.environ.get("EDGE_RUNTIME_STATE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(xdg) / "edge_runtime"

"""The systemd unit for ``edge-runtime serve`` (filled in below)."""
from __future__ import annotations


def add_install_arguments(p) -> None:
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--output", "-o")


def install_service(args) -> int:
    raise NotImplementedError

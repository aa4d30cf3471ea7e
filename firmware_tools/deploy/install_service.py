"""Generate and install the systemd unit, its user and a starting config (same as `edge-runtime install-service`).

For image builds, write into the image's root without touching this machine, naming where
edge_runtime will live on the device:

    python firmware_tools/deploy/install_service.py --root /mnt/rootfs \
        --exec /opt/edge_runtime/bin/edge-runtime --watchdog-sec 10

On the device itself (as root): `edge-runtime install-service --enable`. `--dry-run` prints the unit
and the steps; `--output FILE` writes only the unit (check it with `systemd-analyze verify FILE`).
The unit's content and hardening are documented in edge_runtime/service/unit.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_runtime.errors import EdgeRuntimeError  # noqa: E402
from edge_runtime.service.unit import add_install_arguments, install_service  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_install_arguments(p)
    args = p.parse_args(argv)
    try:
        return install_service(args)
    except EdgeRuntimeError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())

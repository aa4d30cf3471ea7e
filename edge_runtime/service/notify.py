"""systemd's notify protocol without libsystemd: one datagram to ``$NOTIFY_SOCKET`` per message.

``Type=notify`` services say ``READY=1`` once they serve, ``WATCHDOG=1`` at least every
``WatchdogSec=`` (systemd passes it as ``$WATCHDOG_USEC``; pinging at half of it is the custom),
``RELOADING=1`` / ``READY=1`` around a reload, ``STOPPING=1`` when shutting down and ``STATUS=...``
for ``systemctl status``. The socket is a path or, starting with ``@``, a Linux abstract socket.
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op.
"""
from __future__ import annotations

import os
import socket
import time

__all__ = ["Notifier"]


class Notifier:
    """Send sd_notify messages; ``watchdog_s`` is systemd's watchdog timeout (None when off)."""

    def __init__(self, environ=None):
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET") or ""
        self.address = None
        if addr.startswith("@"):
            self.address = "\0" + addr[1:]          # abstract namespace
        elif addr.startswith("/"):
            self.address = addr
        self._sock = None
        self.watchdog_s = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self.sent = 0
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; False (and counted) if it could not be sent."""
        if self.address is None:
            return False
        msg = "\n".join(fields).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(msg, self.address)
            self.sent += 1
            return True
        except OSError:
            # systemd gone or the socket not there (e.g. a test that stopped listening): never fatal
            self.errors += 1
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *( [f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # Type=notify-reload (systemd 253+) wants the monotonic time with RELOADING=1
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *( [f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

"""Run ``edge-runtime serve`` as a subprocess the way systemd does: a NOTIFY_SOCKET to listen on,
WATCHDOG_USEC, signals; collect its JSON log lines and its notify datagrams."""
from __future__ import annotations

import json
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket (a path, or '@' abstract)."""

    def __init__(self, tmp_path: Path, abstract: bool = False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"edge_runtime_test_{os.getpid()}_{secrets.token_hex(4)}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            path = str(tmp_path / "notify.sock")
            self.sock.bind(path)
            self.env_value = path
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict]] = []
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))

    def keys(self) -> list[str]:
        """The message kinds in order (READY, WATCHDOG, STOPPING, RELOADING, STATUS)."""
        out = []
        for _, m in list(self.messages):
            for k in ("READY", "WATCHDOG", "STOPPING", "RELOADING"):
                if k in m:
                    out.append(k)
        return out

    def wait_for(self, key: str, count: int = 1, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.keys().count(key) >= count:
                return True
            time.sleep(0.02)
        return False

    def close(self):
        self._stop = True
        self.sock.close()


class ServeProcess:
    """``python -m edge_runtime serve --config CONFIG`` with its log lines parsed as they come."""

    def __init__(self, config: Path, notify: NotifyListener | None = None, env: dict | None = None,
                 watchdog_usec: int | None = None):
        e = dict(os.environ)
        e.pop("EDGE_RUNTIME_PIPELINES", None)
        e["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else []))
        e["PYTHONUNBUFFERED"] = "1"
        if notify is not None:
            e["NOTIFY_SOCKET"] = notify.env_value
        if watchdog_usec:
            e["WATCHDOG_USEC"] = str(watchdog_usec)
        if env:
            e.update(env)
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "serve", "--config", str(config)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e)
        self.lines: list[dict] = []
        self.raw: list[str] = []
        self._q: queue.Queue = queue.Queue()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()
        self.stderr = ""

    def _read(self):
        for line in self.proc.stdout:
            text = line.decode(errors="replace").rstrip("\n")
            self.raw.append(text)
            try:
                rec = json.loads(text)
            except ValueError:
                continue
            self.lines.append(rec)

    def wait_event(self, event: str, timeout: float = 30.0, count: int = 1) -> dict | None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            hits = [r for r in list(self.lines) if r.get("event") == event]
            if len(hits) >= count:
                return hits[count - 1]
            if self.proc.poll() is not None and not self._t.is_alive():
                hits = [r for r in self.lines if r.get("event") == event]
                return hits[count - 1] if len(hits) >= count else None
            time.sleep(0.02)
        return None

    def events(self, event: str) -> list[dict]:
        return [r for r in list(self.lines) if r.get("event") == event]

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._t.join(5)
        self.stderr = self.proc.stderr.read().decode(errors="replace")
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def sawtooth(n: int, period: int = 20011, amplitude: int = 10005, channels: int = 1, dtype="<i2"):
    """A counter-like signal: any lost, duplicated or shifted frame shows (period is prime)."""
    import numpy as np

    base = (np.arange(n, dtype=np.int64) % period) - amplitude
    cols = [base + 7 * c for c in range(channels)]
    return np.stack(cols, axis=1).astype(dtype)


def alsa_conf(tmp_path: Path, infile: Path, outfile: Path, extra: str = "", cap_name="test_cap") -> Path:
    conf = tmp_path / "asound.conf"
    conf.write_text(
        f'pcm.test_play {{ type file; slave.pcm {{ type null }}; file "{outfile}"; format "raw" }}\n'
        f'pcm.{cap_name} {{ type file; slave.pcm {{ type null }}; file "/dev/null"; infile "{infile}"; '
        'format "raw" }\n'
        f'pcm.!default {{ type asym; playback.pcm "test_play"; capture.pcm "{cap_name}" }}\n' + extra)
    return conf

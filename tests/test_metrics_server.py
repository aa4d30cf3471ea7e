"""The metrics endpoint under hostile or careless clients (issue 30): a cap on concurrent
requests, a read timeout for half-open connections, quiet client resets, loopback by default,
IPv6 loopback."""
from __future__ import annotations

import json
import socket
import struct
import threading
import time
import urllib.request

import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.service import metrics as m
from edge_runtime.service.config import parse_service_config

PIPE = {"pipeline": "speech16k", "input": "in.raw", "sample_rate": 16000, "channels": 1}


def _snap(extra=None):
    s = {"version": "t", "pid": 1, "config": "c", "uptime_s": 1.0, "reloads": {"ok": 0, "failed": 0},
         "watchdog_s": None, "watchdog_pings": 0, "pipelines": []}
    s.update(extra or {})
    return s


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(m._Handler, "timeout", 2.0)
    srv = m.MetricsServer(("127.0.0.1", 0), _snap)
    srv.start()
    yield srv
    srv.close()


def _threads():
    return sum(t.name.startswith("Thread-") or "process_request" in t.name for t in threading.enumerate())


def test_half_open_connections_neither_pile_up_threads_nor_block_for_long(server):
    host, port = server._httpd.server_address[:2]
    before = threading.active_count()
    socks = []
    for _ in range(60):                               # connect, send nothing
        s = socket.create_connection((host, port), timeout=5)
        socks.append(s)
    time.sleep(0.2)
    assert threading.active_count() - before <= m.MAX_CONNECTIONS
    assert server._httpd.refused >= 60 - m.MAX_CONNECTIONS - 2
    time.sleep(2.5)                                   # > the read timeout: the held slots are freed
    body = urllib.request.urlopen(server.url + "/status", timeout=5).read()
    assert json.loads(body)["version"] == "t"
    for s in socks:
        s.close()
    time.sleep(0.3)
    assert threading.active_count() <= before + 1


def test_client_reset_mid_response_prints_no_traceback(monkeypatch, capfd):
    big = _snap({"blob": "x" * (16 << 20)})          # a 16 MB answer: the write is under way at the reset
    srv = m.MetricsServer(("127.0.0.1", 0), lambda: big)
    srv.start()
    try:
        host, port = srv._httpd.server_address[:2]
        for _ in range(3):
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(100)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # RST on close
            s.close()
        time.sleep(1.0)
        assert json.loads(urllib.request.urlopen(srv.url + "/status", timeout=10).read())["version"] == "t"
    finally:
        srv.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err[:2000]


def test_ipv6_loopback_is_served():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError as e:
        pytest.skip(f"no IPv6 loopback on this machine: {e}")
    srv = m.MetricsServer(("::1", 0), _snap)
    srv.start()
    try:
        assert srv.url.startswith("http://[::1]:")
        assert json.loads(urllib.request.urlopen(srv.url + "/status", timeout=5).read())["pid"] == 1
    finally:
        srv.close()


@pytest.mark.parametrize("addr", ["0.0.0.0:9750", "192.168.1.4:9750", "[::]:9750", "myhost:9750"])
def test_non_loopback_metrics_needs_an_explicit_opt_in(addr):
    with pytest.raises(ConfigError) as ei:
        parse_service_config({"service": {"metrics": addr}, "pipelines": [PIPE]}, "s.toml")
    msg = str(ei.value)
    assert msg.startswith("s.toml: service.metrics = ") and "metrics_remote = true" in msg, msg
    cfg = parse_service_config({"service": {"metrics": addr, "metrics_remote": True}, "pipelines": [PIPE]}, "s.toml")
    assert cfg.metrics_remote and cfg.metrics[1] == 9750


@pytest.mark.parametrize("addr,host", [("127.0.0.1:9750", "127.0.0.1"), ("[::1]:9750", "::1"),
                                       ("localhost:1", "localhost"), ("9750", "127.0.0.1")])
def test_loopback_metrics_needs_nothing(addr, host):
    cfg = parse_service_config({"service": {"metrics": addr}, "pipelines": [PIPE]}, "s.toml")
    assert cfg.metrics[0] == host and not cfg.metrics_remote

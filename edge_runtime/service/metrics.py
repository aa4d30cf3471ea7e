"""The service's metrics endpoint on localhost: Prometheus text on ``/metrics``, JSON on ``/status``.

Served by a ``ThreadingHTTPServer`` on its own threads, reading the audio threads' counters
(plain integers, no locks on the audio path). At most :data:`MAX_CONNECTIONS` requests are served
at once (more are closed at once, without a thread), and a client that does not send its request
within :data:`READ_TIMEOUT_S` is dropped, so half-open connections cannot pile up threads; a client
that goes away mid-response is not an error. No authentication: it binds loopback (127.0.0.1 by
default, ``[::1]`` works too); another address needs ``[service] metrics_remote = true`` (checked
by the config) and is logged as a warning. ``edge-runtime status`` reads ``/status``.

Metrics (label ``pipeline`` = the service config's name):

* ``edge_runtime_realtime_factor`` engine time / audio time since start (< 1: faster than real time)
* ``edge_runtime_block_seconds{quantile="0.5"|"0.99"}``, ``edge_runtime_block_budget_seconds``
* ``edge_runtime_blocks_total``, ``edge_runtime_frames_in_total``, ``edge_runtime_frames_out_total``
* ``edge_runtime_deadline_misses_total`` blocks that took longer than their real-time budget
* ``edge_runtime_xruns_total{direction="capture"|"playback"}``, ``edge_runtime_device_reopens_total``
* ``edge_runtime_model_variant_info{node, variant}`` = 1 for the variant in use; ``edge_runtime_model_step_downs_total``
* ``edge_runtime_events_total{node, event}``, ``edge_runtime_events_dropped_total``
* ``edge_runtime_nonfinite_samples_total{where="in"|"out"}``, ``edge_runtime_pipeline_up``, ``edge_runtime_heartbeat_age_seconds``
* ``edge_runtime_reloads_total{result}``, ``edge_runtime_watchdog_pings_total``, ``edge_runtime_info{version}``
"""
from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..errors import ConfigError

__all__ = ["MetricsServer", "render_prometheus"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_CONNECTIONS = 8        # a scraper and a person with `edge-runtime status` need two
READ_TIMEOUT_S = 5.0       # for the request line and headers (and each write of the answer)
_log = logging.getLogger("edge_runtime.service.metrics")


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kw) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kw.items()) + "}"


def _num(v) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def render_prometheus(snap: dict) -> str:
    """The snapshot of :meth:`Daemon.snapshot` in the Prometheus text exposition format 0.0.4."""
    out: list[str] = []

    def family(name, kind, help_, samples):
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            out.append(f"{name}{_labels(**labels) if labels else ''} {_num(value)}")

    pl = snap["pipelines"]
    family("edge_runtime_info", "gauge", "edge_runtime version (always 1)", [({"version": snap["version"]}, 1)])
    family("edge_runtime_uptime_seconds", "gauge", "seconds since the service started", [({}, snap["uptime_s"])])
    family("edge_runtime_reloads_total", "counter", "SIGHUP config reloads",
           [({"result": "ok"}, snap["reloads"]["ok"]), ({"result": "failed"}, snap["reloads"]["failed"])])
    family("edge_runtime_watchdog_pings_total", "counter", "WATCHDOG=1 sent to systemd", [({}, snap["watchdog_pings"])])
    family("edge_runtime_pipeline_up", "gauge", "1 while the pipeline processes audio (0: waiting for a device, "
           "stopped, failed)", [({"pipeline": p["name"]}, p["state"] == "running") for p in pl])
    family("edge_runtime_realtime_factor", "gauge", "engine time / audio time since start (< 1 is faster than "
           "real time)", [({"pipeline": p["name"]}, p["realtime_factor"]) for p in pl])
    family("edge_runtime_block_seconds", "summary", "block processing time over the last 4096 blocks",
           [s for p in pl for s in (({"pipeline": p["name"], "quantile": "0.5"}, p["block_ms_p50"] / 1e3),
                                    ({"pipeline": p["name"], "quantile": "0.99"}, p["block_ms_p99"] / 1e3))])
    family("edge_runtime_block_budget_seconds", "gauge", "real-time budget of one block",
           [({"pipeline": p["name"]}, p["budget_ms"] / 1e3) for p in pl])
    family("edge_runtime_latency_seconds", "gauge", "algorithmic latency of the pipeline (look-ahead)",
           [({"pipeline": p["name"]}, p["latency_ms"] / 1e3) for p in pl])
    family("edge_runtime_blocks_total", "counter", "blocks processed", [({"pipeline": p["name"]}, p["blocks"]) for p in pl])
    family("edge_runtime_frames_in_total", "counter", "frames read from the input",
           [({"pipeline": p["name"]}, p["frames_in"]) for p in pl])
    family("edge_runtime_frames_out_total", "counter", "frames written to the output",
           [({"pipeline": p["name"]}, p["frames_out"]) for p in pl])
    family("edge_runtime_deadline_misses_total", "counter", "blocks that took longer than their real-time budget",
           [({"pipeline": p["name"]}, p["deadline_misses"]) for p in pl])
    family("edge_runtime_xruns_total", "counter", "ALSA over/underruns, recovered",
           [s for p in pl for s in (({"pipeline": p["name"], "direction": "capture"}, p["xruns"]["capture"]),
                                    ({"pipeline": p["name"], "direction": "playback"}, p["xruns"]["playback"]))])
    family("edge_runtime_device_reopens_total", "counter", "times a lost device was reopened",
           [({"pipeline": p["name"]}, p["device_reopens"]) for p in pl])
    family("edge_runtime_model_variant_info", "gauge", "the model variant an ML node runs now (always 1)",
           [({"pipeline": p["name"], "node": m["node"], "variant": m["variant"]}, 1) for p in pl for m in p["models"]])
    family("edge_runtime_model_step_downs_total", "counter", "governor step-downs to a cheaper variant",
           [({"pipeline": p["name"], "node": m["node"]}, m["step_downs"]) for p in pl for m in p["models"]])
    family("edge_runtime_events_total", "counter", "events emitted by nodes",
           [({"pipeline": p["name"], "node": e["node"], "event": e["event"]}, e["count"]) for p in pl for e in p["events"]])
    family("edge_runtime_events_dropped_total", "counter", "events lost to a full event buffer",
           [({"pipeline": p["name"]}, p["events_dropped"]) for p in pl])
    family("edge_runtime_nonfinite_samples_total", "counter", "NaN/Inf and out-of-range (|x| > 1000) samples replaced by silence",
           [s for p in pl for s in (({"pipeline": p["name"], "where": "in"}, p["nonfinite_in"]),
                                    ({"pipeline": p["name"], "where": "out"}, p["nonfinite_out"]))])
    family("edge_runtime_heartbeat_age_seconds", "gauge", "seconds since the audio loop last ran",
           [({"pipeline": p["name"]}, p["heartbeat_age_s"]) for p in pl])
    g = snap.get("python_gc")
    if g is not None:   # a long collection holds the GIL that model nodes wait for (service/interp.py)
        family("edge_runtime_python_gc_collections_total", "counter", "Python garbage collections by generation",
               [({"generation": str(k)}, v) for k, v in enumerate(g["collections"])])
        family("edge_runtime_python_gc_max_seconds", "gauge", "longest Python garbage collection by generation",
               [({"generation": str(k)}, v / 1e3) for k, v in enumerate(g["max_ms"])])
    return "\n".join(out) + "\n"


class _Handler(BaseHTTPRequestHandler):
    server_version = "edge_runtime"
    timeout = READ_TIMEOUT_S           # StreamRequestHandler sets it on the socket

    def do_GET(self):  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        try:
            snap = self.server.snapshot()
        except Exception as e:  # never let a scrape take the service down
            return self._send(500, "text/plain", f"snapshot failed: {e}\n")
        if path == "/metrics":
            return self._send(200, CONTENT_TYPE, render_prometheus(snap))
        if path == "/status":
            return self._send(200, "application/json", json.dumps(snap) + "\n")
        if path == "/healthz":
            ok = all(p["state"] in ("running", "stopped") for p in snap["pipelines"])
            return self._send(200 if ok else 503, "text/plain", "ok\n" if ok else "degraded\n")
        return self._send(404, "text/plain", "not found: try /metrics, /status or /healthz\n")

    def _send(self, code, ctype, body: str):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):  # scrapes are not worth a log line each
        pass


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on concurrent requests and quiet client disconnects."""

    daemon_threads = True
    request_queue_size = 64            # listen() backlog: a burst is accepted (and refused) at once

    def __init__(self, address, handler, family):
        self.address_family = family
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.refused = 0
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):     # full: close now, no thread
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        # socketserver prints a traceback to stderr (into the JSON log's stream): a client that
        # reset, timed out or hung up is normal for a network endpoint; anything else is one line
        import sys

        e = sys.exc_info()[1]
        if isinstance(e, (ConnectionError, TimeoutError, socket.timeout)):
            return
        _log.warning("metrics request from %s failed: %s: %s", client_address[0], type(e).__name__, e)


class MetricsServer:
    """Bind ``(host, port)`` now (a port in use is a ConfigError before READY), serve on ``start()``."""

    def __init__(self, address: tuple[str, int], snapshot):
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        try:
            self._httpd = _Server(address, _Handler, family)
        except OSError as e:
            raise ConfigError(f"metrics endpoint {address[0]}:{address[1]}: cannot listen: {e.strerror} "
                              "(set [service] metrics to another port, or \"\" to turn it off)") from None
        self._httpd.snapshot = snapshot
        host, port = self._httpd.server_address[:2]
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self._thread = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="edge_runtime-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
        self._httpd.server_close()

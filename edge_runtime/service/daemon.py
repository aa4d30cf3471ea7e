"""``edge-runtime serve``: pipelines running from live inputs to outputs until told to stop.

One audio thread per pipeline (:class:`Instance`, in :mod:`edge_runtime.service.instance`) reads
exactly one block from its source, runs the pipeline's compiled block loop, tells the governor,
writes the block to its sink and drains the pipeline's events; the main thread (:class:`Daemon`,
here) only waits for signals, pings the watchdog and reloads.

* **Start-up**: the config is validated, every pipeline is built and prepared (models loaded and
  bound), file inputs and outputs are opened, the metrics endpoint is bound; any failure there is
  one ``error:`` line and exit status 2, before systemd is told ``READY=1``. ALSA devices are opened
  by the audio threads: a device that is missing (a USB card not enumerated yet) or goes away is
  retried with exponential back-off (``retry_initial_s`` doubling up to ``retry_max_s``), logged at
  each attempt, never a crash loop.
* **Xruns**: the ALSA layer recovers over/underruns (``snd_pcm_recover``) and keeps filling the
  same block from the recovered stream, so a block never carries stale or junk samples; each one is
  counted and logged here (``xrun`` lines, ``edge_runtime_xruns_total``). The nodes are not reset
  after one: a reset would also throw away the look-ahead in flight and the recurrent state, turning
  a gap of a few ms into a longer dropout while filters and models settle again.
* **Watchdog**: each audio loop stamps a heartbeat per block (and while it waits for a device);
  the main thread sends ``WATCHDOG=1`` at half of ``WatchdogSec=`` only while every running loop
  stamped within that half, so a stuck audio thread lets systemd restart the service.
* **SIGTERM/SIGINT**: ``STOPPING=1``; each loop finishes its block, pushes the pipeline's
  look-ahead out (frames out == frames in), drains ALSA playback, commits file outputs, and the
  process exits 0.
* **SIGHUP**: the config is read again. A pipeline whose I/O settings and shape (rate, block size,
  channels, latency) are unchanged gets its new pipeline built and prepared here, then swapped in
  by its audio thread between two blocks with a short crossfade (``crossfade_ms``; both run on the
  same input meanwhile): the stream is not interrupted. Others are drained and restarted, removed
  ones stopped, new ones started. An invalid new config is logged and the running one kept.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time

from .._version import __version__
from ..errors import EdgeRuntimeError
from .config import InstanceSpec, ServiceConfig, is_loopback, load_service_config
from .instance import Instance
from .interp import GcGuard
from .log import JsonLog, JsonLogHandler
from .notify import Notifier

__all__ = ["Daemon", "Instance", "serve"]


def _input_rate(spec) -> int:
    """The rate a pipeline that runs at its input's rate is built for: a file's header rate,
    else 48 kHz (ALSA and stdin without ``sample_rate``)."""
    if spec.live or spec.input == "-" or spec.input.lower().endswith((".raw", ".pcm")):
        return 48000
    from ..io.files import FileSource

    with FileSource(spec.input) as f:
        return int(f.sample_rate)


class Daemon:
    """The service process: config, instances, signals, notify, metrics."""

    def __init__(self, config_path: str, *, stream=None, environ=None, check_only: bool = False,
                 log_level: str | None = None):
        self.config_path = config_path
        self.check_only = check_only
        self.log_level = log_level      # from -v/-q/--log-level; None: the config's [service] log_level
        self.stream = stream
        self.notifier = Notifier(environ)
        self.instances: dict[str, Instance] = {}
        self.config: ServiceConfig | None = None
        self.log: JsonLog | None = None
        self.metrics = None
        self.mqtt = None
        self.started = time.time()
        self.reload_ok = 0
        self.reload_failed = 0
        self._wake = threading.Event()
        self._stop_sig = None
        self._hup = False
        self._failed = False
        self.watchdog_pings = 0
        self.gc = GcGuard()

    # ---- building ------------------------------------------------------------------------------
    def _build_pipeline(self, spec: InstanceSpec):
        from ..config import load_pipeline_config

        try:
            cfg = load_pipeline_config(spec.pipeline)
            return cfg.build(spec.sample_rate or (None if cfg.sample_rate else _input_rate(spec)))
        except EdgeRuntimeError as e:
            raise type(e)(f"{self.config_path}: pipelines '{spec.name}': {e}") from None

    def _make_instance(self, spec: InstanceSpec, pipeline=None) -> Instance:
        inst = Instance(spec, pipeline or self._build_pipeline(spec), self.log,
                        crossfade_ms=self.config.crossfade_ms, on_exit=self._instance_exited)
        inst.mqtt = self.mqtt
        try:
            inst.open_static()
        except EdgeRuntimeError as e:
            inst._close_all(commit=False)
            raise type(e)(f"{self.config_path}: pipelines '{spec.name}': {e}") from None
        except BaseException:
            inst._close_all(commit=False)
            raise
        if self.mqtt is not None:          # after open_static: prepared, its class labels are final
            self.mqtt.register_pipeline(spec.name, inst.pipeline)
        return inst

    def _instance_exited(self, inst: Instance) -> None:
        if inst.state == "failed":
            self._failed = True
        self._wake.set()

    def _log_stream(self, cfg: ServiceConfig):
        if self.stream is not None:
            return self.stream
        # audio on stdout ("-") keeps the log off it
        return sys.stderr if any(s.output == "-" for s in cfg.pipelines) else sys.stdout

    # ---- signals -------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGHUP:
            self._hup = True
        else:
            self._stop_sig = signum
        self._wake.set()

    # ---- run -----------------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.config = load_service_config(self.config_path)
        level = self.log_level or cfg.log_level
        self.log = JsonLog(self._log_stream(cfg), level)
        handler = JsonLogHandler(self.log)
        root = __import__("logging").getLogger("edge_runtime")
        root.addHandler(handler)
        root.setLevel(10 if level == "debug" else 20)
        root.propagate = False
        self.log.info("starting", f"edge_runtime {__version__} starting with {cfg.path}", config=cfg.path,
                      version=__version__, pid=os.getpid(), pipelines=[s.name for s in cfg.pipelines])
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        self.gc.install()
        try:
            try:
                if cfg.mqtt is not None and not self.check_only:
                    self.mqtt = self._make_mqtt(cfg)
                for spec in cfg.pipelines:
                    self.instances[spec.name] = self._make_instance(spec)
                if cfg.metrics is not None:
                    from .metrics import MetricsServer

                    self.metrics = MetricsServer(cfg.metrics, self.snapshot)
                    if cfg.metrics_remote and not is_loopback(cfg.metrics[0]):
                        self.log.warning("metrics_remote", f"the metrics endpoint listens on {self.metrics.url}, "
                                         "not only loopback, without authentication (service.metrics_remote)",
                                         url=self.metrics.url)
            except BaseException:
                for inst in self.instances.values():
                    inst._close_all(commit=False)
                raise
            if self.check_only:               # `serve --check`: everything opened and prepared; stop here
                for inst in self.instances.values():
                    inst._close_all(commit=False)
                self.log.info("config_ok", f"{cfg.path}: {len(self.instances)} pipeline(s) built, prepared and "
                              "their files opened; not started (--check)")
                return 0
            if self._stop_sig is not None:    # told to stop while loading: nothing started yet
                for inst in self.instances.values():
                    inst._close_all(commit=False)
                return 0
            self.gc.settle()                  # everything is built: later collections skip it (interp.py)
            for inst in self.instances.values():
                inst.start()
            if self.metrics is not None:
                self.metrics.start()
            if self.mqtt is not None:
                self.mqtt.start()
            fields = {"pipelines": {n: {"pipeline": i.pipeline.name, "input": i.spec.input, "output": i.spec.output,
                                        "sample_rate": i.pipeline.sample_rate, "input_sample_rate": i.sample_rate,
                                        "block_size": i.pipeline.block_size,
                                        "channels": i.channels, "latency_ms": round(i.pipeline.latency_ms, 3)}
                                    for n, i in self.instances.items()},
                      "watchdog_s": self.notifier.watchdog_s}
            if self.metrics is not None:
                fields["metrics"] = self.metrics.url
            self.notifier.ready(self._status_text())
            self.log.info("ready", f"{len(self.instances)} pipeline(s) prepared and running", **fields)
            return self._loop()
        finally:
            self.gc.uninstall()
            for s, h in old.items():
                signal.signal(s, h)
            root.removeHandler(handler)
            root.propagate = True
            if self.metrics is not None:
                self.metrics.close()
            if self.mqtt is not None:
                self.mqtt.close()
            self.notifier.close()

    def _make_mqtt(self, cfg):
        import socket

        from ..paths import state_dir
        from .mqtt import MqttPublisher

        device = socket.gethostname().split(".")[0] or "device"
        return MqttPublisher(cfg.mqtt, cfg.mqtt_prefix or f"edge_runtime/{device}",
                             str(state_dir(cfg.state_dir)), device=device, max_mb=cfg.mqtt_queue_mb,
                             username=cfg.mqtt_username, password_file=cfg.mqtt_password_file, logger=self.log,
                             ca_file=cfg.mqtt_ca_file, cert_file=cfg.mqtt_cert_file, key_file=cfg.mqtt_key_file,
                             # a broker drops the older of two sessions with one id: two services on one
                             # host (or a service and `run --events`) must not share it
                             client_id=cfg.mqtt_client_id or None)

    def _status_text(self) -> str:
        parts = [f"{n}: {i.state}" for n, i in self.instances.items()]
        return "; ".join(parts)[:200]

    def _loop(self) -> int:
        wd = self.notifier.watchdog_s
        half = wd / 2 if wd else None
        tick = min(half, 1.0) if half else 1.0
        if self.mqtt is not None and self.config.mqtt_metrics_s:
            tick = min(tick, self.config.mqtt_metrics_s)
        last_ping = 0.0
        last_metrics = time.monotonic()
        status = self._status_text()
        while True:
            self._wake.wait(tick)
            self._wake.clear()
            if self._stop_sig is not None or self._failed:
                break
            if self._hup:
                self._hup = False
                self.reload()
            if self.gc.dirty and not any(i.swapping for i in self.instances.values()):
                self.gc.settle()              # the reload's swaps are over: freeze what is new
            if not any(i.alive for i in self.instances.values()):
                self.log.info("all_ended", "every pipeline's input has ended")
                break
            every = self.config.mqtt_metrics_s
            if self.mqtt is not None and every and time.monotonic() - last_metrics >= every:
                last_metrics = time.monotonic()
                self.mqtt.publish_metrics(self.snapshot())
            text = self._status_text()
            if text != status:                # e.g. "mic: waiting_for_device" in `systemctl status`
                status = text
                self.notifier.status(text)
            now = time.monotonic()
            if half and now - last_ping >= half * 0.9:
                stale = [i.name for i in self.instances.values()
                         if i.alive and now - i.beat > half]
                if not stale:
                    self.notifier.watchdog()
                    self.watchdog_pings += 1
                    last_ping = now
                else:
                    self.log.warning("watchdog_withheld", f"audio loop of {', '.join(stale)} has not run for "
                                     f"over {half:g} s; not pinging the watchdog", pipelines=stale)
        return self.shutdown()

    def shutdown(self) -> int:
        why = (f"signal {signal.Signals(self._stop_sig).name}" if self._stop_sig is not None
               else "a pipeline failed" if self._failed else "inputs ended")
        self.notifier.stopping(f"stopping ({why})")
        self.log.info("stopping", f"stopping ({why}): draining pipelines", reason=why)
        for inst in self.instances.values():
            inst.request_stop()
        deadline = time.monotonic() + self.config.stop_timeout_s
        stuck = []
        for inst in self.instances.values():
            if not inst.join(max(0.0, deadline - time.monotonic())):
                stuck.append(inst.name)
        summary = {n: {k: s[k] for k in ("frames_in", "frames_out", "blocks", "deadline_misses", "xruns",
                                          "realtime_factor", "state")}
                   for n, s in ((i.name, i.snapshot()) for i in self.instances.values())}
        failed = self._failed or any(i.state == "failed" for i in self.instances.values())
        if stuck:
            self.log.error("stop_timeout", f"{', '.join(stuck)} did not drain within "
                           f"{self.config.stop_timeout_s:g} s", pipelines=stuck)
        self.log.info("stopped", "stopped" + (" with a failed pipeline" if failed else ""), pipelines=summary,
                      watchdog_pings=self.watchdog_pings)
        return 1 if (failed or stuck) else 0

    # ---- reload --------------------------------------------------------------------------------
    def reload(self) -> None:
        """All or nothing: read, build, prepare and open everything new first; only when every part
        succeeded are old pipelines stopped, swapped or replaced. On any failure the new parts are
        closed (nothing committed) and the running pipelines and their I/O are left untouched."""
        self.notifier.reloading()
        self.log.info("reloading", f"SIGHUP: reading {self.config_path} again")
        self.gc.unfreeze()                    # what the reload replaces can be collected
        staged: dict[str, Instance] = {}       # restarted/added pipelines, I/O open, not started
        try:
            cfg = load_service_config(self.config_path)
            if cfg.metrics != self.config.metrics:
                self.log.warning("reload_metrics", "the metrics address changed; it takes effect on restart")
            new_specs = {s.name: s for s in cfg.pipelines}
            plan, swaps = [], {}
            for name, spec in new_specs.items():
                pipe = self._build_pipeline(spec)
                inst = self.instances.get(name)
                if inst is not None and inst.alive and inst.spec.io_key() == spec.io_key() and \
                        inst.shape() == inst.shape(pipe):
                    try:
                        pipe.prepare(inst.channels)
                    except EdgeRuntimeError as e:
                        raise type(e)(f"{self.config_path}: pipelines '{name}': {e}") from None
                    swaps[name] = pipe
                    plan.append((name, "swap"))
                    continue
                staged[name] = self._make_instance(spec, pipe)
                plan.append((name, "restart" if inst is not None else "add"))
        except Exception as e:  # a reload never takes the running pipelines down
            for inst in staged.values():
                inst._close_all(commit=False)
            self.reload_failed += 1
            why = str(e) if isinstance(e, EdgeRuntimeError) else f"{type(e).__name__}: {e}"
            self.log.error("reload_failed", f"reload refused, the running config stays: {why}")
            self.notifier.ready(self._status_text())
            return
        # everything new is ready: commit
        # what a reload may change; the metrics port, the broker and the state folder stay as started
        self.config = dataclasses.replace(self.config, path=cfg.path, log_level=cfg.log_level,
                                          stop_timeout_s=cfg.stop_timeout_s, crossfade_ms=cfg.crossfade_ms,
                                          pipelines=cfg.pipelines, mqtt_metrics_s=cfg.mqtt_metrics_s)
        self.log.level = __import__("edge_runtime.service.log", fromlist=["LEVELS"]).LEVELS[
            self.log_level or cfg.log_level]
        for name in list(self.instances):
            if name not in new_specs:
                inst = self.instances.pop(name)
                inst.request_stop()
                inst.join(cfg.stop_timeout_s)
                self.log.info("pipeline_removed", f"{name}: removed by the reload", pipeline=name)
        for name, pipe in swaps.items():
            inst = self.instances[name]
            inst.spec = new_specs[name]
            inst.crossfade_ms = cfg.crossfade_ms
            inst.offer(pipe)
        for name, new in staged.items():
            old = self.instances.get(name)
            if old is not None:
                old.request_stop()
                old.join(cfg.stop_timeout_s)
            self.instances[name] = new
            new.start()
        self.reload_ok += 1
        self.notifier.ready(self._status_text())
        self.log.info("reloaded", "config reloaded: " + ", ".join(f"{n} {a}" for n, a in plan),
                      plan=dict(plan))

    # ---- observation ---------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return {"version": __version__, "pid": os.getpid(), "config": self.config_path,
                "uptime_s": round(time.time() - self.started, 3),
                "reloads": {"ok": self.reload_ok, "failed": self.reload_failed},
                **({"mqtt": self.mqtt.snapshot()} if self.mqtt is not None else {}),
                "watchdog_s": self.notifier.watchdog_s, "watchdog_pings": self.watchdog_pings,
                "python_gc": self.gc.snapshot(),
                "pipelines": [i.snapshot() for i in list(self.instances.values())]}


def serve(config_path: str) -> int:
    """Run the service until SIGTERM/SIGINT (or every input ended); the exit status."""
    return Daemon(config_path).run()

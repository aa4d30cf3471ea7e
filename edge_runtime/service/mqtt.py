"""Events to an MQTT broker with nothing lost: a bounded on-disk queue and a paho-mqtt publisher.

``[service] mqtt = "mqtt://HOST:PORT"`` makes ``serve`` publish every node event to
``<prefix>/<pipeline>/events`` (QoS 1). Each payload is one JSON object with a ``seq`` number that
rises by one per event of this device, also across restarts. Delivery is **at least once**: a
message the broker received but did not acknowledge before a disconnect is sent again, and
consumers drop repeats by ``seq``.

* **Store and forward** (:class:`DiskQueue`): events go first to an append-only log in the state
  directory. Records are length-prefixed with a CRC32 and written with one ``write()`` each as
  they come (into the page cache: a SIGKILL of the service loses none); the publisher thread
  ``fsync``s the log every 100 ms (never the audio thread), so a power cut loses at most the last
  100 ms. A record is removed, by advancing an atomically replaced ``acked`` offset, only once
  the broker has acknowledged it (PUBACK). After SIGKILL or a power cut the queue resumes from the
  last acknowledged record; a torn record at the tail (a write cut short) is detected by its CRC
  and dropped.
* **Bound**: ``mqtt_queue_mb`` (default 16). Events beyond it are dropped, counted
  (``dropped``) and reported in the log and in ``/status``.
* **Home Assistant**: retained MQTT discovery messages (``homeassistant/<component>/<id>/config``)
  make sensors appear by themselves, one per kind of event as it is first seen (and all of them
  again on every connect): a pair ``X_start`` / ``X_end`` (``speech_start``, ``anomaly_start``) is a
  ``binary_sensor`` that is on between them; any other event is a ``sensor`` whose state is the
  event's value, a class event's value shown as its label (``classify class`` -> ``speech``).
  Each kind's latest event is also published, retained at QoS 0 and without ``seq``, to
  ``<prefix>/<pipeline>/<node>/<event>`` (the state topic the sensor reads), while the ordered,
  queued log stays on ``<prefix>/<pipeline>/events``. Per pipeline there are also sensors for the
  real-time factor and deadline misses, and per device RSS, load, temperature and queued bytes
  (from the metrics and health topics).
* **TLS**: ``mqtts://HOST:PORT`` with ``mqtt_ca_file`` (the broker's CA; default: the system's) and,
  for client certificates, ``mqtt_cert_file`` / ``mqtt_key_file``. The broker's certificate and
  host name are always checked; a broker that fails the check is one ``mqtt_tls_failed`` line.
* **Credentials**: ``mqtt_username`` and ``mqtt_password_file``. The password is read from a file
  that only the service user may read, and it is never logged. Refused credentials give one
  ``mqtt_refused`` error line. The publisher keeps retrying with back-off, and the audio keeps
  running.

paho-mqtt is an extra: ``pip install 'edge-runtime[mqtt]'``.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import zlib

from ..errors import ConfigError, MissingExtraError

__all__ = ["DiskQueue", "MqttPublisher", "parse_mqtt_url"]

log = logging.getLogger("edge_runtime.service.mqtt")
_HDR = struct.Struct("<II")          # length, crc32 of the payload
SIDE_TTL_S = 60.0                    # an unmatched publish callback's mid is forgotten after this


def parse_mqtt_url(url: str, path: str = "<config>") -> tuple[str, int]:
    """``mqtt://HOST[:PORT]`` (default port 1883) or ``mqtts://HOST[:PORT]`` (TLS, 8883) -> (host, port)."""
    if not isinstance(url, str) or not url.startswith(("mqtt://", "mqtts://")):
        raise ConfigError(f"{path}: service.mqtt = {url!r}; expected \"mqtt://HOST:PORT\" or \"mqtts://HOST:PORT\" "
                          "(or \"\" for off)")
    tls = url.startswith("mqtts://")
    rest = url.split("://", 1)[1].rstrip("/")
    default = "8883" if tls else "1883"
    host, _, port = rest.rpartition(":") if ":" in rest.strip("[]").split("]")[-1] else (rest, "", default)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{path}: service.mqtt = {url!r}; expected \"mqtt://HOST:PORT\" with a port 1..65535")
    return host, int(port)


class DiskQueue:
    """A bounded FIFO of byte records on disk that survives SIGKILL and power loss.

    ``append`` from any thread writes one record to the log (a lock and one ``write()``); ``flush``
    fsyncs it (the owner calls it, e.g. every 100 ms); ``peek(start, n)`` gives the oldest
    unacknowledged records with their end offsets; ``ack(offset, seq)`` removes everything up to
    an end offset (atomic rename of the ``acked`` file); ``compact`` starts an empty log once all of
    it was delivered and it has grown past a quarter of the bound.
    """

    def __init__(self, directory: str, max_bytes: int = 16 << 20):
        os.makedirs(directory, exist_ok=True)
        self.dir, self.max_bytes = directory, int(max_bytes)
        self.log_path = os.path.join(directory, "queue.log")
        self.ack_path = os.path.join(directory, "queue.acked")
        self._lock = threading.Lock()
        self.dropped = 0
        self.acked, self.acked_seq = self._read_acked()
        self._recover()
        self._dirty = False
        self._fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o640)

    def _read_acked(self) -> tuple[int, int]:
        """(offset, seq of the last delivered record) from the ``acked`` file."""
        try:
            with open(self.ack_path, "rb") as f:
                parts = f.read().decode().split()
            return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
        except (OSError, ValueError, IndexError):
            return 0, 0

    def _recover(self) -> None:
        """Cut a torn tail (a record cut short, or failing its CRC) from the log."""
        try:
            size = os.path.getsize(self.log_path)
        except OSError:
            size = 0
        if self.acked > size:
            self.acked = 0
        good = self.acked
        with open(self.log_path, "ab+") as f:
            f.seek(self.acked)
            while True:
                hdr = f.read(_HDR.size)
                if len(hdr) < _HDR.size:
                    break
                n, crc = _HDR.unpack(hdr)
                if n > self.max_bytes:             # a garbled length: the rest is not ours to trust
                    break
                body = f.read(n)
                if len(body) < n or zlib.crc32(body) != crc:
                    break
                good = f.tell()
            if good < size:
                f.truncate(good)
                log.warning("mqtt queue: dropped a torn record at the end of %s (%d bytes)", self.log_path,
                            size - good)
        self.size = good

    @property
    def backlog_bytes(self) -> int:
        return self.size - self.acked

    def append(self, record: bytes) -> bool:
        """Write one record to the log (one write() into the page cache: it survives a SIGKILL of
        this process; :meth:`flush` makes it survive a power cut); False (and counted in
        ``dropped``) when the bound is reached."""
        data = _HDR.pack(len(record), zlib.crc32(record)) + record
        with self._lock:
            if self.backlog_bytes + len(data) > self.max_bytes:
                self.dropped += 1
                return False
            os.write(self._fd, data)
            self.size += len(data)
            self._dirty = True
            return True

    def flush(self) -> None:
        """fsync the log (the publisher thread calls it every 100 ms)."""
        with self._lock:
            dirty, self._dirty = self._dirty, False
        if dirty:
            os.fsync(self._fd)

    def peek(self, start: int, limit: int = 64) -> list[tuple[int, bytes]]:
        """Up to ``limit`` records after offset ``start`` (>= acked), as (end offset, record)."""
        out = []
        with open(self.log_path, "rb") as f:
            f.seek(max(start, self.acked))
            while len(out) < limit and f.tell() < self.size:
                hdr = f.read(_HDR.size)
                if len(hdr) < _HDR.size:
                    break
                n, _ = _HDR.unpack(hdr)
                body = f.read(n)
                if len(body) < n:
                    break
                out.append((f.tell(), body))
        return out

    def ack(self, offset: int, seq: int) -> None:
        """Everything up to ``offset`` (a record's end, whose ``seq`` is given) was delivered."""
        if offset <= self.acked:
            return
        from ..atomic import write_bytes

        write_bytes(self.ack_path, f"{offset} {seq}".encode())
        self.acked, self.acked_seq = offset, seq

    def compact(self) -> bool:
        """Start an empty log when everything in it was delivered and it has grown past a quarter
        of the bound (the caller makes sure nothing is in flight). A crash in between leaves an
        acked offset past the (empty) log's end, which :meth:`_recover` reads as 0."""
        with self._lock:
            if self.acked != self.size or self.size <= self.max_bytes // 4:
                return False
            os.close(self._fd)
            from ..atomic import write_bytes

            write_bytes(self.log_path, b"")
            write_bytes(self.ack_path, f"0 {self.acked_seq}".encode())
            self.acked = self.size = 0
            self._fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                               0o640)
            return True

    def close(self) -> None:
        self.flush()
        os.close(self._fd)


def _health(snap: dict, pub) -> dict:
    """Device health: uptime, load, memory, this process's RSS, the hottest thermal zone."""
    h = {"device": pub.device, "ts": time.time(), "uptime_s": snap.get("uptime_s"), "version": snap.get("version"),
         "mqtt_queued_bytes": pub.queue.backlog_bytes, "mqtt_dropped": pub.queue.dropped}
    try:
        h["load1"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    h["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
        with open("/proc/meminfo", encoding="ascii") as f:
            mem = {ln.split(":")[0]: int(ln.split()[1]) for ln in f if ln.split(":")[0] in ("MemTotal", "MemAvailable")}
        h["mem_available_mb"] = round(mem.get("MemAvailable", 0) / 1024, 1)
    except (OSError, ValueError):
        pass
    temps = []
    for zone in range(16):
        try:
            with open(f"/sys/class/thermal/thermal_zone{zone}/temp", encoding="ascii") as f:
                temps.append(int(f.read().strip()) / 1000.0)
        except (OSError, ValueError):
            break
    if temps:
        h["temp_c"] = max(temps)
    return h


class MqttPublisher:
    """Publishes queued events to the broker (QoS 1), Home Assistant discovery on connect."""

    def __init__(self, url: str, prefix: str, state_dir: str, *, device: str, max_mb: float = 16.0,
                 username: str | None = None, password_file: str | None = None, logger=None,
                 ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None,
                 client_id: str | None = None):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise MissingExtraError("service.mqtt needs paho-mqtt, which is not installed; install it with "
                                    "pip install 'edge-runtime[mqtt]'") from None
        self.host, self.port = parse_mqtt_url(url)
        self._tls = url.startswith("mqtts://")
        self.prefix, self.device = prefix.rstrip("/"), device
        self.queue = DiskQueue(os.path.join(state_dir, "mqtt"), int(max_mb * (1 << 20)))
        self.seq = self._last_seq() + 1
        self.jlog = logger
        self.sent = self.delivered = 0
        self.connected = False
        self._refused_logged = False
        self._inflight: dict[int, tuple[int, int]] = {}   # mid -> (end offset, seq)
        self._done: set[tuple[int, int]] = set()         # acknowledged, not yet contiguous
        # paho calls on_publish for every message: a queued event's PUBACK may come before its mid is
        # recorded (_early), and the side messages (discovery, retained state, metrics, health) have
        # mids of their own (_side). Both map mid -> monotonic time and are pruned after SIDE_TTL_S:
        # unpruned, one mid per event piled up for ever (the soak's speech16k heap), and a stale mid
        # met again after paho's 65535 wrap would have counted an unacknowledged event as delivered.
        self._early: dict[int, float] = {}
        self._side: dict[int, float] = {}
        self._next = self.queue.acked            # where the sender reads next
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pipelines: set[str] = set()
        self._kinds: dict[tuple[str, str, str], None] = {}   # (pipeline, node, event) seen, in order
        self._announced: set[tuple[str, str, str]] = set()   # kinds whose discovery went out on this connection
        self._labels: dict[tuple[str, str], list[str]] = {}  # (pipeline, node) -> class labels
        self._decisions: dict[tuple[str, str], set[str]] = {}  # (pipeline, node) -> labels emitted as events
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"edge_runtime-{device}",
                                      clean_session=True)
        if username:
            password = None
            if password_file:
                try:
                    with open(password_file, encoding="utf-8") as f:
                        password = f.read().strip()
                except OSError as e:
                    raise ConfigError(f"service.mqtt_password_file {password_file!r}: cannot read: {e.strerror}") from None
            c.username_pw_set(username, password)
        if url.startswith("mqtts://"):
            import ssl

            try:
                c.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file, cert_reqs=ssl.CERT_REQUIRED,
                          tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (OSError, ssl.SSLError, ValueError) as e:
                raise ConfigError(f"service.mqtt TLS: cannot load the CA/certificate/key files "
                                  f"({ca_file}, {cert_file}, {key_file}): {e}") from None
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_publish = self._on_publish
        c.on_log = self._on_log
        self._socket_error = ""
        c.reconnect_delay_set(1, 30)
        c.max_inflight_messages_set(64)
        self._thread = threading.Thread(target=self._run, name="edge_runtime-mqtt", daemon=True)

    def _last_seq(self) -> int:
        """The highest seq used: in the undelivered records, else the last delivered one's (kept with
        the acked offset, so a restart never reuses a number consumers have seen)."""
        last = self.queue.acked_seq
        for _, rec in self.queue.peek(self.queue.acked, limit=1 << 30):
            try:
                last = max(last, int(json.loads(rec)["payload"]["seq"]))
            except (ValueError, KeyError, TypeError):
                pass
        return last

    # ---- from the audio threads (cheap: a lock and a deque append) ---------------------------
    def put(self, pipeline: str, record: dict) -> None:
        with self._lock:
            rec = dict(record, seq=self.seq, device=self.device)
            self.seq += 1
        self._pipelines.add(pipeline)
        kind = (pipeline, str(record.get("node", "")), str(record.get("event", "")))
        if kind not in self._kinds:
            self._kinds[kind] = None        # the publisher thread announces it (no network here)
        self.queue.append(json.dumps({"topic": f"{self.prefix}/{pipeline}/events", "payload": rec},
                                     separators=(",", ":")).encode())

    def set_labels(self, pipeline: str, node: str, labels) -> None:
        """Class names of a node whose ``class`` events carry an index, for the sensors' labels."""
        self._labels[(pipeline, node)] = [str(x) for x in labels]

    # ---- the publisher thread ----------------------------------------------------------------
    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._thread.start()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if getattr(reason_code, "is_failure", False):
            if not self._refused_logged and self.jlog is not None:
                self.jlog.error("mqtt_refused", f"MQTT broker {self.host}:{self.port} refused the connection: "
                                f"{reason_code}; retrying, the audio goes on", broker=f"{self.host}:{self.port}")
                self._refused_logged = True
            return
        self._refused_logged = False
        self.connected = True
        with self._lock:
            self._inflight.clear()
            self._done.clear()
            self._early.clear()
            self._side.clear()
            self._next = self.queue.acked            # resend what was not acknowledged
        with self._lock:
            self._announced.clear()           # announce every kind again (the broker may be a new one)
        for p in sorted(self._pipelines):
            self._discovery(p)
        self._discovery_health()
        if self.jlog is not None:
            self.jlog.info("mqtt_connected", f"MQTT broker {self.host}:{self.port} connected; "
                           f"{self.queue.backlog_bytes} bytes queued", broker=f"{self.host}:{self.port}")

    def _on_connect_fail(self, client, userdata):
        """The TCP/TLS connection failed (no broker, or a certificate that does not check out)."""
        if self._tls and not self._refused_logged and self.jlog is not None:
            self.jlog.error("mqtt_tls_failed", f"MQTT broker {self.host}:{self.port}: the TLS connection failed (is "
                            "mqtt_ca_file the broker's CA, and the host name in its certificate?); retrying, the audio "
                            "goes on", broker=f"{self.host}:{self.port}")
            self._refused_logged = True

    def _on_log(self, client, userdata, level, buf):
        # paho reports why a socket failed only here (e.g. a TLS alert after the handshake)
        if "socket" in buf:
            self._socket_error = buf

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        if self._stop.is_set():       # our own disconnect in close(): not a broker that went away
            if self.connected and self.jlog is not None:
                self.jlog.info("mqtt_closed", f"MQTT connection to {self.host}:{self.port} closed; "
                               f"{self.queue.backlog_bytes} bytes left queued", broker=f"{self.host}:{self.port}")
            self.connected = False
            return
        if not self.connected and self._tls and not self._refused_logged and self.jlog is not None:
            # dropped before CONNACK: with TLS 1.3 a broker that requires a client certificate says so
            # only after the handshake, as an alert on the first read
            self.jlog.error("mqtt_tls_failed", f"MQTT broker {self.host}:{self.port} closed the TLS connection before "
                            f"accepting it ({self._socket_error or reason_code}); does it require a client certificate "
                            "(mqtt_cert_file, mqtt_key_file) that it did not get or does not trust? retrying, the audio "
                            "goes on", broker=f"{self.host}:{self.port}")
            self._refused_logged = True
        if self.connected and self.jlog is not None:
            self.jlog.warning("mqtt_disconnected", f"MQTT broker {self.host}:{self.port} went away ({reason_code}); "
                              "events are queued on disk", broker=f"{self.host}:{self.port}")
        self.connected = False

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None):
        with self._lock:
            if self._side.pop(mid, None) is not None:     # a side message: nothing to acknowledge
                return
            item = self._inflight.pop(mid, None)
            if item is None:          # the PUBACK came before the sender recorded the mid
                self._early[mid] = time.monotonic()
                return
            self._done.add(item)
            self.delivered += 1
            # advance the acked offset over every contiguous acknowledged record
            ack = None
            while self._done:
                nxt = min(self._done)
                if any(e < nxt[0] for e, _ in self._inflight.values()):
                    break
                self._done.discard(nxt)
                ack = nxt
        if ack is not None:
            self.queue.ack(*ack)

    def _device_block(self) -> dict:
        return {"identifiers": [f"edge_runtime_{self.device}"], "name": f"edge_runtime {self.device}",
                "manufacturer": "AudioLab"}

    def _announce(self, component: str, uid: str, cfg: dict) -> None:
        uid = "".join(c if c.isalnum() or c == "_" else "_" for c in uid)
        cfg = dict(cfg, unique_id=uid, object_id=uid, device=self._device_block())
        self._publish_side(f"homeassistant/{component}/{uid}/config", json.dumps(cfg), qos=1, retain=True)

    def _publish_side(self, topic: str, payload: str, qos: int = 0, retain: bool = False) -> None:
        """A message outside the event queue; its mid is kept apart from the events' (see _early)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        with self._lock:
            if self._early.pop(info.mid, None) is None:   # its on_publish has not come yet
                self._side[info.mid] = time.monotonic()

    def _prune_mids(self, now: float) -> None:
        with self._lock:
            for d in (self._early, self._side):
                old = [m for m, t in d.items() if now - t > SIDE_TTL_S]
                for m in old:
                    del d[m]

    def _discovery(self, pipeline: str) -> None:
        """A pipeline's own sensors: its last event, its real-time factor and deadline misses."""
        base = f"edge_runtime_{self.device}_{pipeline}"
        ev = f"{self.prefix}/{pipeline}/events"
        self._announce("sensor", base, {
            "name": f"{pipeline} last event", "state_topic": ev, "json_attributes_topic": ev,
            "value_template": "{{ value_json.node }} {{ value_json.event }} {{ value_json.value }}"})
        met = f"{self.prefix}/{pipeline}/metrics"
        self._announce("sensor", base + "_rtf", {
            "name": f"{pipeline} real-time factor", "state_topic": met, "state_class": "measurement",
            "value_template": "{{ value_json.realtime_factor | round(4) }}", "entity_category": "diagnostic"})
        self._announce("sensor", base + "_deadline_misses", {
            "name": f"{pipeline} deadline misses", "state_topic": met, "state_class": "total_increasing",
            "value_template": "{{ value_json.deadline_misses }}", "entity_category": "diagnostic"})

    def _discovery_health(self) -> None:
        """The device's sensors, from ``<prefix>/health``."""
        h = f"{self.prefix}/health"
        for key, name, unit in (("rss_mb", "memory (RSS)", "MB"), ("load1", "load", None),
                                ("temp_c", "temperature", "°C"), ("mqtt_queued_bytes", "MQTT queued", "B")):
            cfg = {"name": name, "state_topic": h, "value_template": f"{{{{ value_json.{key} }}}}",
                   "state_class": "measurement", "entity_category": "diagnostic"}
            if unit:
                cfg["unit_of_measurement"] = unit
            self._announce("sensor", f"edge_runtime_{self.device}_{key}", cfg)

    def kind_topic(self, pipeline: str, node: str, event: str) -> str:
        """The retained state topic of one kind of event: a decision node's labels share
        ``<node>/decision``; an ``X_start``/``X_end`` pair shares ``<node>/X``."""
        if event in self._decisions.get((pipeline, node), ()):
            event = "decision"
        for end in ("_start", "_end"):
            if event.endswith(end) and len(event) > len(end):
                event = event[: -len(end)]
        return f"{self.prefix}/{pipeline}/{node}/{event}"

    def _discover_kind(self, pipeline: str, node: str, event: str) -> None:
        topic = self.kind_topic(pipeline, node, event)
        stem = topic.rsplit("/", 1)[1]
        uid = f"edge_runtime_{self.device}_{pipeline}_{node}_{stem}"
        common = {"name": f"{pipeline} {node} {stem}", "state_topic": topic, "json_attributes_topic": topic}
        if stem == "decision":          # the event's name is the state (speech / nonspeech)
            self._announce("sensor", uid, dict(common, value_template="{{ value_json.event }}"))
        elif stem != event:             # an X_start / X_end pair
            self._announce("binary_sensor", uid, dict(
                common, value_template="{{ 'ON' if value_json.event.endswith('_start') else 'OFF' }}"))
        elif event == "class" and self._labels.get((pipeline, node)):
            labels = self._labels[(pipeline, node)]
            self._announce("sensor", uid, dict(common, value_template=(
                "{% set l = " + json.dumps(labels) + " %}{% set i = value_json.value | int %}"
                "{{ l[i] if 0 <= i < " + str(len(labels)) + " else i }}")))
        else:
            self._announce("sensor", uid, dict(common, value_template="{{ value_json.value | round(3) }}"))

    def register_pipeline(self, name: str, pipeline) -> None:
        """Announce a pipeline's sensors before its first event: every kind of event its nodes
        (and their sub-nodes) can emit, with class labels and decision labels."""
        self._pipelines.add(name)
        nodes = list(getattr(pipeline, "nodes", ()))
        for n in list(nodes):
            nodes.extend(getattr(n, "sub_nodes", tuple)())
        for n in nodes:
            names = tuple(getattr(n, "event_names", ()))
            labels = tuple(getattr(n, "labels", ()) or ())
            if labels and set(labels) <= set(names):
                self._decisions[(name, n.name)] = set(labels)
            elif labels and "class" in names:
                self.set_labels(name, n.name, labels)
            for ev in names:
                self._kinds.setdefault((name, n.name, ev), None)

    def _announce_new_kinds(self) -> None:
        with self._lock:
            new = [k for k in list(self._kinds) if k not in self._announced]
            self._announced.update(new)
        for k in new:
            self._discover_kind(*k)

    def _run(self) -> None:
        import paho.mqtt.client as mqtt

        last_flush = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_flush >= 0.1:
                try:
                    self.queue.flush()
                except OSError as e:
                    log.error("mqtt queue: cannot write %s: %s", self.queue.log_path, e.strerror)
                last_flush = now
                self._prune_mids(now)
            with self._lock:
                if not self._inflight and not self._done and self.queue.compact():
                    self._next = 0
            if self.connected:
                self._announce_new_kinds()
                with self._lock:
                    start, room = self._next, 64 - len(self._inflight)
                if room > 0 and start < self.queue.size:      # something not yet sent
                    for end, rec in self.queue.peek(start, room):
                        msg = json.loads(rec)
                        info = self.client.publish(msg["topic"], json.dumps(msg["payload"], separators=(",", ":")),
                                                   qos=1)
                        if info.rc != mqtt.MQTT_ERR_SUCCESS:
                            break
                        pl = msg["payload"]
                        if "node" in pl and "event" in pl and "pipeline" in pl:   # the kind's latest value
                            # without seq: a consumer of <prefix>/# counting events by seq sees each once
                            state = {k: v for k, v in pl.items() if k != "seq"}
                            self._publish_side(self.kind_topic(pl["pipeline"], pl["node"], pl["event"]),
                                               json.dumps(state, separators=(",", ":")), qos=0, retain=True)
                        with self._lock:
                            self._inflight[info.mid] = (end, int(msg["payload"]["seq"]))
                            self._next = end
                            self.sent += 1
                            early = self._early.pop(info.mid, None) is not None
                        if early:
                            self._on_publish(None, None, info.mid)
            self._stop.wait(0.02)

    def publish_metrics(self, snap: dict) -> None:
        """The service's live view, QoS 0 and not queued (a stale reading is worth nothing): per
        pipeline ``<prefix>/<pipeline>/metrics``, and ``<prefix>/health`` for the device."""
        if not self.connected:
            return
        keep = ("state", "frames_in", "frames_out", "blocks", "deadline_misses", "realtime_factor", "block_ms_p99",
                "xruns", "nonfinite_in", "events_dropped", "heartbeat_age_s", "models")
        for p in snap.get("pipelines", ()):
            body = {k: p[k] for k in keep if k in p}
            body.update(device=self.device, ts=time.time())
            self._publish_side(f"{self.prefix}/{p['name']}/metrics", json.dumps(body, separators=(",", ":")))
        self._publish_side(f"{self.prefix}/health", json.dumps(_health(snap, self), separators=(",", ":")))

    def snapshot(self) -> dict:
        return {"broker": f"{self.host}:{self.port}", "connected": self.connected, "sent": self.sent,
                "delivered": self.delivered, "queued_bytes": self.queue.backlog_bytes, "dropped": self.queue.dropped,
                "next_seq": self.seq, "unmatched_mids": len(self._early) + len(self._side)}

    def close(self, timeout: float = 5.0) -> None:
        """Flush the queue to disk, give in-flight messages ``timeout`` seconds, stop."""
        end = time.monotonic() + timeout
        while self.connected and time.monotonic() < end and self.queue.backlog_bytes:
            time.sleep(0.05)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self.queue.close()
        self.client.loop_stop()
        try:
            self.client.disconnect()
        except Exception:
            pass
        if self.queue.dropped and self.jlog is not None:
            self.jlog.warning("mqtt_dropped", f"{self.queue.dropped} event(s) exceeded the MQTT queue bound and "
                              "were dropped", dropped=self.queue.dropped)


# ---- `edge-runtime run --events mqtt://HOST:PORT/PREFIX` ---------------------------------------------

#: query keys of a ``run --events`` MQTT URL (the service config's ``mqtt_*`` keys, without the prefix)
RUN_URL_KEYS = ("ca_file", "cert_file", "key_file", "username", "password_file", "queue_mb", "wait_s")


def parse_events_url(url: str) -> dict:
    """``mqtt[s]://HOST[:PORT][/PREFIX][?key=value&...]`` -> the publisher's settings.

    ``PREFIX`` is the topic prefix (default ``edge_runtime/<host name>``); the keys are
    :data:`RUN_URL_KEYS` (``password_file``, never a password: a URL shows in ``ps``).
    """
    import urllib.parse

    what = f"--events {url!r}"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"{what}: expected \"mqtt://HOST:PORT/PREFIX\" or \"mqtts://HOST:PORT/PREFIX\"")
    rest, _, query = rest.partition("?")
    netloc, _, prefix = rest.partition("/")
    host, port = parse_mqtt_url(f"{scheme}://{netloc}", what)
    prefix = urllib.parse.unquote(prefix).strip("/")
    if any(c in prefix for c in "#+") or "//" in prefix:
        raise ConfigError(f"{what}: the topic prefix {prefix!r} must be a topic without wildcards (#, +) or empty levels")
    opts: dict = {"url": f"{scheme}://{host}:{port}", "prefix": prefix}
    for key, values in urllib.parse.parse_qs(query, keep_blank_values=True, strict_parsing=False).items():
        if key not in RUN_URL_KEYS:
            raise ConfigError(f"{what}: unknown key {key!r}; expected some of {', '.join(RUN_URL_KEYS)}"
                              + (" (a password goes in a file: password_file=PATH)" if key == "password" else ""))
        opts[key] = values[-1]
    for key in ("queue_mb", "wait_s"):
        if key in opts:
            try:
                opts[key] = float(opts[key])
                if not opts[key] > 0:
                    raise ValueError
            except ValueError:
                raise ConfigError(f"{what}: {key}={opts[key]!r}; expected a number above 0") from None
    if scheme == "mqtt" and any(k in opts for k in ("ca_file", "cert_file", "key_file")):
        raise ConfigError(f"{what}: TLS files are set, expected \"mqtts://...\"")
    if ("cert_file" in opts) != ("key_file" in opts):
        raise ConfigError(f"{what}: cert_file and key_file go together (a client certificate and its key)")
    return opts


class _StderrLog:
    """The publisher's log lines for a one-shot command: Python logging (stderr), one line each."""

    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def _say(self, level, event, msg, **_fields):
        self.lines.append((event, msg))
        log.log(level, "%s", msg)

    def error(self, event, msg, **f):
        self._say(logging.ERROR, event, msg, **f)

    def warning(self, event, msg, **f):
        self._say(logging.WARNING, event, msg, **f)

    def info(self, event, msg, **f):
        self._say(logging.INFO, event, msg, **f)


def run_event_writer(url: str, pipeline: str, *, state=None):
    """(callback, finish, close) for ``run --events mqtt://...``: every event through the same
    :class:`MqttPublisher` and on-disk queue as ``serve`` (``<state>/mqtt-run``; one ``run`` at a
    time holds it). ``finish`` waits up to ``wait_s`` (default 10) for the broker to acknowledge
    everything; what it did not stays queued and goes out with the next ``run --events mqtt``.
    Returns a 4th item: ``report()`` -> sent/delivered/queued counts for the summary."""
    import fcntl
    import socket

    from ..paths import state_dir

    opts = parse_events_url(url)
    device = socket.gethostname().split(".")[0] or "device"
    qdir = os.path.join(str(state_dir(state)), "mqtt-run")
    os.makedirs(qdir, exist_ok=True)
    lock = open(os.path.join(qdir, "lock"), "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise ConfigError(f"--events {url}: another edge-runtime run is publishing through the queue in {qdir}; "
                          "wait for it (one run at a time per state folder, EDGE_RUNTIME_STATE)") from None
    jlog = _StderrLog()
    try:
        pub = MqttPublisher(opts["url"], opts["prefix"] or f"edge_runtime/{device}", qdir, device=device,
                            max_mb=opts.get("queue_mb", 16.0), username=opts.get("username"),
                            password_file=opts.get("password_file"), logger=jlog, ca_file=opts.get("ca_file"),
                            cert_file=opts.get("cert_file"), key_file=opts.get("key_file"),
                            # not serve's id: a broker drops the older of two sessions with one id
                            client_id=f"edge_runtime-{device}-run")
    except BaseException:
        lock.close()
        raise
    backlog0 = pub.queue.backlog_bytes
    pub.start()
    wait_s = opts.get("wait_s", 10.0)
    state_ = {"closed": False, "events": 0}

    def cb(ev):
        state_["events"] += 1
        pub.put(pipeline, {"pipeline": pipeline, "time_s": round(ev.time_s, 6), "frame": ev.frame, "node": ev.node,
                           "event": ev.event, "value": ev.value, "ts": ev.ts,
                           # seq counts per queue: serve's and run's are two sequences of one device
                           "source": "run"})

    def finish():
        end = time.monotonic() + wait_s
        while time.monotonic() < end and pub.queue.backlog_bytes:
            time.sleep(0.02)

    def close(ok):
        if state_["closed"]:
            return
        state_["closed"] = True
        try:
            pub.close(timeout=0.0)
        finally:
            lock.close()
        queued = pub.queue.backlog_bytes
        if queued:
            log.warning("--events %s: %d event(s) not yet acknowledged by the broker stay queued in %s (%d bytes); "
                        "the next run --events mqtt://... delivers them", url, max(0, pub.seq - 1 - pub.queue.acked_seq),
                        qdir, queued)

    def report():
        return {"broker": f"{pub.host}:{pub.port}", "events": state_["events"], "sent": pub.sent,
                "delivered": pub.delivered, "queued_bytes": pub.queue.backlog_bytes, "dropped": pub.queue.dropped,
                "backlog_bytes_at_start": backlog0, "queue": qdir}

    return cb, finish, close, report

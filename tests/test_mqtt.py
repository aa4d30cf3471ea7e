"""Events to a real MQTT broker (Debian's mosquitto on a free loopback port): in order, nothing
lost across a broker restart or a SIGKILL of the service while the broker is away, refused
credentials as one error line with the audio going on."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from service_helpers import ROOT, ServeProcess, sawtooth

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
pytestmark = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed (apt-get install mosquitto)")
paho = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed (pip install 'edge-runtime[mqtt]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, tmp_path, password_file=None):
        self.port = _free_port()
        self.conf = tmp_path / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {tmp_path}/",
                 "log_dest none"]
        if os.geteuid() == 0:            # as root mosquitto drops to user "mosquitto", who cannot read tmp_path
            lines.append("user root")
        lines += [f"password_file {password_file}", "allow_anonymous false"] if password_file else ["allow_anonymous true"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Subscriber:
    """A persistent-session QoS 1 subscriber: the broker keeps what arrives while it reconnects."""

    def __init__(self, port, topic="edge_runtime/test/#"):
        self.msgs = []
        c = self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="edge_runtime-test-sub",
                                 clean_session=False)
        c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe(topic, qos=1)
        c.on_message = lambda cl, u, m: self.msgs.append(json.loads(m.payload))
        c.reconnect_delay_set(1, 2)
        c.connect("127.0.0.1", port)
        c.loop_start()

    def seqs(self):
        return [m["seq"] for m in list(self.msgs) if "seq" in m]

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def _service(tmp_path, port, seconds, extra=""):
    data = sawtooth(16000 * seconds)
    (tmp_path / "in.raw").write_bytes(data.tobytes())
    (tmp_path / "m.toml").write_text('name = "m"\nsample_rate = 16000\nblock_size = 160\n'
                                      '[[nodes]]\ntype = "meter"\ninterval_ms = 100\n')
    cfg = tmp_path / "service.toml"
    cfg.write_text(f'[service]\nmetrics = ""\nmqtt = "mqtt://127.0.0.1:{port}"\nmqtt_prefix = "edge_runtime/test"\n'
                   f'state_dir = "state"\n{extra}\n[[pipelines]]\nname = "mic"\npipeline = "m.toml"\ninput = "in.raw"\n'
                   f'events = "ev.jsonl"\nsample_rate = 16000\nchannels = 1\npace = true\n')
    return cfg


def _events_in_file(tmp_path):
    return [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines() if x.strip()]


def _wait(cond, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_events_arrive_in_order_and_none_is_lost_across_a_broker_restart(tmp_path):
    broker = Broker(tmp_path)
    broker.start()
    sub = Subscriber(broker.port)
    try:
        cfg = _service(tmp_path, broker.port, 5)
        d = ServeProcess(cfg)
        assert d.wait_event("mqtt_connected", timeout=30), d.raw
        time.sleep(1.0)
        broker.stop()                                  # the broker goes away mid-stream ...
        time.sleep(1.5)
        broker.start()                                 # ... and comes back
        rc = d.wait(60)
        assert rc == 0, d.raw[-5:]
        n = len(_events_in_file(tmp_path))
        assert n >= 40
        assert _wait(lambda: set(range(1, n + 1)) <= set(sub.seqs()), 30), (n, sorted(set(sub.seqs()))[-5:])
        seqs = sub.seqs()
        first = []
        for s in seqs:                                 # first arrivals are in order; repeats are marked by seq
            if s not in first:
                first.append(s)
        assert first == sorted(first) and first[:n] == list(range(1, n + 1))
        print(f"\nbroker restart: {n} events, {len(seqs)} messages received, {len(seqs) - len(set(seqs))} repeats, "
              f"{len(set(range(1, n + 1)) - set(seqs))} lost")
        assert d.events("mqtt_disconnected") and len(d.events("mqtt_connected")) >= 2
        got = {m["seq"]: m for m in sub.msgs if "seq" in m}
        assert got[1]["event"] == "peak_dbfs" and got[1]["pipeline"] == "mic" and "ts" in got[1]
        # Home Assistant discovery: a retained config per pipeline, so the sensor appears by itself
        ha = []
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="edge_runtime-test-ha")
        c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("homeassistant/sensor/+/config", qos=1)
        c.on_message = lambda cl, u, m: ha.append((m.topic, m.retain, json.loads(m.payload)))
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        assert _wait(lambda: ha, 10)
        c.loop_stop()
        c.disconnect()
        topic, retained, conf = ha[0]
        assert retained and topic.endswith("_mic/config") and conf["state_topic"] == "edge_runtime/test/mic/events"
    finally:
        sub.close()
        broker.stop()


def test_two_services_on_one_host_with_their_own_client_ids_both_deliver(tmp_path):
    """A broker drops the older of two sessions with one client id; ``mqtt_client_id`` keeps two
    services on one host (the soak runs one per pipeline) from knocking each other off."""
    broker = Broker(tmp_path)
    broker.start()
    sub = Subscriber(broker.port, topic="edge_runtime/+/mic/events")
    procs = []
    try:
        for k in ("a", "b"):
            d = tmp_path / k
            d.mkdir()
            cfg = _service(d, broker.port, 3, extra=f'mqtt_client_id = "edge_runtime-test-{k}"')
            cfg.write_text(cfg.read_text().replace('"edge_runtime/test"', f'"edge_runtime/{k}"'))
            procs.append((d, ServeProcess(cfg)))
        for d, p in procs:
            assert p.wait(60) == 0, p.raw[-5:]
        want = [e for d, _ in procs for e in _events_in_file(d)]
        assert len(want) >= 40
        assert _wait(lambda: len(sub.msgs) >= len(want), 30), (len(sub.msgs), len(want))
        for _, p in procs:     # each connected once: neither session was taken over by the other
            assert len(p.events("mqtt_connected")) == 1 and not p.events("mqtt_disconnected"), p.raw[-5:]
    finally:
        for _, p in procs:
            p.kill()
        sub.close()
        broker.stop()


def test_home_assistant_discovery_has_a_sensor_per_kind_of_event(tmp_path):
    """Each node's kinds of event are announced before the first event: a decision node (VAD) is one
    sensor whose state is the label, classify's ``class`` index shows as its label, an
    ``X_start``/``X_end`` pair is a binary sensor; each kind's latest event is retained on its own
    state topic; the pipeline's RTF / deadline misses and the device's health have sensors too."""
    import soundfile as sf

    broker = Broker(tmp_path)
    broker.start()
    x, sr = sf.read(str(ROOT / "tests" / "fixtures" / "audio" / "vad_speech.flac"), dtype="float32")
    sf.write(str(tmp_path / "in.wav"), x, sr)
    (tmp_path / "p.toml").write_text(
        'name = "p"\nsample_rate = 16000\nblock_size = 160\n'
        '[[nodes]]\ntype = "vad"\nname = "vad"\n'
        '[[nodes]]\ntype = "classify"\nhop_ms = 250\n'
        '[[nodes]]\ntype = "denoise"\n')
    cfg = tmp_path / "service.toml"
    cfg.write_text(f'[service]\nmetrics = ""\nmqtt = "mqtt://127.0.0.1:{broker.port}"\nmqtt_prefix = "edge_runtime/test"\n'
                   'state_dir = "state"\nmqtt_metrics_s = 1\n[[pipelines]]\nname = "mic"\npipeline = "p.toml"\n'
                   'input = "in.wav"\nevents = "ev.jsonl"\npace = true\nmax_frames = 48000\n')
    got: dict = {}
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="edge_runtime-test-ha2")
    c.on_connect = lambda cl, u, f, rc, p=None: (cl.subscribe("homeassistant/#", qos=1),
                                                 cl.subscribe("edge_runtime/test/mic/+/+", qos=1))
    c.on_message = lambda cl, u, m: got.__setitem__(m.topic, (m.retain, json.loads(m.payload)))
    try:
        d = ServeProcess(cfg)
        assert d.wait(60) == 0, d.raw[-5:]
        c.connect("127.0.0.1", broker.port)    # after the run: what a new Home Assistant sees (retained)
        c.loop_start()
        assert _wait(lambda: len([t for t in got if t.startswith("homeassistant/")]) >= 8, 10), sorted(got)
        time.sleep(0.5)
    finally:
        c.loop_stop()
        c.disconnect()
        broker.stop()
    conf = {t.split("/")[1] + ":" + t.split("/")[2]: v[1] for t, v in got.items() if t.startswith("homeassistant/")}
    dev = __import__("socket").gethostname().split(".")[0]
    uid = f"edge_runtime_{dev}_mic".replace("-", "_")
    vad = conf[f"sensor:{uid}_vad_decision"]
    assert vad["state_topic"] == "edge_runtime/test/mic/vad/decision" and vad["value_template"] == "{{ value_json.event }}"
    cls = conf[f"sensor:{uid}_classify_class"]
    assert "speech" in cls["value_template"] and cls["state_topic"] == "edge_runtime/test/mic/classify/class"
    sp = conf[f"binary_sensor:{uid}_denoise_speech"]
    assert sp["state_topic"] == "edge_runtime/test/mic/denoise/speech" and "_start" in sp["value_template"]
    assert conf[f"sensor:{uid}_rtf"]["state_topic"] == "edge_runtime/test/mic/metrics"
    assert conf[f"sensor:edge_runtime_{dev}_rss_mb".replace("-", "_")]["state_topic"] == "edge_runtime/test/health"
    assert all(v["device"]["identifiers"] == [f"edge_runtime_{dev}"] for v in conf.values())
    # the retained state topics hold each kind's latest event, as in the events file
    events = _events_in_file(tmp_path)
    last_vad = [e for e in events if e["node"] == "vad"][-1]
    retained, body = got["edge_runtime/test/mic/vad/decision"]
    assert retained and body["event"] == last_vad["event"] and body["time_s"] == last_vad["time_s"]
    last_cls = [e for e in events if e["event"] == "class"][-1]
    assert got["edge_runtime/test/mic/classify/class"][1]["value"] == last_cls["value"]


def test_events_queued_while_the_broker_is_away_survive_a_sigkill(tmp_path):
    broker = Broker(tmp_path)                          # not started: the broker is away
    cfg = _service(tmp_path, broker.port, 3)
    d = ServeProcess(cfg)
    try:
        assert d.wait_event("ready", timeout=30), d.raw
        time.sleep(2.0)
        os.kill(d.proc.pid, signal.SIGKILL)
        d.wait()
    finally:
        d.kill()
    queued = len(_events_in_file(tmp_path))
    assert queued >= 15
    broker.start()
    sub = Subscriber(broker.port)
    try:
        (tmp_path / "ev.jsonl").unlink()
        d2 = ServeProcess(_service(tmp_path, broker.port, 1))
        rc = d2.wait(60)
        assert rc == 0, d2.raw[-5:]
        again = len(_events_in_file(tmp_path))
        total = queued + again
        # the first run's events: all there but those of its last 100 ms (not yet on disk at the kill)
        assert _wait(lambda: len(set(sub.seqs())) >= total - 2, 30), (len(set(sub.seqs())), total)
        seqs = set(sub.seqs())
        assert set(range(1, queued - 1)) <= seqs           # the first run's, from the disk queue
        print(f"\nSIGKILL while the broker was away: {queued} events written by the killed run, {again} by the "
              f"second; {len(seqs)} distinct delivered, {total - len(seqs)} lost")
        assert max(seqs) >= total - 2 and len(seqs) == len(set(seqs))
    finally:
        sub.close()
        broker.stop()


def test_refused_credentials_are_one_error_and_the_audio_goes_on(tmp_path):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pw), "edge", "right"], check=True, capture_output=True)
    broker = Broker(tmp_path, password_file=pw)
    broker.start()
    try:
        (tmp_path / "secret").write_text("wrong\n")
        cfg = _service(tmp_path, broker.port, 2, extra='mqtt_username = "edge"\nmqtt_password_file = "secret"')
        d = ServeProcess(cfg)
        rc = d.wait(60)
        assert rc == 0, d.raw[-5:]
        refused = d.events("mqtt_refused")
        assert len(refused) == 1 and "wrong" not in json.dumps(refused) and "wrong" not in "\n".join(d.raw)
        ends = d.events("pipeline_end")
        assert ends and ends[0]["frames_in"] == 32000
    finally:
        broker.stop()


def test_disk_queue_recovers_from_a_torn_tail_and_keeps_the_acked_point(tmp_path):
    from edge_runtime.service.mqtt import DiskQueue

    q = DiskQueue(str(tmp_path), max_bytes=1 << 16)
    for i in range(5):
        assert q.append(f'{{"payload": {{"seq": {i + 1}}}}}'.encode())
    q.flush()
    recs = q.peek(0)
    q.ack(recs[1][0], 2)                             # two delivered
    q.close()
    with open(tmp_path / "queue.log", "ab") as f:    # a write cut short by a power cut
        f.write(b"\x40\x00\x00\x00garbage")
    q2 = DiskQueue(str(tmp_path), max_bytes=1 << 16)
    left = q2.peek(q2.acked)
    assert [r for _, r in left] == [r for _, r in recs[2:]] and q2.acked_seq == 2
    big = DiskQueue(str(tmp_path / "b"), max_bytes=100)
    assert sum(big.append(b"x" * 40) for _ in range(5)) == 2 and big.dropped == 3


def test_metrics_and_health_are_published(tmp_path):
    broker = Broker(tmp_path)
    broker.start()
    got = []
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="edge_runtime-test-metrics")
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe([("edge_runtime/test/mic/metrics", 0),
                                                              ("edge_runtime/test/health", 0)])
    c.on_message = lambda cl, u, m: got.append((m.topic, json.loads(m.payload)))
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    try:
        cfg = _service(tmp_path, broker.port, 4, extra="mqtt_metrics_s = 1")
        d = ServeProcess(cfg)
        assert d.wait(60) == 0, d.raw[-5:]
        metrics = [b for t, b in got if t.endswith("/metrics")]
        health = [b for t, b in got if t.endswith("/health")]
        assert len(metrics) >= 2 and metrics[-1]["blocks"] > metrics[0]["blocks"] and "realtime_factor" in metrics[0]
        assert health and health[0]["rss_mb"] > 0 and "uptime_s" in health[0] and health[0]["mqtt_dropped"] == 0
    finally:
        c.loop_stop()
        c.disconnect()
        broker.stop()


def test_publish_bookkeeping_stays_bounded_over_many_events_and_side_messages(tmp_path):
    """Every event also goes out as its kind's retained state (QoS 0) and metrics go beside them:
    their publish callbacks must not pile up as unmatched mids (they did, one per event: the
    soak's speech16k heap grew 0.6 MB in half an hour), and every event is acknowledged."""
    from edge_runtime.service.mqtt import MqttPublisher

    broker = Broker(tmp_path)
    broker.start()
    pub = MqttPublisher(f"mqtt://127.0.0.1:{broker.port}", "edge_runtime/test", str(tmp_path / "state"),
                        device="dev", client_id="edge_runtime-test-bookkeeping")
    try:
        pub.start()
        assert _wait(lambda: pub.connected, 10)
        n = 1500
        for i in range(n):
            pub.put("mic", {"pipeline": "mic", "node": "vad", "event": "speech_start", "value": 1.0, "frame": i})
            if i % 100 == 0:
                pub.publish_metrics({"pipelines": [{"name": "mic", "blocks": i}], "uptime_s": 1.0})
                time.sleep(0.02)
        assert _wait(lambda: pub.snapshot()["delivered"] == n and pub.snapshot()["unmatched_mids"] == 0, 30), \
            pub.snapshot()
    finally:
        pub.close()
        broker.stop()


def _ca_and_server_cert(d):
    """A CA and a localhost server certificate signed by it (openssl), for a TLS listener."""
    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=edge test CA",
         "-keyout", "ca.key", "-out", "ca.pem")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "srv.key", "-out", "srv.csr")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    ossl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
         "-extfile", "ext.cnf", "-out", "srv.pem")
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=someone else",
         "-keyout", "other.key", "-out", "other.pem")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_tls_broker_with_its_ca_and_a_wrong_ca(tmp_path):
    _ca_and_server_cert(tmp_path)
    broker = Broker(tmp_path)
    broker.conf.write_text(broker.conf.read_text() + f"cafile {tmp_path}/ca.pem\ncertfile {tmp_path}/srv.pem\n"
                                                      f"keyfile {tmp_path}/srv.key\n")
    broker.start()
    got = []
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="edge_runtime-test-tls")
    c.tls_set(ca_certs=str(tmp_path / "ca.pem"))
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("edge_runtime/test/#", qos=1)
    c.on_message = lambda cl, u, m: got.append(json.loads(m.payload))
    c.connect("localhost", broker.port)
    c.loop_start()
    try:
        cfg = _service(tmp_path, broker.port, 2, extra='mqtt_ca_file = "ca.pem"')
        cfg.write_text(cfg.read_text().replace("mqtt://127.0.0.1", "mqtts://localhost"))
        d = ServeProcess(cfg)
        assert d.wait(60) == 0, d.raw[-5:]
        n = len(_events_in_file(tmp_path))
        assert _wait(lambda: {m.get("seq") for m in got} >= set(range(1, n + 1)), 20), (n, len(got))
        # a broker whose certificate the CA file does not vouch for: one error line, the audio goes on
        (tmp_path / "ev.jsonl").unlink()
        cfg.write_text(cfg.read_text().replace('mqtt_ca_file = "ca.pem"', 'mqtt_ca_file = "other.pem"')
                       .replace('state_dir = "state"', 'state_dir = "state2"'))
        d2 = ServeProcess(cfg)
        assert d2.wait(60) == 0, d2.raw[-5:]
        assert len(d2.events("mqtt_tls_failed")) == 1 and d2.events("pipeline_end")[0]["frames_in"] == 32000
    finally:
        c.loop_stop()
        c.disconnect()
        broker.stop()


def _client_cert(d, name="edge-device"):
    """A client certificate (and key) signed by the test CA of :func:`_ca_and_server_cert`."""
    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", "cli.key", "-out", "cli.csr")
    (d / "cli.cnf").write_text("extendedKeyUsage=clientAuth\n")
    ossl("x509", "-req", "-in", "cli.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
         "-extfile", "cli.cnf", "-out", "cli.pem")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_tls_broker_that_requires_a_client_certificate(tmp_path):
    _ca_and_server_cert(tmp_path)
    _client_cert(tmp_path)
    broker = Broker(tmp_path)
    broker.conf.write_text(broker.conf.read_text() + f"cafile {tmp_path}/ca.pem\ncertfile {tmp_path}/srv.pem\n"
                                                      f"keyfile {tmp_path}/srv.key\nrequire_certificate true\n")
    broker.start()
    got = []
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="edge_runtime-test-tls-sub")
    c.tls_set(ca_certs=str(tmp_path / "ca.pem"), certfile=str(tmp_path / "cli.pem"), keyfile=str(tmp_path / "cli.key"))
    c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("edge_runtime/test/#", qos=1)
    c.on_message = lambda cl, u, m: got.append(json.loads(m.payload))
    c.connect("localhost", broker.port)
    c.loop_start()
    try:
        # with the client certificate: every event delivered
        cfg = _service(tmp_path, broker.port, 2, extra='mqtt_ca_file = "ca.pem"\nmqtt_cert_file = "cli.pem"\n'
                                                      'mqtt_key_file = "cli.key"')
        cfg.write_text(cfg.read_text().replace("mqtt://127.0.0.1", "mqtts://localhost"))
        d = ServeProcess(cfg)
        assert d.wait(60) == 0, d.raw[-5:]
        n = len(_events_in_file(tmp_path))
        assert n >= 15
        assert _wait(lambda: {m.get("seq") for m in got} >= set(range(1, n + 1)), 20), (n, len(got))
        assert not d.events("mqtt_tls_failed") and d.events("mqtt_connected")
        # without one, the broker refuses the handshake: one error line, nothing delivered, the audio goes on
        (tmp_path / "ev.jsonl").unlink()
        cfg.write_text(cfg.read_text().replace('mqtt_cert_file = "cli.pem"\nmqtt_key_file = "cli.key"', "")
                       .replace('state_dir = "state"', 'state_dir = "state2"'))
        before = len(got)
        d2 = ServeProcess(cfg)
        assert d2.wait(60) == 0, d2.raw[-5:]
        assert not d2.events("mqtt_connected"), d2.raw[-5:]
        failed = d2.events("mqtt_tls_failed")
        assert len(failed) == 1, [json.loads(x)["event"] for x in d2.raw]
        assert "certificate required" in failed[0]["msg"] and "mqtt_cert_file" in failed[0]["msg"], failed
        assert d2.events("pipeline_end")[0]["frames_in"] == 32000
        assert len(got) == before
        # `run --events mqtts://...` takes the same files from its URL
        _run_input(tmp_path, seconds=1)
        r = _run(tmp_path, f"mqtts://localhost:{broker.port}/edge_runtime/test?ca_file={tmp_path}/ca.pem&"
                           f"cert_file={tmp_path}/cli.pem&key_file={tmp_path}/cli.key", "--json")
        assert r.returncode == 0, r.stderr
        k = json.loads(r.stdout)["events"]
        assert _wait(lambda: sum(1 for m in got if m.get("source") == "run") >= k, 20)
    finally:
        c.loop_stop()
        c.disconnect()
        broker.stop()


@pytest.mark.parametrize("svc,expect", [
    ({"mqtt": "tcp://x:1"}, "expected \"mqtt://HOST:PORT\" or \"mqtts://HOST:PORT\""),
    ({"mqtt": "mqtt://x:1", "mqtt_ca_file": "ca.pem"}, "TLS files are set, expected \"mqtts://HOST:PORT\""),
    ({"mqtt": "mqtts://x", "mqtt_cert_file": "c.pem"}, "mqtt_cert_file and service.mqtt_key_file go together"),
    ({"mqtt": "mqtt://x:1", "mqtt_prefix": "a/#"}, "without wildcards"),
    ({"mqtt": "mqtt://x:1", "mqtt_queue_mb": 0}, "mqtt_queue_mb = 0; expected megabytes"),
    ({"mqtt": "mqtt://x:1", "mqtt_client_id": "a b"}, "mqtt_client_id = 'a b'; expected 1..64 printable"),
])
def test_mqtt_config_errors(svc, expect):
    from edge_runtime.errors import ConfigError
    from edge_runtime.service.config import parse_service_config

    pipe = {"pipeline": "speech16k", "input": "in.raw", "sample_rate": 16000, "channels": 1}
    with pytest.raises(ConfigError) as ei:
        parse_service_config({"service": svc, "pipelines": [pipe]}, "s.toml")
    assert str(ei.value).startswith("s.toml: ") and expect in str(ei.value), str(ei.value)


# ---- `edge-runtime run --events mqtt://HOST:PORT/PREFIX`: the same publisher and queue -----------------

def _run_input(tmp_path, seconds=2):
    import numpy as np

    from conftest import write_wav

    x = (sawtooth(16000 * seconds)[:, 0] / 32768.0).astype(np.float32)
    write_wav(tmp_path / "in.wav", x, 16000)
    (tmp_path / "m.toml").write_text('name = "m"\nsample_rate = 16000\nblock_size = 160\n'
                                      '[[nodes]]\ntype = "meter"\ninterval_ms = 100\n')


def _run(tmp_path, events, *more):
    from conftest import run_cli

    return run_cli("run", tmp_path / "m.toml", "-i", tmp_path / "in.wav", "--events", events, *more,
                   env={"EDGE_RUNTIME_STATE": str(tmp_path / "state")})


def test_run_events_to_mqtt_arrive_in_order_as_in_the_file(tmp_path):
    _run_input(tmp_path)
    broker = Broker(tmp_path)
    broker.start()
    sub = Subscriber(broker.port, topic="lab/bench1/+/events")   # not the per-kind state topics beside it
    try:
        r = _run(tmp_path, tmp_path / "ev.jsonl")
        assert r.returncode == 0, r.stderr
        ref = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()]
        r = _run(tmp_path, f"mqtt://127.0.0.1:{broker.port}/lab/bench1", "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["events"] == len(ref) >= 40
        assert _wait(lambda: len(sub.msgs) >= len(ref), 20), (len(sub.msgs), len(ref))
        got = list(sub.msgs)
        assert [m["seq"] for m in got] == list(range(1, len(ref) + 1))
        assert [(m["node"], m["event"], m["value"], m["time_s"]) for m in got] == \
            [(e["node"], e["event"], e["value"], round(e["time_s"], 6)) for e in ref]
        assert got[0]["pipeline"] == "m" and got[0]["ts"].endswith("Z") and got[0]["source"] == "run"
    finally:
        sub.close()
        broker.stop()


def test_run_events_while_the_broker_is_away_go_out_with_the_next_run(tmp_path):
    _run_input(tmp_path, seconds=1)
    broker = Broker(tmp_path)                          # not started
    url = f"mqtt://127.0.0.1:{broker.port}/lab/bench1?wait_s=1"
    r = _run(tmp_path, url, "--json")
    assert r.returncode == 0, r.stderr                  # the audio ran; the events wait on disk
    first = json.loads(r.stdout)["events"]
    assert first >= 18 and "stay queued in" in r.stderr.decode() and "mqtt-run" in r.stderr.decode()
    broker.start()
    sub = Subscriber(broker.port, topic="lab/bench1/#")
    try:
        r = _run(tmp_path, url.replace("wait_s=1", "wait_s=20"), "--json")
        assert r.returncode == 0, r.stderr
        total = first + json.loads(r.stdout)["events"]
        assert _wait(lambda: len(set(sub.seqs())) >= total, 20), (len(set(sub.seqs())), total)
        seqs = sub.seqs()
        assert sorted(set(seqs)) == list(range(1, total + 1))     # none lost, numbered across both runs
        first_arrivals = list(dict.fromkeys(seqs))
        assert first_arrivals == sorted(first_arrivals)           # in order
        print(f"\nrun --events mqtt with the broker away: {first} queued by the first run, {total - first} by the "
              f"second; {len(set(seqs))} delivered, {len(seqs) - len(set(seqs))} repeats, 0 lost")
    finally:
        sub.close()
        broker.stop()


@pytest.mark.parametrize("url,expect", [
    ("mqtt://127.0.0.1:1/a/#", "without wildcards"),
    ("mqtt://127.0.0.1:1/a?password=x", "a password goes in a file"),
    ("mqtt://127.0.0.1:1/a?ca_file=ca.pem", "expected \"mqtts://...\""),
    ("mqtts://127.0.0.1:1/a?cert_file=c.pem", "cert_file and key_file go together"),
    ("mqtt://127.0.0.1:99999/a", "a port 1..65535"),
])
def test_run_events_url_errors(tmp_path, url, expect):
    _run_input(tmp_path, seconds=1)
    r = _run(tmp_path, url)
    assert r.returncode == 2 and expect in r.stderr.decode() and "Traceback" not in r.stderr.decode(), r.stderr

"""The service config: which pipelines run, from which input to which outputs.

```toml
# /etc/edge_runtime/service.toml
[service]
metrics = "127.0.0.1:9750"   # Prometheus text on /metrics, JSON on /status; "" = off; "[::1]:9750" too
metrics_remote = false       # true: allow a non-loopback metrics address (no authentication!)
mqtt = "mqtt://127.0.0.1:1883"   # optional: every node event to <mqtt_prefix>/<pipeline>/events, QoS 1,
mqtt_prefix = "edge_runtime/pi4" # store-and-forward on disk (service/mqtt.py); default prefix edge_runtime/<host>
mqtt_queue_mb = 16           # the on-disk queue's bound while the broker is away (beyond: dropped, counted)
mqtt_username = "edge"       # and mqtt_password_file = "/etc/edge_runtime/mqtt.secret" (mode 0600)
mqtt_metrics_s = 30          # <prefix>/<pipeline>/metrics and <prefix>/health this often (QoS 0; 0 = off)
mqtt_client_id = "edge_runtime-pi4-mic"  # default edge_runtime-<host>; two services on one host need two ids
# TLS: mqtt = "mqtts://broker.lan:8883" with mqtt_ca_file = "ca.pem" (client certificate: mqtt_cert_file, mqtt_key_file)
log_level = "info"           # debug, info, warning, error
stop_timeout_s = 10          # SIGTERM: longest wait for the pipelines to drain

[[pipelines]]
name = "mic"                 # unique; labels logs and metrics
pipeline = "speech16k"       # a pipeline name or a .toml path (relative to this file)
input = "alsa:hw:1,0"        # alsa:DEVICE, a file, a .raw/.pcm file, or "-" (raw PCM on stdin)
output = "alsa:default"      # optional: alsa:DEVICE, a file (written atomically), "-"
events = "/var/lib/edge_runtime/events.jsonl"   # optional: JSON lines appended; "log" = log lines
events_max_mb = 64           # then events.jsonl is renamed events.jsonl.1 (one kept) and a new one begun
segment_s = 600              # file output: complete files of 10 minutes (out-<UTC start>-00001.wav, ...)
sample_rate = 16000          # of ALSA/raw input (default: the pipeline's; else soxr converts)
channels = 1                 # of ALSA/raw input (default: the pipeline's, else 1)
format = "S16_LE"            # ALSA S16_LE/S32_LE/FLOAT_LE, raw s16le/s32le/f32le
period_frames = 160          # ALSA period (default: the device profile's, scaled to the rate)
periods = 4                  # ALSA buffer = periods x period_frames
governor = true              # step ML nodes down to cheaper variants when blocks are late
```

Testing aids (a live device needs neither): ``pace = true`` reads a file or stdin no faster than
real time, like a device would; ``max_frames = N`` ends the pipeline after N input frames.
``retry_initial_s`` / ``retry_max_s`` bound the back-off when a device is missing or goes away.

Every error names the file, the key, the value and what was expected (:class:`ConfigError`).
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from ..errors import ConfigError
from ..io.base import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

__all__ = ["DEFAULT_CONFIG", "DEFAULT_METRICS", "InstanceSpec", "ServiceConfig", "load_service_config",
           "parse_service_config"]

DEFAULT_CONFIG = "/etc/edge_runtime/service.toml"
DEFAULT_METRICS = "127.0.0.1:9750"
SERVICE_KEYS = ("metrics", "metrics_remote", "log_level", "stop_timeout_s", "crossfade_ms", "mqtt", "mqtt_prefix",
                "mqtt_queue_mb", "mqtt_username", "mqtt_password_file", "state_dir", "mqtt_metrics_s", "mqtt_ca_file",
                "mqtt_cert_file", "mqtt_key_file", "mqtt_client_id")
PIPELINE_KEYS = ("name", "pipeline", "input", "output", "events", "sample_rate", "channels", "format",
                 "period_frames", "periods", "governor", "pace", "max_frames", "retry_initial_s",
                 "retry_max_s", "events_max_mb", "segment_s")
LOG_LEVELS = ("debug", "info", "warning", "error")
ALSA_FORMATS = {"S16_LE": "s16le", "S32_LE": "s32le", "FLOAT_LE": "f32le"}
RAW_FORMATS = {v: k for k, v in ALSA_FORMATS.items()}


@dataclasses.dataclass(frozen=True)
class InstanceSpec:
    """One ``[[pipelines]]`` entry, validated. ``io_key()`` says what a reload may not change
    without reopening the devices."""

    name: str
    pipeline: str                # resolved path or name, as given to load_pipeline_config
    input: str
    output: str | None
    events: str | None
    sample_rate: int | None
    channels: int | None
    alsa_format: str
    raw_format: str
    period_frames: int | None
    periods: int | None
    governor: bool
    pace: bool
    max_frames: int
    retry_initial_s: float
    retry_max_s: float
    events_max_mb: float = 64.0
    segment_s: float = 0.0       # > 0: a file output is written as complete files of this length

    @property
    def live(self) -> bool:
        """Whether the input is a device (missing/lost devices are retried, files are not)."""
        return self.input.startswith("alsa:")

    def io_key(self) -> tuple:
        return (self.input, self.output, self.events, self.sample_rate, self.channels, self.alsa_format,
                self.raw_format, self.period_frames, self.periods, self.pace, self.max_frames, self.segment_s)


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    path: str
    metrics: tuple[str, int] | None
    log_level: str
    stop_timeout_s: float
    crossfade_ms: float
    pipelines: tuple[InstanceSpec, ...]
    metrics_remote: bool = False      # the endpoint may bind a non-loopback address
    mqtt: str | None = None           # "mqtt://HOST:PORT": events published there (service/mqtt.py)
    mqtt_prefix: str = ""             # topic prefix (default edge_runtime/<hostname>)
    mqtt_queue_mb: float = 16.0       # the on-disk store-and-forward bound
    mqtt_username: str | None = None
    mqtt_password_file: str | None = None
    state_dir: str | None = None      # default: $EDGE_RUNTIME_STATE (the unit sets /var/lib/edge_runtime)
    mqtt_metrics_s: float = 30.0      # metrics and device health every this many seconds (0 = off)
    mqtt_ca_file: str | None = None   # mqtts://: the broker's CA (default: the system's)
    mqtt_cert_file: str | None = None
    mqtt_key_file: str | None = None
    mqtt_client_id: str = ""          # the MQTT session id (default edge_runtime-<hostname>)


def _fail(path, msg):
    raise ConfigError(f"{path}: {msg}")


def _typed(d, key, types, path, where, expected, default=None):
    if key not in d:
        return default
    v = d[key]
    if isinstance(v, bool) and bool not in types:
        _fail(path, f"{where}{key} = {v!r}; expected {expected}")
    if not isinstance(v, types):
        _fail(path, f"{where}{key} = {v!r}; expected {expected}")
    if isinstance(v, float) and not math.isfinite(v):
        _fail(path, f"{where}{key} = {v!r}; expected {expected}")
    return v


def parse_metrics_address(value, path="<config>") -> tuple[str, int] | None:
    """``"HOST:PORT"`` / ``"PORT"`` -> (host, port); ``""``/``false`` -> None. Host defaults to
    127.0.0.1 (the endpoint has no authentication: keep it on localhost)."""
    if value is False or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        _fail(path, f"service.metrics = {value!r}; expected \"HOST:PORT\", a port, or \"\" (off)")
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        _fail(path, f"service.metrics = {value!r}; expected \"HOST:PORT\" with a port 0..65535 "
                    "(0 = any free port)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or "localhost" (other names are not resolved: they count as remote)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve_pipeline_ref(ref: str, base: Path) -> str:
    if ref.endswith(".toml") or os.sep in ref:
        p = Path(ref)
        return str(p if p.is_absolute() else (base / p))
    return ref


def parse_service_config(data: dict, path="<config>") -> ServiceConfig:
    """Validate a parsed service TOML (pipelines are resolved later, by the daemon)."""
    path = str(path)
    base = Path(path).resolve().parent if path != "<config>" else Path.cwd()
    unknown = [k for k in data if k not in ("service", "pipelines")]
    if unknown:
        _fail(path, f"unknown key {unknown[0]!r} (expected a [service] table and [[pipelines]] entries)")
    svc = data.get("service", {})
    if not isinstance(svc, dict):
        _fail(path, "service must be a table ([service])")
    bad = [k for k in svc if k not in SERVICE_KEYS]
    if bad:
        _fail(path, f"service.{bad[0]}: unknown key (expected keys: {', '.join(SERVICE_KEYS)})")
    metrics = parse_metrics_address(svc.get("metrics", DEFAULT_METRICS), path)
    remote = _typed(svc, "metrics_remote", (bool,), path, "service.", "true or false", False)
    if metrics is not None and not remote and not is_loopback(metrics[0]):
        _fail(path, f"service.metrics = {svc.get('metrics')!r}: {metrics[0]} is not a loopback address and the "
                    "endpoint has no authentication; use 127.0.0.1 or [::1], or set service.metrics_remote = "
                    "true to serve it on other interfaces")
    mqtt = _typed(svc, "mqtt", (str,), path, "service.", "\"mqtt://HOST:PORT\" or \"\"", "") or None
    if mqtt is not None:
        from .mqtt import parse_mqtt_url

        parse_mqtt_url(mqtt, path)
    mqtt_prefix = _typed(svc, "mqtt_prefix", (str,), path, "service.", "a topic prefix without wildcards", "")
    if any(c in mqtt_prefix for c in "#+\0") or mqtt_prefix.startswith("/"):
        _fail(path, f"service.mqtt_prefix = {mqtt_prefix!r}; expected a topic prefix without wildcards (+ #) or a "
                    "leading /")
    qmb = _typed(svc, "mqtt_queue_mb", (int, float), path, "service.", "megabytes 0.01..4096", 16.0)
    if not 0.01 <= qmb <= 4096:
        _fail(path, f"service.mqtt_queue_mb = {qmb!r}; expected megabytes 0.01..4096")
    muser = _typed(svc, "mqtt_username", (str,), path, "service.", "a user name", None)
    mpass = _typed(svc, "mqtt_password_file", (str,), path, "service.", "a file path", None)
    sdir = _typed(svc, "state_dir", (str,), path, "service.", "a folder", None)
    tls_files = {}
    for key in ("mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file"):
        v = _typed(svc, key, (str,), path, "service.", "a file path", None)
        tls_files[key] = None if v is None else (v if os.path.isabs(v) else str(base / v))
    if (tls_files["mqtt_cert_file"] is None) != (tls_files["mqtt_key_file"] is None):
        _fail(path, "service.mqtt_cert_file and service.mqtt_key_file go together (a client certificate and its key)")
    if any(tls_files.values()) and not (mqtt or "").startswith("mqtts://"):
        _fail(path, f"service.mqtt = {mqtt!r}: TLS files are set, expected \"mqtts://HOST:PORT\"")
    mcid = _typed(svc, "mqtt_client_id", (str,), path, "service.", "1..64 printable characters", "")
    if mcid and (len(mcid) > 64 or not mcid.isprintable() or any(c in mcid for c in "#+/ ")):
        _fail(path, f"service.mqtt_client_id = {mcid!r}; expected 1..64 printable characters without spaces, "
              "'/', '+' or '#'")
    mmet = _typed(svc, "mqtt_metrics_s", (int, float), path, "service.", "seconds 0 (off) or 1..86400", 30.0)
    if mmet and not 1 <= mmet <= 86400:
        _fail(path, f"service.mqtt_metrics_s = {mmet!r}; expected seconds 1..86400, or 0 (off)")
    level = _typed(svc, "log_level", (str,), path, "service.", f"one of {', '.join(LOG_LEVELS)}", "info")
    if level not in LOG_LEVELS:
        _fail(path, f"service.log_level = {level!r}; expected one of {', '.join(LOG_LEVELS)}")
    stop_timeout = _typed(svc, "stop_timeout_s", (int, float), path, "service.", "a number of seconds > 0", 10.0)
    if stop_timeout <= 0:
        _fail(path, f"service.stop_timeout_s = {stop_timeout!r}; expected a number of seconds > 0")
    xfade = _typed(svc, "crossfade_ms", (int, float), path, "service.", "milliseconds 0..1000", 20.0)
    if not 0 <= xfade <= 1000:
        _fail(path, f"service.crossfade_ms = {xfade!r}; expected milliseconds 0..1000")

    entries = data.get("pipelines")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        _fail(path, "expected at least one [[pipelines]] entry (with pipeline = ... and input = ...)")
    specs, names = [], set()
    for i, e in enumerate(entries):
        where = f"pipelines[{i}]."
        bad = [k for k in e if k not in PIPELINE_KEYS]
        if bad:
            _fail(path, f"{where}{bad[0]}: unknown key (expected keys: {', '.join(PIPELINE_KEYS)})")
        for req in ("pipeline", "input"):
            if req not in e:
                _fail(path, f"{where[:-1]}: missing key {req!r}")
        ref = _typed(e, "pipeline", (str,), path, where, "a pipeline name or a .toml path")
        name = _typed(e, "name", (str,), path, where, "a non-empty string", None) or Path(ref).stem
        if not name or any(c in name for c in ' "\\\n'):
            _fail(path, f"{where}name = {name!r}; expected a non-empty name without spaces or quotes")
        if name in names:
            _fail(path, f"{where}name = {name!r} is used twice; pipeline names must be unique")
        names.add(name)
        inp = _typed(e, "input", (str,), path, where, "alsa:DEVICE, a file path or \"-\"")
        out = _typed(e, "output", (str,), path, where, "alsa:DEVICE, a file path or \"-\"", None)
        events = _typed(e, "events", (str,), path, where, "a .jsonl path or \"log\"", None)
        if not inp or inp == "alsa:" or (out is not None and (not out or out == "alsa:")):
            _fail(path, f"{where}input/output {inp!r}/{out!r}; expected alsa:DEVICE, a file path or \"-\"")
        if out == "-" and events in ("-", "log"):
            pass  # logs then go to stderr (the daemon decides)
        rel = (lambda s: s if s is None or s in ("-", "log") or s.startswith("alsa:") or os.path.isabs(s)
               else str(base / s))
        sr = _typed(e, "sample_rate", (int,), path, where, "a sample rate in Hz", None)
        if sr is not None and not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
            _fail(path, f"{where}sample_rate = {sr!r}; expected a sample rate in Hz (e.g. 16000, 48000)")
        ch = _typed(e, "channels", (int,), path, where, "a channel count 1..64", None)
        if ch is not None and not 1 <= ch <= 64:
            _fail(path, f"{where}channels = {ch!r}; expected a channel count 1..64")
        fmt = _typed(e, "format", (str,), path, where, "S16_LE, S32_LE, FLOAT_LE (or s16le, s32le, f32le)",
                     "S16_LE")
        if fmt.upper() in ALSA_FORMATS:
            alsa_fmt, raw_fmt = fmt.upper(), ALSA_FORMATS[fmt.upper()]
        elif fmt.lower() in RAW_FORMATS:
            alsa_fmt, raw_fmt = RAW_FORMATS[fmt.lower()], fmt.lower()
        else:
            _fail(path, f"{where}format = {fmt!r}; expected one of S16_LE, S32_LE, FLOAT_LE "
                        "(or s16le, s32le, f32le)")
        per = _typed(e, "period_frames", (int,), path, where, "frames 16..65536", None)
        if per is not None and not 16 <= per <= 65536:
            _fail(path, f"{where}period_frames = {per!r}; expected frames 16..65536")
        periods = _typed(e, "periods", (int,), path, where, "2..64", None)
        if periods is not None and not 2 <= periods <= 64:
            _fail(path, f"{where}periods = {periods!r}; expected 2..64 (the buffer is periods x period_frames)")
        gov = _typed(e, "governor", (bool,), path, where, "true or false", True)
        pace = _typed(e, "pace", (bool,), path, where, "true or false", False)
        maxf = _typed(e, "max_frames", (int,), path, where, "frames >= 0 (0 = until the input ends)", 0)
        if maxf < 0:
            _fail(path, f"{where}max_frames = {maxf!r}; expected frames >= 0 (0 = until the input ends)")
        r0 = _typed(e, "retry_initial_s", (int, float), path, where, "seconds > 0", 0.5)
        r1 = _typed(e, "retry_max_s", (int, float), path, where, "seconds >= retry_initial_s", 30.0)
        emax = _typed(e, "events_max_mb", (int, float), path, where, "megabytes >= 0 (0 = no limit)", 64.0)
        if emax < 0:
            _fail(path, f"{where}events_max_mb = {emax!r}; expected megabytes >= 0 (0 = no limit)")
        seg = _typed(e, "segment_s", (int, float), path, where, "seconds >= 1 (0 = one file)", 0)
        if seg and (seg < 1 or seg > 86400):
            _fail(path, f"{where}segment_s = {seg!r}; expected seconds 1..86400 (0 = one file)")
        if seg and (out is None or out == "-" or out.startswith("alsa:")):
            _fail(path, f"{where}segment_s = {seg!r} needs a file output; output is {out!r}")
        if r0 <= 0 or r1 < r0:
            _fail(path, f"{where}retry_initial_s = {r0!r}, retry_max_s = {r1!r}; expected 0 < initial <= max")
        specs.append(InstanceSpec(
            name=name, pipeline=_resolve_pipeline_ref(ref, base), input=rel(inp), output=rel(out),
            events=rel(events), sample_rate=sr, channels=ch, alsa_format=alsa_fmt, raw_format=raw_fmt,
            period_frames=per, periods=periods, governor=gov, pace=pace, max_frames=maxf,
            retry_initial_s=float(r0), retry_max_s=float(r1), events_max_mb=float(emax), segment_s=float(seg)))
    outs = [s.output for s in specs if s.output and not s.output.startswith("alsa:") and s.output != "-"]
    dup = {o for o in outs if outs.count(o) > 1}
    if dup:
        _fail(path, f"output {sorted(dup)[0]!r} is written by more than one pipeline")
    if sum(s.input == "-" for s in specs) > 1:
        _fail(path, "more than one pipeline reads stdin (input = \"-\"); at most one can")
    return ServiceConfig(path=path, metrics=metrics, log_level=level, stop_timeout_s=float(stop_timeout),
                         crossfade_ms=float(xfade), pipelines=tuple(specs), metrics_remote=bool(remote),
                         mqtt=mqtt, mqtt_prefix=mqtt_prefix, mqtt_queue_mb=float(qmb), mqtt_username=muser,
                         mqtt_password_file=None if mpass is None else str(base / mpass) if not os.path.isabs(mpass)
                         else mpass, state_dir=None if sdir is None else str(base / sdir) if not os.path.isabs(sdir)
                         else sdir, mqtt_metrics_s=float(mmet), mqtt_client_id=mcid, **tls_files)


def load_service_config(path) -> ServiceConfig:
    """Read and validate the service config file ``path``."""
    path = os.fspath(path)
    from ..tomlfile import read_toml

    try:
        data = read_toml(path, what="service config")
    except FileNotFoundError:
        raise ConfigError(f"{path}: service config not found (write one; see `edge-runtime serve --help` "
                          f"and the README's Service section)") from None
    return parse_service_config(data, path)

"""The service's CLI commands: ``serve``, ``status``, ``install-service``, ``wyoming`` (wired in edge_runtime.cli)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

from ..errors import ConfigError, EdgeRuntimeError

__all__ = ["add_parsers"]


def cmd_serve(args) -> int:
    from .daemon import Daemon

    from ..cliutil import log_level

    return Daemon(args.config, check_only=args.check, log_level=log_level(args)).run()


def _status_url(args) -> str:
    if args.url:
        return args.url.rstrip("/")
    from .config import DEFAULT_METRICS, load_service_config, parse_metrics_address

    addr = None
    try:
        addr = load_service_config(args.config).metrics
    except ConfigError:
        if args.config_given:
            raise
        addr = parse_metrics_address(DEFAULT_METRICS)
    if addr is None:
        raise ConfigError(f"{args.config}: the metrics endpoint is off ([service] metrics = \"\"); "
                          "turn it on to use `edge-runtime status`")
    host, port = addr
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}"


def _fetch(url: str, timeout: float) -> dict:
    try:
        with urllib.request.urlopen(url + "/status", timeout=timeout) as r:
            return json.loads(r.read().decode())
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise EdgeRuntimeError(f"{url}/status: no edge_runtime service answered ({reason}); is it running "
                               "(systemctl status edge-runtime) and is [service] metrics set?") from None


def format_status(s: dict) -> str:
    lines = [f"edge_runtime {s['version']}  pid {s['pid']}  up {s['uptime_s']:.0f} s  config {s['config']}",
             f"reloads ok {s['reloads']['ok']} failed {s['reloads']['failed']}  watchdog "
             + (f"{s['watchdog_s']:g} s, {s['watchdog_pings']} pings" if s.get("watchdog_s") else "off")]
    for p in s["pipelines"]:
        lines.append(f"{p['name']:<12} {p['state']:<18} {p['pipeline']} {p['sample_rate']} Hz x{p['channels']}  "
                     f"{p['input']} -> {p['output'] or '-'}")
        lines.append(f"{'':<12} RTF {p['realtime_factor']:.4f}  block p50 {p['block_ms_p50'] * 1e3:.0f} us  "
                     f"p99 {p['block_ms_p99'] * 1e3:.0f} us  (budget {p['budget_ms']:.1f} ms)  "
                     f"deadline misses {p['deadline_misses']}/{p['blocks']}  xruns "
                     f"{p['xruns']['capture']}+{p['xruns']['playback']}  reopens {p['device_reopens']}")
        for m in p["models"]:
            lines.append(f"{'':<12} model {m['node']}: {m['variant']}  step-downs {m['step_downs']}")
        if p["events"]:
            lines.append(f"{'':<12} events " + ", ".join(f"{e['node']}.{e['event']} {e['count']}" for e in p["events"]))
        if p.get("error"):
            lines.append(f"{'':<12} error: {p['error']}")
    return "\n".join(lines)


def cmd_status(args) -> int:
    snap = _fetch(_status_url(args), args.timeout)
    print(json.dumps(snap) if args.json else format_status(snap))
    return 0


def cmd_install_service(args) -> int:
    from .unit import install_service

    return install_service(args)


def add_parsers(sub) -> None:
    from ..cliutil import parser_kwargs
    from .config import DEFAULT_CONFIG

    s = sub.add_parser("serve", **parser_kwargs(
        "run the pipelines of a service config until stopped (systemd Type=notify)",
        ("edge-runtime serve -c /etc/edge_runtime/service.toml",
         "edge-runtime serve -c service.toml --check        # validate only: exit 0 or 2",
         "edge-runtime serve -c service.toml --log-level debug",
         "kill -HUP $(pidof edge-runtime)                   # reload the config"),
        description="Run the pipelines of a service config (ALSA capture, files or stdin to ALSA "
        "playback, files and event sinks) until SIGTERM. SIGHUP reloads the config. Logs are JSON "
        "lines on stdout; metrics on the [service] metrics address. -v/-q/--log-level override "
        "[service] log_level."))
    s.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"service config TOML (default {DEFAULT_CONFIG})")
    s.add_argument("--check", action="store_true", help="validate as start-up does (pipelines built, models "
                   "loaded, files opened), then exit: 0 if it would start, 1 or 2 with the error otherwise")
    s.set_defaults(func=cmd_serve)

    st = sub.add_parser("status", **parser_kwargs(
        "ask the running service for its pipelines, RTF, xruns, models",
        ("edge-runtime status", "edge-runtime status --url http://127.0.0.1:9750 --json",
         "edge-runtime status -c /etc/edge_runtime/service.toml")))
    st.add_argument("--config", "-c", default=None, help=f"read the metrics address here (default {DEFAULT_CONFIG})")
    st.add_argument("--url", help="the service's metrics URL, e.g. http://127.0.0.1:9750")
    st.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer (default 3)")
    st.add_argument("--json", action="store_true", help="print the service's answer as one JSON object")
    st.set_defaults(func=cmd_status_wrapper)

    from .unit import add_install_arguments

    i = sub.add_parser("install-service", **parser_kwargs(
        "write (and install) the systemd unit, user and config",
        ("sudo edge-runtime install-service --enable",
         "edge-runtime install-service --dry-run",
         "edge-runtime install-service --output edge-runtime.service    # the unit file only",
         "edge-runtime install-service --root /mnt/image --rt-priority 70")))
    add_install_arguments(i)
    i.set_defaults(func=cmd_install_service)

    w = sub.add_parser("wyoming", **parser_kwargs(
        "serve the VAD, the classifier or the denoiser to Home Assistant over the Wyoming protocol",
        ("edge-runtime wyoming --service classify --uri tcp://0.0.0.0:10700   # a wake-word style service",
         "edge-runtime wyoming --service vad --uri tcp://127.0.0.1:10701",
         "edge-runtime wyoming --service denoise --uri unix:///run/edge-runtime/denoise.sock",
         "edge-runtime wyoming --service classify --labels alarm,water --uri tcp://0.0.0.0:10700",
         "# what each service sends back: docs/wyoming.md; needs the [wyoming] extra"),
        description="Serve one pipeline as a Wyoming service: vad (voice-started/voice-stopped), classify "
        "(detection with the label and its confidence, not-detected) or denoise (the audio back, same format). "
        "Clients may send any rate, 16/24/32-bit PCM and channel count; it is converted at the edge."))
    w.add_argument("--service", required=True, choices=("vad", "classify", "denoise"), help="what to serve")
    w.add_argument("--uri", default="tcp://127.0.0.1:10700",
                   help="tcp://HOST:PORT, unix://PATH or stdio:// (default tcp://127.0.0.1:10700)")
    w.add_argument("--pipeline", help="pipeline name or .toml to run instead of the service's default "
                   "(vad: a vad node alone; classify: classify; denoise: denoise)")
    w.add_argument("--labels", help="classify: the labels that give a detection, comma-separated "
                   "(default: all but silence; a client's detect names override it)")
    w.set_defaults(func=cmd_wyoming)


def cmd_wyoming(args) -> int:
    from .wyoming import serve

    labels = tuple(s.strip() for s in (args.labels or "").split(",") if s.strip())
    return serve(args.service, args.uri, args.pipeline, labels)


def cmd_status_wrapper(args) -> int:
    from .config import DEFAULT_CONFIG

    args.config_given = args.config is not None
    args.config = args.config or DEFAULT_CONFIG
    return cmd_status(args)

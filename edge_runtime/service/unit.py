"""The systemd unit for ``edge-runtime serve``, its system user, and installing them.

``edge-runtime install-service`` (and ``firmware_tools/deploy/install_service.py`` for image
builds) writes:

* ``/etc/systemd/system/edge-runtime.service``: ``Type=notify`` (READY after the pipelines are
  prepared), ``WatchdogSec=``, ``Restart=on-failure``, ordered ``After=sound.target``; runs as a
  dedicated unprivileged user in the ``audio`` group and talks to ALSA directly, so no
  PulseAudio/PipeWire user session is involved (a system service has none: the most common reason
  audio services fail at boot). Hardening: ``ProtectSystem=strict``, ``ProtectHome=yes``,
  ``NoNewPrivileges=yes``, ``PrivateTmp=yes``, ``DevicePolicy=closed`` with ``DeviceAllow=char-alsa``
  (plus accelerators where present), ``SystemCallFilter=@system-service ~@privileged``,
  ``ProtectProc=invisible``, ``PrivateMounts=yes``, IP traffic to loopback only (``--network``
  lifts it), ``systemd-analyze security --offline=true`` exposure 1.4; every value written into
  the unit is checked (no control characters, a POSIX user name, DeviceAllow= syntax), so no
  option can add unit lines; and writable only ``StateDirectory=edge_runtime``
  (``/var/lib/edge_runtime``: measured profiles, learned state, events; ``EDGE_RUNTIME_STATE`` points
  there so variant ``auto`` reads the profile ``edge-runtime profile --service`` measured) and
  ``CacheDirectory=edge_runtime`` (OpenVINO's compiled models, ``EDGE_RUNTIME_OPENVINO_CACHE``).
  ``MemoryDenyWriteExecute=`` is not set: ONNX Runtime's and OpenVINO's CPU kernels are JIT-compiled.
* ``/etc/sysusers.d/edge-runtime.conf``: the user (created now with ``systemd-sysusers``, or
  ``useradd`` where that is missing).
* ``/etc/edge_runtime/service.toml`` if there is none: a starting config (ALSA default in and out).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import ConfigError, EdgeRuntimeError

__all__ = ["UnitOptions", "render_unit", "render_sysusers", "install_service", "add_install_arguments",
           "DEFAULT_SERVICE_CONFIG"]

UNIT_NAME = "edge-runtime"
USER = "edge-runtime"
STATE_DIR = "/var/lib/edge_runtime"
CACHE_DIR = "/var/cache/edge_runtime"

DEFAULT_SERVICE_CONFIG = """\
# edge_runtime service config (edge-runtime serve --config /etc/edge_runtime/service.toml).
# Reload after editing: systemctl reload edge-runtime   (same-shape pipelines swap without a gap)
[service]
metrics = "127.0.0.1:9750"        # Prometheus text on /metrics; `edge-runtime status` reads /status
log_level = "info"

[[pipelines]]
name = "main"
pipeline = "default"              # `edge-runtime pipelines` lists them; or a .toml path
# sysdefault, not default: where pipewire-alsa or pulseaudio-alsa is installed, "default" goes
# through a sound server that a system service has no session for
input = "alsa:sysdefault"         # or e.g. alsa:plughw:CARD=Device,DEV=0 (arecord -L lists them)
output = "alsa:sysdefault"
events = "/var/lib/edge_runtime/events.jsonl"
sample_rate = 48000
channels = 2
format = "S16_LE"
# period_frames = 480             # default: the device profile's [alsa] period, scaled to the rate
# periods = 4
"""


class UnitOptions:
    """What the unit says; defaults suit a board that runs one service."""

    def __init__(self, exec_start: list[str] | None = None, config: str = "/etc/edge_runtime/service.toml",
                 user: str = USER, watchdog_sec: int = 10, restart_sec: int = 2, nice: int = -10,
                 rt_priority: int | None = None, read_write: tuple[str, ...] = (),
                 device_allow: tuple[str, ...] | None = None, description: str | None = None,
                 environment: dict | None = None, network: bool = False):
        self.exec_start = exec_start or default_exec()
        self.config = config
        self.user = user
        self.watchdog_sec = int(watchdog_sec)
        self.restart_sec = int(restart_sec)
        self.nice = int(nice)
        self.rt_priority = rt_priority
        self.read_write = tuple(read_write)
        self.device_allow = tuple(default_device_allow() if device_allow is None else device_allow)
        self.description = description or "AudioLab edge_runtime audio processing (ALSA, no sound server)"
        self.environment = dict(environment or {})
        self.network = network
        _check_unit_values(self)


_USER_RE = __import__("re").compile(r"[a-z_][a-z0-9_-]{0,30}")
_DEVICE_RE = __import__("re").compile(r"(/dev/[A-Za-z0-9_./:+-]+|char-[A-Za-z0-9_-]+|block-[A-Za-z0-9_-]+)( [rwm]{1,3})?")


def _check_unit_values(o: "UnitOptions") -> None:
    """Every value that goes into the unit: no control characters (a newline would add a unit line
    such as ``User=root``), a POSIX user name, DeviceAllow= syntax, absolute paths."""
    def clean(what: str, v: str) -> None:
        bad = next((c for c in str(v) if ord(c) < 32 or ord(c) == 127), None)
        if bad is not None:
            raise ConfigError(f"{what} {v!r}: contains the control character {bad!r}; expected a single line "
                              "of printable characters")

    clean("--user", o.user)
    if not _USER_RE.fullmatch(o.user):
        raise ConfigError(f"--user {o.user!r}: expected a system user name (lower-case letters, digits, '_' "
                          "or '-', starting with a letter or '_', at most 31 characters)")
    clean("--config", o.config)
    if not os.path.isabs(o.config):
        raise ConfigError(f"--config {o.config!r}: expected an absolute path (the service does not run in "
                          "this directory)")
    for d in o.device_allow:
        clean("--device-allow", d)
        if not _DEVICE_RE.fullmatch(d):
            raise ConfigError(f"--device-allow {d!r}: expected a device node or group with access, e.g. "
                              "'char-alsa rw' or '/dev/accel/accel0 rw'")
    for a in o.exec_start:
        clean("--exec", a)
    for r in o.read_write:
        clean("--read-write", r)
        if not os.path.isabs(r) or any(c.isspace() for c in r):
            raise ConfigError(f"--read-write {r!r}: expected an absolute path without spaces")
    clean("description", o.description)
    for k, v in o.environment.items():
        clean("environment", f"{k}={v}")


def default_exec() -> list[str]:
    """This installation's ``edge-runtime`` (the script next to the interpreter, else ``python -m``)."""
    exe = Path(sys.executable)
    script = exe.parent / "edge-runtime"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(exe), "-m", "edge_runtime"]


def default_device_allow() -> list[str]:
    """ALSA always; Intel NPU (/dev/accel) and GPUs (DRM) where this machine has them."""
    allow = ["char-alsa rw"]
    devices = _proc_devices()
    if "accel" in devices:
        allow.append("char-accel rw")
    if "drm" in devices and os.path.isdir("/dev/dri"):
        allow.append("char-drm rw")
    for nv in ("nvidia", "nvidiactl", "nvidia-uvm", "nvhost-ctrl", "nvmap", "nvgpu"):
        if nv in devices:
            allow.append(f"char-{nv} rw")
    return allow


def _proc_devices() -> set[str]:
    try:
        text = Path("/proc/devices").read_text()
    except OSError:
        return set()
    return {parts[1] for parts in (line.split() for line in text.splitlines()) if len(parts) == 2 and parts[0].isdigit()}


def _q(arg: str) -> str:
    """Quote one ExecStart= word the way systemd parses it (``%`` is a specifier there: doubled)."""
    arg = arg.replace("%", "%%")
    if arg and all(c.isalnum() or c in "/._-:=@+,%" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(o: UnitOptions) -> str:
    exec_start = " ".join(_q(a) for a in [*o.exec_start, "serve", "--config", o.config])
    env = {"EDGE_RUNTIME_STATE": STATE_DIR, "EDGE_RUNTIME_OPENVINO_CACHE": f"{CACHE_DIR}/openvino",
           "XDG_CACHE_HOME": CACHE_DIR, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
           **o.environment}
    lines = [
        "# Generated by `edge-runtime install-service`; regenerate rather than edit",
        "# (or override with `systemctl edit edge-runtime`).",
        "[Unit]",
        f"Description={o.description}",
        "Documentation=https://example.invalid/audiolab/edge_runtime#service",
        # sound.target is reached once udev has set up the sound cards present at boot; a card that
        # appears later is retried by the service itself (device back-off), not by systemd
        "After=sound.target",
        "StartLimitIntervalSec=300",
        "StartLimitBurst=10",
        "",
        "[Service]",
        "Type=notify",
        "NotifyAccess=main",
        f"ExecStart={exec_start}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        f"RestartSec={o.restart_sec}",
        f"WatchdogSec={o.watchdog_sec}",
        "TimeoutStartSec=180",     # first start may compile OpenVINO models / read models from SD cards
        "TimeoutStopSec=30",
        "KillMode=mixed",
        f"User={o.user}",
        f"Group={o.user}",
        "SupplementaryGroups=audio",
        "StateDirectory=edge_runtime",
        "StateDirectoryMode=0750",
        "CacheDirectory=edge_runtime",
        "CacheDirectoryMode=0750",
        "WorkingDirectory=/var/lib/edge_runtime",
        *[f"Environment={k}={v}" for k, v in env.items()],
        f"Nice={o.nice}",
        *(["CPUSchedulingPolicy=fifo", f"CPUSchedulingPriority={o.rt_priority}"] if o.rt_priority else []),
        "# hardening",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "DevicePolicy=closed",
        *[f"DeviceAllow={d}" for d in o.device_allow],
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictNamespaces=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RemoveIPC=yes",
        "UMask=0027",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures=native",
        # the syscalls of an ordinary service, none privileged: `serve` (ONNX Runtime denoise, ALSA
        # in/out, files, metrics) run under strace makes 63 distinct calls, all in @system-service,
        # none in @privileged; @resources stays (ONNX Runtime's threads call sched_setaffinity, mbind).
        # A call outside the set fails with EPERM instead of killing the process.
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged",
        "SystemCallErrorNumber=EPERM",
        "ProtectProc=invisible",
        "PrivateMounts=yes",
        *([] if o.rt_priority else ["RestrictRealtime=yes"]),
        # loopback only (the metrics endpoint) unless installed with --network
        *([] if o.network else ["IPAddressDeny=any", "IPAddressAllow=localhost"]),
        "CapabilityBoundingSet=",
        *([f"ReadWritePaths={' '.join(o.read_write)}"] if o.read_write else []),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def render_sysusers(user: str = USER) -> str:
    return (f"# edge_runtime service user (systemd-sysusers); audio: /dev/snd access\n"
            f"u {user} - \"edge_runtime service\" {STATE_DIR} /usr/sbin/nologin\n"
            f"m {user} audio\n")


def alsa_default_via_sound_server(files=None) -> str | None:
    """The ALSA config file that routes ``default`` to PulseAudio/PipeWire here, if one does."""
    import glob
    import re

    if files is None:
        files = sorted(glob.glob("/etc/alsa/conf.d/*.conf") + glob.glob("/usr/share/alsa/alsa.conf.d/*.conf")
                       + ["/etc/asound.conf"])
    for f in files:
        try:
            text = Path(f).read_text(errors="replace")
        except OSError:
            continue
        if re.search(r"pcm\.!?default\s*\{[^}]*type\s+(pulse|pipewire)", text, re.S) or \
                re.search(r"pcm\.!?default\s+(pulse|pipewire)\b", text):
            return f
    return None


def _hidden_by_protect_home(paths) -> str | None:
    for p in paths:
        rp = os.path.realpath(p)
        for top in ("/home", "/root", "/run/user"):
            if rp == top or rp.startswith(top + "/"):
                return rp
    return None


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    from ..atomic import AtomicFile

    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFile(str(path), "w") as f:
        f.write(text)
    os.chmod(path, mode)


def add_install_arguments(p) -> None:
    from ..cliutil import deprecated_alias

    p.add_argument("--config", "-c", default="/etc/edge_runtime/service.toml",
                   help="the service config the unit runs (a starting one is written if absent)")
    p.add_argument("--user", default=USER, help=f"the system user to run as (default {USER}; made, in group audio)")
    p.add_argument("--watchdog-sec", type=int, default=10, help="WatchdogSec= (default 10)")
    p.add_argument("--rt-priority", type=int, help="run the service with SCHED_FIFO at this priority (1..99)")
    p.add_argument("--read-write", action="append", default=[], metavar="PATH",
                   help="a path outside /var/lib/edge_runtime the service writes (outputs); repeatable")
    p.add_argument("--device-allow", action="append", metavar="SPEC",
                   help="DeviceAllow= entries instead of the detected ones (e.g. 'char-alsa rw'); repeatable")
    p.add_argument("--network", action="store_true",
                   help="allow IP traffic beyond loopback (a remote metrics scraper, a broker); default: "
                        "IPAddressDeny=any, IPAddressAllow=localhost")
    p.add_argument("--exec", dest="exec_start", help="the edge-runtime command (default: this installation's)")
    p.add_argument("--root", help="install into this root folder (an image being built): write files only")
    p.add_argument("--enable", action="store_true", help="also `systemctl enable --now` the service")
    # no -o here: -o is the audio output everywhere else
    p.add_argument("--output", help="only write the unit to this file (nothing installed)")
    deprecated_alias(p, "-o", dest="output", new="--output")
    p.add_argument("--dry-run", action="store_true", help="print the unit and what would be done; change nothing")


def install_service(args) -> int:
    if args.rt_priority is not None and not 1 <= args.rt_priority <= 99:
        raise ConfigError(f"--rt-priority {args.rt_priority}: expected 1..99")
    if args.watchdog_sec < 1:
        raise ConfigError(f"--watchdog-sec {args.watchdog_sec}: expected seconds >= 1")
    exec_start = shlex.split(args.exec_start) if args.exec_start else None
    opts = UnitOptions(exec_start=exec_start, config=args.config, user=args.user, watchdog_sec=args.watchdog_sec,
                       rt_priority=args.rt_priority, read_write=tuple(args.read_write),
                       device_allow=tuple(args.device_allow) if args.device_allow else None,
                       network=args.network)
    unit = render_unit(opts)
    hidden = _hidden_by_protect_home([opts.exec_start[0], sys.executable if not args.exec_start else opts.exec_start[0]])
    warn = (f"warning: {hidden} is under /home, /root or /run/user, which ProtectHome=yes hides from the "
            "service; install edge_runtime elsewhere (e.g. python3 -m venv /opt/edge_runtime && "
            "/opt/edge_runtime/bin/pip install edge-runtime) and run its install-service") if hidden else None
    if args.output:
        _write(Path(args.output), unit)
        if warn:
            sys.stderr.write(warn + "\n")
        print(f"wrote {args.output}")
        return 0
    root = Path(args.root) if args.root else Path("/")
    unit_path = root / f"etc/systemd/system/{UNIT_NAME}.service"
    users_path = root / f"etc/sysusers.d/{UNIT_NAME}.conf"
    cfg_path = root / args.config.lstrip("/")
    steps = [f"write {unit_path}", f"write {users_path}"]
    if not cfg_path.exists():
        steps.append(f"write a starting config {cfg_path}")
    if not args.root:
        steps += [f"create system user {args.user} (group audio)", "systemctl daemon-reload"]
        if args.enable:
            steps.append(f"systemctl enable --now {UNIT_NAME}")
    via = alsa_default_via_sound_server()
    if via:
        sys.stderr.write(f"note: {via} routes ALSA 'default' through a sound server, which the service has no "
                         "session for; its config should name alsa:sysdefault or alsa:plughw:CARD=... devices\n")
    if args.dry_run:
        print(unit, end="")
        print("# would: " + "; ".join(steps))
        if warn:
            sys.stderr.write(warn + "\n")
        return 0
    if hidden and not args.root:
        raise ConfigError(warn[len("warning: "):])
    if not args.root and os.geteuid() != 0:
        raise EdgeRuntimeError("install-service needs root (sudo edge-runtime install-service); use --dry-run to "
                               "see what it does or --output FILE to only write the unit")
    _write(unit_path, unit)
    _write(users_path, render_sysusers(args.user))
    if not cfg_path.exists():
        _write(cfg_path, DEFAULT_SERVICE_CONFIG)
    else:
        from .config import load_service_config

        try:
            load_service_config(cfg_path)
        except ConfigError as e:
            sys.stderr.write(f"warning: the existing config does not validate: {e}\n")
    if not args.root:
        _create_user(args.user, users_path)
        _run(["systemctl", "daemon-reload"])
        if args.enable:
            _run(["systemctl", "enable", "--now", UNIT_NAME])
    for s in steps:
        print(f"done: {s}")
    if not args.enable and not args.root:
        print(f"start it with: systemctl enable --now {UNIT_NAME}   (logs: journalctl -u {UNIT_NAME} -f)")
    return 0


def _run(cmd) -> None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise EdgeRuntimeError(f"{cmd[0]}: not found; is this a systemd system?") from None
    if r.returncode != 0:
        raise EdgeRuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {(r.stderr or r.stdout).strip()}")


def _create_user(user: str, users_path: Path) -> None:
    if shutil.which("systemd-sysusers"):
        _run(["systemd-sysusers", str(users_path)])
        return
    import pwd

    try:
        pwd.getpwnam(user)
    except KeyError:
        _run(["useradd", "--system", "--no-create-home", "--home-dir", STATE_DIR, "--shell", "/usr/sbin/nologin",
              "--user-group", user])
    _run(["usermod", "-a", "-G", "audio", user])

"""The generated systemd unit: what it must say, that systemd accepts it, what install writes."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import run_cli


def _directives(text):
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


def test_unit_has_notify_watchdog_user_and_hardening(tmp_path):
    unit = tmp_path / "edge-runtime.service"
    r = run_cli("install-service", "--output", unit, "--watchdog-sec", "15", "--read-write", "/srv/recordings")
    assert r.returncode == 0, r.stderr.decode()
    d = _directives(unit.read_text())
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"] and d["WatchdogSec"] == ["15"]
    assert d["Restart"] == ["on-failure"] and d["After"] == ["sound.target"]
    assert d["User"] == ["edge-runtime"] and d["SupplementaryGroups"] == ["audio"]
    for key, value in (("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("NoNewPrivileges", "yes"),
                       ("PrivateTmp", "yes"), ("StateDirectory", "edge_runtime"), ("DevicePolicy", "closed")):
        assert d[key] == [value], key
    assert "char-alsa rw" in d["DeviceAllow"]
    assert "EDGE_RUNTIME_STATE=/var/lib/edge_runtime" in d["Environment"]
    assert "EDGE_RUNTIME_OPENVINO_CACHE=/var/cache/edge_runtime/openvino" in d["Environment"]
    assert d["ReadWritePaths"] == ["/srv/recordings"]
    assert d["ExecStart"][0].endswith("serve --config /etc/edge_runtime/service.toml")
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    text = unit.read_text().lower()
    assert "pulseaudio" not in text and "pipewire" not in text and "user@" not in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_passes(tmp_path):
    unit = tmp_path / "edge-runtime.service"
    assert run_cli("install-service", "--output", unit).returncode == 0
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "edge-runtime.service" in line]
    assert not ours, ours


def test_dry_run_changes_nothing_and_root_install_writes_the_files(tmp_path):
    r = run_cli("install-service", "--dry-run", "--root", tmp_path / "img")
    assert r.returncode == 0 and "[Service]" in r.stdout.decode() and "# would: write" in r.stdout.decode()
    assert not (tmp_path / "img").exists()
    r = run_cli("install-service", "--root", tmp_path / "img")
    assert r.returncode == 0, r.stderr.decode()
    root = tmp_path / "img"
    assert (root / "etc/systemd/system/edge-runtime.service").read_text().startswith("# Generated")
    users = (root / "etc/sysusers.d/edge-runtime.conf").read_text()
    assert "u edge-runtime -" in users and "m edge-runtime audio" in users
    from edge_runtime.service.config import load_service_config

    cfg = load_service_config(root / "etc/edge_runtime/service.toml")     # the starting config is valid
    # sysdefault: 'default' may route through a sound server the service has no session for
    assert cfg.pipelines[0].input == "alsa:sysdefault" and cfg.metrics == ("127.0.0.1", 9750)


def test_alsa_default_through_a_sound_server_is_noticed(tmp_path):
    from edge_runtime.service.unit import alsa_default_via_sound_server

    pw = tmp_path / "99-pipewire-default.conf"          # as pipewire-alsa ships it
    pw.write_text('pcm.!default {\n    type pipewire\n    playback_node "-1"\n    capture_node "-1"\n'
                  '    hint { show on description "Default ALSA Output (currently PipeWire Media Server)" }\n}\n')
    plain = tmp_path / "50-card.conf"
    plain.write_text('pcm.!default { type hw; card 1 }\nctl.!default { type hw; card 1 }\n')
    assert alsa_default_via_sound_server([str(plain), str(pw)]) == str(pw)
    assert alsa_default_via_sound_server([str(plain)]) is None

"""The service on real ALSA without a sound card: alsa-lib's ``file`` plugin over ``null``.

The daemon's capture and playback are the production :class:`AlsaSource` / :class:`AlsaSink`
(``snd_pcm_readi`` / ``snd_pcm_writei``); the config given through ``ALSA_CONFIG_PATH`` makes
``default`` capture from ``in.raw`` and play into ``out.raw``. The null device is not paced and
capture past the end of ``in.raw`` is junk, so the daemon either reads an exact ``max_frames``
or paces itself (``pace = true``) and is stopped mid-file.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from service_helpers import ROOT, NotifyListener, ServeProcess, alsa_conf, sawtooth
from test_alsa import _have_libasound
from test_service import write_pipe, write_service

pytestmark = [pytest.mark.alsa,
              pytest.mark.skipif(not _have_libasound(), reason="libasound.so.2 not installed")]

SR = 16000


def _alsa_service(tmp_path, extra=""):
    return write_service(tmp_path, f"""[[pipelines]]
name = "live"
pipeline = "passthru.toml"
input = "alsa:default"
output = "alsa:default"
sample_rate = 16000
channels = 2
period_frames = 160
periods = 4
{extra}""")


def test_alsa_capture_to_playback_frames_out_equal_frames_in(tmp_path):
    n = SR * 2 + 77
    data = sawtooth(n, channels=2)
    (tmp_path / "in.raw").write_bytes(data.tobytes())
    conf = alsa_conf(tmp_path, tmp_path / "in.raw", tmp_path / "out.raw")
    write_pipe(tmp_path)
    cfg = _alsa_service(tmp_path, f"max_frames = {n}\n")
    d = ServeProcess(cfg, env={"ALSA_CONFIG_PATH": str(conf)})
    rc = d.wait(60)
    assert rc == 0, d.stderr + "\n".join(d.raw)
    opened = d.events("device_open")
    assert {o["device"] for o in opened} == {"alsa:default"} and len(opened) == 2
    assert all(o["period_frames"] == 160 and o["buffer_frames"] == 640 for o in opened)
    out = (tmp_path / "out.raw").read_bytes()
    assert len(out) == len(data.tobytes())                  # frames out == frames in
    assert out == data.tobytes()                            # bit-exact through capture, pipeline, playback
    stopped = d.events("stopped")[0]["pipelines"]["live"]
    assert stopped["xruns"] == {"capture": 0, "playback": 0} and stopped["frames_out"] == n


def test_alsa_sigterm_mid_stream_drains_playback(tmp_path):
    data = sawtooth(SR * 6, channels=2)
    (tmp_path / "in.raw").write_bytes(data.tobytes())
    conf = alsa_conf(tmp_path, tmp_path / "in.raw", tmp_path / "out.raw")
    write_pipe(tmp_path)
    cfg = _alsa_service(tmp_path, "pace = true\n")
    notify = NotifyListener(tmp_path, abstract=True)
    try:
        d = ServeProcess(cfg, notify, env={"ALSA_CONFIG_PATH": str(conf)}, watchdog_usec=300_000)
        assert notify.wait_for("WATCHDOG", count=3, timeout=30), d.raw
        d.signal(signal.SIGTERM)
        rc = d.wait(30)
    finally:
        notify.close()
        d.kill()
    assert rc == 0, d.stderr
    assert notify.keys()[0] == "READY" and notify.keys()[-1] == "STOPPING"
    k = d.events("pipeline_end")[0]["frames_in"]
    assert SR // 4 < k < SR * 5
    out = np.frombuffer((tmp_path / "out.raw").read_bytes(), "<i2").reshape(-1, 2)
    assert out.shape[0] == k                                 # the look-ahead was pushed out, playback drained
    np.testing.assert_array_equal(out, data[:k])


def test_missing_device_is_retried_with_backoff_until_it_appears(tmp_path):
    n = SR
    data = sawtooth(n, channels=2)
    (tmp_path / "in.raw").write_bytes(data.tobytes())
    # at start 'default' captures from a PCM that does not exist yet (a USB card not enumerated)
    conf = alsa_conf(tmp_path, tmp_path / "in.raw", tmp_path / "out.raw", cap_name="usb_mic")
    text = conf.read_text()
    conf.write_text(text.replace("pcm.usb_mic {", "pcm.not_yet {"))
    write_pipe(tmp_path)
    cfg = _alsa_service(tmp_path, f"max_frames = {n}\nretry_initial_s = 0.1\nretry_max_s = 0.4\n")
    notify = NotifyListener(tmp_path, abstract=True)
    try:
        d = ServeProcess(cfg, notify, env={"ALSA_CONFIG_PATH": str(conf)}, watchdog_usec=300_000)
        assert notify.wait_for("READY", timeout=30)
        assert d.wait_event("device_unavailable", count=3, timeout=20) is not None, d.raw
        # still alive while waiting: the watchdog keeps being fed
        assert notify.wait_for("WATCHDOG", count=2, timeout=10)
        time.sleep(0.05)
        conf.write_text(text)                               # the device appears (alsa-lib rereads its config)
        os.utime(conf, (time.time() + 5, time.time() + 5))
        rc = d.wait(60)
    finally:
        notify.close()
        d.kill()
    assert rc == 0, d.stderr + "\n".join(d.raw)
    waits = d.events("device_unavailable")
    retry = [w["retry_s"] for w in waits]
    assert retry[:3] == [0.1, 0.2, 0.4] and max(retry) == 0.4          # doubling, capped
    assert "usb_mic" in waits[0]["msg"] or "Unknown PCM" in waits[0]["msg"]
    assert (tmp_path / "out.raw").read_bytes() == data.tobytes()


XRUN_CHILD = r"""
import errno, json, sys
import numpy as np
from edge_runtime.io import AlsaSource

a = json.loads(sys.argv[1])
src = AlsaSource("default", 16000, 1, period_frames=160)
real = src._pcm._lib

class Flaky:
    # alsa-lib as it behaves on an overrun: readi fails with -EPIPE part-way through a block
    def __init__(self):
        self.calls = 0
    def __getattr__(self, name):
        return getattr(real, name)
    def snd_pcm_readi(self, h, ptr, n):
        self.calls += 1
        if self.calls in a["fail_at"]:
            return -errno.EPIPE
        return real.snd_pcm_readi(h, ptr, min(n, 100))   # short reads: the overrun lands mid-block

src._pcm._lib = Flaky()
blocks = np.zeros((a["frames"], 1), np.float32)
buf = np.zeros((480, 1), np.float32)
for i in range(0, a["frames"], 480):
    src.read_into(buf)
    blocks[i:i + 480] = buf
print(json.dumps({"xruns": src.xruns}))
np.save(a["out"], blocks)
"""


def test_overrun_is_recovered_counted_and_never_passed_on_as_audio(tmp_path):
    n = 480 * 10
    data = sawtooth(n)
    (tmp_path / "in.raw").write_bytes(data.tobytes())
    conf = alsa_conf(tmp_path, tmp_path / "in.raw", tmp_path / "out.raw")
    env = dict(os.environ, ALSA_CONFIG_PATH=str(conf), PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", XRUN_CHILD,
                        json.dumps({"frames": n, "fail_at": [3, 17, 18], "out": str(tmp_path / "cap.npy")})],
                       env=env, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert json.loads(r.stdout)["xruns"] == 3
    got = np.load(tmp_path / "cap.npy")[:, 0]
    # every sample handed on is a captured one, in order: no junk, no zeros, no repeats
    np.testing.assert_array_equal(got, data[:, 0].astype(np.float32) / 32768.0)


def test_alsa_device_at_48k_through_a_16k_pipeline(tmp_path):
    n = 48000 + 311
    t = np.arange(n) / 48000
    x = np.round(0.3 * 32767 * np.sin(2 * np.pi * 1000 * t)).astype("<i2")
    data = np.stack([x, -x], axis=1)
    (tmp_path / "in.raw").write_bytes(data.tobytes())
    conf = alsa_conf(tmp_path, tmp_path / "in.raw", tmp_path / "out.raw")
    write_pipe(tmp_path)
    cfg = write_service(tmp_path, f"""[[pipelines]]
pipeline = "passthru.toml"
input = "alsa:default"
output = "alsa:default"
sample_rate = 48000
channels = 2
period_frames = 480
max_frames = {n}
""")
    d = ServeProcess(cfg, env={"ALSA_CONFIG_PATH": str(conf)})
    rc = d.wait(60)
    assert rc == 0, d.stderr + "\n".join(d.raw)
    out = np.frombuffer((tmp_path / "out.raw").read_bytes(), "<i2").reshape(-1, 2)
    assert out.shape == data.shape                            # frames out == frames in, at the device rate
    mid = slice(12000, 36000)
    # 48 -> 16 -> 48 kHz with every delay compensated: a 1 kHz tone comes back in place (33 LSB = 1e-3)
    assert np.max(np.abs(out[mid].astype(int) - data[mid].astype(int))) < 33

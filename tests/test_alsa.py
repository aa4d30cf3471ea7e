"""ALSA capture and playback without a sound card: alsa-lib's ``file`` plugin over ``null``.

Each case runs in a subprocess whose ``ALSA_CONFIG_PATH`` names a config written into
``tmp_path`` (alsa-lib reads its config once per process). No ``alsa.conf`` include is
needed: the ``file``, ``null`` and ``asym`` plugins are built into alsa-lib. The null device
is not paced and capture past the end of ``infile`` returns junk, so exactly the known
number of frames is read.
"""
import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def _have_libasound():
    try:
        ctypes.CDLL("libasound.so.2")
        return True
    except OSError:
        return ctypes.util.find_library("asound") is not None


pytestmark = [pytest.mark.alsa,
              pytest.mark.skipif(not _have_libasound(), reason="libasound.so.2 not installed")]

ROOT = Path(__file__).resolve().parents[1]
SR = 16000

CHILD = r"""
import json, sys
import numpy as np
from edge_runtime.io import AlsaSink, AlsaSource, open_sink, open_source

a = json.loads(sys.argv[1])
ch, n, block, fmt = a["channels"], a["frames"], a["block"], a["fmt"]
src = (open_source("alsa:" + a["device"], sample_rate=a["rate"], channels=ch,
                   period_frames=a["period"], alsa_format=fmt) if a["via_open"] else
       AlsaSource(a["device"], a["rate"], ch, period_frames=a["period"], fmt=fmt))
captured = np.zeros((n, ch), np.float32)
buf = np.zeros((block, ch), np.float32)
done = 0
while done < n:
    k = min(block, n - done)
    got = src.read_into(buf[:k])
    captured[done:done + got] = buf[:got]
    done += got
src.close()
np.save(a["captured"], captured)
sink = (open_sink("alsa:" + a["device"], a["rate"], ch, period_frames=a["period"],
                  alsa_format=fmt) if a["via_open"] else
        AlsaSink(a["device"], a["rate"], ch, period_frames=a["period"], fmt=fmt))
for i in range(0, n, block):
    sink.write(captured[i:i + block])
sink.close(commit=True)
print(json.dumps({"xruns_in": src.xruns, "xruns_out": sink.xruns, "read": done,
                  "written": sink.frames_written, "period": sink.period_frames,
                  "buffer": sink.buffer_frames, "name": src.name}))
"""


def alsa_env(tmp_path, infile):
    conf = tmp_path / "asound.conf"
    conf.write_text(
        f'pcm.test_play {{ type file; slave.pcm {{ type null }}; file "{tmp_path / "out.raw"}"; '
        'format "raw" }\n'
        f'pcm.test_cap {{ type file; slave.pcm {{ type null }}; file "/dev/null"; '
        f'infile "{infile}"; format "raw" }}\n'
        'pcm.!default { type asym; playback.pcm "test_play"; capture.pcm "test_cap" }\n')
    env = dict(os.environ, ALSA_CONFIG_PATH=str(conf))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                       else []))
    return env


def run_child(tmp_path, env, **args):
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], env=env,
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout), r.stderr.decode()


@pytest.mark.parametrize("channels,fmt,dtype,period,block,via_open", [
    (1, "S16_LE", "<i2", 160, 333, False),
    (2, "S16_LE", "<i2", 160, 1000, True),      # blocks larger than the device buffer (640)
    (2, "FLOAT_LE", "<f4", 256, 480, False),
    (1, "S32_LE", "<i4", 160, 160, False),
])
def test_capture_and_playback_are_bit_exact(tmp_path, channels, fmt, dtype, period, block,
                                            via_open):
    rng = np.random.default_rng(7)
    n = SR + 37                                  # ~1 s, not a whole number of blocks
    if fmt == "FLOAT_LE":
        data = (0.5 * rng.standard_normal((n, channels))).clip(-1, 1).astype(dtype)
        expect = data.astype(np.float32)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, (n, channels), endpoint=True).astype(dtype)
        if fmt == "S32_LE":
            data &= ~np.int32(0xFF)             # 24 significant bits: exact through float32
        expect = (data.astype(np.float64) / -float(info.min)).astype(np.float32)
    infile = tmp_path / "in.raw"
    infile.write_bytes(data.tobytes())
    env = alsa_env(tmp_path, infile)
    res, err = run_child(tmp_path, env, device="default", rate=SR, channels=channels, frames=n,
                         block=block, period=period, fmt=fmt, via_open=via_open,
                         captured=str(tmp_path / "cap.npy"))
    assert res["read"] == n and res["written"] == n
    assert res["xruns_in"] == 0 and res["xruns_out"] == 0
    assert res["period"] == period and res["buffer"] == 4 * period
    assert res["name"] == "alsa:default"
    np.testing.assert_array_equal(np.load(tmp_path / "cap.npy"), expect)
    out = (tmp_path / "out.raw").read_bytes()
    assert len(out) == n * channels * np.dtype(dtype).itemsize       # frames out == frames in
    assert out == data.tobytes()
    assert err == ""                            # alsa-lib chatter does not reach stderr


def test_unknown_device_is_a_one_line_error_naming_it(tmp_path):
    env = alsa_env(tmp_path, tmp_path / "in.raw")
    code = ("from edge_runtime.io import AlsaSource\n"
            "from edge_runtime.errors import AudioDeviceError\n"
            "try:\n    AlsaSource('no_such_pcm', 16000, 1)\n"
            "except AudioDeviceError as e:\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    msg = r.stdout.decode().strip()
    assert msg.startswith("alsa:no_such_pcm: cannot open for capture: ") and "\n" not in msg
    assert "Unknown PCM" in msg


def test_bad_parameters_are_refused_before_opening():
    from edge_runtime.errors import AudioDeviceError
    from edge_runtime.io import AlsaSink

    with pytest.raises(AudioDeviceError, match="sample format 'U8'.*S16_LE"):
        AlsaSink("default", SR, 1, fmt="U8")
    with pytest.raises(AudioDeviceError, match="alsa:default: 0 channels"):
        AlsaSink("default", SR, 0)

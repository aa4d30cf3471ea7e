"""`edge-runtime run` streams: memory for a 10-minute file is the same as for a 1-minute file."""
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

PEAK_RSS = """
import resource, sys
from edge_runtime.cli import main
rc = main(sys.argv[1:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
sys.exit(rc)
"""


def _write_long(path, seconds, sr=48000):
    rng = np.random.default_rng(5)
    with sf.SoundFile(str(path), "w", sr, 1, subtype="PCM_16") as f:
        block = sr * 10
        t = np.arange(block) / sr
        for i in range(int(seconds // 10)):
            x = 0.3 * np.sin(2 * np.pi * (220 + i) * t) + 0.05 * rng.standard_normal(block)
            f.write(x.astype(np.float32))


def _run(inp, out):
    r = subprocess.run([sys.executable, "-c", PEAK_RSS, "run", "default", "--input", str(inp),
                        "--output", str(out), "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rss = int(r.stderr.split("MAXRSS_KB")[1].split()[0])
    return json.loads(r.stdout), rss


def test_ten_minute_file_streams_with_flat_memory(tmp_path):
    short, long_ = tmp_path / "short.wav", tmp_path / "long.wav"
    _write_long(short, 60)
    _write_long(long_, 600)
    s1, rss1 = _run(short, tmp_path / "o1.wav")
    s10, rss10 = _run(long_, tmp_path / "o10.wav")
    assert s10["frames_in"] == s10["frames_out"] == 600 * 48000
    assert sf.info(str(tmp_path / "o10.wav")).frames == 600 * 48000
    # the whole 10-minute file as float32 would be 115 MB; streaming keeps the peak flat
    assert rss10 - rss1 < 8 * 1024, f"peak RSS grew {rss10 - rss1} KB from 1 to 10 minutes"

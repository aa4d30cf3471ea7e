"""Wyoming services: connection set-up, time to the answer and throughput, per service.

Starts ``edge-runtime wyoming --service S`` on a free loopback port for each service and, with the
``wyoming`` package's own client, streams a test clip (16 kHz 16-bit mono, as a satellite sends it;
and 48 kHz 16-bit stereo, converted at the edge) as fast as the server takes it:

* ``first start ms``: audio-start to the first answer on a new server (the pipeline is built then;
  for vad/classify, measured as a ping sent right after audio-start);
* ``next start ms``: the same on a second connection 0.3 s later (the first one's pipeline is reused);
* ``x real time``: seconds of audio per second of wall time over the whole stream (send, process,
  every answer received), one client.

    python firmware_tools/eval/bench_wyoming.py [--seconds 30]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.ping import Ping  # noqa: E402

from edge_runtime.service.wyoming import to_pcm  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def until_pong(c):
    n = 0
    while True:
        e = await c.read_event()
        if e.type == "pong":
            return n
        n += 1


async def stream(port, x, rate, channels):
    async with AsyncTcpClient("127.0.0.1", port) as c:
        t0 = time.perf_counter()
        await c.write_event(AudioStart(rate=rate, width=2, channels=channels).event())
        await c.write_event(Ping().event())
        first = None
        while first is None:
            e = await c.read_event()
            if e.type in ("pong", "audio-start"):
                first = time.perf_counter() - t0
        pcm = to_pcm(x, 2)
        step = rate // 50 * 2 * channels            # 20 ms chunks, as a satellite sends them
        t1 = time.perf_counter()
        for i in range(0, len(pcm), step):
            await c.write_event(AudioChunk(rate=rate, width=2, channels=channels, audio=pcm[i:i + step]).event())
        await c.write_event(AudioStop().event())
        await c.write_event(Ping().event())
        await until_pong(c)
        return first, time.perf_counter() - t1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the streamed clip")
    args = ap.parse_args()
    import soxr

    clip, sr = sf.read(ROOT / "tests/fixtures/audio/vad_speech.flac", dtype="float32")
    reps = int(np.ceil(args.seconds * sr / len(clip)))
    x16 = np.tile(clip, reps)[: int(args.seconds * sr)]
    x48 = soxr.resample(x16, sr, 48000)
    x48 = np.stack([x48, x48], 1)
    print(f"python firmware_tools/eval/bench_wyoming.py --seconds {args.seconds:g}   ({os.cpu_count()} CPUs)")
    print("| service | input | first start ms | next start ms | x real time |")
    print("|---|---|---|---|---|")
    for service in ("vad", "classify", "denoise"):
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "wyoming", "--service", service,
                                 "--uri", f"tcp://127.0.0.1:{port}"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            for name, x, rate, ch in (("16 kHz mono", x16[:, None], 16000, 1), ("48 kHz stereo", x48, 48000, 2)):
                first, _ = asyncio.run(stream(port, x[: rate], rate, ch))
                time.sleep(0.3)         # the first connection's close reaches the server (it gives its pipeline back)
                nxt, wall = asyncio.run(stream(port, x, rate, ch))
                print(f"| {service} | {name} | {first * 1e3:.0f} | {nxt * 1e3:.0f} | {args.seconds / wall:.0f} |")
        finally:
            proc.terminate()
            proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())

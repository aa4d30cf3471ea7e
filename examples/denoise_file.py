"""Denoise a file from Python (the README's five lines), then stream the same pipeline block by block.

    python examples/denoise_file.py [noisy.wav] [clean.wav]
"""
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from edge_runtime.api import Pipeline, nodes

src = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[1] / "edge_runtime/_demo/speech_noisy.flac")
dst = sys.argv[2] if len(sys.argv) > 2 else "denoised.wav"

x, sr = sf.read(src, dtype="float32")
p = Pipeline([nodes.HighPass(80), nodes.Denoise(), nodes.Limiter(-1)], sample_rate=16000, block_size=160)
y = p.process(x, sr)                     # any rate/channels in; the same shape and rate out, aligned
sf.write(dst, y, sr)
print(f"{src} -> {dst}: {len(x)} frames at {sr} Hz, latency {p.latency_samples} samples compensated")

# streaming: 10 ms blocks at the pipeline's rate, state kept between calls, output latency_samples late
blocks = [p.process(x[i:i + 160], 16000, reset=False) for i in range(0, len(x) - 159, 160)]
streamed = np.concatenate(blocks)
lat = p.latency_samples
print(f"streamed {len(streamed)} frames; equals the whole-file result: "
      f"{np.allclose(streamed[lat:], y[:len(streamed) - lat], atol=1e-5)}")

"""What OpenVINO's compiled-model cache (the service's EDGE_RUNTIME_OPENVINO_CACHE) saves at start-up.

Loads each OpenVINO-readable denoise variant in fresh processes: without a cache, with an empty
cache (first start after install) and with the cache that start wrote (every later start).

    python firmware_tools/deploy/bench_openvino_cache.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_runtime.models.bench import measure  # noqa: E402

MODELS = ["models_int8/denoise/denoise_fp16.xml", "models_int8/denoise/denoise_int8.onnx",
          "models_int8/denoise/denoise_fp32.onnx"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="CPU")
    a = ap.parse_args(argv)
    print(f"| model | no cache: load ms (median of {a.repeats}) | empty cache | warm cache |")
    print("|---|---|---|---|")
    for rel in MODELS:
        p = str(ROOT / rel)
        none, cold, warm = [], [], []
        for _ in range(a.repeats):
            none.append(measure(p, "openvino", runs=5, warmup=1, device=a.device)["load_ms"])
            with tempfile.TemporaryDirectory() as d:
                cold.append(measure(p, "openvino", runs=5, warmup=1, device=a.device, options={"cache_dir": d})["load_ms"])
                warm.append(measure(p, "openvino", runs=5, warmup=1, device=a.device, options={"cache_dir": d})["load_ms"])
        med = statistics.median
        print(f"| {rel} | {med(none):.0f} | {med(cold):.0f} | {med(warm):.0f} |")
    print(f"\n(python firmware_tools/deploy/bench_openvino_cache.py --repeats {a.repeats} --device {a.device})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

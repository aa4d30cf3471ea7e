"""Real FFT routes per frame size: our FFT (radix-2, with odd-size leaf DFTs for non-pow2), the folded real DFT matrix, numpy.fft.rfft.

    python firmware_tools/bench/bench_fft.py [--sizes 256 320 480 512 960 1024] [--repeats 101] [--json OUT.json]

One float32 frame at a time, as the streaming STFT calls it. Each size's routes are timed
round-robin in ``--repeats`` batches of calls (so a noisy machine hits all routes alike); a
batch's time divided by its calls is one sample and the table gives the median sample in
µs per frame (``--json`` also keeps the minimum). Columns:

* ``fft`` / ``dft``: ``RealFFT(n, route).forward_many`` (the kernel in a compiled loop, the
  cost inside ``StftAnalyzer.c_push``); ``fft (def)``: one Python call of ``forward`` per
  frame (adds the call and buffer acquisition overhead).
* ``fft, direct leaf``: the same FFT with its composite leaf (q = r * s) computed as direct
  q-point DFTs (``factor_leaf=False``) instead of one mixed-radix step.
* ``numpy``: ``numpy.fft.rfft(x)`` per frame (pocketfft in double, plus its Python-call
  and allocation overhead); ``numpy out=``: ``numpy.fft.rfft(x, out=buf)`` into a preallocated
  complex128 output (NumPy >= 2 takes ``out=``, so allocation is not the reason to avoid it:
  the Python call and the double-precision transform remain, and our FFT is still faster).

Pinned to one CPU core. Prints a Markdown table; RealFFT's routing (``default_route``) cites it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from edge_runtime._spectral import RealFFT, default_route  # noqa: E402


def bench_size(n: int, repeats: int) -> dict:
    """Median µs per frame of each route at size ``n``. The routes are timed round-robin
    (one batch of each per repeat) so that they share whatever the machine is doing."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(np.float32)
    nb = n // 2 + 1
    re = np.empty(nb, np.float32)
    im = np.empty(nb, np.float32)
    calls = max(100, 100_000 // n)     # a batch is ~0.1-2 ms
    row = {"n": n, "default_route": default_route(n), "fft": None, "fft_def": None, "dft": None,
           "fft_direct": None}
    fns = {}
    for route in ("fft", "dft"):
        try:
            f = RealFFT(n, route)
        except ValueError:
            continue
        fns[route] = lambda k, f=f: f.forward_many(x, re, im, k)
        if route == "fft":
            row["fft_leaf"] = f.leaf_size
            row["fft_leaf_factor"] = f.leaf_factor
            if f.leaf_factor > 1:    # the same size with direct q-point leaves
                fd = RealFFT(n, "fft", factor_leaf=False)
                fns["fft_direct"] = lambda k, f=fd: f.forward_many(x, re, im, k)

            def per_call(k, fwd=f.forward):
                for _ in range(k):
                    fwd(x, re, im)
            fns["fft_def"] = per_call
    rfft = np.fft.rfft

    def np_call(k):
        for _ in range(k):
            rfft(x)
    fns["numpy"] = np_call
    if int(np.__version__.split(".")[0]) >= 2:
        buf = np.empty(n // 2 + 1, np.complex128)

        def np_out(k):
            for _ in range(k):
                rfft(x, out=buf)
        fns["numpy_out"] = np_out
    samples = {key: [] for key in fns}
    for fn in fns.values():
        fn(calls)  # warm caches and branch predictors
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter_ns()
            fn(calls)
            samples[key].append((time.perf_counter_ns() - t0) / calls / 1e3)
    for key, vals in samples.items():
        row[key] = float(np.median(vals))
        row[key + "_min"] = float(np.min(vals))
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 320, 480, 512, 960, 1024])
    ap.add_argument("--repeats", type=int, default=101)
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--no-pin", action="store_true", help="do not pin to one CPU core")
    args = ap.parse_args(argv)
    if not args.no_pin and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    rows = [bench_size(n, args.repeats) for n in args.sizes]

    def f(v):
        return "n/a" if v is None else f"{v:.2f}"
    cpu = platform.processor() or platform.machine()
    print(f"RealFFT per frame, µs (median of {args.repeats} batches; {platform.system()} {cpu}, "
          f"numpy {np.__version__}, Python {platform.python_version()})")
    print("command: python firmware_tools/bench/bench_fft.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print()
    print("| n | fft (leaf q) | fft, direct leaf | fft (def call) | dft matrix | numpy.fft.rfft | numpy out= | dft / fft | numpy / fft | numpy out= / fft | default route |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|")
    for r in rows:
        leaf = ""
        if r.get("fft") is not None:
            fac = r.get("fft_leaf_factor", 1)
            leaf = f" (q={r['fft_leaf']}" + (f" = {fac}x{r['fft_leaf'] // fac})" if fac > 1 else ")")
        ratio_dft = f"{r['dft'] / r['fft']:.1f}x" if r.get("fft") and r.get("dft") else "n/a"
        ratio_np = f"{r['numpy'] / r['fft']:.1f}x" if r.get("fft") else "n/a"
        ratio_out = f"{r['numpy_out'] / r['fft']:.1f}x" if r.get("fft") and r.get("numpy_out") else "n/a"
        print(f"| {r['n']} | {f(r.get('fft'))}{leaf} | {f(r.get('fft_direct'))} | {f(r.get('fft_def'))} | {f(r['dft'])} | "
              f"{f(r['numpy'])} | {f(r.get('numpy_out'))} | {ratio_dft} | {ratio_np} | {ratio_out} | {r['default_route']} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Evaluate our speech denoiser against the noisy input, RNNoise, DeepFilterNet3 and spectral
gating on the 16 kHz test set built by ``firmware_tools/data/build_denoise.py``.

    python firmware_tools/eval/eval_denoise.py --test firmware_tools/work/denoise16k/test \\
        --model-fp32 firmware_tools/work/denoise_run/denoise_fp32.onnx \\
        --model-int8 firmware_tools/work/denoise_run/denoise_int8.onnx \\
        --out firmware_tools/work/eval_denoise [--max-clips N] [--jobs 2]

For every test clip and method: enhance (48 kHz baselines: soxr 16k->48k, run, 48k->16k), remove
the output's delay against the clean reference (cross-correlation peak within +-50 ms; the known
algorithmic delays are compensated first, the search catches the rest), then PESQ-WB (P.862.2),
STOI, SI-SDR and SI-SDR improvement over the noisy input. Quality runs in ``--jobs`` worker
processes. CPU time is measured afterwards in this process alone, pinned to one core
(``os.sched_setaffinity``), ORT with one thread, BLAS/OpenMP with one thread: ``time.process_time``
around each method's processing call only (resampling, model loading and a warm-up clip excluded),
on the same ``--timing-clips`` clips for every method; it is reported per second of audio at the
method's native rate. Our worst-case time per 10 ms hop is the runtime's own per-node maximum
(``Pipeline.stats()['nodes'][0]['max_us']``) over those clips after the warm-up.

Writes into --out: ``results.json`` (command, setup, per-clip metrics, tables, timing),
``results.md`` (the tables, headed by the command line) and ``spectrogram.png`` (noisy / ours
INT8 / RNNoise / clean for one clip); all atomically. The Markdown table is also printed.
"""
from __future__ import annotations

import os

# one thread everywhere, before numpy / onnxruntime load (timing is per core; workers share 2 cores)
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
           "VECLIB_MAXIMUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _p in (str(ROOT), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from edge_runtime import atomic  # noqa: E402
import metrics as M  # noqa: E402
from methods import build_methods  # noqa: E402

SR = 16000
TEST_SNRS = (-5.0, 0.0, 5.0, 10.0, 20.0)
MAX_LAG_S = 0.050
ALL_METHODS = ("noisy", "ours_fp32", "ours_int8", "rnnoise", "dfn3", "dfn3_engine", "dfn3_engine_int8",
               "dfn3_engine_fp16", "noisereduce")
LABELS = {"noisy": "noisy input", "ours_fp32": "ours FP32", "ours_int8": "ours INT8", "rnnoise": "RNNoise",
          "dfn3": "DeepFilterNet3 (libDF, the wheel)", "dfn3_engine": "DeepFilterNet3 in our engine, FP32",
          "dfn3_engine_int8": "DeepFilterNet3 in our engine, INT8",
          "dfn3_engine_fp16": "DeepFilterNet3 in our engine, FP16", "noisereduce": "spectral gating (noisereduce)"}


# ============================================================================ test set

def load_manifest(test_dir: Path, manifest: Path | None) -> list[dict]:
    """Test clips from the builder's manifest: id, snr, shard files, row."""
    manifest = manifest or test_dir.parent / "manifest.jsonl"
    if not manifest.is_file():
        raise SystemExit(f"no manifest at {manifest} (build the test set with "
                         "firmware_tools/data/build_denoise.py, or pass --manifest)")
    split = test_dir.name
    clips = []
    with open(manifest) as f:
        for line in f:
            m = json.loads(line)
            if m.get("split") != split:
                continue
            noisy = test_dir.parent / m["shard"]  # shard paths are relative to the data root
            clean = noisy.with_name(noisy.name.replace("noisy_", "clean_", 1))
            c = {"clip": m["clip"], "snr": m.get("snr_db"), "noisy": str(noisy), "clean": str(clean),
                 "row": int(m["row"]), "noise_kind": m.get("noise_kind"), "rir": m.get("rir") is not None,
                 "source": str(m.get("speaker") or "?").split(":", 1)[0],
                 "family": "+".join(sorted(set(m.get("noise_kind") or ["?"])))}
            if m.get("shard48"):  # the same mixture at 48 kHz, for the 48 kHz methods
                c["noisy48"] = str(test_dir.parent / m["shard48"])
            clips.append(c)
    if not clips:
        raise SystemExit(f"{manifest} has no clips of split {split!r}")
    return clips


def select_clips(clips: list[dict], max_clips: int | None) -> list[dict]:
    """Speech clips (noise-only ones have no reference), balanced over SNRs when capped: the
    first clips of each SNR in manifest order, taken round-robin."""
    clips = [c for c in clips if c["snr"] is not None]
    if not max_clips or max_clips >= len(clips):
        return clips
    by: dict[float, list[dict]] = {}
    for c in clips:
        by.setdefault(round(float(c["snr"]), 1), []).append(c)
    keys = sorted(by)
    out, i = [], 0
    while len(out) < max_clips:
        k = keys[i % len(keys)]
        j = i // len(keys)
        if j < len(by[k]):
            out.append(by[k][j])
        i += 1
        if i > max_clips * len(keys) + len(clips):
            break
    order = {c["clip"]: n for n, c in enumerate(clips)}
    return sorted(out, key=lambda c: order[c["clip"]])


_SHARDS: dict[str, np.ndarray] = {}


def _row(path: str, row: int) -> np.ndarray:
    """One clip of a shard (memory-mapped once per process), as float32."""
    if path not in _SHARDS:
        _SHARDS[path] = np.load(path, mmap_mode="r")
    return np.asarray(_SHARDS[path][row], np.float32)


def load_clip(c: dict) -> tuple[np.ndarray, np.ndarray]:
    return _row(c["noisy"], c["row"]), _row(c["clean"], c["row"])


def load_noisy48(c: dict) -> np.ndarray | None:
    """The clip's noisy mixture made at 48 kHz (real-speech split), or None."""
    return _row(c["noisy48"], c["row"]) if c.get("noisy48") else None


# ============================================================================ enhancement

def to_rate(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    if sr_in == sr_out:
        return np.asarray(x, np.float32)
    import soxr

    return np.asarray(soxr.resample(np.asarray(x, np.float32), sr_in, sr_out, quality="VHQ"), np.float32)


def method_input(method, x16: np.ndarray, x48: np.ndarray | None = None) -> np.ndarray:
    """The clip at ``method``'s rate: ``x48`` (the same mixture made at 48 kHz) for a 48 kHz method
    when the split has it, else the 16 kHz clip resampled."""
    return x48 if (x48 is not None and method.rate == 48000) else to_rate(x16, SR, method.rate)


def enhance(method, x16: np.ndarray, x48: np.ndarray | None = None) -> np.ndarray:
    """Run ``method`` on a 16 kHz clip (see :func:`method_input`), resampling its output back to
    16 kHz; same length as the input."""
    x = method_input(method, x16, x48)
    y = method.run(x)
    y16 = to_rate(y, method.rate, SR)
    n = len(x16)
    if len(y16) < n:
        y16 = np.pad(y16, (0, n - len(y16)))
    return y16[:n].astype(np.float32)


def score(y: np.ndarray, clean: np.ndarray, noisy_sisdr: float | None) -> dict:
    if not np.all(np.isfinite(y)):
        return {"pesq": math.nan, "stoi": math.nan, "si_sdr": math.nan, "si_sdri": math.nan, "lag": 0,
                "nonfinite": True}
    ya, lag = M.align(y, clean, int(MAX_LAG_S * SR))
    s = M.si_sdr(ya, clean)
    return {"pesq": M.pesq_wb(clean, ya, SR), "stoi": M.stoi(clean, ya, SR), "si_sdr": s,
            "si_sdri": s - noisy_sisdr if noisy_sisdr is not None else 0.0, "lag": int(lag)}


_WORKER: dict = {}


def _init_worker(cfg: dict) -> None:
    _WORKER["methods"] = build_methods(cfg)
    _WORKER["clean_check"] = bool(cfg.get("clean_check"))


def eval_clip(c: dict) -> dict:
    noisy, clean = load_clip(c)
    noisy48 = load_noisy48(c)
    base = M.si_sdr(noisy, clean)
    res = {"clip": c["clip"], "snr": c["snr"], "source": c.get("source"), "noise_kind": c.get("noise_kind"),
           "family": c.get("family"),
           "seconds": len(noisy) / SR, "noisy_si_sdr": base, "methods": {}}
    for name, m in _WORKER["methods"].items():
        try:
            y = enhance(m, noisy, noisy48)
            res["methods"][name] = score(y, clean, base)
            if _WORKER.get("clean_check") and name != "noisy":
                # the same method on the clean reference: how much it damages speech alone
                yc = M.align(enhance(m, clean), clean, int(MAX_LAG_S * SR))[0]
                res["methods"][name]["clean_in_si_sdr"] = M.si_sdr(yc, clean)
                res["methods"][name]["clean_in_gain"] = float(np.dot(yc, clean) / max(np.dot(clean, clean), 1e-12))
        except Exception as e:  # keep the run going; the failure is reported in the table
            res["methods"][name] = {"error": f"{type(e).__name__}: {e}"}
    return res


def run_quality(clips: list[dict], cfg: dict, jobs: int, log=print) -> list[dict]:
    t0 = time.perf_counter()
    results: list[dict] = []
    step = max(1, len(clips) // 10)

    def progress(k):
        if k % step == 0 or k == len(clips):
            el = time.perf_counter() - t0
            log(f"  quality: {k}/{len(clips)} clips, {el:.0f} s elapsed, "
                f"~{el / k * (len(clips) - k):.0f} s left")

    if jobs <= 1:
        _init_worker(cfg)
        for k, c in enumerate(clips, 1):
            results.append(eval_clip(c))
            progress(k)
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(jobs, initializer=_init_worker, initargs=(cfg,)) as pool:
            for k, r in enumerate(pool.imap_unordered(eval_clip, clips, chunksize=1), 1):
                results.append(r)
                progress(k)
    order = {c["clip"]: i for i, c in enumerate(clips)}
    return sorted(results, key=lambda r: order[r["clip"]])


# ============================================================================ timing

def run_timing(clips: list[dict], cfg: dict, core: int | None, log=print) -> dict:
    """CPU seconds per second of audio for each method, in this process pinned to one core."""
    old = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if old is not None:
        core = core if core is not None else max(old)
        os.sched_setaffinity(0, {core})
    try:
        tcfg = dict(cfg)
        methods = build_methods(tcfg)
        if cfg.get("model_int8") and cfg.get("time_ours_48k", True):
            from methods import Ours

            m48 = Ours("ours_int8@48k", "ours INT8 @ 48 kHz", cfg["model_int8"], rate=48000)
            m48.setup()
            methods["ours_int8@48k"] = m48
        data = [load_clip(c)[0] for c in clips]
        data48 = [load_noisy48(c) for c in clips]
        out = {"core": core, "clips": [c["clip"] for c in clips[1:]], "warmup_clip": clips[0]["clip"],
               "audio_s": sum(len(x) for x in data[1:]) / SR, "methods": {}}
        for name, m in methods.items():
            xs = [method_input(m, x, x48) for x, x48 in zip(data, data48)]  # outside the timed region
            m.run(xs[0])  # warm-up (first-call allocations, lazy init), not counted
            m.reset_stats()
            cpu = wall = 0.0
            for x in xs[1:]:
                st = m._create() if name == "dfn3" else None  # model load is set-up, not processing
                c0, w0 = time.process_time(), time.perf_counter()
                if st is not None:
                    m.run(x, state=st)
                else:
                    m.run(x)
                cpu += time.process_time() - c0
                wall += time.perf_counter() - w0
            audio = out["audio_s"]
            row = {"label": m.label, "rate": m.rate, "cpu_s": cpu, "wall_s": wall,
                   "cpu_per_audio_s": cpu / audio, "wall_per_audio_s": wall / audio,
                   "frame_max_ms": (m.frame_max_us / 1e3) if m.frame_max_us is not None else None}
            if hasattr(m, "stats") and getattr(m, "pipe", None) is not None:
                s = m.stats()
                row.update(hop_max_ms=s["nodes"][0]["max_us"] / 1e3, hop_mean_ms=s["nodes"][0]["mean_us"] / 1e3,
                           block_p99_ms=s["block_ms_p99"], block_max_ms=s["block_ms_max"],
                           deadline_misses=s["deadline_misses"], blocks=s["blocks"], budget_ms=s["budget_ms"])
            out["methods"][name] = row
            log(f"  timing: {name:14s} {1e3 * row['cpu_per_audio_s']:7.2f} ms CPU per s of audio"
                + (f", worst 10 ms hop {row['frame_max_ms']:.3f} ms" if row["frame_max_ms"] is not None else ""))
        return out
    finally:
        if old is not None:
            os.sched_setaffinity(0, old)


# ============================================================================ tables

def _nanmean(v):
    v = [x for x in v if x is not None and np.isfinite(x)]
    return float(np.mean(v)) if v else math.nan


def _grouped(results: list[dict], methods: list[str], key: str) -> dict:
    """Means of PESQ / STOI / SI-SDRi per value of ``key`` (speech source, noise family), all SNRs pooled."""
    groups = sorted({r.get(key) or "?" for r in results})
    out = {}
    for g in groups:
        rs = [r for r in results if (r.get(key) or "?") == g]
        out[g] = {"n": len(rs)}
        for name in methods:
            out[g][name] = {k: _nanmean([r["methods"][name].get(k) for r in rs if name in r["methods"]])
                            for k in ("pesq", "stoi", "si_sdri")}
    return out


def aggregate(results: list[dict], methods: list[str]) -> dict:
    snrs = sorted({round(float(r["snr"]), 1) for r in results})
    table: dict = {}
    for name in methods:
        t: dict = {}
        for key in ("pesq", "stoi", "si_sdr", "si_sdri"):
            per = {}
            for s in snrs:
                vals = [r["methods"][name].get(key) for r in results
                        if round(float(r["snr"]), 1) == s and name in r["methods"]]
                per[str(s)] = _nanmean(vals)
            per["mean"] = _nanmean([per[str(s)] for s in snrs])  # average over SNRs
            t[key] = per
        rs = [r["methods"][name] for r in results if name in r["methods"]]
        cc = [m["clean_in_si_sdr"] for m in rs if "clean_in_si_sdr" in m]
        if cc:
            t["clean_in_si_sdr_median"] = float(np.median(cc))
            t["clean_in_gain_median"] = float(np.median([m["clean_in_gain"] for m in rs if "clean_in_gain" in m]))
            t["clean_in_frac_gain_below_0.3"] = float(np.mean([m["clean_in_gain"] < 0.3 for m in rs
                                                              if "clean_in_gain" in m]))
        t["n"] = len(rs)
        t["errors"] = sum(1 for m in rs if "error" in m)
        t["nan_pesq"] = sum(1 for m in rs if "error" not in m and not np.isfinite(m["pesq"]))
        lags = [m["lag"] for m in rs if "lag" in m]
        t["lag_ms_median"] = float(np.median(lags)) * 1e3 / SR if lags else math.nan
        t["lag_ms_min"] = float(np.min(lags)) * 1e3 / SR if lags else math.nan
        t["lag_ms_max"] = float(np.max(lags)) * 1e3 / SR if lags else math.nan
        table[name] = t
    by_source = _grouped(results, methods, "source")
    by_family = _grouped(results, methods, "family")
    return {"snrs": snrs, "methods": table, "by_source": by_source, "by_family": by_family}


def _f(v, nd=2, sign=False):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    return f"{v:+.{nd}f}" if sign else f"{v:.{nd}f}"


def markdown(res: dict) -> str:
    agg, timing = res["table"], res.get("timing")
    snrs = agg["snrs"]
    methods = list(agg["methods"])
    lines = [f"# Denoiser evaluation ({res['n_clips']} test clips, {res['audio_s']:.0f} s of 16 kHz audio)", "",
             "Produced by:", "", "```", res["command"], "```", ""]
    # summary
    lines += ["## Summary (means over SNRs)", "",
              "| method | PESQ-WB | STOI | SI-SDR (dB) | SI-SDRi (dB) | CPU ms / s audio (1 core) | worst 10 ms hop (ms) | delay found (ms) |",
              "|---|---|---|---|---|---|---|---|"]
    for name in methods:
        t = agg["methods"][name]
        tm = (timing or {}).get("methods", {}).get(name, {})
        cpu = "—" if name == "noisy" else _f(1e3 * tm["cpu_per_audio_s"], 1) + (f" @{tm['rate'] // 1000} kHz" if tm.get("rate", SR) != SR else "") \
            if tm else "—"
        hop = _f(tm.get("hop_max_ms", tm.get("frame_max_ms")), 3) if tm else "—"
        lag = f"{_f(t['lag_ms_median'], 1)} [{_f(t['lag_ms_min'], 1)}, {_f(t['lag_ms_max'], 1)}]"
        err = f" ({t['errors']} errors)" if t["errors"] else ""
        lines.append(f"| {LABELS.get(name, name)}{err} | {_f(t['pesq']['mean'])} | {_f(t['stoi']['mean'], 3)} | "
                     f"{_f(t['si_sdr']['mean'], 1)} | {_f(t['si_sdri']['mean'], 1, True)} | {cpu} | {hop} | {lag} |")
    extra = {k: v for k, v in (timing or {}).get("methods", {}).items() if k not in agg["methods"]}
    for name, tm in extra.items():
        lines.append(f"| {tm['label']} (timing only) | | | | | {_f(1e3 * tm['cpu_per_audio_s'], 1)} @{tm['rate'] // 1000} kHz | "
                     f"{_f(tm.get('hop_max_ms', tm.get('frame_max_ms')), 3)} | |")
    lines.append("")
    heads = [f"{s:g} dB" for s in snrs] + ["mean"]
    for key, title, nd, sign in (("pesq", "PESQ-WB", 2, False), ("stoi", "STOI", 3, False),
                                 ("si_sdri", "SI-SDR improvement (dB)", 1, True), ("si_sdr", "SI-SDR (dB)", 1, False)):
        lines += [f"## {title} by input SNR", "", "| method | " + " | ".join(heads) + " |",
                  "|---|" + "---|" * len(heads)]
        for name in methods:
            per = agg["methods"][name][key]
            cells = [_f(per[str(s)], nd, sign) for s in snrs] + [_f(per["mean"], nd, sign)]
            lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
        lines.append("")
    for key, title in (("by_source", "By speech source"), ("by_family", "By noise family")):
        groups = agg.get(key) or {}
        if len(groups) > 1:
            lines += [f"## {title} (all SNRs pooled): PESQ-WB / STOI / SI-SDRi (dB)", "",
                      "| method | " + " | ".join(f"{k} ({v['n']})" for k, v in groups.items()) + " |",
                      "|---|" + "---|" * len(groups)]
            for name in methods:
                lines.append(f"| {LABELS.get(name, name)} | " + " | ".join(
                    f"{_f(v[name]['pesq'])} / {_f(v[name]['stoi'], 3)} / {_f(v[name]['si_sdri'], 1, True)}"
                    for v in groups.values()) + " |")
            lines.append("")
    if any("clean_in_si_sdr_median" in agg["methods"][n] for n in methods):
        lines += ["## Clean input (speech-damage check: each method run on the clean reference)", "",
                  "| method | SI-SDR of output vs clean, median (dB) | speech gain, median | clips with gain < 0.3 |",
                  "|---|---|---|---|"]
        for name in methods:
            t = agg["methods"][name]
            if "clean_in_si_sdr_median" in t:
                lines.append(f"| {LABELS.get(name, name)} | {_f(t['clean_in_si_sdr_median'], 1)} | "
                             f"{_f(t['clean_in_gain_median'])} | {100 * t['clean_in_frac_gain_below_0.3']:.0f} % |")
        lines.append("")
    counts = {}
    for r in res["clips"]:
        counts[_f(float(r["snr"]), 0)] = counts.get(_f(float(r["snr"]), 0), 0) + 1
    lines += ["## Notes", "",
              "- Clips per SNR: " + ", ".join(f"{k} dB: {v}" for k, v in counts.items()) + ".",
              "- Delay: each output is shifted to the cross-correlation peak with the clean reference "
              f"(search ±{MAX_LAG_S * 1e3:.0f} ms) before PESQ, STOI and SI-SDR; known algorithmic delays "
              "(RNNoise 20 ms, DFN3 30 ms) are compensated first, so 'delay found' is the residual.",
              ("- RNNoise and DFN3 run at 48 kHz on the mixtures made at 48 kHz from the native-rate sources "
               "(their outputs soxr VHQ 48k→16k for scoring); ours runs at 16 kHz on the same mixtures resampled; "
               if any(c.get("noisy48") for c in res.get("clip_info", [])) else
               "- RNNoise and DFN3 run at 48 kHz (soxr VHQ 16k→48k→16k around them); ")
              + "spectral gating is offline (whole clip, non-causal).",
              ]
    if timing:
        lines += [f"- CPU time: `time.process_time` around processing only, this process pinned to core "
                  f"{timing['core']}, one thread (ORT intra-op 1, BLAS 1), {timing['audio_s']:.0f} s of audio "
                  f"({len(timing['clips'])} clips after 1 warm-up clip), per second of audio at each method's "
                  "native rate. Worst hop: ours = runtime node max_us over 10 ms blocks; baselines = slowest "
                  "480-sample (10 ms) C call; these are wall-clock maxima and include any preemption.",
                  f"- Machine: {res['machine']}."]
        o = timing["methods"].get("ours_int8") or timing["methods"].get("ours_fp32")
        if o and "block_p99_ms" in o:
            lines.append(f"- Ours per 10 ms block (INT8 @16 kHz): mean {_f(o['hop_mean_ms'], 3)} ms, p99 "
                         f"{_f(o['block_p99_ms'], 3)} ms, max {_f(o['hop_max_ms'], 3)} ms over {o['blocks']} blocks; "
                         f"deadline misses {o['deadline_misses']}.")
    if res.get("figure"):
        lines.append(f"- Spectrograms ({' / '.join(res['figure']['rows'])}) of clip {res['figure']['clip']} "
                     f"({res['figure']['snr']:g} dB): `{res['figure']['file']}`.")
    return "\n".join(lines) + "\n"


# ============================================================================ figure

def figure(clip: dict, cfg: dict, path: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import signal

    noisy, clean = load_clip(clip)
    want = [n for n in ("ours_int8", "ours_fp32") if n in cfg["methods"]][:1] + \
        (["rnnoise"] if "rnnoise" in cfg["methods"] else [])
    ms = build_methods(dict(cfg, methods=want))
    rows = [("noisy", noisy)]
    for n in want:
        y = enhance(ms[n], noisy, load_noisy48(clip))
        rows.append((LABELS[n], M.align(y, clean, int(MAX_LAG_S * SR))[0]))
    rows.append(("clean", clean))
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 2.3 * len(rows)), sharex=True, constrained_layout=True)
    ref = None
    for ax, (title, x) in zip(axes, rows):
        f, t, Z = signal.stft(x, SR, nperseg=512, noverlap=384)
        db = 20 * np.log10(np.abs(Z) + 1e-9)
        if ref is None:
            ref = float(np.percentile(db, 99.5))
        im = ax.pcolormesh(t, f / 1000, db, vmin=ref - 80, vmax=ref, shading="auto", cmap="magma")
        s = M.si_sdr(x, clean)
        ax.set_title(f"{title}   (SI-SDR {s:.1f} dB)" if title != "clean" else title, loc="left", fontsize=10)
        ax.set_ylabel("kHz")
    axes[-1].set_xlabel("time (s)")
    fig.colorbar(im, ax=axes, label="dB", shrink=0.6)
    fig.suptitle(f"clip {clip['clip']}, input SNR {float(clip['snr']):g} dB")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    atomic.commit(tmp, path)
    return {"clip": clip["clip"], "snr": float(clip["snr"]), "file": path.name, "rows": [r[0] for r in rows]}


# ============================================================================ main

def write_atomic(path: Path, text: str) -> None:
    with atomic.AtomicFile(str(path)) as f:
        f.write(text)


def _jsonable(o):
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (float, np.floating)):
        return float(o) if np.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    return o


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test", required=True, type=Path, help="test split directory (its manifest.jsonl is one level up)")
    ap.add_argument("--manifest", type=Path, help="manifest.jsonl (default: TEST/../manifest.jsonl)")
    ap.add_argument("--model-fp32", help="our FP32 ONNX model (omit to skip the row)")
    ap.add_argument("--model-int8", help="our INT8 ONNX model (omit to skip the row)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--max-clips", type=int, help="at most N clips, balanced over SNRs (default: all)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes for the quality pass (default 2)")
    ap.add_argument("--methods", default=",".join(ALL_METHODS), help=f"comma list from {','.join(ALL_METHODS)}")
    ap.add_argument("--timing-clips", type=int, default=10,
                    help="clips timed per method after one warm-up clip (0: no timing; default 10)")
    ap.add_argument("--timing-core", type=int, help="CPU to pin the timing to (default: the highest allowed)")
    ap.add_argument("--nr-stationary", action="store_true", help="stationary spectral gating (default non-stationary)")
    ap.add_argument("--dfn-atten-lim", type=float, default=100.0, help="DFN3 attenuation limit in dB (default 100)")
    ap.add_argument("--clean-check", action="store_true",
                    help="also run every method on the clean reference (speech-damage check; doubles the time)")
    ap.add_argument("--figure-clip", help="clip id for the spectrogram (default: the first 5 dB clip)")
    a = ap.parse_args(argv)

    command = "python " + " ".join(shlex.quote(x) for x in [os.path.relpath(__file__, os.getcwd())]
                                   + list(sys.argv[1:] if argv is None else argv))
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    for m in methods:
        if m not in ALL_METHODS:
            ap.error(f"unknown method {m!r}")
    for name, path in (("ours_fp32", a.model_fp32), ("ours_int8", a.model_int8)):
        if name in methods and not path:
            methods.remove(name)
        elif path and not Path(path).is_file():
            ap.error(f"{path}: no such model")
    cfg = {"methods": methods, "model_fp32": a.model_fp32, "model_int8": a.model_int8,
           "nr_stationary": a.nr_stationary, "dfn_atten_lim_db": a.dfn_atten_lim, "clean_check": a.clean_check}
    for mod, pip in (("pesq", "pesq"), ("pystoi", "pystoi"), ("soxr", "soxr"), ("matplotlib", "matplotlib")):
        if __import__("importlib.util").util.find_spec(mod) is None:
            raise SystemExit(f"missing {mod}: pip install {pip}")

    clips = select_clips(load_manifest(a.test, a.manifest), a.max_clips)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"{len(clips)} clips, methods: {', '.join(methods)}; {a.jobs} worker(s)", flush=True)
    log = lambda s: print(s, flush=True)  # noqa: E731
    results = run_quality(clips, cfg, a.jobs, log)
    t_quality = time.perf_counter() - t0

    timing = None
    if a.timing_clips > 0:
        tclips = clips[: a.timing_clips + 1]
        timing = run_timing(tclips, cfg, a.timing_core, log)

    fig = None
    fclip = next((c for c in clips if c["clip"] == a.figure_clip), None) if a.figure_clip else \
        next((c for c in clips if float(c["snr"]) == 5.0), clips[0])
    if fclip is not None:
        fig = figure(fclip, cfg, a.out / "spectrogram.png")

    res = {"command": command, "created": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": machine(), "test": str(a.test), "n_clips": len(results),
           "audio_s": sum(r["seconds"] for r in results), "quality_wall_s": t_quality,
           "setup": {"methods": methods, "labels": {m: LABELS[m] for m in methods},
                     "models": {"fp32": a.model_fp32, "int8": a.model_int8},
                     "max_lag_ms": MAX_LAG_S * 1e3, "resampler": "soxr VHQ",
                     "nr_stationary": a.nr_stationary, "dfn_atten_lim_db": a.dfn_atten_lim},
           "table": aggregate(results, methods), "timing": timing, "figure": fig, "clips": results,
           "clip_info": [{"clip": c["clip"], "noisy48": bool(c.get("noisy48"))} for c in clips]}
    md = markdown(res)
    write_atomic(a.out / "results.json", json.dumps(_jsonable(res), indent=1) + "\n")
    write_atomic(a.out / "results.md", md)
    print()
    print(md)
    print(f"wrote {a.out / 'results.md'}, {a.out / 'results.json'}"
          + (f", {a.out / 'spectrogram.png'}" if fig else "") + f" in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The hardware suite, the same on every platform: every shipped model variant (load time, median
and p99 latency, RSS), every shipped pipeline (real-time factor, CPU share), INT8 vs FP32.

Run on the device: ``python -m pytest hw_tests -m x86`` (``rpi``, ``jetson``, ``intel_npu``).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, device_settings, platform_params

SHIPPED_PIPELINES = sorted(p.stem for p in (ROOT / "configs" / "pipelines").glob("*.toml"))
_variant_cache: dict[str, list] = {}


def _models():
    from edge_runtime.models import default_registry

    return list(default_registry())


def measure_variants(marker, device_info, runs) -> list[dict]:
    """Every variant of every manifest model on the platform's backends, each in a fresh process."""
    if marker in _variant_cache:
        return _variant_cache[marker]
    from edge_runtime.backends import BACKENDS
    from edge_runtime.models.profiler import profile_models

    s = device_settings(marker, device_info)
    backends = [b for b in s["backends"] if BACKENDS[b].available()]
    rows = profile_models(_models(), backends=backends, threads=s["threads"], runs=runs, warmup=30,
                          isolate=True, devices=s["devices"])
    for r in rows:
        r["size_kb"] = Path(r["path"]).stat().st_size / 1024 if Path(r["path"]).is_file() else None
        if r["path"].endswith(".xml"):
            b = Path(r["path"]).with_suffix(".bin")
            if b.is_file():
                r["size_kb"] += b.stat().st_size / 1024
    _variant_cache[marker] = rows
    return rows


def _public(r: dict) -> dict:
    return {k: v for k, v in r.items() if not k.startswith("_")}


@pytest.mark.parametrize("platform", platform_params())
def test_model_variants_load_latency_rss(platform, hw_platform, device_info, hw_report, request):
    rows = measure_variants(platform, device_info, request.config.getoption("--hw-runs"))
    assert rows, "no model variant could be measured: no backend installed for this platform's profile"
    for r in rows:
        hw_report.add("models", {"platform": platform, **_public(r)})
    failed = [f"{r['model']} {r['format']}/{r['precision']}@{r['backend']}: {r['error']}" for r in rows if r.get("error")]
    assert not failed, "\n".join(failed)
    for r in rows:
        assert r["load_ms"] > 0 and 0 < r["median_us"] <= r["p99_us"] and r["rss_mb"] is not None


def _synth(sample_rate: int, seconds: float, channels: int) -> np.ndarray:
    """Speech-band test audio: a vowel-like harmonic tone with a syllable envelope, plus noise."""
    rng = np.random.default_rng(7)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    out = np.empty((channels, n), np.float32)
    for c in range(channels):
        out[c] = 0.1 * voice + 0.02 * rng.standard_normal(n)
    return out


def _paced_run(pipe, audio, seconds: float) -> dict:
    """Blocks at the pace a live device delivers them (one per block duration, idle in between):
    per-block time and CPU share as the service sees them, which back-to-back runs understate
    (caches and the CPU go cold between blocks)."""
    if seconds <= 0:
        return {}
    bs, sr = pipe.block_size, pipe.sample_rate
    n_blocks = min(int(seconds * sr / bs), audio.shape[1] // bs)
    pipe.reset()
    pipe.reset_stats()
    pipe.events.clear()
    inp = pipe.input
    period = bs / sr
    cpu0, t0 = time.process_time(), time.perf_counter()
    for b in range(n_blocks):
        np.copyto(inp, audio[:, b * bs:(b + 1) * bs])
        pipe.process_block()
        if pipe.events.count > 512:
            pipe.events.clear()
        ahead = t0 + (b + 1) * period - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    cpu = time.process_time() - cpu0
    st = pipe.stats()
    rec = np.asarray(pipe._require().recent_block_ns(), np.float64) / 1e3
    return {"live_audio_s": n_blocks * period, "live_engine_rtf": st["realtime_factor"],
            "live_cpu_share": cpu / (n_blocks * period), "live_block_us_p50": float(np.percentile(rec, 50)),
            "live_block_us_p99": float(np.percentile(rec, 99)), "live_deadline_misses": st["deadline_misses"]}


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("pipeline", SHIPPED_PIPELINES)
@pytest.mark.parametrize("platform", platform_params())
def test_pipeline_realtime_factor_and_cpu_share(platform, pipeline, channels, hw_platform, hw_report, request):
    from edge_runtime.config import load_pipeline_config

    cfg = load_pipeline_config(str(ROOT / "configs" / "pipelines" / f"{pipeline}.toml"))
    if cfg.channels is not None and cfg.channels != channels:
        pytest.skip(f"{pipeline} takes {cfg.channels} channel(s)")
    pipe = cfg.build()
    pipe.prepare(channels)
    seconds = request.config.getoption("--hw-seconds")
    audio = _synth(pipe.sample_rate, seconds, channels)
    bs = pipe.block_size
    n_blocks = audio.shape[1] // bs
    inp = pipe.input
    for b in range(min(50, n_blocks)):               # warm-up: first calls, caches
        np.copyto(inp, audio[:, b * bs:(b + 1) * bs])
        pipe.process_block()
    pipe.reset()
    pipe.reset_stats()
    pipe.events.clear()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for b in range(n_blocks):
        np.copyto(inp, audio[:, b * bs:(b + 1) * bs])
        pipe.process_block()
        if pipe.events.count > 512:
            pipe.events.clear()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    st = pipe.stats()
    audio_s = n_blocks * bs / pipe.sample_rate
    recent = np.asarray(pipe._require().recent_block_ns(), np.float64) / 1e3
    live = _paced_run(pipe, audio, request.config.getoption("--hw-live-seconds"))
    row = {"platform": platform, "pipeline": pipeline, "sample_rate": pipe.sample_rate, "block_size": bs,
           "channels": channels, "audio_s": audio_s, "engine_rtf": st["realtime_factor"], "wall_rtf": wall / audio_s,
           "cpu_share": cpu / audio_s, "block_us_p50": float(np.percentile(recent, 50)),
           "block_us_p99": float(np.percentile(recent, 99)), "block_us_max": st["block_ms_max"] * 1e3,
           "deadline_misses": st["deadline_misses"], "blocks": st["blocks"], "budget_ms": st["budget_ms"],
           "models": [f"{n['name']}={n['variant']}" for n in st["nodes"] if n.get("variant")], **live}
    hw_report.add("pipelines", row)
    assert st["blocks"] == n_blocks
    # real time on this hardware: the whole chain takes less than the audio's duration
    assert st["realtime_factor"] < 1.0, row


def _output_diff(fp32: dict, int8: dict, devices: dict) -> dict | None:
    """Per output, max |int8 - fp32| with both fed the same (random, real-unit) inputs."""
    from edge_runtime.errors import ModelError
    from edge_runtime.models.bench import measure

    try:
        ref = measure(fp32["path"], fp32["backend"], runs=1, warmup=0, isolate=False,
                      device=devices.get(fp32["backend"]))
        res = measure(int8["path"], int8["backend"], runs=1, warmup=0, isolate=False,
                      device=devices.get(int8["backend"]), real_inputs=ref["_real_inputs"])
    except ModelError:
        return None
    ro, rr = ref["_real_outputs"], res["_real_outputs"]
    if len(ro) != len(rr) or any(np.shape(a) != np.shape(b) for a, b in zip(ro, rr)):
        return None
    return {o["name"]: float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
            for o, a, b in zip(ref["outputs"], ro, rr)}


def _pipeline_snr(model: str, fp32_label: str, int8_label: str, seconds: float = 5.0):
    """(pipeline, SNR dB of the INT8 pipeline's output against the FP32 one's) on the same audio."""
    from edge_runtime.config import load_pipeline_config

    for name in SHIPPED_PIPELINES:
        cfg = load_pipeline_config(str(ROOT / "configs" / "pipelines" / f"{name}.toml"))
        idx = [i for i, n in enumerate(cfg.nodes) if n.get("model") == model]
        if not idx:
            continue
        outs = []
        for label in (fp32_label, int8_label):
            for i in idx:
                cfg.nodes[i] = {**cfg.nodes[i], "variant": label}
            pipe = cfg.build()
            outs.append(pipe.process_array(_synth(cfg.sample_rate, seconds, 1)).astype(np.float64))
        ref, x = outs
        err = float(np.sum((ref - x) ** 2))
        return name, (10 * np.log10(float(np.sum(ref ** 2)) / err) if err > 0 else float("inf"))
    return None, None


@pytest.mark.parametrize("platform", platform_params())
def test_int8_vs_fp32(platform, hw_platform, device_info, hw_report, request):
    rows = [r for r in measure_variants(platform, device_info, request.config.getoption("--hw-runs"))
            if not r.get("error")]
    models = {m.name: m for m in _models()}
    pairs = 0
    for r in rows:
        if not r["precision"].startswith("int8"):
            continue
        ref = [x for x in rows if x["model"] == r["model"] and x["backend"] == r["backend"]
               and x["format"] == r["format"] and x["precision"] == "fp32"]
        if not ref:
            continue
        f = ref[0]
        diff = _output_diff(f, r, device_settings(platform, device_info)["devices"])
        label = lambda x: f"{x['format']}/{x['precision']}@{x['backend']}"  # noqa: E731
        pipe_name, snr = _pipeline_snr(r["model"], label(f), label(r))
        m = models[r["model"]]
        q_i, q_f = None, None
        for v in m.variants:
            if v.alternative:   # e.g. Silero VAD: another model, not this one's FP32 reference
                continue
            if v.format == r["format"] and v.precision == r["precision"]:
                q_i = m.metric(v)
            if v.format == r["format"] and v.precision == "fp32":
                q_f = m.metric(v)
        row = {"platform": platform, "model": r["model"], "backend": r["backend"],
               "variant": f"{r['format']}/{r['precision']}", "fp32_median_us": f["median_us"],
               "int8_median_us": r["median_us"], "fp32_p99_us": f["p99_us"], "int8_p99_us": r["p99_us"],
               "speedup": f["median_us"] / r["median_us"],
               "size_ratio": (r["size_kb"] / f["size_kb"]) if r.get("size_kb") and f.get("size_kb") else None,
               "max_abs_diff": diff, "pipeline": pipe_name, "pipeline_snr_db": snr, "metric": q_i[0] if q_i else None,
               "quality_int8": q_i[1] if q_i else None, "quality_fp32": q_f[1] if q_f else None}
        hw_report.add("int8_vs_fp32", row)
        pairs += 1
        assert diff is None or all(np.isfinite(v) for v in diff.values())
        if snr is not None:
            # reported, not judged: the quality bar is the manifest's metric; > 0 dB only says the INT8
            # output is nearer FP32's than silence is (a broken variant would not be)
            assert snr > 0.0, row
        if row["size_ratio"] is not None:
            assert row["size_ratio"] < 0.6, row          # INT8 weights: well under FP32's size
    assert pairs, "no INT8/FP32 pair measured on this platform's backends"

"""Hardware benchmarks by marker: ``python -m pytest hw_tests -m x86`` (or rpi, jetson, intel_npu).

Every test is parametrized over the four platforms, each parameter carrying its platform marker
and ``benchmark``; a platform's tests skip themselves unless the profiler
(:func:`edge_runtime.models.profiler.describe_device`) detects that hardware. ``-m x86`` replaces
the default ``-m 'not slow and not benchmark and not train'`` of pyproject's addopts, so it
selects them; a plain ``python -m pytest`` collects only ``tests/`` (testpaths) and, given
``hw_tests`` without ``-m``, deselects them all (they are ``benchmark``).

At the end of the session the measurements are written as JSON and Markdown to
``--hw-report-dir`` (default ``$EDGE_RUNTIME_HW_REPORTS``, else ``hw_tests/reports/``) and the
paths are printed. ``--hw-runs`` / ``--hw-seconds`` size the measurements.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform as _platform
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

#: marker -> (device profile names it covers, the device profile whose backends/devices it uses)
PLATFORMS = {
    "x86": (("generic-x86", "intel-npu"), "generic-x86"),
    "rpi": (("rpi4", "rpi5"), None),            # None: the detected device's own profile
    "jetson": (("jetson-orin-nano",), "jetson-orin-nano"),
    "intel_npu": (("intel-npu",), "intel-npu"),
}


def platform_params():
    return [pytest.param(m, marks=[getattr(pytest.mark, m), pytest.mark.benchmark], id=m) for m in PLATFORMS]


def pytest_addoption(parser):
    g = parser.getgroup("edge_runtime hardware benchmarks")
    g.addoption("--hw-report-dir", default=os.environ.get("EDGE_RUNTIME_HW_REPORTS") or str(HERE / "reports"),
                help="where the JSON and Markdown reports go (default hw_tests/reports)")
    g.addoption("--hw-runs", type=int, default=300, help="timed calls per model variant (default 300)")
    g.addoption("--hw-seconds", type=float, default=20.0, help="seconds of audio per pipeline run (default 20)")
    g.addoption("--soak-seconds", type=float, default=3600.0, help="length of the soak (-m soak; default 3600)")
    g.addoption("--soak-pipelines", default="", help="comma-separated pipelines for the soak (default: every shipped one)")
    g.addoption("--soak-rt-priority", type=int, default=0,
                help="run the soak's services under SCHED_FIFO at this priority (as install-service --rt-priority)")
    g.addoption("--soak-rss-slope", type=float, default=0.5,
                help="largest heap (RssAnon) growth over the soak's second half the bar accepts, MB per hour "
                     "(default 0.5)")
    g.addoption("--hw-live-seconds", type=float, default=3.0,
                help="seconds of each pipeline run paced like a live device (default 3; 0 = skip)")


class Report:
    def __init__(self, config):
        self.config = config
        self.sections: dict[str, list] = {}
        self.meta: dict = {}
        self.paths: list[Path] = []

    def add(self, section: str, row: dict) -> None:
        self.sections.setdefault(section, []).append(row)


@pytest.fixture(scope="session")
def hw_report(request):
    return request.config._hw_report


def pytest_configure(config):
    config._hw_report = Report(config)


@pytest.fixture(scope="session")
def device_info():
    from edge_runtime.models.profiler import describe_device

    return describe_device()


@pytest.fixture
def hw_platform(request, device_info, hw_report):
    """The platform under test (the parameter); skips unless this machine is one."""
    marker = request.param if hasattr(request, "param") else request.node.callspec.params["platform"]
    names, _ = PLATFORMS[marker]
    if device_info["name"] not in names:
        pytest.skip(f"{marker}: this machine is {device_info['name']} ({device_info['reason']}), not "
                    f"{' or '.join(names)}")
    hw_report.meta.setdefault("platforms", [])
    if marker not in hw_report.meta["platforms"]:
        hw_report.meta["platforms"].append(marker)
    return marker


def device_settings(marker: str, device_info) -> dict:
    """Backends, their devices and threads for ``marker`` from the shipped device profiles."""
    from edge_runtime.models.profiler import load_device_defaults

    prof = PLATFORMS[marker][1] or device_info["name"]
    d = load_device_defaults(prof)
    backends = list(d["backends"])
    devices = dict(d["devices"])
    if marker == "intel_npu":
        backends = ["openvino"]                 # the NPU suite measures what runs on the NPU
    return {"profile": prof, "backends": backends, "devices": devices, "threads": int(d["threads"])}


def _fmt(v, spec="{:.1f}"):
    if v is None:
        return "-"
    if isinstance(v, float):
        return spec.format(v)
    return str(v)


def _markdown(meta: dict, sections: dict) -> str:
    dev = meta["device"]
    out = [f"# edge_runtime hardware report: {', '.join(meta.get('platforms', []))}", "",
           f"- device profile: **{dev['name']}** ({dev['reason']})",
           f"- CPU: {dev.get('cpu')} [{dev.get('machine')}], {dev.get('cores')} cores usable, "
           f"INT8 flags: {' '.join(dev.get('int8_flags') or []) or 'none'}; memory {dev.get('memory_mb')} MB",
           f"- Python {meta['python']}, NumPy {meta['numpy']}, backends: "
           + ", ".join(f"{k} {v}" for k, v in (dev.get("backends") or {}).items() if v),
           f"- when: {meta['finished']}; command: `{meta['command']}`", ""]
    rows = sections.get("models")
    if rows:
        out += ["## Model variants (fresh process each: cold load, RSS added while running, one call)", "",
                "| model | variant | backend | device | size KB | load ms | median µs | p99 µs | RSS MB | error |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['model']} | {r['format']}/{r['precision']} | {r['backend']} | {r.get('device') or '-'} | "
                       f"{_fmt(r.get('size_kb'), '{:.0f}')} | {_fmt(r.get('load_ms'))} | {_fmt(r.get('median_us'))} | "
                       f"{_fmt(r.get('p99_us'))} | {_fmt(r.get('rss_mb'))} | {r.get('error') or ''} |")
        out.append("")
    rows = sections.get("pipelines")
    if rows:
        out += ["## Shipped pipelines (block loop in this process, synthetic speech-band audio)", "",
                "| pipeline | rate | block | ch | audio s | engine RTF | wall RTF | CPU share of one core | "
                "block p50 µs | p99 µs | max µs | deadline misses | models |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['pipeline']} | {r['sample_rate']} | {r['block_size']} | {r['channels']} | "
                       f"{r['audio_s']:.0f} | {r['engine_rtf']:.4f} | {r['wall_rtf']:.4f} | {r['cpu_share'] * 100:.2f}% | "
                       f"{r['block_us_p50']:.1f} | {r['block_us_p99']:.1f} | {r['block_us_max']:.1f} | "
                       f"{r['deadline_misses']}/{r['blocks']} | {', '.join(r['models']) or '-'} |")
        out.append("")
        live = [r for r in rows if "live_engine_rtf" in r]
        if live:
            out += ["Paced like a live device (one block per block duration, idle in between):", "",
                    "| pipeline | ch | audio s | engine RTF | CPU share of one core | block p50 µs | p99 µs | "
                    "deadline misses |", "|---|---|---|---|---|---|---|---|"]
            for r in live:
                out.append(f"| {r['pipeline']} | {r['channels']} | {r['live_audio_s']:.0f} | {r['live_engine_rtf']:.4f} | "
                           f"{r['live_cpu_share'] * 100:.2f}% | {r['live_block_us_p50']:.1f} | {r['live_block_us_p99']:.1f} | "
                           f"{r['live_deadline_misses']} |")
            out.append("")
    rows = sections.get("int8_vs_fp32")
    if rows:
        out += ["## INT8 vs FP32 (same backend, same inputs)", "",
                "| model | backend | int8 variant | fp32 median µs | int8 median µs | speed-up | size ratio | "
                "max abs output diff (random inputs) | pipeline output SNR vs FP32 | quality (manifest) fp32 → int8 |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            diff = ", ".join(f"{k} {v:.2e}" for k, v in (r.get("max_abs_diff") or {}).items()) or "-"
            snr = f"{r['pipeline']}: {r['pipeline_snr_db']:.1f} dB" if r.get("pipeline_snr_db") is not None else "-"
            q = (f"{r['metric']}: {r['quality_fp32']:.3f} → {r['quality_int8']:.3f}" if r.get("quality_int8") is not None
                 else "-")
            out.append(f"| {r['model']} | {r['backend']} | {r['variant']} | {_fmt(r['fp32_median_us'])} | "
                       f"{_fmt(r['int8_median_us'])} | {_fmt(r['speedup'], '{:.2f}x')} | {_fmt(r['size_ratio'], '{:.2f}')} | "
                       f"{diff} | {snr} | {q} |")
        out.append("")
    return "\n".join(out)


def pytest_sessionfinish(session, exitstatus):
    rep: Report = session.config._hw_report
    if not rep.sections:
        return
    from edge_runtime.atomic import AtomicFile
    from edge_runtime.models.profiler import describe_device
    import numpy as np

    now = _dt.datetime.now(_dt.timezone.utc)
    dev = describe_device()
    meta = {"device": dev, "python": _platform.python_version(), "numpy": np.__version__,
            "finished": now.isoformat(timespec="seconds"), "command": " ".join(["python -m pytest", *sys.argv[1:]]),
            "settings": {"runs": session.config.getoption("--hw-runs"),
                         "seconds": session.config.getoption("--hw-seconds"),
                         "live_seconds": session.config.getoption("--hw-live-seconds")}, **rep.meta}
    out_dir = Path(session.config.getoption("--hw-report-dir"))
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"hw-{'-'.join(rep.meta.get('platforms', ['none']))}-{dev['name']}-{now.strftime('%Y%m%d-%H%M%S')}"
    jpath, mpath = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    with AtomicFile(str(jpath), "w") as f:
        json.dump({"meta": meta, **rep.sections}, f, indent=1, default=str)
    with AtomicFile(str(mpath), "w") as f:
        f.write(_markdown(meta, rep.sections))
    rep.paths = [jpath, mpath]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rep: Report = config._hw_report
    for p in rep.paths:
        terminalreporter.write_line(f"hardware report: {p}")

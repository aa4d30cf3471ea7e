"""``python -m pytest hw_tests -m soak``: the soak of :mod:`hw_tests.soak` (an hour by default,
``--soak-seconds``), every shipped pipeline through ``serve`` at real time, with its bar: every
frame out, no deadline miss, RSS flat, no descriptor growth, no MQTT event lost. Not in the
default run (``soak`` and ``benchmark`` markers). The reports go to ``--hw-report-dir``."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

import soak as soak_mod


@pytest.mark.soak
@pytest.mark.benchmark
def test_soak_every_shipped_pipeline_through_serve(request):
    cfg = request.config
    seconds = cfg.getoption("--soak-seconds")
    only = [s for s in cfg.getoption("--soak-pipelines").split(",") if s] or None
    out = Path(cfg.getoption("--hw-report-dir"))
    r = soak_mod.run_soak(seconds, out, sample_s=min(10.0, seconds / 20), only=only,
                          rt_priority=cfg.getoption("--soak-rt-priority"))
    stem = out / ("soak-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    stem.with_suffix(".json").write_text(json.dumps(r, indent=1))
    stem.with_suffix(".md").write_text(soak_mod.markdown(r))
    print(f"\n{soak_mod.markdown(r)}\nreports: {stem}.json {stem}.md")
    bad = []
    for x in r["pipelines"]:
        if x["exit_code"] != 0 or x["failed"]:
            bad.append(f"{x['pipeline']}: exit {x['exit_code']} {x['failed']}")
        if not x["frames_ok"]:
            bad.append(f"{x['pipeline']}: frames in {x['frames_in']}, out {x['frames_out_files']} "
                       f"(expected {x['frames_out_expected']})")
        if x["deadline_misses"]:
            bad.append(f"{x['pipeline']}: {x['deadline_misses']} deadline misses")
        # the heap (what a leak grows), over the second half: a one-off step of the allocator is not a leak
        per_h = x["anon_second_half_mb_per_h"]
        if per_h > cfg.getoption("--soak-rss-slope"):
            bad.append(f"{x['pipeline']}: heap (RssAnon) grew {x['anon_mb_second_half']:+.2f} MB in the second "
                       f"half ({per_h:+.2f} MB/h; whole run {x['anon_slope_mb_per_h']:+.2f} MB/h)")
        if x["fds_max"] is not None and x["fds_max"] - x["fds_min"] > 2:
            bad.append(f"{x['pipeline']}: open descriptors {x['fds_min']}..{x['fds_max']}")
    if r["mqtt"] and r["mqtt"]["lost"]:
        bad.append(f"MQTT: {r['mqtt']['lost']} events lost")
    assert not bad, "\n".join(bad)

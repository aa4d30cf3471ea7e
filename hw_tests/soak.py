"""Soak: every shipped pipeline through one ``edge-runtime serve`` process for an hour.

``python hw_tests/soak.py --seconds 3600`` (or ``python -m pytest hw_tests -m soak``) builds a
programme of real recordings (the repository's speech, noise, music, keyboard, machine, alarm and
water fixtures, each placed with its own gain between pauses with a low noise floor) at 8, 16 and
48 kHz, writes a service config that runs every shipped pipeline from it at real time
(``pace = true``, as a capture device would deliver it), with a file output in 10-minute segments,
an events file per pipeline and, when Mosquitto and paho-mqtt are installed, every event to a
broker started on 127.0.0.1. While it runs, every ``--sample-s`` seconds it samples the service
process (RSS, CPU time, open file descriptors, threads from ``/proc``) and each pipeline's
``/status`` (blocks, deadline misses, block p99/max, real-time factor). The service ends by
itself when every input has ended; the report then checks frames out == frames in per pipeline
and gives:

* per pipeline: audio seconds, blocks, deadline misses, RTF, block p99 / max, events;
* for the process: RSS after the warm-up and at the end, its slope (least squares over the samples
  after the warm-up, MB per hour), CPU share of one core, file descriptors and threads min / max;
* MQTT: events written by the service, delivered to the subscriber, lost.

The bar (issue 27): the heap flat (its growth over the second half of the run, scaled to an hour,
under pytest's ``--soak-rss-slope``; the slopes over the whole run are reported beside it), no
deadline miss, the same
descriptors at the end as after the warm-up, every frame out. Reports go to ``--out`` as JSON and
Markdown. Pipelines that ``serve`` cannot run (a staged file pipeline such as ``restore``) are
listed with the reason.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

FIXTURES = [ROOT / "tests" / "fixtures" / "audio", ROOT / "edge_runtime" / "_demo"]
CLK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_programme(path: Path, sample_rate: int, seconds: float, seed: int = 27) -> int:
    """A WAV (int16, mono) of ``seconds`` of the fixture recordings in a random order, each at its own
    gain (-12..+3 dB) after a pause of 0.3-3 s; a -70 dBFS noise floor throughout. Written in
    pieces, so memory stays small. Returns the frame count."""
    import soundfile as sf
    import soxr

    clips = []
    for d in FIXTURES:
        for f in sorted(d.glob("*.flac")):
            x, sr = sf.read(str(f), dtype="float32", always_2d=True)
            x = x.mean(axis=1)
            if sr != sample_rate:
                x = soxr.resample(x, sr, sample_rate).astype(np.float32)
            clips.append(x / max(1e-6, float(np.max(np.abs(x)))) * 0.7)
    rng = np.random.default_rng(seed)
    total = int(round(seconds * sample_rate))
    done = 0
    with sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as out:
        while done < total:
            pause = np.zeros(int(rng.uniform(0.3, 3.0) * sample_rate), np.float32)
            clip = clips[rng.integers(len(clips))] * np.float32(10 ** (rng.uniform(-12, 3) / 20))
            piece = np.concatenate([pause, clip])[: total - done]
            piece = piece + rng.standard_normal(piece.size).astype(np.float32) * np.float32(10 ** (-70 / 20))
            out.write(np.clip(piece, -1, 1))
            done += piece.size
    return total


def shipped_pipelines() -> dict[str, Path]:
    return {p.stem: p for p in sorted((ROOT / "configs" / "pipelines").glob("*.toml"))}


def servable(name: str, path: Path) -> tuple[int, str]:
    """The rate ``serve`` runs this pipeline at (an ``"input"``-rate one at 16 kHz), or 0 and why it
    cannot run it (it builds it the way the service does)."""
    from edge_runtime.config import load_pipeline

    try:
        return load_pipeline(str(path), 16000).sample_rate, ""
    except Exception as e:  # the reason goes into the report
        return 0, str(e).splitlines()[0]


def _proc_sample(pid: int) -> dict:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / CLK      # utime + stime
    kb = {"VmRSS:": 0, "RssAnon:": 0, "RssFile:": 0}
    threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in kb:
                kb[parts[0]] = int(parts[1])
            elif parts and parts[0] == "Threads:":
                threads = int(parts[1])
    # RssAnon is the heap (what a leak grows); RssFile is mapped code and model pages, which grow as
    # rarely run paths are first touched and are bounded by the files' size
    return {"cpu_s": cpu_s, "rss_mb": kb["VmRSS:"] / 1024, "anon_mb": kb["RssAnon:"] / 1024,
            "file_mb": kb["RssFile:"] / 1024, "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": threads}


class _Mqtt:
    """Mosquitto on a free 127.0.0.1 port and a persistent QoS 1 subscriber counting events by seq."""

    def __init__(self, tmp: Path):
        import paho.mqtt.client as paho

        self.port = _free_port()
        conf = tmp / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "log_dest none", "allow_anonymous true"]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([shutil.which("mosquitto"), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > end:
                    raise RuntimeError("mosquitto did not start")
                time.sleep(0.05)
        self.seqs: set[tuple[str, int]] = set()    # (pipeline, seq): each service numbers its own
        self.received = 0
        c = self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="edge_runtime-soak", clean_session=False)
        c.on_connect = lambda cl, u, f, rc, p=None: cl.subscribe("edge_runtime/soak/+/events", qos=1)
        c.on_message = self._on
        c.connect("127.0.0.1", self.port)
        c.loop_start()

    def _on(self, cl, u, m):
        try:
            ev = json.loads(m.payload)
            self.seqs.add((str(ev["pipeline"]), int(ev["seq"])))
            self.received += 1
        except (ValueError, KeyError, TypeError):
            pass

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()
        self.proc.terminate()
        self.proc.wait(10)


def _status(port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def _slope_per_hour(t: list[float], y: list[float]) -> float:
    if len(t) < 3:
        return 0.0
    return float(np.polyfit(np.asarray(t) / 3600.0, np.asarray(y), 1)[0])


def _second_half_growth(steady: list[dict]) -> tuple[float, float]:
    """Heap (RssAnon) growth over the second half of the steady samples: MB, and MB per hour of
    the span those samples cover."""
    if len(steady) < 4:
        return 0.0, 0.0
    mid = steady[0]["t"] + (steady[-1]["t"] - steady[0]["t"]) / 2
    half = [x for x in steady if x["t"] >= mid]
    mb = half[-1]["anon_mb"] - half[0]["anon_mb"]
    span_h = (half[-1]["t"] - half[0]["t"]) / 3600.0
    return mb, (mb / span_h if span_h > 0 else 0.0)


def run_soak(seconds: float, out: Path, sample_s: float = 10.0, warmup_s: float | None = None,
             only: list[str] | None = None, mqtt: bool | None = None, rt_priority: int = 0, log=print) -> dict:
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="soak-", dir=out))
    warmup_s = min(360.0, seconds / 4) if warmup_s is None else warmup_s   # machine_watch learns 300 s
    pipes = shipped_pipelines()
    if only:
        pipes = {k: v for k, v in pipes.items() if k in only}
    skipped, runnable, inputs = {}, {}, {}
    for name, path in pipes.items():
        sr, why = servable(name, path)
        if not sr:
            skipped[name] = why
            continue
        runnable[name] = path
        inputs[name] = 8000 if name == "bwe16k" else sr      # bwe16k extends telephone-band input
    log(f"soak: {len(runnable)} pipelines for {seconds:.0f} s; not servable: {sorted(skipped)}")
    files = {}
    for sr in sorted(set(inputs.values())):
        f = work / f"programme_{sr}.wav"
        t0 = time.monotonic()
        files[sr] = (f, write_programme(f, sr, seconds))
        log(f"soak: wrote {f.name} ({seconds:.0f} s) in {time.monotonic() - t0:.1f} s")

    use_mqtt = mqtt if mqtt is not None else bool(shutil.which("mosquitto"))
    broker = None
    if use_mqtt:
        try:
            broker = _Mqtt(work)
        except (ImportError, RuntimeError, OSError) as e:
            log(f"soak: no MQTT ({e})")
    # one service per pipeline, as a device runs the one or two it needs: each has its own process,
    # GIL, state folder, metrics port and MQTT session; together they load the machine the way the
    # sum of the pipelines does
    procs: dict[str, dict] = {}
    for name, path in runnable.items():
        d = work / name
        d.mkdir()
        f, _ = files[inputs[name]]
        port = _free_port()
        lines = ["[service]", f'metrics = "127.0.0.1:{port}"']
        if broker is not None:
            lines += [f'mqtt = "mqtt://127.0.0.1:{broker.port}"', 'mqtt_prefix = "edge_runtime/soak"',
                      f'mqtt_client_id = "edge_runtime-soak-{name}"', "mqtt_metrics_s = 60"]
        lines += ["", "[[pipelines]]", f'name = "{name}"', f'pipeline = "{path}"', f'input = "{f}"',
                  f'output = "{d / "out.wav"}"', "segment_s = 600", f'events = "{d / "events.jsonl"}"', "pace = true"]
        (d / "service.toml").write_text("\n".join(lines) + "\n")
        env = dict(os.environ, PYTHONUNBUFFERED="1", EDGE_RUNTIME_STATE=str(d / "state"))
        env.pop("EDGE_RUNTIME_PIPELINES", None)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        logf = open(d / "serve.log", "wb")
        # --rt-priority: SCHED_FIFO for the whole service, as `install-service --rt-priority N` sets it
        # in the unit (CPUSchedulingPolicy=fifo): other work on the device then cannot delay a block
        chrt = ["chrt", "-f", str(rt_priority)] if rt_priority else []
        pr = subprocess.Popen(chrt + [sys.executable, "-m", "edge_runtime", "serve", "--config", str(d / "service.toml")],
                              stdout=logf, stderr=subprocess.STDOUT, env=env)
        procs[name] = {"proc": pr, "log": logf, "port": port, "dir": d, "samples": [], "last": None, "gc": None}
    t_start = time.monotonic()
    try:
        while any(p["proc"].poll() is None for p in procs.values()):
            time.sleep(sample_s)
            t = time.monotonic() - t_start
            for name, p in procs.items():
                if p["proc"].poll() is not None:
                    continue
                st = _status(p["port"])
                try:
                    smp = _proc_sample(p["proc"].pid)
                except (FileNotFoundError, ProcessLookupError):
                    continue
                smp["t"] = t
                if st is not None and st.get("pipelines"):
                    q = st["pipelines"][0]
                    p["last"] = q
                    smp["running"] = q["state"] == "running"
                    smp["misses"] = q["deadline_misses"]
                    p["gc"] = st.get("python_gc")
                p["samples"].append(smp)
            if int(t / sample_s) % max(1, int(300 / sample_s)) == 0:
                rss = sum(p["samples"][-1]["rss_mb"] for p in procs.values() if p["samples"])
                log(f"soak: t={t:.0f} s, {sum(p['proc'].poll() is None for p in procs.values())} services up, "
                    f"RSS total {rss:.0f} MB, misses {sum((p['last'] or {}).get('deadline_misses', 0) for p in procs.values())}")
        for p in procs.values():
            p["rc"] = p["proc"].wait(timeout=60)
    except BaseException:
        for p in procs.values():
            if p["proc"].poll() is None:
                p["proc"].send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p["proc"].wait(60)
            except subprocess.TimeoutExpired:
                p["proc"].kill()
        raise
    finally:
        for p in procs.values():
            p["log"].close()
    wall = time.monotonic() - t_start
    time.sleep(2.0)                               # the subscriber's last deliveries

    rows = []
    for name, p in procs.items():
        d = p["dir"]
        f, n_in = files[inputs[name]]
        log_lines = [json.loads(x) for x in (d / "serve.log").read_text(errors="replace").splitlines()
                     if x.startswith("{")]
        e = next((r for r in log_lines if r.get("event") == "pipeline_end"), {})
        failed = [r.get("msg") for r in log_lines if r.get("event") == "pipeline_failed"]
        outs = sorted(d.glob("out*.wav"))
        frames_out = sum(sf.info(str(o)).frames for o in outs)
        out_rate = sf.info(str(outs[0])).samplerate if outs else 0
        expect_out = int(round(n_in * out_rate / inputs[name])) if out_rate else 0
        ev_file = d / "events.jsonl"
        n_events = sum(1 for _ in open(ev_file)) if ev_file.exists() else 0
        q = p["last"] or {}
        # steady state: samples after the warm-up while the pipeline was running (not its tear-down)
        steady = [x for x in p["samples"] if x["t"] >= warmup_s and x.get("running")]
        sm = p["samples"]
        ts = [x["t"] for x in steady]
        half_mb, half_per_h = _second_half_growth(steady)
        rows.append({
            "pipeline": name, "input_rate": inputs[name], "audio_s": n_in / inputs[name], "exit_code": p["rc"],
            "blocks": q.get("blocks"), "deadline_misses": q.get("deadline_misses"),
            "rtf": q.get("realtime_factor"), "block_ms_p99": q.get("block_ms_p99"), "block_ms_max": q.get("block_ms_max"),
            "budget_ms": q.get("budget_ms"), "events": n_events, "segments": len(outs), "failed": failed,
            "frames_in": e.get("frames_in"), "frames_out_files": frames_out, "frames_out_expected": expect_out,
            "frames_ok": frames_out == expect_out and e.get("frames_in") == n_in,
            "cpu_share": ((sm[-1]["cpu_s"] - sm[0]["cpu_s"]) / (sm[-1]["t"] - sm[0]["t"]) if len(sm) > 1 else 0.0),
            "rss_mb_after_warmup": steady[0]["rss_mb"] if steady else None,
            "rss_mb_end": steady[-1]["rss_mb"] if steady else None,
            "rss_mb_max": max(x["rss_mb"] for x in sm) if sm else None,
            "rss_slope_mb_per_h": _slope_per_hour(ts, [x["rss_mb"] for x in steady]),
            "anon_mb_after_warmup": steady[0]["anon_mb"] if steady else None,
            "anon_mb_end": steady[-1]["anon_mb"] if steady else None,
            "anon_slope_mb_per_h": _slope_per_hour(ts, [x["anon_mb"] for x in steady]),
            "file_slope_mb_per_h": _slope_per_hour(ts, [x["file_mb"] for x in steady]),
            # a leak keeps growing; the allocator's heap steps up once (the first run: +1.84 MB in each
            # model pipeline, once, at a different time in each) and stays: the second half tells them apart
            "anon_mb_second_half": half_mb,
            "anon_second_half_mb_per_h": half_per_h,
            "python_gc": p.get("gc"),
            "fds_min": min(x["fds"] for x in steady) if steady else None,
            "fds_max": max(x["fds"] for x in steady) if steady else None,
            "threads_max": max(x["threads"] for x in steady) if steady else None,
            "series": [[round(x["t"], 1), round(x["rss_mb"], 2), round(x["anon_mb"], 2), x["fds"], x.get("misses")]
                       for x in sm]})
    proc_row = {"services": len(procs), "wall_s": wall, "warmup_s": warmup_s, "rt_priority": rt_priority,
                "cpu_share_total": sum(r["cpu_share"] for r in rows),
                "rss_mb_total_end": sum(r["rss_mb_end"] or 0 for r in rows),
                "deadline_misses": sum(r["deadline_misses"] or 0 for r in rows),
                "blocks": sum(r["blocks"] or 0 for r in rows)}
    mq = None
    if broker is not None:
        written = sum(r["events"] for r in rows)
        mq = {"events_written": written, "received": broker.received, "distinct": len(broker.seqs),
              "lost": written - len(broker.seqs), "repeats": broker.received - len(broker.seqs)}
        broker.close()
    report = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "seconds": seconds,
              "host": os.uname().nodename, "cpus": os.cpu_count(), "process": proc_row, "pipelines": rows,
              "not_servable": skipped, "mqtt": mq, "work_dir": str(work)}
    return report


def _gc_cell(g) -> str:
    if not g:
        return "-"
    return f"{g['collections'][2]}, {g['max_ms'][2]:.1f}"


def markdown(r: dict) -> str:
    p = r["process"]
    rt = p.get("rt_priority") or 0
    cmd = f"python hw_tests/soak.py --seconds {r['seconds']:.0f}" + (f" --rt-priority {rt}" if rt else "")
    names = ",".join(x["pipeline"] for x in r["pipelines"])
    out = [f"# Soak: shipped pipelines through `serve` for {r['seconds']:.0f} s", "",
           f"{r['date']}, {r['host']}, {r['cpus']} CPUs; one `serve` process per pipeline, all at once, inputs "
           f"paced at real time; " + (f"each service under SCHED_FIFO {rt} (as `install-service --rt-priority {rt}`)"
                                      if rt else "normal scheduling") + f". Command: `{cmd} --pipelines {names}`.", "",
           "| pipeline | in rate | audio s | blocks | deadline misses | RTF | block p99 / max ms (budget) | CPU of one core "
           "| RSS after warm-up / end MB | RSS slope MB/h | heap (RssAnon) after warm-up / end MB | heap slope MB/h | heap growth, 2nd half MB "
           "| full GCs, longest ms | fds min/max | events | segments | frames out == in | exit |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    f2 = lambda v, k=2: "-" if v is None else f"{v:.{k}f}"  # noqa: E731
    for x in r["pipelines"]:
        out.append(f"| {x['pipeline']} | {x['input_rate']} | {x['audio_s']:.0f} | {x['blocks']} | {x['deadline_misses']} | "
                   f"{f2(x['rtf'], 4)} | {f2(x['block_ms_p99'], 3)} / {f2(x['block_ms_max'])} ({f2(x['budget_ms'], 0)}) | "
                   f"{100 * x['cpu_share']:.1f} % | {f2(x['rss_mb_after_warmup'], 1)} / {f2(x['rss_mb_end'], 1)} | "
                   f"{x['rss_slope_mb_per_h']:+.2f} | {f2(x.get('anon_mb_after_warmup'), 1)} / {f2(x.get('anon_mb_end'), 1)} | "
                   f"{x.get('anon_slope_mb_per_h', 0.0):+.2f} | {x.get('anon_mb_second_half', 0.0):+.2f} | "
                   f"{_gc_cell(x.get('python_gc'))} | "
                   f"{x['fds_min']}/{x['fds_max']} | {x['events']} | {x['segments']} | "
                   f"{'yes' if x['frames_ok'] else 'NO'} | {x['exit_code']} |")
    out += ["", f"All services: {p['services']} processes, {p['blocks']} blocks, {p['deadline_misses']} deadline misses, "
            f"CPU {100 * p['cpu_share_total']:.1f} % of one core in all, RSS {p['rss_mb_total_end']:.0f} MB in all at the end, "
            f"wall {p['wall_s']:.0f} s; the slopes are fitted over the samples after {p['warmup_s']:.0f} s. The heap "
            "(RssAnon) is what a leak grows; the rest of RSS is mapped code and model pages, touched once."]
    if r.get("mqtt"):
        m = r["mqtt"]
        out += ["", f"MQTT (Mosquitto on 127.0.0.1, QoS 1): {m['events_written']} events written to the events files, "
                f"{m['distinct']} distinct delivered ({m['received']} messages, {m['repeats']} repeats), {m['lost']} lost."]
    failed = [f"- `{x['pipeline']}`: {x['failed']}" for x in r["pipelines"] if x["failed"]]
    if failed:
        out += ["", "Failed:"] + failed
    if r["not_servable"]:
        out += ["", "Not run by `serve`:"] + [f"- `{k}`: {v}" for k, v in r["not_servable"].items()]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3600.0, help="length of the run (default 3600)")
    ap.add_argument("--sample-s", type=float, default=10.0, help="sampling interval (default 10 s)")
    ap.add_argument("--warmup-s", type=float, default=None, help="start of the RSS slope (default min(360, seconds/4))")
    ap.add_argument("--pipelines", default="", help="comma-separated subset (default: every shipped pipeline)")
    ap.add_argument("--rt-priority", type=int, default=0,
                    help="run each service under SCHED_FIFO at this priority (chrt; as install-service --rt-priority)")
    ap.add_argument("--no-mqtt", action="store_true", help="do not start a broker even if mosquitto is installed")
    ap.add_argument("--out", type=Path, default=HERE / "reports", help="report folder (default hw_tests/reports)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (programme, outputs, log)")
    a = ap.parse_args(argv)
    r = run_soak(a.seconds, a.out, a.sample_s, a.warmup_s, [s for s in a.pipelines.split(",") if s] or None,
                 mqtt=False if a.no_mqtt else None, rt_priority=a.rt_priority)
    stem = a.out / ("soak-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    stem.with_suffix(".json").write_text(json.dumps(r, indent=1))
    stem.with_suffix(".md").write_text(markdown(r))
    if not a.keep:
        shutil.rmtree(r["work_dir"], ignore_errors=True)
    print(markdown(r))
    print(f"reports: {stem}.json {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

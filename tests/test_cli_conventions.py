"""Issue 29's CLI conventions and first-use behaviour: help and examples everywhere, one meaning
per short option, global logging options, exit codes per error class, completion and man page
from the parser, progress, Ctrl-C on a live run, band-loss warning, events in time order."""
import argparse
import datetime
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import write_wav
from edge_runtime import cli as cli_mod
from edge_runtime import errors
from edge_runtime.cliutil import walk

ROOT = Path(__file__).resolve().parents[1]


def _commands():
    return [(path, p) for path, p in walk(cli_mod.build_parser()) if path]


def _options(p):
    return [a for a in p._actions if not isinstance(a, argparse._SubParsersAction)]


def test_every_option_has_help_and_every_subcommand_an_example_epilog():
    missing, no_epilog = [], []
    for path, p in [((), cli_mod.build_parser())] + _commands():
        for a in _options(p):
            if a.help is None or (a.help != argparse.SUPPRESS and not a.help.strip()):
                missing.append((" ".join(path), a.option_strings or a.dest))
        if path and "examples:\n  edge-runtime " not in (p.epilog or "") and "examples:\n  " not in (p.epilog or ""):
            no_epilog.append(" ".join(path))
    assert not missing, f"options without help: {missing}"
    assert not no_epilog, f"subcommands without an example epilog: {no_epilog}"
    assert len(_commands()) >= 20


def test_short_options_mean_one_thing_everywhere():
    meaning = {"-o": {"output"}, "-i": {"input"}, "-s": {"state"}, "-c": {"config"}, "-u": {"user"},
               "-v": {"verbose"}, "-q": {"quiet"}, "-h": {"help"}, "-j": {"jobs"}}
    seen = {}
    for path, p in _commands():
        for a in _options(p):
            if a.help == argparse.SUPPRESS:
                continue       # hidden deprecated spellings
            for s in a.option_strings:
                if len(s) == 2:
                    seen.setdefault(s, set()).add(a.dest)
    assert set(seen) <= set(meaning), f"undocumented short options: {set(seen) - set(meaning)}"
    for s, dests in seen.items():
        assert dests == meaning[s], f"{s} means {dests}"


def test_old_spellings_still_work_and_say_what_replaced_them(capsys):
    p = cli_mod.build_parser()
    a = p.parse_args(["anomaly", "learn", "-i", "x.wav", "-o", "x.state", "--sample-rate", "8000",
                      "--false_alarms_per_hour", "2"])
    assert (a.state, a.feature_rate, a.false_alarms_per_hour) == ("x.state", 8000, 2.0)
    err = capsys.readouterr().err
    assert "-o is deprecated; use --state/-s" in err and "--sample-rate is deprecated; use --feature-rate" in err
    a = p.parse_args(["personalize", "recommend", "-u", "ana", "-c", "class=speech"])
    assert a.context == "class=speech"
    a = p.parse_args(["run", "default", "-i", "-", "--sample-rate", "16000"])
    assert a.rate == 16000


@pytest.mark.parametrize("argv", [["-v", "pipelines"], ["pipelines", "-v"], ["pipelines", "--verbose"]])
def test_global_options_before_or_after_the_subcommand(argv):
    assert cli_mod.build_parser().parse_args(argv).verbose == 1


@pytest.mark.parametrize("argv,level", [([], logging.WARNING), (["-v"], logging.INFO), (["-vv"], logging.DEBUG),
                                        (["-q"], logging.ERROR), (["-v", "--log-level", "error"], logging.ERROR)])
def test_log_options_set_the_edge_runtime_logger(argv, level, capsys):
    assert cli_mod.main(["pipelines", "--json"] + argv) == 0
    assert logging.getLogger("edge_runtime").getEffectiveLevel() == level
    logging.getLogger("edge_runtime.test").info("shown at info")
    assert ("shown at info" in capsys.readouterr().err) == (level <= logging.INFO)


@pytest.mark.parametrize("exc,code", [(errors.ConfigError, 2), (errors.AudioInputError, 2), (errors.ModelError, 2),
                                      (errors.AudioOutputError, 2), (errors.AudioDeviceError, 2),
                                      (errors.AudioWriteError, 1), (errors.DeviceFailedError, 1),
                                      (errors.MissingExtraError, 1), (KeyboardInterrupt, 130)])
def test_exit_code_per_error_class(monkeypatch, capsys, exc, code):
    def boom(args):
        raise exc("x.wav: what went wrong") if exc is not KeyboardInterrupt else exc()
    monkeypatch.setattr(cli_mod, "cmd_info", boom)
    assert cli_mod.main(["info"]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("error: x.wav" in err or exc is KeyboardInterrupt)


def test_usage_errors_exit_2_for_real(cli, tmp_path):
    assert cli("run", "default", "--no-such-flag").returncode == 2          # argparse
    r = cli("run", "no_such_pipeline", "-i", tmp_path / "x.wav")
    assert r.returncode == 2 and r.stderr.decode().startswith("error: ")
    (tmp_path / "bad.wav").write_bytes(b"RIFF....not audio")
    r = cli("run", "default", "-i", tmp_path / "bad.wav", "-o", tmp_path / "o.wav")
    assert r.returncode == 2 and r.stderr.decode().count("\n") == 1


def test_a_write_failing_after_start_is_a_runtime_failure(cli, tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    write_wav(tmp_path / "in.wav", np.zeros(48000, np.float32), 48000)
    with open("/dev/full", "wb") as full:
        r = subprocess.run([sys.executable, "-m", "edge_runtime", "run", "default", "-i", str(tmp_path / "in.wav"),
                            "-o", "-"], stdout=full, stderr=subprocess.PIPE, cwd=tmp_path)
    assert r.returncode == 1, r.stderr.decode()
    assert r.stderr.decode().startswith("error: ") and "write failed" in r.stderr.decode()


def test_exit_codes_are_documented_in_the_top_level_help():
    text = cli_mod.build_parser().format_help()
    for code in ("  0 ", "  1 ", "  2 ", "  130 ", "143", "129"):
        assert code in text


def test_bash_and_zsh_completion_mention_every_subcommand(capsys):
    names = {path[0] for path, _ in _commands()} | {path[-1] for path, _ in _commands()}
    for shell in ("bash", "zsh"):
        assert cli_mod.main(["completion", shell]) == 0
        out = capsys.readouterr().out
        assert not [n for n in names if n not in out], shell
        assert "--rate" in out and "--feature-rate" in out


def test_completion_without_shtab_names_the_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "shtab", None)
    assert cli_mod.main(["completion", "bash"]) == 1
    assert "pip install 'edge-runtime[cli]'" in capsys.readouterr().err


def test_man_page_has_every_subcommand_and_its_examples(capsys):
    assert cli_mod.main(["man"]) == 0
    page = capsys.readouterr().out
    assert page.startswith(".TH EDGE\\-RUNTIME 1")
    for path, p in _commands():
        assert ".SH \"" + ("edge-runtime " + " ".join(path)).upper().replace("-", "\\-") + "\"" in page, path
    assert "examples:" in page and "exit status:" in page


def test_progress_shows_rate_and_eta_for_files_and_audio_time_for_live_inputs(capsys):
    t = iter([0.0, 1.0, 2.0])
    p = cli_mod._Progress("in.wav", True, 16000, clock=lambda: next(t))
    p(0, 160000)
    p(32000, 160000)                     # 2 s of audio in 1 s: 2x, 8 s left -> 4 s
    p(160000, 160000)
    err = capsys.readouterr().err
    assert "20.0%" in err and "2.0x real time" in err and "ETA 0:04" in err and "100.0%" in err
    live = cli_mod._Progress("<stdin>", True, 16000, clock=iter([0.0, 2.0]).__next__)
    live(0, None)
    live(160000, None)
    assert "0:10 of audio  5.0x real time" in capsys.readouterr().err
    off = cli_mod._Progress("x", False, 16000)
    off(1, 2)
    assert capsys.readouterr().err == ""


def test_ctrl_c_on_a_live_run_prints_the_summary_and_keeps_the_output(tmp_path):
    out = tmp_path / "out.wav"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "default", "-i", "-", "--rate", "48000",
                          "--channels", "1", "-o", str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    period = np.zeros(4800, "<i2").tobytes()          # 100 ms, as arecord would deliver it
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".out.wav.tmp-*")) and time.monotonic() < deadline:
            p.stdin.write(period)
            p.stdin.flush()
            time.sleep(0.01)
        p.send_signal(signal.SIGINT)
        for _ in range(20):                            # the live input keeps coming
            try:
                p.stdin.write(period)
                p.stdin.flush()
            except BrokenPipeError:
                break
            time.sleep(0.01)
        so, se = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, se.decode()
    text = so.decode()
    assert "frames       in" in text and "stopped      by SIGINT" in text, text + se.decode()
    frames = int(text.split("frames       in ")[1].split()[0])
    assert frames > 0 and sf.info(str(out)).frames == frames      # committed as far as read
    assert not list(tmp_path.glob(".out.wav.tmp-*"))


def test_ctrl_c_on_a_live_classify_run_prints_the_decisions_and_the_time_per_class(tmp_path):
    x, sr = sf.read(str(ROOT / "tests" / "fixtures" / "audio" / "classify_speech.flac"), dtype="int16")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "classify", "-i", "-", "--rate", str(sr),
                          "--channels", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    lines = []
    t = threading.Thread(target=lambda: lines.extend(iter(p.stdout.readline, b"")), daemon=True)
    t.start()
    period = sr // 10
    try:
        deadline, k = time.monotonic() + 60, 0
        while not lines and time.monotonic() < deadline:     # until the first decision is printed
            p.stdin.write(x[k:k + period].tobytes() if k + period <= len(x) else np.zeros(period, "<i2").tobytes())
            p.stdin.flush()
            k += period
            time.sleep(0.005)
        p.send_signal(signal.SIGINT)
        for _ in range(20):
            try:
                p.stdin.write(np.zeros(period, "<i2").tobytes())
                p.stdin.flush()
            except BrokenPipeError:
                break
            time.sleep(0.01)
        try:
            p.stdin.close()
        except BrokenPipeError:      # it stopped reading: that is the point
            pass
        p.wait(60)
        t.join(10)
    finally:
        if p.poll() is None:
            p.kill()
    text = b"".join(lines).decode()
    assert p.returncode == 130, p.stderr.read().decode()
    assert "speech" in text.splitlines()[0] and "# classify: " in text and "# stopped by SIGINT" in text, text


def _band_run(tmp_path, x, sr, pipeline="speech_gate"):
    write_wav(tmp_path / "in.wav", x, sr)
    r = subprocess.run([sys.executable, "-m", "edge_runtime", "run", pipeline, "-i", str(tmp_path / "in.wav"),
                        "-o", str(tmp_path / "out.wav"), "--json"], capture_output=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr.decode()
    return json.loads(r.stdout), r.stderr.decode()


def test_band_loss_is_warned_when_the_input_has_energy_above_the_pipeline_nyquist(tmp_path):
    sr = 48000
    white = (0.1 * np.random.default_rng(0).standard_normal(2 * sr)).astype(np.float32)
    s, err = _band_run(tmp_path, white, sr)
    # white noise: 2/3 of its energy above 8 kHz = -1.8 dB
    assert s["band_above_nyquist_db"] == pytest.approx(-1.8, abs=0.5)
    assert len(s["warnings"]) == 1 and "above 8 kHz" in s["warnings"][0] and "band loss" in err
    assert "try speech_gate48k" in s["warnings"][0]
    # the full-band variant keeps it: no warning, and the output still has its energy above 8 kHz
    s48, err48 = _band_run(tmp_path, white, sr, pipeline="speech_gate48k")
    assert s48["warnings"] == [] and "band loss" not in err48 and s48["pipeline_sample_rate"] == 48000
    y, _ = sf.read(str(tmp_path / "out.wav"), dtype="float32")
    spec = np.abs(np.fft.rfft(y[sr // 2:])) ** 2
    f = np.fft.rfftfreq(len(y) - sr // 2, 1 / sr)
    assert 10 * np.log10(spec[f > 8500].sum() / spec.sum()) > -6    # white noise, ducked: still full band
    # the same rate with nothing above 8 kHz (a 1 kHz tone): no warning
    tone = (0.3 * np.sin(2 * np.pi * 1000 * np.arange(2 * sr) / sr)).astype(np.float32)
    s, err = _band_run(tmp_path, tone, sr)
    assert s["band_above_nyquist_db"] < -40 and s["warnings"] == [] and "band loss" not in err


def test_no_band_loss_measured_when_the_rates_match(cli, tmp_path):
    write_wav(tmp_path / "in.wav", np.zeros(16000, np.float32), 16000)
    r = cli("run", "speech_gate", "-i", tmp_path / "in.wav", "-o", tmp_path / "o.wav", "--json")
    s = json.loads(r.stdout)
    assert s["band_above_nyquist_db"] is None and s["warnings"] == []


def _emitter(name, offset, lookback=0):
    """A pass-through node emitting one ``tick`` per block ``offset`` frames into it (negative:
    dated back, declared as ``event_lookback_samples``)."""
    from edge_runtime.engine import Node

    class Emitter(Node):
        event_names = ("tick",)
        event_lookback_samples = lookback

        def process(self, inp, out):
            np.copyto(out, inp)
            self.emit("tick", 0.0, offset)

    return Emitter(name)


def test_events_come_out_in_time_order_across_nodes_with_a_wall_clock(tmp_path):
    from edge_runtime.engine import Pipeline
    from edge_runtime.io import FileSource
    from edge_runtime.runner import run_stream

    # node a's tick is late in the block, b's early, c's dated 3 blocks back
    pipe = Pipeline([_emitter("a", 150), _emitter("b", 10), _emitter("c", -480, lookback=480)],
                    sample_rate=16000, block_size=160)
    write_wav(tmp_path / "in.wav", np.zeros(16000, np.float32), 16000)
    got = []
    with FileSource(str(tmp_path / "in.wav")) as src:
        run_stream(pipe, src, None, on_event=got.append)
    times = [e.time_s for e in got]
    assert len(got) == 3 * 100
    assert times == sorted(times)
    for e in got[:3]:
        datetime.datetime.strptime(e.ts, "%Y-%m-%dT%H:%M:%S.%fZ")


def test_classify_json_labels_carry_the_confidence(cli):
    r = cli("run", "classify", "-i", ROOT / "tests" / "fixtures" / "audio" / "classify_speech.flac", "--json")
    assert r.returncode == 0, r.stderr.decode()
    rows = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert rows and all(0.0 < x["confidence"] <= 1.0 and x["label"] and x["ts"] for x in rows)


def test_events_are_documented_per_type():
    text = (ROOT / "docs" / "events.md").read_text()
    for name in ("speech", "nonspeech", "class", "confidence", "anomaly_start", "anomaly_end", "anomaly_score",
                 "speech_start", "speech_end", "variant_step_down", "learned", "ts", "time_s"):
        assert f"`{name}`" in text, name

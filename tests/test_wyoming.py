"""``edge-runtime wyoming``: a real Wyoming client (the ``wyoming`` package's) against the real
server (``python -m edge_runtime wyoming``, started here on a free loopback port) for each service.

Known answers: the VAD fixture's labelled speech gives voice-started/voice-stopped at its onsets;
the classifier's held-out alarm clip gives a detection named ``alarm``; speech in pink noise comes
back as audio whose speech-to-pause SNR rose, and equal to the in-process pipeline's output (so it
is aligned and nothing was dropped). Bad formats get one clear ``error`` and the connection keeps
working; a client that disconnects mid-stream leaves the server serving.
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT

from edge_runtime.service.wyoming import from_pcm, to_pcm

try:
    from wyoming.audio import AudioChunk, AudioStart, AudioStop
    from wyoming.client import AsyncTcpClient
    from wyoming.event import Event
    from wyoming.info import Describe, Info
    from wyoming.ping import Ping
    from wyoming.wake import Detect
    HAVE_WYOMING = True
except ImportError:
    HAVE_WYOMING = False
NO_WYOMING = "the wyoming extra is not installed (pip install 'edge-runtime[wyoming]')"

FIX = ROOT / "tests" / "fixtures" / "audio"
SR = 16000


def load(name):
    x, sr = sf.read(FIX / name, dtype="float32")
    assert sr == SR
    return x


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """``servers(service)`` -> the port of that service's server process on a free loopback port
    (started on first use, stopped after the module)."""
    if not HAVE_WYOMING:
        pytest.skip(NO_WYOMING)
    procs, ports, logs = {}, {}, {}

    def get(service):
        if service not in ports:
            port = free_port()
            # the server's log to a file: a pipe nobody reads would block it once full
            logs[service] = open(tmp_path_factory.mktemp("wyoming") / f"{service}.log", "w+b")
            proc = procs[service] = subprocess.Popen(
                [sys.executable, "-m", "edge_runtime", "--log-level", "info", "wyoming", "--service", service,
                 "--uri", f"tcp://127.0.0.1:{port}"], cwd=ROOT, stdout=logs[service],
                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                    [str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))})
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        proc.kill()
                        proc.wait()
                        logs[service].seek(0)
                        pytest.fail(f"wyoming {service} server did not start: {logs[service].read().decode()}")
                    time.sleep(0.1)
            ports[service] = port
        assert procs[service].poll() is None, f"the {service} server died"
        return ports[service]

    get.logs = logs
    yield get
    for proc in procs.values():
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for f in logs.values():
        f.close()


SERVICES = ["vad", "classify", "denoise"]


async def _exchange(port, events, chunk_frames=1024):
    """Send ``events`` (Event, or (AudioStart, float audio) for a whole stream), then a ping; return
    every event the server sent before its pong (the server answers a ping after all it owes)."""
    got = []
    async with AsyncTcpClient("127.0.0.1", port) as c:
        for ev in events:
            if isinstance(ev, tuple):
                start, x = ev
                await c.write_event(start.event())
                pcm = to_pcm(x.reshape(-1, start.channels), start.width)
                step = chunk_frames * start.width * start.channels
                for i in range(0, len(pcm), step):
                    await c.write_event(AudioChunk(rate=start.rate, width=start.width, channels=start.channels,
                                                   audio=pcm[i:i + step]).event())
                await c.write_event(AudioStop().event())
            else:
                await c.write_event(ev)
        await c.write_event(Ping(text="end").event())
        while True:
            e = await asyncio.wait_for(c.read_event(), 60)
            assert e is not None, "the server closed the connection"
            if e.type == "pong":
                return got
            got.append(e)


def exchange(port, events, **kw) -> list:
    return asyncio.run(_exchange(port, events, **kw))


def start(rate=SR, width=2, channels=1):
    return AudioStart(rate=rate, width=width, channels=channels)


# ---- every service ---------------------------------------------------------------------------

@pytest.mark.parametrize("service", SERVICES)
def test_describe_says_what_the_service_is(servers, service):
    port = servers(service)
    (ev,) = exchange(port, [Describe().event()])
    assert ev.type == "info"
    me = ev.data["edge_runtime"]
    assert me["service"] == service and me["sample_rate"] == SR and "error" in me["sends"]
    info = Info.from_event(ev)
    if service == "classify":      # a wake program: Home Assistant lists its labels as wake words
        (prog,) = info.wake
        assert {m.name for m in prog.models} >= {"alarm", "speech", "water"}
    else:
        assert not info.wake and not info.asr


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("fmt, words", [
    ((SR, 1, 1), ["width 1", "expected one of 2, 3, 4"]),
    ((1000, 2, 1), ["rate 1000", "4000..768000"]),
    ((SR, 2, 0), ["channels 0", "1..32"]),
])
def test_a_bad_format_is_one_clear_error_and_the_connection_goes_on(servers, service, fmt, words):
    port = servers(service)
    bad = start(*fmt)
    x = load("vad_speech.flac")[:SR]
    # the refused stream (its chunks are ignored: one error, not one per chunk), then a good one
    got = exchange(port, [bad.event(), AudioChunk(rate=fmt[0], width=2, channels=1, audio=b"\0\0" * 800).event(),
                          AudioStop().event(), (start(), x)])
    errors = [e for e in got if e.type == "error"]
    assert len(errors) == 1, got
    assert errors[0].data["code"] == "audio-format"
    assert all(w in errors[0].data["text"] for w in words), errors[0].data
    if service == "denoise":       # the good stream after it is answered in full
        assert [e.type for e in got[1:]][0] == "audio-start" and got[-1].type == "audio-stop"


@pytest.mark.parametrize("service", SERVICES)
def test_chunks_that_do_not_match_their_start_are_refused(servers, service):
    port = servers(service)
    x = load("vad_speech.flac")[:SR // 2]
    got = exchange(port, [start().event(),
                          AudioChunk(rate=22050, width=2, channels=1, audio=b"\0\0" * 100).event(),
                          AudioStop().event(),
                          start().event(), AudioChunk(rate=SR, width=2, channels=1, audio=b"\0\0\0").event(),
                          AudioStop().event(),
                          AudioChunk(rate=SR, width=2, channels=1, audio=b"\0\0").event(),
                          (start(), x)])
    texts = [e.data["text"] for e in got if e.type == "error"]
    assert len(texts) == 3, got
    assert "rate 22050 Hz" in texts[0] and "audio-start said 16000 Hz" in texts[0]
    assert "3 bytes is not a whole number of frames of 2 bytes" in texts[1]
    assert "audio-chunk before audio-start" in texts[2]


@pytest.mark.parametrize("service", SERVICES)
def test_a_client_leaving_mid_stream_leaves_the_server_serving(servers, service):
    port = servers(service)
    x = load("vad_speech.flac")

    async def leave():
        c = AsyncTcpClient("127.0.0.1", port)
        await c.connect()
        await c.write_event(start().event())
        pcm = to_pcm(x[:3 * SR, None], 2)
        for i in range(0, len(pcm), 3200):
            await c.write_event(AudioChunk(rate=SR, width=2, channels=1, audio=pcm[i:i + 3200]).event())
        await c.disconnect()       # no audio-stop: gone mid-stream

    for _ in range(3):
        asyncio.run(leave())
    got = exchange(port, [(start(), x[:2 * SR])])
    assert got and not any(e.type == "error" for e in got), got


# ---- vad -------------------------------------------------------------------------------------

def _vad_times(got):
    return [(e.type, e.data["timestamp"] / 1000.0) for e in got if e.type in ("voice-started", "voice-stopped")]


def test_vad_speech_gives_voice_started_and_stopped_as_the_node_decides(servers):
    from edge_runtime.api import Pipeline, nodes

    port = servers("vad")
    x = load("vad_speech.flac")          # held-out speaker at 16 dB SNR; labelled 10 ms frames
    ref = np.load(FIX / "vad_speech_labels.npy").astype(bool)
    ev = _vad_times(exchange(port, [(start(), x)]))
    kinds = [k for k, _ in ev]
    assert kinds[0] == "voice-started" and kinds[-1] == "voice-stopped", ev
    assert all(a != b for a, b in zip(kinds, kinds[1:])), ev      # alternating
    # the node's own decisions, run in this process; speech still on at the end is closed there
    p = Pipeline([nodes.Vad()], sample_rate=SR, block_size=160)
    p.process(x, SR)
    mine = [("voice-started" if e.event == "speech" else "voice-stopped", e.time_s) for e in p.events]
    if mine[-1][0] == "voice-started":
        mine.append(("voice-stopped", len(x) / SR))
    assert [k for k, _ in ev] == [k for k, _ in mine]
    assert np.allclose([t for _, t in ev], [t for _, t in mine], atol=0.011), (ev, mine)
    # against the labels (the bars of test_vad): most speech covered, little else
    on = np.zeros(len(ref), bool)
    for (_, a), (_, b) in zip(ev[::2], ev[1::2]):
        on[int(a * 100):int(b * 100)] = True
    assert np.sum(on & ref) / ref.sum() > 0.8
    assert np.sum(on & ~ref) / np.sum(~ref) < 0.35
    t_first = np.flatnonzero(ref)[0] / 100
    assert 0 <= ev[0][1] - t_first < 0.3, (t_first, ev)


def test_vad_at_another_rate_width_and_channel_count_gives_the_same_decisions(servers):
    import soxr

    port = servers("vad")
    x = load("vad_speech.flac")
    ref = _vad_times(exchange(port, [(start(), x)]))
    x48 = soxr.resample(x, SR, 48000)
    got = _vad_times(exchange(port, [(start(48000, 3, 2), np.stack([x48, x48], 1))]))
    assert [k for k, _ in got] == [k for k, _ in ref]
    assert np.allclose([t for _, t in got], [t for _, t in ref], atol=0.03), (got, ref)


def test_vad_two_clients_at_once_get_their_own_answers(servers):
    port = servers("vad")
    x = load("vad_speech.flac")
    alone = _vad_times(exchange(port, [(start(), x)]))

    async def both():
        return await asyncio.gather(_exchange(port, [(start(), x)]),
                                    _exchange(port, [(start(), np.zeros(2 * SR, np.float32))]))

    speech, silence = asyncio.run(both())
    assert _vad_times(speech) == alone and _vad_times(silence) == []


def test_vad_noise_only_gives_little_voice(servers):
    port = servers("vad")
    ev = _vad_times(exchange(port, [(start(), load("vad_nospeech.flac"))]))
    # 8 s without speech: the node measured one false 0.24 s segment at 0.16 s (its start-up);
    # voice at most 5% of the time (test_vad's bar for this clip), and every start has its stop
    assert len(ev) % 2 == 0
    assert sum(b - a for (_, a), (_, b) in zip(ev[::2], ev[1::2])) < 0.05 * 8.0, ev


# ---- classify --------------------------------------------------------------------------------

def test_classify_a_known_sound_gives_its_label_with_a_confidence(servers):
    port = servers("classify")
    x = np.concatenate([np.zeros(SR, np.float32), load("classify_alarm.flac"), np.zeros(SR, np.float32)])
    got = exchange(port, [(start(), x)])
    det = [e for e in got if e.type == "detection"]
    assert [e.data["name"] for e in det] == ["alarm"], got
    d = det[0].data
    assert 0.5 < d["confidence"] <= 1.0
    assert 1.0 <= d["timestamp"] / 1000.0 <= 3.5       # while the alarm sounds (1.0-3.5 s)


def test_classify_detect_names_choose_the_labels(servers):
    port = servers("classify")
    x = np.concatenate([load("classify_water.flac"), load("classify_alarm.flac")])
    got = exchange(port, [Detect(names=["alarm"]).event(), (start(), x),
                          Detect(names=["speech"]).event(), (start(), x)])
    types = [e.type for e in got]
    assert types == ["detection", "not-detected"], got
    assert got[0].data["name"] == "alarm"
    got = exchange(port, [Detect(names=["barking"]).event()])
    assert got[0].type == "error" and "barking" in got[0].data["text"]


def test_classify_silence_is_not_detected(servers):
    port = servers("classify")
    got = exchange(port, [(start(), np.zeros(3 * SR, np.float32))])
    assert [e.type for e in got] == ["not-detected"]


# ---- denoise ---------------------------------------------------------------------------------

def _pink(n, seed):
    rng = np.random.default_rng(seed)
    f = np.fft.rfftfreq(n, 1 / SR)
    return np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) / np.sqrt(np.maximum(f, 20.0)), n).astype(np.float32)


def _frame_power(x):
    return (x[: len(x) // 320 * 320].reshape(-1, 320).astype(np.float64) ** 2).mean(1)


def _snr_db(clean, y):
    """Speech-to-pause power ratio of ``y``: frames where ``clean`` is loud over frames where it is
    silent (40 dB under its loudest) -- what a denoiser raises by turning the noise floor down."""
    ec = _frame_power(clean)
    p = _frame_power(y)
    return 10 * np.log10(p[ec > ec.max() * 1e-2].mean() / p[ec < ec.max() * 1e-4].mean())


def _received_audio(got, fmt):
    assert got[0].type == "audio-start" and got[-1].type == "audio-stop", [e.type for e in got[:3]]
    assert (got[0].data["rate"], got[0].data["width"], got[0].data["channels"]) == fmt
    chunks = [AudioChunk.from_event(e) for e in got if e.type == "audio-chunk"]
    assert all((c.rate, c.width, c.channels) == fmt for c in chunks)
    return from_pcm(b"".join(c.audio for c in chunks), fmt[1], fmt[2])


@pytest.mark.parametrize("k", [0, 1, 2])
def test_denoise_noisy_speech_comes_back_with_a_higher_snr(servers, k):
    from edge_runtime.api import Pipeline

    port = servers("denoise")
    clean = load(f"denoise_10db_{k}_clean.flac")
    noise = _pink(len(clean), seed=k)
    noise *= np.sqrt(np.sum(clean.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2) / 10.0)
    noisy = to_pcm_roundtrip(clean + noise)
    y = _received_audio(exchange(port, [(start(), noisy)]), (SR, 2, 1))[:, 0]
    assert y.shape == noisy.shape                      # as many frames as went in
    snr_in, snr_out = _snr_db(clean, noisy), _snr_db(clean, y)
    # pink noise at 10 dB: the shipped model turns pauses down by 12..83 dB (docs/denoise.md)
    assert snr_out > snr_in + 10.0, (snr_in, snr_out)
    # the same as the pipeline run in this process on the same samples: aligned, nothing lost
    ref = Pipeline.from_toml("denoise").process(noisy, SR)
    err = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((y - ref).astype(np.float64) ** 2))
    assert err > 40.0, err                             # int16 output: about 70 dB


def to_pcm_roundtrip(x):
    return from_pcm(to_pcm(x.reshape(-1, 1), 2), 2, 1)[:, 0]


def test_a_client_flooding_a_long_file_is_held_back_by_back_pressure(servers):
    """60 s of audio sent as fast as the socket takes it: the server stops reading once 2 s wait
    for the pipeline (the backlog it logs stays within 2 s + one chunk), and everything still
    comes back, frames out == frames in."""
    port = servers("denoise")
    x = (0.1 * np.random.default_rng(3).standard_normal(60 * SR)).astype(np.float32)
    got = exchange(port, [(start(), x)], chunk_frames=1024)
    out = _received_audio(got, (SR, 2, 1))
    assert out.shape[0] == x.shape[0]
    log = servers.logs["denoise"]
    log.flush()
    log.seek(0)
    lines = [ln for ln in log.read().decode(errors="replace").splitlines() if "peak backlog" in ln]
    assert lines and f"stream of {60 * SR} frames" in lines[-1], lines[-3:]
    peak = float(lines[-1].split("peak backlog ")[1].split()[0])
    assert 0.0 < peak <= 2.0 + 1024 / SR + 1e-3, lines[-1]


def test_denoise_answers_in_the_clients_own_format(servers):
    import soxr

    port = servers("denoise")
    clean = load("denoise_10db_0_clean.flac")
    noise = _pink(len(clean), seed=7)
    noise *= np.std(clean) / np.std(noise) / np.sqrt(10.0)      # 10 dB SNR
    x = soxr.resample(clean + noise, SR, 44100)
    c = soxr.resample(clean, SR, 44100)
    x2 = np.stack([x, 0.5 * x], 1)
    y = _received_audio(exchange(port, [(start(44100, 4, 2), x2)]), (44100, 4, 2))
    assert y.shape == x2.shape
    for ch in range(2):
        assert _snr_db(c, y[:, ch]) > _snr_db(c, x2[:, ch]) + 10.0


# ---- the PCM edge ----------------------------------------------------------------------------

@pytest.mark.parametrize("width", [2, 3, 4])
def test_pcm_round_trip_within_one_lsb(width, rng):
    x = np.clip(rng.standard_normal((999, 2)) * 0.3, -1, 1).astype(np.float32)
    y = from_pcm(to_pcm(x, width), width, 2)
    assert y.shape == x.shape
    # half an LSB from rounding, a whole one where +1.0 clips to the largest code, plus float32's step
    assert np.max(np.abs(y - x)) <= 1.0 / 2 ** (8 * width - 1) + 1.2e-7
    assert from_pcm(to_pcm(np.array([[1.0], [-1.0]]), width), width, 1)[1, 0] == -1.0


def test_without_the_extra_the_command_says_what_to_install(cli, tmp_path):
    # a `wyoming` package that cannot be imported, first on the path
    (tmp_path / "wyoming").mkdir()
    (tmp_path / "wyoming" / "__init__.py").write_text("raise ImportError('no wyoming here')\n")
    r = cli("wyoming", "--service", "vad", "--uri", "tcp://127.0.0.1:1",
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])})
    assert r.returncode == 1
    assert "pip install 'edge-runtime[wyoming]'" in r.stderr.decode() and "Traceback" not in r.stderr.decode()


def test_a_pipeline_without_the_services_node_is_refused(cli):
    r = cli("wyoming", "--service", "classify", "--pipeline", "denoise", "--uri", "tcp://127.0.0.1:1")
    assert r.returncode == 2
    assert "has no classify node" in r.stderr.decode()

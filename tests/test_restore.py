"""Declipping (issue 24): consistency (unclipped samples untouched), restoration of a clipped
sine, streaming == offline, no allocation per block, the pipeline at the input's rate, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT, run_cli, traced, write_wav


def _declipper(**kw):
    from edge_runtime._restore import Declipper

    return Declipper(**{"window": 1024, "sparsity_step": 4, "sample_rate": 16000, **kw})


def _run_blocks(d, x, block):
    """Stream x (channels, n) through d; the output re-aligned and the iterations of each call."""
    w = d.latency_samples
    c, n = x.shape
    y = np.concatenate([x, np.zeros((c, w + block), np.float32)], axis=1).astype(np.float32)
    out = np.zeros_like(y)
    its = []
    ob = np.zeros((c, block), np.float32)
    for i in range(0, y.shape[1] - block + 1, block):
        before = d.iterations
        d.process(np.ascontiguousarray(y[:, i:i + block]), ob)
        out[:, i:i + block] = ob
        its.append(d.iterations - before)
    return out[:, w:w + n], np.array(its)


def _run(d, x, block):
    """Stream x (n,) through d in blocks of ``block``; the output re-aligned (latency removed)."""
    return _run_blocks(d, np.asarray(x, np.float32)[None], block)[0][0]


def _speechlike(n, seed=0, sr=16000):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    ph = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * ph) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3.1 * t))
    return (0.3 * x / np.abs(x).max() + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("kind", ["speechlike", "noise", "sine"])
def test_unclipped_audio_passes_unchanged(kind):
    n = 16000 * 2
    rng = np.random.default_rng(1)
    x = {"speechlike": _speechlike(n), "noise": (0.2 * rng.standard_normal(n)).astype(np.float32),
         "sine": (0.5 * np.sin(2 * np.pi * 997 * np.arange(n) / 16000)).astype(np.float32)}[kind]
    d = _declipper()
    y = _run(d, x, 160)
    assert d.frames_solved == 0 and d.samples_clipped == 0
    assert np.max(np.abs(y - x)) < 1e-6


def test_clipped_sine_is_restored_and_reliable_samples_kept():
    n = 16000
    t = np.arange(n) / 16000
    x = (0.9 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 1320 * t + 0.4)).astype(np.float32)
    clip = 0.55
    y = np.clip(x, -clip, clip)
    d = _declipper()
    z = _run(d, y, 160)
    core = slice(2048, n - 2048)                    # past the stream's first and last frames
    sdr_in = 10 * np.log10(np.sum(x[core] ** 2) / np.sum((x[core] - y[core]) ** 2))
    sdr_out = 10 * np.log10(np.sum(x[core] ** 2) / np.sum((x[core] - z[core]) ** 2))
    assert sdr_in < 12 and sdr_out > sdr_in + 8, (sdr_in, sdr_out)        # measured: 11.1 -> 21.7 dB
    reliable = np.abs(y) < clip * 0.999
    assert np.max(np.abs(z - y)[reliable]) < 1e-6                        # consistency
    top = y >= clip * 0.999
    assert np.all(z[top] >= clip - 1e-6)                                 # restored beyond the clip level
    assert d.samples_clipped > 0.1 * n


def test_streaming_equals_offline_for_any_block_size():
    x = np.clip(_speechlike(16000, seed=3) * 3, -0.5, 0.5).astype(np.float32)
    outs = [_run(_declipper(), x, b) for b in (1, 160, 256, 1000)]
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])


def test_asymmetric_and_soft_clipping_are_found():
    x = _speechlike(16000, seed=4) * 3
    asym = np.clip(x, -0.4, 0.7).astype(np.float32)
    d = _declipper()
    z = _run(d, asym, 160)
    assert d.samples_clipped > 0
    top, bottom = asym == np.float32(0.7), asym == np.float32(-0.4)
    assert np.all(z[top] >= np.float32(0.7) - 1e-6) and np.all(z[bottom] <= np.float32(-0.4) + 1e-6)
    soft = np.tanh(2.5 * x).astype(np.float32) * 0.8           # saturation: no flat plateau
    hard_only = _declipper()
    _run(hard_only, soft, 160)
    with_soft = _declipper(soft_ratio=0.9)
    zs = _run(with_soft, soft, 160)
    assert hard_only.samples_clipped == 0 and with_soft.samples_clipped > 0
    big = soft >= 0.9 * soft.max()
    assert np.all(zs[big] >= soft[big] - 1e-6)                 # only ever moved outward


@pytest.mark.parametrize("kw", [{}, {"slack": 1, "iters_per_hop": 32}])
def test_no_allocation_per_block(kw):
    from edge_runtime.nodes.declip import Declip

    node = Declip(**kw)
    node.prepare(16000, 160, 1)
    x = np.clip(_speechlike(16000 * 4, seed=5) * 3, -0.5, 0.5).astype(np.float32)
    inp = np.zeros((1, 160), np.float32)
    out = np.zeros((1, 160), np.float32)
    pos = [0]

    def step():
        i = pos[0] % (len(x) - 160)
        np.copyto(inp[0], x[i:i + 160])
        node.process(inp, out)
        pos[0] += 160

    base_kept, base_peak = traced(lambda: None, 300, warmup=50)
    kept, peak = traced(step, 300, warmup=50)
    kept_more, _ = traced(step, 900, warmup=50)
    grown, grown_more = kept - base_kept, kept_more - base_kept
    # a few small cached objects the first time at most; nothing grows with the number of blocks
    assert grown < 1024 and grown_more <= grown + 256, (grown, grown_more)
    assert peak - base_peak < 4096, peak - base_peak
    assert node.kernel.frames_solved > 100


def test_declip_pipeline_keeps_the_input_rate_and_reports(tmp_path):
    import soundfile as sf

    for sr in (22050, 44100):
        x = _speechlike(sr * 2, seed=6, sr=sr) * 3
        y = np.clip(x, -0.6, 0.6)
        write_wav(tmp_path / "clipped.wav", y, sr, subtype="PCM_16")
        r = run_cli("run", "declip", "-i", tmp_path / "clipped.wav", "-o", tmp_path / "fixed.wav", "--json")
        assert r.returncode == 0, r.stderr.decode()
        s = json.loads(r.stdout)
        assert s["pipeline_sample_rate"] == sr and s["output_sample_rate"] == sr and not s["resampled"]
        rep = s["nodes"][0]["report"]
        assert rep["clipped_in_pct"] > 5 and rep["clipped_out_pct"] < 0.5 * rep["clipped_in_pct"], rep
        z, zsr = sf.read(tmp_path / "fixed.wav", dtype="float32")
        assert zsr == sr and len(z) == len(y) and np.abs(z).max() > 0.62


@pytest.mark.parametrize("line,expect", [
    ("window_ms = 2", "nodes[0].window_ms = 2.0 is outside 8..500"),
    ("soft_ratio = 0.2", "nodes[0].soft_ratio = 0.2 is outside 0.5..1"),
    ("mode = 1", "nodes[0].mode: unknown parameter for declip"),
])
def test_bad_declip_config(tmp_path, line, expect):
    p = tmp_path / "d.toml"
    p.write_text(f'name = "d"\nsample_rate = "input"\nblock_ms = 16\n[[nodes]]\ntype = "declip"\n{line}\n')
    r = run_cli("run", p, "-i", tmp_path / "x.wav", "-o", tmp_path / "o.wav")
    assert r.returncode == 2 and expect in r.stderr.decode(), r.stderr.decode()


def test_input_rate_pipeline_needs_block_ms(tmp_path):
    from edge_runtime.config import load_pipeline_config
    from edge_runtime.errors import ConfigError

    p = tmp_path / "d.toml"
    p.write_text('name = "d"\nsample_rate = "input"\nblock_size = 160\n[[nodes]]\ntype = "declip"\n')
    with pytest.raises(ConfigError, match="needs block_ms"):
        load_pipeline_config(str(p))


# ---- bandwidth extension (bwe16k) ------------------------------------------------------------------

def _bwe_pipe(**kw):
    from edge_runtime.engine import Pipeline
    from edge_runtime.nodes.bwe import Bwe

    pipe = Pipeline([Bwe(**kw)], sample_rate=16000, block_size=160)
    pipe.prepare(1)
    return pipe


def _narrow_chirp(seconds=2.0):
    import soxr

    t = np.arange(int(16000 * seconds)) / 16000
    f = 200 * (7000 / 200) ** (t / seconds)                  # 200 Hz .. 7 kHz
    x = (0.3 * np.sin(2 * np.pi * np.cumsum(f) / 16000) * (1 + 0.5 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
    harm = np.zeros_like(x)
    for k in (1, 2, 3):                                      # voiced-like: harmonics of a low f0
        harm += (0.2 / k * np.sin(2 * np.pi * 150 * k * t)).astype(np.float32)
    x8 = soxr.resample(x + harm, 16000, 8000)
    return soxr.resample(x8, 8000, 16000).astype(np.float32)[: len(x)]


def _high_band_db(y):
    p = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(len(y), 1 / 16000)
    return 10 * np.log10(p[f > 4500].sum() / p[(f > 300) & (f < 3800)].sum() + 1e-30)


def test_band_limited_input_gets_energy_above_the_cut():
    x = _narrow_chirp()
    pipe = _bwe_pipe()
    y = pipe.process_array(x[None, :])[0]
    before, after = _high_band_db(x), _high_band_db(y)
    assert before < -60 and after > before + 10, (before, after)            # measured -73.9 -> -57.4 dB
    full = _bwe_pipe(gain_db=0.0).process_array(x[None, :])[0]            # the band as predicted
    assert _high_band_db(full) > after + 18, _high_band_db(full)          # measured -33.5 dB
    node = pipe.nodes[0]
    assert node.report()["input_band"].startswith("narrow") and node.report()["extended_pct"] > 90
    # below 3.8 kHz the input is kept: the low band of the output matches the input's
    lo = lambda s: np.fft.irfft(np.where(np.fft.rfftfreq(len(s), 1 / 16000) < 3500, np.fft.rfft(s), 0), len(s))
    assert np.max(np.abs(lo(y) - lo(x))) < 2e-3


def test_wide_band_input_passes_through():
    rng = np.random.default_rng(8)
    x = (0.1 * rng.standard_normal(16000 * 3)).astype(np.float32)       # white: a real high band
    pipe = _bwe_pipe()
    y = pipe.process_array(x[None, :])[0]
    node = pipe.nodes[0]
    assert node.report()["input_band"].startswith("wide")
    tail = slice(16000, None)                   # after the band detector has settled (about 2 s)
    assert np.max(np.abs(y[tail] - x[tail])) < 1e-4


def test_streaming_features_equal_the_training_features():
    """The node computes exactly the features train_bwe.py trained on (features_offline)."""
    from edge_runtime.nodes.bwe import features_offline

    x = _narrow_chirp(1.0)
    f_off, _ = features_offline(x)
    pipe = _bwe_pipe()
    node = pipe.nodes[0]
    seen = []
    run = node.calls[0].run

    class Spy:
        def run(self):
            seen.append(node.feat[0, 0].copy())
            run()

    node.calls = [Spy()]
    pipe.process_array(x[None, :], compensate_latency=False)
    got = np.array(seen)
    n = min(len(got), len(f_off))
    assert n > 90 and np.max(np.abs(got[:n] - f_off[:n])) < 1e-3


def test_bwe_no_allocation_per_block():
    pipe = _bwe_pipe()
    x = _narrow_chirp(2.0)
    pos = [0]

    def step():
        i = pos[0] % (len(x) - 160)
        pipe.input[0] = x[i:i + 160]
        pipe.process_block()
        pos[0] += 160

    base_kept, base_peak = traced(lambda: None, 900, warmup=50)
    kept, peak = traced(step, 900, warmup=600)            # NumPy's and ORT's first-use caches fill first
    kept_more, _ = traced(step, 2700, warmup=100)
    grown, grown_more = kept - base_kept, kept_more - base_kept
    assert grown < 2048 and grown_more <= grown + 256, (grown, grown_more)    # measured 700 / 700 B
    assert peak - base_peak < 8192, peak - base_peak


def test_bwe16k_writes_16_khz_from_an_8_khz_file(tmp_path):
    import soundfile as sf
    import soxr

    x8 = soxr.resample(_narrow_chirp(1.5), 16000, 8000).astype(np.float32)
    write_wav(tmp_path / "tel_8k.wav", x8, 8000)
    r = run_cli("run", "bwe16k", "-i", tmp_path / "tel_8k.wav", "-o", tmp_path / "wide.wav", "--json")
    assert r.returncode == 0, r.stderr.decode()
    s = json.loads(r.stdout)
    assert s["output_sample_rate"] == 16000 and s["frames_out"] == 2 * s["frames_in"]
    y, sr = sf.read(tmp_path / "wide.wav", dtype="float32")
    plain = soxr.resample(x8, 8000, 16000).astype(np.float32)
    assert sr == 16000 and len(y) == 2 * len(x8) and _high_band_db(y) > _high_band_db(plain) + 10
    assert s["nodes"][0]["report"]["input_band"].startswith("narrow")


def test_bwe_refuses_a_mismatched_model(tmp_path):
    from edge_runtime.errors import ModelError

    bad = ROOT / "models_int8" / "vad" / "vad_fp32.onnx"
    with pytest.raises(ModelError, match="mismatched model: bwe expects input feat and output env"):
        _bwe_pipe(model=str(bad))


def test_bwe_manifest_variants_agree():
    """The INT8 variant follows FP32 on real-ish input (the eval measures PESQ for both)."""
    x = _narrow_chirp(1.0)
    y32 = _bwe_pipe(variant="fp32").process_array(x[None, :])[0]
    y8 = _bwe_pipe(variant="int8-static").process_array(x[None, :])[0]
    snr = 10 * np.log10(np.sum(y32 ** 2) / np.sum((y32 - y8) ** 2))
    assert snr > 25, snr


def test_restore_runs_declip_denoise_bwe_in_turn(tmp_path):
    import soundfile as sf
    import soxr

    x8 = soxr.resample(_narrow_chirp(2.0), 16000, 8000).astype(np.float32)
    x8 = np.clip(x8 / np.abs(x8).max() * 1.5, -0.8, 0.8)          # clipped telephone audio
    write_wav(tmp_path / "in.wav", x8, 8000, subtype="PCM_16")
    r = run_cli("run", "restore", "-i", tmp_path / "in.wav", "-o", tmp_path / "out.wav", "--json")
    assert r.returncode == 0, r.stderr.decode()
    s = json.loads(r.stdout)
    assert [st["pipeline"] for st in s["stages"]] == ["declip", "denoise", "bwe16k"]
    assert s["stages"][0]["pipeline_sample_rate"] == 8000 and s["stages"][0]["nodes"][0]["report"]["clipped_in_pct"] > 1
    y, sr = sf.read(tmp_path / "out.wav", dtype="float32")
    assert sr == 16000 and len(y) == 2 * len(x8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "out.wav"]     # no stage files left


def test_staged_pipeline_errors(tmp_path):
    write_wav(tmp_path / "in.wav", np.zeros(8000, np.float32), 8000)
    r = run_cli("run", "restore", "-i", tmp_path / "in.wav", "-o", "-")
    assert r.returncode == 2 and "writes a file: give -o PATH" in r.stderr.decode()
    (tmp_path / "s.toml").write_text('stages = ["declip", "no_such"]\n')
    r = run_cli("run", tmp_path / "s.toml", "-i", tmp_path / "in.wav", "-o", tmp_path / "o.wav")
    assert r.returncode == 2 and "stages[1] = 'no_such': unknown pipeline 'no_such'" in r.stderr.decode()
    (tmp_path / "t.toml").write_text('stages = ["restore"]\n')
    r = run_cli("run", tmp_path / "t.toml", "-i", tmp_path / "in.wav", "-o", tmp_path / "o.wav")
    assert r.returncode == 2 and "is itself staged" in r.stderr.decode()
    assert not (tmp_path / "o.wav").exists()


def test_bwe48k_writes_48_khz_from_a_16_khz_file(tmp_path):
    import soundfile as sf
    import soxr

    t = np.arange(16000 * 2) / 16000
    x = (0.2 * np.sin(2 * np.pi * 150 * t) + 0.1 * np.sin(2 * np.pi * 2300 * t)
         + 0.02 * np.random.default_rng(9).standard_normal(len(t))).astype(np.float32)
    write_wav(tmp_path / "in16.wav", x, 16000)
    r = run_cli("run", "bwe48k", "-i", tmp_path / "in16.wav", "-o", tmp_path / "full.wav", "--json")
    assert r.returncode == 0, r.stderr.decode()
    s = json.loads(r.stdout)
    assert s["output_sample_rate"] == 48000 and s["frames_out"] == 3 * s["frames_in"]
    assert s["nodes"][0]["report"]["input_band"] == "narrow (<= 7.8 kHz)"
    y, sr = sf.read(tmp_path / "full.wav", dtype="float32")
    plain = soxr.resample(x, 16000, 48000).astype(np.float32)
    hb = lambda s_: 10 * np.log10((np.abs(np.fft.rfft(s_))[np.fft.rfftfreq(len(s_), 1 / 48000) > 9000] ** 2).sum() + 1e-30)
    assert sr == 48000 and hb(y) > hb(plain) + 10


def test_bwe_auto_model_follows_the_rate():
    from edge_runtime.engine import Pipeline
    from edge_runtime.nodes.bwe import Bwe

    for rate, name, width in ((16000, "bwe", 84), (48000, "bwe48k", 100)):
        node = Bwe()
        Pipeline([node], sample_rate=rate, block_size=rate // 100).prepare(1)
        assert node.model == name and node.feat.shape[-1] == width
    with pytest.raises(ValueError, match="bwe runs at 16000 or 48000 Hz, not 22050"):
        Pipeline([Bwe()], sample_rate=22050, block_size=441).prepare(1)


def test_int16_crests_at_a_new_maximum_are_not_a_clip_level():
    # unclipped int16 audio: a slow sine whose amplitude rises, so every crest is a new maximum and
    # its top samples are often equal after quantisation (found on CMU ARCTIC / pocketsphinx clips)
    sr, n = 16000, 16000 * 2
    t = np.arange(n) / sr
    x = (0.02 + 0.3 * t / t[-1]) * np.sin(2 * np.pi * 50 * t)
    x = (np.round(x * 32767) / 32768).astype(np.float32)
    z = _run(_declipper(), x, 160)
    assert np.max(np.abs(z - x)) < 1e-6 and _declipper().min_plateaus == 2
    old = _declipper(min_plateaus=1)          # one plateau is enough: the crests are "restored"
    zo = _run(old, x, 160)
    assert old.samples_clipped > 0 and np.max(np.abs(zo - x)) > 1e-5


def test_samples_just_below_the_clip_level_are_reliable():
    # a dense signal clipped at 0.3: many unclipped samples lie within 1e-4 of the level, next to
    # clipped runs; with the default tolerance 0 they are not marked, so they come out unchanged
    rng = np.random.default_rng(7)
    x = np.convolve(rng.standard_normal(16000), np.hanning(9), "same") * 0.15
    clip = np.float32(0.3)
    y = np.clip(x.astype(np.float32), -clip, clip)
    x[np.nonzero(np.abs(y) >= clip)[0][::7] - 1] = 0.3 * (1 - 3e-5)   # plant some next to runs
    y = np.clip(x.astype(np.float32), -clip, clip)
    rel = np.abs(y) < clip
    near = rel & (np.abs(y) > clip * (1 - 1e-4))
    assert near.sum() > 20
    d = _declipper()
    z = _run(d, y, 160)
    assert d.samples_clipped > 0 and np.max(np.abs(z - y)[rel]) < 1e-6
    loose = _declipper(tolerance=1e-4)        # the old default: those samples may move outward
    zl = _run(loose, y, 160)
    assert np.max(np.abs(zl - y)[rel]) > 1e-4


def test_single_samples_on_a_confirmed_clip_level_are_clipped():
    # a signal that just crosses the clip level leaves one sample on it: with mark_run 1 (the
    # default) it is clipped and may move outward; with 2 it is held at the level (the old rule)
    x = _speechlike(16000, seed=5) * 2.0
    clip = np.float32(0.35)
    y = np.clip(x, -clip, clip).astype(np.float32)
    on = np.abs(y) >= clip
    edges = np.diff(np.concatenate([[0], on.astype(np.int8), [0]]))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    assert np.sum(runs == 1) > 10                      # the signal has single clipped samples
    one, two = _declipper(), _declipper(mark_run=2)
    _run(one, y, 160)
    _run(two, y, 160)
    assert one.samples_clipped == int(on.sum())        # every clipped sample found
    assert two.samples_clipped == int(on.sum()) - int(np.sum(runs == 1))


def test_heavily_clipped_frames_take_the_finer_step():
    # frames >= heavy_frac clipped grow k by heavy_step: more iterations for the same frames, the
    # reliable samples still unchanged; a frame is never 100 % clipped here, so heavy_frac 1.0 is
    # the plain step. (Whether it pays is measured on real design speech, docs/restore.md: on this
    # synthetic harmonic signal step 1 is worse than step 4 even on light clipping.)
    x = _speechlike(16000, seed=2)
    y = np.clip(x, -0.08, 0.08).astype(np.float32)    # most of each voiced frame clipped
    plain = _declipper()                               # heavy_step 0: every frame at step 4
    heavy, never = _declipper(heavy_frac=0.5, heavy_step=1), _declipper(heavy_frac=1.0, heavy_step=1)
    zp, zh, zn = _run(plain, y, 256), _run(heavy, y, 256), _run(never, y, 256)
    assert plain.frames_solved == heavy.frames_solved and heavy.iterations > 1.5 * plain.iterations
    assert np.array_equal(zp, zn) and never.iterations == plain.iterations
    rel = np.abs(y) < 0.08
    assert np.max(np.abs(zh - y)[rel]) < 1e-6


def test_slack_gives_the_same_samples_one_hop_later_for_any_block_size():
    # slack = 1 solves a frame while the next hop arrives: the same iterations in the same order,
    # so the same samples, one hop later (latency window + hop), mono and stereo
    left = np.clip(_speechlike(16000, seed=3) * 3, -0.5, 0.5)
    right = np.clip(_speechlike(16000, seed=6) * 2, -0.3, 0.4)
    for x in (left[None], np.stack([left, right])):
        x = x.astype(np.float32)
        ref = _declipper(channels=x.shape[0])
        want, _ = _run_blocks(ref, x, 160)
        for block in (1, 64, 160, 1000):
            d = _declipper(channels=x.shape[0], slack=1, iters_per_hop=16)
            assert d.latency_samples == ref.latency_samples + d.hop
            got, _ = _run_blocks(d, x, block)
            assert np.array_equal(got, want), block
            assert d.iterations == ref.iterations and d.frames_solved == ref.frames_solved


def test_slack_spreads_a_frame_over_the_blocks_of_the_next_hop():
    # 64-sample blocks, hop 256: without slack the block that completes a frame carries all of its
    # iterations; with slack and iters_per_hop = the longest frame's, every block does at most its
    # share (iters_per_hop * 64 / 256), the frame is done before the next one is due
    x = np.clip(_speechlike(16000, seed=2), -0.08, 0.08).astype(np.float32)[None]
    plain = _declipper(heavy_frac=0.5, heavy_step=1)
    _, its_plain = _run_blocks(plain, x, 64)
    longest = int(its_plain.max())
    assert longest > 40 and plain.frames_solved > 20
    spread = _declipper(heavy_frac=0.5, heavy_step=1, slack=1, iters_per_hop=longest)
    _, its_spread = _run_blocks(spread, x, 64)
    assert its_spread.sum() == its_plain.sum() and spread.frames_solved == plain.frames_solved
    assert its_spread.max() <= -(-longest // 4), (its_spread.max(), longest)


def test_coarse_to_fine_switches_the_step_near_the_target():
    # fine_ratio 0 is the plain coarse step (bit for bit); > 0 finishes each frame at step 1 once
    # the residual is within fine_ratio * eps: more iterations than coarse, fewer than step 1 all
    # the way, reliable samples unchanged
    x = _speechlike(16000, seed=2)
    y = np.clip(x, -0.15, 0.15).astype(np.float32)
    coarse, off = _declipper(), _declipper(fine_ratio=0.0)
    fine, step1 = _declipper(fine_ratio=4.0), _declipper(sparsity_step=1)
    zc, zo, zf = _run(coarse, y, 256), _run(off, y, 256), _run(fine, y, 256)
    _run(step1, y, 256)
    assert np.array_equal(zc, zo)
    assert coarse.iterations < fine.iterations < step1.iterations, \
        (coarse.iterations, fine.iterations, step1.iterations)
    rel = np.abs(y) < 0.15
    assert np.max(np.abs(zf - y)[rel]) < 1e-6


@pytest.mark.parametrize("kw", [dict(slack=2), dict(slack=1, iters_per_hop=0), dict(fine_ratio=-1.0),
                                dict(fine_step=0)])
def test_bad_solver_settings_are_refused(kw):
    with pytest.raises(ValueError, match="Declipper"):
        _declipper(**kw)

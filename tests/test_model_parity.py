"""Every shipped variant, on every installed backend that reads it, agrees with the FP32 ONNX
model on real inputs, within a tolerance per precision."""
import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT
from edge_runtime.backends import BACKENDS
from edge_runtime.models import default_registry, load
from edge_runtime.spectral import stft_analyzer

pytestmark = pytest.mark.skipif(not (ROOT / "models_int8" / "denoise").is_dir(), reason="no denoise model shipped")

# minimum SNR (dB) of a variant's gains against FP32 ONNX Runtime's on the same inputs: FP32 on
# another backend differs by float rounding only; FP16 and INT8 by their quantization (the
# manifest's gain_snr_vs_fp32_db, measured on held-out training mixtures, sits above these)
MIN_SNR_DB = {"fp32": 60.0, "fp16": 12.0, "int8-dynamic": 20.0, "int8-static": 15.0, "int8": 15.0}


def denoise_inputs(hops=120):
    """(re, im) rows of a real noisy clip through the runtime's own STFT."""
    x, _ = sf.read(ROOT / "tests" / "fixtures" / "audio" / "denoise_5db_0_noisy.flac", dtype="float32")
    ana = stft_analyzer(320, 160, "sqrt_hann", 1)
    rows = []
    for t in range(hops):
        ana.push(np.ascontiguousarray(x[None, t * 160:(t + 1) * 160]))
        rows.append((ana.re[:, :161].copy(), ana.im[:, :161].copy()))
    return rows


def run_stream(session, rows, dim):
    """Gains for each hop, feeding the model its own recurrent state."""
    state = np.zeros((1, dim), np.float32)
    out = []
    for re, im in rows:
        r = session.run({"re": re, "im": im, "state": state})
        out.append(r["gain"].copy())
        state = r["state_out"].copy()
    return np.concatenate(out)


# our own variants (an alternative model such as RNNoise has its own parity test:
# tests/test_denoise_variants.py)
CASES = [(v, b) for v in default_registry()["denoise"].variants if not v.alternative for b in v.backends
         if BACKENDS[b].available()] if (ROOT / "models_int8" / "denoise").is_dir() else []


@pytest.mark.parametrize("variant, backend", CASES, ids=[f"{v.format}-{v.precision}-{b}" for v, b in CASES])
def test_variant_matches_fp32(variant, backend):
    m = default_registry()["denoise"]
    dim = dict((s.name, s.shape) for s in m.inputs)["state"][-1]
    rows = denoise_inputs()
    ref = run_stream(load(m.variant(format="onnx", precision="fp32"), backend="onnxruntime"), rows, dim)
    got = run_stream(load(variant, backend=backend), rows, dim)
    snr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / max(np.sum((got - ref).astype(np.float64) ** 2), 1e-30))
    assert snr >= MIN_SNR_DB[variant.precision], (variant.key, backend, snr)

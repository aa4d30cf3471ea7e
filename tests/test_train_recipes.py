"""The classifier's training recipe end to end on a tiny made-up set (``-m train``; needs the
``train`` extra's torch): trains, writes a pickle-free checkpoint that loads back with its
pooling, exports an ONNX graph with the node's interface; mixup keeps the soft targets summing
to one and mixes windows as sounds (a weighted mean of band powers)."""
import json
import sys

import numpy as np
import pytest

from conftest import ROOT

pytestmark = pytest.mark.train


@pytest.fixture(scope="module")
def torch():
    """torch, imported only when a test runs (-m train), so the default run, which deselects
    these tests, neither needs it nor reports a skip for it."""
    return pytest.importorskip("torch")
sys.path.insert(0, str(ROOT / "firmware_tools" / "train"))


def tiny_set(path, per_class=12, seed=0):
    rng = np.random.default_rng(seed)
    classes = ["silence", "speech", "music", "keyboard", "alarm", "machine", "water"]
    for name, n in (("train", per_class), ("val", per_class // 2)):
        y = np.repeat(np.arange(len(classes)), n)
        x = rng.normal(-8.0, 2.0, (len(y), 96, 40)) + y[:, None, None] * 0.5   # a learnable offset per class
        np.savez(path / f"{name}.npz", x=x.astype(np.float16), y=y.astype(np.int64))
    (path / "summary.json").write_text(json.dumps({"classes": classes}))
    return classes


def test_mixup_targets_and_band_power_mixing(torch):
    import train_classify as tc

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 96, 40) - 6
    y = torch.arange(16) % 7
    xm, t = tc.mixup(x, y, 7, g)
    assert torch.allclose(t.sum(1), torch.ones(16))
    # a weighted mean of two band powers lies between them: within the batch's range
    assert torch.isfinite(xm).all()
    assert float(x.amin()) - 1e-5 <= float(xm.amin()) and float(xm.amax()) <= float(x.amax()) + 1e-5
    assert not torch.allclose(xm, x)
    # a window of silence (class 0) pairs with nothing: both keep their sound and their label
    assert torch.all(t[y == 0, 0] == 1) and torch.all(t[:, 0][y != 0] == 0)
    assert torch.allclose(xm[y == 0], x[y == 0])


def test_freq_shift_moves_whole_bands_with_edges_repeated(torch):
    import train_classify as tc

    g = torch.Generator().manual_seed(3)
    x = torch.arange(40.0).view(1, 1, 40).repeat(64, 96, 1)
    out = tc.freq_shift(x, 2, g)
    shifts = set()
    for row in out[:, 0]:
        s = int(row[20] - x[0, 0, 20])
        shifts.add(s)
        want = (torch.arange(40.0) + s).clamp(0, 39)   # band j holds band j + s, the edge repeated
        assert torch.equal(row, want)
    assert shifts == {-2, -1, 0, 1, 2}
    assert torch.equal(out[:, 0], out[:, 95])        # the same shift at every frame of a window
    assert tc.freq_shift(x, 0, g) is x


def test_random_eq_is_smooth_bounded_and_keeps_the_floor(torch):
    import train_classify as tc

    g = torch.Generator().manual_seed(1)
    x = torch.full((32, 96, 40), -5.0)
    x[:, :10] = -20.0                                # a quiet stretch at the window's floor
    out = tc.random_eq(x, 6.0, g)
    gain = (out - x)[:, 50] / tc.DB                  # dB per band, loud frames
    assert float(gain.abs().max()) <= 6.0 + 1e-4 and float(gain.abs().max()) > 1.0
    step = (gain[:, 1:] - gain[:, :-1]).abs().max()   # a smooth curve: |slope| <= db * 2 pi / 39 per band
    assert float(step) <= 6.0 * 2 * torch.pi / 39 + 1e-4
    assert torch.equal(out[:, 20], out[:, 90])       # one curve for every frame of a window
    assert float(out[:, :10].amin()) >= -20.0        # the floor is not pushed below itself
    assert not torch.allclose(gain[0], gain[1])      # each window its own curve
    assert tc.random_eq(x, 0.0, g) is x


def test_weight_ema_tracks_the_average_and_leaves_the_model_alone(torch):
    import train_classify as tc

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = tc.WeightEma(model, 0.5)
    w0 = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(2.0)
    model[1].num_batches_tracked += 4
    ema.update(model)
    assert torch.allclose(ema.model[0].weight, w0 + 1.0)        # 0.5 * w0 + 0.5 * (w0 + 2)
    assert torch.allclose(model[0].weight, w0 + 2.0)
    assert int(ema.model[1].num_batches_tracked) == 4           # integer buffers are copied
    assert not any(p.requires_grad for p in ema.model.parameters())


@pytest.mark.parametrize("pool", ["mean", "meanmax"])
def test_train_export_roundtrip(tmp_path, pool, torch):
    import onnxruntime as ort

    import train_classify as tc
    from classify_model import export_onnx, load_checkpoint

    data = tmp_path / "data"
    data.mkdir()
    classes = tiny_set(data)
    out = tmp_path / "run"
    assert tc.main(["--data", str(data), "--out", str(out), "--epochs", "2", "--batch", "16", "--width", "8",
                    "--threads", "1", "--pool", pool, "--mixup", "0.5"]) == 0
    z = np.load(out / "checkpoint.npz", allow_pickle=False)
    assert str(z["meta_pool"]) == pool
    model, cl, meta = load_checkpoint(str(out / "checkpoint.npz"))
    assert cl == classes and model.pool == pool and int(meta["epoch"]) >= 1
    onnx_path = tmp_path / "m.onnx"
    export_onnx(model, str(onnx_path))
    s = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    probs, emb = s.run(["probs", "embedding"], {"logmel": np.full((1, 96, 40), -8.0, np.float32)})
    assert probs.shape == (1, 7) and abs(float(probs.sum()) - 1) < 1e-4
    assert emb.shape == (1, model.embed_dim) and model.embed_dim == (64 if pool == "meanmax" else 32)
    with torch.no_grad():
        ref = torch.softmax(model(torch.full((1, 96, 40), -8.0))[0], -1).numpy()
    assert np.allclose(probs, ref, atol=1e-5)

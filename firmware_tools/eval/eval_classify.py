"""Evaluate the shipped sound classifier on the held-out TEST split.

    python firmware_tools/eval/eval_classify.py --data firmware_tools/work/classify16k \
        [--models models_int8/classify] [--out firmware_tools/eval/results] [--streams 40] \
        [--vad-data firmware_tools/work/vad16k]

Prints accuracy, macro-F1, per-class F1 and the confusion matrix of every variant in the
models folder (through edge_runtime's model layer, the backend each format reads), the FP32 vs
INT8 differences, and time per window (one thread; median and p99 over the test windows,
model call only, and the node's log-mel front end per window); writes ``classify.json``,
``classify.md`` and the FP32 and INT8 confusion figures (``classify_confusion.png``) to --out.
With ``--vad-data`` (the output of build_vad.py) the same command then runs the VAD comparison
(:mod:`eval_vad`: our VAD variants vs Silero VAD, frame F1 and CPU time), prints it, writes
``vad.md`` and ``vad.json`` to --out and adds its table to ``classify.md``.

TEST windows come from split units (speakers, voices, recordings, renderings, seeds) that no
TRAIN or VAL window used (firmware_tools/data/build_classify.py, split.json).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, ROOT)

from edge_runtime import atomic  # noqa: E402

VARIANTS = [("classify_fp32.onnx", "onnxruntime"), ("classify_int8.onnx", "onnxruntime"),
            ("classify_int8-dynamic.onnx", "onnxruntime"), ("classify_fp16.onnx", "onnxruntime"),
            ("classify_fp32.tflite", "litert"), ("classify_int8.tflite", "litert"),
            ("classify_int8-dynamic.tflite", "litert"), ("classify_fp16.xml", "openvino")]


def per_class(y: np.ndarray, p: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (y, p), 1)
    tp = np.diag(cm).astype(np.float64)
    prec = tp / np.maximum(cm.sum(axis=0), 1)
    rec = tp / np.maximum(cm.sum(axis=1), 1)
    f1 = 2 * tp / np.maximum(cm.sum(axis=0) + cm.sum(axis=1), 1)
    return cm, prec, rec, f1


def worst_units(y: np.ndarray, p: np.ndarray, unit: np.ndarray, labels, top: int = 12) -> list[dict]:
    """The source units with the most wrong windows (a diagnostic of where errors come from:
    one recording or rendering taken for another class, or errors spread thin)."""
    rows = []
    for u in np.unique(unit):
        sel = unit == u
        wrong = sel & (p != y)
        if wrong.any():
            got = np.bincount(p[wrong], minlength=len(labels))
            rows.append({"unit": str(u), "class": labels[int(y[sel][0])], "windows": int(sel.sum()),
                         "wrong": int(wrong.sum()),
                         "taken_for": {labels[k]: int(v) for k, v in enumerate(got) if v}})
    rows.sort(key=lambda r: -r["wrong"])
    return rows[:top]


def split_groups(data: str) -> dict[str, set]:
    """Units of each later split group from the builder's split.json (builder v6 on): their units
    were split among themselves, so the other TEST units are those of the earlier builder."""
    try:
        with open(os.path.join(data, "split.json")) as f:
            return {g: set(u) for g, u in json.load(f).get("groups", {}).items()}
    except (OSError, ValueError):
        return {}


def by_group(y: np.ndarray, preds: dict, unit: np.ndarray, groups: dict, n: int) -> dict:
    """Accuracy and macro-F1 of each variant on the TEST windows of each split group ("v5": the
    units every earlier builder had, the same TEST units as before; then each later group)."""
    later = set().union(*groups.values())
    masks = {"v5": ~np.isin(unit, sorted(later))}
    masks.update({g: np.isin(unit, sorted(u)) for g, u in groups.items()})
    out = {}
    for g, m in masks.items():
        out[g] = {"windows": int(m.sum()),
                  "per_class_windows": np.bincount(y[m], minlength=n).tolist()}
        for name, p in preds.items():
            out[g][name] = {"accuracy": float(np.mean(p[m] == y[m])) if m.any() else None,
                            "macro_f1": float(per_class(y[m], p[m], n)[3][np.bincount(y[m], minlength=n) > 0].mean())
                            if m.any() else None}
    return out


def run_variant(path: str, backend: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities for every window and the per-call times (s), through a bound session."""
    from edge_runtime.backends import load_session

    s = load_session(path, backend=backend, threads=1)
    inp = np.zeros((1,) + x.shape[1:], np.float32)
    probs = np.zeros((1, 7), np.float32)
    emb = np.zeros((1, int(s.outputs[[o.name for o in s.outputs].index("embedding")].shape[-1])), np.float32)
    call = s.bind({"logmel": inp}, {"probs": probs, "embedding": emb})
    for i in range(20):
        inp[0] = x[i % len(x)]
        call.run()
    out = np.zeros((len(x), probs.shape[1]), np.float32)
    t = np.zeros(len(x))
    for i in range(len(x)):
        inp[0] = x[i]
        t0 = time.perf_counter()
        call.run()
        t[i] = time.perf_counter() - t0
        out[i] = probs[0]
    return out, t


def frontend_ms_per_window(hop_frames: int = 25, reps: int = 400) -> float:
    """The node's log-mel work per classified window: ``hop_frames`` STFT + mel frames."""
    from edge_runtime.classify.features import HOP, LogMelFrontEnd

    fe = LogMelFrontEnd(1)
    x = (np.random.default_rng(0).standard_normal((1, HOP)) * 0.1).astype(np.float32)
    for _ in range(50):
        fe.push(x)
    t0 = time.perf_counter()
    for _ in range(reps * hop_frames):
        fe.push(x)
    return (time.perf_counter() - t0) / reps * 1e3


def node_cost(variant: str, seconds: float = 60.0) -> dict:
    """The whole node in a pipeline (16 kHz, 10 ms blocks, one thread): engine time per second
    of audio and per classified window (4 per second), on pink-ish noise at -30 dBFS."""
    from edge_runtime.engine import Pipeline
    from edge_runtime.nodes.classify import Classify

    node = Classify(variant=variant)
    pipe = Pipeline([node], sample_rate=16000, block_size=160)
    pipe.prepare(1)
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    x -= np.convolve(x, np.ones(64) / 64, mode="same").astype(np.float32)
    x *= np.float32(0.03 / (np.std(x) + 1e-9))
    pipe.process_array(x[None, :16000])
    pipe.reset_stats()
    pipe.process_array(x[None])
    st = pipe.stats()
    per_s = st["nodes"][0]["mean_us"] * 100 / 1e3
    return {"variant": node.variant_label, "ms_per_audio_s": per_s, "ms_per_window": per_s / 4,
            "block_ms_p99": st["block_ms_p99"], "block_ms_max": st["block_ms_max"], "windows": node.windows}


def stream_eval(variant: str, n_streams: int, cache: str, seed: int = 5, seconds: float = 30.0) -> dict:
    """Decisions of the whole node (smoothing, hysteresis) on streams of TEST-split segments.

    Each stream: consecutive segments of random classes, 2-8 s each, made by the data builder
    from TEST units only. Every 250 ms the node's current label is compared with the class of
    the segment being played; the first 1.5 s after each change is reported apart (the
    decision needs up to a window plus the smoothing to follow)."""
    sys.path.insert(0, os.path.join(ROOT, "firmware_tools", "data"))
    from pathlib import Path

    import build_classify as bc

    from edge_runtime.engine import Pipeline
    from edge_runtime.nodes.classify import LABELS, Classify

    items = bc.all_items(Path(cache), 2, log=lambda *_: None)
    pool = bc._pool(bc.split_items(items)["test"])
    rng = np.random.default_rng(seed)
    node = Classify(variant=variant)
    pipe = Pipeline([node], sample_rate=16000, block_size=160)
    pipe.prepare(1)
    steady = [0, 0]
    settle = [0, 0]
    lags = []
    for _ in range(n_streams):
        segs, truth = [], []
        total = 0
        while total < seconds * 16000:
            c = int(rng.integers(0, len(LABELS)))
            n = int(rng.uniform(2.0, 8.0) * 16000)
            segs.append(bc.make_window(LABELS[c], pool, "test", rng, n, partial=False))
            truth.append((total, total + n, c))
            total += n
        x = np.concatenate(segs)
        pipe.reset()
        hop = 4000
        t = 0
        seg_i = 0
        switched_at = {}
        for b in range(len(x) // 160):
            pipe.input[0] = x[b * 160:(b + 1) * 160]
            pipe.process_block()
            t = (b + 1) * 160
            if t % hop or t < 16000:
                continue
            while seg_i + 1 < len(truth) and t > truth[seg_i][1]:
                seg_i += 1
            start, end, c = truth[seg_i]
            ok = node.current_index == c
            if seg_i > 0 and seg_i not in switched_at and ok:
                switched_at[seg_i] = (t - start) / 16000
            bucket = settle if t - start < 24000 and seg_i > 0 else steady
            bucket[0] += int(ok)
            bucket[1] += 1
        lags += list(switched_at.values())
        pipe.drain_events()
    return {"variant": node.variant_label, "streams": n_streams, "seconds_each": seconds,
            "steady_accuracy": steady[0] / max(steady[1], 1), "steady_checks": steady[1],
            "settling_accuracy": settle[0] / max(settle[1], 1), "settling_checks": settle[1],
            "switch_latency_median_s": float(np.median(lags)) if lags else None,
            "segments_followed": len(lags)}


def confusion_figure(cms: dict, labels, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cms), figsize=(5.2 * len(cms), 4.8))
    axes = np.atleast_1d(axes)
    for ax, (title, cm) in zip(axes, cms.items()):
        norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(labels)):
            for j in range(len(labels)):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    atomic.commit(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="output folder of build_classify.py")
    ap.add_argument("--models", default=os.path.join(ROOT, "models_int8", "classify"))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--limit", type=int, help="use the first N test windows of each class (quick runs)")
    ap.add_argument("--streams", type=int, default=0,
                    help="also run the whole node on N 30 s streams of TEST segments (needs the data cache)")
    ap.add_argument("--cache", default=os.path.join(ROOT, "firmware_tools", "work", "cache"))
    ap.add_argument("--vad-data", help="also compare our VAD with Silero VAD on this build_vad.py output")
    a = ap.parse_args(argv)
    if a.vad_data and not os.path.exists(os.path.join(a.vad_data, "clips.jsonl")):
        raise SystemExit(f"--vad-data {a.vad_data}: no clips.jsonl there (expected the output folder of "
                         "firmware_tools/data/build_vad.py)")
    from edge_runtime.nodes.classify import LABELS

    z = np.load(os.path.join(a.data, "test.npz"))
    x, y = z["x"].astype(np.float32), z["y"]
    unit = z["unit"] if "unit" in z.files else None   # sets built before the unit record: none
    if a.limit:
        keep = np.concatenate([np.nonzero(y == c)[0][: a.limit] for c in range(len(LABELS))])
        x, y = x[keep], y[keep]
        unit = unit[keep] if unit is not None else None
    n = len(LABELS)
    res = {"windows": int(len(y)), "labels": list(LABELS), "data": os.path.abspath(a.data), "variants": {}}
    cms = {}
    for name, backend in VARIANTS:
        path = os.path.join(a.models, name)
        if not os.path.exists(path):
            continue
        try:
            probs, t = run_variant(path, backend, x)
        except ImportError as e:
            print(f"{name}: skipped ({e})")
            continue
        p = probs.argmax(axis=1)
        cm, prec, rec, f1 = per_class(y, p, n)
        r = {"backend": backend, "size_bytes": os.path.getsize(path) + (
                os.path.getsize(path[:-4] + ".bin") if path.endswith(".xml") else 0),
             "accuracy": float(np.mean(p == y)), "macro_f1": float(f1.mean()),
             "per_class": {LABELS[c]: {"precision": float(prec[c]), "recall": float(rec[c]), "f1": float(f1[c])}
                           for c in range(n)},
             "confusion": cm.tolist(),
             "ms_per_window_median": float(np.median(t) * 1e3), "ms_per_window_p99": float(np.percentile(t, 99) * 1e3)}
        res["variants"][name] = r
        if name in ("classify_fp32.onnx", "classify_int8.onnx"):
            cms[f"{name} (acc {r['accuracy']:.3f})"] = cm
            res.setdefault("_probs", {})[name] = probs
        print(f"{name:30} {backend:12} acc {r['accuracy']:.4f}  macro-F1 {r['macro_f1']:.4f}  "
              f"{r['ms_per_window_median']:.3f} ms/window (p99 {r['ms_per_window_p99']:.3f})  {r['size_bytes']} B")
    probs = res.pop("_probs", {})
    if unit is not None and "classify_int8.onnx" in probs:
        res["worst_units"] = worst_units(y, probs["classify_int8.onnx"].argmax(1), unit, LABELS)
        groups = split_groups(a.data)
        if groups:
            res["by_group"] = by_group(y, {k: v.argmax(1) for k, v in probs.items()}, unit, groups, n)
    fp, i8 = res["variants"].get("classify_fp32.onnx"), res["variants"].get("classify_int8.onnx")
    if fp and i8:
        res["int8_vs_fp32"] = {"accuracy_points": round(100 * (i8["accuracy"] - fp["accuracy"]), 2),
                               "macro_f1_points": round(100 * (i8["macro_f1"] - fp["macro_f1"]), 2),
                               "argmax_agreement": float(np.mean(probs["classify_fp32.onnx"].argmax(1) ==
                                                                 probs["classify_int8.onnx"].argmax(1)))}
    res["frontend_ms_per_window"] = frontend_ms_per_window()
    res["node"] = {}
    for v in ("fp32", "onnx:int8-static"):
        try:
            res["node"][v] = node_cost(v)
        except Exception as e:  # a variant not shipped: report, do not hide
            res["node"][v] = {"error": str(e)}
    if a.streams:
        res["streams"] = stream_eval("onnx:int8-static", a.streams, a.cache)
        print("streams:", res["streams"])
    os.makedirs(a.out, exist_ok=True)
    fig = os.path.join(a.out, "classify_confusion.png")
    if cms:
        confusion_figure(cms, LABELS, fig)
    with atomic.AtomicFile(os.path.join(a.out, "classify.json")) as f:
        json.dump(res, f, indent=1)
    md = report(res, a, fig)
    if a.vad_data:   # last: eval_vad pins the process to one core for its CPU timing
        sys.path.insert(0, HERE)
        import eval_vad

        vad_md = os.path.join(a.out, "vad.md")
        eval_vad.main(["--data", a.vad_data, "--out", vad_md, "--json", os.path.join(a.out, "vad.json")]
                      + (["--limit", str(a.limit)] if a.limit else []))
        table = open(vad_md).read().split("## By condition")[0].split("\n", 2)[2].strip()
        md += "\n## Voice activity detection: ours vs Silero VAD\n\n" + table + \
            f"\n\nBy condition: [{os.path.basename(vad_md)}]({os.path.basename(vad_md)}).\n"
    with atomic.AtomicFile(os.path.join(a.out, "classify.md")) as f:
        f.write(md)
    print(md)
    return 0


def report(res: dict, a, fig: str) -> str:
    labels = res["labels"]
    L = ["# Sound classifier: held-out TEST split", "",
         f"`python firmware_tools/eval/eval_classify.py --data {os.path.relpath(a.data, ROOT)}"
         + (f" --limit {a.limit}" if a.limit else "") + (f" --streams {a.streams}" if a.streams else "")
         + (f" --vad-data {os.path.relpath(a.vad_data, ROOT)}" if a.vad_data else "") + "`", "",
         f"{res['windows']} windows of 0.99 s ({res['windows'] // len(labels)} per class) from split units "
         "(speakers, voices, recordings, renderings, synthetic seeds) that no TRAIN or VAL window used. "
         "Times: one model call on one thread through edge_runtime's bound session (median / p99 over "
         f"the test windows); the node's log-mel front end adds {res['frontend_ms_per_window']:.3f} ms per "
         "window (25 frames at the 250 ms hop).", "",
         "| variant | backend | size | accuracy | macro-F1 | ms/window (median) | p99 |", "|---|---|---|---|---|---|---|"]
    for name, r in res["variants"].items():
        L.append(f"| {name} | {r['backend']} | {r['size_bytes'] / 1024:.0f} KB | {r['accuracy']:.4f} | "
                 f"{r['macro_f1']:.4f} | {r['ms_per_window_median']:.3f} | {r['ms_per_window_p99']:.3f} |")
    for v, r in res.get("node", {}).items():
        if "error" not in r:
            L.append(f"\nWhole node ({r['variant']}, 10 ms blocks, 60 s stream): {r['ms_per_audio_s']:.3f} ms per "
                     f"second of audio = {r['ms_per_window']:.3f} ms per window; block p99 {r['block_ms_p99']:.3f} ms, "
                     f"max {r['block_ms_max']:.3f} ms.")
    st = res.get("streams")
    if st:
        L += ["", f"Streams ({st['variant']}, `--streams {st['streams']}`): {st['streams']} x {st['seconds_each']:.0f} s of "
                  "TEST segments (2-8 s each, random classes) through the whole node (smoothing 4, hysteresis 0.1); "
                  f"the label in force every 250 ms is right {100 * st['steady_accuracy']:.1f}% of the time "
                  f"({st['steady_checks']} checks) away from changes and {100 * st['settling_accuracy']:.1f}% in the "
                  f"1.5 s after a change; median time to follow a change {st['switch_latency_median_s']:.2f} s "
                  f"({st['segments_followed']} changes followed)."]
    if "int8_vs_fp32" in res:
        d = res["int8_vs_fp32"]
        L += ["", f"INT8 static (ONNX) vs FP32: accuracy {d['accuracy_points']:+.2f} points, macro-F1 "
                  f"{d['macro_f1_points']:+.2f} points, same arg-max on {100 * d['argmax_agreement']:.2f}% of windows."]
    for name in ("classify_fp32.onnx", "classify_int8.onnx"):
        r = res["variants"].get(name)
        if not r:
            continue
        L += ["", f"## {name}: per class", "", "| class | precision | recall | F1 |", "|---|---|---|---|"]
        for c in labels:
            pc = r["per_class"][c]
            L.append(f"| {c} | {pc['precision']:.3f} | {pc['recall']:.3f} | {pc['f1']:.3f} |")
        L += ["", "Confusion (rows true, columns predicted):", "",
              "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for i, c in enumerate(labels):
            L.append(f"| {c} | " + " | ".join(str(v) for v in r["confusion"][i]) + " |")
    bg = res.get("by_group")
    if bg:
        names = [k for k in ("classify_fp32.onnx", "classify_int8.onnx") if k in bg["v5"]]
        L += ["", "## By split group", "",
              "The builder's later sources were split among themselves (split.json `groups`), so `v5` "
              "is the TEST units every earlier builder had; macro-F1 over the classes a group has.", "",
              "| group | windows | " + " | ".join(f"{k} accuracy | {k} macro-F1" for k in names) + " |",
              "|---|---|" + "---|---|" * len(names)]
        for g, r in bg.items():
            cells = " | ".join(f"{r[k]['accuracy']:.4f} | {r[k]['macro_f1']:.4f}" if r[k]["accuracy"] is not None
                               else "— | —" for k in names)
            L.append(f"| {g} | {r['windows']} | {cells} |")
    wu = res.get("worst_units")
    if wu:
        total = sum(r["wrong"] for r in wu)
        L += ["", "## Where the INT8 model's errors come from (TEST source units with the most wrong windows)", "",
              f"A diagnostic, not for tuning: these {len(wu)} units hold {total} of the "
              f"{round(res['windows'] * (1 - res['variants']['classify_int8.onnx']['accuracy']))} wrong windows.", "",
              "| unit | class | windows | wrong | taken for |", "|---|---|---|---|---|"]
        for r in wu:
            L.append(f"| {r['unit']} | {r['class']} | {r['windows']} | {r['wrong']} | "
                     + ", ".join(f"{k} {v}" for k, v in r["taken_for"].items()) + " |")
    L += ["", f"![confusion]({os.path.basename(fig)})", ""]
    return "\n".join(L)


if __name__ == "__main__":
    sys.exit(main())

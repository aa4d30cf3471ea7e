"""Frame-level VAD evaluation: our model (FP32 and its variants) vs Silero VAD on the same audio.

    python firmware_tools/eval/eval_vad.py --data firmware_tools/work/vad16k \
        [--variants fp32,int8-static,silero] [--out firmware_tools/eval/results/vad.md]

The test split of ``firmware_tools/data/build_vad.py`` (voices, recordings and noise families
never in training). Every method runs through the runtime's ``vad`` node and the model layer
(manifest variant, sha256 checked; Silero's ONNX file from the installed ``silero-vad`` package).

* **Quality**: each model's speech probability at its own default threshold 0.5, per 10 ms frame,
  against the labels of the clean speech (build_vad.py): F1, precision, recall, ROC-AUC, and the
  false-alarm rate on clips without speech; by condition (SNR, no-speech clips, tones). Ours gives
  one probability per 10 ms hop from the audio up to the end of that hop (causal); Silero gives
  one per 32 ms chunk, and each 10 ms frame takes the chunk that contains the frame's centre
  (up to 22 ms of look-ahead: in Silero's favour). When our model steps K frames per call, the K
  frames of a step come out together at its end (frame-accurate, up to (K-1) x 10 ms later). Also the F1 of the node's decision
  (``current_label`` after its hysteresis: attack 20 ms, hangover 200 ms).
* **CPU time**: process time of the ``vad`` node in the block loop (10 ms blocks) per second of
  audio, pinned to one core, one inference thread; 5 rounds over the same 120 s interleaving the
  methods, best round of each.
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
sys.path.insert(0, os.path.join(ROOT, "firmware_tools", "data"))

from edge_runtime import atomic  # noqa: E402

HOP = 160


def _which(variant: str) -> dict:
    """A manifest variant (``fp32``, ``silero``...) or a candidate model file (``path/vad_fp32.onnx``)."""
    return {"model": variant} if variant.endswith((".onnx", ".tflite")) else {"variant": variant}


def prf(pred: np.ndarray, ref: np.ndarray) -> dict:
    tp = int(np.sum(pred & ref))
    fp = int(np.sum(pred & ~ref))
    fn = int(np.sum(~pred & ref))
    p = tp / max(tp + fp, 1)
    r = tp / max(tp + fn, 1)
    return {"f1": 2 * tp / max(2 * tp + fp + fn, 1), "precision": p, "recall": r, "frames": int(ref.size)}


def to_frames(probs: np.ndarray, node, n_frames: int) -> np.ndarray:
    """Per-10 ms-frame probabilities (see the module docstring): ours gives them directly, Silero's
    512-sample chunks are mapped to the frames whose centre they contain."""
    if node.kind == "ours":
        out = np.zeros(n_frames, np.float32)
        m = min(n_frames, len(probs))
        out[:m] = probs[:m]
        return out
    centre = np.arange(n_frames) * HOP + HOP // 2
    k = np.minimum(centre // node.step_samples, len(probs) - 1)
    return probs[k]


def make_node(variant: str, threads: int = 1):
    from edge_runtime.nodes.vad import Vad

    node = Vad(**_which(variant), threads=threads)
    node.prepare(16000, HOP, 1)
    return node


def decisions(node, audio: np.ndarray) -> np.ndarray:
    """The node's decision after each 10 ms block, streaming from a reset state."""
    node.reset()
    n = len(audio) // HOP
    out = np.zeros(n, bool)
    inp = np.zeros((1, HOP), np.float32)
    o = np.zeros((1, HOP), np.float32)
    for t in range(n):
        inp[0] = audio[t * HOP:(t + 1) * HOP]
        node.process(inp, o)
        out[t] = node.current_index == 1
    node.reset()
    return out


def cpu_ms_per_s(variants: list[str], audio: np.ndarray, rounds: int = 5) -> dict[str, float]:
    """Process time of the vad node in a Pipeline, per second of audio (one core, one thread), for
    each variant: the rounds interleave the variants (this VM's speed drifts), best round each."""
    from edge_runtime.engine import Pipeline

    from edge_runtime.nodes.vad import Vad

    n = len(audio) // HOP
    blocks = audio[: n * HOP].reshape(n, 1, HOP)
    pipes = {}
    for v in variants:
        pipes[v] = Pipeline([Vad(**_which(v), threads=1)], sample_rate=16000, block_size=HOP)
        pipes[v].prepare(1)
    best = {v: float("inf") for v in variants}
    for r in range(rounds):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            pipe = pipes[v]
            inp = pipe.input
            pipe.reset()
            t0 = time.process_time()
            for b in blocks:
                np.copyto(inp, b)
                pipe.process_block()
            best[v] = min(best[v], time.process_time() - t0)
    return {v: 1000.0 * t / (n * HOP / 16000) for v, t in best.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "firmware_tools", "work", "vad16k"))
    ap.add_argument("--variants", default="fp32,int8-static,int8-dynamic,tflite:fp32,tflite:int8-dynamic,silero")
    ap.add_argument("--out", default=os.path.join(ROOT, "firmware_tools", "eval", "results", "vad.md"))
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    ap.add_argument("--cpu", type=int, default=None, help="core to pin to (default: the last allowed)")
    ap.add_argument("--timing-seconds", type=float, default=120.0)
    ap.add_argument("--limit", type=int, default=None, help="only the first N test clips (quick checks)")
    a = ap.parse_args(argv)

    from sklearn.metrics import roc_auc_score

    from build_vad import load_split

    from edge_runtime.errors import ModelError

    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {a.cpu if a.cpu is not None else cores[-1]})
    audio_i16, labels = load_split(a.data, "test")
    infos = [json.loads(line) for line in open(os.path.join(a.data, "clips.jsonl"))]
    infos = [i for i in infos if i["split"] == "test"]
    assert len(infos) == len(audio_i16), "clips.jsonl does not match the test shards"
    if a.limit:
        audio_i16, labels, infos = audio_i16[:a.limit], labels[:a.limit], infos[:a.limit]
    audio = audio_i16.astype(np.float32) / 32768.0
    ref = labels.astype(bool)
    n_frames = ref.shape[1]
    groups = {
        "all": np.ones(len(infos), bool),
        "no speech": np.array([i.get("speaker") is None for i in infos]),
        "SNR < 5 dB": np.array([i.get("snr_db", 99) < 5 for i in infos]),
        "SNR 5-15 dB": np.array([5 <= i.get("snr_db", 99) < 15 for i in infos]),
        "SNR >= 15 dB or clean": np.array([i.get("speaker") is not None and i.get("snr_db", 99) >= 15 for i in infos]),
        "recorded speech": np.array([bool(i.get("speaker")) and not i["speaker"].startswith(("espeak", "festival"))
                                     for i in infos]),
        "synthesized speech (espeak-ng, festival)": np.array([bool(i.get("speaker")) and i["speaker"].startswith(
            ("espeak", "festival")) for i in infos]),
        "quiet (speech below -35 dBFS)": np.array([bool(i.get("speaker")) and i["level_dbfs"] < -35 for i in infos]),
        "with tones/beeps": np.array(["tones" in i.get("noise", []) for i in infos]),
        "reverberant": np.array([bool(i.get("reverb")) for i in infos]),
    }
    timing_audio = audio.reshape(-1)[: int(a.timing_seconds * 16000)]
    results = {"data": os.path.abspath(a.data), "clips": len(infos), "minutes": audio.size / 16000 / 60,
               "speech_fraction": float(ref.mean()), "methods": {}}
    for variant in [v.strip() for v in a.variants.split(",") if v.strip()]:
        try:
            node = make_node(variant)
        except ModelError as e:
            print(f"{variant}: skipped ({e})", flush=True)
            results["methods"][variant] = {"skipped": str(e)}
            continue
        label = node.variant_label
        t0 = time.time()
        probs = np.zeros(ref.shape, np.float32)
        dec = np.zeros(ref.shape, bool)
        for c in range(len(audio)):
            p, _ = node.frame_probabilities(audio[c])
            probs[c] = to_frames(p, node, n_frames)
            d = decisions(node, audio[c])
            dec[c, :len(d)] = d[:n_frames]
        row = {"label": label, "groups": {}}
        for g, sel in groups.items():
            if not sel.any():
                continue
            pr, rf = probs[sel] > 0.5, ref[sel]
            m = prf(pr, rf)
            m["false_alarm"] = float(np.sum(pr & ~rf) / max(np.sum(~rf), 1))
            if rf.any() and (~rf).any():
                m["auc"] = float(roc_auc_score(rf.reshape(-1), probs[sel].reshape(-1)))
            m["clips"] = int(sel.sum())
            row["groups"][g] = m
        row["decision"] = prf(dec, ref)
        # diagnostic only (the threshold is chosen on the test set itself): F1 at each model's best threshold
        best = max((prf(probs > th, ref)["f1"], th) for th in np.arange(0.05, 0.96, 0.05))
        row["best_threshold"] = {"f1": best[0], "threshold": round(float(best[1]), 2)}
        row["seconds"] = round(time.time() - t0, 1)
        results["methods"][variant] = row
        al = row["groups"]["all"]
        print(f"{variant:22s} {label:38s} F1 {100 * al['f1']:.2f}  P {100 * al['precision']:.2f}  "
              f"R {100 * al['recall']:.2f}  AUC {al.get('auc', float('nan')):.4f}  decision F1 "
              f"{100 * row['decision']['f1']:.2f}", flush=True)
    timed = [v for v, r in results["methods"].items() if "groups" in r]
    for v, ms in cpu_ms_per_s(timed, timing_audio).items():
        results["methods"][v]["cpu_ms_per_audio_s"] = ms
        print(f"{v:22s} CPU {ms:.2f} ms per s of audio", flush=True)
    write_markdown(results, a.out)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    print(f"wrote {a.out}")
    return 0


def write_markdown(res: dict, path: str) -> None:
    ms = {k: v for k, v in res["methods"].items() if "skipped" not in v}
    lines = ["# VAD evaluation", "",
             f"`python firmware_tools/eval/eval_vad.py` on the TEST split of `firmware_tools/data/build_vad.py` "
             f"({res['clips']} clips, {res['minutes']:.1f} min, speech in {100 * res['speech_fraction']:.1f}% of "
             "10 ms frames; voices, recordings and noise families disjoint from training). Frame-level scores of "
             "each model's probability at threshold 0.5; CPU = process time of the `vad` node in the block loop "
             "per second of audio, one core, one thread. See the script's docstring for the frame alignment.", "",
             "| method | variant | F1 | precision | recall | ROC-AUC | false alarms (no-speech frames) | decision F1 "
             "(hysteresis) | F1 at its best threshold (diagnostic) | CPU ms per s of audio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for k, v in ms.items():
        g = v["groups"]["all"]
        lines.append(f"| {'Silero VAD' if k == 'silero' else 'ours ' + k} | {v['label']} | {100 * g['f1']:.2f} | "
                     f"{100 * g['precision']:.2f} | {100 * g['recall']:.2f} | {g.get('auc', float('nan')):.4f} | "
                     f"{100 * g['false_alarm']:.2f}% | {100 * v['decision']['f1']:.2f} | "
                     f"{100 * v['best_threshold']['f1']:.2f} (at {v['best_threshold']['threshold']:.2f}) | "
                     f"{v['cpu_ms_per_audio_s']:.2f} |")
    if "silero" in ms and "fp32" in ms:
        a, b = ms["fp32"], ms["silero"]
        lines += ["", f"Ours FP32 vs Silero: F1 {100 * (a['groups']['all']['f1'] - b['groups']['all']['f1']):+.2f} "
                      f"points, CPU time {a['cpu_ms_per_audio_s'] / b['cpu_ms_per_audio_s']:.3f}x of Silero's "
                      "(target: within 2 points at no more than 0.25x)."]
    lines += ["", "## By condition (F1 / false-alarm rate)", ""]
    gnames = list(next(iter(ms.values()))["groups"]) if ms else []
    lines.append("| condition | clips | " + " | ".join(('Silero' if k == 'silero' else k) for k in ms) + " |")
    lines.append("|---|---|" + "---|" * len(ms))
    for gname in gnames:
        cells = []
        for k, v in ms.items():
            g = v["groups"].get(gname)
            cells.append("—" if g is None else (f"FA {100 * g['false_alarm']:.2f}%" if gname == "no speech"
                                                else f"{100 * g['f1']:.2f} / FA {100 * g['false_alarm']:.2f}%"))
        clips = next(iter(ms.values()))["groups"][gname]["clips"]
        lines.append(f"| {gname} | {clips} | " + " | ".join(cells) + " |")
    skipped = {k: v["skipped"] for k, v in res["methods"].items() if "skipped" in v}
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items())]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic.AtomicFile(path) as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())

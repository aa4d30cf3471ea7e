"""Evaluate the separators on held-out renders: SDR (BSS-eval v4 style) and SI-SDR per stem.

    python firmware_tools/eval/eval_separate.py [--data firmware_tools/work/separate] [--limit 0]

Data: ``test.npy`` of ``firmware_tools/data/build_separate.py`` -- pieces never in training,
rendered with the TimGM6mb sound font (never in training), "other" parts on organ/reed
programmes and bass on programmes 34/37/39 (never in training), drum-sample grooves from
lmms-common (training used sonic-pi's), vocals from held-out speakers (pocketsphinx-testdata,
held-out fillets-cs characters and ktuberling languages) or the singing voice with the test
formant table. ``speech_test.npz``: held-out speech over held-out music at -5..+10 dB SNR.

Methods, each on the same 10 s excerpts:

* ``ours`` -- the shipped model (each variant) streaming through the ``separate`` pipeline
  (16 kHz, block 256, the node's own latency compensated as the runner does);
* ``oracle-irm`` -- the ideal ratio mask |S_i| / sum_j |S_j| on the node's STFT: the ceiling of a
  mask on this STFT (Open-Unmix's "IRM1" oracle);
* ``baseline`` -- no learning: drums = HPSS percussive part (median filters 17 hops x 17 bins,
  soft masks, Fitzgerald 2010), bass = 4th-order Butterworth low-pass at 150 Hz of the mix,
  vocals = HPSS harmonic part band-passed 200-4000 Hz, other = HPSS harmonic part high-passed
  at 150 Hz; for speech/background: speech = the mix band-passed 300-3400 Hz;
* ``mix`` -- the mixture itself as every stem's estimate (what SI-SDRi is measured against).

SDR: BSS-eval v4 style as museval computes it for SiSEC/MUSDB -- a 512-tap time-invariant
distortion filter per stem (``fast_bss_eval.sdr``, no permutation; its conjugate-gradient solve,
within 0.01 dB of the direct one here), on 1 s windows, windows whose
reference is silent skipped; a stem's score per excerpt is the median over its windows, the
table gives the median over excerpts (SiSEC's convention) and the mean. SI-SDR: on whole
excerpts (Le Roux et al. 2019). Real-time factor and worst hop: the INT8 pipeline on one thread
over 60 s of test mixes (``Pipeline.stats``: engine time / audio time, the slowest 16 ms block).

Writes ``firmware_tools/eval/results/separate.json`` (the shipping step reads its headline
metrics) and prints the markdown table that goes into ``results/separate.md``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SR = 16000
N_FFT, HOP = 512, 256
WIN_S = 1.0


def stft(x: np.ndarray) -> np.ndarray:
    """The node's STFT offline: frame k covers x[(k+1)*hop - n_fft, (k+1)*hop)."""
    from edge_runtime._spectral import make_window

    w = np.asarray(make_window("sqrt_hann", N_FFT), np.float32)
    xp = np.concatenate([np.zeros(N_FFT - HOP, np.float32), x, np.zeros(N_FFT, np.float32)])
    n = (len(xp) - N_FFT) // HOP + 1
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    return np.fft.rfft(xp[idx] * w, axis=-1)


def istft(X: np.ndarray, n: int) -> np.ndarray:
    """Overlap-add inverse of :func:`stft` (sqrt-Hann synthesis), aligned with the input, ``n`` samples."""
    from edge_runtime._spectral import make_window

    w = np.asarray(make_window("sqrt_hann", N_FFT), np.float32)
    frames = np.fft.irfft(X, n=N_FFT, axis=-1) * w
    out = np.zeros(HOP * (len(frames) - 1) + N_FFT)
    for k, f in enumerate(frames):
        out[k * HOP:k * HOP + N_FFT] += f
    return out[N_FFT - HOP:N_FFT - HOP + n].astype(np.float32)


def oracle_irm(stems: np.ndarray) -> np.ndarray:
    mix = stems.sum(axis=0)
    X = stft(mix)
    S = np.stack([np.abs(stft(s)) for s in stems])
    M = S / (S.sum(axis=0) + 1e-12)
    return np.stack([istft(m * X, len(mix)) for m in M])


def hpss(x: np.ndarray, k: int = 17) -> tuple[np.ndarray, np.ndarray]:
    from scipy.ndimage import median_filter

    X = stft(x)
    mag = np.abs(X)
    H = median_filter(mag, size=(k, 1))       # smooth along time: harmonic
    P = median_filter(mag, size=(1, k))       # smooth along frequency: percussive
    mh = H ** 2 / (H ** 2 + P ** 2 + 1e-12)
    return istft(mh * X, len(x)), istft((1 - mh) * X, len(x))


def _sos(kind, f, order=4):
    from scipy.signal import butter

    return butter(order, f, btype=kind, fs=SR, output="sos")


def baseline4(mix: np.ndarray) -> np.ndarray:
    from scipy.signal import sosfilt

    h, p = hpss(mix)
    voc = sosfilt(_sos("bandpass", [200, 4000]), h)
    bass = sosfilt(_sos("lowpass", 150), mix)
    other = sosfilt(_sos("highpass", 150), h)
    return np.stack([voc, p, bass, other]).astype(np.float32)


def baseline2(mix: np.ndarray) -> np.ndarray:
    from scipy.signal import sosfilt

    sp = sosfilt(_sos("bandpass", [300, 3400]), mix).astype(np.float32)
    return np.stack([sp, mix - sp])


def run_ours(model_path: str, mixes: np.ndarray, stems: tuple) -> np.ndarray:
    """Stems of every mix through the ``separate`` node streaming (block 256, latency compensated)."""
    from edge_runtime.engine import Pipeline
    from edge_runtime.nodes.separate import Separate

    node = Separate(model=model_path, stems=",".join(stems))
    pipe = Pipeline([node], sample_rate=SR, block_size=256, name="separate")
    pipe.prepare(1)
    out = []
    for x in mixes:
        pipe.reset()
        o = pipe.process_array_buses(x[None])
        out.append(np.stack([o[s][0] for s in stems]))
    return np.stack(out)


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    ref = ref.astype(np.float64) - ref.mean()
    est = est.astype(np.float64) - est.mean()
    a = np.dot(est, ref) / (np.dot(ref, ref) + 1e-12)
    t = a * ref
    return float(10 * np.log10((np.dot(t, t) + 1e-12) / (np.dot(est - t, est - t) + 1e-12)))


def sdr_v4(ref: np.ndarray, est: np.ndarray) -> float:
    """Median over 1 s windows of BSS-eval SDR (512-tap distortion filter); NaN if all windows silent."""
    import fast_bss_eval

    W = int(WIN_S * SR)
    vals = []
    for a in range(0, len(ref) - W + 1, W):
        r, e = ref[a:a + W].astype(np.float64), est[a:a + W].astype(np.float64)
        if np.sum(r ** 2) < 1e-8 * W:         # a silent reference: SDR undefined (museval skips it)
            continue
        if np.sum(e ** 2) < 1e-12:
            vals.append(-30.0)                # an all-silent estimate of a sounding stem: a floor
            continue
        v = float(fast_bss_eval.sdr(r[None], e[None] + 1e-9 * np.random.default_rng(a).standard_normal(W)[None],
                                    filter_length=512, zero_mean=False, clamp_db=60)[0])
        vals.append(v)
    return float(np.median(vals)) if vals else float("nan")


def score(refs: np.ndarray, ests: np.ndarray, names: tuple, mixes: np.ndarray) -> dict:
    """Per stem: SDR (median and mean over excerpts of the per-excerpt median over windows), SI-SDR, SI-SDRi."""
    res = {}
    for k, name in enumerate(names):
        sdr, si, sii = [], [], []
        for i in range(len(refs)):
            r, e = refs[i, k], ests[i, k]
            if np.sum(r.astype(np.float64) ** 2) < 1e-6:
                continue
            v = sdr_v4(r, e)
            if np.isfinite(v):
                sdr.append(v)
            s = si_sdr(r, e)
            si.append(s)
            sii.append(s - si_sdr(r, mixes[i]))
        res[name] = {"sdr_median": float(np.median(sdr)), "sdr_mean": float(np.mean(sdr)),
                     "si_sdr_mean": float(np.mean(si)), "si_sdri_mean": float(np.mean(sii)), "n": len(sdr)}
    res["_mean"] = {"sdr_median": float(np.mean([res[n]["sdr_median"] for n in names])),
                    "sdr_mean": float(np.mean([res[n]["sdr_mean"] for n in names])),
                    "si_sdr_mean": float(np.mean([res[n]["si_sdr_mean"] for n in names]))}
    return res


def timing(model_path: str, mixes: np.ndarray, stems: tuple, seconds: float = 60.0) -> dict:
    """Engine real-time factor and worst block on one thread over ``seconds`` of mixes, streaming."""
    from edge_runtime.engine import Pipeline
    from edge_runtime.nodes.separate import Separate

    x = np.concatenate(list(mixes))[: int(seconds * SR)]
    pipe = Pipeline([Separate(model=model_path, stems=",".join(stems), threads=1)], sample_rate=SR, block_size=256)
    pipe.prepare(1)
    pipe.process_array(x[None, :SR])            # warm-up
    pipe.reset()
    pipe.reset_stats()
    t0 = time.perf_counter()
    pipe.process_array(x[None])
    wall = time.perf_counter() - t0
    st = pipe.stats()
    return {"seconds": round(len(x) / SR, 1), "realtime_factor": round(st["realtime_factor"], 4),
            "wall_rtf": round(wall / (len(x) / SR), 4), "block_ms_p50": round(st["block_ms_p50"], 3),
            "block_ms_p99": round(st["block_ms_p99"], 3), "worst_hop_ms": round(st["block_ms_max"], 3),
            "budget_ms": st["budget_ms"], "deadline_misses": st["deadline_misses"],
            "latency_ms": round(pipe.latency_ms, 1),
            "algorithmic_latency_ms": round(1000 * N_FFT / SR, 1)}


def model_paths(name: str, work: Path) -> dict:
    """The variants to evaluate: the shipped files, else the training output."""
    out = {}
    for prec, fn in (("fp32", f"{name}_fp32.onnx"), ("int8-dynamic", f"{name}_int8-dynamic.onnx")):
        for d in (ROOT / "models_int8" / name, work / name / "q"):
            if (d / fn).is_file():
                out[prec] = str(d / fn)
                break
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT / "firmware_tools/work/separate"))
    ap.add_argument("--limit", type=int, default=0, help="at most this many test excerpts (0: all)")
    ap.add_argument("--out", default=str(ROOT / "firmware_tools/eval/results/separate.json"))
    a = ap.parse_args(argv)
    data = Path(a.data)
    test = np.load(data / "test.npy").astype(np.float32)
    if a.limit:
        test = test[: a.limit]
    man = json.loads((data / "manifest.json").read_text())
    mixes = test.sum(axis=1)
    names4 = ("vocals", "drums", "bass", "other")
    results = {"data": {"excerpts": len(test), "seconds_each": test.shape[-1] / SR,
                        "pieces": len({e["piece"] for e in man["excerpts"]["test"][:len(test)]}),
                        "split": man["split"]},
               "music4": {}, "speech2": {}, "timing": {}, "models": {}}
    t0 = time.time()
    results["music4"]["mix"] = score(test, np.repeat(mixes[:, None], 4, axis=1), names4, mixes)
    results["music4"]["oracle-irm"] = score(test, np.stack([oracle_irm(s) for s in test]), names4, mixes)
    results["music4"]["baseline"] = score(test, np.stack([baseline4(m) for m in mixes]), names4, mixes)
    print(f"references done ({time.time() - t0:.0f} s)", flush=True)
    for prec, path in model_paths("separate", data).items():
        est = run_ours(path, mixes, names4)
        results["music4"][f"ours-{prec}"] = score(test, est, names4, mixes)
        print(f"separate {prec}: mean SDR {results['music4'][f'ours-{prec}']['_mean']['sdr_median']:.2f} dB", flush=True)
    # speech / background
    sp = np.load(data / "speech_test.npz")
    refs2 = np.stack([sp["speech"], sp["background"]], axis=1)
    mix2 = refs2.sum(axis=1)
    names2 = ("speech", "background")
    results["speech2"]["mix"] = score(refs2, np.repeat(mix2[:, None], 2, axis=1), names2, mix2)
    results["speech2"]["oracle-irm"] = score(refs2, np.stack([oracle_irm(s) for s in refs2]), names2, mix2)
    results["speech2"]["baseline"] = score(refs2, np.stack([baseline2(m) for m in mix2]), names2, mix2)
    for prec, path in model_paths("separate2", data).items():
        est = run_ours(path, mix2, names2)
        results["speech2"][f"ours-{prec}"] = score(refs2, est, names2, mix2)
    for name, names, m in (("separate", names4, mixes), ("separate2", names2, mix2)):
        paths = model_paths(name, data)
        if "int8-dynamic" in paths:
            results["timing"][name] = timing(paths["int8-dynamic"], m, names)
        mm = {}
        for prec in paths:
            r = results["music4" if name == "separate" else "speech2"][f"ours-{prec}"]
            d = {"sdr_mean_db": round(r["_mean"]["sdr_median"], 2)}
            if name == "separate2":
                d = {"si_sdri_speech_db": round(r["speech"]["si_sdri_mean"], 2),
                     "sdr_speech_db": round(r["speech"]["sdr_median"], 2)}
            else:
                d.update({f"sdr_{n}_db": round(r[n]["sdr_median"], 2) for n in names})
            if name in results["timing"] and prec == "int8-dynamic":
                d["rtf_one_core"] = results["timing"][name]["realtime_factor"]
            mm[prec] = d
        results["models"][name] = mm
    Path(a.out).write_text(json.dumps(results, indent=1))
    print_table(results)
    return 0


def print_table(r: dict) -> None:
    for task, names in (("music4", ("vocals", "drums", "bass", "other")), ("speech2", ("speech", "background"))):
        print(f"\n### {task}: SDR (median over excerpts, dB) / SI-SDR (mean, dB)\n")
        print("| method | " + " | ".join(names) + " | mean SDR |")
        print("|---|" + "---|" * (len(names) + 1))
        for meth, res in r[task].items():
            cells = [f"{res[n]['sdr_median']:.2f} / {res[n]['si_sdr_mean']:.2f}" for n in names]
            print(f"| {meth} | " + " | ".join(cells) + f" | {res['_mean']['sdr_median']:.2f} |")
        if task == "speech2":
            print("\nSI-SDRi of speech (mean, dB): " + ", ".join(
                f"{m} {res['speech']['si_sdri_mean']:.2f}" for m, res in r[task].items()))
    for name, t in r["timing"].items():
        print(f"\ntiming {name}: {t}")


if __name__ == "__main__":
    sys.exit(main())

"""Node types a pipeline config can name, with their parameters.

Each capability is one more node: register it here with its parameter schema and the
config loader, the CLI and the docs pick it up.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from .._nodes import Gain, Identity, Limiter, Meter, SosFilter
from ..filters import KINDS as FILTER_KINDS
from .anomaly import LEARN_MODES, AnomalyDetect
from .bwe import Bwe
from .classify import Classify
from .declip import Declip
from .denoise import Denoise
from .mix import Mix, make_mix, parse_bus_gains
from .route import Route, make_route, parse_branches
from .separate import Separate
from .synth import INSTRUMENTS, Synth, TimbreTransfer
from .vad import Vad

__all__ = ["AnomalyDetect", "Bwe", "Classify", "Declip", "Denoise", "Mix", "Route", "Separate", "Vad", "Gain", "Identity",
           "Limiter", "Meter", "NODE_TYPES", "NodeType", "Param", "SosFilter", "Synth", "TimbreTransfer"]


@dataclasses.dataclass(frozen=True)
class Param:
    type: type
    default: Any
    help: str
    choices: tuple | None = None
    # a value that is a table (e.g. a route's branches): parse(value, where, path, parse_nodes) -> spec
    parse: Callable | None = None
    required: bool = False
    # (low, high), inclusive, for numbers: beyond them a value is a typo or an attack (gain_db = 400
    # gave 5e19, 1e308 silence), refused by the config loader with the range in the message
    range: tuple | None = None


@dataclasses.dataclass(frozen=True)
class NodeType:
    name: str
    factory: Callable
    params: dict[str, Param]
    help: str


def _filter(kind: str) -> Callable:
    def make(name=None, **kw):
        return SosFilter(kind=kind, name=name or kind, **kw)
    return make


_FILTER_PARAMS = {
    "cutoff_hz": Param(float, 80.0, "corner (high/low-pass) or centre frequency in Hz", range=(1.0, 384000.0)),
    "order": Param(int, 2, "Butterworth order for highpass/lowpass (1..12)", range=(1, 12)),
    "q": Param(float, 0.7071067811865476, "quality factor for RBJ biquads", range=(0.05, 50.0)),
    "gain_db": Param(float, 0.0, "gain for peak/shelf biquads, dB", range=(-48.0, 48.0)),
}

_DDSP_PARAMS = {
    "instrument": Param(str, "violin", "instrument family (its decoder: ddsp_<instrument> in the manifest)",
                        tuple(INSTRUMENTS)),
    "model": Param(str, "auto", "model name in the manifest (auto: ddsp_<instrument>), or a .onnx path"),
    "variant": Param(str, "auto", "manifest variant (auto = the device profile's choice)"),
    "reverb": Param(float, 0.0, "wet level of the small algorithmic reverb (0 = dry)", range=(0.0, 1.0)),
    "gain_db": Param(float, 0.0, "output gain", range=(-60.0, 24.0)),
    "threads": Param(int, 1, "inference threads", range=(1, 64)),
    "backend": Param(str, "auto", "onnxruntime, litert, openvino or auto"),
}
_GENERATE_NODES = {
    "synth": NodeType("synth", Synth, {
        **_DDSP_PARAMS,
        "midi": Param(str, "", "MIDI file to play from the start of the stream (its monophonic line)"),
        "transpose": Param(float, 0.0, "semitones added to the MIDI notes", range=(-48.0, 48.0)),
    }, "DDSP synthesizer: a MIDI file (or control frames) played by an instrument's decoder (16 kHz, mono out; "
       "the input only clocks it)"),
    "timbre_transfer": NodeType("timbre_transfer", TimbreTransfer, {
        **_DDSP_PARAMS,
        "transpose": Param(float, 0.0, "semitones added to the tracked f0", range=(-48.0, 48.0)),
        "fold_octaves": Param(bool, True, "move the f0 by octaves into the instrument's range"),
        "match_loudness": Param(bool, True, "shift the input's running voiced level to the instrument's"),
        "unvoiced_gate_db": Param(float, 30.0, "unvoiced hops are turned down this much", range=(0.0, 100.0)),
    }, "timbre transfer: the input's melody (causal f0 + loudness, channel 0) played by an instrument (16 kHz)"),
}

NODE_TYPES: dict[str, NodeType] = {
    "identity": NodeType("identity", Identity, {}, "copies its input (engine overhead baseline)"),
    "gain": NodeType("gain", Gain, {"gain_db": Param(float, 0.0, "gain in dB", range=(-120.0, 60.0))},
                     "static gain, ramped over one block when changed"),
    "filter": NodeType("filter", SosFilter, {
        "kind": Param(str, "highpass", "filter kind", FILTER_KINDS), **_FILTER_PARAMS},
        "biquad cascade (Butterworth high/low-pass or an RBJ biquad)"),
    **{k: NodeType(k, _filter(k), _FILTER_PARAMS, f"{k} filter (alias of filter kind={k})")
       for k in FILTER_KINDS},
    "limiter": NodeType("limiter", Limiter, {
        "threshold_db": Param(float, -1.0, "output ceiling in dBFS", range=(-60.0, 0.0)),
        "lookahead_ms": Param(float, 1.5, "look-ahead (adds this much latency)", range=(0.0, 50.0)),
        "release_ms": Param(float, 60.0, "gain recovery time constant", range=(1.0, 10000.0)),
    }, "look-ahead peak limiter, channel-linked"),
    "denoise": NodeType("denoise", Denoise, {
        "model": Param(str, "denoise", "model name in the manifest, or a .onnx/.tflite path"),
        "variant": Param(str, "auto", "manifest variant (auto = the device profile's choice)"),
        "atten_limit_db": Param(float, 100.0, "most a bin is turned down, dB", range=(0.0, 100.0)),
        "strength": Param(float, 1.0, "0 = bypass .. 1 = full model gains", range=(0.0, 1.0)),
        "threads": Param(int, 1, "inference threads", range=(1, 64)),
        "backend": Param(str, "auto", "onnxruntime, litert, openvino or auto"),
    }, "speech noise reduction (causal GRU gains over a 20 ms STFT; 16 or 48 kHz)"),
    "anomaly": NodeType("anomaly", AnomalyDetect, {
        "state": Param(str, "", "learned state file (read, or written after learning)"),
        "learn": Param(str, "never", "learn at start: never (load state), if_missing, always", LEARN_MODES),
        "learn_s": Param(float, 60.0, "seconds of normal audio to learn from at start", range=(1.0, 86400.0)),
        "detector": Param(str, "gmm", "detector used when learning", ("gmm", "kmeans", "iforest", "autoencoder")),
        "false_alarms_per_hour": Param(float, 1.0, "false-alarm budget: anomaly episodes per hour of normal audio "
                                                   "the learned threshold allows", range=(0.001, 3600.0)),
        "quantile_on": Param(float, None, "instead of the budget: threshold = this quantile of held-back scores "
                                          "(round 1's thresholds)", range=(0.5, 1.0)),
        "quantile_off": Param(float, 0.98, "with quantile_on: episode ends below this quantile", range=(0.5, 1.0)),
        "on_frames": Param(int, 140, "hops (32 ms) of the last on_window above the threshold that start an episode "
                                     "(default: the state's, 140)", range=(1, 100000)),
        "on_window": Param(int, 156, "window of hops for on_frames (default: the state's, 156 = 5 s)",
                           range=(1, 100000)),
        "off_frames": Param(int, 10, "hops below the off-threshold that end an episode", range=(1, 100000)),
        "score_interval_ms": Param(float, 0.0, "emit anomaly_score events this often (0 = never)",
                                   range=(0.0, 3.6e6)),
        "seed": Param(int, 0, "random seed of the fit", range=(0, 2**32 - 1)),
    }, "anomaly detection on learned normal audio (events; audio passes through)"),
    "vad": NodeType("vad", Vad, {
        "model": Param(str, "vad", "model name in the manifest, or a .onnx/.tflite path"),
        "variant": Param(str, "auto", "manifest variant (auto = the device profile's choice; silero = Silero VAD "
                                      "from the installed silero-vad package)"),
        "threshold": Param(float, 0.5, "speech probability that turns speech on (off 0.15 below)",
                           range=(0.05, 0.95)),
        "attack_ms": Param(float, 20.0, "speech must last this long before the label turns to speech",
                           range=(0.0, 60000.0)),
        "hold_ms": Param(float, 200.0, "hangover: the label stays speech this long after speech ends",
                         range=(0.0, 600000.0)),
        "startup_ms": Param(float, 500.0, "start-up hold-off: for this long after the start (a reset) the "
                            "attack is startup_attack_ms (noise onsets read as speech there)",
                            range=(0.0, 10000.0)),
        "startup_attack_ms": Param(float, 150.0, "the attack during the start-up hold-off",
                                   range=(0.0, 2000.0)),
        "threads": Param(int, 1, "inference threads", range=(1, 64)),
        "backend": Param(str, "auto", "onnxruntime, litert, openvino or auto"),
    }, "voice activity decision (labels nonspeech/speech; 16 kHz; audio passes through)"),
    "route": NodeType("route", make_route, {
        "decision": Param(str, "", "name of a decision node earlier in the pipeline (vad, classify)",
                          required=True),
        "branches": Param(dict, {}, "[nodes.branches.<label>] tables: nodes = [...], gain_db, mute, when",
                          parse=parse_branches, required=True),
        "crossfade_ms": Param(float, 20.0, "crossfade length of a switch", range=(0.0, 1000.0)),
        "curve": Param(str, "linear", "crossfade curve (linear: branches of the same input are correlated)",
                       ("linear", "equal-power")),
        "attack_ms": Param(float, 0.0, "a new label must last this long before a switch", range=(0.0, 60000.0)),
        "hold_ms": Param(float, 100.0, "minimum time between switches (at least the crossfade)",
                         range=(0.0, 600000.0)),
        "lookahead_ms": Param(float, 0.0, "delay the audio so decisions apply this much earlier (adds latency)",
                              range=(0.0, 1000.0)),
        "idle": Param(str, "run", "branches not selected: keep running, or skip and reset", ("run", "reset")),
    }, "branch on a decision node's label, crossfaded, with hysteresis"),
    "classify": NodeType("classify", Classify, {
        "model": Param(str, "classify", "model name in the manifest, or a .onnx/.tflite path"),
        "variant": Param(str, "auto", "manifest variant (auto = the device profile's choice)"),
        "hop_ms": Param(float, 250.0, "how often a 1 s window is classified (multiple of 10 ms)",
                        range=(10.0, 10000.0)),
        "smoothing": Param(int, 4, "windows whose probabilities are averaged for a decision", range=(1, 1000)),
        "hysteresis": Param(float, 0.1, "probability margin a new class needs over the current one",
                            range=(0.0, 1.0)),
        "labels": Param(str, "", "class names, comma-separated (only for a model file of your own)"),
        "threads": Param(int, 1, "inference threads", range=(1, 64)),
        "backend": Param(str, "auto", "onnxruntime, litert, openvino or auto"),
    }, "sound classes (speech, music, silence, keyboard, alarm, machine, water) of 1 s windows; "
       "audio passes through, decisions are `class` events (16 kHz)"),
    "bwe": NodeType("bwe", Bwe, {
        "model": Param(str, "auto", "model name in the manifest (auto: bwe at 16 kHz, bwe48k at 48 kHz), or a .onnx path"),
        "variant": Param(str, "auto", "manifest variant (auto = the device profile's choice)"),
        "gain_db": Param(float, -24.0, "level of the synthesized 3.8-8 kHz band against the prediction (-24: "
                                       "the best PESQ-WB on the design split; 0: the lowest spectral distance)",
                         range=(-40.0, 12.0)),
        "mode": Param(str, "auto", "auto: wide-band input passes through; always: extend anyway", ("auto", "always")),
        "threads": Param(int, 1, "inference threads", range=(1, 64)),
        "backend": Param(str, "auto", "onnxruntime, litert, openvino or auto"),
    }, "bandwidth extension for speech: 8 -> 16 kHz at 16 kHz, 16 -> 48 kHz at 48 kHz (the missing band predicted "
       "by a small model)"),
    "declip": NodeType("declip", Declip, {
        "window_ms": Param(float, 64.0, "A-SPADE frame (a power of two of samples nearest this; the node's "
                                        "latency)", range=(8.0, 500.0)),
        "sparsity_step": Param(int, 0, "coefficients added per iteration (0: 4 per 1024 samples of frame, "
                                              "i.e. 4 at 16-22 kHz, 8 at 44.1-48 kHz; 1 = the reference A-SPADE)",
                               range=(0, 64)),
        "max_iter": Param(int, 0, "iterations per frame at most (0: 250 for frames of <= 1024 samples, i.e. "
                                  "16-22 kHz; 60 above)", range=(0, 100000)),
        "eps": Param(float, 0.1, "stop when the sparse and the consistent estimate are this close (L2)",
                     range=(1e-4, 10.0)),
        "tolerance": Param(float, 0.0, "a sample within this fraction of the running peak is on the clip level "
                                       "(0: equal values, what a digital hard clip leaves)", range=(0.0, 0.1)),
        "min_run": Param(int, 2, "a run of this many samples on the peak is a plateau (what confirms a clip "
                                 "level)", range=(1, 64)),
        "min_plateaus": Param(int, 2, "plateaus seen on a level before it is a clip level (hard clipping: one "
                                      "crest of equal samples at a new maximum is not one)", range=(1, 4096)),
        "mark_run": Param(int, 1, "on a confirmed clip level, runs at least this long are clipped (1: every "
                                  "sample on it, also a single one)", range=(1, 64)),
        "heavy_frac": Param(float, 0.6, "a frame with at least this fraction clipped is solved with heavy_step",
                            range=(0.01, 1.0)),
        "heavy_step": Param(int, 0, "sparsity step of heavily clipped frames (0: 1 for frames of <= 1024 "
                                    "samples, i.e. 16-22 kHz; the frame's own step above)", range=(0, 64)),
        "soft_ratio": Param(float, 1.0, "< 1: samples above this fraction of the peak count as clipped too "
                                        "(soft clipping)", range=(0.5, 1.0)),
        "release_db_per_s": Param(float, 0.0, "decay of the running clip level (0 = hold; > 0 finds a lowered "
                                              "clip level)", range=(0.0, 60.0)),
        "fine_ratio": Param(float, -1.0, "once the residual is within this many eps, the sparsity step falls "
                                         "to fine_step (coarse to fine; 0 = off; -1: 16 for frames of 2048+ "
                                         "samples, i.e. 44.1-48 kHz, off below)", range=(-1.0, 100.0)),
        "fine_step": Param(int, 2, "the sparsity step once the residual is near (see fine_ratio)", range=(1, 64)),
        "slack": Param(int, 0, "1: solve each frame while the next hop arrives (one hop more latency, the "
                               "solver's work spread over the blocks); 0: in the block that completes it",
                       range=(0, 1)),
        "iters_per_hop": Param(int, 64, "with slack: solver iterations per hop of input, spread over its blocks",
                               range=(1, 100000)),
    }, "restore clipped samples (A-SPADE, consistent: unclipped samples are not changed)"),
    **_GENERATE_NODES,
    "separate": NodeType("separate", Separate, {
        "model": Param(str, "separate", "separate (vocals, drums, bass, other), separate2 (speech, background), "
                                        "or a .onnx path"),
        "variant": Param(str, "auto", "manifest variant (auto = the device profile's choice)"),
        "stems": Param(str, "", "bus names, comma-separated (default: the model's labels)"),
        "threads": Param(int, 1, "inference threads", range=(1, 64)),
        "backend": Param(str, "auto", "onnxruntime, litert, openvino or auto"),
    }, "source separation into one output bus per stem (causal GRU masks over a 32 ms STFT; 16 kHz)"),
    "mix": NodeType("mix", make_mix, {
        "buses": Param(dict, {}, "{ <bus> = <gain_db>, ... }: the buses summed into the main path",
                       parse=parse_bus_gains, required=True),
        "main_gain_db": Param(float, None, "add the main path too, at this gain (default: not added)",
                              range=(-120.0, 24.0)),
    }, "sum named buses (e.g. a separator's stems) into the main path, aligned in time"),
    "meter": NodeType("meter", Meter, {"interval_ms": Param(float, 1000.0, "reporting interval", range=(1.0, 3.6e6))},
                      "peak/RMS level events, audio passes through"),
}

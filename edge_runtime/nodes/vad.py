"""``vad``: voice activity detection at 16 kHz, a decision node (labels ``nonspeech``, ``speech``).

Two model contracts run behind the same node, told apart by the session's inputs:

* **ours** (``firmware_tools/train/vad_model.py``): 32 log-mel energies of a causal 25 ms Hann
  frame every 10 ms (:class:`VadFrontEnd`, the same code computes the training features); one
  model call per K hops (K = the feature input's width / 32) with the recurrent state passed
  explicitly: inputs ``feat [1, 32 K]``, ``state [1, H]``; outputs ``prob [1, K]`` (one per 10 ms
  frame), ``state_out [1, H]``.
* **Silero VAD** (the ``silero`` variant, its ONNX file read from the installed ``silero-vad``
  wheel): one call per 32 ms (512 new samples after 64 samples of context): inputs
  ``input [1, 576]``, ``state [2, 1, 128]``, ``sr`` (int64); outputs ``output [1, 1]``,
  ``stateN [2, 1, 128]``.

The audio passes through unchanged (multi-channel input is judged on its channel mean). The
decision is taken from the speech probability ``p`` with threshold hysteresis (on above
``threshold``, off below ``threshold - 0.15``), an ``attack_ms`` (speech must stay on that long
before the label turns to ``speech``) and a hangover ``hold_ms`` (the label stays ``speech`` that
long after the probability fell). ``probabilities`` is ``[1 - p, p]``. Every change is an event
named after the new label (value: its probability).

**Start-up hold-off.** From a reset (the stream's start) the models answer stationary noise with
a speech probability of 0.5-0.98 for up to about 0.3 s (our model: zero recurrent state and a
causal frame that fills from zeros; measured with white, pink and brown noise at -60..-10 dBFS by
``firmware_tools/eval/vad_onsets.py``), which a 20 ms attack turned into a ``speech`` decision at
0.03 s in 42 of 72 noise streams. For the first ``startup_ms`` (default 500 ms) the attack is
therefore ``startup_attack_ms`` (default 150 ms): 0 of 72 then, and speech that starts within
the first 0.5 s is detected about 130 ms later (40 -> 170 ms after its onset); speech after that
is detected as before.

**Full-band pipelines.** At 32 or 48 kHz (a full-band ``speech_gate48k``) the node judges a 16 kHz
copy of the channel mean: an 8th-order Butterworth low-pass at 7.2 kHz (``filters.butterworth``,
run by the ``sosfilt`` kernel with its state in double) and every 2nd / 3rd sample, into buffers
made in ``prepare``; the audio itself passes through at the pipeline's rate, untouched. The
block size must be a multiple of the factor. Event offsets are in the pipeline's frames.
"""
from __future__ import annotations

import numpy as np

from .._kernels import sosfilt
from ..errors import ModelError
from ..filters import butterworth
from ..spectral import filter_bank, mel_filterbank, stft_analyzer
from .decision import DecisionMixin
from .model import ModelNode

RATE = 16000
HOP = 160
FRAME = 400
N_MELS = 32
FMIN, FMAX = 60.0, 7800.0
LOG_FLOOR = 1e-10
LABELS = ("nonspeech", "speech")
SILERO_CHUNK, SILERO_CONTEXT = 512, 64
DECIMATE_FROM = {32000: 2, 48000: 3}      # full-band pipeline rates judged on a 16 kHz copy
DECIMATE_CUTOFF_HZ, DECIMATE_ORDER = 7200.0, 8


class VadFrontEnd:
    """Streaming log-mel front end of our VAD: ``push((1, 160) float32)`` -> ``feat`` (1, 32)."""

    def __init__(self):
        self.ana = stft_analyzer(FRAME, HOP, "hann", 1)
        bins = FRAME // 2 + 1
        self.fb = filter_bank(mel_filterbank(RATE, FRAME, N_MELS, FMIN, FMAX))
        self.power = np.zeros((1, bins), np.float32)
        self.feat = np.zeros((1, N_MELS), np.float32)

    def reset(self) -> None:
        self.ana.reset()

    def push(self, hop: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """One 10 ms hop in; its 32 log-mel energies into ``out`` (1, 32) (default ``feat``)."""
        out = self.feat if out is None else out
        self.ana.push_log_mel(hop, self.fb, self.power, out, LOG_FLOOR)
        return out


def features(audio: np.ndarray) -> np.ndarray:
    """Offline features of a mono clip, exactly what the node computes: (frames, 32) float32,
    frame t from samples up to 160 (t + 1)."""
    x = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    n = len(x) // HOP
    fe = VadFrontEnd()
    out = np.empty((n, N_MELS), np.float32)
    hop = np.zeros((1, HOP), np.float32)
    for t in range(n):
        hop[0] = x[t * HOP:(t + 1) * HOP]
        out[t] = fe.push(hop)[0]
    return out


class Vad(DecisionMixin, ModelNode):
    """Voice activity decision node (audio passes through)."""

    event_names = ModelNode.event_names + LABELS

    def __init__(self, model: str = "vad", variant: str = "auto", threshold: float = 0.5,
                 attack_ms: float = 20.0, hold_ms: float = 200.0, startup_ms: float = 500.0,
                 startup_attack_ms: float = 150.0, threads: int = 1, backend: str = "auto",
                 name: str | None = None):
        super().__init__(model, variant, backend, threads, name or "vad")
        if not 0.05 <= threshold <= 0.95:
            raise ValueError(f"threshold={threshold} is outside 0.05..0.95")
        if not 0.0 <= attack_ms <= 2000.0:
            raise ValueError(f"attack_ms={attack_ms} is outside 0..2000 ms")
        if not 0.0 <= hold_ms <= 10000.0:
            raise ValueError(f"hold_ms={hold_ms} is outside 0..10000 ms")
        if not 0.0 <= startup_ms <= 10000.0:
            raise ValueError(f"startup_ms={startup_ms} is outside 0..10000 ms")
        if not 0.0 <= startup_attack_ms <= 2000.0:
            raise ValueError(f"startup_attack_ms={startup_attack_ms} is outside 0..2000 ms")
        self.threshold, self.attack_ms, self.hold_ms = float(threshold), float(attack_ms), float(hold_ms)
        self.startup_samples = int(round(float(startup_ms) * RATE / 1000.0))
        self.startup_attack_ms = max(float(startup_attack_ms), self.attack_ms)
        self.off_threshold = max(0.01, self.threshold - 0.15)
        self.init_decision(LABELS, 0)
        self.kind = None
        self.stack = 1

    # ---- set-up --------------------------------------------------------------------------
    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        super().prepare(sample_rate, block_size, channels)
        factor = 1 if sample_rate == RATE else DECIMATE_FROM.get(sample_rate)
        if factor is None:
            raise ValueError(f"vad runs at {RATE} Hz (or 32000 / 48000 Hz, judged on a 16 kHz copy), not "
                             f"{sample_rate} (set the pipeline's sample_rate; inputs are resampled at the edge)")
        if block_size % factor:
            raise ValueError(f"vad at {sample_rate} Hz needs block_size a multiple of {factor}, got {block_size}")
        self.factor = factor
        self.mono = np.zeros((1, block_size), np.float32)
        if factor > 1:
            self.dec_sos = butterworth(DECIMATE_ORDER, DECIMATE_CUTOFF_HZ, sample_rate, highpass=False)
            self.dec_state = np.zeros((1, self.dec_sos.shape[0], 2), np.float64)
            self.dec_full = np.zeros((1, block_size), np.float32)
            self.dec_out = np.zeros((1, block_size // factor), np.float32)
        block_size //= factor        # what the model side sees per block, at 16 kHz
        # samples waiting for a model call (ours: up to one hop; Silero: context + one chunk)
        self.buf = np.zeros((1, SILERO_CONTEXT + SILERO_CHUNK + block_size), np.float32)
        self.fill = 0
        self.fe = VadFrontEnd()
        self.feat = None
        self.prob = None
        self.sil_in = np.zeros((1, SILERO_CONTEXT + SILERO_CHUNK), np.float32)
        self.sil_sr = np.array(RATE, dtype=np.int64)
        self.state = None
        self.kind = None
        self.prepare_model()
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.phase = 0
        self.slot = 0
        self.fill = SILERO_CONTEXT if self.kind == "silero" else 0
        self.buf[...] = 0.0
        self.raw_on = False
        self.on_run = 0      # samples the raw decision has been on
        self.off_run = 0     # samples it has been off
        self.elapsed = 0     # samples decided since the reset (for the start-up hold-off)
        self.p = 0.0
        self.reset_decision()

    def bind(self, session):
        path = session.path
        ins = {s.name: s for s in session.inputs}
        outs = {s.name for s in session.outputs}
        if set(ins) == {"feat", "state"} and outs == {"prob", "state_out"}:
            kind = "ours"
            width = int(ins["feat"].shape[-1])
            if width % N_MELS or not 1 <= width // N_MELS <= 8:
                raise ModelError(f"{path}: mismatched model: vad features are K x {N_MELS} log-mel bands (K = 1..8), "
                                 f"the model takes {width}")
            stack = width // N_MELS
            shape = (2, 1, int(ins["state"].shape[-1]))
        elif set(ins) == {"input", "state", "sr"} and outs == {"output", "stateN"}:
            kind = "silero"
            shape = (2, 2, 1, int(ins["state"].shape[-1] or 128))  # ping-pong x (2, batch 1, 128)
        else:
            raise ModelError(f"{path}: mismatched model: vad expects inputs feat, state -> prob, state_out "
                             f"(ours) or input, state, sr -> output, stateN (Silero VAD); it has "
                             f"{sorted(ins)} -> {sorted(outs)}")
        if self.state is None or self.state.shape != shape or self.kind != kind:
            if self.kind is not None and self.kind != kind:
                raise ModelError(f"{path}: cannot switch a running vad from the {self.kind} model to the "
                                 f"{kind} model (different contracts)")
            self.state = np.zeros(shape, np.float32)
            self.kind = kind
        if kind == "ours":
            if self.feat is None or self.feat.shape[1] != stack * N_MELS:
                if self.feat is not None:
                    raise ModelError(f"{path}: steps {stack} frames per call, the running variant "
                                     f"{self.feat.shape[1] // N_MELS}")
                self.stack = stack
                self.feat = np.zeros((1, stack * N_MELS), np.float32)
                self.slots = [self.feat[:, j * N_MELS:(j + 1) * N_MELS] for j in range(stack)]
                self.prob = np.zeros((1, stack), np.float32)
            return [session.bind({"feat": self.feat, "state": self.state[p]},
                                 {"prob": self.prob, "state_out": self.state[1 - p]}) for p in (0, 1)]
        if self.prob is None:
            self.stack = 1
            self.prob = np.zeros((1, 1), np.float32)
        return [session.bind({"input": self.sil_in, "state": self.state[p], "sr": self.sil_sr},
                             {"output": self.prob, "stateN": self.state[1 - p]}) for p in (0, 1)]

    def reset(self) -> None:
        if getattr(self, "factor", 1) > 1:
            self.dec_state[...] = 0.0
        if self.session is not None:
            self.state[...] = 0.0
            self.fe.reset()
            self._reset_counters()

    @property
    def step_samples(self) -> int:
        """Samples per buffered step: one 10 ms hop for ours (a model call every ``stack`` hops),
        512 for Silero."""
        return HOP if self.kind == "ours" else SILERO_CHUNK

    # ---- hot path ------------------------------------------------------------------------
    def _call(self) -> bool:
        """One step on the samples in ``buf``; True when the model ran (``p`` updated)."""
        if self.kind == "ours":
            self.fe.push(self.buf[:, :HOP], self.slots[self.slot])
            self.slot += 1
            if self.slot < self.stack:
                return False
            self.slot = 0
        else:
            np.copyto(self.sil_in, self.buf[:, :SILERO_CONTEXT + SILERO_CHUNK])
        self.calls[self.phase].run()
        self.phase ^= 1
        self.p = float(self.prob[0, self.stack - 1])
        return True

    def _decide(self, step: int, offset: int = 0) -> None:
        p = self.p
        self.probabilities[1] = p
        self.probabilities[0] = 1.0 - p
        if self.raw_on:
            if p < self.off_threshold:
                self.raw_on = False
                self.off_run = 0
        elif p > self.threshold:
            self.raw_on = True
            self.on_run = 0
        if self.raw_on:
            self.on_run += step
        else:
            self.off_run += step
        self.elapsed += step
        if self.current_index == 0:
            attack = self.startup_attack_ms if self.elapsed <= self.startup_samples else self.attack_ms
            if self.raw_on and self.on_run * 1000.0 >= attack * RATE:
                self.set_decision(1, offset)
        elif not self.raw_on and self.off_run * 1000.0 > self.hold_ms * RATE:
            self.set_decision(0, offset)

    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        if self._pending is not None:
            self.swap_pending()
        np.copyto(out, inp)
        if self.channels == 1:
            src = inp
        else:
            np.mean(inp, axis=0, keepdims=True, out=self.mono)
            src = self.mono
        d = self.factor
        if d > 1:          # the 16 kHz copy: low-pass, keep every d-th sample
            sosfilt(self.dec_sos, self.dec_state, src, self.dec_full)
            np.copyto(self.dec_out, self.dec_full[:, ::d])
            src = self.dec_out
        n = self.block_size // d
        if self.kind == "ours" and n % HOP == 0:
            # hops straight from the block into the front end (no staging copy)
            fe, slots, stack = self.fe, self.slots, self.stack
            for k in range(0, n, HOP):
                fe.push(src if n == HOP else src[:, k:k + HOP], slots[self.slot])
                self.slot += 1
                if self.slot == stack:
                    self.slot = 0
                    self.calls[self.phase].run()
                    self.phase ^= 1
                    self.p = float(self.prob[0, stack - 1])
                    self._decide(HOP * stack, (k + HOP) * d - 1)
        else:
            buf = self.buf
            step = self.step_samples
            keep = 0 if self.kind == "ours" else SILERO_CONTEXT
            need = keep + step
            k = 0
            while k < n:
                take = min(n - k, need - self.fill)
                buf[:, self.fill:self.fill + take] = src[:, k:k + take]
                self.fill += take
                k += take
                if self.fill == need:
                    ran = self._call()
                    if keep:
                        buf[:, :keep] = buf[:, step:step + keep]
                    self.fill = keep
                    if ran:
                        self._decide(step * self.stack, k * d - 1)
        self.probabilities[1] = self.p
        self.probabilities[0] = 1.0 - self.p

    # ---- offline (evaluation, tests) -----------------------------------------------------
    def frame_probabilities(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the model over a mono clip from a reset state (the same calls as streaming).

        Returns (probabilities, the sample at which each became available). Ours: one per 10 ms
        frame (the K frames of a model step become available together, at the step's end);
        Silero: one per 512-sample chunk. The node must be prepared; its streaming state is reset
        before and after."""
        x = np.ascontiguousarray(audio, dtype=np.float32).reshape(1, -1)
        self.reset()
        step = self.step_samples
        keep = 0 if self.kind == "ours" else SILERO_CONTEXT
        per = self.stack if self.kind == "ours" else 1
        n = (x.shape[1] // (step * per)) * per
        probs = np.empty(n, np.float32)
        ends = np.empty(n, np.int64)
        for t in range(n):
            self.buf[:, keep:keep + step] = x[:, t * step:(t + 1) * step]
            if self._call():
                if self.kind == "ours":
                    probs[t + 1 - per:t + 1] = self.prob[0]
                else:
                    probs[t] = self.p
                ends[t + 1 - per:t + 1] = (t + 1) * step
            if keep:
                self.buf[:, :keep] = self.buf[:, step:step + keep]
        self.reset()
        return probs, ends

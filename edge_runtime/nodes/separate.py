"""``separate``: real-time source separation into named buses (stems).

```toml
[[nodes]]
type = "separate"               # model "separate": buses vocals, drums, bass, other
                                # model "separate2": buses speech, background
```
16 kHz; a 512-point sqrt-Hann STFT with hop 256 (16 ms): per hop the model (a causal GRU mask
estimator, INT8/FP32 ONNX from the manifest, ``firmware_tools/train/train_separate.py``) reads
the mixture's power spectrum and its own state and returns one mask per stem; the masks sum to 1
in every bin (a softmax over the stems), so the stems sum back to the mixture. Each stem is the
mixture's STFT times its mask, resynthesized by its own overlap-add; each stem is a bus of the
pipeline (``edge-runtime run separate -i mix.wav --output-dir stems/``), and later nodes can run
on a bus (``bus = "vocals"``) or sum buses back (``mix``).

Latency: 256 samples (16 ms, the window's look-back); with the hop's own buffering a sound is
out 32 ms after it went in at most. The main path carries the input delayed by the same 256
samples, so it lines up with the buses.
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..spectral import stft_analyzer, stft_synthesizer
from .model import MODEL_SUFFIXES, ModelNode
from .route import _Delay

__all__ = ["Separate", "N_FFT", "HOP", "RATE", "DEFAULT_STEMS"]

RATE = 16000
N_FFT = 512
HOP = 256
N_BINS = N_FFT // 2 + 1
#: stem names by the model's mask count, for a model file without a manifest entry
DEFAULT_STEMS = {4: ("vocals", "drums", "bass", "other"), 2: ("speech", "background")}


class Separate(ModelNode):
    """Source separation into one output bus per stem (see the module docstring)."""

    event_names = ModelNode.event_names

    def __init__(self, model: str = "separate", variant: str = "auto", stems: str = "", threads: int = 1,
                 backend: str = "auto", name: str | None = None):
        super().__init__(model, variant, backend, threads, name or "separate")
        given = tuple(s.strip() for s in stems.split(",") if s.strip()) if stems else ()
        if len(set(given)) != len(given):
            raise ValueError(f"stems = {stems!r} repeats a name")
        self._stems_given = given
        self.output_buses = given or self._stems_of_model()
        self.bus_out: dict[str, np.ndarray] = {}

    def _stems_of_model(self) -> tuple[str, ...]:
        if self.model.endswith(MODEL_SUFFIXES):
            return ()          # known once the file is loaded (its mask count)
        from ..models import default_registry

        labels = default_registry()[self.model].labels
        if not labels:
            raise ModelError(f"model {self.model!r} has no labels in the manifest; expected its stem names")
        return tuple(labels)

    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        super().prepare(sample_rate, block_size, channels)
        if sample_rate != RATE:
            raise ValueError(f"separate runs at {RATE} Hz, not {sample_rate} (the separate pipeline; inputs are "
                             "resampled at the edge)")
        if block_size % HOP:
            raise ValueError(f"separate needs block_size a multiple of {HOP}, got {block_size}")
        ch = channels
        self.ana = stft_analyzer(N_FFT, HOP, "sqrt_hann", ch)
        self.latency_samples = N_FFT - HOP
        self.power = np.zeros((ch, 1, N_BINS), np.float32)
        self.tmp = np.zeros((ch, N_BINS), np.float32)
        self.state = None
        self.mask = None
        self.phase = 0
        self.hop_in = np.zeros((ch, HOP), np.float32)
        self.hop_out = np.zeros((ch, HOP), np.float32)
        self.delay = _Delay(ch, block_size, self.latency_samples)
        self.prepare_model()              # binds; fixes the stems of a model file
        S = len(self.output_buses)
        self.syn = [stft_synthesizer(N_FFT, HOP, "sqrt_hann", ch) for _ in range(S)]
        self.re_s = np.zeros((ch, N_BINS), np.float32)
        self.im_s = np.zeros((ch, N_BINS), np.float32)
        # a standalone node (no pipeline) writes its stems into its own blocks
        self.bind_buses({b: np.zeros((ch, block_size), np.float32) for b in self.output_buses})
        self.reset()

    def bind_buses(self, blocks) -> None:
        super().bind_buses(blocks)
        self._buses = [blocks[b] for b in self.output_buses]

    def bind(self, session):
        """Bound calls per channel and ping-pong phase (state[k % 2] in, state[1 - k % 2] out)."""
        path = session.path
        ins = {s.name: s for s in session.inputs}
        outs = {s.name: s for s in session.outputs}
        if set(ins) != {"power", "state"} or set(outs) != {"mask", "state_out"}:
            raise ModelError(f"{path}: mismatched model: separate expects inputs power, state and outputs mask, "
                             f"state_out; it has {sorted(ins)} -> {sorted(outs)}")
        n_stems = int(outs["mask"].shape[1])
        if int(ins["power"].shape[-1]) != N_BINS or int(outs["mask"].shape[-1]) != N_BINS:
            raise ModelError(f"{path}: separate expects power (1, {N_BINS}) -> mask (1, S, {N_BINS}); the model has "
                             f"{list(ins['power'].shape)} -> {list(outs['mask'].shape)}")
        if not self.output_buses:
            self.output_buses = self._stems_given or DEFAULT_STEMS.get(n_stems, tuple(f"stem{i}" for i in range(n_stems)))
        if len(self.output_buses) != n_stems:
            raise ModelError(f"{path}: the model makes {n_stems} stems; the node has {len(self.output_buses)} names "
                             f"({', '.join(self.output_buses)})")
        state_dim = int(ins["state"].shape[-1])
        if self.state is None or self.state.shape[-1] != state_dim:
            self.state = np.zeros((self.channels, 2, 1, state_dim), np.float32)
            self.mask = np.zeros((self.channels, 1, n_stems, N_BINS), np.float32)
        return [[session.bind({"power": self.power[c], "state": self.state[c, p]},
                              {"mask": self.mask[c], "state_out": self.state[c, 1 - p]})
                 for p in (0, 1)] for c in range(self.channels)]

    def reset(self) -> None:
        if not hasattr(self, "ana"):
            return
        self.ana.reset()
        for s in self.syn:
            s.reset()
        self.delay.reset()
        if self.state is not None:
            self.state[...] = 0.0
        self.phase = 0

    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        self.swap_pending()
        re, im = self.ana.re, self.ana.im
        calls, buses = self.calls, self._buses
        for k in range(0, self.block_size, HOP):
            np.copyto(self.hop_in, inp[:, k:k + HOP])
            self.ana.push(self.hop_in)
            for c in range(self.channels):
                p = self.power[c, 0]
                np.multiply(re[c], re[c], out=p)
                np.multiply(im[c], im[c], out=self.tmp[c])
                p += self.tmp[c]
                calls[c][self.phase].run()
            self.phase ^= 1
            for s, syn in enumerate(self.syn):
                bus = buses[s]
                for c in range(self.channels):
                    m = self.mask[c, 0, s]
                    np.multiply(re[c], m, out=self.re_s[c])
                    np.multiply(im[c], m, out=self.im_s[c])
                syn.pull(self.re_s, self.im_s, self.hop_out)
                np.copyto(bus[:, k:k + HOP], self.hop_out)
        np.copyto(out, self.delay.push(inp))

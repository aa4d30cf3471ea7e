"""The Python API: pipelines of nodes on NumPy arrays, the same pipelines the CLI and TOML run.

::

    import soundfile as sf
    from edge_runtime.api import Pipeline, nodes

    x, sr = sf.read("noisy.wav", dtype="float32")
    p = Pipeline([nodes.HighPass(80), nodes.Denoise(), nodes.Limiter(-1)], sample_rate=16000, block_size=160)
    y = p.process(x, sr)                    # any rate and channels: resampled at the edge, aligned
    sf.write("clean.wav", y, sr)

* ``nodes.<Type>(...)`` takes the TOML keys of that node type as keyword arguments (``help(nodes.Denoise)``
  lists them with their defaults and ranges); the first positional argument, where there is one,
  is the node's main value (``HighPass(80)`` is ``cutoff_hz = 80``, ``Gain(-6)`` is ``gain_db = -6``).
  Values are checked exactly as the config loader checks them.
* :meth:`Pipeline.process` on a whole signal: ``(n,)`` or ``(n, channels)`` float audio at
  ``sample_rate``; the result has the same shape and rate, the pipeline's look-ahead compensated
  (the CLI's ``run``). With ``reset=False`` it streams: chunks at the pipeline's rate, a multiple
  of ``block_size`` long, the same number of frames out, delayed by :attr:`Pipeline.latency_samples`,
  state kept between calls (the first call with ``reset=False`` starts a new stream).
* :meth:`Pipeline.from_toml` / :meth:`Pipeline.to_toml` round-trip a pipeline file;
  :attr:`Pipeline.events` holds the :class:`~edge_runtime.engine.Event` objects of the last call.
* :func:`edge_runtime.api.available_models` lists the shipped models and variants.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from .engine import Event

__all__ = ["Node", "Pipeline", "nodes", "available_models"]

# the node's main value, accepted as its first positional argument
_PRIMARY = {"gain": "gain_db", "limiter": "threshold_db", "meter": "interval_ms", "filter": "kind",
            "highpass": "cutoff_hz", "lowpass": "cutoff_hz", "bandpass": "cutoff_hz", "notch": "cutoff_hz",
            "peak": "cutoff_hz", "lowshelf": "cutoff_hz", "highshelf": "cutoff_hz", "denoise": "model",
            "vad": "model", "classify": "model", "bwe": "model", "anomaly": "state"}
_CLASS_NAMES = {"highpass": "HighPass", "lowpass": "LowPass", "bandpass": "BandPass", "lowshelf": "LowShelf",
                "highshelf": "HighShelf", "vad": "Vad", "bwe": "Bwe"}


def _node_class_name(type_name: str) -> str:
    return _CLASS_NAMES.get(type_name, type_name.title().replace("_", ""))


class Node:
    """A node of a pipeline: its type and its parameters (the TOML keys), checked on creation."""

    type: str = ""

    def __init__(self, *args, name: str | None = None, **params):
        from .nodes import NODE_TYPES

        spec = NODE_TYPES[self.type]
        if args:
            main = _PRIMARY.get(self.type)
            if main is None or len(args) > 1:
                raise TypeError(f"nodes.{type(self).__name__} takes keyword arguments ({', '.join(spec.params)})"
                                + (f" or one positional {main}" if main else ""))
            if main in params:
                raise TypeError(f"nodes.{type(self).__name__}: {main} given twice")
            params[main] = args[0]
        self.name = name
        self.params = {k: v for k, v in params.items()}
        self._check()

    def _check(self) -> None:
        from .config import _parse_nodes

        self.spec = _parse_nodes([self.to_dict()], "<python>", "nodes")[0]
        # the checked values (ints given for floats become floats, as from a TOML file)
        self.params = {k: v for k, v in self.spec.items() if k not in ("type", "name")}

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"type": self.type}
        if self.name:
            d["name"] = self.name
        d.update(self.params)
        return d

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"nodes.{type(self).__name__}({args})"


def _node_class(type_name: str, spec) -> type:
    cls_name = _node_class_name(type_name)
    lines = [f"{spec.help}.", "", f"TOML ``type = \"{type_name}\"``; parameters (keyword arguments, the TOML keys):", ""]
    for k, p in spec.params.items():
        rng = f", {p.range[0]:g}..{p.range[1]:g}" if p.range else ""
        ch = f", one of {', '.join(map(str, p.choices))}" if p.choices else ""
        req = ", required" if p.required else f", default {p.default!r}"
        lines.append(f"* ``{k}`` ({p.type.__name__}{req}{rng}{ch}): {p.help}")
    main = _PRIMARY.get(type_name)
    if main:
        lines += ["", f"The first positional argument is ``{main}``."]
    return type(cls_name, (Node,), {"type": type_name, "__doc__": "\n".join(lines), "__module__": __name__ + ".nodes"})


class _Nodes:
    """``nodes.HighPass``, ``nodes.Denoise``, ...: one class per node type (``dir(nodes)``)."""

    def __init__(self):
        from .nodes import NODE_TYPES

        for name, spec in NODE_TYPES.items():
            cls = _node_class(name, spec)
            setattr(self, cls.__name__, cls)

    def __dir__(self) -> Iterable[str]:
        return sorted(k for k in vars(self) if not k.startswith("_"))


nodes = _Nodes()


class _ArraySource:
    """An in-memory (n, channels) float32 source for the runner."""

    name = "<array>"

    def __init__(self, x: np.ndarray, sample_rate: int):
        self.x, self.sample_rate, self.channels, self.frames = x, int(sample_rate), x.shape[1], x.shape[0]
        self.pos = 0

    def read_into(self, out: np.ndarray) -> int:
        n = min(out.shape[0], self.frames - self.pos)
        if n > 0:
            out[:n] = self.x[self.pos:self.pos + n]
            self.pos += n
        return max(n, 0)

    def close(self) -> None:
        pass


class _ArraySink:
    name = "<array>"

    def __init__(self, sample_rate: int, channels: int, frames: int):
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self.out = np.zeros((frames, channels), np.float32)
        self.n = 0

    def write(self, block: np.ndarray) -> None:
        k = block.shape[0]
        if self.n + k > self.out.shape[0]:
            self.out = np.concatenate([self.out, np.zeros((self.n + k - self.out.shape[0], self.channels), np.float32)])
        self.out[self.n:self.n + k] = block
        self.n += k


def _as_frames(x, what: str) -> tuple[np.ndarray, bool]:
    """(n,) or (n, channels) -> C-contiguous float32 (n, channels); whether it was 1-D."""
    a = np.asarray(x)
    if a.ndim not in (1, 2) or a.size == 0:
        raise ValueError(f"{what}: expected audio shaped (frames,) or (frames, channels), got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{what}: expected float samples in [-1, 1], got dtype {a.dtype}")
    mono = a.ndim == 1
    return np.ascontiguousarray(a.reshape(-1, 1) if mono else a, dtype=np.float32), mono


class Pipeline:
    """Nodes run in order at ``sample_rate`` in blocks of ``block_size`` frames (see the module doc)."""

    def __init__(self, nodes_: Iterable[Node], sample_rate: int = 48000, block_size: int | None = None,
                 channels: int | str = "any", name: str = "python", *, output_rate: str = "input",
                 block_ms: float | None = None):
        from .config import parse_pipeline

        self.nodes = list(nodes_)
        for n in self.nodes:
            if not isinstance(n, Node):
                raise TypeError(f"Pipeline: {n!r} is not a node (use edge_runtime.nodes.<Type>(...))")
        data: dict[str, Any] = {"name": name, "sample_rate": sample_rate, "channels": channels,
                                "nodes": [n.to_dict() for n in self.nodes]}
        if block_size is None and block_ms is None:
            block_ms = 10.0
        if block_size is not None:
            data["block_size"] = block_size
        else:
            data["block_ms"] = block_ms
        if output_rate != "input":
            data["output_rate"] = output_rate
        self._data = data
        self.config = parse_pipeline(data, "<python>")
        self._engine = None
        self._stream_rate = None
        self.events: list[Event] = []

    # ---- files ------------------------------------------------------------------------------
    @classmethod
    def from_toml(cls, path) -> "Pipeline":
        """A pipeline file (or a shipped pipeline's name, e.g. ``"denoise"``)."""
        from .config import load_pipeline_config

        cfg = load_pipeline_config(str(path))
        if cfg.stages is not None:
            raise ValueError(f"{cfg.path}: a staged pipeline runs from the CLI (edge-runtime run), not from Python")
        node_objs = []
        for spec in cfg.nodes:
            d = dict(spec)
            t = d.pop("type")
            nm = d.pop("name", None)
            node_objs.append(getattr(nodes, _node_class_name(t))(name=nm, **d))
        rate = "input" if cfg.sample_rate is None else cfg.sample_rate
        return cls(node_objs, sample_rate=rate, block_size=cfg.block_size, block_ms=cfg.block_ms,
                   channels="any" if cfg.channels is None else cfg.channels, name=cfg.name,
                   output_rate=cfg.output_rate)

    def to_toml(self) -> str:
        """The pipeline as a TOML document that :meth:`from_toml` (and the CLI) read back."""
        from .models._toml import dumps

        return dumps(self._data)

    # ---- processing -------------------------------------------------------------------------
    @property
    def sample_rate(self):
        return self.config.sample_rate

    @property
    def latency_samples(self) -> int:
        """Look-ahead of the pipeline at its rate (0 before the first call for input-rate pipelines)."""
        return 0 if self._engine is None else self._engine.latency_samples

    def _build(self, input_rate: int):
        return self.config.build(input_rate)

    def process(self, x, sample_rate: int | None = None, *, reset: bool = True) -> np.ndarray:
        """Process ``x`` ((n,) or (n, channels) float). ``reset=True``: a whole signal at
        ``sample_rate`` (default: the pipeline's), converted at the edge, the result at the input's
        rate (or the pipeline's, for ``output_rate = "pipeline"``) and aligned. ``reset=False``:
        stream a chunk at the pipeline's rate; as many frames come back, ``latency_samples`` late."""
        a, mono = _as_frames(x, "Pipeline.process")
        rate = int(sample_rate or self.config.sample_rate or 0)
        if rate <= 0:
            raise ValueError("Pipeline.process: this pipeline runs at its input's rate; give sample_rate")
        if reset:
            self._stream_rate = None
            y = self._whole(a, rate)
        else:
            y = self._stream(a, rate)
        return y[:, 0] if mono else y

    def _whole(self, a: np.ndarray, rate: int) -> np.ndarray:
        from .runner import run_stream

        eng = self._engine = self._build(rate)
        out_rate = eng.sample_rate if eng.output_rate == "pipeline" else rate
        src = _ArraySource(a, rate)
        sink = _ArraySink(out_rate, a.shape[1], int(round(a.shape[0] * out_rate / rate)))
        self.events = []
        run_stream(eng, src, sink, on_event=self.events.append)
        self._stream_rate = None
        return sink.out[:sink.n]

    def _stream(self, a: np.ndarray, rate: int) -> np.ndarray:
        if self._engine is None or self._stream_rate is None:
            eng = self._build(rate)
            if rate != eng.sample_rate:
                raise ValueError(f"Pipeline.process(reset=False): stream at the pipeline's rate {eng.sample_rate} "
                                 f"Hz, got {rate} (reset=True converts a whole signal)")
            eng.prepare(a.shape[1])
            eng.reset()
            self._engine, self._stream_rate, self._ch = eng, rate, a.shape[1]
        eng = self._engine
        bs = eng.block_size
        if a.shape[1] != self._ch or rate != self._stream_rate or a.shape[0] % bs:
            raise ValueError(f"Pipeline.process(reset=False): chunks of {self._ch} channel(s) at {self._stream_rate} "
                             f"Hz, a multiple of the block size {bs} frames long; got {a.shape[1]} channel(s), "
                             f"{rate} Hz, {a.shape[0]} frames")
        out = np.empty_like(a)
        for i in range(0, a.shape[0], bs):
            np.copyto(eng.input, a[i:i + bs].T)
            eng.process_block()
            np.copyto(out[i:i + bs].T, eng.output)
        self.events = eng.drain_events()
        return out

    def __repr__(self) -> str:
        return f"Pipeline([{', '.join(map(repr, self.nodes))}], sample_rate={self._data['sample_rate']!r})"


def available_models(check: bool = False) -> list[dict]:
    """The shipped models (and any on ``$EDGE_RUNTIME_MODELS``), each with its variants, metrics and
    provenance; ``check=True`` verifies every file's sha256 (the same as ``edge_runtime.models.available``)."""
    from .models import available

    return available(check=check)

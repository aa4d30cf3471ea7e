"""``anomaly``: learn what normal sounds like, then emit anomaly episodes with hysteresis.

Audio passes through unchanged. The node mixes the block to mono, cuts it into the feature
extractor's hops (:mod:`edge_runtime.features`, log-mel statistics by default) and, per
feature vector, either stores it (learning) or scores it (monitoring):

* ``learn = "never"``: load ``state`` in ``prepare`` (a file made by ``edge-runtime anomaly
  learn`` or by an earlier learning run); a missing/corrupt/foreign file is a clear error.
* ``learn = "if_missing"``: load ``state`` when it exists, else learn (the service case: the
  first boot learns, later boots reuse it).
* ``learn = "always"``: learn at every start.

Learning keeps the first ``learn_s`` seconds of feature vectors in an array allocated in
``prepare``; when it is full the detector is fitted in a child process (its own interpreter:
the audio thread never waits for scikit-learn) watched by a background thread while the audio
keeps flowing, the state is saved atomically to ``state`` (if set), and scoring starts between
two blocks (event ``learned``, value = the on-threshold). The threshold allows
``false_alarms_per_hour`` episodes per hour of normal audio (see
:func:`edge_runtime.anomaly.model.calibrate`); an episode starts when ``on_frames`` of the last
``on_window`` hops score above it (140 of 156, 5 s: a word or a door does not last that long).

Events (value): ``anomaly_start`` (peak score / threshold so far; its time is the end of the
first hop whose score crossed the threshold), ``anomaly_end`` (episode length in seconds; its
time is the end of the first of the ``off_frames`` quiet hops), ``anomaly_score`` every
``score_interval_ms`` (score / threshold, 0 = off), ``learned``.
"""
from __future__ import annotations

import logging
import os
import threading

import numpy as np

from ..engine import Node
from ..errors import ConfigError

log = logging.getLogger("edge_runtime.anomaly")

LEARN_MODES = ("never", "if_missing", "always")
#: shortest learning period with a false-alarm budget: two folds of a 156-hop window + context
MIN_LEARN_S = 12.0


def resolve_state(state: str) -> str:
    """A bare name (no ``/``) lives in the state folder (``<state dir>/anomaly/<name>``, see
    ``edge-runtime profile --state-dir``); anything else is a path (``~`` expanded)."""
    state = str(state or "")
    if not state:
        return ""
    if os.sep not in state:
        from ..paths import state_dir

        return str(state_dir() / "anomaly" / state)
    return os.path.expanduser(state)


class AnomalyDetect(Node):
    event_names = ("anomaly_start", "anomaly_end", "anomaly_score", "learned")

    def __init__(self, state: str = "", learn: str = "never", learn_s: float = 60.0, detector: str = "gmm",
                 false_alarms_per_hour: float = 1.0, quantile_on: float | None = None, quantile_off: float = 0.98,
                 on_frames: int | None = None, on_window: int | None = None, off_frames: int | None = None,
                 score_interval_ms: float = 0.0, features: dict | None = None, augment: dict | None = None,
                 seed: int = 0, auto_fit: bool = True, fit_process: bool = True, name: str | None = None):
        super().__init__(name or "anomaly")
        from ..anomaly.detectors import DETECTORS

        if learn not in LEARN_MODES:
            raise ValueError(f"learn={learn!r} is not one of {', '.join(LEARN_MODES)}")
        if learn == "never" and not state:
            raise ValueError("anomaly needs a state file (state = \"...\") or learn = \"if_missing\"/\"always\"")
        if detector not in DETECTORS:
            raise ValueError(f"detector={detector!r} is not one of {', '.join(DETECTORS)}")
        if not 5.0 <= float(learn_s) <= 24 * 3600:
            raise ValueError(f"learn_s={learn_s} is outside 5..86400 seconds")
        for k, v in (("on_frames", on_frames), ("on_window", on_window), ("off_frames", off_frames)):
            if v is not None and int(v) < 1:
                raise ValueError(f"{k}={v} must be >= 1")
        if on_frames is not None and on_window is not None and int(on_window) < int(on_frames):
            raise ValueError(f"on_window={on_window} must be >= on_frames={on_frames}")
        if not 0.001 <= float(false_alarms_per_hour) <= 3600:
            raise ValueError(f"false_alarms_per_hour={false_alarms_per_hour} is outside 0.001..3600")
        if quantile_on is None and learn != "never" and float(learn_s) < MIN_LEARN_S:
            raise ValueError(f"learn_s={learn_s} is too short to calibrate a false-alarm budget (need >= "
                             f"{MIN_LEARN_S:g} s: two 5 s windows and the feature context), or set quantile_on")
        if quantile_on is not None and not 0.5 < float(quantile_off) <= float(quantile_on) < 1:
            raise ValueError(f"need 0.5 < quantile_off <= quantile_on < 1, got {quantile_off}, {quantile_on}")
        if score_interval_ms < 0:
            raise ValueError(f"score_interval_ms={score_interval_ms} must be >= 0")
        self.state_path = resolve_state(state)
        self.learn, self.learn_s, self.detector = learn, float(learn_s), detector
        self.false_alarms_per_hour = float(false_alarms_per_hour)
        self.quantile_on = None if quantile_on is None else float(quantile_on)
        self.quantile_off = float(quantile_off)
        self.on_frames, self.on_window, self.off_frames = on_frames, on_window, off_frames
        self.augment = augment
        self.score_interval_ms = float(score_interval_ms)
        self.features_config = features
        self.seed = int(seed)
        self.auto_fit = bool(auto_fit)
        self.fit_process = bool(fit_process)
        self.model = None
        self.hyst = None
        self.fit_error: str | None = None
        self._pending = None
        self._thread: threading.Thread | None = None

    # ---- set-up ----------------------------------------------------------------------------
    def _load(self):
        from ..anomaly.model import AnomalyModel

        model = AnomalyModel.load(self.state_path)
        if model.sample_rate != self.sample_rate:
            raise ConfigError(f"{self.state_path}: state was learned at {model.sample_rate} Hz, the pipeline "
                              f"runs at {self.sample_rate} Hz (set the pipeline's sample_rate to {model.sample_rate})")
        return model

    def prepare(self, sample_rate: int, block_size: int, channels: int) -> None:
        super().prepare(sample_rate, block_size, channels)
        from ..features import make_extractor

        learning = self.learn == "always" or (self.learn == "if_missing" and not os.path.exists(self.state_path))
        model = None if learning else self._load()
        self.fx = make_extractor(model.features if model is not None else self.features_config)
        self.fx.prepare(sample_rate)
        self.hop = self.fx.hop
        self.mono = np.zeros(block_size, np.float32)
        self.acc = np.zeros(self.fx.hop, np.float32)
        n_learn = max(1, int(self.learn_s * sample_rate / self.hop)) if learning else 1
        self.learn_buf = np.zeros((n_learn, self.fx.dim), np.float32)
        self._pending = None
        self.model = None
        self.scorer = None
        self._install(model)
        self.learning = learning
        if learning:
            from ..anomaly.detectors import preload

            preload(self.detector)
        self.reset()

    def _install(self, model) -> None:
        from ..anomaly.model import Hysteresis

        self.model = model
        if model is None:
            self.scorer, self.hyst = None, None
            return
        self.scorer = model.scorer()
        self.hyst = Hysteresis.for_model(model, self.on_frames, self.on_window, self.off_frames)
        # scores as (score - typical normal) / (threshold - typical normal): 0 = typical, 1 = on
        # the threshold, whatever the detector's units (a GMM's -log p can be negative)
        self.med = float(model.info.get("held_score_median", 0.0))
        span = model.threshold_on - self.med
        self.inv_span = 1.0 / span if span > 0 else 1.0

    def reset(self) -> None:
        self.fx.reset()
        self.fill = 0
        self.samples = 0          # frames seen since prepare/reset (block start of the next block)
        self.block_start = 0
        self.n_learned = 0
        self.hops = 0
        self.last_score = 0.0
        self.score_every = (max(1, int(round(self.score_interval_ms / 1000.0 * self.sample_rate / self.hop)))
                            if self.score_interval_ms > 0 else 0)
        if self.hyst is not None:
            self.hyst.reset()

    # ---- learning ----------------------------------------------------------------------------
    @property
    def learn_full(self) -> bool:
        return self.learning and self.n_learned >= len(self.learn_buf)

    def fit_settings(self) -> dict:
        """Keyword arguments of :meth:`AnomalyModel.fit` this node's settings give."""
        from ..anomaly import model as AM

        kw = {"features": self.fx.config(), "sample_rate": self.sample_rate, "seed": self.seed,
              "augment": self.augment, "on_frames": AM.ON_FRAMES if self.on_frames is None else int(self.on_frames),
              "off_frames": AM.OFF_FRAMES if self.off_frames is None else int(self.off_frames)}
        kw["on_window"] = max(kw["on_frames"], AM.ON_WINDOW if self.on_window is None else int(self.on_window))
        if self.quantile_on is not None:
            kw.update(false_alarms_per_hour=None, quantile_on=self.quantile_on,
                      quantile_off=min(self.quantile_off, self.quantile_on))
        else:
            kw["false_alarms_per_hour"] = self.false_alarms_per_hour
        return kw

    def fit(self, frames: np.ndarray | None = None):
        """Fit on the stored frames (or ``frames``), save the state if ``state`` is set."""
        from ..anomaly.model import AnomalyModel

        X = self.learn_buf[:self.n_learned] if frames is None else frames
        return self._save(AnomalyModel.fit(X, self.detector, **self.fit_settings()))

    def _save(self, model):
        """Write ``model`` to ``state`` (if set; its folder made), return it."""
        if self.state_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.state_path)), exist_ok=True)
            model.save(self.state_path)
        return model

    def _fit_background(self) -> None:
        try:
            model = self._fit_in_process() if self.fit_process else self.fit()
        except Exception as e:  # noqa: BLE001 - a failed fit must not kill the audio thread
            self.fit_error = f"{type(e).__name__}: {e}"
            log.error("%s: learning failed: %s", self.name, self.fit_error)
            return
        self._pending = model

    def _fit_in_process(self):
        """The fit in a child process (its own interpreter and GIL: the audio thread here is
        never held up by scikit-learn's Python code): frames go as an ``.npy`` file, the model
        comes back as a state file that :meth:`AnomalyModel.load` checks like any other."""
        import multiprocessing
        import tempfile

        from ..anomaly.model import AnomalyModel

        with tempfile.TemporaryDirectory(prefix="edge_runtime-anomaly-") as tmp:
            frames, out = os.path.join(tmp, "frames.npy"), os.path.join(tmp, "model.state")
            np.save(frames, self.learn_buf[:self.n_learned], allow_pickle=False)
            ctx = multiprocessing.get_context("spawn")   # no fork of a process with audio threads
            proc = ctx.Process(target=fit_worker, args=(frames, self.detector, self.fit_settings(), out),
                               name=f"edge_runtime-anomaly-fit-{self.name}", daemon=False)
            proc.start()
            proc.join()
            if proc.exitcode != 0 or not os.path.exists(out):
                err = os.path.join(tmp, "model.state.error")
                why = open(err, encoding="utf-8").read().strip() if os.path.exists(err) else f"exit code {proc.exitcode}"
                raise RuntimeError(f"the fit process failed: {why}")
            model = AnomalyModel.load(out)
        return self._save(model)

    def start_fit(self, wait: bool = False) -> None:
        """Fit the learned frames in the background (``wait``: block until done): a thread that
        waits for a child process doing the fit (``fit_process``, the default), or the fit on
        the thread itself."""
        if self._thread is None:
            # not a daemon: a stream that ends (or a service told to stop) while the fit runs
            # still gets its learned state saved before the process exits
            self._thread = threading.Thread(target=self._fit_background, daemon=False,
                                            name=f"edge_runtime-anomaly-fit-{self.name}")
            self._thread.start()
        if wait:
            self._thread.join()
            self._swap()

    def _swap(self) -> None:
        model, self._pending = self._pending, None
        if model is not None:
            self._install(model)
            self.learning = False
            self.emit("learned", model.threshold_on)

    # ---- hot path ----------------------------------------------------------------------------
    def process(self, inp: np.ndarray, out: np.ndarray) -> None:
        if self._pending is not None:
            self._swap()
        np.copyto(out, inp)
        if self.channels == 1:
            np.copyto(self.mono, inp[0])
        else:
            np.mean(inp, axis=0, out=self.mono)
        bs, hop = self.block_size, self.hop
        pos = 0
        while pos < bs:
            k = hop - self.fill
            if k > bs - pos:
                k = bs - pos
            self.acc[self.fill:self.fill + k] = self.mono[pos:pos + k]
            self.fill += k
            pos += k
            if self.fill == hop:
                self.fill = 0
                if self.fx.push(self.acc):
                    self._frame(pos)
        self.samples += bs

    @property
    def event_lookback_samples(self) -> int:
        """How far before the current block an event may be dated (an episode's start is put at
        its first loud hop, up to ``on_window`` hops back); the runner holds other nodes' events
        that long so that events come out in time order."""
        h = getattr(self, "hyst", None)
        if h is None:
            return 0
        return (max(int(h.on_window or 0), int(h.off_frames)) + 1) * int(self.hop)

    def _frame(self, pos: int) -> None:
        self.hops += 1
        if self.scorer is not None:
            s = self.scorer.score(self.fx.out)
            self.last_score = s
            r = (s - self.med) * self.inv_span
            change = self.hyst.update(s)
            if change > 0:
                back = self.hyst.frame - self.hyst.start_frame   # hops since the episode's first frame
                self.emit("anomaly_start", (self.hyst.peak - self.med) * self.inv_span, pos - back * self.hop)
            elif change < 0:
                dur = (self.hyst.end_frame - self.hyst.start_frame) * self.hop / self.sample_rate
                self.emit("anomaly_end", dur, pos - (self.hyst.off_frames - 1) * self.hop)
            if self.score_every and self.hops % self.score_every == 0:
                self.emit("anomaly_score", r, pos)
        elif self.learning and self.n_learned < len(self.learn_buf):
            self.learn_buf[self.n_learned] = self.fx.out
            self.n_learned += 1
            if self.n_learned == len(self.learn_buf) and self.auto_fit:
                self.start_fit()


def fit_worker(frames_path: str, detector: str, settings: dict, out_path: str) -> None:
    """Child-process side of :meth:`AnomalyDetect._fit_in_process`: fit, save the state (an
    error goes to ``<out>.error`` for the parent's message)."""
    from ..anomaly.model import AnomalyModel

    try:
        X = np.load(frames_path, allow_pickle=False)
        AnomalyModel.fit(X, detector, **settings).save(out_path)
    except Exception as e:  # noqa: BLE001 - reported to the parent
        with open(out_path + ".error", "w", encoding="utf-8") as f:
            f.write(f"{type(e).__name__}: {e}")
        raise SystemExit(1) from None

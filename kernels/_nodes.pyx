# cython: language_level=3
"""Native DSP nodes: identity, gain, SOS filter, look-ahead limiter, level meter.

Every node allocates in ``prepare`` and nothing in ``process_block``.
"""
import numpy as np
from libc.math cimport fabs, expf, log10, sqrt, pow

from edge_runtime._engine cimport NativeNode
from edge_runtime._kernels cimport sos_filter, accumulate_peak_sumsq, copy_block


cdef inline double db_to_lin(double db) noexcept nogil:
    return pow(10.0, db / 20.0)


cdef class Identity(NativeNode):
    """Copies its input: the baseline for engine-overhead measurements."""

    cdef int process_block(self, float[:, ::1] inp, float[:, ::1] out) noexcept nogil:
        copy_block(inp, out)
        return 0


cdef class Gain(NativeNode):
    """Static gain in dB; a change is ramped linearly over one block (no zipper noise)."""

    cdef float current
    cdef float target

    def __init__(self, double gain_db=0.0, name=None):
        NativeNode.__init__(self, name if name is not None else "gain")
        self.current = self.target = <float>db_to_lin(gain_db)

    @property
    def gain_db(self):
        return 20.0 * log10(self.target) if self.target > 0 else float("-inf")

    @gain_db.setter
    def gain_db(self, double value):
        self.target = <float>db_to_lin(value)

    def reset(self):
        self.current = self.target

    cdef int process_block(self, float[:, ::1] inp, float[:, ::1] out) noexcept nogil:
        cdef Py_ssize_t c, i, n = inp.shape[1]
        cdef float g = self.current, step
        if g == self.target:
            for c in range(inp.shape[0]):
                for i in range(n):
                    out[c, i] = inp[c, i] * g
        else:
            step = (self.target - g) / n
            for c in range(inp.shape[0]):
                for i in range(n):
                    out[c, i] = inp[c, i] * (g + step * (i + 1))
            self.current = self.target
        return 0


cdef class SosFilter(NativeNode):
    """A cascade of biquads (second-order sections), designed at ``prepare`` for the
    pipeline's sample rate by :func:`edge_runtime.filters.design`."""

    cdef object design_args
    cdef double[:, ::1] sos
    cdef double[:, :, ::1] state
    cdef object _sos_arr
    cdef object _state_arr

    def __init__(self, str kind="highpass", double cutoff_hz=80.0, int order=2, double q=0.7071067811865476,
                 double gain_db=0.0, name=None):
        NativeNode.__init__(self, name if name is not None else kind)
        from edge_runtime.filters import validate_design
        self.design_args = validate_design(kind=kind, cutoff_hz=cutoff_hz, order=order, q=q, gain_db=gain_db)

    @property
    def coefficients(self):
        """The SOS matrix in use, shape (sections, 6), scipy's layout."""
        return None if self._sos_arr is None else self._sos_arr.copy()

    def prepare(self, int sample_rate, int block_size, int channels):
        NativeNode.prepare(self, sample_rate, block_size, channels)
        from edge_runtime.filters import design
        self._sos_arr = np.ascontiguousarray(design(sample_rate=sample_rate, **self.design_args), dtype=np.float64)
        self.sos = self._sos_arr
        self._state_arr = np.zeros((channels, self._sos_arr.shape[0], 2), dtype=np.float64)
        self.state = self._state_arr

    def reset(self):
        if self._state_arr is not None:
            self._state_arr[...] = 0.0

    cdef int process_block(self, float[:, ::1] inp, float[:, ::1] out) noexcept nogil:
        sos_filter(self.sos, self.state, inp, out)
        return 0


cdef class Limiter(NativeNode):
    """Look-ahead peak limiter, channel-linked: the output never exceeds ``threshold_db``.

    The gain needed at each sample is held at its minimum over the look-ahead window and
    smoothed by a box filter of the same length, so the gain has reached its target when
    the delayed peak arrives (no overshoot, no click); it then recovers with ``release_ms``.
    Latency: ``lookahead_ms`` of samples.
    """

    cdef double threshold_db, lookahead_ms, release_ms
    cdef float threshold
    cdef Py_ssize_t window          # hold/box window W = lookahead + 1
    cdef Py_ssize_t pos             # running sample counter (mod window for rings)
    cdef float[:, ::1] delay        # (channels, window) delay line ring
    cdef float[::1] box             # ring of held gains inside the box filter
    cdef double box_sum
    cdef long long[::1] dq_idx      # monotonic deque for the running minimum
    cdef float[::1] dq_val
    cdef Py_ssize_t dq_head, dq_tail
    cdef long long t
    cdef float release_coeff
    cdef float gain
    cdef readonly double min_gain
    cdef object _arrays

    event_names = ()

    def __init__(self, double threshold_db=-1.0, double lookahead_ms=1.5, double release_ms=60.0, name=None):
        NativeNode.__init__(self, name if name is not None else "limiter")
        if not (-60.0 <= threshold_db <= 0.0):
            raise ValueError(f"limiter threshold_db={threshold_db} is outside -60..0 dBFS")
        if not (0.0 <= lookahead_ms <= 20.0):
            raise ValueError(f"limiter lookahead_ms={lookahead_ms} is outside 0..20 ms")
        if not (1.0 <= release_ms <= 5000.0):
            raise ValueError(f"limiter release_ms={release_ms} is outside 1..5000 ms")
        self.threshold_db = threshold_db
        self.lookahead_ms = lookahead_ms
        self.release_ms = release_ms
        self.threshold = <float>db_to_lin(threshold_db)

    def prepare(self, int sample_rate, int block_size, int channels):
        NativeNode.prepare(self, sample_rate, block_size, channels)
        cdef Py_ssize_t look = <Py_ssize_t>(self.lookahead_ms * 1e-3 * sample_rate + 0.5)
        self.window = look + 1
        self.latency_samples = <int>look
        self.release_coeff = <float>expf(-1.0 / (self.release_ms * 1e-3 * sample_rate))
        d = np.zeros((channels, self.window), dtype=np.float32)
        b = np.ones(self.window, dtype=np.float32)
        qi = np.zeros(self.window + 1, dtype=np.int64)
        qv = np.zeros(self.window + 1, dtype=np.float32)
        self._arrays = (d, b, qi, qv)
        self.delay = d
        self.box = b
        self.dq_idx = qi
        self.dq_val = qv
        self.reset()

    def reset(self):
        if self._arrays is None:
            return
        self._arrays[0][...] = 0.0
        self._arrays[1][...] = 1.0
        self.box_sum = <double>self.window
        self.dq_head = self.dq_tail = 0
        self.t = 0
        self.gain = 1.0
        self.min_gain = 1.0

    cdef int process_block(self, float[:, ::1] inp, float[:, ::1] out) noexcept nogil:
        cdef Py_ssize_t c, i, k, slot, rd
        cdef Py_ssize_t W = self.window
        cdef Py_ssize_t cap = W + 1
        cdef float peak, a, target, held, g
        cdef long long t
        for i in range(inp.shape[1]):
            t = self.t
            peak = 0.0
            for c in range(inp.shape[0]):
                a = fabs(inp[c, i])
                if a > peak:
                    peak = a
            target = self.threshold / peak if peak > self.threshold else 1.0
            # running minimum of the targets over the last W samples (monotonic deque)
            while self.dq_tail != self.dq_head and self.dq_val[(self.dq_tail - 1 + cap) % cap] >= target:
                self.dq_tail = (self.dq_tail - 1 + cap) % cap
            self.dq_idx[self.dq_tail] = t
            self.dq_val[self.dq_tail] = target
            self.dq_tail = (self.dq_tail + 1) % cap
            if self.dq_idx[self.dq_head] <= t - W:
                self.dq_head = (self.dq_head + 1) % cap
            held = self.dq_val[self.dq_head]
            # box average of the held gains over W samples
            slot = <Py_ssize_t>(t % W)
            self.box_sum += held - self.box[slot]
            self.box[slot] = held
            if slot == W - 1:
                # re-sum once per window so rounding in the running sum cannot drift
                self.box_sum = 0.0
                for k in range(W):
                    self.box_sum += self.box[k]
            g = <float>(self.box_sum / W)
            if g < self.gain:
                self.gain = g
            else:
                self.gain = g + (self.gain - g) * self.release_coeff
            if self.gain < self.min_gain:
                self.min_gain = self.gain
            # delay line of W-1 samples: store the new sample, emit the one from t-(W-1)
            rd = <Py_ssize_t>((t + 1) % W)
            for c in range(inp.shape[0]):
                self.delay[c, slot] = inp[c, i]
                out[c, i] = self.delay[c, rd] * self.gain
            self.t = t + 1
        return 0


cdef class Meter(NativeNode):
    """Passes audio through and emits ``peak_dbfs`` and ``rms_dbfs`` events (the loudest
    channel) every ``interval_ms``."""

    cdef double interval_ms
    cdef Py_ssize_t interval, counted
    cdef float[::1] peak
    cdef double[::1] sumsq
    cdef object _arrays

    event_names = ("peak_dbfs", "rms_dbfs")

    def __init__(self, double interval_ms=1000.0, name=None):
        NativeNode.__init__(self, name if name is not None else "meter")
        if interval_ms <= 0:
            raise ValueError(f"meter interval_ms={interval_ms} must be > 0")
        self.interval_ms = interval_ms

    def prepare(self, int sample_rate, int block_size, int channels):
        NativeNode.prepare(self, sample_rate, block_size, channels)
        self.interval = max(1, <Py_ssize_t>(self.interval_ms * 1e-3 * sample_rate + 0.5))
        p = np.zeros(channels, dtype=np.float32)
        s = np.zeros(channels, dtype=np.float64)
        self._arrays = (p, s)
        self.peak = p
        self.sumsq = s
        self.reset()

    def reset(self):
        if self._arrays is not None:
            self._arrays[0][...] = 0.0
            self._arrays[1][...] = 0.0
        self.counted = 0

    cdef int process_block(self, float[:, ::1] inp, float[:, ::1] out) noexcept nogil:
        cdef Py_ssize_t c
        cdef float p = 0.0
        cdef double r = 0.0
        copy_block(inp, out)
        accumulate_peak_sumsq(inp, self.peak, self.sumsq)
        self.counted += inp.shape[1]
        if self.counted >= self.interval:
            for c in range(inp.shape[0]):
                if self.peak[c] > p:
                    p = self.peak[c]
                if self.sumsq[c] > r:
                    r = self.sumsq[c]
                self.peak[c] = 0.0
                self.sumsq[c] = 0.0
            r = sqrt(r / self.counted)
            if self.events is not None:
                self.events.emit(self.node_index, 0, inp.shape[1], 20.0 * log10(p + 1e-12))
                self.events.emit(self.node_index, 1, inp.shape[1], 20.0 * log10(r + 1e-12))
            self.counted = 0
        return 0

# cython: language_level=3
"""Elementary kernels: NaN/Inf sanitizing, peak/RMS meters, SOS (biquad cascade)
filtering, affine INT8 quantization, a multichannel ring buffer.

Pure compute on typed memoryviews, ``nogil``, no allocation per call. The ``def``
functions are thin entry points for Python callers and tests; argument checking lives in
:mod:`edge_runtime.dsp`.
"""
import numpy as np
from libc.math cimport fabs, nearbyintf
from libc.string cimport memcpy


# Beyond this a sample is not audio (60 dB over full scale): a broken or hostile file (float WAVs
# holding 1e30 made the resampled paths ring at full scale for 122 ms and float outputs reach
# 4.6e25). Such samples are replaced by 0 and counted with NaN/Inf.
cdef float SAMPLE_LIMIT = 1000.0


cdef Py_ssize_t sanitize_nonfinite(float[:, ::1] x) noexcept nogil:
    cdef Py_ssize_t c, i, bad = 0
    for c in range(x.shape[0]):
        for i in range(x.shape[1]):
            if not (fabs(x[c, i]) <= SAMPLE_LIMIT):     # false for NaN and +-Inf too
                x[c, i] = 0.0
                bad += 1
    return bad


cdef void accumulate_peak_sumsq(const float[:, ::1] x, float[::1] peak, double[::1] sumsq) noexcept nogil:
    cdef Py_ssize_t c, i
    cdef float a, p
    cdef double s
    for c in range(x.shape[0]):
        p = peak[c]
        s = 0.0
        for i in range(x.shape[1]):
            a = fabs(x[c, i])
            if a > p:
                p = a
            s += <double>x[c, i] * x[c, i]
        peak[c] = p
        sumsq[c] += s


cdef void sos_filter(const double[:, ::1] sos, double[:, :, ::1] state,
                     const float[:, ::1] x, float[:, ::1] y) noexcept nogil:
    # Direct form II transposed per section (scipy.signal.sosfilt's structure), in double:
    # float32 state makes low-cutoff high-passes at 48 kHz audibly noisy.
    cdef Py_ssize_t c, s, i
    cdef Py_ssize_t n_sec = sos.shape[0]
    cdef double b0, b1, b2, a1, a2, z0, z1, v, w
    for c in range(x.shape[0]):
        for i in range(x.shape[1]):
            y[c, i] = x[c, i]
        for s in range(n_sec):
            b0 = sos[s, 0]; b1 = sos[s, 1]; b2 = sos[s, 2]
            a1 = sos[s, 4]; a2 = sos[s, 5]
            z0 = state[c, s, 0]; z1 = state[c, s, 1]
            for i in range(x.shape[1]):
                v = y[c, i]
                w = b0 * v + z0
                z0 = b1 * v - a1 * w + z1
                z1 = b2 * v - a2 * w
                y[c, i] = <float>w
            state[c, s, 0] = z0
            state[c, s, 1] = z1


cdef void quantize_affine(const float[::1] x, float scale, int zero_point, signed char[::1] q) noexcept nogil:
    # q = clamp(round_half_even(x / scale) + zero_point, -128, 127): ONNX QuantizeLinear semantics.
    cdef Py_ssize_t i
    cdef float v
    for i in range(x.shape[0]):
        v = nearbyintf(x[i] / scale) + zero_point
        if v > 127.0:
            v = 127.0
        elif v < -128.0:
            v = -128.0
        elif v != v:
            v = <float>zero_point
        q[i] = <signed char>v


cdef void dequantize_affine(const signed char[::1] q, float scale, int zero_point, float[::1] x) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(q.shape[0]):
        x[i] = (<int>q[i] - zero_point) * scale


cdef void copy_block(const float[:, ::1] src, float[:, ::1] dst) noexcept nogil:
    memcpy(&dst[0, 0], &src[0, 0], src.shape[0] * src.shape[1] * sizeof(float))


cdef class RingBuffer:
    """Fixed-capacity FIFO of float32 frames shaped ``(channels, capacity)``.

    Writes beyond the free space and reads beyond the stored frames are truncated and the
    number of frames actually moved is returned, so callers see overflow instead of
    silently overwriting.
    """

    def __cinit__(self, Py_ssize_t capacity, Py_ssize_t channels=1):
        if capacity <= 0 or channels <= 0:
            raise ValueError(f"RingBuffer needs capacity > 0 and channels > 0, got {capacity}, {channels}")
        self.capacity = capacity
        self.channels = channels
        self._array = np.zeros((channels, capacity), dtype=np.float32)
        self.data = self._array
        self.read_count = 0
        self.write_count = 0

    cdef Py_ssize_t c_available(self) noexcept nogil:
        return <Py_ssize_t>(self.write_count - self.read_count)

    cdef Py_ssize_t c_space(self) noexcept nogil:
        return self.capacity - <Py_ssize_t>(self.write_count - self.read_count)

    cdef Py_ssize_t c_write(self, const float[:, ::1] x, Py_ssize_t start, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t c, k, pos, first
        cdef Py_ssize_t space = self.c_space()
        if n > space:
            n = space
        pos = <Py_ssize_t>(self.write_count % self.capacity)
        first = self.capacity - pos
        if first > n:
            first = n
        for c in range(self.channels):
            if first > 0:
                memcpy(&self.data[c, pos], &x[c, start], first * sizeof(float))
            if n > first:
                memcpy(&self.data[c, 0], &x[c, start + first], (n - first) * sizeof(float))
        self.write_count += n
        return n

    cdef Py_ssize_t c_peek(self, float[:, ::1] out, Py_ssize_t start, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t c, pos, first
        cdef Py_ssize_t avail = self.c_available()
        if n > avail:
            n = avail
        pos = <Py_ssize_t>(self.read_count % self.capacity)
        first = self.capacity - pos
        if first > n:
            first = n
        for c in range(self.channels):
            if first > 0:
                memcpy(&out[c, start], &self.data[c, pos], first * sizeof(float))
            if n > first:
                memcpy(&out[c, start + first], &self.data[c, 0], (n - first) * sizeof(float))
        return n

    cdef Py_ssize_t c_discard(self, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t avail = self.c_available()
        if n > avail:
            n = avail
        self.read_count += n
        return n

    cdef Py_ssize_t c_read(self, float[:, ::1] out, Py_ssize_t start, Py_ssize_t n) noexcept nogil:
        n = self.c_peek(out, start, n)
        self.read_count += n
        return n

    @property
    def available(self):
        """Frames stored and not yet read."""
        return self.c_available()

    @property
    def space(self):
        """Frames that can be written before the buffer is full."""
        return self.c_space()

    def write(self, const float[:, ::1] x, Py_ssize_t start=0, Py_ssize_t n=-1):
        """Append frames ``x[:, start:start+n]`` (all of ``x`` from ``start`` by default); returns frames written."""
        if x.shape[0] != self.channels:
            raise ValueError(f"RingBuffer has {self.channels} channels, got an array with {x.shape[0]}")
        if n < 0:
            n = x.shape[1] - start
        if start < 0 or start + n > x.shape[1]:
            raise ValueError(f"frames {start}..{start + n} are outside an array of {x.shape[1]} frames")
        return self.c_write(x, start, n)

    def read(self, float[:, ::1] out, Py_ssize_t start=0, Py_ssize_t n=-1):
        """Move up to ``n`` frames into ``out[:, start:]``; returns frames read."""
        if out.shape[0] != self.channels:
            raise ValueError(f"RingBuffer has {self.channels} channels, got an array with {out.shape[0]}")
        if n < 0:
            n = out.shape[1] - start
        if start < 0 or start + n > out.shape[1]:
            raise ValueError(f"frames {start}..{start + n} are outside an array of {out.shape[1]} frames")
        return self.c_read(out, start, n)

    def peek(self, float[:, ::1] out, Py_ssize_t start=0, Py_ssize_t n=-1):
        """Like :meth:`read` without consuming the frames."""
        if out.shape[0] != self.channels:
            raise ValueError(f"RingBuffer has {self.channels} channels, got an array with {out.shape[0]}")
        if n < 0:
            n = out.shape[1] - start
        if start < 0 or start + n > out.shape[1]:
            raise ValueError(f"frames {start}..{start + n} are outside an array of {out.shape[1]} frames")
        return self.c_peek(out, start, n)

    def discard(self, Py_ssize_t n):
        """Drop up to ``n`` stored frames; returns frames dropped."""
        return self.c_discard(n)

    def clear(self):
        self.read_count = self.write_count = 0


# ---- def entry points (validated by edge_runtime.dsp) --------------------------------

def sanitize(float[:, ::1] x):
    """Replace NaN/Inf and samples beyond +-1000 (60 dB over full scale) in place by 0; return how
    many samples were replaced."""
    return sanitize_nonfinite(x)


def peak_sumsq(const float[:, ::1] x, float[::1] peak, double[::1] sumsq):
    """Update per-channel running peak |x| and sum of squares."""
    accumulate_peak_sumsq(x, peak, sumsq)


def sosfilt(const double[:, ::1] sos, double[:, :, ::1] state, const float[:, ::1] x, float[:, ::1] y):
    """Filter ``x`` (channels, n) through the SOS cascade into ``y``, updating ``state``."""
    sos_filter(sos, state, x, y)


def quantize(const float[::1] x, float scale, int zero_point, signed char[::1] q):
    quantize_affine(x, scale, zero_point, q)


def dequantize(const signed char[::1] q, float scale, int zero_point, float[::1] x):
    dequantize_affine(q, scale, zero_point, x)

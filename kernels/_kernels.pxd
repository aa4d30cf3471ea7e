# Elementary compute kernels: typed memoryviews, nogil, nothing allocated per call.
# Shapes are validated by the Python wrappers in edge_runtime.dsp, never here.

cdef Py_ssize_t sanitize_nonfinite(float[:, ::1] x) noexcept nogil
cdef void accumulate_peak_sumsq(const float[:, ::1] x, float[::1] peak, double[::1] sumsq) noexcept nogil
cdef void sos_filter(const double[:, ::1] sos, double[:, :, ::1] state,
                     const float[:, ::1] x, float[:, ::1] y) noexcept nogil
cdef void quantize_affine(const float[::1] x, float scale, int zero_point, signed char[::1] q) noexcept nogil
cdef void dequantize_affine(const signed char[::1] q, float scale, int zero_point, float[::1] x) noexcept nogil
cdef void copy_block(const float[:, ::1] src, float[:, ::1] dst) noexcept nogil


cdef class RingBuffer:
    """Fixed-capacity multichannel FIFO of float32 frames (channels, capacity)."""
    cdef readonly Py_ssize_t capacity
    cdef readonly Py_ssize_t channels
    cdef float[:, ::1] data
    cdef object _array
    cdef long long read_count
    cdef long long write_count

    cdef Py_ssize_t c_available(self) noexcept nogil
    cdef Py_ssize_t c_space(self) noexcept nogil
    cdef Py_ssize_t c_write(self, const float[:, ::1] x, Py_ssize_t start, Py_ssize_t n) noexcept nogil
    cdef Py_ssize_t c_read(self, float[:, ::1] out, Py_ssize_t start, Py_ssize_t n) noexcept nogil
    cdef Py_ssize_t c_peek(self, float[:, ::1] out, Py_ssize_t start, Py_ssize_t n) noexcept nogil
    cdef Py_ssize_t c_discard(self, Py_ssize_t n) noexcept nogil

# The engine's compiled core: event buffer, native node base, the block loop.

cdef class EventBuffer:
    cdef readonly Py_ssize_t capacity
    cdef readonly Py_ssize_t count
    cdef readonly long long dropped
    cdef public long long block_frame
    cdef long long[::1] frame
    cdef int[::1] source
    cdef int[::1] code
    cdef double[::1] value
    cdef object _arrays
    cdef void emit(self, int source, int code, long long offset, double value) noexcept nogil


cdef class NativeNode:
    cdef public str name
    cdef public int sample_rate
    cdef public int block_size
    cdef public int channels
    cdef public int latency_samples
    cdef public int node_index
    cdef public EventBuffer events
    cdef int process_block(self, float[:, ::1] inp, float[:, ::1] out) noexcept nogil


cdef class BlockBuffer:
    cdef float[:, ::1] view
    cdef readonly object array


cdef class Chain:
    cdef list nodes
    cdef list buffers
    cdef Py_ssize_t n
    cdef readonly Py_ssize_t out_index
    cdef Py_ssize_t[::1] in_index
    cdef Py_ssize_t[::1] out_index_of
    cdef Py_ssize_t[::1] bus_out_index
    cdef Py_ssize_t n_bus_out
    cdef object _route_arr
    cdef signed char[::1] native
    cdef object _native_arr
    cdef readonly EventBuffer events
    cdef readonly int block_size
    cdef readonly int sample_rate
    cdef readonly long long budget_ns
    cdef readonly long long frame
    cdef readonly long long blocks
    cdef readonly long long deadline_misses
    cdef readonly long long total_ns
    cdef readonly long long max_ns
    cdef readonly long long last_ns
    cdef readonly long long nonfinite_in
    cdef readonly long long nonfinite_out
    cdef long long[::1] node_total_ns
    cdef long long[::1] node_max_ns
    cdef long long[::1] node_last_ns
    cdef long long[::1] recent_ns
    cdef long long[::1] node_miss_n
    cdef object _stat_arrays
    cdef int run_block(self) except -1

# cython: language_level=3
"""The engine's compiled core.

``Chain.run_block`` is the hot path: it sanitizes the input block, calls each node in
order (a native node through a C call on preallocated memoryviews, a Python node through
its ``process(inp, out)`` on preallocated arrays), sanitizes the output, and times the
block and every node against the block's real-time budget. Nothing is allocated per block.
"""
import numpy as np
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC

from edge_runtime._kernels cimport sanitize_nonfinite, copy_block

# How many recent block times are kept for percentiles (a power of two).
DEF RECENT = 4096


cdef inline long long now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef class EventBuffer:
    """Preallocated store of timestamped events that nodes emit while processing.

    An event is (frame, source node index, code, value): ``frame`` is the absolute frame
    index in the stream, ``code`` an index into the emitting node's ``event_names``.
    When full, further events are counted in ``dropped`` instead of allocating.
    """

    def __cinit__(self, Py_ssize_t capacity=1024):
        if capacity <= 0:
            raise ValueError(f"EventBuffer capacity must be > 0, got {capacity}")
        self.capacity = capacity
        f = np.zeros(capacity, dtype=np.int64)
        s = np.zeros(capacity, dtype=np.int32)
        c = np.zeros(capacity, dtype=np.int32)
        v = np.zeros(capacity, dtype=np.float64)
        self._arrays = (f, s, c, v)
        self.frame = f
        self.source = s
        self.code = c
        self.value = v
        self.count = 0
        self.dropped = 0
        self.block_frame = 0

    cdef void emit(self, int source, int code, long long offset, double value) noexcept nogil:
        if self.count >= self.capacity:
            self.dropped += 1
            return
        self.frame[self.count] = self.block_frame + offset
        self.source[self.count] = source
        self.code[self.count] = code
        self.value[self.count] = value
        self.count += 1

    def push(self, int source, int code, double value, long long offset=0):
        """Record an event from Python (``offset`` frames into the current block)."""
        self.emit(source, code, offset, value)

    def drain(self):
        """Return the pending events as a list of (frame, source, code, value) and clear."""
        cdef Py_ssize_t i
        out = [(self.frame[i], self.source[i], self.code[i], self.value[i]) for i in range(self.count)]
        self.count = 0
        return out

    def clear(self):
        self.count = 0
        self.dropped = 0


cdef class NativeNode:
    """Base of nodes implemented in Cython.

    Subclasses override ``cdef int process_block(self, inp, out) noexcept nogil`` (return
    0) and, when they hold state, ``prepare``/``reset``. The engine calls
    ``process_block`` directly from its block loop; ``process`` is the same for Python callers.
    """

    event_names = ()

    def __init__(self, name=None):
        self.name = name if name is not None else type(self).__name__.lower()
        self.latency_samples = 0
        self.node_index = -1
        self.sample_rate = 0
        self.block_size = 0
        self.channels = 0

    def prepare(self, int sample_rate, int block_size, int channels):
        """Allocate everything the node needs for blocks of ``(channels, block_size)``."""
        if sample_rate <= 0 or block_size <= 0 or channels <= 0:
            raise ValueError(
                f"{self.name}: prepare needs positive sample_rate, block_size and channels, "
                f"got {sample_rate}, {block_size}, {channels}")
        self.sample_rate = sample_rate
        self.block_size = block_size
        self.channels = channels

    def reset(self):
        """Clear the node's signal state (between files, after an xrun)."""

    def bind_events(self, EventBuffer events, int node_index):
        self.events = events
        self.node_index = node_index

    cdef int process_block(self, float[:, ::1] inp, float[:, ::1] out) noexcept nogil:
        copy_block(inp, out)
        return 0

    def process(self, float[:, ::1] inp, float[:, ::1] out):
        """Process one block: read ``inp`` and write ``out``, both ``(channels, block_size)`` float32."""
        if self.block_size == 0:
            raise RuntimeError(f"{self.name}: call prepare(sample_rate, block_size, channels) before process")
        if (inp.shape[0] != self.channels or inp.shape[1] != self.block_size
                or out.shape[0] != self.channels or out.shape[1] != self.block_size):
            raise ValueError(
                f"{self.name}: blocks must be ({self.channels}, {self.block_size}), "
                f"got inp ({inp.shape[0]}, {inp.shape[1]}) and out ({out.shape[0]}, {out.shape[1]})")
        self.process_block(inp, out)

    def emit(self, str event, double value, long long offset=0):
        """Emit a named event (one of ``event_names``) from Python code."""
        if self.events is not None:
            self.events.emit(self.node_index, type(self).event_names.index(event), offset, value)


cdef class BlockBuffer:
    """A preallocated ``(channels, block_size)`` float32 block, as array and memoryview."""

    def __cinit__(self, int channels, int block_size):
        self.array = np.zeros((channels, block_size), dtype=np.float32)
        self.view = self.array


cdef class Chain:
    """The compiled block loop over a list of prepared nodes.

    By default it owns ``len(nodes) + 1`` blocks: node ``i`` reads block ``i`` and writes block
    ``i+1``; block 0 is the input, the last block the output. ``routes`` (from the pipeline's
    bus plan) generalizes that: ``(n_blocks, in_index, out_index, output_index, bus_outputs)``, node ``i``
    reads block ``in_index[i]`` and writes block ``out_index[i]``, the main output is block
    ``output_index`` and ``bus_outputs`` are the blocks of named buses' outputs (sanitized like
    the main output; see :class:`edge_runtime.engine.Pipeline`).
    """

    def __cinit__(self, list nodes, int sample_rate, int block_size, int channels,
                  EventBuffer events not None, routes=None):
        cdef Py_ssize_t i
        self.nodes = list(nodes)
        self.n = len(self.nodes)
        self.sample_rate = sample_rate
        self.block_size = block_size
        self.events = events
        if routes is None:
            n_blocks = self.n + 1
            ins, outs, self.out_index = list(range(self.n)), list(range(1, self.n + 1)), self.n
            extra = []
        else:
            n_blocks, ins, outs, self.out_index, extra = routes
            if len(ins) != self.n or len(outs) != self.n:
                raise ValueError(f"routes name {len(ins)} inputs and {len(outs)} outputs for {self.n} nodes")
            for k in list(ins) + list(outs) + [self.out_index] + list(extra):
                if not 0 <= k < n_blocks:
                    raise ValueError(f"route block index {k} is outside 0..{n_blocks - 1}")
        self.buffers = [BlockBuffer(channels, block_size) for i in range(n_blocks)]
        self._route_arr = (np.array(list(ins) or [0], dtype=np.intp), np.array(list(outs) or [0], dtype=np.intp),
                           np.array(list(extra) or [0], dtype=np.intp))
        self.in_index = self._route_arr[0]
        self.out_index_of = self._route_arr[1]
        self.bus_out_index = self._route_arr[2]
        self.n_bus_out = len(extra)
        self._native_arr = np.array([isinstance(n, NativeNode) for n in self.nodes] or [False],
                                    dtype=np.int8)
        self.native = self._native_arr
        self.budget_ns = <long long>(1e9 * block_size / sample_rate)
        tot = np.zeros(max(self.n, 1), dtype=np.int64)
        mx = np.zeros(max(self.n, 1), dtype=np.int64)
        last = np.zeros(max(self.n, 1), dtype=np.int64)
        rec = np.zeros(RECENT, dtype=np.int64)
        miss = np.zeros(max(self.n, 1), dtype=np.int64)
        self._stat_arrays = (tot, mx, last, rec, miss)
        self.node_miss_n = miss
        self.node_total_ns = tot
        self.node_max_ns = mx
        self.node_last_ns = last
        self.recent_ns = rec
        self.reset_stats()

    @property
    def input(self):
        """The input block array: fill it, then call :meth:`run`."""
        return (<BlockBuffer>self.buffers[0]).array

    @property
    def output(self):
        """The output block array, valid after :meth:`run`."""
        return (<BlockBuffer>self.buffers[self.out_index]).array

    def block(self, Py_ssize_t i):
        """Block ``i`` (without routes: 0 = input, ``len(nodes)`` = output)."""
        return (<BlockBuffer>self.buffers[i]).array

    @property
    def n_blocks(self):
        return len(self.buffers)

    cdef int run_block(self) except -1:
        cdef Py_ssize_t i, worst
        cdef long long t_block, t0, t1, dt
        cdef BlockBuffer bin_, bout
        cdef object node
        t_block = now_ns()
        self.events.block_frame = self.frame
        bin_ = <BlockBuffer>self.buffers[0]
        self.nonfinite_in += sanitize_nonfinite(bin_.view)
        for i in range(self.n):
            node = self.nodes[i]
            bin_ = <BlockBuffer>self.buffers[self.in_index[i]]
            bout = <BlockBuffer>self.buffers[self.out_index_of[i]]
            t0 = now_ns()
            if self.native[i]:
                (<NativeNode>node).process_block(bin_.view, bout.view)
            else:
                node.process(bin_.array, bout.array)
            t1 = now_ns()
            dt = t1 - t0
            self.node_last_ns[i] = dt
            self.node_total_ns[i] += dt
            if dt > self.node_max_ns[i]:
                self.node_max_ns[i] = dt
        bout = <BlockBuffer>self.buffers[self.out_index]
        self.nonfinite_out += sanitize_nonfinite(bout.view)
        for i in range(self.n_bus_out):
            bout = <BlockBuffer>self.buffers[self.bus_out_index[i]]
            self.nonfinite_out += sanitize_nonfinite(bout.view)
        dt = now_ns() - t_block
        self.last_ns = dt
        self.total_ns += dt
        if dt > self.max_ns:
            self.max_ns = dt
        if dt > self.budget_ns:
            self.deadline_misses += 1
            # blame the slowest node of the block (what a governor steps down)
            if self.n > 0:
                worst = 0
                for i in range(1, self.n):
                    if self.node_last_ns[i] > self.node_last_ns[worst]:
                        worst = i
                self.node_miss_n[worst] += 1
        self.recent_ns[self.blocks & (RECENT - 1)] = dt
        self.blocks += 1
        self.frame += self.block_size
        return 0

    def run(self):
        """Process the block in :attr:`input` into :attr:`output`."""
        self.run_block()

    def run_many(self, Py_ssize_t count):
        """Run ``count`` blocks back to back on whatever is in the input block (benchmarks)."""
        cdef Py_ssize_t k
        for k in range(count):
            self.run_block()

    def reset_stats(self):
        self.blocks = 0
        self.deadline_misses = 0
        self.total_ns = 0
        self.max_ns = 0
        self.last_ns = 0
        self.nonfinite_in = 0
        self.nonfinite_out = 0
        for a in self._stat_arrays:
            a[:] = 0

    def reset_position(self):
        self.frame = 0

    def node_times(self):
        """Per-node (total_ns, max_ns, last_ns) arrays (copies)."""
        tot, mx, last = self._stat_arrays[:3]
        return tot[:self.n].copy(), mx[:self.n].copy(), last[:self.n].copy()

    def node_misses(self, Py_ssize_t i):
        """Deadline misses blamed on node ``i`` (the slowest node of each late block)."""
        if not 0 <= i < self.n:
            raise IndexError(f"node index {i} out of range 0..{self.n - 1}")
        return self.node_miss_n[i]

    def node_time_ns(self, Py_ssize_t i):
        """Total time spent in node ``i`` since the statistics were reset, in ns."""
        if not 0 <= i < self.n:
            raise IndexError(f"node index {i} out of range 0..{self.n - 1}")
        return self.node_total_ns[i]

    def recent_block_ns(self):
        """The most recent block times in ns (up to 4096), oldest first."""
        rec = self._stat_arrays[3]
        if self.blocks <= RECENT:
            return rec[:self.blocks].copy()
        k = self.blocks & (RECENT - 1)
        return np.concatenate([rec[k:], rec[:k]])

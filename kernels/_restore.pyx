# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Restoration kernels: streaming declipping by A-SPADE.

A-SPADE (Kitic, Bertin & Gribonval 2015; the variant and settings of Zaviska et al.,
"A survey and an extensive evaluation of popular audio declipping methods", IEEE JSTSP 2021):
the signal is cut into overlapping frames of ``window`` samples (hop ``window/4``), each frame
with a clipped sample is Hann-windowed (its bounds too) and restored on its own, and the restored
frames are overlap-added and divided by the windows' overlap sum (``windowed=False``: rectangular
frames, Hann at synthesis; measured worse, see docs/restore.md). Per frame, ADMM
alternates a hard threshold that keeps the ``k`` largest coefficients of a 2x-redundant DFT
frame (zero-padded to ``2 * window``, Parseval-tight) with the projection onto the signals that
agree with what was observed: reliable samples equal the input, clipped samples lie beyond the
observed value (``x >= y`` at the top, ``x <= y`` at the bottom: for hard clipping that is the
clip level, for soft clipping the compressed value). ``k`` grows by ``sparsity_step`` every
``sparsity_every`` iterations until ``||A x - z|| <= eps`` or ``max_iter``.

A frame with at least ``heavy_frac`` of its samples clipped grows ``k`` by ``heavy_step`` instead
(few reliable samples: a coarse step overshoots the sparsity the frame needs); ``heavy_step = 0``,
the kernel's default, is ``sparsity_step``: no frame is treated apart.

Coarse to fine: with ``fine_ratio > 0`` (0, the default: off), once ``||A x - z||`` is at most
``fine_ratio * eps`` the step falls to ``fine_step`` for the rest of the frame: a coarse step buys
the long climb of ``k`` cheaply, the fine one stops it near the sparsity the frame needs.

Slack (``slack = 1``; 0, the default, solves each frame in the call that completes it): a frame is
solved while the next hop of input arrives, ``iters_per_hop`` iterations per hop of input, spread
over the ``process`` calls in proportion to their samples, and whatever is left is finished when the
next frame is due. The output is then one hop later (``latency_samples = window + hop``) and the
same samples come out (the solver runs the same iterations in the same order); what changes is
that a frame needing many iterations no longer lands on the one block that completed it.

Consistency: the output is the projected estimate, so every reliable sample of every frame equals
the input and the overlap-add of windows summing to one returns the input sample there (to float
rounding, < 1e-6). Frames without a clipped sample are copied, not solved.

Clipped samples: ``|y|`` within ``tolerance`` (relative; 0 by default: a digital hard clip leaves
equal values) of the running peak of its polarity, once that peak is a confirmed clip level: at
least ``min_plateaus`` runs of ``min_run`` such samples (plateaus: an unclipped crest is one sample,
or a few samples that differ by more than the tolerance) have been seen on it (a level, not a
crest: int16 audio often has two or three equal samples at a new maximum; held-out eval, docs/restore.md: with
``tolerance = 1e-4`` and no ``min_plateaus`` (1) unclipped samples within 1e-4 of the clip level and such
crests were changed, by up to 5e-2). On a confirmed level every run of at least ``mark_run``
samples is clipped (1, the default: a signal that just crosses the level leaves single clipped
samples; with 2, 4 % of the clipped samples of design speech were taken as reliable and held at
the clip level). With ``soft_ratio < 1`` samples above that
fraction of the peak count as clipped too (soft clipping / saturation). The running peaks hold
(``release_db_per_s = 0``, the default) or decay, so a clip level lowered later (gain staging) is
found again; a decaying peak can mark a few unclipped crest samples (measured: 15 of 31,054 on
speech clipped at 20 dB SDR with 3 dB/s, none with the hold), hence the hold by default.

Streaming: one frame per ``hop`` input samples; the output is the input ``window`` samples late
(``latency_samples``), for any block size. Nothing is allocated after construction; the frame
solver runs without the GIL.
"""
import numpy as np

from libc.math cimport fabs
from libc.string cimport memcpy, memmove, memset

from edge_runtime._spectral cimport RealFFT


cdef inline void _swap(float* a, Py_ssize_t i, Py_ssize_t j) noexcept nogil:
    cdef float t = a[i]
    a[i] = a[j]
    a[j] = t


cdef float _kth_largest(float* a, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """The k-th largest value of a[0:n] (1-based k), reordering a (Wirth's selection, descending)."""
    cdef Py_ssize_t lo = 0, hi = n - 1, i, j, t = k - 1
    cdef float x
    while lo < hi:
        x = a[t]
        i = lo
        j = hi
        while True:
            while a[i] > x:
                i += 1
            while x > a[j]:
                j -= 1
            if i <= j:
                _swap(a, i, j)
                i += 1
                j -= 1
            if i > j:
                break
        if j < t:
            lo = i
        if t < i:
            hi = j
    return a[t]


cdef class Declipper:
    """Streaming A-SPADE declipper for ``channels`` channels (see the module docstring)."""

    cdef readonly Py_ssize_t window, hop, channels, n_fft, n_bins, latency_samples
    cdef readonly float eps, tolerance, soft_ratio, release
    cdef readonly int sparsity_step, sparsity_every, max_iter, min_run, min_plateaus, mark_run, heavy_step
    cdef readonly float heavy_frac, fine_ratio
    cdef readonly int fine_step, slack, iters_per_hop
    # slack mode: the frames of the last hop wait here (per channel) while one of them is solved
    cdef float[:, ::1] pend_y       # the frame as the solver gets it (windowed if clipped)
    cdef float[:, ::1] pend_x       # its restored samples, once solved
    cdef signed char[:, ::1] pend_mask
    cdef signed char[::1] pend_state    # 0 unclipped (copy), 1 waiting / being solved, 2 solved
    cdef int[::1] pend_step
    cdef Py_ssize_t act             # channel being solved (-1: none)
    # solver state (the frame in y / mask, being solved into x)
    cdef Py_ssize_t s_k, s_cur, s_it
    cdef bint s_done
    cdef readonly long long frames, frames_solved, iterations, samples_clipped, samples_flat_out
    cdef float[::1] prev_out        # per channel: the last output sample, and its flat run length
    cdef long long[::1] run_out
    cdef RealFFT fft
    cdef float[:, ::1] inbuf        # (channels, window): the frame being filled, newest at the end
    cdef float[:, ::1] acc          # (channels, window): overlap-add accumulator
    cdef float[:, ::1] outq         # (channels, hop): finished output of the last frame
    cdef float[::1] peak_hi         # running positive / negative peaks per channel
    cdef float[::1] peak_lo
    cdef float[::1] level_hi        # the level the hits below are counted at, per polarity
    cdef float[::1] level_lo
    cdef long long[::1] plat_hi     # plateaus (runs >= min_run) seen on that level since it was set
    cdef long long[::1] plat_lo
    cdef long long[::1] run_hi      # the current run on that level
    cdef long long[::1] run_lo
    cdef float[::1] g               # synthesis window (sums to 1 over the overlaps)
    cdef float[::1] wa              # analysis window (windowed mode: Hann) and 1 / its overlap sum
    cdef float[::1] inv_cover
    cdef readonly bint windowed
    cdef float[::1] x, y, pad, b    # frame work (window / n_fft)
    cdef float[::1] ar, ai, ur, ui, zr, zi, mag, sel, wgt
    cdef signed char[::1] mask      # +1 clipped top, -1 clipped bottom, 0 reliable
    cdef Py_ssize_t pos
    cdef float scale_f, scale_i
    cdef object _arrays

    def __cinit__(self, Py_ssize_t window=1024, Py_ssize_t channels=1, Py_ssize_t hop=0, float eps=0.1,
                  int sparsity_step=1, int sparsity_every=1, int max_iter=1000, float tolerance=0.0,
                  int min_run=2, int min_plateaus=2, float soft_ratio=1.0, float release_db_per_s=0.0, int sample_rate=16000,
                  bint windowed=True, int mark_run=1, float heavy_frac=1.0, int heavy_step=0,
                  float fine_ratio=0.0, int fine_step=1, int slack=0, int iters_per_hop=64):
        if window < 16 or window % 4 or (window & (window - 1)):
            raise ValueError(f"Declipper window {window}: expected a power of two >= 16")
        if hop <= 0:
            hop = window // 4
        if hop > window or window % hop:
            raise ValueError(f"Declipper hop {hop}: expected a divisor of the window {window}")
        if channels < 1 or max_iter < 1 or sparsity_step < 1 or sparsity_every < 1 or min_run < 1 or min_plateaus < 1 \
                or mark_run < 1:
            raise ValueError("Declipper: channels, max_iter, sparsity_step, sparsity_every, min_run, min_plateaus and "
                             "mark_run must be >= 1")
        if not (0.0 < soft_ratio <= 1.0) or not (0.0 <= tolerance < 0.5) or not eps > 0:
            raise ValueError(f"Declipper: soft_ratio {soft_ratio} (0..1], tolerance {tolerance} [0, 0.5), "
                             f"eps {eps} > 0 expected")
        self.window, self.hop, self.channels = window, hop, channels
        self.n_fft = 2 * window
        self.fft = RealFFT(self.n_fft)
        self.n_bins = self.fft.n_bins
        self.latency_samples = window + (hop if slack else 0)
        self.eps, self.tolerance, self.soft_ratio = eps, tolerance, soft_ratio
        self.sparsity_step, self.sparsity_every, self.max_iter, self.min_run = sparsity_step, sparsity_every, \
            max_iter, min_run
        self.min_plateaus = min_plateaus
        self.mark_run = mark_run
        if not (0.0 < heavy_frac <= 1.0) or heavy_step < 0:
            raise ValueError(f"Declipper: heavy_frac {heavy_frac} (0..1] and heavy_step {heavy_step} >= 0 expected")
        self.heavy_frac, self.heavy_step = heavy_frac, heavy_step or sparsity_step     # 0: no heavy frames
        if not fine_ratio >= 0.0 or fine_step < 1:
            raise ValueError(f"Declipper: fine_ratio {fine_ratio} >= 0 and fine_step {fine_step} >= 1 expected")
        self.fine_ratio, self.fine_step = fine_ratio, fine_step
        if slack not in (0, 1) or iters_per_hop < 1:
            raise ValueError(f"Declipper: slack {slack} (0 or 1) and iters_per_hop {iters_per_hop} >= 1 expected")
        self.slack, self.iters_per_hop = slack, iters_per_hop
        # per-frame decay of the running peaks
        self.release = <float>(10.0 ** (-release_db_per_s * hop / sample_rate / 20.0))
        self.scale_f = <float>(1.0 / np.sqrt(self.n_fft))      # A = rfft / sqrt(N): Parseval-tight
        self.scale_i = <float>np.sqrt(self.n_fft)               # A^H = sqrt(N) * irfft, truncated
        w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)      # periodic Hann
        cover = np.zeros(window)
        for s in range(0, window, hop):
            cover += np.roll(w, s)
        g = (w / cover).astype(np.float32)
        self.windowed = windowed
        arrays = dict(
            inbuf=np.zeros((channels, window), np.float32), acc=np.zeros((channels, window), np.float32),
            outq=np.zeros((channels, hop), np.float32), peak_hi=np.zeros(channels, np.float32),
            peak_lo=np.zeros(channels, np.float32), g=g, x=np.zeros(window, np.float32),
            y=np.zeros(window, np.float32), pad=np.zeros(self.n_fft, np.float32),
            b=np.zeros(self.n_fft, np.float32), mask=np.zeros(window, np.int8),
            prev_out=np.zeros(channels, np.float32), run_out=np.zeros(channels, np.int64),
            level_hi=np.zeros(channels, np.float32), level_lo=np.zeros(channels, np.float32),
            plat_hi=np.zeros(channels, np.int64), plat_lo=np.zeros(channels, np.int64),
            run_hi=np.zeros(channels, np.int64), run_lo=np.zeros(channels, np.int64),
            wa=w.astype(np.float32), inv_cover=(1.0 / cover).astype(np.float32),
            pend_y=np.zeros((channels, window), np.float32), pend_x=np.zeros((channels, window), np.float32),
            pend_mask=np.zeros((channels, window), np.int8), pend_state=np.zeros(channels, np.int8),
            pend_step=np.zeros(channels, np.int32))
        for name in ("ar", "ai", "ur", "ui", "zr", "zi", "mag", "sel"):
            arrays[name] = np.zeros(self.n_bins, np.float32)
        wgt = np.full(self.n_bins, 2.0, np.float32)      # each interior rfft bin stands for a conjugate pair
        wgt[0] = wgt[self.n_bins - 1] = 1.0
        arrays["wgt"] = wgt
        self._arrays = arrays
        self.inbuf, self.acc, self.outq = arrays["inbuf"], arrays["acc"], arrays["outq"]
        self.peak_hi, self.peak_lo, self.g = arrays["peak_hi"], arrays["peak_lo"], arrays["g"]
        self.x, self.y, self.pad, self.b, self.mask = arrays["x"], arrays["y"], arrays["pad"], arrays["b"], arrays["mask"]
        self.ar, self.ai, self.ur, self.ui = arrays["ar"], arrays["ai"], arrays["ur"], arrays["ui"]
        self.zr, self.zi, self.mag, self.sel, self.wgt = arrays["zr"], arrays["zi"], arrays["mag"], arrays["sel"], wgt
        self.prev_out, self.run_out = arrays["prev_out"], arrays["run_out"]
        self.wa, self.inv_cover = arrays["wa"], arrays["inv_cover"]
        self.level_hi, self.level_lo = arrays["level_hi"], arrays["level_lo"]
        self.plat_hi, self.plat_lo = arrays["plat_hi"], arrays["plat_lo"]
        self.run_hi, self.run_lo = arrays["run_hi"], arrays["run_lo"]
        self.pend_y, self.pend_x, self.pend_mask = arrays["pend_y"], arrays["pend_x"], arrays["pend_mask"]
        self.pend_state, self.pend_step = arrays["pend_state"], arrays["pend_step"]
        self.reset()

    def reset(self):
        """Forget the stream: zeros in flight, peaks and counters cleared."""
        self.inbuf[:, :] = 0.0
        self.acc[:, :] = 0.0
        self.outq[:, :] = 0.0
        self.peak_hi[:] = 0.0
        self.peak_lo[:] = 0.0
        self.level_hi[:] = 0.0
        self.level_lo[:] = 0.0
        self.plat_hi[:] = 0
        self.plat_lo[:] = 0
        self.run_hi[:] = 0
        self.run_lo[:] = 0
        self.prev_out[:] = 0.0
        self.run_out[:] = 0
        self.pend_y[:, :] = 0.0
        self.pend_x[:, :] = 0.0
        self.pend_state[:] = 0
        self.act = -1
        self.s_done = True
        self.pos = 0
        self.frames = self.frames_solved = self.iterations = self.samples_clipped = self.samples_flat_out = 0

    @property
    def peaks(self):
        """(positive, negative) running peak magnitudes per channel, as lists."""
        return list(self._arrays["peak_hi"]), list(self._arrays["peak_lo"])

    # ---- one frame -----------------------------------------------------------------------
    cdef void _analysis(self, const float* x) noexcept nogil:
        """ar + i ai = A x (x: window samples, zero-padded)."""
        cdef Py_ssize_t i, n = self.window, nb = self.n_bins
        memcpy(&self.pad[0], x, n * sizeof(float))
        memset(&self.pad[n], 0, (self.n_fft - n) * sizeof(float))
        self.fft._forward(&self.pad[0], &self.ar[0], &self.ai[0])
        for i in range(nb):
            self.ar[i] *= self.scale_f
            self.ai[i] *= self.scale_f

    cdef Py_ssize_t _mark(self, Py_ssize_t c) noexcept nogil:
        """Mark the clipped samples of frame ``y`` (channel c); how many."""
        cdef Py_ssize_t i, j, n = self.window, run, count = 0
        cdef float hi = self.peak_hi[c], lo = self.peak_lo[c], v
        cdef float thr_hi = hi * (1.0 - self.tolerance), thr_lo = lo * (1.0 - self.tolerance)
        cdef float soft_hi = hi * self.soft_ratio, soft_lo = lo * self.soft_ratio
        if self.soft_ratio < 1.0:
            thr_hi = min(thr_hi, soft_hi)
            thr_lo = min(thr_lo, soft_lo)
        memset(&self.mask[0], 0, n * sizeof(signed char))
        if self.soft_ratio >= 1.0:
            # a hard clip level is a level many samples sit on: a crest of two equal samples at a
            # new maximum (int16 audio) is not one
            if self.plat_hi[c] < self.min_plateaus:
                hi = 0.0
            if self.plat_lo[c] < self.min_plateaus:
                lo = 0.0
        if hi <= 0.0 and lo <= 0.0:
            return 0
        i = 0
        while i < n:
            v = self.y[i]
            if hi > 0.0 and v >= thr_hi:
                j = i
                while j < n and self.y[j] >= thr_hi:
                    j += 1
                run = j - i
                if run >= self.mark_run or self.soft_ratio < 1.0:
                    memset(&self.mask[i], 1, run * sizeof(signed char))
                    count += run
                i = j
            elif lo > 0.0 and v <= -thr_lo:
                j = i
                while j < n and self.y[j] <= -thr_lo:
                    j += 1
                run = j - i
                if run >= self.mark_run or self.soft_ratio < 1.0:
                    memset(&self.mask[i], -1, run * sizeof(signed char))
                    count += run
                i = j
            else:
                i += 1
        return count

    cdef void _project(self, const float* v) noexcept nogil:
        """x = the signal nearest v that agrees with the observation y."""
        cdef Py_ssize_t i
        cdef signed char m
        for i in range(self.window):
            m = self.mask[i]
            if m == 0:
                self.x[i] = self.y[i]
            elif m > 0:
                self.x[i] = v[i] if v[i] > self.y[i] else self.y[i]
            else:
                self.x[i] = v[i] if v[i] < self.y[i] else self.y[i]

    cdef void _solve_start(self, Py_ssize_t step) noexcept nogil:
        """Start A-SPADE on frame y (mask set), ``k`` growing by ``step``."""
        memcpy(&self.x[0], &self.y[0], self.window * sizeof(float))
        memset(&self.ur[0], 0, self.n_bins * sizeof(float))
        memset(&self.ui[0], 0, self.n_bins * sizeof(float))
        self._analysis(&self.x[0])
        self.s_k = step
        self.s_cur = step
        self.s_it = 0
        self.s_done = False

    cdef Py_ssize_t _solve_run(self, Py_ssize_t budget) noexcept nogil:
        """Up to ``budget`` iterations of the frame being solved; the consistent estimate is in x
        after each. Returns the iterations run; ``s_done`` once the residual or max_iter is reached."""
        cdef Py_ssize_t i, nb = self.n_bins, used = 0, k = self.s_k
        cdef float thr, res, dr, di, eps2 = self.eps * self.eps
        cdef float fine2 = self.fine_ratio * self.fine_ratio * eps2
        while not self.s_done and used < budget:
            # z = H_k(A x + u)
            for i in range(nb):
                self.zr[i] = self.ar[i] + self.ur[i]
                self.zi[i] = self.ai[i] + self.ui[i]
                self.mag[i] = self.zr[i] * self.zr[i] + self.zi[i] * self.zi[i]
                self.sel[i] = self.mag[i]
            if k < nb:
                thr = _kth_largest(&self.sel[0], nb, k)
                for i in range(nb):
                    if self.mag[i] < thr:
                        self.zr[i] = 0.0
                        self.zi[i] = 0.0
            # x = P(A^H (z - u))
            for i in range(nb):
                self.sel[i] = self.zr[i] - self.ur[i]       # sel/mag reused as the real/imag scratch
                self.mag[i] = self.zi[i] - self.ui[i]
            self.fft._inverse(&self.sel[0], &self.mag[0], &self.b[0])
            for i in range(self.window):
                self.b[i] *= self.scale_i
            self._project(&self.b[0])
            # residual A x - z, dual update
            self._analysis(&self.x[0])
            res = 0.0
            for i in range(nb):
                dr = self.ar[i] - self.zr[i]
                di = self.ai[i] - self.zi[i]
                res += self.wgt[i] * (dr * dr + di * di)
                self.ur[i] += dr
                self.ui[i] += di
            self.iterations += 1
            used += 1
            self.s_it += 1
            if res <= eps2 or self.s_it >= self.max_iter:
                self.s_done = True
                break
            if res <= fine2 and self.s_cur > self.fine_step:
                self.s_cur = self.fine_step   # near the target residual: stop overshooting the sparsity
            if self.s_it % self.sparsity_every == 0:
                k += self.s_cur
        self.s_k = k
        return used

    cdef void _solve(self, Py_ssize_t step) noexcept nogil:
        """A-SPADE on frame y (mask set), ``k`` growing by ``step``; the consistent estimate in x."""
        self._solve_start(step)
        self._solve_run(self.max_iter)

    # ---- slack mode: frames solved while the next hop arrives ---------------------------------
    cdef void _start_next(self) noexcept nogil:
        """Start solving the first channel whose frame waits (none: act = -1)."""
        cdef Py_ssize_t c
        self.act = -1
        for c in range(self.channels):
            if self.pend_state[c] == 1:
                memcpy(&self.y[0], &self.pend_y[c, 0], self.window * sizeof(float))
                memcpy(&self.mask[0], &self.pend_mask[c, 0], self.window * sizeof(signed char))
                self.act = c
                self._solve_start(self.pend_step[c])
                return

    cdef void _work(self, Py_ssize_t budget) noexcept nogil:
        """Up to ``budget`` solver iterations on the waiting frames, in channel order."""
        while budget > 0 and self.act >= 0:
            budget -= self._solve_run(budget)
            if self.s_done:
                memcpy(&self.pend_x[self.act, 0], &self.x[0], self.window * sizeof(float))
                self.pend_state[self.act] = 2
                self.frames_solved += 1
                self._start_next()

    cdef void _emit(self, Py_ssize_t c, const float* x, bint solved) noexcept nogil:
        """Overlap-add channel c's frame, hand out its first hop, move the accumulator on."""
        cdef Py_ssize_t i, n = self.window, h = self.hop
        if solved and self.windowed:
            for i in range(n):
                self.acc[c, i] += self.inv_cover[i] * x[i]
        else:
            for i in range(n):
                self.acc[c, i] += self.g[i] * x[i]
        memcpy(&self.outq[c, 0], &self.acc[c, 0], h * sizeof(float))
        memmove(&self.acc[c, 0], &self.acc[c, h], (n - h) * sizeof(float))
        memset(&self.acc[c, n - h], 0, h * sizeof(float))

    cdef void _frame(self) noexcept nogil:
        cdef Py_ssize_t c, i, n = self.window, h = self.hop, clipped, step
        cdef float hi, lo, v, lh, ll, tol = self.tolerance
        cdef long long nh, nl, rh, rl
        if self.slack:
            # the last hop's frames are due: finish their solves, overlap-add them, hand out a hop
            self._work(self.max_iter * self.channels)
            for c in range(self.channels):
                if self.pend_state[c] == 2:
                    self._emit(c, &self.pend_x[c, 0], True)
                else:
                    self._emit(c, &self.pend_y[c, 0], False)
        for c in range(self.channels):
            # running peaks over the newest hop, with release; and how many plateaus (runs of
            # min_run samples) sit on the level of each (a new level above the peak, or below a
            # decayed one, starts a new count)
            hi = self.peak_hi[c] * self.release
            lo = self.peak_lo[c] * self.release
            lh, ll, nh, nl = self.level_hi[c], self.level_lo[c], self.plat_hi[c], self.plat_lo[c]
            rh, rl = self.run_hi[c], self.run_lo[c]
            for i in range(n - h, n):
                v = self.inbuf[c, i]
                if v > 0.0 and lh > 0.0 and fabs(v - lh) <= tol * lh:
                    rh += 1
                    if rh == self.min_run:
                        nh += 1
                elif v > hi:
                    lh = v
                    rh = 1
                    nh = 1 if self.min_run == 1 else 0
                else:
                    rh = 0
                if v > hi:
                    hi = v
                if v < 0.0 and ll > 0.0 and fabs(-v - ll) <= tol * ll:
                    rl += 1
                    if rl == self.min_run:
                        nl += 1
                elif -v > lo:
                    ll = -v
                    rl = 1
                    nl = 1 if self.min_run == 1 else 0
                else:
                    rl = 0
                if -v > lo:
                    lo = -v
            self.peak_hi[c] = hi
            self.peak_lo[c] = lo
            self.level_hi[c], self.level_lo[c], self.plat_hi[c], self.plat_lo[c] = lh, ll, nh, nl
            self.run_hi[c], self.run_lo[c] = rh, rl
            memcpy(&self.y[0], &self.inbuf[c, 0], n * sizeof(float))
            clipped = self._mark(c)
            if clipped:
                # count each clipped sample once: in the newest hop of the frame it first appears in
                for i in range(n - h, n):
                    if self.mask[i] != 0:
                        self.samples_clipped += 1
                if self.windowed:        # solve the Hann-windowed frame (bounds windowed too)
                    for i in range(n):
                        self.y[i] *= self.wa[i]
                # a heavily clipped frame has few reliable samples: a finer sparsity step pays there
                step = self.heavy_step if clipped >= self.heavy_frac * n else self.sparsity_step
                if self.slack:
                    memcpy(&self.pend_y[c, 0], &self.y[0], n * sizeof(float))
                    memcpy(&self.pend_mask[c, 0], &self.mask[0], n * sizeof(signed char))
                    self.pend_step[c] = step
                    self.pend_state[c] = 1
                else:
                    self._solve(step)
                    self.frames_solved += 1
                    self._emit(c, &self.x[0], True)
            elif self.slack:
                memcpy(&self.pend_y[c, 0], &self.y[0], n * sizeof(float))
                self.pend_state[c] = 0
            else:
                self._emit(c, &self.y[0], False)
            memmove(&self.inbuf[c, 0], &self.inbuf[c, h], (n - h) * sizeof(float))
        if self.slack:
            self._start_next()
        self.frames += 1

    cdef inline void _count_flat(self, Py_ssize_t c, float o) noexcept nogil:
        """Output samples still on a clipped plateau (at the input's clip level, flat)."""
        cdef float hi = self.peak_hi[c], lo = self.peak_lo[c], tol
        cdef bint at = (hi > 0.0 and o >= hi * (1.0 - self.tolerance)) or \
            (lo > 0.0 and -o >= lo * (1.0 - self.tolerance))
        tol = self.tolerance * (hi if hi > lo else lo)
        if at and self.run_out[c] > 0 and fabs(o - self.prev_out[c]) <= tol:
            self.run_out[c] += 1
            if self.run_out[c] == self.min_run:
                self.samples_flat_out += self.min_run
            elif self.run_out[c] > self.min_run:
                self.samples_flat_out += 1
        else:
            self.run_out[c] = 1 if at else 0
        self.prev_out[c] = o

    cdef void c_process(self, const float[:, ::1] inp, float[:, ::1] out) noexcept nogil:
        cdef Py_ssize_t i, c, n = inp.shape[1], w = self.window, h = self.hop
        for i in range(n):
            for c in range(self.channels):
                out[c, i] = self.outq[c, self.pos]
                self._count_flat(c, out[c, i])
                self.inbuf[c, w - h + self.pos] = inp[c, i]
            self.pos += 1
            if self.pos == h:
                self._frame()
                self.pos = 0
        if self.slack and self.act >= 0:
            # this call's share of the waiting solves: iters_per_hop per hop of input
            self._work((self.iters_per_hop * n + h - 1) // h)

    def process(self, const float[:, ::1] inp, float[:, ::1] out):
        """``inp`` (channels, n) in, ``out`` (channels, n): the restored input ``window`` samples ago."""
        if inp.shape[0] != self.channels or out.shape[0] != self.channels or out.shape[1] != inp.shape[1]:
            raise ValueError(f"Declipper.process needs inp and out ({self.channels}, n) float32, got "
                             f"({inp.shape[0]}, {inp.shape[1]}) and ({out.shape[0]}, {out.shape[1]})")
        with nogil:
            self.c_process(inp, out)

    def solve_frame(self, const float[::1] y, const signed char[::1] mask, float[::1] out):
        """A-SPADE on one frame ``y`` (window,) with ``mask`` (+1/-1 clipped, 0 reliable) into
        ``out``; returns the iterations used (the offline reference and tests call this)."""
        cdef long long before = self.iterations
        if y.shape[0] != self.window or mask.shape[0] != self.window or out.shape[0] != self.window:
            raise ValueError(f"solve_frame needs y, mask and out of length {self.window}")
        if self.act >= 0:
            raise ValueError("solve_frame: a streamed frame is being solved (slack); call reset() first")
        with nogil:
            memcpy(&self.y[0], &y[0], self.window * sizeof(float))
            memcpy(&self.mask[0], &mask[0], self.window * sizeof(signed char))
            self._solve(self.sparsity_step)
            memcpy(&out[0], &self.x[0], self.window * sizeof(float))
        return self.iterations - before

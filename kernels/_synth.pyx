# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Synthesis kernels for DDSP-style generation, all driven per hop by control frames:

* :class:`HarmonicBank` -- an additive oscillator bank: per hop an f0 (Hz) and one amplitude per
  harmonic; f0 and amplitudes are interpolated linearly across the hop, the phase runs on from hop
  to hop (no reset, no click) and a harmonic at or above Nyquist at a sample is zeroed there.
* :class:`FilteredNoise` -- white noise through a time-varying FIR: per hop the filter's
  magnitudes at ``n_bands`` equally spaced frequencies 0..Nyquist (frequency sampling) become a
  linear-phase, Hann-windowed IR of ``2 * (n_bands - 1)`` taps; each hop's noise is convolved with
  its hop's IR and the tails overlap-add into the next hops.
* :class:`Reverb` -- a small algorithmic reverb (Freeverb's topology: 4 damped feedback combs in
  parallel, 2 allpasses in series; delays scaled to the sample rate), mixed in place.
* :class:`Yin` -- a causal YIN f0 tracker: the newest ``window`` samples against lags 1..tau_max.
* :class:`Loudness` -- A-weighted loudness (dB) of the newest ``window`` samples per hop.

Work buffers are allocated at construction; the ``c_*`` methods are ``nogil`` and allocate
nothing. The ``def`` methods only check shapes (memory safety); friendly argument checking lives
in :mod:`edge_runtime.synth`.
"""
import numpy as np
from libc.math cimport cos, floor, log10, sin, sqrt, M_PI
from libc.stdint cimport uint64_t
from libc.string cimport memmove, memset


cdef class HarmonicBank:
    """``HarmonicBank(n_harmonics, hop, sample_rate)``; ``process(f0, amps, out)`` writes one hop."""

    cdef readonly Py_ssize_t n_harmonics, hop
    cdef readonly double sample_rate
    cdef public double phase          # radians of the fundamental at the end of the last hop, [0, 2pi)
    cdef double prev_f0               # < 0 before the first hop: the first hop does not glide
    cdef double[::1] prev_amps
    cdef double[::1] slope

    def __cinit__(self, Py_ssize_t n_harmonics, Py_ssize_t hop, double sample_rate):
        if n_harmonics < 1 or hop < 1 or not sample_rate > 0:
            raise ValueError("HarmonicBank needs n_harmonics >= 1, hop >= 1, sample_rate > 0")
        self.n_harmonics, self.hop, self.sample_rate = n_harmonics, hop, sample_rate
        self.prev_amps = np.zeros(n_harmonics, np.float64)
        self.slope = np.zeros(n_harmonics, np.float64)
        self.reset()

    def reset(self):
        """Phase 0, amplitudes 0 (the first hop fades in from silence), no glide into the first f0."""
        self.phase = 0.0
        self.prev_f0 = -1.0
        self.prev_amps[:] = 0.0

    cdef void c_process(self, double f0, const float[::1] amps, float[::1] out) noexcept nogil:
        cdef Py_ssize_t K = self.n_harmonics, H = self.hop, n, k, kmax
        cdef double two_pi = 2.0 * M_PI, nyq = 0.5 * self.sample_rate
        cdef double f_start, df, f, ph = self.phase, s_prev, s_cur, s_next, c2, acc, t, a
        cdef double* pa = &self.prev_amps[0]
        cdef double* sl = &self.slope[0]
        if f0 < 0.0:
            f0 = 0.0
        f_start = f0 if self.prev_f0 < 0.0 else self.prev_f0
        df = (f0 - f_start) / H
        for k in range(K):
            sl[k] = (amps[k] - pa[k]) / H
        for n in range(H):
            t = n + 1.0
            f = f_start + df * t
            ph += two_pi * f / self.sample_rate
            if ph >= two_pi:
                ph -= two_pi * floor(ph / two_pi)
            acc = 0.0
            if f > 0.0:
                # harmonics k with k * f < nyq only; sin(k ph) by the Chebyshev recursion
                kmax = <Py_ssize_t>floor(nyq / f)
                if kmax * f >= nyq:
                    kmax -= 1
                if kmax > K:
                    kmax = K
                s_prev = 0.0
                s_cur = sin(ph)
                c2 = 2.0 * cos(ph)
                for k in range(kmax):
                    a = pa[k] + sl[k] * t
                    acc += a * s_cur
                    s_next = c2 * s_cur - s_prev
                    s_prev = s_cur
                    s_cur = s_next
            out[n] = <float>acc
        self.phase = ph
        self.prev_f0 = f0
        for k in range(K):
            pa[k] = amps[k]

    def process(self, double f0, const float[::1] amps, float[::1] out):
        """One hop: glide from the last hop's f0 and amplitudes to ``f0`` and ``amps`` (K,)."""
        if amps.shape[0] != self.n_harmonics or out.shape[0] != self.hop:
            raise ValueError(f"HarmonicBank.process: amps ({amps.shape[0]},) and out ({out.shape[0]},), "
                             f"expected ({self.n_harmonics},) and ({self.hop},)")
        with nogil:
            self.c_process(f0, amps, out)


cdef inline uint64_t _xorshift(uint64_t* s) noexcept nogil:
    cdef uint64_t x = s[0]
    x ^= x << 13
    x ^= x >> 7
    x ^= x << 17
    s[0] = x
    return x


cdef class FilteredNoise:
    """``FilteredNoise(n_bands, hop, seed)``; ``process(mags, out)`` writes one hop of shaped noise.

    ``mags`` (n_bands,) are linear magnitudes at k * Nyquist / (n_bands - 1). The excitation is
    uniform white noise in [-1, 1) from a xorshift64 generator (``excitation`` holds the last hop's);
    ``process_excitation`` filters a given excitation instead (tests, deterministic callers)."""

    cdef readonly Py_ssize_t n_bands, hop, taps
    cdef uint64_t seed, state
    cdef double[:, ::1] basis         # (taps, n_bands): IR = basis @ mags (irfft, roll, Hann folded in)
    cdef double[::1] ir
    cdef double[::1] acc              # (hop + taps - 1): overlap-add accumulator
    cdef public float[::1] excitation

    def __cinit__(self, Py_ssize_t n_bands, Py_ssize_t hop, uint64_t seed=0x9E3779B97F4A7C15):
        cdef Py_ssize_t L, N, m, k
        if n_bands < 2 or hop < 1:
            raise ValueError("FilteredNoise needs n_bands >= 2, hop >= 1")
        N = n_bands - 1
        L = 2 * N
        self.n_bands, self.hop, self.taps = n_bands, hop, L
        # zero-phase IR of real magnitudes M_k: h0[m] = (M_0 + (-1)^m M_N + 2 sum M_k cos(2 pi k m / L)) / L;
        # rolled by L/2 (causal, linear phase: L/2 samples of delay) and Hann-windowed (smooth response)
        mm = np.arange(L)
        kk = np.arange(n_bands)
        w = np.full(n_bands, 2.0)
        w[0] = w[N] = 1.0
        shifted = (mm - L // 2) % L
        basis = w[None, :] * np.cos(2 * np.pi * kk[None, :] * shifted[:, None] / L) / L
        basis *= (0.5 - 0.5 * np.cos(2 * np.pi * mm / L))[:, None]     # periodic Hann, peak at L/2
        self.basis = np.ascontiguousarray(basis)
        self.ir = np.zeros(L, np.float64)
        self.acc = np.zeros(hop + L - 1, np.float64)
        self.excitation = np.zeros(hop, np.float32)
        self.seed = seed if seed else 1
        self.reset()

    def reset(self):
        """Clear the overlap-add tail and restart the noise generator from its seed."""
        self.acc[:] = 0.0
        self.state = self.seed

    cdef void c_filter(self, const float[::1] mags, const float[::1] exc, float[::1] out) noexcept nogil:
        cdef Py_ssize_t L = self.taps, B = self.n_bands, H = self.hop, m, k, n
        cdef double s, e
        cdef double* h = &self.ir[0]
        cdef double* acc = &self.acc[0]
        for m in range(L):
            s = 0.0
            for k in range(B):
                s += self.basis[m, k] * mags[k]
            h[m] = s
        for n in range(H):
            e = exc[n]
            if e != 0.0:
                for m in range(L):
                    acc[n + m] += e * h[m]
        for n in range(H):
            out[n] = <float>acc[n]
        memmove(acc, acc + H, (L - 1) * sizeof(double))
        memset(acc + L - 1, 0, H * sizeof(double))

    cdef void c_process(self, const float[::1] mags, float[::1] out) noexcept nogil:
        cdef Py_ssize_t n
        for n in range(self.hop):
            # top 24 bits -> [0, 1) -> [-1, 1)
            self.excitation[n] = <float>((_xorshift(&self.state) >> 40) * (2.0 / 16777216.0) - 1.0)
        self.c_filter(mags, self.excitation, out)

    def _check(self, mags, out):
        if mags.shape[0] != self.n_bands or out.shape[0] != self.hop:
            raise ValueError(f"FilteredNoise: mags ({mags.shape[0]},) and out ({out.shape[0]},), expected "
                             f"({self.n_bands},) and ({self.hop},)")

    def process(self, const float[::1] mags, float[::1] out):
        """One hop of noise shaped by ``mags`` (n_bands,), overlap-added with the earlier hops' tails."""
        self._check(mags, out)
        with nogil:
            self.c_process(mags, out)

    def process_excitation(self, const float[::1] mags, const float[::1] excitation, float[::1] out):
        """As :meth:`process`, filtering ``excitation`` (hop,) instead of the internal noise."""
        self._check(mags, out)
        if excitation.shape[0] != self.hop:
            raise ValueError(f"FilteredNoise: excitation ({excitation.shape[0]},), expected ({self.hop},)")
        with nogil:
            self.c_filter(mags, excitation, out)


# Freeverb's tunings at 44.1 kHz (Jezar, public domain), scaled to the sample rate
_COMBS_44K = (1116, 1188, 1277, 1356)
_ALLPASS_44K = (556, 441)


cdef class Reverb:
    """``Reverb(sample_rate, room=0.8, damp=0.3, wet=0.15)``; ``process(x)`` mixes in place:
    ``x <- x + wet * reverb(x)``. ``room`` is the combs' feedback (decay), ``damp`` their one-pole
    low-pass in the loop (darker tail)."""

    cdef readonly double sample_rate
    cdef public double room, damp, wet
    cdef Py_ssize_t[4] clen
    cdef Py_ssize_t[2] alen
    cdef Py_ssize_t[4] cpos
    cdef Py_ssize_t[2] apos
    cdef double[4] lp
    cdef double[:, ::1] cbuf
    cdef double[:, ::1] abuf

    def __cinit__(self, double sample_rate, double room=0.8, double damp=0.3, double wet=0.15):
        cdef int i
        if not sample_rate > 0:
            raise ValueError("Reverb needs sample_rate > 0")
        self.sample_rate, self.room, self.damp, self.wet = sample_rate, room, damp, wet
        for i in range(4):
            self.clen[i] = max(1, int(_COMBS_44K[i] * sample_rate / 44100.0 + 0.5))
        for i in range(2):
            self.alen[i] = max(1, int(_ALLPASS_44K[i] * sample_rate / 44100.0 + 0.5))
        self.cbuf = np.zeros((4, max(self.clen[i] for i in range(4))), np.float64)
        self.abuf = np.zeros((2, max(self.alen[i] for i in range(2))), np.float64)
        self.reset()

    @property
    def comb_delays(self):
        return tuple(self.clen[i] for i in range(4))

    @property
    def allpass_delays(self):
        return tuple(self.alen[i] for i in range(2))

    def reset(self):
        """Silence the tail."""
        cdef int i
        self.cbuf[:, :] = 0.0
        self.abuf[:, :] = 0.0
        for i in range(4):
            self.cpos[i] = 0
            self.lp[i] = 0.0
        for i in range(2):
            self.apos[i] = 0

    cdef void c_process(self, float[::1] x) noexcept nogil:
        cdef Py_ssize_t n, i, p
        cdef double inp, y, s, b, g = 0.015          # Freeverb's fixed input gain
        for n in range(x.shape[0]):
            inp = x[n] * g
            s = 0.0
            for i in range(4):
                p = self.cpos[i]
                y = self.cbuf[i, p]
                self.lp[i] = y * (1.0 - self.damp) + self.lp[i] * self.damp
                self.cbuf[i, p] = inp + self.lp[i] * self.room
                self.cpos[i] = p + 1 if p + 1 < self.clen[i] else 0
                s += y
            for i in range(2):
                p = self.apos[i]
                b = self.abuf[i, p]
                self.abuf[i, p] = s + b * 0.5
                s = b - s
                self.apos[i] = p + 1 if p + 1 < self.alen[i] else 0
            x[n] = <float>(x[n] + self.wet * s)

    def process(self, float[::1] x):
        """Add the reverb of ``x`` to it, in place (any length; state carries on)."""
        with nogil:
            self.c_process(x)


cdef class Yin:
    """``Yin(sample_rate, hop, window, tau_min, tau_max, threshold=0.15)``; ``push(hop_samples)``
    then ``f0`` (Hz, the best estimate even when unvoiced) and ``aperiodicity`` (the cumulative mean
    normalized difference at the chosen lag: near 0 periodic, near 1 noise) of the newest
    ``window`` samples against the ``tau_max`` before them."""

    cdef readonly Py_ssize_t hop, window, tau_min, tau_max, size
    cdef readonly double sample_rate, threshold
    cdef readonly double f0, aperiodicity
    cdef double[::1] buf
    cdef public double[::1] cmnd       # (tau_max + 1,) the last hop's normalized difference
    cdef double[::1] raw               # (tau_max + 1,) the last hop's difference function

    def __cinit__(self, double sample_rate, Py_ssize_t hop, Py_ssize_t window, Py_ssize_t tau_min,
                  Py_ssize_t tau_max, double threshold=0.15):
        if not (hop >= 1 and window >= 1 and 2 <= tau_min < tau_max):
            raise ValueError("Yin needs hop >= 1, window >= 1 and 2 <= tau_min < tau_max")
        self.sample_rate, self.hop, self.window = sample_rate, hop, window
        self.tau_min, self.tau_max, self.threshold = tau_min, tau_max, threshold
        self.size = window + tau_max
        self.buf = np.zeros(self.size, np.float64)
        self.cmnd = np.zeros(tau_max + 1, np.float64)
        self.raw = np.zeros(tau_max + 1, np.float64)
        self.reset()

    def reset(self):
        """Forget the past (zeros) and the last estimate."""
        self.buf[:] = 0.0
        self.f0 = 0.0
        self.aperiodicity = 1.0

    cdef void c_push(self, const float[::1] x) noexcept nogil:
        cdef Py_ssize_t N = self.size, W = self.window, H = x.shape[0], n, j, tau, best
        cdef double* b = &self.buf[0]
        cdef double* d = &self.cmnd[0]
        cdef double* r = &self.raw[0]
        cdef double s, diff, run, lo, a0, a1, a2, den, shift
        if H >= N:
            for n in range(N):
                b[n] = x[H - N + n]
        else:
            memmove(b, b + H, (N - H) * sizeof(double))
            for n in range(H):
                b[N - H + n] = x[n]
        # difference of the newest W samples against each lag; cumulative-mean normalized
        d[0] = 1.0
        run = 0.0
        for tau in range(1, self.tau_max + 1):
            s = 0.0
            for j in range(N - W, N):
                diff = b[j] - b[j - tau]
                s += diff * diff
            run += s
            r[tau] = s
            d[tau] = s * tau / run if run > 0.0 else 1.0
        # the first lag under the threshold, followed down to its local minimum; else the global minimum
        best = -1
        tau = self.tau_min
        while tau <= self.tau_max:
            if d[tau] < self.threshold:
                while tau + 1 <= self.tau_max and d[tau + 1] < d[tau]:
                    tau += 1
                best = tau
                break
            tau += 1
        if best < 0:
            best = self.tau_min
            for tau in range(self.tau_min, self.tau_max + 1):
                if d[tau] < d[best]:
                    best = tau
        shift = 0.0
        if self.tau_min < best < self.tau_max:
            # on the raw difference, as the YIN paper: the normalized one biases high f0 (~3 cents at 1.2 kHz)
            a0, a1, a2 = r[best - 1], r[best], r[best + 1]
            den = a0 - 2.0 * a1 + a2
            if den > 0.0:
                shift = 0.5 * (a0 - a2) / den
                if shift > 0.5:
                    shift = 0.5
                elif shift < -0.5:
                    shift = -0.5
        self.f0 = self.sample_rate / (best + shift)
        lo = d[best]
        self.aperiodicity = lo if lo < 1.0 else 1.0

    def push(self, const float[::1] x):
        """Append one hop of samples and estimate f0 of the newest window."""
        if x.shape[0] != self.hop:
            raise ValueError(f"Yin.push: {x.shape[0]} samples, expected the hop {self.hop}")
        with nogil:
            self.c_push(x)


cdef class Loudness:
    """``Loudness(sos, window, hop)``: ``push(hop_samples)`` filters by ``sos`` (the A-weighting
    sections, (sections, 6) in SciPy's layout) and sets ``db`` = 10 log10 of the mean square of the
    newest ``window`` filtered samples (floored at -120 dB)."""

    cdef readonly Py_ssize_t window, hop, n_sections
    cdef readonly double db
    cdef double[:, ::1] sos
    cdef double[:, ::1] zi
    cdef double[::1] sq

    def __cinit__(self, const double[:, ::1] sos, Py_ssize_t window, Py_ssize_t hop):
        if sos.shape[1] != 6 or window < hop or hop < 1:
            raise ValueError("Loudness needs sos (sections, 6) and window >= hop >= 1")
        self.sos = np.array(sos, np.float64)
        self.n_sections, self.window, self.hop = sos.shape[0], window, hop
        self.zi = np.zeros((sos.shape[0], 2), np.float64)
        self.sq = np.zeros(window, np.float64)
        self.reset()

    def reset(self):
        """Zero the filter state and the window."""
        self.zi[:, :] = 0.0
        self.sq[:] = 0.0
        self.db = -120.0

    cdef void c_push(self, const float[::1] x) noexcept nogil:
        cdef Py_ssize_t W = self.window, H = self.hop, n, i
        cdef double v, y, s
        cdef double* q = &self.sq[0]
        memmove(q, q + H, (W - H) * sizeof(double))
        for n in range(H):
            v = x[n]
            for i in range(self.n_sections):       # transposed direct form II, as scipy.signal.sosfilt
                y = self.sos[i, 0] * v + self.zi[i, 0]
                self.zi[i, 0] = self.sos[i, 1] * v - self.sos[i, 4] * y + self.zi[i, 1]
                self.zi[i, 1] = self.sos[i, 2] * v - self.sos[i, 5] * y
                v = y
            q[W - H + n] = v * v
        s = 0.0
        for n in range(W):
            s += q[n]
        s /= W
        self.db = 10.0 * log10(s) if s > 1e-12 else -120.0

    def push(self, const float[::1] x):
        """Append one hop and update ``db``."""
        if x.shape[0] != self.hop:
            raise ValueError(f"Loudness.push: {x.shape[0]} samples, expected the hop {self.hop}")
        with nogil:
            self.c_push(x)

# cython: language_level=3
"""Spectral kernels for the streaming engine: an in-house real FFT, streaming STFT
analysis / overlap-add synthesis, sparse (mel / band) filterbanks.

Conventions follow NumPy: ``RealFFT.forward`` is ``numpy.fft.rfft`` (unnormalized, bins
``0..n//2``), ``RealFFT.inverse`` is ``numpy.fft.irfft`` (scaled by ``1/n`` so that
``inverse(forward(x)) == x``; the imaginary parts of the DC and Nyquist bins are ignored).

All tables and work buffers are allocated at construction; the ``c_*`` methods are
``nogil`` and allocate nothing. The ``def`` methods are thin entry points that check
shapes (memory safety) and write into caller-provided arrays; friendly argument checking
and the Python-side constructors live in :mod:`edge_runtime.spectral`.
"""
import numpy as np
from libc.math cimport logf
from libc.string cimport memcpy, memmove, memset


# ---- routing ---------------------------------------------------------------------------
# Which route RealFFT(n) takes when none is forced, chosen by measurement with
# firmware_tools/bench/bench_fft.py (one float32 frame per call, routes timed round-robin, median
# of 101 batches). AMD EPYC dev VM (x86-64, gcc -O3, SSE2 only, one core), µs per frame:
#
#     n      fft (leaf q)     dft matrix   numpy.fft.rfft   dft/fft
#     256    1.09 (q=1)       3.68         8.09             3.4x
#     320    1.78 (q=5)       5.66         8.62             3.2x
#     480    2.72 (q=15)      12.68        9.79             4.7x
#     512    2.36 (q=1)       14.84        10.12            6.3x
#     960    5.86 (q=15)      51.31        13.01            8.8x
#     1024   5.18 (q=1)       59.05        12.92            11.4x
#
# Leaves (2026-12-02, same VM, --repeats 51): unrolled 3- and 5-point DFTs and one mixed-radix
# step for composite leaves (q = r*s) against the direct q-point leaf, µs per frame:
#
#     n      fft now (leaf)        direct leaf   numpy.fft.rfft
#     320    1.00 (5, unrolled)    1.24 (before the unrolled 5)
#     400    1.24 (25 = 5 x 5)     2.06          5.84
#     480    1.70 (15 = 3 x 5)     1.98          6.31
#     960    3.67 (15 = 3 x 5)     4.27          8.15
#
# (the mixed-radix step alone, with generic 3/5-point loops, was no faster: 1.98 vs 1.99 at
# 400, slower at 480 and 960; the gain is the unrolled small DFTs it then calls.)
#
# numpy's column includes its Python call, float32->float64 conversion and output
# allocation (rfft of n=8 takes ~7 µs), so it is what a per-frame numpy loop would pay, not
# pocketfft's kernel alone. The VM's absolute speed drifted up to ~2x between runs; the
# ratios were stable (round-robin timing). The audio
# sizes, pow2 or not, all go to the FFT: the DFT matrix is 3-12x slower, and its
# 2 * (n/2+1)^2 floats (1.8 MB at n=960) do not fit an edge core's L2. Other sizes measured
# with --sizes: the DFT is faster (dft/fft 0.7-0.9x) only when the complex FFT has no radix-2 stage to
# do (n/2 odd: 90, 150, 254, 270, 378, 882, 1010: the leaf is then the whole DFT, scalar,
# against the vectorized matrix) and for tiny frames (n = 8..48); with n/2 even the FFT wins
# from 64 up (1.3-1.7x even with big odd leaves: 180, 252, 300, 508, 900, 980).
# Hence: "fft" when n % 4 == 0 and n >= 64, else "dft".
FFT_MIN_SIZE = 64


cdef extern from *:
    """
    /* axpy pairs with restrict so gcc vectorizes them without runtime alias checks */
    static inline void er_axpy2(Py_ssize_t n, float a, const float* __restrict x, float* __restrict y,
                                float b, const float* __restrict u, float* __restrict v) {
        for (Py_ssize_t k = 0; k < n; ++k) { y[k] += a * x[k]; v[k] += b * u[k]; }
    }
    static inline void er_mul_acc(Py_ssize_t n, const float* __restrict x, const float* __restrict w,
                                  float* __restrict y) {
        for (Py_ssize_t k = 0; k < n; ++k) y[k] += x[k] * w[k];
    }
    static inline void er_mul(Py_ssize_t n, const float* __restrict x, const float* __restrict w,
                              float* __restrict y) {
        for (Py_ssize_t k = 0; k < n; ++k) y[k] = x[k] * w[k];
    }
    """
    void er_axpy2(Py_ssize_t n, float a, const float* x, float* y,
                  float b, const float* u, float* v) noexcept nogil
    void er_mul_acc(Py_ssize_t n, const float* x, const float* w, float* y) noexcept nogil
    void er_mul(Py_ssize_t n, const float* x, const float* w, float* y) noexcept nogil


# cos/sin(2 pi k/5), sin(2 pi/3), rounded once to float
cdef float _C5_1 = 0.30901699437494745
cdef float _C5_2 = -0.8090169943749473
cdef float _S5_1 = 0.9510565162951535
cdef float _S5_2 = 0.5877852522924732
cdef float _S3_1 = 0.8660254037844386


cdef inline void _odd_dft(const float* xr, const float* xi, Py_ssize_t istr,
                          float* yr, float* yi, Py_ssize_t ostr, Py_ssize_t q,
                          const float* lc, const float* ls, float* scratch) noexcept nogil:
    # q-point complex DFT (q odd, exp(-2 pi i jk/q)) of x[j*istr] into y[k*ostr], pairing j with
    # q-j and k with q-k:
    #   X[k] = A_k - i B_k,  X[q-k] = A_k + i B_k,
    #   A_k = x_0 + sum_j (x_j + x_{q-j}) cos(2 pi jk/q),  B_k = sum_j (x_j - x_{q-j}) sin(...)
    # (j, k = 1..(q-1)/2): a quarter of the direct DFT's multiplies. lc/ls: (q*q) tables;
    # scratch: 4*(q+1)/2 floats.
    cdef Py_ssize_t h = (q - 1) // 2
    cdef Py_ssize_t j, k
    cdef float sr, si, tr, ti, c, s
    cdef float a1r, a1i, a2r, a2i, b1r, b1i, b2r, b2i, t1r, t1i, t2r, t2i, u1r, u1i, u2r, u2i
    cdef float* sre = scratch
    cdef float* sim = sre + h + 1
    cdef float* dre = sim + h + 1
    cdef float* dim = dre + h + 1
    if q == 5:       # unrolled: the same pairing with the constants in registers
        a1r = xr[istr] + xr[4 * istr]
        a1i = xi[istr] + xi[4 * istr]
        a2r = xr[2 * istr] + xr[3 * istr]
        a2i = xi[2 * istr] + xi[3 * istr]
        b1r = xr[istr] - xr[4 * istr]
        b1i = xi[istr] - xi[4 * istr]
        b2r = xr[2 * istr] - xr[3 * istr]
        b2i = xi[2 * istr] - xi[3 * istr]
        t1r = xr[0] + _C5_1 * a1r + _C5_2 * a2r
        t1i = xi[0] + _C5_1 * a1i + _C5_2 * a2i
        t2r = xr[0] + _C5_2 * a1r + _C5_1 * a2r
        t2i = xi[0] + _C5_2 * a1i + _C5_1 * a2i
        u1r = _S5_1 * b1r + _S5_2 * b2r
        u1i = _S5_1 * b1i + _S5_2 * b2i
        u2r = _S5_2 * b1r - _S5_1 * b2r
        u2i = _S5_2 * b1i - _S5_1 * b2i
        yr[0] = xr[0] + a1r + a2r
        yi[0] = xi[0] + a1i + a2i
        yr[ostr] = t1r + u1i
        yi[ostr] = t1i - u1r
        yr[4 * ostr] = t1r - u1i
        yi[4 * ostr] = t1i + u1r
        yr[2 * ostr] = t2r + u2i
        yi[2 * ostr] = t2i - u2r
        yr[3 * ostr] = t2r - u2i
        yi[3 * ostr] = t2i + u2r
        return
    if q == 3:
        a1r = xr[istr] + xr[2 * istr]
        a1i = xi[istr] + xi[2 * istr]
        u1r = _S3_1 * (xr[istr] - xr[2 * istr])
        u1i = _S3_1 * (xi[istr] - xi[2 * istr])
        t1r = xr[0] - 0.5 * a1r
        t1i = xi[0] - 0.5 * a1i
        yr[0] = xr[0] + a1r
        yi[0] = xi[0] + a1i
        yr[ostr] = t1r + u1i
        yi[ostr] = t1i - u1r
        yr[2 * ostr] = t1r - u1i
        yi[2 * ostr] = t1i + u1r
        return
    sr = xr[0]
    si = xi[0]
    for j in range(1, h + 1):
        sre[j] = xr[j * istr] + xr[(q - j) * istr]
        sim[j] = xi[j * istr] + xi[(q - j) * istr]
        dre[j] = xr[j * istr] - xr[(q - j) * istr]
        dim[j] = xi[j * istr] - xi[(q - j) * istr]
        sr = sr + sre[j]
        si = si + sim[j]
    yr[0] = sr
    yi[0] = si
    for k in range(1, h + 1):
        sr = xr[0]
        si = xi[0]
        tr = 0.0
        ti = 0.0
        for j in range(1, h + 1):
            c = lc[k * q + j]
            s = ls[k * q + j]
            sr = sr + sre[j] * c
            si = si + sim[j] * c
            tr = tr + dre[j] * s
            ti = ti + dim[j] * s
        yr[k * ostr] = sr + ti
        yi[k * ostr] = si - tr
        yr[(q - k) * ostr] = sr - ti
        yi[(q - k) * ostr] = si + tr


def _smallest_factor(Py_ssize_t q):
    """The smallest prime factor of odd ``q`` (``q`` itself when prime, 1 for 1)."""
    cdef Py_ssize_t f = 3
    if q < 2:
        return 1
    while f * f <= q:
        if q % f == 0:
            return f
        f += 2
    return q


def _split_pow2(Py_ssize_t m):
    """m = 2**a * q with q odd; returns (a, q)."""
    cdef Py_ssize_t a = 0
    while m > 1 and m % 2 == 0:
        m //= 2
        a += 1
    return a, m


def _bitrev(Py_ssize_t p, Py_ssize_t bits):
    cdef Py_ssize_t r = 0, i
    for i in range(bits):
        r = (r << 1) | ((p >> i) & 1)
    return r


def default_route(Py_ssize_t n):
    """The route ``RealFFT(n)`` takes by default ("fft" or "dft"); see the table above."""
    if n >= FFT_MIN_SIZE and n % 4 == 0:
        return "fft"
    return "dft"


cdef class RealFFT:
    """Real-input FFT of size ``n`` into ``n//2 + 1`` bins (``numpy.fft.rfft`` convention).

    Two routes, picked per size by :func:`default_route` (measured, see module header) or
    forced with ``route="fft" | "dft"``:

    * ``"fft"`` (even ``n``): the real-input packing trick, ``z[t] = x[2t] + i x[2t+1]``
      through an ``n/2``-point complex FFT and a twiddle post-processing pass. The complex
      FFT is iterative radix-2 decimation in time; when ``n/2 = 2**a * q`` with ``q`` odd
      (320, 400, 480, 960 = 2 * 2**a * {5, 25, 15, 15}) the recursion stops at ``2**a``
      ``q``-point DFTs (pure radix-2 for powers of two, ``q == 1``). A composite leaf
      ``q = r * s`` (``r`` its smallest prime factor: 15 = 3 * 5, 25 = 5 * 5) runs as one
      mixed-radix step, ``r`` ``s``-point DFTs, twiddles and ``s`` ``r``-point DFTs, unless
      ``factor_leaf=False`` (direct ``q``-point DFTs, for comparison).
    * ``"dft"`` (any ``n``): a precomputed real DFT matrix, folded by the symmetry of real
      input (``x[j] +- x[n-j]``), so ``(n/2+1)^2`` multiply-adds each for cos and sin.

    Float32 data and accumulation; tables are computed in double and rounded once.
    """

    def __cinit__(self, Py_ssize_t n, route=None, factor_leaf=None):
        cdef Py_ssize_t a, q, m, p, j, k, r, L, off, nb, P, sq, rr
        if n < 1:
            raise ValueError(f"RealFFT size must be >= 1, got {n}")
        if route is None:
            route = default_route(n)
        if route not in ("fft", "dft"):
            raise ValueError(f"RealFFT route must be 'fft', 'dft' or None, got {route!r}")
        if route == "fft" and (n < 2 or n % 2):
            raise ValueError(f"RealFFT route 'fft' needs an even size, got {n}")
        self.n = n
        self.n_bins = nb = n // 2 + 1
        self.route = route
        self.use_dft = route == "dft"
        self.m = m = n // 2
        arrays = []

        def keep(arr):
            arrays.append(arr)
            return arr

        work = max(m, nb) + 1
        self.ar = keep(np.zeros(work, np.float32))
        self.ai = keep(np.zeros(work, np.float32))
        self.br = keep(np.zeros(work, np.float32))
        self.bi = keep(np.zeros(work, np.float32))
        if route == "fft":
            a, q = _split_pow2(m)
            P = 1 << a
            self.radix2_stages = a
            self.leaf_size = q
            perm = np.empty(m, np.int32)
            for p in range(P):
                r = _bitrev(p, a)
                for j in range(q):
                    perm[p * q + j] = r + j * P
            self.perm = keep(perm)
            r = _smallest_factor(q)
            if factor_leaf is None:
                factor_leaf = r < q          # composite leaves (9, 15, 25, ...) are factored
            if not factor_leaf or r == q:
                r = 1
            self.leaf_factor = r
            sq = q // r
            jk = (np.arange(sq)[:, None] * np.arange(sq)[None, :]) % sq   # [k, j]
            self.leaf_cos = keep(np.ascontiguousarray(np.cos(2 * np.pi * jk / sq).ravel(), np.float32))
            self.leaf_sin = keep(np.ascontiguousarray(np.sin(2 * np.pi * jk / sq).ravel(), np.float32))
            rr = max(r, 1)
            jk = (np.arange(rr)[:, None] * np.arange(rr)[None, :]) % rr
            self.leaf2_cos = keep(np.ascontiguousarray(np.cos(2 * np.pi * jk / rr).ravel(), np.float32))
            self.leaf2_sin = keep(np.ascontiguousarray(np.sin(2 * np.pi * jk / rr).ravel(), np.float32))
            jk = np.arange(rr)[:, None] * np.arange(sq)[None, :]        # [j1, k2]
            self.leaf_tw_cos = keep(np.ascontiguousarray(np.cos(2 * np.pi * jk / q).ravel(), np.float32))
            self.leaf_tw_sin = keep(np.ascontiguousarray(np.sin(2 * np.pi * jk / q).ravel(), np.float32))
            self.leaf_buf = keep(np.zeros(6 * q + 4, np.float32))
            twc = np.zeros(max(m, 1), np.float64)
            tws = np.zeros(max(m, 1), np.float64)
            L = q
            off = 0
            while L < m:
                ang = np.pi * np.arange(L) / L        # 2 pi k / (2L)
                twc[off:off + L] = np.cos(ang)
                tws[off:off + L] = np.sin(ang)
                off += L
                L *= 2
            self.tw_cos = keep(twc.astype(np.float32))
            self.tw_sin = keep(tws.astype(np.float32))
            ang = 2 * np.pi * np.arange(m + 1) / n
            pc = np.cos(ang)
            ps = np.sin(ang)
            pc[0], ps[0], pc[m], ps[m] = 1.0, 0.0, -1.0, 0.0
            self.post_cos = keep(pc.astype(np.float32))
            self.post_sin = keep(ps.astype(np.float32))
        else:
            self.radix2_stages = 0
            self.leaf_size = n
            self.leaf_factor = 1
            jk = (np.arange(nb)[:, None] * np.arange(nb)[None, :]) % n
            self.dft_cos = keep(np.ascontiguousarray(np.cos(2 * np.pi * jk / n), np.float32))
            self.dft_sin = keep(np.ascontiguousarray(np.sin(2 * np.pi * jk / n), np.float32))
            self.fold_a = keep(np.zeros(nb, np.float32))
            self.fold_b = keep(np.zeros(nb, np.float32))
        self._arrays = arrays

    def __repr__(self):
        return (f"RealFFT(n={self.n}, route={self.route!r}"
                + (f", radix2_stages={self.radix2_stages}, leaf_size={self.leaf_size}"
                   + (f" = {self.leaf_factor} x {self.leaf_size // self.leaf_factor})"
                      if self.leaf_factor > 1 else ")")
                   if self.route == "fft" else ")"))

    # -- complex FFT core ("fft" route) ---------------------------------------------------

    cdef void _cfft(self, const float* inr, const float* ini, Py_ssize_t stride, float isign) noexcept nogil:
        # m-point complex DFT (exp(-2 pi i jk/m)) of (inr + i*isign*ini)[t*stride] into br/bi.
        cdef Py_ssize_t m = self.m
        cdef Py_ssize_t q = self.leaf_size
        cdef Py_ssize_t P = m // q
        cdef Py_ssize_t p, j, k, t, base, L, b, off, i0, i1, r, sq
        cdef float xr, xi, c, s, tr, ti
        cdef float* gr
        cdef float* gi
        cdef float* sre
        cdef float* sim
        cdef float* dre
        cdef float* br = &self.br[0]
        cdef float* bi = &self.bi[0]
        cdef const int* perm = &self.perm[0]
        cdef const float* lc
        cdef const float* ls
        cdef const float* twc
        cdef const float* tws
        cdef const float* lc2
        cdef const float* ls2
        cdef const float* ltc
        cdef const float* lts
        # leaves: bit-reversed gather (q == 1) or direct q-point DFTs
        if q == 1:
            for p in range(m):
                t = perm[p] * stride
                br[p] = inr[t]
                bi[p] = isign * ini[t]
        else:
            # q-point DFTs of the gathered leaf input: direct (_odd_dft), or, with q = r*s, r
            # s-point DFTs of x[r*j2 + j1], twiddles W_q^(j1*k2), and s r-point DFTs across j1:
            #   X[k2 + s*k1] = sum_j1 W_r^(j1*k1) (W_q^(j1*k2) Y_j1[k2])
            lc = &self.leaf_cos[0]
            ls = &self.leaf_sin[0]
            lc2 = &self.leaf2_cos[0]
            ls2 = &self.leaf2_sin[0]
            ltc = &self.leaf_tw_cos[0]
            lts = &self.leaf_tw_sin[0]
            r = self.leaf_factor
            sq = q // r
            gr = &self.leaf_buf[0]
            gi = gr + q
            sre = gi + q                 # the factored leaf's middle (2q)
            sim = sre + q
            dre = sim + q                # _odd_dft scratch (2q + 4 >= 4 * (q + 1) / 2)
            for p in range(P):
                base = p * q
                for j in range(q):
                    t = perm[base + j] * stride
                    gr[j] = inr[t]
                    gi[j] = isign * ini[t]
                if r == 1:
                    _odd_dft(gr, gi, 1, br + base, bi + base, 1, q, lc, ls, dre)
                    continue
                for j in range(r):
                    _odd_dft(gr + j, gi + j, r, sre + j * sq, sim + j * sq, 1, sq, lc, ls, dre)
                for k in range(sq, q):
                    c = ltc[k]
                    s = lts[k]
                    xr = sre[k]
                    xi = sim[k]
                    sre[k] = xr * c + xi * s
                    sim[k] = xi * c - xr * s
                for k in range(sq):
                    _odd_dft(sre + k, sim + k, sq, br + base + k, bi + base + k, sq, r, lc2, ls2, dre)
        # radix-2 stages: blocks of 2L from pairs of L-point DFTs
        L = q
        off = 0
        if L == 1 and L < m:
            for b in range(0, m, 2):
                xr = br[b + 1]
                xi = bi[b + 1]
                br[b + 1] = br[b] - xr
                bi[b + 1] = bi[b] - xi
                br[b] = br[b] + xr
                bi[b] = bi[b] + xi
            off = 1
            L = 2
        while L < m:
            twc = &self.tw_cos[off]
            tws = &self.tw_sin[off]
            b = 0
            while b < m:
                for k in range(L):
                    c = twc[k]
                    s = tws[k]
                    i0 = b + k
                    i1 = i0 + L
                    xr = br[i1]
                    xi = bi[i1]
                    tr = xr * c + xi * s
                    ti = xi * c - xr * s
                    br[i1] = br[i0] - tr
                    bi[i1] = bi[i0] - ti
                    br[i0] = br[i0] + tr
                    bi[i0] = bi[i0] + ti
                b += 2 * L
            off += L
            L *= 2

    # -- real transforms ------------------------------------------------------------------

    cdef void _forward(self, const float* x, float* re, float* im) noexcept nogil:
        cdef Py_ssize_t n = self.n, m = self.m, nb = self.n_bins
        cdef Py_ssize_t k, kk, mk, j, h, J
        cdef float zr, zi, wr, wi, fer, fei, for_, foi, c, s
        cdef float* fa
        cdef float* fb
        if self.use_dft:
            h = n // 2
            J = (n - 1) // 2
            fa = &self.fold_a[0]
            fb = &self.fold_b[0]
            fa[0] = x[0]
            fb[0] = 0.0
            for j in range(1, J + 1):
                fa[j] = x[j] + x[n - j]
                fb[j] = x[n - j] - x[j]          # im = -sum (x[j] - x[n-j]) sin
            if n % 2 == 0:
                fa[h] = x[h]
                fb[h] = 0.0
            memset(re, 0, nb * sizeof(float))
            memset(im, 0, nb * sizeof(float))
            for j in range(nb):
                er_axpy2(nb, fa[j], &self.dft_cos[j, 0], re, fb[j], &self.dft_sin[j, 0], im)
            im[0] = 0.0
            if n % 2 == 0:
                im[h] = 0.0
            return
        self._cfft(x, x + 1, 2, 1.0)
        for k in range(m + 1):
            kk = k if k < m else 0
            mk = m - k if k > 0 else 0
            zr = self.br[kk]
            zi = self.bi[kk]
            wr = self.br[mk]
            wi = self.bi[mk]
            fer = 0.5 * (zr + wr)
            fei = 0.5 * (zi - wi)
            for_ = 0.5 * (zi + wi)
            foi = -0.5 * (zr - wr)
            c = self.post_cos[k]
            s = self.post_sin[k]
            re[k] = fer + c * for_ + s * foi
            im[k] = fei + c * foi - s * for_
        im[0] = 0.0
        im[m] = 0.0

    cdef void _inverse(self, const float* re, const float* im, float* out) noexcept nogil:
        cdef Py_ssize_t n = self.n, m = self.m, nb = self.n_bins
        cdef Py_ssize_t k, mk, t, h, J, K
        cdef float rk, ik, rm, im_, fer, fei, dr, di, for_, foi, c, s, scale
        cdef float* fa
        cdef float* fb
        cdef float* A
        cdef float* B
        if self.use_dft:
            h = n // 2
            K = (n - 1) // 2
            scale = 1.0 / n
            fa = &self.fold_a[0]
            fb = &self.fold_b[0]
            fa[0] = re[0] * scale
            fb[0] = 0.0
            for k in range(1, K + 1):
                fa[k] = 2.0 * scale * re[k]
                fb[k] = 2.0 * scale * im[k]
            if n % 2 == 0:
                fa[h] = re[h] * scale
                fb[h] = 0.0
            A = &self.ar[0]
            B = &self.ai[0]
            memset(A, 0, nb * sizeof(float))
            memset(B, 0, nb * sizeof(float))
            for k in range(nb):
                er_axpy2(nb, fa[k], &self.dft_cos[k, 0], A, fb[k], &self.dft_sin[k, 0], B)
            out[0] = A[0]
            for t in range(1, K + 1):
                out[t] = A[t] - B[t]
                out[n - t] = A[t] + B[t]
            if n % 2 == 0:
                out[h] = A[h]
            return
        for k in range(m):
            mk = m - k
            rk = re[k]
            rm = re[mk]
            if k == 0:
                ik = 0.0          # DC and Nyquist are real (numpy.fft.irfft ignores their imag)
                im_ = 0.0
            else:
                ik = im[k]
                im_ = im[mk]
            fer = 0.5 * (rk + rm)
            fei = 0.5 * (ik - im_)
            dr = rk - rm
            di = ik + im_
            c = self.post_cos[k]
            s = self.post_sin[k]
            for_ = 0.5 * (dr * c - di * s)
            foi = 0.5 * (dr * s + di * c)
            self.ar[k] = fer - foi
            self.ai[k] = fei + for_
        # inverse complex FFT via conj(fft(conj(Z))) / m
        self._cfft(&self.ar[0], &self.ai[0], 1, -1.0)
        scale = 1.0 / m
        for t in range(m):
            out[2 * t] = self.br[t] * scale
            out[2 * t + 1] = -self.bi[t] * scale

    cdef void c_forward(self, const float[::1] x, float[::1] re, float[::1] im) noexcept nogil:
        self._forward(&x[0], &re[0], &im[0])

    cdef void c_inverse(self, const float[::1] re, const float[::1] im, float[::1] out) noexcept nogil:
        self._inverse(&re[0], &im[0], &out[0])

    def forward(self, const float[::1] x, float[::1] re, float[::1] im):
        """``re + 1j*im = numpy.fft.rfft(x)``; ``x`` (n,), ``re``/``im`` (n//2+1,) float32."""
        if x.shape[0] != self.n or re.shape[0] != self.n_bins or im.shape[0] != self.n_bins:
            raise ValueError(f"RealFFT({self.n}).forward needs x ({self.n},) and re/im ({self.n_bins},), "
                             f"got ({x.shape[0]},), ({re.shape[0]},), ({im.shape[0]},)")
        with nogil:
            self._forward(&x[0], &re[0], &im[0])

    def inverse(self, const float[::1] re, const float[::1] im, float[::1] out):
        """``out = numpy.fft.irfft(re + 1j*im, n)`` (so ``inverse(forward(x)) == x``)."""
        if out.shape[0] != self.n or re.shape[0] != self.n_bins or im.shape[0] != self.n_bins:
            raise ValueError(f"RealFFT({self.n}).inverse needs re/im ({self.n_bins},) and out ({self.n},), "
                             f"got ({re.shape[0]},), ({im.shape[0]},), ({out.shape[0]},)")
        with nogil:
            self._inverse(&re[0], &im[0], &out[0])

    def forward_many(self, const float[::1] x, float[::1] re, float[::1] im, Py_ssize_t count):
        """Run ``forward`` ``count`` times in a compiled loop (benchmarks)."""
        cdef Py_ssize_t i
        if x.shape[0] != self.n or re.shape[0] != self.n_bins or im.shape[0] != self.n_bins:
            raise ValueError("forward_many: bad shapes")
        with nogil:
            for i in range(count):
                self._forward(&x[0], &re[0], &im[0])


# ---- windows ---------------------------------------------------------------------------

def make_window(window, Py_ssize_t n):
    """Periodic window as float64: "hann", "sqrt_hann", or an array of length ``n``."""
    if isinstance(window, str):
        hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
        if window == "hann":
            return hann
        if window == "sqrt_hann":
            return np.sqrt(hann)
        raise ValueError(f"window must be 'hann', 'sqrt_hann' or an array, got {window!r}")
    w = np.asarray(window, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"window array must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("window array must be finite")
    return w


def _window_name(window):
    return window if isinstance(window, str) else "custom"


def _check_stft(Py_ssize_t frame_size, Py_ssize_t hop, Py_ssize_t channels):
    if frame_size < 2 or hop < 1 or hop > frame_size or channels < 1:
        raise ValueError(f"STFT needs frame_size >= 2, 1 <= hop <= frame_size and channels >= 1, "
                         f"got frame_size={frame_size}, hop={hop}, channels={channels}")


cdef class StftAnalyzer:
    """Streaming STFT analysis: one frame per ``push`` of ``hop`` new samples per channel.

    Keeps the last ``frame_size`` input samples per channel (zeros before the stream
    starts); each ``push`` shifts in the new block and writes
    ``rfft(window * frame)`` into the preallocated :attr:`re` / :attr:`im` arrays
    ``(channels, frame_size//2 + 1)``, which are overwritten by the next push. Frame ``k``
    (0-based) covers input samples ``[(k+1)*hop - frame_size, (k+1)*hop)``.
    """

    def __cinit__(self, Py_ssize_t frame_size, Py_ssize_t hop, window="sqrt_hann",
                  Py_ssize_t channels=1, route=None):
        _check_stft(frame_size, hop, channels)
        self.frame_size = frame_size
        self.hop = hop
        self.channels = channels
        self.fft = RealFFT(frame_size, route)
        self.n_bins = self.fft.n_bins
        self.window_name = _window_name(window)
        w = make_window(window, frame_size).astype(np.float32)
        self.window = w
        self.win = w
        self.re = np.zeros((channels, self.n_bins), np.float32)
        self.im = np.zeros((channels, self.n_bins), np.float32)
        self.re_v = self.re
        self.im_v = self.im
        hist = np.zeros((channels, frame_size), np.float32)
        buf = np.zeros(frame_size, np.float32)
        self.hist = hist
        self.buf = buf
        self._arrays = (hist, buf)
        self.frames = 0

    cdef void c_push(self, const float[:, ::1] block) noexcept nogil:
        cdef Py_ssize_t c
        cdef Py_ssize_t n = self.frame_size, hop = self.hop
        cdef float* h
        for c in range(self.channels):
            h = &self.hist[c, 0]
            if n > hop:
                memmove(h, h + hop, (n - hop) * sizeof(float))
            memcpy(h + n - hop, &block[c, 0], hop * sizeof(float))
            er_mul(n, h, &self.win[0], &self.buf[0])
            self.fft._forward(&self.buf[0], &self.re_v[c, 0], &self.im_v[c, 0])
        self.frames += 1

    def push(self, const float[:, ::1] block):
        """Shift in ``block`` (channels, hop) float32 and analyse one frame into ``re``/``im``."""
        if block.shape[0] != self.channels or block.shape[1] != self.hop:
            raise ValueError(f"StftAnalyzer.push needs a ({self.channels}, {self.hop}) float32 block, "
                             f"got ({block.shape[0]}, {block.shape[1]})")
        with nogil:
            self.c_push(block)

    def push_log_mel(self, const float[:, ::1] block, FilterBank fb not None, float[:, ::1] power,
                     float[:, ::1] out, float floor=1e-10):
        """``push(block)``, then each channel's ``re**2 + im**2`` into ``power`` (channels, n_bins)
        and ``log(max(fb.apply(power), floor))`` into ``out`` (channels, fb.n_bands): a log-mel
        front end's hop in one compiled call (no Python between the three steps)."""
        cdef Py_ssize_t c
        if block.shape[0] != self.channels or block.shape[1] != self.hop:
            raise ValueError(f"StftAnalyzer.push_log_mel needs a ({self.channels}, {self.hop}) float32 block, "
                             f"got ({block.shape[0]}, {block.shape[1]})")
        if fb.n_bins != self.n_bins or power.shape[0] != self.channels or power.shape[1] != self.n_bins:
            raise ValueError(f"push_log_mel needs a filter bank of {self.n_bins} bins and power "
                             f"({self.channels}, {self.n_bins})")
        if out.shape[0] != self.channels or out.shape[1] != fb.n_bands:
            raise ValueError(f"push_log_mel needs out ({self.channels}, {fb.n_bands})")
        if not floor > 0:
            raise ValueError(f"log_mel floor must be > 0, got {floor}")
        with nogil:
            self.c_push(block)
            for c in range(self.channels):
                power_spectrum_1d(&self.re_v[c, 0], &self.im_v[c, 0], &power[c, 0], self.n_bins)
                fb._apply(&power[c, 0], &out[c, 0])
                log_floor_1d(&out[c, 0], fb.n_bands, floor)

    def push_many(self, const float[:, ::1] block, Py_ssize_t count):
        """Push the same block ``count`` times in a compiled loop (benchmarks)."""
        cdef Py_ssize_t i
        if block.shape[0] != self.channels or block.shape[1] != self.hop:
            raise ValueError("push_many: bad block shape")
        with nogil:
            for i in range(count):
                self.c_push(block)

    def reset(self):
        """Forget the signal history (zeros) and the frame count."""
        self.hist[:, :] = 0.0
        self.re_v[:, :] = 0.0
        self.im_v[:, :] = 0.0
        self.frames = 0


cdef class StftSynthesizer:
    """Streaming inverse STFT: one frame's spectrum in, ``hop`` samples out per ``pull``.

    Weighted overlap-add with the synthesis window ``w[i] / sum_m w[(i mod hop) + m*hop]^2``
    (``w`` the analysis window): the overlap-added ``w_analysis * w_synthesis`` is exactly 1
    at every sample for any window and hop whose squared window has no all-zero phase, so
    :class:`StftAnalyzer` -> :class:`StftSynthesizer` with unmodified spectra reproduces the
    input delayed by :attr:`latency_samples` ``= frame_size - hop``. With ``sqrt_hann`` at
    50% overlap the normalization is 1 (the classic sqrt-Hann analysis/synthesis pair).
    """

    def __cinit__(self, Py_ssize_t frame_size, Py_ssize_t hop, window="sqrt_hann",
                  Py_ssize_t channels=1, route=None):
        cdef Py_ssize_t p
        _check_stft(frame_size, hop, channels)
        self.frame_size = frame_size
        self.hop = hop
        self.channels = channels
        self.fft = RealFFT(frame_size, route)
        self.n_bins = self.fft.n_bins
        self.latency_samples = frame_size - hop
        self.window_name = _window_name(window)
        w = make_window(window, frame_size)
        norm = np.zeros(hop, np.float64)
        for p in range(hop):
            norm[p] = np.sum(w[p::hop] ** 2)
        if not np.all(norm > 1e-6 * max(float(norm.max()), 1e-30)):
            bad = int(np.argmin(norm))
            raise ValueError(
                f"window {self.window_name!r} with frame_size={frame_size}, hop={hop} cannot be "
                f"inverted: the overlapped squared windows vanish at phase {bad} "
                f"(use more overlap or a window that is nonzero there)")
        ws = (w / np.tile(norm, frame_size // hop + 1)[:frame_size]).astype(np.float32)
        self.window = ws
        self.win = ws
        acc = np.zeros((channels, frame_size), np.float32)
        buf = np.zeros(frame_size, np.float32)
        self.acc = acc
        self.buf = buf
        self._arrays = (acc, buf)

    cdef void c_pull(self, const float[:, ::1] re, const float[:, ::1] im, float[:, ::1] out) noexcept nogil:
        cdef Py_ssize_t c
        cdef Py_ssize_t n = self.frame_size, hop = self.hop
        cdef float* a
        for c in range(self.channels):
            self.fft._inverse(&re[c, 0], &im[c, 0], &self.buf[0])
            a = &self.acc[c, 0]
            er_mul_acc(n, &self.buf[0], &self.win[0], a)
            memcpy(&out[c, 0], a, hop * sizeof(float))
            if n > hop:
                memmove(a, a + hop, (n - hop) * sizeof(float))
            memset(a + n - hop, 0, hop * sizeof(float))

    def pull(self, const float[:, ::1] re, const float[:, ::1] im, float[:, ::1] out):
        """Overlap-add the frame ``re + 1j*im`` (channels, n_bins); write ``hop`` finished samples to ``out``."""
        if (re.shape[0] != self.channels or re.shape[1] != self.n_bins
                or im.shape[0] != self.channels or im.shape[1] != self.n_bins):
            raise ValueError(f"StftSynthesizer.pull needs re/im ({self.channels}, {self.n_bins}), "
                             f"got ({re.shape[0]}, {re.shape[1]}) and ({im.shape[0]}, {im.shape[1]})")
        if out.shape[0] != self.channels or out.shape[1] != self.hop:
            raise ValueError(f"StftSynthesizer.pull needs out ({self.channels}, {self.hop}), "
                             f"got ({out.shape[0]}, {out.shape[1]})")
        with nogil:
            self.c_pull(re, im, out)

    def reset(self):
        """Clear the overlap-add state."""
        self.acc[:, :] = 0.0


# ---- filterbanks -----------------------------------------------------------------------

cdef class FilterBank:
    """Non-negative band weights ``(n_bands, n_bins)`` stored sparsely (each band's nonzero span).

    ``apply``: band energies ``out[b] = sum_k W[b, k] * power[k]`` (the dense ``W @ power``).
    ``expand``: band gains back to bins, ``out[k] = sum_b W[b, k] g[b] / sum_b W[b, k]``: with
    triangular bands this is linear interpolation between band centres (RNNoise's
    ``interp_band_gain``). A bin no band covers takes the gain of the nearest band.
    """

    def __cinit__(self, weights):
        cdef Py_ssize_t b, k, nz0, nz1, total
        W = np.asarray(weights, dtype=np.float32)
        if W.ndim != 2 or W.shape[0] < 1 or W.shape[1] < 1:
            raise ValueError(f"FilterBank weights must be a non-empty 2-D array (n_bands, n_bins), got shape {W.shape}")
        if not np.all(np.isfinite(W)) or np.any(W < 0):
            raise ValueError("FilterBank weights must be finite and >= 0")
        self.n_bands, self.n_bins = W.shape
        starts = np.zeros(self.n_bands, np.int32)
        lengths = np.zeros(self.n_bands, np.int32)
        offsets = np.zeros(self.n_bands, np.int32)
        spans = []
        total = 0
        for b in range(self.n_bands):
            nz = np.flatnonzero(W[b])
            if nz.size:
                nz0, nz1 = int(nz[0]), int(nz[nz.size - 1]) + 1
                starts[b] = nz0
                lengths[b] = nz1 - nz0
                offsets[b] = total
                spans.append(W[b, nz0:nz1])
                total += nz1 - nz0
            else:
                offsets[b] = total
        w = np.concatenate(spans).astype(np.float32) if spans else np.zeros(1, np.float32)
        if w.size == 0:
            w = np.zeros(1, np.float32)
        cover = W.astype(np.float64).sum(axis=0)
        inv = np.where(cover > 0, 1.0 / np.where(cover > 0, cover, 1.0), 0.0).astype(np.float32)
        nearest = np.full(self.n_bins, -1, np.int32)
        live = [b for b in range(self.n_bands) if lengths[b] > 0]
        if live:
            for k in range(self.n_bins):
                if cover[k] > 0:
                    continue
                best, best_d = -1, None
                for b in live:
                    lo, hi = int(starts[b]), int(starts[b]) + int(lengths[b]) - 1
                    d = lo - k if k < lo else (k - hi if k > hi else 0)
                    if best_d is None or d < best_d:
                        best, best_d = b, d
                nearest[k] = best
        self.start = starts
        self.length = lengths
        self.offset = offsets
        self.w = w
        self.inv_cover = inv
        self.nearest_band = nearest
        self._arrays = (starts, lengths, offsets, w, inv, nearest)

    @property
    def dense(self):
        """The weights as a dense (n_bands, n_bins) float32 array (a copy)."""
        cdef Py_ssize_t b
        W = np.zeros((self.n_bands, self.n_bins), np.float32)
        starts, lengths, offsets, w = self._arrays[:4]
        for b in range(self.n_bands):
            W[b, starts[b]:starts[b] + lengths[b]] = w[offsets[b]:offsets[b] + lengths[b]]
        return W

    @property
    def nonzeros(self):
        """Stored weights (the sparse form's size)."""
        return int(np.sum(self._arrays[1]))

    cdef void _apply(self, const float* power, float* out) noexcept nogil:
        cdef Py_ssize_t b, i, s, L
        cdef float acc
        cdef const float* w
        for b in range(self.n_bands):
            s = self.start[b]
            L = self.length[b]
            w = &self.w[self.offset[b]]
            acc = 0.0
            for i in range(L):
                acc = acc + w[i] * power[s + i]
            out[b] = acc

    cdef void _expand(self, const float* gains, float* out) noexcept nogil:
        cdef Py_ssize_t b, i, k, s, L, nb
        cdef float g
        cdef const float* w
        memset(out, 0, self.n_bins * sizeof(float))
        for b in range(self.n_bands):
            s = self.start[b]
            L = self.length[b]
            w = &self.w[self.offset[b]]
            g = gains[b]
            for i in range(L):
                out[s + i] += w[i] * g
        for k in range(self.n_bins):
            if self.inv_cover[k] > 0:
                out[k] *= self.inv_cover[k]
            else:
                nb = self.nearest_band[k]
                out[k] = gains[nb] if nb >= 0 else 0.0

    cdef void c_apply(self, const float[::1] power, float[::1] out) noexcept nogil:
        self._apply(&power[0], &out[0])

    cdef void c_expand(self, const float[::1] gains, float[::1] out) noexcept nogil:
        self._expand(&gains[0], &out[0])

    def apply(self, const float[::1] power, float[::1] out):
        """Band energies of ``power`` (n_bins,) into ``out`` (n_bands,)."""
        if power.shape[0] != self.n_bins or out.shape[0] != self.n_bands:
            raise ValueError(f"FilterBank.apply needs power ({self.n_bins},) and out ({self.n_bands},), "
                             f"got ({power.shape[0]},) and ({out.shape[0]},)")
        with nogil:
            self._apply(&power[0], &out[0])

    def expand(self, const float[::1] gains, float[::1] out):
        """Interpolate band ``gains`` (n_bands,) to bins ``out`` (n_bins,)."""
        if gains.shape[0] != self.n_bands or out.shape[0] != self.n_bins:
            raise ValueError(f"FilterBank.expand needs gains ({self.n_bands},) and out ({self.n_bins},), "
                             f"got ({gains.shape[0]},) and ({out.shape[0]},)")
        with nogil:
            self._expand(&gains[0], &out[0])


# ---- helpers ---------------------------------------------------------------------------

cdef void power_spectrum_1d(const float* re, const float* im, float* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(n):
        out[k] = re[k] * re[k] + im[k] * im[k]


cdef void log_floor_1d(float* x, Py_ssize_t n, float floor) noexcept nogil:
    cdef Py_ssize_t k
    cdef float v
    for k in range(n):
        v = x[k]
        x[k] = logf(v if v > floor else floor)


cdef void c_log_mel(FilterBank fb, const float[::1] power, float[::1] out, float floor) noexcept nogil:
    fb._apply(&power[0], &out[0])
    log_floor_1d(&out[0], fb.n_bands, floor)


def power_spectrum(re, im, out):
    """``out = re**2 + im**2`` for float32 C-contiguous arrays of one shape (1-D or 2-D)."""
    cdef const float[:, ::1] r2, i2
    cdef float[:, ::1] o2
    cdef const float[::1] r1, i1
    cdef float[::1] o1
    cdef Py_ssize_t c
    if re.ndim == 2:
        r2 = re
        i2 = im
        o2 = out
        if (i2.shape[0] != r2.shape[0] or o2.shape[0] != r2.shape[0] or i2.shape[1] != r2.shape[1]
                or o2.shape[1] != r2.shape[1]):
            raise ValueError("power_spectrum: re, im and out must have the same shape")
        with nogil:
            for c in range(r2.shape[0]):
                power_spectrum_1d(&r2[c, 0], &i2[c, 0], &o2[c, 0], r2.shape[1])
    else:
        r1 = re
        i1 = im
        o1 = out
        if i1.shape[0] != r1.shape[0] or o1.shape[0] != r1.shape[0]:
            raise ValueError("power_spectrum: re, im and out must have the same shape")
        with nogil:
            power_spectrum_1d(&r1[0], &i1[0], &o1[0], r1.shape[0])


def log_mel(FilterBank fb not None, power, out, float floor=1e-10):
    """``out = log(max(fb.apply(power), floor))`` for power (n_bins,) -> out (n_bands,), or
    row by row for power (channels, n_bins) -> out (channels, n_bands)."""
    cdef const float[:, ::1] p2
    cdef float[:, ::1] o2
    cdef const float[::1] p1
    cdef float[::1] o1
    cdef Py_ssize_t c
    if not floor > 0:
        raise ValueError(f"log_mel floor must be > 0, got {floor}")
    if power.ndim == 2:
        p2 = power
        o2 = out
        if p2.shape[1] != fb.n_bins or o2.shape[1] != fb.n_bands or o2.shape[0] != p2.shape[0]:
            raise ValueError(f"log_mel needs power (channels, {fb.n_bins}) and out (channels, {fb.n_bands})")
        with nogil:
            for c in range(p2.shape[0]):
                fb._apply(&p2[c, 0], &o2[c, 0])
                log_floor_1d(&o2[c, 0], fb.n_bands, floor)
    else:
        p1 = power
        o1 = out
        if p1.shape[0] != fb.n_bins or o1.shape[0] != fb.n_bands:
            raise ValueError(f"log_mel needs power ({fb.n_bins},) and out ({fb.n_bands},)")
        with nogil:
            c_log_mel(fb, p1, o1, floor)

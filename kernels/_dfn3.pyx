# cython: language_level=3
"""DeepFilterNet3's per-frame signal processing (libDF's, see edge_runtime/dfn3.py): one
stream (channel) per object; every array made in the constructor, nothing allocated per frame.

Per 480-sample hop, from Python:  ``k = dsp.analyse(hop)``; when ``k`` is 1 the caller runs the
network on ``dsp.feat_erb`` / ``dsp.feat_spec`` and then calls ``dsp.synthesise(lsnr, mask,
coefs, out)``; when ``k`` is 0 the frame is skipped (libDF's silence rule) and ``out`` has been
zeroed. ``synthesise`` returns which stages ran (bit 0: the ERB decoder's, bit 1: the deep
filter's), so the caller can keep the state of a decoder that libDF would not have run.
"""
from libc.math cimport log10f, sqrtf
from libc.string cimport memcpy, memmove, memset

import numpy as np

from edge_runtime._spectral cimport RealFFT


cdef class Dfn3Dsp:
    cdef readonly Py_ssize_t fft_size, hop, n_freqs, nb_erb, nb_df, df_order, lookahead
    cdef readonly float alpha, min_db, max_db_erb, max_db_df, dry
    cdef readonly object feat_erb       # (1, 1, 1, nb_erb) float32: the network's ERB input
    cdef readonly object feat_spec      # (1, 2, 1, nb_df) float32: real, imaginary planes
    cdef readonly int skip_counter
    cdef RealFFT fft
    cdef float[::1] win                 # analysis = synthesis window (vorbis)
    cdef float[::1] ana_mem             # last fft_size - hop input samples
    cdef float[::1] syn_mem             # overlap-add memory (fft_size - hop)
    cdef float[::1] frame               # windowed frame / inverse output (fft_size)
    cdef float[:, ::1] spec_re          # (df_order, n_freqs) ring of noisy spectra, unscaled
    cdef float[:, ::1] spec_im
    cdef Py_ssize_t newest              # ring slot of frame t
    cdef float[::1] out_re              # (n_freqs) the enhanced spectrum of frame t - lookahead
    cdef float[::1] out_im
    cdef int[::1] band                  # ERB band of each bin
    cdef float[::1] inv_width           # 1 / bins of each band
    cdef float[::1] mean_state          # (nb_erb) ERB mean-normalization state (dB)
    cdef float[::1] unit_state          # (nb_df) complex unit-normalization state
    cdef float[:, :, :, ::1] erb_v
    cdef float[:, :, :, ::1] spec_v
    cdef float scale                    # libDF's analysis scale, 2 hop / fft_size**2
    cdef object _arrays

    def __cinit__(self, float[::1] window not None, int[::1] band not None, float alpha,
                  Py_ssize_t nb_erb, Py_ssize_t nb_df, Py_ssize_t df_order, Py_ssize_t lookahead,
                  Py_ssize_t hop, float min_db, float max_db_erb, float max_db_df, float dry=0.0):
        cdef Py_ssize_t n = window.shape[0], i
        if n < 4 or hop * 2 != n or band.shape[0] != n // 2 + 1 or nb_df > n // 2 + 1 or nb_df < 1:
            raise ValueError("Dfn3Dsp: window of 2*hop samples, one band per bin, 1 <= nb_df <= n_freqs")
        if df_order < 1 or lookahead < 0 or lookahead >= df_order or nb_erb < 1:
            raise ValueError("Dfn3Dsp: df_order >= 1, 0 <= lookahead < df_order, nb_erb >= 1")
        for i in range(band.shape[0]):
            if band[i] < 0 or band[i] >= nb_erb or (i and band[i] < band[i - 1]):
                raise ValueError("Dfn3Dsp: band indices must be non-decreasing in 0 .. nb_erb-1")
        self.fft_size, self.hop, self.n_freqs = n, hop, n // 2 + 1
        self.nb_erb, self.nb_df, self.df_order, self.lookahead = nb_erb, nb_df, df_order, lookahead
        self.alpha, self.min_db, self.max_db_erb, self.max_db_df = alpha, min_db, max_db_erb, max_db_df
        self.dry = dry
        self.fft = RealFFT(n)
        self.scale = <float>(2.0 * hop / (<double>n * n))
        w = np.array(window, np.float32)
        bd = np.array(band, np.int32)
        counts = np.bincount(bd, minlength=nb_erb).astype(np.float32)
        if np.any(counts == 0):
            raise ValueError("Dfn3Dsp: every ERB band needs at least one bin")
        inv = (1.0 / counts).astype(np.float32)
        arrays = dict(
            w=w, bd=bd, inv=inv,
            ana=np.zeros(n - hop, np.float32), syn=np.zeros(n - hop, np.float32), fr=np.zeros(n, np.float32),
            sre=np.zeros((df_order, n // 2 + 1), np.float32), sim=np.zeros((df_order, n // 2 + 1), np.float32),
            ore=np.zeros(n // 2 + 1, np.float32), oim=np.zeros(n // 2 + 1, np.float32),
            mean=np.zeros(nb_erb, np.float32), unit=np.zeros(nb_df, np.float32),
            ferb=np.zeros((1, 1, 1, nb_erb), np.float32), fspec=np.zeros((1, 2, 1, nb_df), np.float32))
        self._arrays = arrays
        self.win, self.band, self.inv_width = arrays["w"], arrays["bd"], arrays["inv"]
        self.ana_mem, self.syn_mem, self.frame = arrays["ana"], arrays["syn"], arrays["fr"]
        self.spec_re, self.spec_im = arrays["sre"], arrays["sim"]
        self.out_re, self.out_im = arrays["ore"], arrays["oim"]
        self.mean_state, self.unit_state = arrays["mean"], arrays["unit"]
        self.feat_erb, self.feat_spec = arrays["ferb"], arrays["fspec"]
        self.erb_v, self.spec_v = arrays["ferb"], arrays["fspec"]
        self.reset()

    def reset(self):
        """A fresh stream: zero buffers, libDF's initial normalization states."""
        cdef Py_ssize_t i
        self.ana_mem[:] = 0
        self.syn_mem[:] = 0
        self.spec_re[:, :] = 0
        self.spec_im[:, :] = 0
        self.newest = self.df_order - 1
        self.skip_counter = 0
        for i in range(self.nb_erb):  # MEAN_NORM_INIT -60 .. -90 dB
            self.mean_state[i] = <float>(-60.0 + i * (-30.0 / (self.nb_erb - 1))) if self.nb_erb > 1 else -60.0
        for i in range(self.nb_df):   # UNIT_NORM_INIT 0.001 .. 0.0001
            self.unit_state[i] = <float>(0.001 + i * (-0.0009 / (self.nb_df - 1))) if self.nb_df > 1 else 0.001

    cdef inline Py_ssize_t _slot(self, Py_ssize_t back) noexcept nogil:
        """Ring slot of frame t - back."""
        cdef Py_ssize_t s = self.newest - back
        while s < 0:
            s += self.df_order
        return s

    cdef int _analyse(self, const float* x, float* out) noexcept nogil:
        cdef Py_ssize_t n = self.fft_size, hop = self.hop, i, b, nf = self.n_freqs
        cdef float e = 0.0, a = self.alpha, re, im, p, s, sc = self.scale
        cdef float* fr = &self.frame[0]
        cdef float* w = &self.win[0]
        cdef float* mem = &self.ana_mem[0]
        cdef float* sre
        cdef float* sim
        for i in range(hop):
            e += x[i] * x[i]
        if e / hop < 1e-7:
            self.skip_counter += 1
        else:
            self.skip_counter = 0
        if self.skip_counter > 5:
            memset(out, 0, hop * sizeof(float))
            return 0
        # frame = [previous n - hop samples, this hop] * window
        for i in range(n - hop):
            fr[i] = mem[i] * w[i]
        for i in range(hop):
            fr[n - hop + i] = x[i] * w[n - hop + i]
        if n - hop > hop:
            memmove(mem, mem + hop, (n - 2 * hop) * sizeof(float))
        memcpy(mem + (n - hop) - hop, x, hop * sizeof(float))
        self.newest = (self.newest + 1) % self.df_order
        sre = &self.spec_re[self.newest, 0]
        sim = &self.spec_im[self.newest, 0]
        self.fft._forward(fr, sre, sim)
        # ERB features: band means of |X/960|^2 in dB, exponential mean norm, / 40
        for b in range(self.nb_erb):
            self.erb_v[0, 0, 0, b] = 0.0
        for i in range(nf):
            re = sre[i] * sc
            im = sim[i] * sc
            self.erb_v[0, 0, 0, self.band[i]] += (re * re + im * im) * self.inv_width[self.band[i]]
        for b in range(self.nb_erb):
            p = 10.0 * log10f(self.erb_v[0, 0, 0, b] + 1e-10)
            s = p * (1.0 - a) + self.mean_state[b] * a
            self.mean_state[b] = s
            self.erb_v[0, 0, 0, b] = (p - s) / 40.0
        # complex features: X/960 / sqrt(exponential mean of |X/960|)
        for i in range(self.nb_df):
            re = sre[i] * sc
            im = sim[i] * sc
            s = sqrtf(re * re + im * im) * (1.0 - a) + self.unit_state[i] * a
            self.unit_state[i] = s
            s = sqrtf(s)
            self.spec_v[0, 0, 0, i] = re / s
            self.spec_v[0, 1, 0, i] = im / s
        return 1

    def analyse(self, const float[::1] x not None, float[::1] out not None):
        """Take one hop of input; 1: features ready (run the network, then ``synthesise``),
        0: a skipped frame (``out`` zeroed)."""
        if x.shape[0] != self.hop or out.shape[0] != self.hop:
            raise ValueError(f"Dfn3Dsp.analyse needs {self.hop}-sample input and output")
        cdef int r
        with nogil:
            r = self._analyse(&x[0], &out[0])
        return r

    cdef int _synthesise(self, float lsnr, const float* mask, const float* coefs, float* out) noexcept nogil:
        cdef Py_ssize_t n = self.fft_size, hop = self.hop, nf = self.n_freqs, i, k, slot
        cdef Py_ssize_t t2 = self._slot(self.lookahead)
        cdef float* ore = &self.out_re[0]
        cdef float* oim = &self.out_im[0]
        cdef const float* xre = &self.spec_re[t2, 0]
        cdef const float* xim = &self.spec_im[t2, 0]
        cdef float g, cr, ci, sr, si, ar, ai, d = self.dry, wgt = 1.0 - self.dry
        cdef float* fr = &self.frame[0]
        cdef float* w = &self.win[0]
        cdef float* mem = &self.syn_mem[0]
        cdef int stages = 0
        cdef bint gains = 0, zeros = 0, deep = 0
        if lsnr < self.min_db:
            zeros = 1
        elif lsnr > self.max_db_erb:
            pass
        elif lsnr > self.max_db_df:
            gains = 1
        else:
            gains = 1
            deep = 1
        for i in range(nf):
            if zeros:
                ore[i] = 0.0
                oim[i] = 0.0
            elif gains:
                g = mask[self.band[i]]
                ore[i] = xre[i] * g
                oim[i] = xim[i] * g
            else:
                ore[i] = xre[i]
                oim[i] = xim[i]
        if deep:
            # bins < nb_df: sum over frames t-4 .. t of noisy X * c (coefs [nb_df, df_order, 2])
            for i in range(self.nb_df):
                ar = 0.0
                ai = 0.0
                for k in range(self.df_order):
                    slot = self._slot(self.df_order - 1 - k)
                    sr = self.spec_re[slot, i]
                    si = self.spec_im[slot, i]
                    cr = coefs[(i * self.df_order + k) * 2]
                    ci = coefs[(i * self.df_order + k) * 2 + 1]
                    ar += sr * cr - si * ci
                    ai += sr * ci + si * cr
                ore[i] = ar
                oim[i] = ai
        if gains:
            stages |= 1
        # libDF: a frame that got a mask (the model's or zeros) restarts its silence count; a
        # frame passed unchanged (local SNR above max_db_erb) adds to it
        if gains or zeros:
            self.skip_counter = 0
        else:
            self.skip_counter += 1
        if deep:
            stages |= 2
        if d > 0.0:
            for i in range(nf):
                ore[i] = ore[i] * wgt + xre[i] * d
                oim[i] = oim[i] * wgt + xim[i] * d
        # inverse (unscaled as libDF's: our irfft's 1/n undoes the missing 1/n of the analysis
        # scale we kept out of the spectrum), window, overlap-add
        self.fft._inverse(ore, oim, fr)
        for i in range(n):
            fr[i] = fr[i] * w[i]
        for i in range(hop):
            out[i] = fr[i] + mem[i]
        if n - hop > hop:
            for i in range(n - 2 * hop):
                mem[i] = mem[i + hop] + fr[hop + i]
        for i in range(n - 2 * hop if n - hop > hop else 0, n - hop):
            mem[i] = fr[hop + i]
        return stages

    def synthesise(self, float lsnr, const float[::1] mask not None, const float[::1] coefs not None,
                   float[::1] out not None):
        """Apply the network's ``mask`` (nb_erb) and ``coefs`` (nb_df * df_order * 2) to frame
        t - lookahead as libDF's stages say for ``lsnr``; write ``hop`` samples to ``out``.
        Returns the stages run: bit 0 the ERB mask, bit 1 the deep filter."""
        if mask.shape[0] != self.nb_erb or coefs.shape[0] != self.nb_df * self.df_order * 2 \
                or out.shape[0] != self.hop:
            raise ValueError("Dfn3Dsp.synthesise: mask (nb_erb), coefs (nb_df*df_order*2), out (hop)")
        cdef int r
        with nogil:
            r = self._synthesise(lsnr, &mask[0], &coefs[0], &out[0])
        return r

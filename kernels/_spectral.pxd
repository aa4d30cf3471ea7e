# Spectral kernels: real FFT, streaming STFT analysis/synthesis, sparse filterbanks.
# Typed memoryviews, nogil, nothing allocated per call. Friendly argument checking lives in
# edge_runtime.spectral; the constructors here only refuse what would be memory-unsafe.

cdef void power_spectrum_1d(const float* re, const float* im, float* out, Py_ssize_t n) noexcept nogil
cdef void log_floor_1d(float* x, Py_ssize_t n, float floor) noexcept nogil


cdef class RealFFT:
    """Real FFT of size ``n``: ``n//2 + 1`` bins, numpy.fft.rfft / irfft conventions."""
    cdef readonly Py_ssize_t n
    cdef readonly Py_ssize_t n_bins
    cdef readonly str route          # "fft" or "dft"
    cdef bint use_dft
    cdef readonly Py_ssize_t radix2_stages
    cdef readonly Py_ssize_t leaf_size  # odd leaf DFT size q of the "fft" route (m = 2**stages * q)
    cdef Py_ssize_t m                # n // 2 (complex FFT size of the "fft" route)
    # "fft" route tables
    cdef int[::1] perm               # leaf input order: position p*q + j <- z[bitrev(p) + j * 2**stages]
    cdef readonly Py_ssize_t leaf_factor  # r > 1: the leaf runs as r s-point DFTs, twiddles and s r-point DFTs (q = r*s)
    cdef float[::1] leaf_cos         # (s*s) cos(2 pi jk/s), s = q / leaf_factor (s = q unfactored)
    cdef float[::1] leaf_sin         # (s*s) sin(2 pi jk/s)
    cdef float[::1] leaf2_cos        # (r*r) cos(2 pi jk/r) of a factored leaf
    cdef float[::1] leaf2_sin
    cdef float[::1] leaf_tw_cos      # (r*s) cos(2 pi j1 k2/q) of a factored leaf, index j1*s + k2
    cdef float[::1] leaf_tw_sin
    cdef float[::1] leaf_buf         # (6*q + 4) gathered leaf input, the factored leaf's middle, scratch
    cdef float[::1] tw_cos           # per-stage contiguous twiddles, m entries in all
    cdef float[::1] tw_sin
    cdef float[::1] post_cos         # cos(2 pi k/n), k = 0..m
    cdef float[::1] post_sin
    cdef float[::1] ar               # complex work buffers (m)
    cdef float[::1] ai
    cdef float[::1] br
    cdef float[::1] bi
    # "dft" route tables: (n_bins, n_bins) cos/sin(2 pi jk/n), folded by real-input symmetry
    cdef float[:, ::1] dft_cos
    cdef float[:, ::1] dft_sin
    cdef float[::1] fold_a
    cdef float[::1] fold_b
    cdef object _arrays

    cdef void _cfft(self, const float* inr, const float* ini, Py_ssize_t stride, float isign) noexcept nogil
    cdef void _forward(self, const float* x, float* re, float* im) noexcept nogil
    cdef void _inverse(self, const float* re, const float* im, float* out) noexcept nogil
    cdef void c_forward(self, const float[::1] x, float[::1] re, float[::1] im) noexcept nogil
    cdef void c_inverse(self, const float[::1] re, const float[::1] im, float[::1] out) noexcept nogil


cdef class StftAnalyzer:
    cdef readonly Py_ssize_t frame_size
    cdef readonly Py_ssize_t hop
    cdef readonly Py_ssize_t channels
    cdef readonly Py_ssize_t n_bins
    cdef readonly str window_name
    cdef readonly RealFFT fft
    cdef readonly object re          # (channels, n_bins) float32, the latest frame's spectrum
    cdef readonly object im
    cdef readonly object window      # analysis window (frame_size,) float32
    cdef readonly long long frames   # frames analysed since construction / reset
    cdef float[:, ::1] re_v
    cdef float[:, ::1] im_v
    cdef float[:, ::1] hist          # (channels, frame_size) newest samples at the end
    cdef float[::1] win
    cdef float[::1] buf
    cdef object _arrays

    cdef void c_push(self, const float[:, ::1] block) noexcept nogil


cdef class StftSynthesizer:
    cdef readonly Py_ssize_t frame_size
    cdef readonly Py_ssize_t hop
    cdef readonly Py_ssize_t channels
    cdef readonly Py_ssize_t n_bins
    cdef readonly Py_ssize_t latency_samples
    cdef readonly str window_name
    cdef readonly RealFFT fft
    cdef readonly object window      # synthesis window incl. overlap-add normalization, float32
    cdef float[:, ::1] acc           # (channels, frame_size) overlap-add accumulator
    cdef float[::1] win
    cdef float[::1] buf
    cdef object _arrays

    cdef void c_pull(self, const float[:, ::1] re, const float[:, ::1] im, float[:, ::1] out) noexcept nogil


cdef class FilterBank:
    cdef readonly Py_ssize_t n_bands
    cdef readonly Py_ssize_t n_bins
    cdef int[::1] start              # first bin of each band
    cdef int[::1] length             # bins in each band
    cdef int[::1] offset             # offset of each band's weights in ``w``
    cdef float[::1] w                # nonzero span of each band's weights, concatenated
    cdef float[::1] inv_cover        # 1 / sum of band weights per bin (0 where no band covers it)
    cdef int[::1] nearest_band       # band whose gain an uncovered bin takes
    cdef object _arrays

    cdef void c_apply(self, const float[::1] power, float[::1] out) noexcept nogil
    cdef void c_expand(self, const float[::1] gains, float[::1] out) noexcept nogil
    cdef void _apply(self, const float* power, float* out) noexcept nogil
    cdef void _expand(self, const float* gains, float* out) noexcept nogil


cdef void c_log_mel(FilterBank fb, const float[::1] power, float[::1] out, float floor) noexcept nogil

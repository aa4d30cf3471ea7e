# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Subtractive synthesizer voice, one note per call (the ``synth`` chain of edge_runtime.optimize).

Signal flow per sample::

    saw (2 voices, +-detune/2 cents, polyBLEP) * w_saw
  + square (2 voices, +-detune/2 cents, polyBLEP) * w_square
  + sine * w_sine + white noise (xorshift64*) * w_noise
    -> resonant low-pass (TPT state-variable filter, Zavalishin), cutoff * 2**(env_amount * env)
    -> * env * gain

``env`` is a linear ADSR: attack to 1 in ``attack_s``, decay to ``sustain`` in ``decay_s``, hold,
and from the gate-off sample (``gate`` x the length) a linear release from the level reached to 0
in ``release_s``. The mix weights are used as given (the Python wrapper normalises them).

The parameter vector ``p`` (float64) is, in order: ``note`` (MIDI, fractional allowed), ``w_saw``,
``w_square``, ``w_sine``, ``w_noise``, ``detune_cents``, ``attack_s``, ``decay_s``, ``sustain``,
``release_s``, ``gate`` (0..1 of the length), ``cutoff_hz``, ``resonance`` (the filter's Q),
``env_amount`` (octaves), ``gain`` (linear). Nothing is validated here and nothing allocated; the
wrapper (:mod:`edge_runtime.optimize.synth`) checks lengths and values.
"""
from libc.math cimport pow, tan, sin, floor, M_PI

N_PARAMS = 15


cdef inline double _blep(double t, double dt) noexcept nogil:
    """PolyBLEP residual of a unit step at phase 0 (t in [0, 1), dt = increment per sample)."""
    if t < dt:
        t = t / dt
        return t + t - t * t - 1.0
    elif t > 1.0 - dt:
        t = (t - 1.0) / dt
        return t * t + t + t + 1.0
    return 0.0


cdef inline double _saw(double ph, double dt) noexcept nogil:
    return 2.0 * ph - 1.0 - _blep(ph, dt)


cdef inline double _square(double ph, double dt) noexcept nogil:
    cdef double v = 1.0 if ph < 0.5 else -1.0
    cdef double ph2 = ph + 0.5
    if ph2 >= 1.0:
        ph2 -= 1.0
    return v + _blep(ph, dt) - _blep(ph2, dt)


cdef void _render(const double* p, float* out, Py_ssize_t n, unsigned long long seed,
                  double fs) noexcept nogil:
    cdef double f0 = 440.0 * pow(2.0, (p[0] - 69.0) / 12.0)
    cdef double w_saw = p[1], w_sq = p[2], w_sin = p[3], w_noise = p[4]
    cdef double det = pow(2.0, p[5] / 2400.0)
    cdef double dt_lo = f0 / det / fs, dt_hi = f0 * det / fs, dt0 = f0 / fs
    cdef double attack = p[6] * fs, decay = p[7] * fs, sustain = p[8], release = p[9] * fs
    cdef Py_ssize_t gate_off = <Py_ssize_t>(p[10] * n)
    cdef double cutoff = p[11], k = 1.0 / p[12], env_amt = p[13], gain = p[14]
    cdef double fc_max = 0.45 * fs
    cdef double ph_lo = 0.0, ph_hi = 0.0, ph0 = 0.0
    cdef double env = 0.0, rel_start = 0.0, rel_step = 0.0
    cdef double ic1 = 0.0, ic2 = 0.0, v0, v1, v2, v3, g, a1, a2, a3, fc, x
    cdef unsigned long long s = seed if seed != 0 else 0x9E3779B97F4A7C15ULL
    cdef Py_ssize_t i
    if attack < 1.0:
        attack = 1.0
    if decay < 1.0:
        decay = 1.0
    if release < 1.0:
        release = 1.0
    for i in range(n):
        # envelope (the level reached at gate-off is where the release starts)
        if i < gate_off:
            if i < attack:
                env = (i + 1) / attack
            elif i < attack + decay:
                env = 1.0 - (1.0 - sustain) * (i + 1 - attack) / decay
            else:
                env = sustain
            rel_start = env
        else:
            if i == gate_off:
                rel_step = rel_start / release
            env = env - rel_step
            if env < 0.0:
                env = 0.0
        # oscillators
        x = 0.0
        if w_saw != 0.0:
            x += 0.5 * w_saw * (_saw(ph_lo, dt_lo) + _saw(ph_hi, dt_hi))
        if w_sq != 0.0:
            x += 0.5 * w_sq * (_square(ph_lo, dt_lo) + _square(ph_hi, dt_hi))
        if w_sin != 0.0:
            x += w_sin * sin(2.0 * M_PI * ph0)
        # xorshift64*, top 53 bits -> [-1, 1)
        s ^= s >> 12
        s ^= s << 25
        s ^= s >> 27
        if w_noise != 0.0:
            x += w_noise * ((<double>((s * 2685821657736338717ULL) >> 11) * (1.0 / 9007199254740992.0)) * 2.0 - 1.0)
        ph_lo += dt_lo
        ph_lo -= floor(ph_lo)
        ph_hi += dt_hi
        ph_hi -= floor(ph_hi)
        ph0 += dt0
        ph0 -= floor(ph0)
        # TPT state-variable low-pass at the envelope-modulated cutoff
        fc = cutoff * pow(2.0, env_amt * env)
        if fc > fc_max:
            fc = fc_max
        elif fc < 10.0:
            fc = 10.0
        g = tan(M_PI * fc / fs)
        a1 = 1.0 / (1.0 + g * (g + k))
        a2 = g * a1
        a3 = g * a2
        v0 = x
        v3 = v0 - ic2
        v1 = a1 * ic1 + a2 * v3
        v2 = ic2 + a2 * ic1 + a3 * v3
        ic1 = 2.0 * v1 - ic1
        ic2 = 2.0 * v2 - ic2
        out[i] = <float>(v2 * env * gain)


def render(const double[::1] p, float[::1] out, unsigned long long seed, double sample_rate):
    """Render one note of ``out.shape[0]`` samples at ``sample_rate`` into ``out`` (see the module
    doc for ``p``); ``seed`` seeds the noise generator (same seed, same samples)."""
    with nogil:
        _render(&p[0], &out[0], out.shape[0], seed, sample_rate)

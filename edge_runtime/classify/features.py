"""The classifier's log-mel front end, shared by the ``classify`` node, the data builder and
the evaluation, so training features and run-time features come from the same kernels.

16 kHz audio, 32 ms Hann frames (512-point FFT) every 10 ms, 40 Slaney mel bands 50-8000 Hz,
natural log of the band power (floor 1e-10). One classifier window is 96 frames (0.96 s of
frames, 0.99 s of audio); the node slides it every ``hop_ms``.
"""
from __future__ import annotations

import numpy as np

from ..spectral import filter_bank, mel_filterbank, stft_analyzer

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 160
N_MELS = 40
FMIN_HZ = 50.0
FMAX_HZ = 8000.0
N_FRAMES = 96
LOG_FLOOR = 1e-10
# audio a window's first frame needs before it: a clip of CLIP_SAMPLES gives one full window
PREROLL = 3 * HOP
CLIP_SAMPLES = PREROLL + N_FRAMES * HOP


class LogMelFrontEnd:
    """Streaming log-mel: ``push((channels, HOP) float32)`` writes one frame into :attr:`mel`
    ``(channels, N_MELS)``. Everything is allocated here; ``push`` allocates nothing."""

    def __init__(self, channels: int = 1):
        self.channels = int(channels)
        self.ana = stft_analyzer(N_FFT, HOP, "hann", self.channels)
        self.fb = filter_bank(mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS, FMIN_HZ, FMAX_HZ))
        self.power = np.zeros((self.channels, N_FFT // 2 + 1), np.float32)
        self.mel = np.zeros((self.channels, N_MELS), np.float32)

    def push(self, hop_block: np.ndarray) -> np.ndarray:
        self.ana.push_log_mel(hop_block, self.fb, self.power, self.mel, LOG_FLOOR)
        return self.mel

    def reset(self) -> None:
        self.ana.reset()
        self.mel[...] = np.float32(np.log(LOG_FLOOR))


def logmel_frames(audio: np.ndarray) -> np.ndarray:
    """Log-mel frames of whole clips ``(batch, samples)`` -> ``(batch, samples // HOP, N_MELS)``,
    computed by the streaming kernels exactly as the node computes them (history starts at zero)."""
    x = np.ascontiguousarray(np.atleast_2d(audio), dtype=np.float32)
    b, n = x.shape
    fe = LogMelFrontEnd(b)
    t = n // HOP
    out = np.empty((b, t, N_MELS), np.float32)
    hop = np.empty((b, HOP), np.float32)
    for k in range(t):
        np.copyto(hop, x[:, k * HOP:(k + 1) * HOP])
        out[:, k] = fe.push(hop)
    return out


def logmel_windows(clips: np.ndarray) -> np.ndarray:
    """The last classifier window ``(batch, N_FRAMES, N_MELS)`` of each clip ``(batch, >= CLIP_SAMPLES)``."""
    f = logmel_frames(clips)
    if f.shape[1] < N_FRAMES:
        raise ValueError(f"clips of {np.shape(clips)[-1]} samples give {f.shape[1]} frames; "
                         f"a window needs {N_FRAMES} ({CLIP_SAMPLES} samples)")
    return np.ascontiguousarray(f[:, -N_FRAMES:])

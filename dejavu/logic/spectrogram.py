"""Spectrogram: float32 mono samples → log-magnitude short-time spectrum (dBFS)."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import fft as sfft

_EPS = 1e-10  # floor of the magnitude, so digital silence is -200 dBFS rather than -inf


@lru_cache(maxsize=8)
def _window(window_size: int) -> np.ndarray:
    # Periodic Hann, scaled so a full-scale sine on a bin centre reads 0 dBFS.
    w = np.hanning(window_size + 1)[:-1].astype(np.float32)
    return w * np.float32(2.0 / w.sum())


def n_frames(n_samples: int, window_size: int, hop_size: int) -> int:
    """Number of frames :func:`spectrogram` makes from ``n_samples`` samples."""
    return 1 + max(0, n_samples - window_size) // hop_size


def spectrogram(samples: np.ndarray, window_size: int, hop_size: int,
                bin_range: tuple[int, int] | None = None) -> np.ndarray:
    """Log-magnitude STFT.

    Parameters
    ----------
    samples : np.ndarray [shape=(n,)], float, full scale ±1
    window_size : FFT length in samples (Hann window)
    hop_size : samples between frame starts; frame t covers samples [t·hop, t·hop + window)
    bin_range : (lo, hi) keep FFT bins lo ≤ k < hi only (default: all ``window_size//2 + 1``)

    Returns
    -------
    np.ndarray [shape=(n_frames, hi - lo)], float32, 20·log10 |X| in dBFS.
    Input shorter than one window is zero-padded to one frame.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"samples must be 1-D, got shape {x.shape}")
    if x.size < window_size:
        x = np.pad(x, (0, window_size - x.size))
    lo, hi = bin_range if bin_range else (0, window_size // 2 + 1)
    frames = np.lib.stride_tricks.sliding_window_view(x, window_size)[::hop_size]
    out = np.empty((frames.shape[0], hi - lo), dtype=np.float32)
    step = 4096  # frames per FFT batch: bounds the complex temporary
    for start in range(0, frames.shape[0], step):
        spec = sfft.rfft(frames[start:start + step] * _window(window_size), axis=1)[:, lo:hi]
        power = np.square(spec.real)
        power += np.square(spec.imag)
        np.maximum(power, np.float32(_EPS * _EPS), out=power)
        np.log10(power, out=power)
        np.multiply(power, np.float32(10.0), out=out[start:start + step])
    return out

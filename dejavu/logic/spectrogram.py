"""Spectrogram: float32 mono samples → short-time power spectrum, or its level in dBFS."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft

#: Floor of the power, so digital silence reads -200 dBFS rather than -inf.
POWER_FLOOR = np.float32(1e-20)
_BATCH = 256  # frames per FFT call: the frames and their spectra stay in cache


@lru_cache(maxsize=8)
def _window(window_size: int) -> np.ndarray:
    # Periodic Hann, scaled so a full-scale sine on a bin centre reads 0 dBFS.
    w = np.hanning(window_size + 1)[:-1].astype(np.float32)
    return w * np.float32(2.0 / w.sum())


def n_frames(n_samples: int, window_size: int, hop_size: int) -> int:
    """Number of frames :func:`spectrogram` makes from ``n_samples`` samples."""
    return 1 + max(0, n_samples - window_size) // hop_size


def to_db(power: npt.ArrayLike) -> np.ndarray:
    """Power → level in dB, float32: 10·log10(max(power, POWER_FLOOR))."""
    return np.multiply(np.log10(np.maximum(power, POWER_FLOOR, dtype=np.float32)), np.float32(10.0))


def power_spectrogram(samples: np.ndarray, window_size: int, hop_size: int,
                      bin_range: tuple[int, int] | None = None) -> np.ndarray:
    """Squared magnitude of the Hann-windowed STFT.

    Parameters
    ----------
    samples : np.ndarray [shape=(n,)], float, full scale ±1
    window_size : FFT length in samples (Hann window)
    hop_size : samples between frame starts; frame t covers samples [t·hop, t·hop + window)
    bin_range : (lo, hi) keep FFT bins lo ≤ k < hi only (default: all ``window_size//2 + 1``)

    Returns
    -------
    np.ndarray [shape=(n_frames, hi - lo)], float32, |X|² (a full-scale sine on a bin centre
    gives 1.0).  Input shorter than one window is zero-padded to one frame.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"samples must be 1-D, got shape {x.shape}")
    if x.size < window_size:
        x = np.pad(x, (0, window_size - x.size))
    lo, hi = bin_range if bin_range else (0, window_size // 2 + 1)
    frames = np.lib.stride_tricks.sliding_window_view(x, window_size)[::hop_size]
    window = _window(window_size)
    out = np.empty((frames.shape[0], hi - lo), dtype=np.float32)
    windowed = np.empty((min(_BATCH, frames.shape[0]), window_size), dtype=np.float32)
    for start in range(0, frames.shape[0], _BATCH):
        rows = out[start:start + _BATCH]
        batch = windowed[:rows.shape[0]]
        np.multiply(frames[start:start + _BATCH], window, out=batch)
        # (re, im) pairs of the kept bins as float32 columns: square them, then add each pair
        parts = sfft.rfft(batch, axis=1).view(np.float32)[:, 2 * lo:2 * hi]
        np.square(parts, out=parts)
        np.add(parts[:, 0::2], parts[:, 1::2], out=rows)
    return out


def spectrogram(samples: np.ndarray, window_size: int, hop_size: int,
                bin_range: tuple[int, int] | None = None) -> np.ndarray:
    """Log-magnitude STFT: :func:`power_spectrogram` in dBFS, shape (n_frames, hi - lo), float32."""
    return to_db(power_spectrogram(samples, window_size, hop_size, bin_range))

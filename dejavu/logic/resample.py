"""Resample: float32 mono samples in memory → another sample rate (or playback speed).

:func:`resample` converts a whole array (queries, tests), :class:`StreamResampler` a
stream block by block (the microphone while monitoring), :func:`stretch` undoes a
playback-speed change.  Non-finite samples (corrupt float input) are cleaned by
:func:`finite` first.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

#: Longest input (samples, ~3 min at 44.1 kHz) resampled with one FFT.
_FOURIER_MAX = 2 ** 23


def finite(samples: np.ndarray) -> np.ndarray:
    """Float input can hold NaN or ±Inf samples (corrupt data): those become 0 / ±1
    (in a copy), instead of spoiling every spectrogram frame they touch."""
    if np.isfinite(samples).all():
        return samples
    return np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample float samples, shape (n,) at ``from_rate`` Hz → shape (m,) at ``to_rate`` Hz
    (NaN/±Inf samples read as 0/±1)."""
    samples = finite(np.asarray(samples, dtype=np.float32))
    if from_rate == to_rate:
        return samples
    return _resample_ratio(samples, Fraction(int(to_rate), int(from_rate)))


def stretch(samples: np.ndarray, factor: float) -> np.ndarray:
    """Undo a playback-speed change: audio played ``factor`` times too fast, shape (n,),
    becomes shape (≈ n·factor,) with pitch and tempo restored (at the same rate)."""
    return _resample_ratio(np.asarray(samples, dtype=np.float32), Fraction(factor).limit_denominator(100))


def _resample_ratio(x: np.ndarray, ratio: Fraction) -> np.ndarray:
    """Band-limited resampling of float32 shape (n,) to shape (≈ n·ratio,).

    Queries (up to ``_FOURIER_MAX`` samples) use the Fourier method: one FFT, the
    spectrum cut or zero-padded, one inverse FFT; numpy only, so a query does not pay
    the ~1 s import of scipy.signal.  Longer inputs use scipy's polyphase filter, whose
    memory does not grow with an FFT of the whole signal.
    """
    if x.size > _FOURIER_MAX:
        from scipy.signal import resample_poly

        return resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)
    m = int(round(x.size * ratio))
    if x.size == 0 or m == 0:
        return np.zeros(m, dtype=np.float32)
    # Zero-pad to q·s samples (s 5-smooth), so both transforms (q·s and p·s points) are fast.
    q = ratio.denominator
    padded = q * _smooth(-(-x.size // q))
    spectrum = np.fft.rfft(x, padded)
    out_size = padded // q * ratio.numerator
    kept = np.zeros(out_size // 2 + 1, dtype=spectrum.dtype)
    n = min(kept.size, spectrum.size)
    kept[:n] = spectrum[:n]
    return (np.fft.irfft(kept, out_size)[:m] * float(ratio)).astype(np.float32)


def _smooth(n: int) -> int:
    """The smallest integer ≥ n whose only prime factors are 2, 3 and 5."""
    while True:
        k = n
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return n
        n += 1


class StreamResampler:
    """Rational resampling of a stream block by block, equal (to float rounding) to
    resampling the whole signal with ``scipy.signal.resample_poly``."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        ratio = Fraction(int(to_rate), int(from_rate))
        self.up, self.down = ratio.numerator, ratio.denominator
        # Input samples the anti-alias filter reaches on each side, rounded up to whole `down`s.
        reach = 10 * max(self.up, self.down) // self.up + 2
        self.pad = -(-reach // self.down) * self.down
        self._buf = np.zeros(self.pad, dtype=np.float32)   # starts with the zeros before t = 0
        self._buf_start = -self.pad                          # input index of _buf[0]
        self._done = 0                                       # input samples already output
        self._total = 0

    def _run(self, stop: int) -> np.ndarray:
        from scipy.signal import resample_poly

        a = self._done - self.pad - self._buf_start
        seg = self._buf[a:stop + self.pad - self._buf_start]
        y = resample_poly(seg, self.up, self.down)
        first = self.pad * self.up // self.down
        out = y[first:first + (stop - self._done) * self.up // self.down].astype(np.float32)
        self._done = stop
        drop = self._done - self.pad - self._buf_start
        self._buf, self._buf_start = self._buf[drop:], self._buf_start + drop
        return out

    def feed(self, block: np.ndarray) -> np.ndarray:
        """Add input samples; return the output samples now final."""
        if self.up == self.down:
            return np.asarray(block, dtype=np.float32)
        self._buf = np.concatenate([self._buf, np.asarray(block, dtype=np.float32)])
        self._total += len(block)
        stop = (self._total - self.pad) // self.down * self.down
        return self._run(stop) if stop > self._done else np.zeros(0, dtype=np.float32)

    def flush(self) -> np.ndarray:
        """End of input: the remaining output samples."""
        if self.up == self.down or self._total <= self._done:
            return np.zeros(0, dtype=np.float32)
        stop = -(-self._total // self.down) * self.down
        self._buf = np.concatenate([self._buf, np.zeros(stop + self.pad - self._buf_start - self._buf.size,
                                                        dtype=np.float32)])
        excess = stop * self.up // self.down - -(-self._total * self.up // self.down)
        out = self._run(stop)
        return out[:out.size - excess]

"""Peaks: power spectrogram → the strongest local maxima (time-frequency landmarks).

A cell is a peak when its level is the maximum of its ``(2·nt+1) × (2·nf+1)``
neighbourhood and louder than ``amp_min`` dB.  A density cap then keeps the ``per_block``
loudest peaks of every block of ``block`` frames, counted from frame 0, so the same audio
gives the same peaks whether it is processed whole or in pieces.

Levels are :func:`~dejavu.logic.spectrogram.to_db` of the power, but only candidates get
converted: because float32 10·log10 is non-decreasing (numpy's is; checked for every float32
from 1e-21 to 1e5), the neighbourhood maximum of the levels is the level of the neighbourhood
maximum of the power, so the maximum filter runs on the power, and a cell can only tie its
maximum's level if its power is within a relative ``2**-10`` of it (equal float32 levels
span less than 1e-5).  For those few cells the levels are compared exactly, so the result
equals the filter applied to the dB spectrogram.
"""
from __future__ import annotations

import numpy as np

from dejavu.logic.spectrogram import POWER_FLOOR, to_db

_TILE = 128                         # frames filtered at a time: the work arrays stay in cache
_NEAR = np.float32(1.0 - 2.0**-10)  # cells of power ≥ _NEAR × the maximum may tie its level


def _doubling_steps(size: int) -> list[int]:
    """Shifts that grow a running maximum from 1 to ``size`` cells, doubling each time."""
    steps, width = [], 1
    while width < size:
        steps.append(min(width, size - width))
        width += steps[-1]
    return steps


class _LocalMax:
    """Centred 2-D running maximum of row ranges of an array with ``cols`` columns.

    Rows are copied into a buffer with ``nf`` columns of -inf on each side, so a running
    maximum along the flattened buffer never mixes rows: a shift of 1 moves along
    frequency, a shift of one buffer row along time.  Doubling: after each
    ``np.maximum(x[:-shift], x[shift:])`` pass a cell holds the maximum of twice as many
    cells, so ±nt × ±nf costs about log2(2·nt+1) + log2(2·nf+1) contiguous passes.
    """

    def __init__(self, rows: int, cols: int, nt: int, nf: int) -> None:
        self.nt, self.nf, self.cols, self.width = nt, nf, cols, cols + 2 * nf
        self._input = np.full((rows + 2 * nt + 1, self.width), -np.inf, dtype=np.float32)
        self._work = np.empty((2, self._input.size), dtype=np.float32)
        self._shifts = [s * self.width for s in _doubling_steps(2 * nt + 1)] + _doubling_steps(2 * nf + 1)

    def __call__(self, a: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Neighbourhood maxima of rows start..stop of ``a`` [shape=(n, cols)], -inf beyond its edges.

        Returns ``(peak, value)``, two [shape=(stop - start, cols + 2·nf)] views valid until
        the next call: for j < cols, ``peak[i, j]`` is the maximum around ``a[start + i, j]``
        and ``value[i, j]`` is ``a[start + i, j]``; the other columns of ``value`` are -inf.
        """
        nt, nf, width = self.nt, self.nf, self.width
        rows, lo, hi = stop - start, max(0, start - nt), min(a.shape[0], stop + nt)
        data = self._input[:, nf:nf + self.cols]
        top = lo - start + nt                        # buffer row of a[lo]
        data[:top] = -np.inf
        data[top:top + hi - lo] = a[lo:hi]
        data[top + hi - lo:rows + 2 * nt] = -np.inf
        flat = self._input.reshape(-1)
        full, src = flat, flat[:(rows + 2 * nt) * width]
        for k, shift in enumerate(self._shifts):
            full = self._work[k % 2]
            dst = full[:src.size - shift]
            np.maximum(src[:dst.size], src[shift:], out=dst)
            src = dst
        origin = nt * width + nf
        return (full[:rows * width].reshape(rows, width),
                flat[origin:origin + rows * width].reshape(rows, width))


def find_peaks(power: np.ndarray, neighborhood_time: int, neighborhood_freq: int,
               amp_min: float, block: int, per_block: int,
               frame_offset: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima of a power spectrogram.

    Parameters
    ----------
    power : np.ndarray [shape=(n_frames, n_bins)], float32 ≥ 0
        (:func:`~dejavu.logic.spectrogram.power_spectrogram`)
    neighborhood_time, neighborhood_freq : half-sizes of the max-filter neighbourhood (frames, bins)
    amp_min : minimum level of a peak, dB
    block, per_block : density cap, at most ``per_block`` peaks per ``block`` frames
    frame_offset : absolute index of ``power``'s first frame (aligns the density blocks)

    Returns
    -------
    frames : np.ndarray [shape=(p,)], int32, absolute frame index (sorted ascending)
    bins : np.ndarray [shape=(p,)], int32, column of ``power``
    levels : np.ndarray [shape=(p,)], float32, dB
    """
    n, m = power.shape
    if power.size == 0:
        empty = np.zeros(0, dtype=np.int32)
        return empty, empty, np.zeros(0, dtype=np.float32)
    nt = neighborhood_time
    if amp_min < to_db(POWER_FLOOR):  # the floor's level counts: floor the power too
        power = np.maximum(power, POWER_FLOOR)
    with np.errstate(over="ignore"):
        # at or below this power the level cannot exceed amp_min (the margin covers rounding)
        quiet = np.float32(np.float64(10.0) ** (amp_min / 10.0)) * _NEAR
    filt = _LocalMax(min(n, _TILE), m, nt, neighborhood_freq)
    near = np.empty(min(n, _TILE) * filt.width, dtype=np.float32)
    parts_t, parts_f, parts_level = [], [], []
    for start in range(0, n, _TILE):
        peak, value = (x.reshape(-1) for x in filt(power, start, min(n, start + _TILE)))
        idx = np.flatnonzero(value >= np.multiply(peak, _NEAR, out=near[:peak.size]))
        values = value[idx]
        loud = values > quiet                      # also drops the -inf padding columns
        idx, values = idx[loud], values[loud]
        levels = to_db(values)
        exact = (levels == to_db(peak[idx])) & (levels > amp_min)
        t, f = np.divmod(idx[exact], filt.width)
        parts_t.append(t + start)
        parts_f.append(f)
        parts_level.append(levels[exact])
    t, f, levels = np.concatenate(parts_t), np.concatenate(parts_f), np.concatenate(parts_level)
    t = t + frame_offset
    # Density cap: rank peaks by level inside each block, keep the loudest.
    block_id = t // block
    order = np.lexsort((-levels, block_id))
    block_sorted = block_id[order]
    starts = np.r_[0, np.flatnonzero(np.diff(block_sorted)) + 1]
    rank = np.arange(order.size) - np.repeat(starts, np.diff(np.r_[starts, order.size]))
    keep = np.sort(order[rank < per_block])  # row-major order = sorted by frame
    return t[keep].astype(np.int32), f[keep].astype(np.int32), levels[keep]

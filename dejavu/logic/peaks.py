"""Peaks: log spectrogram → the strongest local maxima (time-frequency landmarks).

A cell is a peak when it is the maximum of its ``(2·nt+1) × (2·nf+1)`` neighbourhood
(a separable running maximum, O(log size) vectorised passes), is
and is louder than ``amp_min`` dBFS.  A density cap then keeps the ``per_block`` loudest peaks of every block
of ``block`` frames, counted from frame 0, so the same audio gives the same peaks
whether it is processed whole or in pieces.
"""
from __future__ import annotations

import numpy as np


def running_max(a: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Centred running maximum over ``size`` (odd) cells along ``axis``, -inf beyond the edges.

    Doubling: after k steps each cell holds the maximum of the next 2^k cells, so
    ``size`` cells cost about log2(size) vectorised passes (no per-cell Python work).
    """
    a = np.moveaxis(a, axis, 0)
    n, half = a.shape[0], size // 2
    pad = np.full((half,) + a.shape[1:], -np.inf, dtype=a.dtype)
    m = np.concatenate([pad, a, pad])
    width = 1
    while width < size:
        step = min(width, size - width)
        np.maximum(m[:-step], m[step:], out=m[:-step])
        m = m[:-step]
        width += step
    return np.moveaxis(m[:n], 0, axis)


def find_peaks(spec: np.ndarray, neighborhood_time: int, neighborhood_freq: int,
               amp_min: float, block: int, per_block: int,
               frame_offset: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima of a spectrogram.

    Parameters
    ----------
    spec : np.ndarray [shape=(n_frames, n_bins)], dB
    neighborhood_time, neighborhood_freq : half-sizes of the max-filter neighbourhood (frames, bins)
    amp_min : minimum level of a peak, dB
    block, per_block : density cap, at most ``per_block`` peaks per ``block`` frames
    frame_offset : absolute index of ``spec``'s first frame (aligns the density blocks)

    Returns
    -------
    frames : np.ndarray [shape=(p,)], int32, absolute frame index (sorted ascending)
    bins : np.ndarray [shape=(p,)], int32, column of ``spec``
    levels : np.ndarray [shape=(p,)], float32, dB
    """
    if spec.size == 0:
        empty = np.zeros(0, dtype=np.int32)
        return empty, empty, np.zeros(0, dtype=np.float32)
    local = running_max(running_max(spec, 2 * neighborhood_freq + 1, axis=1), 2 * neighborhood_time + 1, axis=0)
    mask = (spec == local) & (spec > amp_min)
    t, f = np.nonzero(mask)
    levels = spec[t, f]
    t = t + frame_offset
    # Density cap: rank peaks by level inside each block, keep the loudest.
    block_id = t // block
    order = np.lexsort((-levels, block_id))
    block_sorted = block_id[order]
    starts = np.r_[0, np.flatnonzero(np.diff(block_sorted)) + 1]
    rank = np.arange(order.size) - np.repeat(starts, np.diff(np.r_[starts, order.size]))
    keep = np.sort(order[rank < per_block])  # row-major nonzero order = sorted by frame
    return t[keep].astype(np.int32), f[keep].astype(np.int32), levels[keep]

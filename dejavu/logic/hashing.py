"""Hashes: peaks → fan-out pairs (f1, f2, Δt) → 64-bit SHA1-based hashes.

Each anchor peak is paired with up to ``fan_value`` later peaks (nearest in time
first) that lie ``min_dt..max_dt`` frames after it and within ``max_df`` bins of it.
A pair's hash is the first 8 bytes of SHA1("f1|f2|Δt") as a signed 64-bit integer —
the original dejavu's hash (which kept 10 bytes as hex text) in a compact, indexable
form with the same (absent) collisions.  The stored offset is the anchor's frame.
"""
from __future__ import annotations

import hashlib

import numpy as np

# (f1, f2, Δt) packed into one int: 10 bits per frequency bin, 10 bits for Δt.
_SHIFT_F1, _SHIFT_F2 = 20, 10
_cache: dict[int, int] = {}
_CACHE_LIMIT = 250_000  # entries (~35 MB); the cache is emptied when it grows past this


def sha1_hash(f1: int, f2: int, dt: int) -> int:
    """The hash of one pair, as a signed 64-bit integer."""
    digest = hashlib.sha1(f"{f1}|{f2}|{dt}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _hash_packed(keys: np.ndarray) -> np.ndarray:
    """SHA1-hash packed (f1, f2, Δt) keys, computing each distinct key once per process."""
    uniq, inverse = np.unique(keys, return_inverse=True)
    out = np.empty(uniq.size, dtype=np.int64)
    cache = _cache
    if len(cache) + uniq.size > _CACHE_LIMIT:
        cache.clear()
    for i, key in enumerate(uniq.tolist()):
        value = cache.get(key)
        if value is None:
            value = cache[key] = sha1_hash(key >> _SHIFT_F1, (key >> _SHIFT_F2) & 1023, key & 1023)
        out[i] = value
    return out[inverse.reshape(-1)]


def pair_peaks(frames: np.ndarray, bins: np.ndarray, fan_value: int, min_dt: int,
               max_dt: int, max_df: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (anchor, target) of the fan-out pairs of peaks sorted by frame.

    Parameters
    ----------
    frames, bins : np.ndarray [shape=(p,)], int, peaks sorted by frame
    fan_value : targets per anchor at most
    min_dt, max_dt : frame distance of a target after its anchor (inclusive)
    max_df : largest |bin difference|

    Returns
    -------
    anchors, targets : np.ndarray [shape=(m,)], int64 indices into the peaks
    """
    p = frames.size
    if p < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    # Peaks within max_dt frames after each anchor form a contiguous run: look at
    # enough following peaks to cover the densest run, but never more than needed.
    run = np.searchsorted(frames, frames + max_dt, side="right") - np.arange(p) - 1
    width = int(min(max(run.max(), 1), 4 * fan_value + 16))
    idx = np.arange(p)[:, None] + np.arange(1, width + 1)[None, :]
    inside = idx < p
    idx = np.minimum(idx, p - 1)
    dt = frames[idx] - frames[:, None]
    df = np.abs(bins[idx] - bins[:, None])
    valid = inside & (dt >= min_dt) & (dt <= max_dt) & (df <= max_df)
    valid &= np.cumsum(valid, axis=1) <= fan_value
    anchors, cols = np.nonzero(valid)
    return anchors.astype(np.int64), idx[anchors, cols].astype(np.int64)


def hash_pairs(frames: np.ndarray, bins: np.ndarray, anchors: np.ndarray,
               targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hash each (anchor, target) pair.

    Returns ``hashes`` int64 and ``offsets`` int32 (anchor frame), both shape (m,).
    """
    f1 = bins[anchors].astype(np.int64)
    f2 = bins[targets].astype(np.int64)
    dt = (frames[targets] - frames[anchors]).astype(np.int64)
    keys = (f1 << _SHIFT_F1) | (f2 << _SHIFT_F2) | dt
    return _hash_packed(keys), frames[anchors].astype(np.int32)

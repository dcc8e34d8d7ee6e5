"""Hashes: peaks → fan-out pairs (f1, f2, Δt) → integer keys.

Each anchor peak is paired with up to ``fan_value`` later peaks (nearest in time
first) that lie ``min_dt..max_dt`` frames after it and within ``max_df`` bins of it.
The stored offset is the anchor's frame.  A pair's key is, by ``fingerprint.key``:

* ``"packed"`` (default): the pair's coordinates packed at their real resolution,
  ``f1 << (df_bits + dt_bits) | (f2 − f1 + max_df) << dt_bits | Δt`` (:class:`PackedKeys`;
  23 bits for the defaults: 466 bins, ±120 bins, 1..63 frames).  Distinct pairs have
  distinct keys, keys of nearby pairs are nearby, and no hashing is needed.
* ``"sha1"``: the original dejavu's hash, the first 8 bytes of SHA1("f1|f2|Δt") as a
  signed 64-bit integer (:class:`PairHasher`: each pair's SHA1 is computed once per
  process and kept in a flat table indexed by the pair, about 7 million pairs).
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

_TABLE_BYTES = 96 * 2**20  # largest lookup table of a PairHasher (its pages fill as pairs occur)
_CHUNK = 32768             # messages hashed at a time by sha1_hashes
_DECIMAL_LIMIT = 10_000    # sha1_hashes formats numbers below this with numpy
_H = tuple(np.uint32(h) for h in (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0))
_K = tuple(np.uint32(k) for k in (0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xCA62C1D6))


def sha1_hash(f1: int, f2: int, dt: int) -> int:
    """The hash of one pair, as a signed 64-bit integer (the definition; see :func:`sha1_hashes`)."""
    digest = hashlib.sha1(f"{f1}|{f2}|{dt}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def sha1_hashes(f1: np.ndarray, f2: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """:func:`sha1_hash` of each pair, computed with numpy on whole arrays (several times
    faster than hashlib called per pair; numbers of 5 or more digits take that slow way).

    f1, f2, dt : np.ndarray [shape=(m,)], integers; returns int64 (m,).
    """
    fields = [np.asarray(x, dtype=np.int64).reshape(-1) for x in (f1, f2, dt)]
    if fields[0].size and not all(0 <= f.min() and f.max() < _DECIMAL_LIMIT for f in fields):
        return np.array([sha1_hash(*key) for key in zip(*(f.tolist() for f in fields))], dtype=np.int64)
    out = np.empty(fields[0].size, dtype=np.int64)
    for start in range(0, out.size, _CHUNK):
        out[start:start + _CHUNK] = _sha1_prefix(_message_words(*(f[start:start + _CHUNK] for f in fields)))
    return out


@lru_cache(maxsize=1)
def _decimal() -> tuple[np.ndarray, np.ndarray]:
    """The text of 0 ≤ v < 10⁴ as a big-endian integer of ASCII digits, and its length, both
    uint64 arrays [shape=(10⁴,)]."""
    text = [b"%d" % v for v in range(_DECIMAL_LIMIT)]
    return (np.array([int.from_bytes(t, "big") for t in text], dtype=np.uint64),
            np.array([len(t) for t in text], dtype=np.uint64))


def _message_words(f1: np.ndarray, f2: np.ndarray, dt: np.ndarray) -> list[np.ndarray | None]:
    """SHA1's padded block of each text "f1|f2|dt" (numbers < 10⁴, so at most 14 bytes and the
    0x80 end mark): 16 big-endian words, uint32 arrays [shape=(n,)], None for all-zero words."""
    ascii_digits, digits = _decimal()
    # Build the text right-aligned in a 128-bit number (hi, lo): append "|f2", then "|dt" + 0x80.
    hi, lo = np.zeros(f1.size, dtype=np.uint64), ascii_digits[f1]
    length = digits[f1] + digits[f2] + digits[dt] + np.uint64(2)
    for value, tail in ((f2, 0), (dt, 8)):
        bits = (digits[value] + np.uint64(1)) * np.uint64(8) + np.uint64(tail)
        piece = ((np.uint64(ord("|")) << (bits - np.uint64(8))) | (ascii_digits[value] << np.uint64(tail))
                 | np.uint64(0x80 if tail else 0))
        hi = (hi << bits) | (lo >> (np.uint64(64) - bits))
        lo = (lo << bits) | piece
    # Left-align: shift by 128 − 8·(length + 1) bits, in a 64-bit step and a 0..63 step.
    shift = np.uint64(120) - length * np.uint64(8)
    wide = shift >= np.uint64(64)
    hi, lo = np.where(wide, lo, hi), np.where(wide, np.uint64(0), lo)
    shift &= np.uint64(63)
    hi = (hi << shift) | ((lo >> np.uint64(1)) >> (np.uint64(63) - shift))
    lo <<= shift
    words = [(half >> np.uint64(32 * k)).astype(np.uint32) for half in (hi, lo) for k in (1, 0)]
    return [w if w.any() else None for w in words] + [None] * 11 + [(length * np.uint64(8)).astype(np.uint32)]


def _sha1_prefix(w: list[np.ndarray | None]) -> np.ndarray:
    """First 8 bytes of the SHA1 digest of one-block messages given as words (FIPS 180-4),
    as int64 [shape=(n,)]; ``w`` is used as the message schedule and overwritten."""
    n = next(x.size for x in w if x is not None)
    a, b, c, d, e = (np.full(n, h) for h in _H)
    f, tmp = np.empty(n, dtype=np.uint32), np.empty(n, dtype=np.uint32)
    for r in range(80):
        s = r % 16
        word = w[s]
        if r >= 16:    # w[s] = rotl1(w[r-3] ^ w[r-8] ^ w[r-14] ^ w[r-16]); all-zero words stay None
            terms = [x for x in (w[(r - 3) % 16], w[(r - 8) % 16], w[(r - 14) % 16], word) if x is not None]
            if terms:
                if len(terms) == 1:
                    np.copyto(f, terms[0])
                else:
                    np.bitwise_xor(terms[0], terms[1], out=f)
                for x in terms[2:]:
                    np.bitwise_xor(f, x, out=f)
                word = word if word is not None else np.empty(n, dtype=np.uint32)
                np.left_shift(f, 1, out=word)
                np.right_shift(f, 31, out=tmp)
                w[s] = word = np.bitwise_or(word, tmp, out=word)
        q = r // 20
        if q == 0:     # choose: d ^ (b & (c ^ d))
            np.bitwise_xor(c, d, out=f)
            np.bitwise_and(f, b, out=f)
            np.bitwise_xor(f, d, out=f)
        elif q == 2:   # majority: (b & c) | (d & (b | c))
            np.bitwise_or(b, c, out=f)
            np.bitwise_and(f, d, out=f)
            np.bitwise_and(b, c, out=tmp)
            np.bitwise_or(f, tmp, out=f)
        else:          # parity
            np.bitwise_xor(b, c, out=f)
            np.bitwise_xor(f, d, out=f)
        # new a = rotl5(a) + f + e + K + w, summed into e's array; rotl5 as two disjoint parts
        np.add(e, f, out=e)
        np.add(e, _K[q], out=e)
        if word is not None:
            np.add(e, word, out=e)
        np.add(e, np.left_shift(a, 5, out=f), out=e)
        np.add(e, np.right_shift(a, 27, out=f), out=e)
        np.left_shift(b, 30, out=tmp)                        # new c = rotl30(b), in place
        np.right_shift(b, 2, out=b)
        np.bitwise_or(b, tmp, out=b)
        a, b, c, d, e = e, a, b, c, d
    high = np.add(a, _H[0]).astype(np.uint64) << np.uint64(32)
    return (high | np.add(b, _H[1]).astype(np.uint64)).view(np.int64)


def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (by sorting: numpy's hash-based np.unique is much slower here)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if values.size else values


class PairHasher:
    """:func:`sha1_hashes` through a table of the pairs seen so far.

    The table covers 0 ≤ f1 < ``n_freq``, |f2 − f1| ≤ ``max_df``, 0 ≤ Δt ≤ ``max_dt``
    (int64, 8 bytes a pair, zero = not yet computed; a pair whose hash is 0 is simply
    recomputed).  Calls with pairs outside it, or a table larger than 96 MB, hash directly
    with :func:`sha1_hashes`.
    """

    def __init__(self, n_freq: int, max_df: int, max_dt: int) -> None:
        self.n_freq, self.max_df, self.max_dt = n_freq, max_df, max_dt
        self._strides = ((2 * max_df + 1) * (max_dt + 1), max_dt + 1)
        size = n_freq * self._strides[0]
        self._table = np.zeros(size, dtype=np.int64) if size * 8 <= _TABLE_BYTES else None

    def __call__(self, f1: np.ndarray, f2: np.ndarray, dt: np.ndarray) -> np.ndarray:
        """Hashes of the pairs (f1, f2, Δt), integer arrays of shape (m,) → int64 (m,)."""
        f1, df, dt = (np.asarray(x, dtype=np.int64) for x in (f1, np.subtract(f2, f1), dt))
        table = self._table
        if table is None or not f1.size or not (
                0 <= f1.min() and f1.max() < self.n_freq and -self.max_df <= df.min()
                and df.max() <= self.max_df and 0 <= dt.min() and dt.max() <= self.max_dt):
            return sha1_hashes(f1, f1 + df, dt)
        index = f1 * self._strides[0] + (df + self.max_df) * self._strides[1] + dt
        hashes = table[index]
        missing = hashes == 0
        if missing.any():
            new = _unique(index[missing])
            f1_new, rest = np.divmod(new, self._strides[0])
            df_new, dt_new = np.divmod(rest, self._strides[1])
            table[new] = sha1_hashes(f1_new, f1_new + df_new - self.max_df, dt_new)
            hashes[missing] = table[index[missing]]
        return hashes


class PackedKeys:
    """Pairs (f1, f2, Δt) → ``f1 << (df_bits + dt_bits) | (f2 − f1 + max_df) << dt_bits | Δt``.

    Exact and invertible for 0 ≤ f1, |f2 − f1| ≤ ``max_df``, 0 ≤ Δt ≤ ``max_dt``, the
    range :func:`pair_peaks` produces; ``bits`` is the width of keys with f1 < ``n_freq``.
    """

    def __init__(self, n_freq: int, max_df: int, max_dt: int) -> None:
        self.max_df = max_df
        self.dt_bits = int(max_dt).bit_length()
        self.df_bits = int(2 * max_df).bit_length()
        self.bits = int(max(n_freq - 1, 1)).bit_length() + self.df_bits + self.dt_bits

    def __call__(self, f1: np.ndarray, f2: np.ndarray, dt: np.ndarray) -> np.ndarray:
        """Keys of the pairs, integer arrays of shape (m,) → int64 (m,)."""
        f1, f2, dt = (np.asarray(x, dtype=np.int64) for x in (f1, f2, dt))
        return (f1 << (self.df_bits + self.dt_bits)) | ((f2 - f1 + self.max_df) << self.dt_bits) | dt

    def unpack(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(f1, f2, Δt) of keys, int64 arrays of shape (m,)."""
        keys = np.asarray(keys, dtype=np.int64)
        f1 = keys >> (self.df_bits + self.dt_bits)
        df = ((keys >> self.dt_bits) & ((1 << self.df_bits) - 1)) - self.max_df
        return f1, f1 + df, keys & ((1 << self.dt_bits) - 1)


#: ``fingerprint.key`` (see dejavu.config.KEY_KINDS) → the class that makes keys of pairs.
KEY_MAKERS = {"packed": PackedKeys, "sha1": PairHasher}


@lru_cache(maxsize=4)
def pair_hasher(n_freq: int, max_df: int, max_dt: int, kind: str = "sha1") -> PairHasher | PackedKeys:
    """The process's shared key maker of this ``kind`` ("packed" or "sha1") and key range."""
    return KEY_MAKERS[kind](n_freq, max_df, max_dt)


def pair_peaks(frames: np.ndarray, bins: np.ndarray, fan_value: int, min_dt: int,
               max_dt: int, max_df: int, n_anchors: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (anchor, target) of the fan-out pairs of peaks sorted by frame.

    Parameters
    ----------
    frames, bins : np.ndarray [shape=(p,)], int, peaks sorted by frame
    fan_value : targets per anchor at most, searched among the next 4·fan_value + 16 peaks
    min_dt, max_dt : frame distance of a target after its anchor (inclusive)
    max_df : largest |bin difference|
    n_anchors : pair only the first ``n_anchors`` peaks as anchors (default: all)

    Returns
    -------
    anchors, targets : np.ndarray [shape=(m,)], int64 indices into the peaks, sorted by
    anchor, then target
    """
    p = frames.size
    n = p if n_anchors is None else min(n_anchors, p)
    if p < 2 or n < 1:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    # Targets of anchor i are peaks first[i] <= j < end[i]: in the zone's time range and at
    # most 4·fan_value + 16 peaks on (bounds the work in dense passages).  They are examined
    # 2·fan_value at a time for all anchors at once, dropping anchors whose fan-out is complete.
    frames = frames.astype(np.int64)
    after = np.arange(1, n + 1, dtype=np.int32)
    first = np.maximum(np.searchsorted(frames, frames[:n] + min_dt, side="left"), after).astype(np.int32)
    end = np.minimum(np.searchsorted(frames, frames[:n] + max_dt, side="right"), after + 4 * fan_value + 16)
    targets = np.full(n * fan_value, -1, dtype=np.int64)  # row i: targets of anchor i, in order
    anchor = np.flatnonzero(first < end)
    start, stop, level = first[anchor], end[anchor].astype(np.int32), bins[anchor]
    count = np.zeros(anchor.size, dtype=np.int32)         # targets found so far
    width = 2 * fan_value
    while anchor.size:
        candidate = start[:, None] + np.arange(width, dtype=np.int32)
        ok = candidate < stop[:, None]
        ok &= np.abs(bins[np.minimum(candidate, p - 1)] - level[:, None]) <= max_df
        rank = np.cumsum(ok, axis=1, dtype=np.int32) + count[:, None]  # 1-based, among the anchor's targets
        taken = np.flatnonzero(ok & (rank <= fan_value))
        targets[anchor[taken // width] * fan_value + rank.reshape(-1)[taken] - 1] = candidate.reshape(-1)[taken]
        count = rank[:, -1]
        start += width
        go = (count < fan_value) & (start < stop)
        anchor, start, stop, level, count = anchor[go], start[go], stop[go], level[go], count[go]
    filled = np.flatnonzero(targets >= 0)
    return filled // fan_value, targets[filled]


def hash_pairs(frames: np.ndarray, bins: np.ndarray, anchors: np.ndarray, targets: np.ndarray,
               hasher: PairHasher | PackedKeys | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Key each (anchor, target) pair with ``hasher`` (default: the SHA1 hash, computed directly).

    Returns ``hashes`` int64 and ``offsets`` int32 (anchor frame), both shape (m,).
    """
    f1, f2 = bins[anchors], bins[targets]
    dt = frames[targets] - frames[anchors]
    hashes = hasher(f1, f2, dt) if hasher is not None else sha1_hashes(f1, f2, dt)
    return hashes, frames[anchors].astype(np.int32)

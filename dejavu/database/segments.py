"""Segments: immutable, memory-mapped files of fingerprint rows (the embedded store's index).

A row is (key, song_id, offset): a 64-bit hash key, a uint32 song id and an int32
offset in frames.  A segment file holds the rows of some songs as sorted distinct keys
plus CSR postings, and is opened read-only through ``mmap``: lookups gather numpy
arrays straight from the mapped pages, and every process reading one file shares one
copy in the page cache.  An index is a list of segments, oldest first: each write adds
one, and :func:`plan_merge` + :func:`merge_segments` keep their number O(log rows),
LSM-style (writing and merging: :mod:`dejavu.database.segment_writer`).  Which files are
live, and which songs, is the caller's catalogue.

Keys.  The API takes and returns keys as int64; any 64-bit pattern is a key (uint64
keys are taken by their bits, as ``keys.view(np.int64)``).  A file stores
``key ^ 2**63`` as uint64 ("offset binary"), so its ascending uint64 order is the int64
order: lookups return keys ascending as int64, as ``BaseDatabase.return_matches`` does.

File format, version 1, little-endian, one file per segment::

    0      8 bytes   MAGIC
    8      uint32    n, the byte length of the JSON header
    12     n bytes   JSON {"version": 1, "rows": R, "keys": K, "size": file bytes,
                           "arrays": {name: [byte offset, count, dtype]}}
    ...    zeros up to DATA_START; then each array on a 64-byte boundary:
    songs    <u4 (R,)    song id of each posting
    offsets  <i4 (R,)    offset of each posting, frames
    keys     <u8 (K,)    distinct stored keys, ascending
    starts   <i8 (K+1,)  postings of keys[i] are [starts[i], starts[i+1]), sorted by
                         (song_id, offset), without duplicate rows

Writes are crash-safe: a temporary name in the target's directory (``.NAME.*.tmp``),
flush + fsync, ``os.replace``, fsync of the directory.  Readers open only names they are
given, and a truncated or foreign file raises :class:`SegmentError` naming it.
"""
from __future__ import annotations

import json
import logging
import mmap
import os
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from dejavu.exceptions import DatabaseError
from dejavu.logic.store import Hits

log = logging.getLogger(__name__)

MAGIC = b"DJVSEG\r\n"
VERSION = 1
#: Byte offset of the first array (the header is written last, into this room).
DATA_START = 4096
ALIGN = 64
#: The arrays of a file, in file order, with their dtypes.
DTYPES = {"songs": "<u4", "offsets": "<i4", "keys": "<u8", "starts": "<i8"}
#: Rows a merge or a row iterator holds in memory at once (some 60 bytes each while sorted).
CHUNK_ROWS = 1 << 23
#: Lookups for at most this many songs search each key's postings for them ...
FEW_SONGS = 256
#: ... where a key has more postings than this (fewer are read whole and filtered).
SEARCHED_POSTINGS = 512
_SIGN = np.uint64(1 << 63)
_LOW = np.uint64(0xFFFFFFFF)
_OFFSET_BIAS = np.uint64(1 << 31)


class SegmentError(DatabaseError):
    """A segment file is missing, truncated, corrupt or not a segment (the message names it)."""


class SegmentInfo(NamedTuple):
    """A segment as written: its path, rows, distinct keys and file bytes."""

    path: str
    rows: int
    n_keys: int
    nbytes: int


def stored_keys(keys: np.ndarray | Sequence[int]) -> np.ndarray:
    """Keys (int64 or uint64 bits, any shape) → stored uint64 keys ``key ^ 2**63``."""
    a = np.asarray(keys)
    if a.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if a.dtype.kind not in "iu":
        raise TypeError(f"keys must be integers, not {a.dtype}")
    return a.astype(np.int64, copy=False).view(np.uint64).ravel() ^ _SIGN


def _unstored(keys: np.ndarray) -> np.ndarray:
    """Stored uint64 keys → int64 keys."""
    return (keys ^ _SIGN).view(np.int64)


def pack(song_ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(song_id, offset) → uint64 whose order is (song_id, offset) order (offsets as signed)."""
    s = np.asarray(song_ids)
    o = np.asarray(offsets)
    if s.size and (s.min() < 0 or s.max() > 0xFFFFFFFF):
        raise ValueError("song ids must be in [0, 2**32)")
    if o.size and (o.min() < -(1 << 31) or o.max() >= 1 << 31):
        raise ValueError("offsets must fit in int32")
    low = o.astype(np.int32).view(np.uint32).astype(np.uint64) ^ _OFFSET_BIAS
    return (s.astype(np.uint64) << np.uint64(32)) | low


def unpack(postings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Packed postings → (song_ids uint32, offsets int32)."""
    offsets = ((postings & _LOW) ^ _OFFSET_BIAS).astype(np.uint32).view(np.int32)
    return (postings >> np.uint64(32)).astype(np.uint32), offsets


def _bits(n: int) -> int:
    return int(n).bit_length()


def run_starts(a: np.ndarray) -> np.ndarray:
    """Mask of the elements that differ from the one before (the first of each run)."""
    first = np.ones(a.size, dtype=bool)
    first[1:] = a[1:] != a[:-1]
    return first


def _distinct(a: np.ndarray) -> np.ndarray:
    """Distinct values, ascending (``np.unique`` is 100x slower on uint64 in numpy 2.4)."""
    a = np.sort(a)
    return a[run_starts(a)]


def sorted_rows(keys: np.ndarray, postings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (stored keys, packed postings) sorted by (key, posting), duplicates dropped."""
    same = keys[1:] == keys[:-1]
    if not np.all((keys[1:] > keys[:-1]) | (same & (postings[1:] >= postings[:-1]))):
        keys, postings = _sort_rows(keys, postings)
        same = keys[1:] == keys[:-1]
    new = np.ones(keys.size, dtype=bool)
    new[1:] = ~same | (postings[1:] != postings[:-1])
    return keys[new], postings[new]


def _sort_rows(keys: np.ndarray, postings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted by (key, posting).  Packed into one uint64 when they fit in 63 bits (key
    less the least, else its rank among the distinct keys after an argsort by key; song id;
    offset less the least) and sorted by value: 5-20x faster than ``np.lexsort``, which
    remains for the rest."""
    least_key, least_low = keys.min(), (postings & _LOW).min()
    song_bits, low_bits = _bits(postings.max() >> np.uint64(32)), _bits((postings & _LOW).max() - least_low)
    distinct, code = None, keys - least_key
    if _bits(keys.max() - least_key) + song_bits + low_bits >= 64:
        order = np.argsort(keys)
        keys, postings = keys[order], postings[order]
        first = run_starts(keys)
        distinct, code = keys[first], np.cumsum(first, dtype=np.uint64) - np.uint64(1)
    if _bits(code.max()) + song_bits + low_bits >= 64:
        order = np.lexsort((postings, keys))
        return keys[order], postings[order]
    shift = np.uint64(song_bits + low_bits)
    packed = (code << shift) | ((postings >> np.uint64(32)) << np.uint64(low_bits)) | ((postings & _LOW) - least_low)
    packed.sort()
    code = packed >> shift
    songs = (packed >> np.uint64(low_bits)) & np.uint64((1 << song_bits) - 1)
    postings = (songs << np.uint64(32)) | ((packed & np.uint64((1 << low_bits) - 1)) + least_low)
    return (code + least_key if distinct is None else distinct[code]), postings


def _gather_positions(starts: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posting positions of key indices ``idx`` (m,), concatenated in order, and rows per key (m,)."""
    begin = starts[idx]
    n = starts[idx + 1] - begin
    return np.arange(int(n.sum()), dtype=np.int64) + np.repeat(begin - (np.cumsum(n) - n), n), n


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Segment:
    """One segment file, mapped read-only.  ``keys``, ``starts``, ``songs``, ``offsets`` are
    read-only views of the mapped file (stored keys, see the module docstring)."""

    def __init__(self, path: str, keys: np.ndarray, starts: np.ndarray, songs: np.ndarray,
                 offsets: np.ndarray, nbytes: int) -> None:
        self.path, self.keys, self.starts, self.songs, self.offsets = path, keys, starts, songs, offsets
        self.nbytes = nbytes

    @property
    def rows(self) -> int:
        return int(self.songs.size)

    @property
    def n_keys(self) -> int:
        return int(self.keys.size)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Segment:
        """Map the segment at ``path``; SegmentError if it is not a whole segment file."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < DATA_START:
                    raise SegmentError(f"{path}: not a segment ({size} bytes, shorter than a header)")
                mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise SegmentError(f"{path}: cannot open segment: {e}") from e
        if mapped[:8] != MAGIC:
            raise SegmentError(f"{path}: not a segment (bad magic {mapped[:8]!r})")
        n = int.from_bytes(mapped[8:12], "little")
        try:
            head = json.loads(mapped[12:12 + n])
            if head["version"] != VERSION:
                raise SegmentError(f"{path}: segment format version {head['version']}, this code reads {VERSION}")
            if head["size"] != size:
                raise SegmentError(f"{path}: truncated or extended segment ({size} bytes, header says {head['size']})")
            arrays = {}
            for name, dtype in DTYPES.items():
                offset, count, stored_dtype = head["arrays"][name]
                if stored_dtype != dtype or offset % ALIGN or offset + count * np.dtype(dtype).itemsize > size:
                    raise SegmentError(f"{path}: corrupt segment header (array {name} {head['arrays'][name]})")
                arrays[name] = np.frombuffer(mapped, dtype=dtype, count=count, offset=offset)
        except (ValueError, KeyError, TypeError) as e:
            raise SegmentError(f"{path}: corrupt segment header ({e!r})") from e
        starts = arrays["starts"]
        if (starts.size != head["keys"] + 1 or arrays["songs"].size != head["rows"]
                or starts[0] != 0 or starts[-1] != head["rows"]):
            raise SegmentError(f"{path}: corrupt segment (counts disagree with the header)")
        return cls(path, arrays["keys"], starts, arrays["songs"], arrays["offsets"], size)

    def close(self) -> None:
        """Drop the views (the segment is unusable after); the file is unmapped once no view
        taken from them is referenced (lookups return copies)."""
        for name in ("keys", "starts", "songs", "offsets"):
            self.__dict__.pop(name, None)

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Segment({self.path!r}, rows={self.rows}, n_keys={self.n_keys})"

    def _find(self, stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Key indices (m,) of the stored keys present, and the found mask (q,)."""
        idx = np.searchsorted(self.keys, stored)
        found = idx < self.keys.size
        found[found] = self.keys[idx[found]] == stored[found]
        return idx[found], found

    def _lookup_stored(self, wanted: np.ndarray, song_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of distinct, ascending stored keys: (stored keys, song ids uint32, offsets int32).

        With a few ``song_ids`` (sorted, distinct), see :meth:`_rows_of_songs`."""
        idx, found = self._find(wanted)
        if song_ids is not None and song_ids.size <= FEW_SONGS:
            return self._rows_of_songs(wanted[found], idx, song_ids)
        pos, n = _gather_positions(self.starts, idx)
        keys, songs, offsets = np.repeat(wanted[found], n), self.songs[pos], self.offsets[pos]
        if song_ids is not None:
            keep = np.isin(songs, song_ids)
            keys, songs, offsets = keys[keep], songs[keep], offsets[keep]
        return keys, songs, offsets

    def _rows_of_songs(self, keys: np.ndarray, idx: np.ndarray, song_ids: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rows of a few songs (sorted, distinct ``song_ids``) for stored ``keys`` at key indices
        ``idx``.  A key's postings are sorted by song: keys with many postings are
        binary-searched for the songs (one searchsorted a key), so most of their rows are never
        read; keys with few are gathered whole and filtered."""
        if not song_ids.size:
            return keys[:0], self.songs[:0], self.offsets[:0]
        mask = np.zeros(int(song_ids[-1]) + 1, dtype=bool)
        mask[song_ids] = True
        n = self.starts[idx + 1] - self.starts[idx]
        big = n > SEARCHED_POSTINGS
        pos, count = _gather_positions(self.starts, idx[~big])
        songs = self.songs[pos]
        keep = songs < mask.size
        keep[keep] = mask[songs[keep]]
        order = [np.repeat(np.flatnonzero(~big), count)[keep]]
        positions = [pos[keep]]
        bounds = np.repeat(song_ids.astype(np.uint32), 2)
        bounds[1::2] += np.uint32(1)                   # [song, song + 1) for each song
        searched = np.flatnonzero(big)
        begin, end = self.starts[idx[searched]].tolist(), self.starts[idx[searched] + 1].tolist()
        edges = np.empty((searched.size, bounds.size), dtype=np.int64)
        for row, (a, b) in enumerate(zip(begin, end)):   # one searchsorted a key
            edges[row] = self.songs[a:b].searchsorted(bounds)
        edges += np.asarray(begin, dtype=np.int64)[:, None]
        first, rows = edges[:, 0::2].ravel(), (edges[:, 1::2] - edges[:, 0::2]).ravel()
        positions.append(np.arange(int(rows.sum()), dtype=np.int64) + np.repeat(first - (np.cumsum(rows) - rows), rows))
        order.append(np.repeat(np.repeat(searched, song_ids.size), rows))
        at = np.concatenate(order)
        where = np.concatenate(positions)
        by_key = np.argsort(at, kind="stable")
        at, where = at[by_key], where[by_key]
        return keys[at], self.songs[where], self.offsets[where]

    def lookup(self, query_keys: np.ndarray | Sequence[int], song_ids: Sequence[int] | None = None) -> Hits:
        """Rows of the distinct query keys (of ``song_ids`` only, if given): (keys, song_ids,
        offsets) int64 (r,), grouped by key in ascending key order, each key's rows by (song, offset)."""
        return lookup_all([self], query_keys, song_ids)

    def counts(self, query_keys: np.ndarray | Sequence[int]) -> np.ndarray:
        """Rows stored per query key, int64 of the query's shape (0 where absent); reads only ``starts``."""
        stored = stored_keys(query_keys)
        idx, found = self._find(stored)
        out = np.zeros(stored.size, dtype=np.int64)
        out[found] = self.starts[idx + 1] - self.starts[idx]
        return out.reshape(np.shape(query_keys))

    def block(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows of key indices [a, b): (stored keys, packed postings) uint64, in file order."""
        starts = self.starts[a:b + 1]
        lo, hi = int(starts[0]), int(starts[-1])
        return np.repeat(self.keys[a:b], np.diff(starts)), pack(self.songs[lo:hi], self.offsets[lo:hi])

    def iter_rows(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[Hits]:
        """Every row in file order as (keys, song_ids, offsets) int64 chunks of about ``chunk_rows``
        rows (more when one key has more); a key's rows are never split between chunks."""
        for ((a, b),) in key_ranges([self], chunk_rows):
            keys, postings = self.block(a, b)
            songs, offsets = unpack(postings)
            yield _unstored(keys), songs.astype(np.int64), offsets.astype(np.int64)


def key_ranges(segments: Sequence[Segment], chunk_rows: int) -> Iterator[list[tuple[int, int]]]:
    """Split the union of the segments' keys into consecutive key ranges of about ``chunk_rows``
    rows in all: per range, the key index range [a, b) of each segment (at least one key)."""
    pos = [0] * len(segments)
    share = max(1, chunk_rows // max(1, len(segments)))
    while any(p < seg.n_keys for p, seg in zip(pos, segments)):
        bound = None  # first stored key of the next range (None: to the end)
        for p, seg in zip(pos, segments):
            if p < seg.n_keys:
                j = max(p + 1, int(np.searchsorted(seg.starts, seg.starts[p] + share, "right")) - 1)
                if j < seg.n_keys and (bound is None or seg.keys[j] < bound):
                    bound = seg.keys[j]
        ends = [seg.n_keys if bound is None else int(np.searchsorted(seg.keys, bound)) for seg in segments]
        yield list(zip(pos, ends))
        pos = ends


def lookup_all(segments: Sequence[Segment], query_keys: np.ndarray | Sequence[int],
               song_ids: Sequence[int] | None = None) -> Hits:
    """Rows of the distinct query keys in all ``segments`` (of ``song_ids`` only, if given):
    (keys, song_ids, offsets) int64 (r,), grouped by key in ascending key order; a key's rows
    come segment by segment in the given order, each segment's by (song, offset).  Segments
    are expected to hold disjoint rows (a song is written once): nothing is deduplicated."""
    wanted = _distinct(stored_keys(query_keys))
    songs = None if song_ids is None else np.unique(np.asarray(song_ids, dtype=np.int64))
    parts = [seg._lookup_stored(wanted, songs) for seg in segments]
    parts = [p for p in parts if p[0].size] or [(wanted[:0], np.zeros(0, np.uint32), np.zeros(0, np.int32))]
    keys, found_songs, offsets = (np.concatenate(column) for column in zip(*parts))
    if len(parts) > 1:
        order = np.argsort(keys, kind="stable")
        keys, found_songs, offsets = keys[order], found_songs[order], offsets[order]
    return _unstored(keys), found_songs.astype(np.int64), offsets.astype(np.int64)

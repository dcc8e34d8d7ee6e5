"""Writing segments: whole (:func:`write_segment`), streamed in key order (:class:`SegmentWriter`),
merged (:func:`merge_segments`), and when to merge (:func:`plan_merge`).  The file format is
:mod:`dejavu.database.segments`; every write is crash-safe: a temporary name in the target's
directory, flush + fsync, ``os.replace``, fsync of the directory.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from typing import IO, Iterable, Sequence

import numpy as np

from dejavu.database.segments import (ALIGN, CHUNK_ROWS, DATA_START, DTYPES, MAGIC, VERSION, Segment, SegmentInfo,
                                      fsync_dir, key_ranges, pack, run_starts, sorted_rows, stored_keys,
                                      unpack)

log = logging.getLogger(__name__)


class SegmentWriter:
    """Write one segment in chunks, never holding it whole (bulk loads, merges).

    Each chunk's keys must all be >= every key of the chunks before (a key may continue
    into the next chunk); rows within a chunk come in any order and are sorted when they
    are not already, duplicates dropped.  ``songs`` stream into the target's temporary
    file, the other arrays into unnamed temporary files copied in by :meth:`finish`.
    As a context manager: finishes on a normal exit, removes the temporary file on error.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.path.abspath(os.fspath(path))
        directory, name = os.path.split(self.path)
        self._tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
        self._out: IO[bytes] = os.fdopen(os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")
        self._out.write(bytes(DATA_START))
        self._side = {name: tempfile.TemporaryFile(dir=directory) for name in ("offsets", "keys", "starts")}
        self._rows = 0
        self._n_keys = 0
        self._carry = (np.zeros(0, np.uint64), np.zeros(0, np.uint64))  # rows of the last key seen
        self._started = time.perf_counter()
        self.info: SegmentInfo | None = None

    def append(self, keys: np.ndarray | Sequence[int], song_ids: np.ndarray | Sequence[int],
               offsets: np.ndarray | Sequence[int]) -> None:
        """Add rows: three arrays of equal length (keys int64/uint64 bits, song ids, offsets)."""
        stored = stored_keys(keys)
        if not stored.size == np.size(song_ids) == np.size(offsets):
            raise ValueError(f"keys, song_ids and offsets differ in length "
                             f"({stored.size}, {np.size(song_ids)}, {np.size(offsets)})")
        self._append_stored(stored, pack(np.ravel(song_ids), np.ravel(offsets)))

    def _append_stored(self, keys: np.ndarray, postings: np.ndarray) -> None:
        """Add rows as stored keys and packed postings (uint64, equal length)."""
        if not keys.size:
            return
        carry_keys, carry_postings = self._carry
        if carry_keys.size:
            if keys.min() < carry_keys[0]:
                raise ValueError(f"{self.path}: chunks must come in ascending key order")
            keys, postings = np.concatenate([carry_keys, keys]), np.concatenate([carry_postings, postings])
        keys, postings = sorted_rows(keys, postings)
        cut = int(np.searchsorted(keys, keys[-1]))
        self._carry = keys[cut:], postings[cut:]
        self._write(keys[:cut], postings[:cut])

    def _write(self, keys: np.ndarray, postings: np.ndarray) -> None:
        """Write sorted, distinct rows whose keys all come after those written before."""
        first = np.flatnonzero(run_starts(keys))
        songs, offsets = unpack(postings)
        self._out.write(songs.astype("<u4", copy=False).data)
        self._side["offsets"].write(offsets.astype("<i4", copy=False).data)
        self._side["keys"].write(keys[first].astype("<u8", copy=False).data)
        self._side["starts"].write((first + self._rows).astype("<i8", copy=False).data)
        self._rows += int(keys.size)
        self._n_keys += int(first.size)

    def finish(self) -> SegmentInfo:
        """Write the header, sync and rename the file into place; the segment's SegmentInfo."""
        if self.info is not None:
            return self.info
        self._write(*self._carry)
        self._side["starts"].write(np.array([self._rows], dtype="<i8").tobytes())
        counts = {"songs": self._rows, "offsets": self._rows, "keys": self._n_keys, "starts": self._n_keys + 1}
        arrays = {"songs": [DATA_START, self._rows, DTYPES["songs"]]}
        for name in ("offsets", "keys", "starts"):
            self._out.write(bytes(-self._out.tell() % ALIGN))
            arrays[name] = [self._out.tell(), counts[name], DTYPES[name]]
            side = self._side[name]
            side.seek(0)
            shutil.copyfileobj(side, self._out, 1 << 23)
            side.close()
        size = self._out.tell()
        head = json.dumps({"version": VERSION, "rows": self._rows, "keys": self._n_keys, "size": size,
                           "arrays": arrays}).encode()
        self._out.seek(0)
        self._out.write(MAGIC + len(head).to_bytes(4, "little") + head)
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        os.replace(self._tmp, self.path)
        fsync_dir(os.path.dirname(self.path))
        self.info = SegmentInfo(self.path, self._rows, self._n_keys, size)
        log.debug("wrote %s: %d rows, %d keys, %d bytes in %.2f s", self.path, self._rows, self._n_keys, size,
                  time.perf_counter() - self._started)
        return self.info

    def abort(self) -> None:
        """Give up: close and remove the temporary files (the target is untouched)."""
        for fh in (self._out, *self._side.values()):
            fh.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is None:
            try:
                self.finish()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


def write_segment(path: str | os.PathLike, keys: np.ndarray | Sequence[int], song_ids: np.ndarray | Sequence[int],
                  offsets: np.ndarray | Sequence[int]) -> SegmentInfo:
    """Write rows (arrays of equal length (n,), any order) as the segment ``path``."""
    with SegmentWriter(path) as writer:
        writer.append(keys, song_ids, offsets)
    return writer.finish()


def _live_mask(live: np.ndarray | Iterable[int]) -> np.ndarray:
    """A bool array indexed by song id from a bool array or an iterable of live song ids."""
    if isinstance(live, np.ndarray) and live.dtype == bool:
        return live
    ids = np.fromiter(live, dtype=np.int64)
    mask = np.zeros(int(ids.max()) + 1 if ids.size else 0, dtype=bool)
    mask[ids] = True
    return mask


def merge_segments(segments: Sequence[Segment], path: str | os.PathLike,
                   live: np.ndarray | Iterable[int] | None = None, chunk_rows: int = CHUNK_ROWS) -> SegmentInfo:
    """Write the rows of all ``segments`` as one new segment ``path``, key range by key range
    (about ``chunk_rows`` rows in memory at once).  ``live``: keep only rows of these songs —
    a bool array indexed by song id (ids past its end are dead) or an iterable of song ids;
    None keeps every row.  Rows found in several segments are written once."""
    mask = None if live is None else _live_mask(live)
    started = time.perf_counter()
    with SegmentWriter(path) as writer:
        for ranges in key_ranges(segments, chunk_rows):
            blocks = [seg.block(a, b) for seg, (a, b) in zip(segments, ranges) if b > a]
            keys, postings = (np.concatenate(column) for column in zip(*blocks))
            if mask is not None:
                songs = postings >> np.uint64(32)
                keep = songs < mask.size
                keep[keep] = mask[songs[keep]]
                keys, postings = keys[keep], postings[keep]
            writer._append_stored(keys, postings)
    info = writer.finish()
    log.debug("merged %d segments (%d rows) into %s: %d rows, %d bytes in %.2f s", len(segments),
             sum(seg.rows for seg in segments), info.path, info.rows, info.nbytes, time.perf_counter() - started)
    return info


def plan_merge(row_counts: Sequence[int], ratio: float = 4.0) -> list[int]:
    """Indices of the newest segments to merge now (empty: none), given rows per segment, oldest
    first.  Going back from the newest, each older segment joins while it holds at most
    ``ratio`` times the rows of the newer ones joined so far; merged only if two or more joined.
    Sizes then shrink geometrically towards the newest: an index has O(log rows) segments, a
    row is rewritten O(log appends) times (about 2 log4), and a segment holding more than
    ``ratio`` times the rows of all newer ones together is never rewritten."""
    first = len(row_counts) - 1
    merged = row_counts[-1] if row_counts else 0
    while first > 0 and row_counts[first - 1] <= ratio * merged:
        first -= 1
        merged += row_counts[first]
    return list(range(first, len(row_counts))) if first < len(row_counts) - 1 else []

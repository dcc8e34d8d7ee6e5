"""SegmentIndex: the fingerprint rows of an embedded store, as memory-mapped segment files.

The files live in one directory; which of them make up the index, oldest first, and
which songs are live, is the catalogue's to say (:class:`~dejavu.database.sqlite.SQLiteDatabase`
keeps both in its SQLite file and hands them over with :meth:`SegmentIndex.use`).  A
process keeps the segments it uses open, so a lookup costs a few binary searches and a
gather from the page cache, shared by every process reading the same files.  Rows of
deleted songs stay in their segment, filtered out by the live mask, until a merge
rewrites it.
"""
from __future__ import annotations

import logging
import mmap
import os
import secrets
from typing import Iterable, Iterator, Sequence

import numpy as np

from dejavu.database.segment_writer import merge_segments, write_segment
from dejavu.database.segments import Segment, SegmentInfo, lookup_all
from dejavu.logic.store import Hits

log = logging.getLogger(__name__)

#: File name ending of a segment (temporary files of unfinished writes end in ".tmp").
SUFFIX = ".seg"


def new_name() -> str:
    """A fresh, unique segment file name."""
    return secrets.token_hex(8) + SUFFIX


class SegmentIndex:
    """The segments of one directory that the catalogue lists, open in this process."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.segments: list[Segment] = []
        self.live = np.zeros(0, dtype=bool)   # indexed by song id
        self._open: dict[str, Segment] = {}

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def use(self, names: Sequence[str], live_songs: Iterable[int]) -> None:
        """Make ``names`` (oldest first) the index and ``live_songs`` the songs it returns.

        Raises SegmentError (caused by FileNotFoundError) if a listed file is gone (a merge
        removed it after the list was read): read the list again."""
        opened = {name: self._open.get(name) or Segment.open(self.path(name)) for name in names}
        for name, segment in self._open.items():
            if name not in opened:
                segment.close()
        self._open = opened
        self.segments = [opened[name] for name in names]
        ids = np.fromiter(live_songs, dtype=np.int64)
        self.live = np.zeros(int(ids.max(initial=-1)) + 1, dtype=bool)
        self.live[ids] = True

    def _alive(self, hits: Hits) -> Hits:
        songs = hits[1]
        keep = songs < self.live.size
        keep[keep] = self.live[songs[keep]]
        return hits if keep.all() else (hits[0][keep], hits[1][keep], hits[2][keep])

    def lookup(self, keys: np.ndarray, song_ids: Sequence[int] | None = None) -> Hits:
        """Rows of live songs for the distinct ``keys`` (of ``song_ids`` only, if given),
        (hash, song_id, offset) int64 (r,), grouped by key in ascending key order."""
        return self._alive(lookup_all(self.segments, keys, song_ids))

    def counts(self, keys: np.ndarray) -> np.ndarray:
        """Rows per key of ``keys`` (deleted songs' rows included until merged away), int64."""
        total = np.zeros(np.shape(keys), dtype=np.int64)
        for segment in self.segments:
            total += segment.counts(keys)
        return total

    def rows(self) -> Iterator[Hits]:
        """Every live row, segment by segment, each in key order (chunks of int64 arrays)."""
        for segment in self.segments:
            for chunk in segment.iter_rows():
                yield self._alive(chunk)

    def write(self, rows: np.ndarray) -> SegmentInfo:
        """A new segment file of ``rows`` (n, 3) int64 (hash, song_id, offset); not listed yet."""
        os.makedirs(self.directory, exist_ok=True)
        return write_segment(self.path(new_name()), rows[:, 0], rows[:, 1], rows[:, 2])

    def merge(self, names: Sequence[str], live_songs: Iterable[int]) -> SegmentInfo:
        """One new segment with the live rows of the segments ``names``; not listed yet."""
        segments = [self._open.get(name) or Segment.open(self.path(name)) for name in names]
        try:
            return merge_segments(segments, self.path(new_name()), set(live_songs))
        finally:
            for name, segment in zip(names, segments):
                if name not in self._open:
                    segment.close()

    def remove_unlisted(self, listed: Iterable[str]) -> None:
        """Delete the files the catalogue does not list: segments merged away, and what writes
        that never committed left behind.  Only while holding the catalogue's write lock."""
        keep = set(listed)
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            if name not in keep and (name.endswith(SUFFIX) or name.endswith(".tmp")):
                try:
                    os.remove(self.path(name))
                except OSError as exc:  # removed by another process, or not ours to remove
                    log.debug("cannot remove %s: %s", name, exc)

    def warm(self) -> None:
        """Map every page of the segments into this process (read one value a page), so the
        first lookups pay no page faults: for long-running readers such as service workers."""
        for segment in self.segments:
            for array in (segment.keys, segment.starts, segment.songs, segment.offsets):
                step = max(1, mmap.PAGESIZE // max(array.itemsize, 1))
                int(np.asarray(array[::step]).sum())

    def nbytes(self) -> int:
        """Bytes of the segment files in use."""
        return sum(os.path.getsize(segment.path) for segment in self.segments)

    def close(self) -> None:
        for segment in self._open.values():
            segment.close()
        self._open, self.segments = {}, []

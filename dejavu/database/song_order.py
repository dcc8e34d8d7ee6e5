"""Fingerprint rows regrouped song by song, through sorted spill files (never held whole).

A store's rows come back in hash order (an index's order); loading a catalogue into a
server store and exporting a catalogue both need them song by song.  :class:`SongOrder`
sorts each chunk it is given by (song_id, offset) into a ``.npy`` file of its own, then
hands back batches of whole songs, each merged from the slices of every file.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from dejavu.exceptions import DatabaseError

#: A row in the spill files, in the order they are sorted: (song_id, offset, hash).
SPILL_ROW = np.dtype([("song_id", "<i4"), ("offset", "<i4"), ("hash", "<i8")])


class SongOrder:
    """Rows regrouped by song: :meth:`add` chunks, then read :meth:`batches`.

    ``song_ids``: the songs the rows may belong to (a row of another song raises
    DatabaseError naming ``kind``).  ``hash_order``: require the chunks in ascending hash
    order across calls (what ``load_catalogue`` promises its callers to check).
    """

    def __init__(self, directory: str, song_ids: np.ndarray, kind: str, hash_order: bool = True) -> None:
        self.directory, self.kind, self.hash_order = directory, kind, hash_order
        self.known = np.zeros(song_ids.max(initial=-1) + 1, dtype=bool)
        self.known[song_ids] = True
        self.per_song = np.zeros(self.known.size, dtype=np.int64)
        self.files: list[str] = []
        self.starts: list[np.ndarray] = []  # per file: where each song id's rows start
        self.last_hash: int | None = None

    @property
    def rows(self) -> int:
        return int(self.per_song.sum())

    def add(self, hashes: np.ndarray, song_ids: np.ndarray, offsets: np.ndarray) -> None:
        """Spill one chunk of (hash, song_id, offset) arrays (after checking its songs and order)."""
        hashes = np.asarray(hashes, dtype=np.int64)
        if not hashes.size:
            return
        if self.hash_order:
            if (hashes[1:] < hashes[:-1]).any() or (self.last_hash is not None and hashes[0] < self.last_hash):
                raise ValueError("load_catalogue: the rows are not in ascending hash order")
            self.last_hash = int(hashes[-1])
        counts = np.bincount(song_ids, minlength=self.known.size)
        if counts.size > self.known.size or counts[~self.known].any():
            stray = np.setdiff1d(song_ids, np.flatnonzero(self.known))[0]
            raise DatabaseError(f"{self.kind}: rows of song {stray}, which is not in the songs loaded")
        self.per_song += counts
        spilled = np.empty(hashes.size, dtype=SPILL_ROW)
        spilled["song_id"], spilled["offset"], spilled["hash"] = song_ids, offsets, hashes
        spilled = spilled[_song_order(spilled)]
        self.starts.append(np.searchsorted(spilled["song_id"], np.arange(self.known.size + 1)))
        self.files.append(os.path.join(self.directory, f"run-{len(self.files)}.npy"))
        np.save(self.files[-1], spilled)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """Rows (n, 3) int64 (hash, song_id, offset) in (song_id, offset) order, whole songs of
        about ``size`` rows at a time (songs without rows are skipped)."""
        runs = [np.load(path, mmap_mode="r") for path in self.files]
        for low, high in song_batches(self.per_song, size):
            merged = np.concatenate([run[starts[low]:starts[high]] for run, starts in zip(runs, self.starts)])
            merged = merged[_song_order(merged)]  # stable: rows given in hash order stay so
            repeated = (merged[1:] == merged[:-1])
            if repeated.any():
                row = merged[1:][repeated][0]
                raise ValueError(f"load_catalogue: the row ({row['hash']}, {row['song_id']}, {row['offset']}) "
                                 "is given twice")
            yield np.column_stack([merged["hash"], merged["song_id"], merged["offset"]]).astype(np.int64)


def song_batches(rows_per_song: np.ndarray | list[int], size: int) -> Iterator[tuple[int, int]]:
    """Index ranges [low, high) of consecutive songs holding about ``size`` rows together (at
    least one song each), until no song with rows is left."""
    ends = np.cumsum(rows_per_song)
    low = 0
    while low < ends.size and ends[-1] > (ends[low - 1] if low else 0):
        high = max(low + 1, int(np.searchsorted(ends, (ends[low - 1] if low else 0) + size, side="right")))
        yield low, high
        low = high


def _song_order(rows: np.ndarray) -> np.ndarray:
    """Indices sorting spilled ``rows`` by (song_id, offset), stably (rows in hash order stay so)."""
    key = (rows["song_id"].astype(np.int64) << 32) | (rows["offset"].astype(np.int64) + (1 << 31))
    return np.argsort(key, kind="stable")

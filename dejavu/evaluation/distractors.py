"""Synthetic songs whose keys follow the real key distribution: distractors for an
evaluation, and the padding of the latency bench's large catalogues.

A synthetic row's hash is drawn from the real rows' hashes, each distinct hash as often
as it occurs there (a multinomial share), so common hashes stay common; its song and
its offset are uniform.  Per stored row, a synthetic song then returns as many rows to
a query of a real song as another real song does, so it costs the search as much and
competes for its votes as much; it matches nothing in particular.

* :func:`synthetic_rows`: the real rows plus synthetic ones, in key order (a bulk load).
* :func:`add_distractors`: synthetic songs added to any :class:`~dejavu.logic.store.Store`
  through ``store_songs``, a bounded batch at a time.
"""
from __future__ import annotations

import hashlib
import logging
import time
from typing import Any, Collection, Iterator

import numpy as np

from dejavu.logic.store import Hits, NewSong, Store

log = logging.getLogger(__name__)

#: Rows generated (and sorted) at a time by :func:`synthetic_rows`.
CHUNK_ROWS = 1 << 24
#: Rows handed to one ``store_songs`` call by :func:`add_distractors`.
BATCH_ROWS = 2_000_000
DISTRACTOR_PREFIX = "distractor "


def _shares(real_count: np.ndarray, n_rows: int, rng: np.random.Generator) -> np.ndarray:
    """How many of ``n_rows`` synthetic rows each distinct real hash gets: a multinomial
    draw proportional to ``real_count`` (its rows in the real store); shape as ``real_count``."""
    return rng.multinomial(n_rows, real_count / real_count.sum())


def _draw(shares: np.ndarray, song_ids: tuple[int, int], frames: int,
          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``shares.sum()`` synthetic rows: (hash rank, song id, offset) int64 arrays.

    Rank ``k`` stands for the k-th hash of ``shares`` (repeated ``shares[k]`` times, in
    rank order); song ids are uniform in the inclusive range ``song_ids``, offsets
    uniform in ``[0, frames)`` frames."""
    n = int(shares.sum())
    rank = np.repeat(np.arange(shares.size, dtype=np.int64), shares)
    song = rng.integers(song_ids[0], song_ids[1] + 1, n, dtype=np.int64)
    offset = rng.integers(0, frames, n, dtype=np.int64)
    return rank, song, offset


def _pack(high: np.ndarray, mid: np.ndarray, low: np.ndarray, mid_bits: int, low_bits: int) -> np.ndarray:
    """Three non-negative int64 columns as one sortable int64 key (high, mid, low)."""
    return (high << (mid_bits + low_bits)) | (mid << low_bits) | low


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``keys`` sorted, duplicates dropped (in place where numpy allows)."""
    keys.sort()
    return keys[np.r_[True, keys[1:] != keys[:-1]]]


def synthetic_rows(real: np.ndarray, n_rows: int, song_ids: tuple[int, int], frames: int,
                   rng: np.random.Generator) -> Iterator[Hits]:
    """The real rows plus ``n_rows`` synthetic ones, in (hash, song_id, offset) order.

    ``real``: shape (n, 3) int64 rows (hash, song_id, offset in frames), sorted by hash.
    Synthetic rows take song ids in the inclusive range ``song_ids`` and offsets in
    ``[0, frames)``; each distinct real hash gets a multinomial share of ``n_rows``
    proportional to its real count.  Duplicate keys are dropped.  Yields about
    CHUNK_ROWS rows at a time, each chunk a hash range.
    """
    hashes, first, real_count = np.unique(real[:, 0], return_index=True, return_counts=True)
    synth_count = _shares(real_count, n_rows, rng)
    ends = np.cumsum(synth_count + real_count)
    off_bits = int(max(frames, real[:, 2].max() + 1)).bit_length()
    song_bits = int(max(song_ids[1], real[:, 1].max())).bit_length()
    rank_shift = song_bits + off_bits
    assert hashes.size.bit_length() + rank_shift <= 63, "keys do not fit in 63 bits"
    i = 0
    while i < hashes.size:
        done = ends[i - 1] if i else 0
        j = min(hashes.size, max(i + 1, int(np.searchsorted(ends, done + CHUNK_ROWS, side="right"))))
        rank, song, offset = _draw(synth_count[i:j], song_ids, frames, rng)
        mine = real[first[i]:first[j] if j < hashes.size else len(real)]
        real_rank = np.repeat(np.arange(j - i, dtype=np.int64), real_count[i:j])
        keys = _sorted_unique(np.concatenate([_pack(rank, song, offset, song_bits, off_bits),
                                              _pack(real_rank, mine[:, 1], mine[:, 2], song_bits, off_bits)]))
        yield (hashes[i + (keys >> rank_shift)], (keys >> off_bits) & ((1 << song_bits) - 1),
               keys & ((1 << off_bits) - 1))
        i = j


def distractor_name(number: int) -> str:
    """``"distractor 000001"`` for ``number`` 1."""
    return f"{DISTRACTOR_PREFIX}{number:06d}"


def distractor_sha1(name: str) -> str:
    """The distractor's file SHA1 (uppercase hex): the SHA1 of its name, so a re-run adds nothing."""
    return hashlib.sha1(name.encode("utf-8")).hexdigest().upper()


def real_hashes(store: Any, song_ids: Collection[int] | None = None) -> np.ndarray:
    """The hash of every stored row (of ``song_ids`` only, if given): shape (n,), int64.

    Reads all rows through the original API ``store.query()`` (every SQL store has it;
    it is not part of the ``Store`` protocol): a list of tuples, about 200 bytes of
    transient memory per stored row."""
    query = getattr(store, "query", None)
    if query is None:
        raise TypeError(f"{type(store).__name__} has no query(): pass the real hashes to add_distractors")
    rows = np.array(query(), dtype=np.int64).reshape(-1, 3)
    if song_ids is not None:
        rows = rows[np.isin(rows[:, 1], np.fromiter(song_ids, dtype=np.int64))]
    return rows[:, 0].copy()


def _songs(distinct: np.ndarray, real_count: np.ndarray, n_songs: int, rows_per_song: float, frames: int,
           rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_songs`` synthetic songs' (hashes int64, offsets int32 in ``[0, frames)``), each sorted
    by (hash, offset) without duplicates; ``round(n_songs · rows_per_song)`` rows drawn in all,
    hashes from ``distinct`` in proportion to ``real_count``, song and offset uniform."""
    rank_bits, off_bits = distinct.size.bit_length(), max(frames - 1, 1).bit_length()
    assert max(n_songs - 1, 1).bit_length() + rank_bits + off_bits <= 63, "keys do not fit in 63 bits"
    shares = _shares(real_count, round(n_songs * rows_per_song), rng)
    rank, song, offset = _draw(shares, (0, n_songs - 1), frames, rng)
    keys = _sorted_unique(_pack(song, rank, offset, rank_bits, off_bits))  # song by song
    bounds = np.searchsorted(keys >> (rank_bits + off_bits), np.arange(n_songs + 1))
    hashes = distinct[(keys >> off_bits) & ((1 << rank_bits) - 1)]
    offsets = (keys & ((1 << off_bits) - 1)).astype(np.int32)
    return [(hashes[a:b], offsets[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def add_distractors(store: Store, n_songs: int, song_seconds: float, rng: np.random.Generator, *,
                    frame_seconds: float, real_song_ids: Collection[int] | None = None,
                    hashes: np.ndarray | None = None, batch_rows: int = BATCH_ROWS,
                    log_every: int = 1000) -> int:
    """Add ``n_songs`` synthetic songs of ``song_seconds`` s each to ``store``; return the rows added.

    The songs are named ``distractor 000001`` … with the SHA1 of their name as file SHA1;
    songs already stored are skipped.  Batch k (songs k·B+1 … (k+1)·B, with B songs of
    about ``batch_rows`` rows) is drawn from a generator of its own, seeded by ``rng`` and k,
    so a song's rows do not depend on ``n_songs`` or on what was stored: a re-run adds
    nothing, a larger ``n_songs`` adds the songs missing as one run would have.  Rows per
    audio second are those of the real songs (``real_song_ids``, default every stored song
    but distractors, from ``store.get_songs()``); hashes follow their key distribution
    (``hashes``: shape (n,), one entry per real row; default :func:`real_hashes`).
    Offsets are uniform in ``[0, song_seconds / frame_seconds)`` frames.  One
    ``store_songs`` call per batch: memory peaks near 100 bytes × ``batch_rows``.
    """
    stored = store.get_fingerprinted_sha1s()
    missing = {k for k in range(1, n_songs + 1) if distractor_sha1(distractor_name(k)) not in stored}
    base_seed = int(rng.integers(2**63))
    if not missing:
        log.info("the %d distractor songs are stored already", n_songs)
        return 0
    songs = store.get_songs()
    if real_song_ids is None:
        real = [s for s in songs if s["file_sha1"] != distractor_sha1(s["song_name"])]
    else:
        wanted = set(real_song_ids)
        real = [s for s in songs if s["song_id"] in wanted]
    seconds = sum(float(s["duration"]) for s in real)
    if not real or seconds <= 0:
        raise ValueError("distractors need real songs in the store to copy their key distribution from")
    rows_per_second = sum(int(s["total_hashes"]) for s in real) / seconds
    if hashes is None:
        hashes = real_hashes(store, [s["song_id"] for s in real])
    distinct, real_count = np.unique(hashes, return_counts=True)
    frames = int(song_seconds / frame_seconds)
    per_batch = max(1, int(batch_rows // max(rows_per_second * song_seconds, 1.0)))
    log.info("adding %d distractor songs of %g s (%.1f rows per audio second, %d distinct real hashes), "
             "%d songs per batch", len(missing), song_seconds, rows_per_second, distinct.size, per_batch)
    start, added_rows, added_songs = time.perf_counter(), 0, 0
    for lo in range(0, n_songs, per_batch):
        numbers = [k for k in range(lo + 1, min(lo + per_batch, n_songs) + 1) if k in missing]
        if numbers:
            drawn = _songs(distinct, real_count, per_batch, rows_per_second * song_seconds, frames,
                           np.random.default_rng([base_seed, lo // per_batch]))
            batch = [NewSong(distractor_name(k), distractor_sha1(distractor_name(k)), *drawn[k - lo - 1],
                             float(song_seconds)) for k in numbers]
            ids = store.store_songs(batch)  # None: stored meanwhile by someone else
            added_rows += sum(int(song.hashes.size) for song, i in zip(batch, ids) if i is not None)
            added_songs += sum(i is not None for i in ids)
        done = min(lo + per_batch, n_songs)
        if done // log_every > lo // log_every or done == n_songs:
            log.info("distractors: %d/%d songs, %s rows added, %.0f s", done, n_songs,
                     f"{added_rows:,}", time.perf_counter() - start)
    if added_songs < n_songs:
        log.info("%d of the %d distractor songs were stored already", n_songs - added_songs, n_songs)
    return added_rows

"""Store: what the pipeline needs of a fingerprint store (the seam every backend implements).

Logic functions take ``(store, config)`` and their inputs; they never see the
:class:`~dejavu.Dejavu` facade.  The SQL backends in :mod:`dejavu.database` implement
this protocol, and so can any other store (an in-memory index, shards): nothing under
:mod:`dejavu.logic` changes when one is added.

Arrays are numpy int64 unless stated; a song is a dict with at least ``song_id``,
``song_name``, ``file_sha1`` (uppercase hex), ``total_hashes`` and ``duration`` (s).
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np

#: Stored rows found for query hashes: (hash, song_id, offset) arrays of equal length (r,).
Hits = tuple[np.ndarray, np.ndarray, np.ndarray]


class NewSong(NamedTuple):
    """A fingerprinted file, ready to be stored as one song."""

    song_name: str
    file_sha1: str            # uppercase hex SHA1 of the file's bytes
    hashes: np.ndarray        # int64, shape (m,)
    offsets: np.ndarray       # int32, shape (m,), frames
    duration: float           # seconds of audio fingerprinted
    source_path: str | None = None  # the file it came from (for rebuilding the store)


@runtime_checkable
class Store(Protocol):
    """A fingerprint store as the pipeline uses it."""

    def return_matches(self, hashes: np.ndarray, song_ids: Sequence[int] | None = None) -> Hits:
        """Stored rows whose hash is in ``hashes`` (of ``song_ids`` only, if given), grouped by hash."""

    def count_matches(self, hashes: np.ndarray) -> np.ndarray:
        """Stored rows per hash of ``hashes`` (distinct, ascending), without reading the rows."""

    def get_songs_by_ids(self, song_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Fingerprinted songs by id; ids not stored are left out."""

    def get_songs(self) -> list[dict[str, Any]]:
        """Every fingerprinted song, by id."""

    def get_fingerprinted_sha1s(self) -> set[str]:
        """Uppercase hex SHA1 of every fingerprinted file."""

    def store_songs(self, songs: Sequence[NewSong]) -> list[int | None]:
        """Store songs, each all or nothing; their ids (None: that file SHA1 was stored already).

        Raises DatabaseUnavailableError when the store cannot be reached (nothing of the
        failed call is stored, a retry may succeed)."""

    def delete_songs_by_id(self, song_ids: Iterable[int]) -> int:
        """Delete songs and their fingerprints; how many were deleted."""

    def song_rows(self, songs: Sequence[Mapping[str, Any]], batch_rows: int) -> Iterator[np.ndarray]:
        """Rows (n, 3) (hash, song_id, offset) of ``songs`` (song dicts), whole songs of about
        ``batch_rows`` rows at a time, in (song_id, offset) order (for exporting a catalogue)."""

    def stats(self) -> dict[str, Any]:
        """Counts and sizes: songs, fingerprints, audio_seconds, size_bytes, database_type."""

    def close(self) -> None:
        """Release connections (a later call reopens them)."""

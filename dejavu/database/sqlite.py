"""SQLite: the embedded, zero-setup default store.

The catalogue (songs, recorded settings, the list of live segments) is one SQLite file in
WAL mode; the fingerprint rows are memory-mapped segment files beside it, in the
directory ``<path>-segments`` (:mod:`dejavu.database.index`, :mod:`dejavu.database.segments`).

Writes hold SQLite's write lock: a batch of songs is written as one new segment file
(crash-safe: temporary name, fsync, rename), and the songs, the segment's catalogue row
and their ``fingerprinted`` flag commit in one transaction, so a kill at any moment
leaves no partial song visible (an unlisted file is removed by the next write).  After a
write the newest segments are merged while they are of similar size (O(log rows)
segments); deleted songs' rows are dropped when their segment is merged, or by
:meth:`SQLiteDatabase.compact`.  Readers see the catalogue's last commit (SQLite's
snapshot) and the immutable files it lists.  Where nothing can be written (a read-only
mount) or the disk is full, the store is opened read-only; a full disk is handled as
:mod:`dejavu.database.storage` describes.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
from typing import Any, Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote as url_quote

import numpy as np

from dejavu.config import DEFAULT_SQLITE_PATH
from dejavu.database.base import BaseDatabase, _new_song, hex_to_int64
from dejavu.database.index import SegmentIndex, new_name
from dejavu.database.segment_writer import SegmentWriter, plan_merge
from dejavu.database.segments import CHUNK_ROWS, SegmentError
from dejavu.database.song_order import SongOrder
from dejavu.database.storage import DISK_FULL, Reserve, free_bytes, is_full, megabytes, read_only_reason
from dejavu.exceptions import ConfigError, DatabaseError
from dejavu.logic.store import Hits, NewSong

log = logging.getLogger(__name__)

#: Deleted songs' rows may make up this share of the segments before a delete compacts them.
DEAD_SHARE = 0.25


class SQLiteDatabase(BaseDatabase):
    """Songs in SQLite, fingerprints in memory-mapped segments: a lookup is a binary search
    per key and a gather of numpy arrays from the page cache, with no row crossing a driver."""

    type = "sqlite"
    max_params = 32766 // 3 * 3
    driver_errors = (sqlite3.Error,)
    tables_sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    tables = ("songs", "segments")
    schema = (
        """CREATE TABLE IF NOT EXISTS songs (
            song_id INTEGER PRIMARY KEY AUTOINCREMENT,
            song_name TEXT NOT NULL,
            fingerprinted INTEGER NOT NULL DEFAULT 0,
            file_sha1 BLOB NOT NULL UNIQUE,
            total_hashes INTEGER NOT NULL DEFAULT 0,
            duration REAL NOT NULL DEFAULT 0,
            date_created TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
            date_modified TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
            source_path TEXT)""",
        """CREATE TABLE IF NOT EXISTS segments (
            segment_id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            rows INTEGER NOT NULL)""",
    )

    def __init__(self, path: str = DEFAULT_SQLITE_PATH, timeout: float = 60.0, max_rows_per_hash: int | None = None,
                 **options: Any) -> None:
        if options:
            raise ConfigError(f"sqlite: unknown key 'database.{sorted(options)[0]}' "
                              "(known: path, timeout, max_rows_per_hash)")
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ConfigError(f"sqlite: 'database.path' must be a file name, got {path!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 <= timeout < 1e6:
            raise ConfigError(f"sqlite: 'database.timeout' must be a number of seconds, got {timeout!r}")
        super().__init__(max_rows_per_hash, path=path, timeout=timeout)
        self.path = os.fspath(path)
        self.timeout = float(timeout)
        self.index = SegmentIndex(self.path + "-segments")
        self._seen: tuple[int, int] | None = None   # (connection, data_version) the index reflects
        self.reserve = Reserve(self.path)           # space for opening and deleting on a full disk
        self.read_only: str | None = None           # why the store cannot be written, if it cannot

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise DatabaseError(f"sqlite: cannot open {self.path}: directory {directory} does not exist")
        self.read_only = read_only_reason(directory)
        try:
            try:
                return _AutoBegin(self._open())
            except sqlite3.Error as exc:
                if self.read_only is not None or not is_full(exc, directory):
                    raise
                self.read_only = DISK_FULL   # no room for the side files: read the store as it is
                return _AutoBegin(self._open())
        except sqlite3.Error as exc:
            raise DatabaseError(f"sqlite: cannot open {self.path}: {exc}") from None

    def _open(self) -> sqlite3.Connection:
        """A connection: in WAL mode, or where nothing can be written, read-only (side files
        are not created; a WAL store whose ``-shm`` is not there is read as it is)."""
        options: dict[str, Any] = {"timeout": self.timeout, "isolation_level": None, "cached_statements": 16,
                                   "check_same_thread": False}
        if self.read_only is None:
            conn = sqlite3.connect(self.path, **options)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        else:
            uri = f"file:{url_quote(os.path.abspath(self.path))}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, **options)
            try:
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
            except sqlite3.Error:
                conn.close()
                conn = sqlite3.connect(uri + "&immutable=1", uri=True, **options)
        conn.execute("PRAGMA busy_timeout=%d" % int(self.timeout * 1000))
        return conn

    @property
    def location(self) -> str:
        return self.path

    def _begin(self, cur: Any) -> None:
        if self.read_only is not None:
            raise DatabaseError(f"sqlite: {self.path} is read-only ({self.read_only}): it can be listed and "
                                "queried, not changed")
        cur.execute("BEGIN IMMEDIATE")  # take the write lock now: no deadlock on upgrade
        self._seen = None               # this connection's own commits do not move data_version

    def _is_duplicate(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    # ----------------------------------------------------------------- the index as committed
    def _current(self) -> SegmentIndex:
        """The index as of the catalogue's last commit (read again only when it changed)."""
        conn = self.connection
        for attempt in range(3):
            (version,), = self._fetch("PRAGMA data_version")
            if self._seen == (id(conn), version):
                return self.index
            with self.cursor() as cur:
                cur.execute("BEGIN")  # one snapshot for the segment list and the live songs
                names = [row[0] for row in cur.execute("SELECT name FROM segments ORDER BY segment_id")]
                live = [row[0] for row in cur.execute("SELECT song_id FROM songs WHERE fingerprinted = 1")]
            try:
                self.index.use(names, live)
            except SegmentError as exc:
                if not isinstance(exc.__cause__, FileNotFoundError):
                    raise
                continue  # merged away after the list was read: read it again
            self._seen = (id(conn), version)
            return self.index
        raise DatabaseError(f"sqlite: {self.path}: the segment files keep changing under this reader")

    def return_matches(self, hashes: np.ndarray, song_ids: Sequence[int] | None = None) -> Hits:
        wanted = np.unique(np.asarray(hashes, dtype=np.int64))
        index = self._current()
        if self.max_rows_per_hash is not None:
            wanted = wanted[index.counts(wanted) <= self.max_rows_per_hash]
        return index.lookup(wanted, song_ids)

    def count_matches(self, hashes: np.ndarray) -> np.ndarray:
        return self._current().counts(np.asarray(hashes, dtype=np.int64))

    def query(self, fingerprint: int | str | None = None) -> list[tuple]:
        """Rows (hash, song_id, offset) for one hash (int, or the original's hex text), or all
        rows when None (original API)."""
        if fingerprint is None:
            chunks: Iterable[Hits] = self._current().rows()
        else:
            key = hex_to_int64(fingerprint) if isinstance(fingerprint, str) else int(fingerprint)
            chunks = [self.return_matches(np.array([key], dtype=np.int64))]
        return [row for chunk in chunks for row in zip(*(a.tolist() for a in chunk))]

    def warm(self) -> None:
        """Map every page of the index into this process (see SegmentIndex.warm); seconds per 10 GB
        when the files are in the page cache, a full read when they are not."""
        self._current().warm()

    def get_num_fingerprints(self) -> int:
        """Stored rows of the fingerprinted songs."""
        return int(self._fetch("SELECT COALESCE(SUM(total_hashes), 0) FROM songs WHERE fingerprinted = 1")[0][0])

    def size_bytes(self) -> int | None:
        (pages,), = self._fetch("PRAGMA page_count")
        (size,), = self._fetch("PRAGMA page_size")
        (free,), = self._fetch("PRAGMA freelist_count")
        return int((pages - free) * size) + self._current().nbytes()

    # ----------------------------------------------------------------- writing
    def _bulk_insert(self, cur: Any, rows: np.ndarray) -> None:
        """Write ``rows`` as a new segment and list it, inside the caller's write transaction."""
        self.index.remove_unlisted(row[0] for row in cur.execute("SELECT name FROM segments"))
        if len(rows):
            info = self.index.write(rows)
            cur.execute("INSERT INTO segments (name, rows) VALUES (?, ?)", (os.path.basename(info.path), info.rows))

    def _delete_fingerprints(self, cur: Any, marks: str, song_ids: list[int]) -> None:
        """Nothing to do now: the rows of songs no longer in the catalogue are filtered out,
        and dropped when their segment is merged (see delete_songs_by_id)."""

    def store_songs(self, songs: Sequence[NewSong]) -> list[int | None]:
        """Store songs as one new segment (space in proportion to their rows), then merge the
        newest segments if there is room (see _merge).  A full disk is one DatabaseError saying
        how much space the songs need; nothing of them is stored then."""
        try:
            ids = super().store_songs(songs)
        except (DatabaseError, OSError) as exc:
            directory = os.path.dirname(os.path.abspath(self.path))
            if not (is_full(exc, directory) or self.read_only == DISK_FULL):
                raise
            rows = sum(np.size(_new_song(song).hashes) for song in songs)
            raise DatabaseError(f"sqlite: {self.path}: no space left on the device: storing {len(songs)} song(s) "
                                f"needs about {megabytes(16 * rows + (1 << 16))}, {megabytes(free_bytes(directory))} "
                                "free; they were not stored") from None
        self._merge(lambda counts: plan_merge(counts), "merge the newest segments")
        self.reserve.take()
        return ids

    def delete_songs_by_id(self, song_ids: Iterable[int], batch_size: int = 1000) -> int:
        """Delete songs (on a full disk, with the space of the store's reserve); when deleted
        songs' rows exceed DEAD_SHARE of all, compact if there is room (see _merge)."""
        song_ids = list(song_ids)
        try:
            deleted = super().delete_songs_by_id(song_ids, batch_size)
        except DatabaseError as exc:
            directory = os.path.dirname(os.path.abspath(self.path))
            full = is_full(exc, directory) or self.read_only == DISK_FULL
            if not full:
                raise
            if not self.reserve.release():   # the catalogue's journal and shared memory need pages
                needed = (1 << 15) + 4096 * (16 + 4 * len(song_ids))
                raise DatabaseError(f"sqlite: {self.path}: the disk is full: deleting {len(song_ids)} song(s) needs "
                                    f"about {megabytes(needed)} free, {megabytes(free_bytes(directory))} "
                                    "free") from None
            self.close()   # opened again, with the room the reserve held
            deleted = super().delete_songs_by_id(song_ids, batch_size)
        (stored,), = self._fetch("SELECT COALESCE(SUM(rows), 0) FROM segments")
        (kept,), = self._fetch("SELECT COALESCE(SUM(total_hashes), 0) FROM songs")
        if stored and 1 - kept / stored > DEAD_SHARE:
            self.compact()
        self.reserve.take()
        return deleted

    def compact(self) -> None:
        """Merge every segment into one, without the rows of deleted songs (their space comes back)."""
        self._merge(lambda counts: list(range(len(counts))) if counts else [],
                    "drop the deleted songs' rows (their space comes back then)")

    def _merge(self, plan: Any, purpose: str) -> None:
        """Merge the segments ``plan(rows per segment, oldest first)`` picks, under the write lock.
        Without the room for the new segment, nothing changes but a warning saying how much
        is needed (the next write or delete tries again)."""
        with self.cursor(write=True) as cur:
            listed = cur.execute("SELECT segment_id, name, rows FROM segments ORDER BY segment_id").fetchall()
            chosen = [listed[i] for i in plan([row[2] for row in listed])]
            if not chosen or (len(chosen) == 1 and len(listed) > 1):
                return
            kept = [row[0] for row in cur.execute("SELECT song_id FROM songs")]  # deleted songs' rows go
            try:
                info = self.index.merge([row[1] for row in chosen], kept)
            except OSError as exc:
                if not is_full(exc, self.index.directory):
                    raise
                needed = 2 * sum(os.path.getsize(self.index.path(row[1])) for row in chosen)
                log.warning("sqlite: %s: no space to %s: rewriting %d segment(s) needs about %s, %s free; the "
                            "store is complete and intact, and it is tried again on the next write or delete",
                            self.path, purpose, len(chosen), megabytes(needed),
                            megabytes(free_bytes(self.index.directory)))
                return
            cur.execute(f"DELETE FROM segments WHERE segment_id IN ({', '.join('?' * len(chosen))})",
                        [row[0] for row in chosen])
            cur.execute("INSERT INTO segments (name, rows) VALUES (?, ?)", (os.path.basename(info.path), info.rows))
        with self.cursor(write=True) as cur:
            self.index.remove_unlisted(row[0] for row in cur.execute("SELECT name FROM segments"))

    def empty(self) -> None:
        """Drop every song, segment and recorded setting, then recreate the tables."""
        super().empty()
        with self.cursor(write=True) as cur:
            self.index.remove_unlisted(())
            cur.execute("SELECT 1")

    def load_catalogue(self, songs: Iterable[tuple[int, str, str, float]], rows: Iterable[Hits]) -> int:
        """Fill an EMPTY store at bulk speed (e.g. a large synthetic catalogue); return the rows stored.

        ``songs``: (song_id, song_name, file_sha1 as hex, duration in s), stored as
        fingerprinted, each with ``total_hashes`` = its number of rows.  ``rows``: chunks of
        (hash, song_id, offset) int64 arrays without duplicate rows, in ascending hash order
        across chunks: they are streamed into one segment, never held whole.

        Raises DatabaseError if the store already holds a song, or a row's song is not in
        ``songs``; ValueError if the chunks are not in hash order.
        """
        catalogue = [(int(i), str(name), bytes.fromhex(sha1), float(duration)) for i, name, sha1, duration in songs]
        ids = np.array([song[0] for song in catalogue], dtype=np.int64)
        known = np.zeros(ids.max(initial=-1) + 1, dtype=bool)
        known[ids] = True
        per_song = np.zeros(known.size, dtype=np.int64)
        self.setup()
        with self.cursor(write=True) as cur:
            (used,), = cur.execute("SELECT EXISTS (SELECT 1 FROM songs) OR EXISTS (SELECT 1 FROM segments)")
            if used:
                raise DatabaseError(f"sqlite: {self.path} is not empty; a catalogue loads into an empty store")
            self.index.remove_unlisted(())
            os.makedirs(self.index.directory, exist_ok=True)
            with SegmentWriter(self.index.path(new_name())) as writer:
                for hashes, song_ids, offsets in rows:
                    counts = np.bincount(song_ids, minlength=known.size)
                    if counts.size > known.size or counts[~known].any():
                        stray = np.setdiff1d(song_ids, ids)[0]
                        raise DatabaseError(f"sqlite: rows of song {stray}, which is not in the songs loaded")
                    per_song += counts
                    writer.append(hashes, song_ids, offsets)
                info = writer.finish()
            cur.execute("INSERT INTO segments (name, rows) VALUES (?, ?)", (os.path.basename(info.path), info.rows))
            cur.executemany("INSERT INTO songs (song_id, song_name, fingerprinted, file_sha1, total_hashes, "
                            "duration) VALUES (?, ?, 1, ?, ?, ?)",
                            ((i, name, sha1, int(per_song[i]), duration) for i, name, sha1, duration in catalogue))
        return int(per_song.sum())

    def song_rows(self, songs: Sequence[Mapping[str, Any]], batch_rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        """Rows (n, 3) int64 (hash, song_id, offset) of ``songs`` (dicts with ``song_id``), whole
        songs of about ``batch_rows`` rows at a time, in (song_id, offset) order: the index's
        rows regrouped by song through sorted spill files in ``tempfile``'s directory (16
        bytes a row)."""
        ids = np.array(sorted(int(song["song_id"]) for song in songs), dtype=np.int64)
        with tempfile.TemporaryDirectory(prefix="dejavu-export-") as spill:
            order = SongOrder(spill, ids, self.type, hash_order=False)
            for hashes, song_ids, offsets in self._current().rows():
                keep = song_ids < order.known.size  # rows of these songs only
                keep[keep] = order.known[song_ids[keep]]
                order.add(hashes[keep], song_ids[keep], offsets[keep])
            yield from order.batches(batch_rows)

    def close(self) -> None:
        """Close the connection and the segment files (a later call reopens both)."""
        super().close()
        self.index.close()
        self._seen = None


class _AutoBegin:
    """A sqlite3 connection in autocommit mode whose commit/rollback are no-ops
    outside a transaction, so BaseDatabase can treat it like any DB-API connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def cursor(self) -> sqlite3.Cursor:
        return self._conn.cursor()

    def commit(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")

    def rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        self._conn.close()

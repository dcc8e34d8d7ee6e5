"""SQLite dialect: the embedded, zero-setup default store (one file, WAL mode)."""
from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Any, Iterable

import numpy as np

from dejavu.config import DEFAULT_SQLITE_PATH
from dejavu.database.base import BaseDatabase
from dejavu.exceptions import ConfigError, DatabaseError
from dejavu.logic.store import Hits

#: Bytes of the database file read through a memory map.
MMAP_BYTES = 1 << 31
#: KiB of page cache while bulk-loading a catalogue.
LOAD_CACHE_KIB = 1 << 18


class SQLiteDatabase(BaseDatabase):
    """Fingerprints live in a WITHOUT ROWID table keyed by (hash, song_id, offset):
    the key is the index, so each row is stored once (≈ 20 bytes).

    A lookup passes the query hashes as one JSON array (one cached statement for any
    query) and gets each hash's rows back as one text (``group_concat``): building
    Python tuples, not SQLite, was most of the cost of fetching rows one by one.
    """

    type = "sqlite"
    max_params = 32766 // 3 * 3
    driver_errors = (sqlite3.Error,)
    hash_table = "json_each(?) AS q"
    hit_list = "group_concat(f.song_id * 4294967296 + f.{offset})"
    tables_sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
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
        """CREATE TABLE IF NOT EXISTS fingerprints (
            hash INTEGER NOT NULL,
            song_id INTEGER NOT NULL,
            "offset" INTEGER NOT NULL,
            PRIMARY KEY (hash, song_id, "offset")) WITHOUT ROWID""",
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

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise DatabaseError(f"sqlite: cannot open {self.path}: directory {directory} does not exist")
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None, cached_statements=16,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=%d" % int(self.timeout * 1000))
            # Read through a memory map (up to SQLite's usual 2 GB cap): a lookup's page
            # reads cost no system call and no copy into a per-connection cache.
            conn.execute("PRAGMA mmap_size=%d" % MMAP_BYTES)
            # Up to 64 MiB of page cache (used only as filled): a batch of songs rewrites
            # index pages all over the table, and re-reading them dominated ingest time.
            conn.execute("PRAGMA cache_size=-65536")
        except sqlite3.Error as exc:
            raise DatabaseError(f"sqlite: cannot open {self.path}: {exc}") from None
        return _AutoBegin(conn)

    @property
    def location(self) -> str:
        return self.path

    def load_catalogue(self, songs: Iterable[tuple[int, str, str, float]], rows: Iterable[Hits]) -> int:
        """Fill an EMPTY store at bulk speed (e.g. a large synthetic catalogue); return the rows stored.

        ``songs``: (song_id, song_name, file_sha1 as hex, duration in s), stored as
        fingerprinted, each with ``total_hashes`` = its number of rows.  ``rows``: chunks of
        (hash, song_id, offset) int64 arrays without duplicate rows; when the rows come in
        key order (hash, song_id, offset), within and across chunks, the table is written
        sequentially (any order works, slower).  One transaction, the file locked
        exclusively and the journal off while loading, then back in WAL mode: a failed
        load leaves the file unusable, so load into a new file and rename it when done.

        Raises DatabaseError if the store already holds a song or a row, or a row's song
        is not in ``songs``.
        """
        catalogue = [(int(i), str(name), bytes.fromhex(sha1), float(duration)) for i, name, sha1, duration in songs]
        ids = np.array([song[0] for song in catalogue], dtype=np.int64)
        known = np.zeros(ids.max(initial=-1) + 1, dtype=bool)
        known[ids] = True
        per_song = np.zeros(known.size, dtype=np.int64)
        self.setup()
        self.close()
        try:
            with contextlib.closing(sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)) as conn:
                (used,), = conn.execute("SELECT EXISTS (SELECT 1 FROM songs) OR EXISTS (SELECT 1 FROM fingerprints)")
                if used:
                    raise DatabaseError(f"sqlite: {self.path} is not empty; a catalogue loads into an empty store")
                for pragma in ("journal_mode = OFF", "synchronous = OFF", "locking_mode = EXCLUSIVE",
                               f"cache_size = -{LOAD_CACHE_KIB}"):
                    conn.execute(f"PRAGMA {pragma}")
                cur = conn.cursor()
                cur.execute("BEGIN EXCLUSIVE")
                for hashes, song_ids, offsets in rows:
                    counts = np.bincount(song_ids, minlength=known.size)
                    if counts.size > known.size or counts[~known].any():
                        stray = np.setdiff1d(song_ids, ids)[0]
                        raise DatabaseError(f"sqlite: rows of song {stray}, which is not in the songs loaded")
                    per_song += counts
                    self._bulk_insert(cur, np.stack([hashes, song_ids, offsets], axis=1))
                cur.executemany("INSERT INTO songs (song_id, song_name, fingerprinted, file_sha1, total_hashes, "
                                "duration) VALUES (?, ?, 1, ?, ?, ?)",
                                ((i, name, sha1, int(per_song[i]), duration) for i, name, sha1, duration in catalogue))
                cur.execute("COMMIT")
                conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as exc:
            raise DatabaseError(f"sqlite: cannot load a catalogue into {self.path}: {exc}") from exc
        return int(per_song.sum())

    def _begin(self, cur: Any) -> None:
        cur.execute("BEGIN IMMEDIATE")  # take the write lock now: no deadlock on upgrade

    def _is_duplicate(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def size_bytes(self) -> int | None:
        (pages,), = self._fetch("PRAGMA page_count")
        (size,), = self._fetch("PRAGMA page_size")
        (free,), = self._fetch("PRAGMA freelist_count")
        return int((pages - free) * size)


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

"""Store: the shared SQL core behind every backend.

Two tables, as in the original dejavu:

* ``songs(song_id, song_name, fingerprinted, file_sha1 UNIQUE, total_hashes,
  duration, date_created, date_modified)``
* ``fingerprints(hash BIGINT, song_id, offset)`` indexed by ``hash``.

A song is written in ONE transaction (song row, every hash, ``fingerprinted = 1``),
so recognition never sees a half-ingested song and a crash leaves nothing behind.
The unique ``file_sha1`` makes concurrent ingests of the same file store it once.

A backend subclass states only its dialect: how to connect, DDL types, the
placeholder style, how to get a new row's id, how to bulk-load, how to pass a list
of hashes as one parameter, and which driver exceptions mean "duplicate" or
"connection lost".  All SQL is parameterized.

A lookup is one statement per ``lookup_chunk`` query hashes: each distinct hash
finds its rows through the hash index, optionally skipping hashes stored more than
``max_rows_per_hash`` times (a probe for a row at that offset).
"""
from __future__ import annotations

import json
import logging
import os
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any, ClassVar, Iterable, Iterator, Sequence

import numpy as np

from dejavu.database import meta
from dejavu.exceptions import ConfigError, DatabaseError, DatabaseUnavailableError
from dejavu.logic.store import Hits, NewSong

log = logging.getLogger(__name__)

SONG_COLUMNS = ("song_id", "song_name", "file_sha1", "total_hashes", "duration", "date_created", "source_path")
__all__ = ["BaseDatabase", "DatabaseUnavailableError", "Hits", "SONG_COLUMNS", "hex_to_int64"]


def hex_to_int64(h: str) -> int:
    """The original's hex hash text → this store's signed 64-bit hash (first 16 hex digits)."""
    return int.from_bytes(bytes.fromhex(h[:16].ljust(16, "0")), "big", signed=True)


def _song_rows(hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Distinct (hash, 0, offset) rows of one song, shape (n, 3) int64, sorted by hash then offset
    (the song_id column is filled in when the song has an id)."""
    order = np.lexsort((offsets, hashes))
    h = np.asarray(hashes, dtype=np.int64)[order]
    o = np.asarray(offsets, dtype=np.int64)[order]
    keep = np.ones(h.size, dtype=bool)
    keep[1:] = (h[1:] != h[:-1]) | (o[1:] != o[:-1])
    rows = np.zeros((int(keep.sum()), 3), dtype=np.int64)
    rows[:, 0], rows[:, 2] = h[keep], o[keep]
    return rows


def _new_song(song: Sequence[Any]) -> NewSong:
    """A NewSong from a NewSong or a plain (name, sha1, hashes, offsets, duration[, source]) tuple."""
    return song if isinstance(song, NewSong) else NewSong(*song)


class BaseDatabase(ABC):
    """A fingerprint store (it implements :class:`dejavu.logic.store.Store`).
    Subclasses implement the dialect hooks marked abstract."""

    type: ClassVar[str] = ""
    #: DB-API placeholder of the driver ("?" or "%s").
    placeholder: ClassVar[str] = "?"
    #: How the ``offset`` column is written (it is an SQL keyword).
    offset_column: ClassVar[str] = '"offset"'
    #: Largest number of parameters in one statement.
    max_params: ClassVar[int] = 999
    #: CREATE statements, run in order by setup() (the meta table is added to them).
    schema: ClassVar[Sequence[str]] = ()
    #: Statement listing the names of the store's tables.
    tables_sql: ClassVar[str] = ""
    #: Tables ``schema`` creates (besides the meta table).
    tables: ClassVar[tuple[str, ...]] = ("songs", "fingerprints")
    #: Driver exception classes turned into DatabaseError.
    driver_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    #: Distinct hashes looked up by one statement.
    lookup_chunk: ClassVar[int] = 1 << 15
    #: Table expression of the query hashes, alias ``q`` with one column ``value``, bound
    #: to the ONE parameter ``_hash_list`` makes.
    hash_table: ClassVar[str] = ""
    #: Aggregate listing the rows ``f`` of one hash as text, ``song_id * 2^32 + offset``
    #: comma-separated: one value per hash crosses the driver instead of one tuple per
    #: row.  Empty: fetch plain rows.
    hit_list: ClassVar[str] = ""

    def __init__(self, max_rows_per_hash: int | None = None, **options: Any) -> None:
        if max_rows_per_hash is not None and (isinstance(max_rows_per_hash, bool)
                                              or not isinstance(max_rows_per_hash, int) or max_rows_per_hash < 1):
            raise ConfigError(f"{self.type}: 'database.max_rows_per_hash' must be a positive integer or null, "
                              f"got {max_rows_per_hash!r}")
        self.options = options
        #: Query hashes stored more often than this are not looked up (None: all are).
        self.max_rows_per_hash = max_rows_per_hash
        self._conn: Any = None
        self._pid = 0

    # ----------------------------------------------------------------- dialect hooks
    @abstractmethod
    def _connect(self) -> Any:
        """Open a DB-API connection (autocommit off). Raise DatabaseError with one clear line."""

    @abstractmethod
    def _is_duplicate(self, exc: Exception) -> bool:
        """True if ``exc`` is a unique-constraint violation."""

    def _is_disconnect(self, exc: Exception) -> bool:
        """True if ``exc`` means the connection is gone (a retry may succeed)."""
        return False

    def _insert_song_returning_id(self, cur: Any, params: tuple) -> int:
        """Insert a song row and return its id (default: ``cursor.lastrowid``)."""
        cur.execute(self.sql_insert_song, params)
        return int(cur.lastrowid)

    def _bulk_insert(self, cur: Any, rows: np.ndarray) -> None:
        """Insert fingerprint rows, shape (n, 3) int64 (hash, song_id, offset).

        Default: multi-row INSERTs of as many rows as the parameter limit allows.
        """
        per = max(1, self.max_params // 3)
        p = self.placeholder
        row = f"({p}, {p}, {p})"
        head = f"INSERT INTO fingerprints (hash, song_id, {self.offset_column}) VALUES "
        full_sql = head + ", ".join([row] * per)
        for start in range(0, len(rows), per):
            chunk = rows[start:start + per]
            sql = full_sql if len(chunk) == per else head + ", ".join([row] * len(chunk))
            cur.execute(sql, chunk.reshape(-1).tolist())

    def _hash_list(self, hashes: list[int]) -> Any:
        """The parameter ``hash_table`` reads (default: a JSON array)."""
        return json.dumps(hashes)

    def _before_lookup(self, cur: Any) -> None:
        """Prepare the transaction of a lookup (default: nothing)."""

    def _begin(self, cur: Any) -> None:
        """Start a write transaction (DB-API drivers start one implicitly)."""

    # ----------------------------------------------------------------- SQL (shared)
    def _sql(self, text: str) -> str:
        return text.replace("?", self.placeholder).replace("{offset}", self.offset_column)

    @property
    def sql_insert_song(self) -> str:
        return self._sql("INSERT INTO songs (song_name, file_sha1, total_hashes, duration, source_path, "
                         "fingerprinted) VALUES (?, ?, ?, ?, ?, 0)")

    # ----------------------------------------------------------------- connection
    @property
    def connection(self) -> Any:
        """The connection of this process, opened on first use (and again after a fork)."""
        if self._conn is None or self._pid != os.getpid():
            self._conn = self._connect()
            self._pid = os.getpid()
        return self._conn

    def close(self) -> None:
        """Close the connection (a later call reopens it)."""
        if self._conn is not None and self._pid == os.getpid():
            try:
                self._conn.close()
            except Exception:  # closing a broken connection may fail; nothing to keep
                pass
        self._conn = None

    def before_fork(self) -> None:
        """Drop the connection so children open their own (kept for compatibility)."""
        self.close()

    def after_fork(self) -> None:
        """Nothing to do: a connection is reopened lazily in each process."""

    @contextmanager
    def cursor(self, write: bool = False) -> Iterator[Any]:
        """A cursor inside a transaction: commit on success, roll back on error.

        A lost connection is reopened by the next call; driver errors become
        DatabaseError with the driver's message (DatabaseUnavailableError when the
        connection was lost).
        """
        conn = self.connection
        try:
            cur = conn.cursor()
            if write:
                self._begin(cur)
            try:
                yield cur
                conn.commit()
            finally:
                cur.close()
        except DatabaseError:
            self._rollback()
            raise
        except Exception as exc:
            self._rollback()
            if self._is_disconnect(exc):
                self.close()
                raise DatabaseUnavailableError(f"{self.type}: lost the connection: {self._describe(exc)}") from exc
            if isinstance(exc, self.driver_errors):
                raise DatabaseError(f"{self.type}: {self._describe(exc)}") from exc
            raise

    def _rollback(self) -> None:
        try:
            if self._conn is not None:
                self._conn.rollback()
        except Exception:
            self.close()

    @staticmethod
    def _describe(exc: Exception) -> str:
        text = " ".join(str(a) for a in exc.args) if exc.args else str(exc)
        return " ".join(text.split()) or exc.__class__.__name__

    def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self.cursor() as cur:
            cur.execute(self._sql(sql), tuple(params))
            return cur.fetchall()

    # ----------------------------------------------------------------- schema
    @property
    def location(self) -> str:
        """Where the store is, for messages."""
        return self.type

    def setup(self) -> None:
        """Create the tables and indexes if they are missing (looking first, so that opening a
        store another process is writing to does not wait for its write lock), then check the
        store's format (:mod:`dejavu.database.meta`)."""
        tables = {str(row[0]).lower() for row in self._fetch(self.tables_sql)}
        meta.check_previous_format(self, tables)
        if not {*self.tables, meta.META_TABLE} <= tables:
            with self.cursor(write=True) as cur:
                for statement in (*self.schema, meta.META_DDL):
                    cur.execute(statement)
        meta.check_format(self)

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Record the fingerprint settings a new store is made with; raise ConfigError naming
        a setting whose value differs from the recorded one (see FingerprintConfig.stored_settings)."""
        meta.check_settings(self, settings)

    def empty(self) -> None:
        """Drop every song, fingerprint and recorded setting, then recreate the tables."""
        with self.cursor(write=True) as cur:
            for table in (*self.tables, meta.META_TABLE):
                cur.execute(f"DROP TABLE IF EXISTS {table}")
        self.setup()

    # ----------------------------------------------------------------- reading
    def get_num_songs(self) -> int:
        """Number of fully fingerprinted songs."""
        return int(self._fetch("SELECT COUNT(*) FROM songs WHERE fingerprinted = 1")[0][0])

    def get_num_fingerprints(self) -> int:
        """Number of stored fingerprint rows."""
        return int(self._fetch("SELECT COUNT(*) FROM fingerprints")[0][0])

    @staticmethod
    def _song_dict(row: Sequence[Any]) -> dict[str, Any]:
        song = dict(zip(SONG_COLUMNS, row))
        song["file_sha1"] = bytes(song["file_sha1"]).hex().upper()
        song["date_created"] = str(song["date_created"])
        return song

    def get_songs(self) -> list[dict[str, Any]]:
        """Every fingerprinted song: song_id, song_name, file_sha1 (uppercase hex), total_hashes, duration, date_created."""
        rows = self._fetch(f"SELECT {', '.join(SONG_COLUMNS)} FROM songs WHERE fingerprinted = 1 ORDER BY song_id")
        return [self._song_dict(r) for r in rows]

    def get_song_by_id(self, song_id: int) -> dict[str, Any] | None:
        """One song by id, or None."""
        rows = self._fetch(f"SELECT {', '.join(SONG_COLUMNS)} FROM songs WHERE song_id = ?", (int(song_id),))
        return self._song_dict(rows[0]) if rows else None

    def get_songs_by_ids(self, song_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Songs by id (missing ids are left out)."""
        ids = sorted({int(i) for i in song_ids})
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(ids), self.max_params):
            chunk = ids[start:start + self.max_params]
            rows = self._fetch(f"SELECT {', '.join(SONG_COLUMNS)} FROM songs WHERE fingerprinted = 1 "
                               f"AND song_id IN ({', '.join('?' * len(chunk))})", chunk)
            found.update((r[0], self._song_dict(r)) for r in rows)
        return found

    def get_song_by_sha1(self, file_sha1: str) -> dict[str, Any] | None:
        """The fingerprinted song whose file SHA1 (hex) is ``file_sha1``, or None."""
        rows = self._fetch(f"SELECT {', '.join(SONG_COLUMNS)} FROM songs WHERE file_sha1 = ? AND fingerprinted = 1",
                           (bytes.fromhex(file_sha1),))
        return self._song_dict(rows[0]) if rows else None

    def get_fingerprinted_sha1s(self) -> set[str]:
        """Uppercase hex SHA1 of every fingerprinted file."""
        return {bytes(r[0]).hex().upper() for r in self._fetch("SELECT file_sha1 FROM songs WHERE fingerprinted = 1")}

    def return_matches(self, hashes: np.ndarray, song_ids: Sequence[int] | None = None) -> Hits:
        """Stored rows whose hash is in ``hashes``: (hash, song_id, offset) int64 arrays, by hash.

        ``song_ids``: only rows of these songs (an index seek per hash and song where the
        backend's key allows it).  With ``max_rows_per_hash`` set, a hash stored more
        often than that is left out (a hash found in many songs says little about which
        one is playing, and costs the most).  The distinct hashes are looked up
        ``lookup_chunk`` at a time in one statement each, so a long query (millions of
        hashes) never exists as Python objects all at once.
        """
        wanted = np.unique(np.asarray(hashes, dtype=np.int64))
        found = [(wanted[:0],) * 3]
        songs = [] if song_ids is None else [int(i) for i in song_ids]
        if wanted.size and (song_ids is None or songs):
            sql = self._lookup_sql(len(songs))
            with self.cursor() as cur:
                self._before_lookup(cur)
                for start in range(0, wanted.size, self.lookup_chunk):
                    found.append(self._select_hits(cur, sql, wanted[start:start + self.lookup_chunk].tolist(), songs))
        h, s, o = zip(*found)
        return np.concatenate(h), np.concatenate(s), np.concatenate(o)

    def count_matches(self, hashes: np.ndarray) -> np.ndarray:
        """Stored rows per hash of ``hashes`` (distinct, ascending), int64 of the same shape:
        counted in the hash index, no row leaves the database."""
        wanted = np.asarray(hashes, dtype=np.int64)
        counts = np.zeros(wanted.size, dtype=np.int64)
        sql = self._sql(f"SELECT q.value, (SELECT COUNT(*) FROM fingerprints f WHERE f.hash = q.value) "
                        f"FROM {self.hash_table}")
        with self.cursor() as cur:
            self._before_lookup(cur)
            for start in range(0, wanted.size, self.lookup_chunk):
                chunk = wanted[start:start + self.lookup_chunk]
                cur.execute(sql, (self._hash_list(chunk.tolist()),))
                found = np.array(cur.fetchall(), dtype=np.int64).reshape(-1, 2)
                counts[start + np.searchsorted(chunk, found[:, 0])] = found[:, 1]
        return counts

    def _lookup_sql(self, n_songs: int) -> str:
        """Stored rows per query hash, of ``n_songs`` songs (0: of all).  Parameters: the
        hashes (one) and the song ids (in the order the text has them), then the cap if set."""
        songs = f" AND f.song_id IN ({', '.join('?' * n_songs)})" if n_songs else ""
        if self.hit_list:
            sql = (f"SELECT q.value, (SELECT {self.hit_list} FROM fingerprints f WHERE f.hash = q.value{songs}) "
                   f"FROM {self.hash_table}")
        else:
            sql = (f"SELECT q.value, f.song_id, f.{{offset}} FROM {self.hash_table} "
                   f"JOIN fingerprints f ON f.hash = q.value{songs}")
        if self.max_rows_per_hash is not None:  # no row at that offset: at most max_rows_per_hash rows
            sql += " WHERE (SELECT 1 FROM fingerprints p WHERE p.hash = q.value LIMIT 1 OFFSET ?) IS NULL"
        return self._sql(sql)

    def _select_hits(self, cur: Any, sql: str, hashes: list[int], songs: list[int]) -> Hits:
        """Rows (hash, song_id, offset) of ``hashes`` (distinct, sorted), in hash order, by ``sql``."""
        cap = () if self.max_rows_per_hash is None else (self.max_rows_per_hash,)
        listed = (self._hash_list(hashes),)
        # Placeholders in the order of _lookup_sql's text.
        cur.execute(sql, (tuple(songs) + listed if self.hit_list else listed + tuple(songs)) + cap)
        rows = cur.fetchall()
        if not self.hit_list:
            arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
            return arr[:, 0], arr[:, 1], arr[:, 2]
        lists = [(h, text) for h, text in rows if text]
        if not lists:
            return (np.zeros(0, dtype=np.int64),) * 3
        found, texts = zip(*lists)
        packed = np.fromstring(",".join(texts), dtype=np.int64, sep=",")
        counts = [text.count(",") + 1 for text in texts]
        song_ids = (packed + (1 << 31)) >> 32  # offsets may be negative (original API)
        return np.repeat(np.array(found, dtype=np.int64), counts), song_ids, packed - (song_ids << 32)

    def query(self, fingerprint: int | None = None) -> list[tuple]:
        """Rows (hash, song_id, offset) for one hash, or all rows when None (original API)."""
        if fingerprint is None:
            return self._fetch(self._sql("SELECT hash, song_id, {offset} FROM fingerprints"))
        if isinstance(fingerprint, str):
            fingerprint = hex_to_int64(fingerprint)
        return self._fetch(self._sql("SELECT hash, song_id, {offset} FROM fingerprints WHERE hash = ?"),
                           (int(fingerprint),))

    def get_iterable_kv_pairs(self) -> list[tuple]:
        """Every fingerprint row (original API)."""
        return self.query(None)

    # ----------------------------------------------------------------- writing
    def store_song(self, song_name: str, file_sha1: str, hashes: np.ndarray, offsets: np.ndarray,
                   duration: float, source_path: str | None = None) -> int | None:
        """Store a song and all its hashes atomically; return its id.

        Returns None (and stores nothing) if a song with this file SHA1 exists.
        """
        return self.store_songs([NewSong(song_name, file_sha1, hashes, offsets, duration, source_path)])[0]

    def store_songs(self, songs: Sequence[NewSong]) -> list[int | None]:
        """Store songs (:class:`~dejavu.logic.store.NewSong`, or plain tuples of its fields) in one transaction.

        Returns their ids.  Several songs per transaction update the hash index once per
        batch (3-5x faster on SQLite than a transaction per song); each song is still all
        or nothing.  If a file SHA1 is stored already (a concurrent ingest), the songs are
        stored one transaction each instead, and that one's id is None.
        """
        prepared = [(song.song_name, song.file_sha1, _song_rows(song.hashes, song.offsets), float(song.duration),
                      song.source_path) for song in map(_new_song, songs)]
        try:
            with self.cursor(write=True) as cur:
                ids = []
                for name, sha1, rows, duration, source in prepared:
                    song_id = self._insert_song_returning_id(cur, (name, bytes.fromhex(sha1), len(rows), duration,
                                                                   source))
                    rows[:, 1] = song_id
                    ids.append(song_id)
                rows = np.concatenate([p[2] for p in prepared])
                if len(prepared) > 1:  # hash order: each index page is visited once
                    rows = rows[np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))]
                self._bulk_insert(cur, rows)
                for song_id in ids:
                    cur.execute(self._sql("UPDATE songs SET fingerprinted = 1 WHERE song_id = ?"), (song_id,))
        except DatabaseError as exc:
            if exc.__cause__ is None or not self._is_duplicate(exc.__cause__):
                raise
            if len(songs) == 1:
                return [None]
            return [self.store_song(*song) for song in songs]
        return ids

    def insert_song(self, song_name: str, file_hash: str, total_hashes: int = 0) -> int:
        """Insert an unfingerprinted song row; return its id (original API)."""
        with self.cursor(write=True) as cur:
            return self._insert_song_returning_id(cur, (song_name, bytes.fromhex(file_hash), int(total_hashes), 0.0,
                                                        None))

    def insert_hashes(self, song_id: int, hashes: Iterable[tuple[Any, int]], batch_size: int = 1000) -> None:
        """Insert (hash, offset) pairs for a song (original API; hex or int hashes)."""
        pairs = [(hex_to_int64(h) if isinstance(h, str) else int(h), int(o)) for h, o in hashes]
        rows = np.array([(h, song_id, o) for h, o in sorted(set(pairs))], dtype=np.int64).reshape(-1, 3)
        with self.cursor(write=True) as cur:
            self._bulk_insert(cur, rows)

    def insert(self, fingerprint: Any, song_id: int, offset: int) -> None:
        """Insert one fingerprint row (original API)."""
        self.insert_hashes(song_id, [(fingerprint, offset)])

    def set_song_fingerprinted(self, song_id: int) -> None:
        """Mark a song complete (original API)."""
        with self.cursor(write=True) as cur:
            cur.execute(self._sql("UPDATE songs SET fingerprinted = 1 WHERE song_id = ?"), (int(song_id),))

    def delete_songs_by_id(self, song_ids: Iterable[int], batch_size: int = 1000) -> int:
        """Delete songs and their fingerprints in one transaction; return how many songs went."""
        ids = sorted({int(i) for i in song_ids})
        deleted = 0
        with self.cursor(write=True) as cur:
            for start in range(0, len(ids), batch_size):
                chunk = ids[start:start + batch_size]
                marks = ", ".join([self.placeholder] * len(chunk))
                self._delete_fingerprints(cur, marks, chunk)
                cur.execute(f"DELETE FROM songs WHERE song_id IN ({marks})", chunk)
                deleted += max(cur.rowcount, 0)
        return deleted

    def rename_song(self, song_id: int, song_name: str) -> bool:
        """Give song ``song_id`` a new name; False if no song has that id."""
        with self.cursor(write=True) as cur:
            cur.execute(self._sql("SELECT song_id FROM songs WHERE song_id = ?"), (int(song_id),))
            if not cur.fetchall():
                return False
            cur.execute(self._sql("UPDATE songs SET song_name = ? WHERE song_id = ?"), (song_name, int(song_id)))
        return True

    def _delete_fingerprints(self, cur: Any, marks: str, song_ids: list[int]) -> None:
        """Delete the fingerprint rows of ``song_ids`` (``marks``: their placeholders)."""
        cur.execute(f"DELETE FROM fingerprints WHERE song_id IN ({marks})", song_ids)

    def delete_unfingerprinted_songs(self) -> None:
        """Remove songs left unfinished (only rows written through the original's API can be)."""
        ids = [r[0] for r in self._fetch("SELECT song_id FROM songs WHERE fingerprinted = 0")]
        if ids:
            self.delete_songs_by_id(ids)

    def stats(self) -> dict[str, Any]:
        """Counts and size: songs, fingerprints, audio seconds, bytes on disk (if known)."""
        songs, seconds = self._fetch("SELECT COUNT(*), COALESCE(SUM(duration), 0) FROM songs WHERE fingerprinted = 1")[0]
        return {"database_type": self.type, "songs": int(songs), "fingerprints": self.get_num_fingerprints(),
                "audio_seconds": round(float(seconds), 1), "size_bytes": self.size_bytes()}

    def size_bytes(self) -> int | None:
        """Bytes the tables and indexes take (None if the backend cannot tell)."""
        return None

"""ServerDatabase: what the client/server stores (PostgreSQL, MySQL) share: connection
options, where the server is, one-line connect errors, and the bulk loader of a catalogue."""
from __future__ import annotations

import logging
import tempfile
import time
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Iterable, Iterator, Mapping, Sequence

import numpy as np

from dejavu.database.base import BaseDatabase
from dejavu.database.song_order import SongOrder, song_batches
from dejavu.exceptions import ConfigError, DatabaseError, DatabaseUnavailableError
from dejavu.logic.store import Hits

log = logging.getLogger(__name__)

#: Rows ``load_catalogue`` sends to the server at a time (a batch of whole songs).
LOAD_BATCH_ROWS = 1 << 21


class ServerDatabase(BaseDatabase):
    """A client/server store (PostgreSQL, MySQL): connection options and connect errors.

    Options are the original's ``host``, ``port``, ``user``, ``password``, ``database``
    (aliases ``db``/``dbname`` and ``passwd``), ``connect_timeout`` (seconds) and
    ``max_rows_per_hash`` (see BaseDatabase); any other key is passed to the driver's
    ``connect`` as is.
    """

    #: Port used when the configuration names none.
    default_port: ClassVar[int] = 0
    _ALIASES: ClassVar[dict[str, str]] = {"db": "database", "dbname": "database", "passwd": "password"}

    def __init__(self, **options: Any) -> None:
        opts = {self._ALIASES[k]: v for k, v in options.items() if k in self._ALIASES}
        opts.update((k, v) for k, v in options.items() if k not in self._ALIASES)
        super().__init__(opts.pop("max_rows_per_hash", None), **opts)
        self.host = str(opts.pop("host", None) or "127.0.0.1")
        port, timeout = opts.pop("port", None), opts.pop("connect_timeout", 10)
        try:
            self.port = int(port or self.default_port)
            self.connect_timeout = max(1, int(timeout))
        except (TypeError, ValueError):
            raise ConfigError(f"{self.type}: port and connect_timeout must be numbers, "
                              f"got {port!r} and {timeout!r}") from None
        self.user: str | None = opts.pop("user", None)
        self.password: str | None = opts.pop("password", None)
        self.database = str(opts.pop("database", None) or "dejavu")
        self.extra = opts

    @property
    def location(self) -> str:
        return f"{self.type} at {self.host}:{self.port}/{self.database}"

    @abstractmethod
    def _open(self) -> Any:
        """Open a driver connection with autocommit off (driver errors propagate)."""

    @abstractmethod
    def _connect_reason(self, exc: Exception) -> str:
        """Why a connection attempt failed, in a few words (no location, one line)."""

    def _connect(self) -> Any:
        try:
            return self._open()
        except (*self.driver_errors, TypeError) as exc:  # TypeError: unknown option
            reason = self._connect_reason(exc) if not isinstance(exc, TypeError) else str(exc)
            error = DatabaseError if isinstance(exc, TypeError) else DatabaseUnavailableError
            raise error(f"cannot connect to {self.type} at {self.host}:{self.port}: "
                        f"{' '.join(reason.split())}") from None

    # ----------------------------------------------------------------- bulk load
    #: Run by ``load_catalogue`` before the rows (the store is known to be empty): drop the
    #: fingerprint indexes, which are built again by sorting once every row is in.
    load_start: ClassVar[Sequence[str]] = ()
    #: Run after the rows and the songs: build the indexes, refresh the planner's statistics.
    load_finish: ClassVar[Sequence[str]] = ()

    def load_catalogue(self, songs: Iterable[tuple[int, str, str, float]], rows: Iterable[Hits]) -> int:
        """Fill an EMPTY store at bulk speed (e.g. a large synthetic catalogue); return the rows stored.

        The contract of :meth:`dejavu.database.sqlite.SQLiteDatabase.load_catalogue`:
        ``songs``: (song_id, song_name, file_sha1 as hex, duration in s), stored as
        fingerprinted, each with ``total_hashes`` = its number of rows.  ``rows``: chunks of
        (hash, song_id, offset) int64 arrays without duplicate rows, in ascending hash order
        across chunks, never held whole.  Raises DatabaseError if the store already holds a
        song or a fingerprint, or a row's song is not in ``songs``; ValueError if the chunks
        are not in hash order or repeat a row.

        The rows are stored song by song, as ``store_songs`` lays them out: each chunk is
        sorted by (song_id, offset, hash) into a temporary file (``tempfile``'s directory,
        16 bytes a row), then batches of whole songs (about LOAD_BATCH_ROWS rows) are merged
        from those files and sent while the next batch is prepared (the dialect's
        ``_load_rows``).  The fingerprint indexes are dropped first and built by sorting
        at the end (``load_start`` / ``load_finish``).  Memory: a chunk, or two batches.
        """
        catalogue = [(int(i), str(name), bytes.fromhex(sha1), float(duration)) for i, name, sha1, duration in songs]
        with self.cursor() as cur:  # fail before the rows are generated
            self._refuse_if_used(cur)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="dejavu-load-") as spill:
            order = SongOrder(spill, np.array([song[0] for song in catalogue], dtype=np.int64), self.type)
            for hashes, song_ids, offsets in rows:
                order.add(hashes, song_ids, offsets)
            log.info("%s: %s rows sorted by song in %.0f s", self.location, f"{order.rows:,}",
                     time.perf_counter() - started)
            undo = False  # whether a failure has anything to undo
            try:
                with self.cursor(write=True) as cur:
                    self._load_begin(cur)
                    self._refuse_if_used(cur)
                    undo = True
                    for statement in self.load_start:
                        cur.execute(statement)
                    started = time.perf_counter()
                    batches = order.batches(LOAD_BATCH_ROWS)
                    for prepared in _ahead(self._load_prepare(batch, spill) for batch in batches):
                        self._load_rows(cur, prepared)
                    self._insert_songs(cur, [(*song, int(order.per_song[song[0]])) for song in catalogue])
                    log.info("%s: rows and songs loaded in %.0f s", self.location, time.perf_counter() - started)
                    started = time.perf_counter()
                    for statement in self.load_finish:
                        cur.execute(statement)
                    log.info("%s: indexes built in %.0f s", self.location, time.perf_counter() - started)
                undo = False
            finally:
                self._load_end(undo)
        return order.rows

    def song_rows(self, songs: Sequence[Mapping[str, Any]], batch_rows: int = LOAD_BATCH_ROWS) -> Iterator[np.ndarray]:
        """Rows (n, 3) int64 (hash, song_id, offset) of ``songs`` (dicts with ``song_id`` and
        ``total_hashes``), whole songs of about ``batch_rows`` rows at a time, in (song_id,
        offset) order: one query per batch over a range of song ids (the table's layout)."""
        ordered = sorted(songs, key=lambda song: int(song["song_id"]))
        ids = np.array([int(song["song_id"]) for song in ordered], dtype=np.int64)
        sql = self._sql("SELECT hash, song_id, {offset} FROM fingerprints WHERE song_id BETWEEN ? AND ?")
        for low, high in song_batches([int(song["total_hashes"]) for song in ordered], batch_rows):
            with self.cursor() as cur:
                cur.execute(sql, (int(ids[low]), int(ids[high - 1])))
                rows = np.array(cur.fetchall(), dtype=np.int64).reshape(-1, 3)
            rows = rows[np.isin(rows[:, 1], ids[low:high])]  # not songs being written meanwhile
            yield rows[np.lexsort((rows[:, 2], rows[:, 1]))]

    def _refuse_if_used(self, cur: Any) -> None:
        cur.execute("SELECT EXISTS (SELECT 1 FROM songs) OR EXISTS (SELECT 1 FROM fingerprints)")
        if cur.fetchone()[0]:
            raise DatabaseError(f"{self.location} is not empty; a catalogue loads into an empty store")

    def _load_begin(self, cur: Any) -> None:
        """Start the load in its transaction, before the store is checked again (default: nothing)."""

    def _load_prepare(self, rows: np.ndarray, directory: str) -> Any:
        """What ``_load_rows`` sends for ``rows``, shape (n, 3) int64 (hash, song_id, offset) in
        (song_id, offset, hash) order; made in a worker thread (``directory``: for temporary files)."""
        return rows

    def _load_rows(self, cur: Any, prepared: Any) -> None:
        """Send one batch of rows (default: the multi-row INSERTs of ``_bulk_insert``)."""
        self._bulk_insert(cur, prepared)

    def _load_end(self, undo: bool) -> None:
        """Tidy up after a load; ``undo``: it failed after it began to write, undo what it left
        (default: nothing, its transaction was rolled back)."""

    def _insert_songs(self, cur: Any, songs: list[tuple[int, str, bytes, float, int]]) -> None:
        """Insert fingerprinted songs (song_id, song_name, file_sha1, duration, total_hashes)."""
        per = self.max_params // 5
        for start in range(0, len(songs), per):
            part = songs[start:start + per]
            cur.execute(self._sql("INSERT INTO songs (song_id, song_name, file_sha1, duration, total_hashes, "
                                  "fingerprinted) VALUES " + ", ".join(["(?, ?, ?, ?, ?, 1)"] * len(part))),
                        [value for song in part for value in song])


def _ahead(items: Iterator[Any]) -> Iterator[Any]:
    """``items``, each made in a worker thread while the caller uses the one before."""
    with ThreadPoolExecutor(1) as worker:
        pending = worker.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = worker.submit(next, items, None)
            yield item

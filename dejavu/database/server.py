"""ServerDatabase: what the client/server stores (PostgreSQL, MySQL) share: connection
options, where the server is, one-line connect errors, and the bulk loader of a catalogue."""
from __future__ import annotations

import logging
import os
import tempfile
import time
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Iterable, Iterator, Sequence

import numpy as np

from dejavu.database.base import BaseDatabase
from dejavu.exceptions import ConfigError, DatabaseError, DatabaseUnavailableError
from dejavu.logic.store import Hits

log = logging.getLogger(__name__)

#: Rows ``load_catalogue`` sends to the server at a time (a batch of whole songs).
LOAD_BATCH_ROWS = 1 << 21
#: A row in the loader's spill files, in the order it sorts them: (song_id, offset, hash).
_SPILL_ROW = np.dtype([("song_id", "<i4"), ("offset", "<i4"), ("hash", "<i8")])


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
            order = _SongOrder(spill, np.array([song[0] for song in catalogue], dtype=np.int64), self.type)
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


class _SongOrder:
    """Rows given in hash order, handed back in (song_id, offset, hash) order a batch of whole
    songs at a time: each chunk is sorted into a file of its own in ``directory``, and a batch
    is the slices of its songs from every file, merged."""

    def __init__(self, directory: str, song_ids: np.ndarray, kind: str) -> None:
        self.directory, self.kind = directory, kind
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
        """Spill one chunk (after checking its songs and its hash order)."""
        hashes = np.asarray(hashes, dtype=np.int64)
        if not hashes.size:
            return
        if (hashes[1:] < hashes[:-1]).any() or (self.last_hash is not None and hashes[0] < self.last_hash):
            raise ValueError("load_catalogue: the rows are not in ascending hash order")
        self.last_hash = int(hashes[-1])
        counts = np.bincount(song_ids, minlength=self.known.size)
        if counts.size > self.known.size or counts[~self.known].any():
            stray = np.setdiff1d(song_ids, np.flatnonzero(self.known))[0]
            raise DatabaseError(f"{self.kind}: rows of song {stray}, which is not in the songs loaded")
        self.per_song += counts
        spilled = np.empty(hashes.size, dtype=_SPILL_ROW)
        spilled["song_id"], spilled["offset"], spilled["hash"] = song_ids, offsets, hashes
        spilled = spilled[_song_order(spilled)]
        self.starts.append(np.searchsorted(spilled["song_id"], np.arange(self.known.size + 1)))
        self.files.append(os.path.join(self.directory, f"run-{len(self.files)}.npy"))
        np.save(self.files[-1], spilled)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """Rows (n, 3) int64 (hash, song_id, offset) in (song_id, offset, hash) order, whole songs of
        about ``size`` rows at a time."""
        runs = [np.load(path, mmap_mode="r") for path in self.files]
        ends = np.cumsum(self.per_song)
        low = 0
        while low < ends.size and ends[-1] > (ends[low - 1] if low else 0):
            high = max(low + 1, int(np.searchsorted(ends, (ends[low - 1] if low else 0) + size, side="right")))
            merged = np.concatenate([run[starts[low]:starts[high]] for run, starts in zip(runs, self.starts)])
            merged = merged[_song_order(merged)]  # the files are in hash order, the sort is stable
            repeated = (merged[1:] == merged[:-1])
            if repeated.any():
                row = merged[1:][repeated][0]
                raise ValueError(f"load_catalogue: the row ({row['hash']}, {row['song_id']}, {row['offset']}) "
                                 "is given twice")
            yield np.column_stack([merged["hash"], merged["song_id"], merged["offset"]]).astype(np.int64)
            low = high


def _song_order(rows: np.ndarray) -> np.ndarray:
    """Indices sorting spilled ``rows`` by (song_id, offset), stably (rows in hash order stay so)."""
    key = (rows["song_id"].astype(np.int64) << 32) | (rows["offset"].astype(np.int64) + (1 << 31))
    return np.argsort(key, kind="stable")

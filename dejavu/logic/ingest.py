"""Ingest: files → (decode, fingerprint) in worker processes → batches of whole songs, one transaction each.

Workers only read files and compute; the parent process is the single writer, so
SQLite needs no cross-process locking and a failed file never touches the store.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np

from dejavu.config import Config
from dejavu.exceptions import DatabaseError, DatabaseUnavailableError, DejavuError
from dejavu.logic import decoder
from dejavu.logic.fingerprint import concat, fingerprint_stream
from dejavu.logic.integrity import DecodeReport
from dejavu.logic.store import NewSong, Store
from dejavu.quoting import quote

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class FileOutcome:
    """What happened to one input file."""

    path: str
    status: str                       # "fingerprinted", "skipped" or "failed"
    song_name: str = ""
    file_sha1: str = ""
    reason: str = ""                  # why it failed or was skipped
    song_id: int | None = None
    hashes: np.ndarray | None = None  # int64, shape (m,)
    offsets: np.ndarray | None = None  # int32, shape (m,)
    duration: float = 0.0             # seconds of audio fingerprinted
    warning: str = ""                 # why the audio may be incomplete (truncated, decoder errors)


@dataclass
class IngestReport:
    """Outcome of a batch: lists of FileOutcome by status."""

    fingerprinted: list[FileOutcome] = field(default_factory=list)
    skipped: list[FileOutcome] = field(default_factory=list)
    failed: list[FileOutcome] = field(default_factory=list)

    def add(self, outcome: FileOutcome) -> None:
        getattr(self, outcome.status).append(outcome)

    @property
    def damaged(self) -> list[FileOutcome]:
        """Files stored although their audio may be incomplete (each was logged as a warning)."""
        return [o for o in self.fingerprinted if o.warning]

    @property
    def ok(self) -> bool:
        """True when no file failed."""
        return not self.failed


_known_sha1s: frozenset[str] = frozenset()


def _init_worker(known: frozenset[str]) -> None:
    global _known_sha1s
    _known_sha1s = known


def _init_pool_worker(known: frozenset[str], parent: int) -> None:
    """Pool worker set-up.  Ctrl-C is the parent's to handle (it stops the pool); and
    on Linux a worker is killed with its parent, so that a killed ingest leaves no
    worker behind to finish its file and then fail, with a traceback, to hand it over."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:  # the parent died before that
            os._exit(1)
    _init_worker(known)


def fingerprint_one(path: str, song_name: str | None, cfg: Config) -> FileOutcome:
    """Decode and fingerprint one file (no database access). Never raises."""
    name = decoder.clean_text(song_name) if song_name else decoder.get_audio_name_from_path(path)
    try:
        sha1 = decoder.unique_hash(path)
        if sha1 in _known_sha1s:
            return FileOutcome(path, "skipped", name, sha1, reason="already fingerprinted")
        fp = cfg.fingerprint
        decoding = DecodeReport(limit=cfg.fingerprint_limit)
        blocks = decoder.stream(path, fp.sample_rate, block_seconds=decoder.INGEST_BLOCK_SECONDS,
                                limit=cfg.fingerprint_limit, report=decoding)
        counted = _Counter(blocks)
        hashes, offsets = concat(fingerprint_stream(counted, fp))
        if counted.samples == 0:
            raise DejavuError(f"{quote(path)}: contains no audio samples")
        if hashes.size == 0:
            raise DejavuError(f"{quote(path)}: no fingerprints (silent, or shorter than "
                              f"{fp.max_hash_time_delta * fp.frame_seconds:.1f} s of sound)")
        decoding.decoded = counted.samples / fp.sample_rate
        problem = decoding.problem()
        if problem and cfg.strict_decoding:
            raise DejavuError(f"{quote(path)}: {problem}; not stored (strict decoding)")
        return FileOutcome(path, "fingerprinted", name, sha1, hashes=hashes, offsets=offsets,
                           duration=decoding.decoded, warning=f"{quote(path)}: {problem}" if problem else "")
    except DejavuError as exc:
        return FileOutcome(path, "failed", name, reason=str(exc))
    except Exception as exc:  # a batch must survive anything one file does
        log.debug("unexpected error on %s", path, exc_info=True)
        return FileOutcome(path, "failed", name, reason=f"{quote(path)}: unexpected error: {exc!r}")


class _Counter:
    """Iterate blocks while counting samples."""

    def __init__(self, blocks: Iterable[np.ndarray]) -> None:
        self._blocks = blocks
        self.samples = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in self._blocks:
            self.samples += block.size
            yield block


def _work(task: tuple[str, str | None, Config]) -> FileOutcome:
    return fingerprint_one(*task)


#: Seconds to wait before each new attempt to store songs after the database
#: connection was lost (a server restart); then the error is raised.
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)

#: Finished songs are written together, in one transaction, once this many hash rows
#: or this many seconds have accumulated: the hash index is then updated once per batch
#: instead of once per song (3-5x faster on SQLite), and a song is still all or nothing.
BATCH_ROWS = 500_000
BATCH_SECONDS = 2.0


def retrying(action: Callable[..., T], *args: Any) -> T:
    """``action(*args)``, tried again after each of RECONNECT_DELAYS while it raises
    DatabaseUnavailableError (a lost connection, a server restarting); then it raises.

    Safe for :func:`store`: a failed transaction stored nothing, and if the lost one had
    in fact committed, the retry finds the file SHA1s and reports those songs as skipped.
    """
    for delay in RECONNECT_DELAYS:
        try:
            return action(*args)
        except DatabaseUnavailableError as exc:
            log.warning("%s; trying again in %g s", exc, delay)
            time.sleep(delay)
    return action(*args)


def store(db: Store, outcomes: list[FileOutcome]) -> list[FileOutcome]:
    """Write fingerprinted files' songs and hashes in one transaction (DatabaseError propagates)."""
    ids = db.store_songs([NewSong(o.song_name, o.file_sha1, o.hashes, o.offsets, o.duration,
                                  decoder.clean_text(os.path.abspath(o.path)))
                          for o in outcomes])
    for outcome, song_id in zip(outcomes, ids):
        if song_id is None:
            outcome.status, outcome.reason = "skipped", "already fingerprinted"
        else:
            outcome.song_id = song_id
        outcome.hashes = outcome.offsets = None  # free memory; the store has them
    return outcomes


def ingest(db: Store, cfg: Config, tasks: list[tuple[str, str | None]],
           nprocesses: int | None = None, progress: bool = False, cluster: str | None = None) -> IngestReport:
    """Fingerprint and store files, ``nprocesses`` at a time (or on the Dask cluster whose
    scheduler is at ``cluster``, see :mod:`dejavu.logic.cluster`); report per file.

    ``tasks`` are (path, song_name or None).  Files whose SHA1 is already stored are
    skipped.  A lost database connection is retried for a while (RECONNECT_DELAYS);
    a database error that persists stops the batch and is raised, saying how many songs
    were stored before it: those stay stored, the songs of the failed transaction are
    not stored at all, and the same call again goes on with the rest.
    """
    report = IngestReport()
    if not tasks:
        return report
    known = frozenset(retrying(db.get_fingerprinted_sha1s))
    nprocesses = nprocesses or os.cpu_count() or 1
    nprocesses = max(1, min(nprocesses, len(tasks)))
    work = [(path, name, cfg) for path, name in tasks]
    bar = _progress(len(work), progress)
    try:
        if cluster:
            from dejavu.logic.cluster import on_cluster

            results, pool = on_cluster(cluster, work, known), None
        elif nprocesses == 1:
            _init_worker(known)
            results: Iterable[FileOutcome] = map(_work, work)
            pool = None
        else:
            pool = multiprocessing.get_context("spawn" if sys.platform == "win32" else "fork").Pool(
                nprocesses, initializer=_init_pool_worker, initargs=(known, os.getpid()))
            results = pool.imap_unordered(_work, work)
        pending: list[FileOutcome] = []
        pending_rows = 0
        try:
            oldest = time.monotonic()
            for outcome in results:
                if outcome.status != "fingerprinted" or outcome.song_id is not None:  # (stored by a cluster worker)
                    _done(report, [outcome], bar)
                    continue
                if not pending:
                    oldest = time.monotonic()
                pending.append(outcome)
                pending_rows += outcome.hashes.size
                if pending_rows >= BATCH_ROWS or time.monotonic() - oldest >= BATCH_SECONDS:
                    batch, pending, pending_rows = pending, [], 0
                    _done(report, retrying(store, db, batch), bar)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            elif cluster:
                results.close()  # stops the cluster's work and disconnects
            if pending:  # finished files are kept, also when the batch stops early (Ctrl-C)
                log.debug("storing the last %d file(s)", len(pending))
                _done(report, retrying(store, db, pending), bar)
    except DatabaseError as exc:
        raise type(exc)(f"{exc}; the ingest stopped after storing {len(report.fingerprinted)} song(s) "
                        "(running it again goes on with the rest)") from exc
    finally:
        if bar is not None:
            bar.close()
        _init_worker(frozenset())
    return report


def _done(report: IngestReport, outcomes: list[FileOutcome], bar) -> None:
    """Record finished files: report, log and progress bar."""
    for outcome in outcomes:
        report.add(outcome)
        if outcome.status == "failed":
            log.error("%s", outcome.reason)
        elif outcome.status == "fingerprinted" and outcome.warning:
            log.warning("%s", outcome.warning)
        elif outcome.status == "skipped":  # the caller sums these up; each one with -v
            log.debug("%s: %s", quote(outcome.path), outcome.reason)
        if bar is not None:
            bar.update(1)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc="fingerprinting", file=sys.stderr, dynamic_ncols=True)

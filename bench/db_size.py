#!/usr/bin/env python3
"""Ingest a folder of audio into each store backend; print speed and size per backend.

    python bench/db_size.py [FOLDER] [--backends sqlite postgres mysql] [--nprocs N]

FOLDER defaults to the dev corpus (~/.cache/dejavu-dev-corpus/mp3; build a small one
with ``bash ../shared/tools/get-dev-corpus.sh DIR --small``).  PostgreSQL and MariaDB
are throwaway servers started with dejavu.testing (skipped when not installed).
Per backend: ingest rate (audio seconds per wall second, decoding and fingerprinting
included; "store" counts only the time spent writing to the database), fingerprints,
bytes per audio second and per fingerprint, the mean database time of a 10 s query,
and the time to delete one song.
"""
from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _machine import machine  # noqa: E402
from _store import DelegatingStore  # noqa: E402

from dejavu import Dejavu, testing  # noqa: E402
from dejavu.logic import decoder  # noqa: E402
from dejavu.logic.ingest import ingest  # noqa: E402
from dejavu.logic.store import NewSong, Store  # noqa: E402

log = logging.getLogger("db_size")
DEFAULT_FOLDER = Path.home() / ".cache" / "dejavu-dev-corpus" / "mp3"
VERSION_SQL = {"sqlite": "SELECT sqlite_version()", "postgres": "SHOW server_version", "mysql": "SELECT VERSION()"}
QUERY_FILES, QUERY_START, QUERY_SECONDS = 10, 20.0, 10.0


@dataclass
class Result:
    """Figures of one backend."""

    backend: str
    version: str
    files: int
    audio_seconds: float
    wall_seconds: float
    store_seconds: float
    fingerprints: int
    size_bytes: int
    query_ms: float
    delete_ms: float


def backends(names: list[str], workdir: Path) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """(name, dejavu config) per backend, each server running only while it is measured."""
    starters: dict[str, tuple[Callable[[], bool], Callable[[Path], testing.Server]]] = {
        "postgres": (testing.postgres_available, testing.start_postgres),
        "mysql": (testing.mariadb_available, testing.start_mariadb),
    }
    for name in names:
        if name == "sqlite":
            yield name, {"database_type": "sqlite", "database": {"path": str(workdir / "bench.db")}}
            continue
        available, start = starters[name]
        if not available():
            log.warning("%s: server binaries not installed; skipped", name)
            yield name, None
            continue
        server = start(workdir / name)
        try:
            yield name, server.config()
        finally:
            server.destroy()


class TimedStore(DelegatingStore):
    """The store, adding up the seconds spent in store_songs."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.seconds = 0.0

    def store_songs(self, songs: Sequence[NewSong]) -> list[int | None]:
        start = time.perf_counter()
        try:
            return super().store_songs(songs)
        finally:
            self.seconds += time.perf_counter() - start


def query_ms(djv: Dejavu, files: list[str]) -> float:
    """Mean database time (return_matches) of recognizing a 10 s excerpt of each file."""
    rate = djv.cfg.fingerprint.sample_rate
    times = []
    for path in files:
        samples = decoder.decode(path, rate, limit=QUERY_START + QUERY_SECONDS)
        excerpt = samples[int(QUERY_START * rate):]
        if excerpt.size >= QUERY_SECONDS * rate // 2:
            times.append(djv.recognize_samples(excerpt, rate)["query_time"])
    return 1000 * sum(times) / max(len(times), 1)


def measure(name: str, config: dict[str, Any], folder: Path, extensions: list[str], nprocs: int) -> Result:
    """Ingest ``folder`` into an emptied store of ``config``; return the figures."""
    with Dejavu(config) as djv:
        djv.db.empty()
        with djv.db.cursor() as cur:
            cur.execute(VERSION_SQL[name])
            version = str(cur.fetchone()[0])
        timed = TimedStore(djv.db)
        start = time.perf_counter()
        report = ingest(timed, djv.cfg, [(path, None) for path, _ in decoder.find_files(str(folder), extensions)],
                        nprocs)
        wall = time.perf_counter() - start
        if report.failed:
            log.warning("%s: %d file(s) failed, e.g. %s", name, len(report.failed), report.failed[0].reason)
        stats = djv.stats()
        stored = [o.path for o in report.fingerprinted]
        query = query_ms(djv, stored[:QUERY_FILES])
        songs = djv.get_fingerprinted_songs()
        start = time.perf_counter()
        djv.delete_songs_by_id([songs[len(songs) // 2]["song_id"]] if songs else [])
        delete = time.perf_counter() - start
    return Result(name, version, len(stored), stats["audio_seconds"], wall, timed.seconds,
                  stats["fingerprints"], stats["size_bytes"] or 0, query, 1000 * delete)


def print_table(results: list[Result]) -> None:
    head = (f"{'backend':<9} {'version':<26} {'files':>5} {'audio s':>8} {'ingest x':>9} {'store x':>8} "
            f"{'fingerprints':>12} {'MB':>7} {'B/audio s':>9} {'B/fp':>6} {'query ms':>8} {'delete ms':>9}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r.backend:<9} {r.version[:26]:<26} {r.files:>5} {r.audio_seconds:>8.0f} "
              f"{r.audio_seconds / r.wall_seconds:>9.0f} {r.audio_seconds / max(r.store_seconds, 1e-9):>8.0f} "
              f"{r.fingerprints:>12} {r.size_bytes / 1e6:>7.1f} {r.size_bytes / r.audio_seconds:>9.0f} "
              f"{r.size_bytes / max(r.fingerprints, 1):>6.1f} {r.query_ms:>8.1f} {r.delete_ms:>9.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER, help="audio folder (recursive)")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres", "mysql"],
                        choices=["sqlite", "postgres", "mysql"])
    parser.add_argument("--extensions", nargs="+", default=["mp3", "wav", "flac", "ogg", "m4a"])
    parser.add_argument("--nprocs", type=int, default=os.cpu_count() or 1, help="fingerprinting processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a directory "
                     "(build the dev corpus with ../shared/tools/get-dev-corpus.sh DIR --small)")
    print(f"machine: {machine()}")
    print(f"folder:  {args.folder}; load average before: {os.getloadavg()[0]:.1f}; "
          f"SQLite library {sqlite3.sqlite_version}")
    results = []
    with tempfile.TemporaryDirectory(prefix="dejavu-bench-") as tmp:
        for name, config in backends(args.backends, Path(tmp)):
            if config is not None:
                log.info("%s: ingesting %s", name, args.folder)
                results.append(measure(name, config, args.folder, args.extensions, args.nprocs))
    print(f"load average after: {os.getloadavg()[0]:.1f}  (ingest x / store x: audio seconds per wall "
          f"second of the whole ingest / of database writes only)")
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

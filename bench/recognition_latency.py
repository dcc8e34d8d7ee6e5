"""Recognition latency, warm and in-process: p50/p95 per database size and clip length.

    python bench/recognition_latency.py [AUDIO_DIR] [--songs 100 1000 100000] [--queries 20]
        [--lengths 1 2 5 10] [--max-rows-per-hash 0 1000] [--workdir DIR] [--keep] [--warm]
        [--backend sqlite|postgres|mysql]

The real songs of AUDIO_DIR are fingerprinted once (WORKDIR/real.db).  Each size is
its own SQLite database (WORKDIR/songs-N.db, the product's schema): the real songs
plus synthetic songs of --song-seconds each, with as many rows per audio second as
the real songs have.  A synthetic row's hash is drawn from the real rows' hashes
(each distinct hash as often as it occurs there, so common hashes stay common), its
song and offset uniformly.  Per stored row, a synthetic song then returns as many
rows to a 5 s query of a real song as another real song does (1.02 x, measured on
the dev corpus).  The rows are generated in key order, a hash range at a time, and
streamed into one segment of the empty store (``SQLiteDatabase.load_catalogue``; 100,000
songs: 1.8 billion rows, 14.2 GB, 13 minutes).  --warm maps every page of the SQLite index
into the process first (``SQLiteDatabase.warm``), a long-running reader's steady state.

Clips of real songs (the same clips for every size) are then recognized, after one
warm-up query per cell; the time is `total_time` (fingerprint + lookup + align;
decoding excluded, as in the original), "lookup" its `query_time`, of which "count" went
to ``count_matches`` and "read" to ``return_matches``, "rows" the stored rows its lookups
returned (a query that matches nothing is looked up again at each speed factor).  --keep
keeps WORKDIR (default: a temporary directory) and reuses the databases already built there.

--backend postgres / mysql: the sizes are databases of one throwaway server
(``dejavu.testing``: PostgreSQL, or MariaDB for mysql; its log in WORKDIR, its data in a
private directory under /tmp), tuned as a server of this size would be (SERVER_SETTINGS),
filled with the same songs and rows by the store's ``load_catalogue`` (rows sorted by
song, indexes built after the rows), then measured the same way; each database is
dropped once measured, and the server is removed at the end (--keep keeps real.db only).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Iterator, Sequence

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from _machine import machine  # noqa: E402
from _store import DelegatingStore  # noqa: E402

from dejavu import Dejavu  # noqa: E402
from dejavu.database import connect  # noqa: E402
from dejavu.database.sqlite import SQLiteDatabase  # noqa: E402
from dejavu.evaluation.distractors import synthetic_rows  # noqa: E402
from dejavu.logic.decoder import decode  # noqa: E402
from dejavu.logic.search import recognize_samples  # noqa: E402
from dejavu.logic.store import Hits, Store  # noqa: E402
from dejavu.testing import Server, start_mariadb, start_postgres  # noqa: E402

SAMPLE_RATE = 11025
#: Server settings for catalogues of up to ~200 M rows on a 24 GiB machine (the throwaway
#: servers of dejavu.testing start with 32 MB caches, sized for the test suite).  PostgreSQL
#: reads through the OS page cache besides shared_buffers; InnoDB, with O_DIRECT, has only
#: its buffer pool.
SERVER_SETTINGS = {
    "postgres": {"shared_buffers": "4GB", "maintenance_work_mem": "1GB", "max_wal_size": "8GB",
                 "effective_cache_size": "12GB"},
    "mysql": {"innodb_buffer_pool_size": 8 << 30, "innodb_log_file_size": 1 << 30},
}


def real_database(workdir: str, files: list[str], keep: bool) -> str:
    """WORKDIR/real.db holding every file of ``files`` (with ``keep``, files already there are not redone)."""
    path = os.path.join(workdir, "real.db")
    if not keep and os.path.exists(path):
        os.remove(path)
        shutil.rmtree(path + "-segments", ignore_errors=True)
    djv = Dejavu({"database_type": "sqlite", "database": {"path": path}})
    djv.fingerprint_files(files, None)
    djv.close()
    return path


def catalogue_rows(real_path: str, n_songs: int, song_seconds: float, frame_seconds: float,
                   rng: np.random.Generator) -> tuple[list[tuple[int, str, str, float]], Iterator[Hits]]:
    """The real songs of ``real_path`` padded with synthetic songs to ``n_songs``: the songs
    and the row chunks ``load_catalogue`` takes."""
    real_store = SQLiteDatabase(real_path)
    songs = real_store.get_songs()
    real = np.array(real_store.query(), dtype=np.int64).reshape(-1, 3)
    real_store.close()
    real = real[np.lexsort(real.T[::-1])]  # key order: hash, song_id, offset
    n_real, max_id = len(songs), max(song["song_id"] for song in songs)
    rows_per_second = sum(song["total_hashes"] for song in songs) / sum(song["duration"] for song in songs)
    first_id, last_id = max_id + 1, max_id + n_songs - n_real
    n_synth = round((last_id - first_id + 1) * rows_per_second * song_seconds)
    catalogue = [(song["song_id"], song["song_name"], song["file_sha1"], song["duration"]) for song in songs]
    catalogue += [(i, f"synthetic {i}", hashlib.sha1(b"synthetic %d" % i).hexdigest(), song_seconds)
                  for i in range(first_id, last_id + 1)]
    return catalogue, synthetic_rows(real, n_synth, (first_id, last_id), int(song_seconds / frame_seconds), rng)


def build_database(path: str, real_path: str, n_songs: int, song_seconds: float, frame_seconds: float,
                   rng: np.random.Generator) -> int:
    """Write ``path``: the real songs of ``real_path`` padded with synthetic songs to ``n_songs``;
    return its number of rows."""
    for leftover in (path, path + "-wal", path + "-shm"):  # of a build that did not finish
        if os.path.exists(leftover):
            os.remove(leftover)
    shutil.rmtree(path + "-segments", ignore_errors=True)
    store = SQLiteDatabase(path)  # one transaction: a failed load leaves an empty store
    rows = store.load_catalogue(*catalogue_rows(real_path, n_songs, song_seconds, frame_seconds, rng))
    store.close()
    return rows


def sized_database(workdir: str, real_path: str, n_songs: int, args: argparse.Namespace,
                   frame_seconds: float, rng: np.random.Generator) -> str:
    """WORKDIR/songs-N.db, built unless --keep finds it already there."""
    path = os.path.join(workdir, f"songs-{n_songs}.db")
    if args.keep and os.path.exists(path):
        print(f"reusing {path}")
        return path
    start = time.perf_counter()
    rows = build_database(path, real_path, n_songs, args.song_seconds, frame_seconds, rng)
    store = SQLiteDatabase(path)
    size = store.stats()["size_bytes"]
    store.close()
    print(f"built {path}: {n_songs} songs, {rows:,} rows, {size / 2**30:.2f} GiB "
          f"in {time.perf_counter() - start:.0f} s")
    return path


def start_server(backend: str, workdir: str) -> Server:
    """A throwaway server for ``backend`` (log in WORKDIR/<backend>), with SERVER_SETTINGS."""
    settings = SERVER_SETTINGS[backend]
    if backend == "postgres":
        server = start_postgres(os.path.join(workdir, backend))
        admin = server._admin_connect()  # the superuser, on the server's private socket
        with admin.cursor() as cur:
            for name, value in settings.items():
                cur.execute(f"ALTER SYSTEM SET {name} = %s", (value,))
        admin.close()
        server.restart()  # shared_buffers takes a restart
    else:
        server = start_mariadb(os.path.join(workdir, backend))
        admin = server._admin_connect()
        with admin.cursor() as cur:
            for name, value in settings.items():
                cur.execute(f"SET GLOBAL {name} = %s", (value,))
        admin.close()
    print(f"{backend} server on port {server.port}, data in {server.data_dir}, settings {settings}")
    return server


def server_database(server: Server, backend: str, real_path: str, n_songs: int, args: argparse.Namespace,
                    frame_seconds: float, rng: np.random.Generator) -> dict[str, Any]:
    """A new database ``dejavu_n<N>`` on ``server`` loaded like WORKDIR/songs-N.db; its dejavu config."""
    name = f"dejavu_n{n_songs}"
    run_admin(server, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
    config = server.config()
    config["database"]["database"] = name
    store = connect(backend, dict(config["database"]))
    start = time.perf_counter()
    rows = store.load_catalogue(*catalogue_rows(real_path, n_songs, args.song_seconds, frame_seconds, rng))
    seconds = time.perf_counter() - start
    size = store.size_bytes() or 0
    store.close()
    print(f"built {backend} database {name}: {n_songs} songs, {rows:,} rows, {size / 2**30:.1f} GiB "
          f"({size / rows:.0f} B a row) in {seconds:.0f} s ({rows / seconds:,.0f} rows/s; "
          f"load average {os.getloadavg()[0]:.2f})")
    return config


def run_admin(server: Server, *statements: str) -> None:
    """Run statements (CREATE/DROP DATABASE: no transaction) as the app user."""
    postgres = server.kind == "postgres"
    conn = server.connect(database="postgres") if postgres else server.connect()
    if postgres:
        conn.autocommit = True  # CREATE DATABASE refuses transactions (MySQL commits DDL anyway)
    with conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


class CountingStore(DelegatingStore):
    """The store, noting how many rows each lookup returned (in ``looked_up``) and the seconds
    spent counting keys and reading rows (``seconds["count"]``, ``seconds["rows"]``)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.looked_up: list[int] = []
        self.seconds = {"count": 0.0, "rows": 0.0}

    def count_matches(self, hashes: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        counts = super().count_matches(hashes)
        self.seconds["count"] += time.perf_counter() - start
        return counts

    def return_matches(self, hashes: np.ndarray, song_ids: Sequence[int] | None = None) -> Hits:
        start = time.perf_counter()
        found = super().return_matches(hashes, song_ids)
        self.seconds["rows"] += time.perf_counter() - start
        self.looked_up.append(int(found[0].size))
        return found


def measure(djv: Dejavu, clips: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """Recognize each clip once (after one untimed warm-up query): timings, rows, correct answers."""
    store = CountingStore(djv.db)
    recognize_samples(store, djv.cfg, clips[-1][1], SAMPLE_RATE)
    times, lookups, counting, reading, rows, correct = [], [], [], [], [], 0
    for name, clip in clips:
        store.looked_up.clear()
        store.seconds = {"count": 0.0, "rows": 0.0}
        start = time.perf_counter()
        result = recognize_samples(store, djv.cfg, clip, SAMPLE_RATE)
        times.append(time.perf_counter() - start)
        lookups.append(result["query_time"])
        counting.append(store.seconds["count"])
        reading.append(store.seconds["rows"])
        rows.append(sum(store.looked_up))
        correct += bool(result["results"]) and result["results"][0]["song_name"] == name
    return {"p50": np.percentile(times, 50) * 1e3, "p95": np.percentile(times, 95) * 1e3,
            "lookup": np.percentile(lookups, 50) * 1e3, "count": np.percentile(counting, 50) * 1e3,
            "read": np.percentile(reading, 50) * 1e3, "rows": np.percentile(rows, 50), "correct": correct}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio_dir", nargs="?", default=os.path.expanduser("~/.cache/dejavu-dev-corpus/mp3"))
    parser.add_argument("--songs", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--lengths", type=float, nargs="+", default=[1, 2, 5, 10])
    parser.add_argument("--song-seconds", type=float, default=200.0, help="length of a synthetic song")
    parser.add_argument("--workdir", help="where the databases go (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep WORKDIR and reuse databases built there")
    parser.add_argument("--max-rows-per-hash", type=lambda v: int(v) or None, nargs="+", default=[None],
                        help="the database option of that name (0: none), a table row per value")
    parser.add_argument("--warm", action="store_true",
                        help="map every page of the SQLite index into the process before measuring "
                             "(a long-running reader's steady state; without it a large catalogue's "
                             "first queries pay page faults)")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "mysql"), default="sqlite",
                        help="the store measured (postgres, mysql: a throwaway server of dejavu.testing)")
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.audio_dir, "*.mp3")))
    if min(args.songs) < len(files):
        parser.error(f"every --songs size must hold the {len(files)} real songs")
    workdir = args.workdir or tempfile.mkdtemp(prefix="dejavu-latency-")
    os.makedirs(workdir, exist_ok=True)
    built: list[str] = []
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING)
    logging.getLogger("dejavu.database.server").setLevel(logging.INFO)  # the load's phases
    server = start_server(args.backend, workdir) if args.backend != "sqlite" else None
    try:
        run(args, files, workdir, built, server)
    finally:
        if server is not None:
            server.destroy()
        if not args.keep:
            for path in built:
                os.remove(path)
                shutil.rmtree(path + "-segments", ignore_errors=True)
            if not args.workdir:
                shutil.rmtree(workdir)
    if args.keep:
        print(f"databases kept in {workdir}")


def run(args: argparse.Namespace, files: list[str], workdir: str, built: list[str], server: Server | None) -> None:
    """Build (or reuse) the databases, appending the paths built to ``built``; print the latency table."""
    print(f"machine: {machine()}; backend {args.backend}; load average {os.getloadavg()[0]:.2f}")
    real_path = real_database(workdir, files, args.keep)
    built.append(real_path)
    djv = Dejavu({"database_type": "sqlite", "database": {"path": real_path}})
    frame_seconds = djv.cfg.fingerprint.frame_seconds
    stats = djv.stats()
    djv.close()
    print(f"real songs: {stats['songs']}, {stats['fingerprints'] / stats['audio_seconds']:.1f} rows per audio second")
    rng = np.random.default_rng(1)
    songs = [(os.path.splitext(os.path.basename(f))[0], decode(f, SAMPLE_RATE)) for f in files[:args.queries]]
    clips = {length: [(name, x[start:start + int(length * SAMPLE_RATE)]) for name, x in songs
                      for start in [int(rng.uniform(5, x.size / SAMPLE_RATE - length - 5) * SAMPLE_RATE)]]
             for length in args.lengths}
    rows = []
    for n_songs in sorted(args.songs):
        if server is None:
            path = sized_database(workdir, real_path, n_songs, args, frame_seconds, rng)
            built.append(path)
            config = {"database_type": "sqlite", "database": {"path": path}}
        else:
            config = server_database(server, args.backend, real_path, n_songs, args, frame_seconds, rng)
        for cap in args.max_rows_per_hash:
            database = config["database"] | ({"max_rows_per_hash": cap} if cap else {})
            djv = Dejavu({"database_type": config["database_type"], "database": database})
            if args.warm and hasattr(djv.db, "warm"):
                started = time.perf_counter()
                djv.db.warm()
                print(f"  mapped the index into the process in {time.perf_counter() - started:.1f} s")
            for length in args.lengths:
                rows.append((n_songs, cap, length, measure(djv, clips[length])))
                print(f"{table_row(*rows[-1], len(songs))} (load average {os.getloadavg()[0]:.2f})")
            djv.close()
        if server is not None:  # free the disk and the server's caches for the next size
            run_admin(server, f"DROP DATABASE {config['database']['database']}")
    print(f"{args.backend}: {len(songs)} queries per cell (clips of {len(songs)} real songs)")
    print("  songs | max rows/hash | clip s | p50 ms | p95 ms | lookup p50 ms | count p50 ms | read p50 ms "
          "| rows p50 | correct")
    for row in rows:
        print(table_row(*row, len(songs)))


def table_row(n_songs: int, cap: int | None, length: float, m: dict[str, Any], queries: int) -> str:
    """One line of the latency table."""
    return (f"{n_songs:7d} | {str(cap or '-'):>13} | {length:6g} | {m['p50']:6.1f} | {m['p95']:6.1f} | "
            f"{m['lookup']:13.1f} | {m['count']:12.1f} | {m['read']:11.1f} | {m['rows']:8.0f} | "
            f"{m['correct']}/{queries}")


if __name__ == "__main__":
    main()

"""Recognition latency, warm and in-process: p50/p95 per database size and clip length.

    python bench/recognition_latency.py [AUDIO_DIR] [--songs 100 1000 100000] [--queries 20]
        [--lengths 1 2 5 10] [--max-rows-per-hash 0 1000] [--workdir DIR] [--keep]

The real songs of AUDIO_DIR are fingerprinted once (WORKDIR/real.db).  Each size is
its own SQLite database (WORKDIR/songs-N.db, the product's schema): the real songs
plus synthetic songs of --song-seconds each, with as many rows per audio second as
the real songs have.  A synthetic row's hash is drawn from the real rows' hashes
(each distinct hash as often as it occurs there, so common hashes stay common), its
song and offset uniformly.  Per stored row, a synthetic song then returns as many
rows to a 5 s query of a real song as another real song does (1.02 x, measured on
the dev corpus).  The rows are generated in key order, a hash range at a time, and
bulk-loaded into the empty store (``SQLiteDatabase.load_catalogue``), so SQLite
writes its B-tree sequentially (100,000 songs: 1.8 billion rows, 38 GiB, about half
an hour on one core).

Clips of real songs (the same clips for every size) are then recognized, after one
warm-up query per cell; the time is `total_time` (fingerprint + lookup + align;
decoding excluded, as in the original), "lookup" its `query_time`, "rows" the stored
rows its lookups returned (a query that matches nothing is looked up again at each
speed factor).  --keep keeps WORKDIR (default: a temporary directory) and reuses the
databases already built there.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from _machine import machine  # noqa: E402
from _store import DelegatingStore  # noqa: E402

from dejavu import Dejavu  # noqa: E402
from dejavu.database.sqlite import SQLiteDatabase  # noqa: E402
from dejavu.evaluation.distractors import synthetic_rows  # noqa: E402
from dejavu.logic.decoder import decode  # noqa: E402
from dejavu.logic.search import recognize_samples  # noqa: E402
from dejavu.logic.store import Hits, Store  # noqa: E402

SAMPLE_RATE = 11025


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


def build_database(path: str, real_path: str, n_songs: int, song_seconds: float, frame_seconds: float,
                   rng: np.random.Generator) -> int:
    """Write ``path``: the real songs of ``real_path`` padded with synthetic songs to ``n_songs``;
    return its number of rows."""
    for leftover in (path, path + "-wal", path + "-shm"):  # of a build that did not finish
        if os.path.exists(leftover):
            os.remove(leftover)
    shutil.rmtree(path + "-segments", ignore_errors=True)
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
    store = SQLiteDatabase(path)  # one transaction: a failed load leaves an empty store
    rows = store.load_catalogue(
        catalogue, synthetic_rows(real, n_synth, (first_id, last_id), int(song_seconds / frame_seconds), rng))
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


class CountingStore(DelegatingStore):
    """The store, noting how many rows each lookup returned (in ``looked_up``)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.looked_up: list[int] = []

    def return_matches(self, hashes: np.ndarray, song_ids: Sequence[int] | None = None) -> Hits:
        found = super().return_matches(hashes, song_ids)
        self.looked_up.append(int(found[0].size))
        return found


def measure(djv: Dejavu, clips: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """Recognize each clip once (after one untimed warm-up query): timings, rows, correct answers."""
    store = CountingStore(djv.db)
    recognize_samples(store, djv.cfg, clips[-1][1], SAMPLE_RATE)
    times, lookups, rows, correct = [], [], [], 0
    for name, clip in clips:
        store.looked_up.clear()
        start = time.perf_counter()
        result = recognize_samples(store, djv.cfg, clip, SAMPLE_RATE)
        times.append(time.perf_counter() - start)
        lookups.append(result["query_time"])
        rows.append(sum(store.looked_up))
        correct += bool(result["results"]) and result["results"][0]["song_name"] == name
    return {"p50": np.percentile(times, 50) * 1e3, "p95": np.percentile(times, 95) * 1e3,
            "lookup": np.percentile(lookups, 50) * 1e3, "rows": np.percentile(rows, 50), "correct": correct}


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
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.audio_dir, "*.mp3")))
    if min(args.songs) < len(files):
        parser.error(f"every --songs size must hold the {len(files)} real songs")
    workdir = args.workdir or tempfile.mkdtemp(prefix="dejavu-latency-")
    os.makedirs(workdir, exist_ok=True)
    built: list[str] = []
    try:
        run(args, files, workdir, built)
    finally:
        if not args.keep:
            for path in built:
                os.remove(path)
                shutil.rmtree(path + "-segments", ignore_errors=True)
            if not args.workdir:
                shutil.rmtree(workdir)
    if args.keep:
        print(f"databases kept in {workdir}")


def run(args: argparse.Namespace, files: list[str], workdir: str, built: list[str]) -> None:
    """Build (or reuse) the databases, appending the paths built to ``built``; print the latency table."""
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
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
        path = sized_database(workdir, real_path, n_songs, args, frame_seconds, rng)
        built.append(path)
        for cap in args.max_rows_per_hash:
            database = {"path": path} | ({"max_rows_per_hash": cap} if cap else {})
            djv = Dejavu({"database_type": "sqlite", "database": database})
            for length in args.lengths:
                rows.append((n_songs, cap, length, measure(djv, clips[length])))
                print(f"  {n_songs} songs, max_rows_per_hash {cap}, {length:g} s clips: done "
                      f"(load average {os.getloadavg()[0]:.2f})")
            djv.close()
    print(f"{len(songs)} queries per cell (clips of {len(songs)} real songs)")
    print("  songs | max rows/hash | clip s | p50 ms | p95 ms | lookup p50 ms | rows p50 | correct")
    for n_songs, cap, length, m in rows:
        print(f"{n_songs:7d} | {str(cap or '-'):>13} | {length:6g} | {m['p50']:6.1f} | {m['p95']:6.1f} | "
              f"{m['lookup']:13.1f} | {m['rows']:8.0f} | {m['correct']}/{len(songs)}")


if __name__ == "__main__":
    main()

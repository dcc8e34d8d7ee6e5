"""The sharded PostgreSQL store: ingest rate and 5 s-clip latency for 1, 2 and 3 shards, coordinator overhead.

    python bench/shards.py [AUDIO_DIR] [--songs-per-shard 10000] [--song-seconds 20] [--queries 12]
        [--shards 3] [--workdir DIR] [--keep]

Throwaway servers (``dejavu.testing``): a coordinator and ``--shards`` shard servers, each
with 1 GB of shared_buffers.  Each shard holds ``--songs-per-shard`` songs of
``--song-seconds`` each, synthesized as ``bench/recognition_latency.py`` does (rows drawn
from the real songs' hashes, as many per audio second; the real songs of AUDIO_DIR are on
shard 1, so the clips have a right answer).  The rows are COPYed straight into each shard
song by song, as an ingest lays them out (indexes dropped, built after, then VACUUM
ANALYZE), and the songs inserted on the coordinator: "loaded" is that rate.  "store_songs" is the ingest write path proper: songs of
real size stored through the coordinator (catalogue row, COPY to the least-loaded shard,
marked fingerprinted), songs/s and rows/s.

Shards join one at a time: with 1, then 2, then 3 shards (so 10,000, 20,000, 30,000 songs)
clips of the real songs are recognized in-process through the coordinator (p50/p95 of
``total_time``, lookup, rows read).  Last, the coordinator's overhead: the clips' key
lookups (count + rows) through the coordinator with shard 1 alone, against the same SQL
on shard 1's server directly.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from _machine import machine  # noqa: E402
from recognition_latency import SAMPLE_RATE, measure, real_database  # noqa: E402

from dejavu import Dejavu  # noqa: E402
from dejavu.database.shard_setup import SHARD_INDEXES, first_song_id  # noqa: E402
from dejavu.database.server import LOAD_BATCH_ROWS  # noqa: E402
from dejavu.database.sharded import ShardedDatabase  # noqa: E402
from dejavu.database.sqlite import SQLiteDatabase  # noqa: E402
from dejavu.evaluation.distractors import synthetic_rows  # noqa: E402
from dejavu.logic.decoder import decode  # noqa: E402
from dejavu.logic.fingerprint import fingerprint  # noqa: E402
from dejavu.logic.resample import resample  # noqa: E402
from dejavu.logic.store import NewSong  # noqa: E402
from dejavu.testing import Server  # noqa: E402
from dejavu.testing.shards import shard_entry, start_sharded  # noqa: E402

SETTINGS = {"shared_buffers": "1GB", "maintenance_work_mem": "512MB", "max_wal_size": "4GB",
            "effective_cache_size": "4GB"}


def tune(server: Server) -> None:
    """SETTINGS on ``server`` (a restart applies shared_buffers)."""
    admin = server._admin_connect()
    with admin.cursor() as cur:
        for name, value in SETTINGS.items():
            cur.execute(f"ALTER SYSTEM SET {name} = %s", (value,))
    admin.close()
    server.restart()


def load_shard(store: ShardedDatabase, k: int, real_path: str, n_songs: int, song_seconds: float,
               frame_seconds: float, rng: np.random.Generator) -> int:
    """Fill shard ``k`` with ``n_songs`` songs (the real ones too if k == 1) by COPY; return its rows."""
    real_store = SQLiteDatabase(real_path)
    real_songs = real_store.get_songs()
    real = np.array(real_store.query(), dtype=np.int64).reshape(-1, 3)
    real_store.close()
    real = real[np.lexsort(real.T[::-1])]
    max_real = max(song["song_id"] for song in real_songs)
    rows_per_second = sum(s["total_hashes"] for s in real_songs) / sum(s["duration"] for s in real_songs)
    n_synth_songs = n_songs - (len(real_songs) if k == 1 else 0)
    first, last = max_real + 1, max_real + n_synth_songs
    per_song = np.zeros(last + 1, dtype=np.int64)
    shard, base = store.shards[k - 1], first_song_id(k)
    chunks = []
    for hashes, song_ids, offsets in synthetic_rows(real, round(n_synth_songs * rows_per_second * song_seconds),
                                                    (first, last), int(song_seconds / frame_seconds), rng):
        keep = song_ids > max_real if k > 1 else np.ones(hashes.size, dtype=bool)
        chunks.append(np.column_stack([hashes[keep], song_ids[keep] + base, offsets[keep]]))
        per_song += np.bincount(song_ids[keep], minlength=last + 1)
    rows = np.concatenate(chunks)
    del chunks
    rows = rows[np.lexsort((rows[:, 2], rows[:, 1]))]  # song by song, as an ingest writes them
    with shard.cursor(write=True) as cur:
        cur.execute("TRUNCATE fingerprints")
        cur.execute("DROP INDEX IF EXISTS ix_fingerprints_hash, ix_fingerprints_song_id")
        for start in range(0, len(rows), LOAD_BATCH_ROWS):
            shard._bulk_insert(cur, rows[start:start + LOAD_BATCH_ROWS])
        for statement in SHARD_INDEXES:
            cur.execute(statement)
    shard.connection.autocommit = True
    shard.connection.cursor().execute("VACUUM ANALYZE fingerprints")  # visibility map: index-only scans
    shard.connection.autocommit = False
    songs = [(base + i, f"synthetic {k}-{i}", hashlib.sha1(b"synthetic %d %d" % (k, i)).digest(), song_seconds,
              int(per_song[i])) for i in range(first, last + 1)]
    if k == 1:
        songs += [(base + s["song_id"], s["song_name"], bytes.fromhex(s["file_sha1"]), s["duration"],
                   int(per_song[s["song_id"]])) for s in real_songs]
    with store.cursor(write=True) as cur:
        text = io.StringIO("".join(f"{i}\t{name}\t\\\\x{sha.hex()}\t{dur}\t{n}\t1\n" for i, name, sha, dur, n in songs))
        cur.copy_expert("COPY songs (song_id, song_name, file_sha1, duration, total_hashes, fingerprinted) "
                        "FROM STDIN", text)
        cur.execute(f"SELECT setval('songs_shard_{k}', %s)", (max(song[0] for song in songs),))
        cur.execute("ANALYZE songs")
    return int(per_song.sum())


def store_rate(store: ShardedDatabase, real_path: str, n: int, rng: np.random.Generator) -> tuple[float, float]:
    """(songs/s, rows/s) of store_songs on ``n`` songs shaped like the real ones (then deleted)."""
    real = SQLiteDatabase(real_path)
    sizes = [song["total_hashes"] for song in real.get_songs()]
    real.close()
    songs = [NewSong(f"ingest {i}", hashlib.sha1(b"ingest %d" % i).hexdigest().upper(),
                     rng.integers(-2**62, 2**62, size), rng.integers(0, 20000, size).astype(np.int32), 200.0)
             for i, size in enumerate(rng.choice(sizes, n))]
    started = time.perf_counter()
    ids = []
    for start in range(0, n, 4):
        ids += store.store_songs(songs[start:start + 4])
    seconds = time.perf_counter() - started
    store.delete_songs_by_id([i for i in ids if i is not None])
    return n / seconds, sum(s.hashes.size for s in songs) / seconds


def overhead(store: ShardedDatabase, clips: list[tuple[str, np.ndarray]], cfg: Any) -> tuple[float, float]:
    """Median ms of one clip's count + lookup through the coordinator (1 shard) and on the shard directly."""
    shard = store.shards[0]
    through, direct = [], []
    for _, clip in clips:
        keys = np.unique(fingerprint(resample(clip, SAMPLE_RATE, cfg.sample_rate), cfg, query=True)[0])
        started = time.perf_counter()
        store.count_matches(keys)
        store.return_matches(keys)
        through.append(time.perf_counter() - started)
        started = time.perf_counter()
        shard._fetch("SELECT hash, COUNT(*) FROM fingerprints WHERE hash = ANY(%s::bigint[]) GROUP BY hash",
                     (keys.tolist(),))
        shard._fetch('SELECT hash, song_id, "offset" FROM fingerprints WHERE hash = ANY(%s::bigint[])',
                     (keys.tolist(),))
        direct.append(time.perf_counter() - started)
    return float(np.median(through) * 1e3), float(np.median(direct) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio_dir", nargs="?", default=os.path.expanduser("~/.cache/dejavu-dev-corpus-small/mp3"))
    parser.add_argument("--songs-per-shard", type=int, default=10000)
    parser.add_argument("--song-seconds", type=float, default=20.0, help="length of a synthetic song")
    parser.add_argument("--queries", type=int, default=12)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--ingest-songs", type=int, default=40, help="songs stored by store_songs for its rate")
    parser.add_argument("--workdir", help="where real.db and the server logs go (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="reuse WORKDIR/real.db")
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.audio_dir, "*.mp3")))
    workdir = args.workdir or tempfile.mkdtemp(prefix="dejavu-shards-")
    os.makedirs(workdir, exist_ok=True)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    real_path = real_database(workdir, files, args.keep)
    coordinator, shards = start_sharded(Path(workdir) / "servers", args.shards)
    try:
        for server in (coordinator, *shards):
            tune(server)
        run(args, files, real_path, coordinator, shards)
    finally:
        for server in (coordinator, *shards):
            server.destroy()


def run(args: argparse.Namespace, files: list[str], real_path: str, coordinator: Server, shards: list[Server]) -> None:
    rng = np.random.default_rng(1)
    songs = [(os.path.splitext(os.path.basename(f))[0], decode(f, SAMPLE_RATE)) for f in files[:args.queries]]
    clips = [(name, x[start:start + 5 * SAMPLE_RATE]) for name, x in songs
             for start in [int(rng.uniform(5, x.size / SAMPLE_RATE - 10) * SAMPLE_RATE)]]
    results = []
    for n in range(1, args.shards + 1):
        config = coordinator.config()
        config["database"]["shards"] = [shard_entry(shard) for shard in shards[:n]]
        djv = Dejavu(config)
        started = time.perf_counter()
        rows = load_shard(djv.db, n, real_path, args.songs_per_shard, args.song_seconds,
                          djv.cfg.fingerprint.frame_seconds, rng)
        seconds = time.perf_counter() - started
        size = djv.db.stats()["shards"][n - 1]["size_bytes"]
        print(f"shard {n}: {args.songs_per_shard} songs, {rows:,} rows, {size / 2**30:.2f} GiB "
              f"({size / rows:.1f} B a row), loaded in {seconds:.0f} s ({rows / seconds:,.0f} rows/s)")
        if n == 1:
            via, direct = overhead(djv.db, clips, djv.cfg.fingerprint)
            print(f"  coordinator overhead, count + read of a 5 s clip's keys: {via:.1f} ms through the "
                  f"coordinator, {direct:.1f} ms on the shard directly")
        m = measure(djv, clips)
        results.append((n, n * args.songs_per_shard, m))
        print(f"  {n} shard(s): p50 {m['p50']:.1f} ms, p95 {m['p95']:.1f} ms, lookup {m['lookup']:.1f} ms, "
              f"rows {m['rows']:.0f}, correct {m['correct']}/{len(clips)} (load average {os.getloadavg()[0]:.2f})")
        djv.close()
    djv = Dejavu(config)
    song_rate, row_rate = store_rate(djv.db, real_path, args.ingest_songs, rng)
    print(f"store_songs through the coordinator: {song_rate:.1f} songs/s, {row_rate:,.0f} rows/s")
    djv.close()
    print(f"5 s clips, {len(clips)} queries per row, {args.songs_per_shard} songs of {args.song_seconds:g} s per shard")
    print("  shards | songs | p50 ms | p95 ms | lookup p50 ms | rows p50 | correct")
    for n, total, m in results:
        print(f"  {n:6d} | {total:5d} | {m['p50']:6.1f} | {m['p95']:6.1f} | {m['lookup']:13.1f} | "
              f"{m['rows']:8.0f} | {m['correct']}/{len(clips)}")


if __name__ == "__main__":
    main()

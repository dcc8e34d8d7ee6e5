#!/usr/bin/env python3
"""Compare two fingerprint index structures on this machine: numpy segments
(dejavu.database.segments: sorted keys + CSR postings, memory-mapped) and LMDB (a B+tree
with integer duplicate keys, what Olaf and Panako use).

    python bench/index_compare.py [--rows 20000000] [--queries 50] [--query-keys 1000]
                                  [--append 100000] [--songs N] [--dir DIR] [--seed 0]

Both are built from the same synthetic rows: keys from a skewed distribution over 2^23
keys (key rank k drawn as floor(2^23 u^2), u uniform: the most common key holds about
1/2900 of the rows, then scattered by a bijective multiply), song ids and offsets
uniform.  Measured: build time and bytes on disk (allocated blocks); the time to look up
--query-keys keys drawn from the same distribution and return their rows as int64 numpy
arrays (p50 / p95 over --queries queries, page cache warm, a new read transaction per
LMDB query); rows returned per second; adding --append rows to the built index (a new
segment vs. LMDB puts in one transaction, both synced to disk), and a lookup after it
(two segments).  LMDB needs ``pip install lmdb`` (a benchmark-only dependency).

The segment is written from unsorted arrays (its sort included); LMDB is bulk-loaded
from the same rows already sorted (MDB_APPEND, its sort not counted).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _machine import machine  # noqa: E402

from dejavu.database.segment_writer import plan_merge, write_segment  # noqa: E402
from dejavu.database.segments import Segment, lookup_all  # noqa: E402
from dejavu.logic.store import Hits  # noqa: E402

try:
    import lmdb
except ImportError:
    sys.exit("index_compare: LMDB is not installed: pip install lmdb")

KEY_BITS = 23
SCATTER = 0x2F0F3D  # odd: k * SCATTER mod 2^23 is a bijection
OFFSETS = 10_000  # frames (about 4 minutes)
LOW = np.uint64(0xFFFFFFFF)
ROW = np.dtype([("key", "=u8"), ("value", "=u8")])  # getmulti's packed (key, value) pairs


def synthetic_keys(rng: np.random.Generator, n: int) -> np.ndarray:
    """n keys (int64) from the skewed distribution over 2^KEY_BITS keys."""
    rank = (rng.random(n) ** 2 * (1 << KEY_BITS)).astype(np.int64)
    return (rank * SCATTER) & ((1 << KEY_BITS) - 1)


def synthetic_rows(rng: np.random.Generator, n: int, songs: int, first_song: int = 0) -> Hits:
    return (synthetic_keys(rng, n), rng.integers(first_song, first_song + songs, n),
            rng.integers(0, OFFSETS, n))


def lmdb_items(rows: Hits) -> list[tuple[bytes, bytes]]:
    """(key, value) byte pairs in row order: native uint64 key, value song << 32 | offset."""
    keys, songs, offsets = rows
    kb = keys.astype("=u8").tobytes()
    vb = ((songs.astype(np.uint64) << np.uint64(32)) | offsets.astype(np.uint64)).astype("=u8").tobytes()
    return [(kb[i:i + 8], vb[i:i + 8]) for i in range(0, len(kb), 8)]


class LmdbIndex:
    """An LMDB environment with one dupsort/dupfixed/integerkey/integerdup database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = lmdb.open(str(path), map_size=1 << 40, max_dbs=1, readahead=False)
        self.db = self.env.open_db(b"fp", dupsort=True, dupfixed=True, integerkey=True, integerdup=True)

    def put_sorted(self, segment: Segment, chunk_rows: int = 1 << 21) -> None:
        """Bulk-load the segment's rows (key order) with MDB_APPEND / MDB_APPENDDUP, one transaction."""
        with self.env.begin(write=True, db=self.db) as txn:
            cursor = txn.cursor()
            for rows in segment.iter_rows(chunk_rows):
                cursor.putmulti(lmdb_items(rows), dupdata=True, append=True)

    def put(self, rows: Hits) -> None:
        """Insert rows in one transaction (committed and synced)."""
        with self.env.begin(write=True, db=self.db) as txn:
            txn.cursor().putmulti(lmdb_items(rows), dupdata=True)

    def lookup(self, query_keys: np.ndarray) -> Hits:
        """Rows of the distinct query keys as int64 arrays, by key."""
        wanted = np.unique(query_keys).astype("=u8").tobytes()
        with self.env.begin(db=self.db) as txn:
            packed = txn.cursor().getmulti([wanted[i:i + 8] for i in range(0, len(wanted), 8)], dupdata=True,
                                           dupfixed_bytes=8, keyfixed=True)
        found = np.frombuffer(packed, dtype=ROW)
        values = found["value"]
        return (found["key"].astype(np.int64), (values >> np.uint64(32)).astype(np.int64),
                (values & LOW).astype(np.int64))


def disk_bytes(*paths: Path) -> int:
    """Bytes allocated on disk to these files and the files in these folders."""
    files = [f for p in paths for f in ([p] if p.is_file() else p.iterdir())]
    return sum(f.stat().st_blocks * 512 for f in files)


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def query_times(lookup: Callable[[np.ndarray], Hits], queries: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """Seconds per query (after one warm-up pass) and the rows the queries returned."""
    for q in queries:
        lookup(q)
    times, rows = [], 0
    for q in queries:
        seconds, found = timed(lambda: lookup(q))
        times.append(seconds)
        rows += found[0].size
    return np.array(times), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000_000, help="rows of the built index")
    parser.add_argument("--songs", type=int, default=0, help="songs (default: rows / 20000)")
    parser.add_argument("--queries", type=int, default=50, help="timed queries")
    parser.add_argument("--query-keys", type=int, default=1000, help="keys per query")
    parser.add_argument("--append", type=int, default=100_000, help="rows added to the built index")
    parser.add_argument("--dir", type=Path, help="where to make the work folder (removed at the end)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    songs = args.songs or max(1, args.rows // 20_000)
    work = Path(tempfile.mkdtemp(prefix="index_compare.", dir=args.dir))
    print(f"machine: {machine()}; numpy {np.__version__}, py-lmdb {lmdb.__version__} "
          f"(LMDB {'.'.join(map(str, lmdb.version()))})")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; work folder {work}")
    print(f"rows {args.rows:,} over {songs:,} songs, keys over 2^{KEY_BITS}; {args.queries} queries of "
          f"{args.query_keys} keys; append {args.append:,} rows")
    try:
        rng = np.random.default_rng(args.seed)
        rows = synthetic_rows(rng, args.rows, songs)
        queries = [synthetic_keys(rng, args.query_keys) for _ in range(args.queries)]
        extra = synthetic_rows(rng, args.append, max(1, songs // 100), first_song=songs)

        seg_build, info = timed(lambda: write_segment(work / "0.seg", *rows))
        del rows
        segment = Segment.open(info.path)
        index = LmdbIndex(work / "lmdb")
        lmdb_build, _ = timed(lambda: index.put_sorted(segment))
        seg_times, seg_rows = query_times(segment.lookup, queries)
        lmdb_times, lmdb_rows = query_times(index.lookup, queries)
        for q in queries[:5]:  # the two indexes agree, to the order (LMDB sorts a key's rows by value)
            np.testing.assert_array_equal(np.stack(segment.lookup(q)), np.stack(index.lookup(q)))

        seg_add, added = timed(lambda: write_segment(work / "1.seg", *extra))
        if plan_merge([info.rows, added.rows]):
            print("(plan_merge would now merge the two segments: the append is over 1/4 of the index)")
        both = [segment, Segment.open(added.path)]
        lmdb_add, _ = timed(lambda: index.put(extra))
        seg_after, _ = query_times(lambda q: lookup_all(both, q), queries)
        lmdb_after, _ = query_times(index.lookup, queries)
        for q in queries[:5]:  # the same rows (two segments: a key's rows segment by segment)
            np.testing.assert_array_equal(*(np.unique(np.stack(r), axis=1) for r in (lookup_all(both, q), index.lookup(q))))

        def line(name: str, build: float, size: int, times: np.ndarray, found: int, add: float,
                 after: np.ndarray) -> str:
            return (f"| {name} | {build:.1f} | {info.rows / build / 1e6:.2f} | {size / 2**20:.0f} "
                    f"| {size / info.rows:.1f} | {1e3 * np.percentile(times, 50):.2f} "
                    f"| {1e3 * np.percentile(times, 95):.2f} | {found / args.queries:,.0f} "
                    f"| {found / times.sum() / 1e6:.1f} | {1e3 * add:.0f} | {1e3 * np.percentile(after, 50):.2f} |")

        print(f"\n{info.rows:,} distinct rows, {info.n_keys:,} distinct keys\n")
        print("| index | build s | build M rows/s | MiB on disk | bytes/row | query p50 ms | query p95 ms "
              "| rows/query | M rows/s | append ms | p50 ms after append |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(line("numpy segments", seg_build, disk_bytes(work / "0.seg"), seg_times, seg_rows, seg_add, seg_after))
        print(line("LMDB", lmdb_build, disk_bytes(work / "lmdb"), lmdb_times, lmdb_rows, lmdb_add, lmdb_after))
        assert seg_rows == lmdb_rows
        print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        index.env.close()
    finally:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

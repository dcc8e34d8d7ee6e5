"""Recognition latency, warm and in-process, p50/p95 per clip length and database size.

    python bench/recognition_latency.py [AUDIO_DIR] [--songs 100 1000] [--queries 20]

Fingerprints the real songs of AUDIO_DIR into a fresh SQLite database, then pads it
up to each size with synthetic songs whose rows are realistic: hashes drawn from the
real songs' hashes (so common hashes stay common) at random offsets, 58 rows per
audio second of a 200 s song.  Clips of real songs are then recognized; the time is
`total_time` (fingerprint + lookup + align; decoding excluded, as in the original).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from _machine import machine  # noqa: E402

from dejavu import Dejavu  # noqa: E402
from dejavu.logic.decoder import decode  # noqa: E402


def pad_with_synthetic_songs(djv: Dejavu, target: int, pool: np.ndarray, rng: np.random.Generator) -> None:
    """Add synthetic songs until the store holds ``target`` songs."""
    have = djv.db.get_num_songs()
    frames = int(200 / djv.cfg.fingerprint.frame_seconds)
    rows = int(200 * 58)
    for i in range(have, target):
        hashes = rng.choice(pool, size=rows)
        offsets = rng.integers(0, frames, size=rows, dtype=np.int32)
        djv.db.store_song(f"synthetic {i}", f"{rng.integers(0, 2**63):040x}", hashes, offsets, 200.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio_dir", nargs="?", default=os.path.expanduser("~/.cache/dejavu-dev-corpus/mp3"))
    parser.add_argument("--songs", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--lengths", type=float, nargs="+", default=[1, 2, 5, 10])
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.audio_dir, "*.mp3")))
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        djv = Dejavu({"database_type": "sqlite", "database": {"path": os.path.join(tmp, "bench.db")}})
        djv.fingerprint_files(files, None)
        pool = np.array([r[0] for r in djv.db.query()], dtype=np.int64)
        sr = 11025
        songs = [(f, decode(f, sr)) for f in files[: max(5, args.queries)]]
        print(f"machine: {machine()}")
        print(f"real songs: {len(files)}; clips from {len(songs)} of them; {args.queries} queries per cell")
        print("songs   | clip | p50 ms | p95 ms | correct")
        for target in sorted(args.songs):
            pad_with_synthetic_songs(djv, target, pool, rng)
            for length in args.lengths:
                times, correct = [], 0
                for q in range(args.queries):
                    path, x = songs[q % len(songs)]
                    start = int(rng.uniform(5, x.size / sr - length - 5) * sr)
                    clip = x[start:start + int(length * sr)]
                    djv.recognize_samples(clip, sr) if q == 0 else None  # warm
                    t = time.perf_counter()
                    r = djv.recognize_samples(clip, sr)
                    times.append(time.perf_counter() - t)
                    correct += bool(r["results"]) and r["results"][0]["song_name"] == os.path.splitext(os.path.basename(path))[0]
                p50, p95 = np.percentile(times, [50, 95]) * 1000
                print(f"{djv.db.get_num_songs():7d} | {length:4.0f} | {p50:6.1f} | {p95:6.1f} | {correct}/{args.queries}")


if __name__ == "__main__":
    main()

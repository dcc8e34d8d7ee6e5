"""Fingerprinting throughput, PCM → hashes, on one core.

    python bench/fingerprint_speed.py [AUDIO_DIR] [--files N]

Decodes N songs of the folder once (not timed), then times `fingerprint()` on each and
prints audio seconds per wall second per core, for the stored and the query settings.
The process starts cold: the SHA1 of each pair is computed the first time the pair
occurs (then looked up), and that cost is included.  The machine may be shared: the
load average is printed, and `taskset -c 0` keeps the run on one core.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from _machine import machine  # noqa: E402

from dejavu.config import FingerprintConfig  # noqa: E402
from dejavu.logic.decoder import decode  # noqa: E402
from dejavu.logic.fingerprint import fingerprint  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio_dir", nargs="?", default=os.path.expanduser("~/.cache/dejavu-dev-corpus/mp3"))
    parser.add_argument("--files", type=int, default=10)
    args = parser.parse_args()
    cfg = FingerprintConfig()
    files = sorted(glob.glob(os.path.join(args.audio_dir, "*.mp3")))[: args.files]
    if not files:
        sys.exit(f"no .mp3 files in {args.audio_dir}")
    songs = [decode(f, cfg.sample_rate) for f in files]
    seconds = sum(s.size for s in songs) / cfg.sample_rate
    fingerprint(songs[0][: cfg.sample_rate * 5], cfg)  # warm caches
    print(f"machine: {machine()}")
    print("load average: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"audio: {len(songs)} songs, {seconds:.0f} s")
    for query in (False, True):
        start = time.process_time()
        wall = time.perf_counter()
        hashes = sum(fingerprint(s, cfg, query=query)[0].size for s in songs)
        cpu = time.process_time() - start
        wall = time.perf_counter() - wall
        side = "query " if query else "stored"
        print(f"{side}: {seconds / cpu:7.0f} x real time per core (CPU time), {seconds / wall:7.0f} x wall, "
              f"{hashes / seconds:.1f} hashes per audio second")


if __name__ == "__main__":
    main()

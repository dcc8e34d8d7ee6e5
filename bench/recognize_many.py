"""Clips per second: `dejavu --recognize file A B C…` (one process, -j 1 and -j N) against one
`dejavu --recognize file CLIP` process per clip.

    python bench/recognize_many.py [AUDIO_DIR] [--songs 6] [--clips 24] [--seconds 5] [--jobs 2]

The --songs first MP3s of AUDIO_DIR (default: the small dev corpus) are fingerprinted into a
fresh SQLite store (not timed); --clips clips of --seconds are cut from them (MP3, round
robin, not timed). Each way is timed from outside, wall clock, this checkout's CLI
(`python dejavu.py`); the JSON lines are checked to name the song each clip was cut from.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from itertools import cycle

sys.path.insert(0, os.path.dirname(__file__))

from _machine import machine  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CLI = [sys.executable, os.path.join(ROOT, "dejavu.py")]
ENV = {**os.environ, "PYTHONPATH": ROOT}


def dejavu(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=ENV, capture_output=True, stdin=subprocess.DEVNULL, check=False)


def make_clips(songs: list[str], n: int, seconds: float, folder: str) -> list[tuple[str, str]]:
    """(clip path, name of the song it was cut from) × n, from 20 s into each song on."""
    clips = []
    for i, song in zip(range(n), cycle(songs)):
        path = os.path.join(folder, f"clip{i:03d}.mp3")
        start = 20.0 + 7.0 * (i // len(songs))
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", str(start), "-t", str(seconds), "-i", song,
                        path], check=True)
        clips.append((path, os.path.splitext(os.path.basename(song))[0]))
    return clips


def correct(lines: list[dict], clips: list[tuple[str, str]]) -> int:
    """How many answers name the right song (lines and clips in the same order)."""
    return sum(bool(line.get("results")) and line["results"][0]["song_name"] == name
               for line, (_, name) in zip(lines, clips))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio_dir", nargs="?", default=os.path.expanduser("~/.cache/dejavu-dev-corpus-small/mp3"))
    parser.add_argument("--songs", type=int, default=6)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes of the -j N run")
    args = parser.parse_args()
    songs = sorted(glob.glob(os.path.join(args.audio_dir, "*.mp3")))[:args.songs]
    if not songs:
        sys.exit(f"no MP3 files in {args.audio_dir}")
    with tempfile.TemporaryDirectory() as work:
        db = os.path.join(work, "fp.db")
        for song in songs:
            out = dejavu("--db", db, "--fingerprint", song)
            if out.returncode != 0:
                sys.exit(out.stderr.decode())
        clips = make_clips(songs, args.clips, args.seconds, work)
        paths = [p for p, _ in clips]
        print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
        print(f"store: {len(songs)} songs from {args.audio_dir}; {len(clips)} clips of {args.seconds:g} s (MP3)")
        start = time.perf_counter()
        lines = [json.loads(dejavu("--db", db, "--recognize", "file", p).stdout) for p in paths]
        wall = time.perf_counter() - start
        print(f"one process per clip:      {len(clips) / wall:6.2f} clips/s  ({wall:6.2f} s, "
              f"{correct(lines, clips)}/{len(clips)} right)")
        for jobs in (1, args.jobs):
            start = time.perf_counter()
            out = dejavu("--db", db, "-j", str(jobs), "--recognize", "file", *paths)
            wall = time.perf_counter() - start
            lines = [json.loads(line) for line in out.stdout.splitlines()]
            assert [line["path"] for line in lines] == paths, out.stderr.decode()
            print(f"one process, -j {jobs}:        {len(clips) / wall:6.2f} clips/s  ({wall:6.2f} s, "
                  f"{correct(lines, clips)}/{len(clips)} right)")
        print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

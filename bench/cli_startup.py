"""Cold command-line costs: `dejavu --help`, a cold recognize, and a 2-hour ingest.

    python bench/cli_startup.py [AUDIO_DIR] [--runs 7] [--songs 5] [--hours 2]

Every figure is one fresh process running this checkout's CLI (`python dejavu.py`, what
the `dejavu` console script runs), timed from outside: wall time, and CPU time and peak
RSS from `os.wait4` of that process (its ffmpeg decoder included, as the largest
single process of the two).

- `--help`: median of --runs runs, next to a bare `python -c pass` (the floor) and the
  `dejavu` found on PATH, if any;
- `--recognize file` of a 5 s MP3 clip against a SQLite database of --songs songs
  (built first, not timed), one of a stored song and one of a song not stored:
  median of --runs runs each;
- `--fingerprint FILE` of a --hours long MP3 (corpus tracks joined by ffmpeg without
  re-encoding) into a fresh SQLite database: peak RSS and audio seconds per wall second.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import cycle

sys.path.insert(0, os.path.dirname(__file__))

from _machine import machine  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CLI = [sys.executable, os.path.join(ROOT, "dejavu.py")]
ENV = {**os.environ, "PYTHONPATH": ROOT}  # a `dejavu` console script also runs this checkout


@dataclass
class Run:
    """One finished child process."""

    returncode: int
    stdout: bytes
    stderr: bytes
    wall: float      # s
    cpu: float       # s, user + system
    max_rss_mb: float


def run(cmd: list[str], cwd: str) -> Run:
    """Run ``cmd`` and measure it alone (``os.wait4`` gives this child's own rusage)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(proc.returncode, out.read(), err.read(), wall, usage.ru_utime + usage.ru_stime,
                   usage.ru_maxrss / 1024)


def failure(r: Run, ok: tuple[int, ...] = (0,)) -> str:
    """Empty if the run exited with a status in ``ok``, else the status and the last line of stderr."""
    if r.returncode in ok:
        return ""
    lines = r.stderr.decode(errors="replace").strip().splitlines()
    return f" (FAILED, exit status {r.returncode}: {lines[-1] if lines else 'no message'})"


def medians(cmd: list[str], cwd: str, runs: int) -> tuple[float, float, list[Run]]:
    """(median wall s, median CPU s, the runs) of ``runs`` fresh runs of ``cmd``."""
    results = [run(cmd, cwd) for _ in range(runs)]
    return (statistics.median(r.wall for r in results), statistics.median(r.cpu for r in results), results)


def duration(path: str) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
                         capture_output=True, text=True, check=True).stdout
    return float(out)


def long_file(files: list[str], seconds: float, out: str) -> float:
    """Join corpus tracks (repeating them if needed) into one MP3 of at least ``seconds``;
    return its duration."""
    listing, total = [], 0.0
    for path in cycle(files):
        if total >= seconds:
            break
        listing.append("file '%s'" % path.replace("'", "'\\''"))
        total += duration(path)
    with open(out + ".txt", "w", encoding="utf-8") as fh:
        fh.write("\n".join(listing) + "\n")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", out + ".txt",
                    "-map", "0:a", "-c", "copy", out], check=True)
    return duration(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio_dir", nargs="?", default=os.path.expanduser("~/.cache/dejavu-dev-corpus/mp3"))
    parser.add_argument("--runs", type=int, default=7, help="runs per median (default 7)")
    parser.add_argument("--songs", type=int, default=5, help="songs in the recognize database (default 5)")
    parser.add_argument("--hours", type=float, default=2.0, help="length of the ingested file (default 2)")
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.audio_dir, "*.mp3")))
    if not files:
        sys.exit(f"no .mp3 files in {args.audio_dir}; get the dev corpus with: "
                 f"../shared/tools/get-dev-corpus.sh DEST (then pass DEST/mp3)")
    print(f"machine: {machine()}")
    print("load average at start: %.2f %.2f %.2f" % os.getloadavg())

    with tempfile.TemporaryDirectory(prefix="dejavu-cli-bench-") as tmp:
        wall, cpu, _ = medians([sys.executable, "-c", "pass"], tmp, args.runs)
        print(f"python -c pass         : {wall * 1000:6.0f} ms wall, {cpu * 1000:4.0f} ms CPU (median of {args.runs})")
        floor = wall
        wall, cpu, runs = medians(CLI + ["--help"], tmp, args.runs)
        print(f"python dejavu.py --help: {wall * 1000:6.0f} ms wall, {cpu * 1000:4.0f} ms CPU, "
              f"{runs[0].max_rss_mb:.0f} MB RSS, {wall / floor:.1f} x bare python")
        installed = shutil.which("dejavu")
        if installed:
            wall, cpu, runs = medians([installed, "--help"], tmp, args.runs)
            print(f"dejavu --help          : {wall * 1000:6.0f} ms wall, {cpu * 1000:4.0f} ms CPU ({installed})"
                  f"{failure(runs[0])}")

        songs = os.path.join(tmp, "songs")
        os.mkdir(songs)
        for path in files[: args.songs]:
            os.symlink(path, os.path.join(songs, os.path.basename(path)))
        config = os.path.join(tmp, "small.json")
        with open(config, "w", encoding="utf-8") as fh:
            json.dump({"database_type": "sqlite", "database": {"path": os.path.join(tmp, "small.db")}}, fh)
        built = run(CLI + ["-c", config, "--no-progress", "--fingerprint", songs, "mp3"], tmp)
        if built.returncode != 0:
            sys.exit(f"building the database{failure(built)}")
        queries = [(files[0], "of a stored song")]
        if len(files) > args.songs:
            queries.append((files[args.songs], "of a song not stored (the speed search runs)"))
        for song, kind in queries:
            clip = os.path.join(tmp, "clip.mp3")
            start = min(30.0, duration(song) / 2)
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", str(start), "-t", "5", "-i", song,
                            "-map", "0:a", clip], check=True)
            wall, cpu, runs = medians(CLI + ["-c", config, "--recognize", "file", clip], tmp, args.runs)
            results = json.loads(runs[0].stdout or b'{"results": []}')["results"]
            name = results[0]["song_name"] if results else "no match"
            print(f"cold recognize, 5 s MP3 clip {kind}, {len(files[: args.songs])} songs in SQLite: "
                  f"{wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU (median of {args.runs}), "
                  f"{max(r.max_rss_mb for r in runs):.0f} MB peak RSS; answer: {name}{failure(runs[0], (0, 1))}")

        big = os.path.join(tmp, "long.mp3")
        seconds = long_file(files, args.hours * 3600, big)
        config = os.path.join(tmp, "long.json")
        with open(config, "w", encoding="utf-8") as fh:
            json.dump({"database_type": "sqlite", "database": {"path": os.path.join(tmp, "long.db")}}, fh)
        ingest = run(CLI + ["-c", config, "--no-progress", "--fingerprint", big], tmp)
        print(f"ingest of a {seconds / 3600:.2f} h MP3 ({os.path.getsize(big) / 2**20:.0f} MB) into SQLite: "
              f"{ingest.wall:.1f} s wall, {ingest.cpu:.1f} s CPU, {seconds / ingest.wall:.0f} x real time, "
              f"peak RSS {ingest.max_rss_mb:.0f} MB{failure(ingest)}")
    print("load average at end: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()

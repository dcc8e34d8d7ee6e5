"""Monitor a long "radio show" and report timeline accuracy, speed and peak memory.

    python bench/monitor_memory.py [--corpus ~/.cache/dejavu-dev-corpus] [--hours 1]

Builds (with ffmpeg, in a work directory under /tmp) a show of random excerpts of
corpus tracks: some from fingerprinted ("known") tracks, the rest from tracks never
fingerprinted ("unknown"), with short fades and a little pink noise, encoded as MP3.
The known tracks are fingerprinted by the CLI in a separate process, so this process
does nothing but monitor; its peak RSS (``resource.getrusage``) is then the monitor's.

Accuracy: a known excerpt is found if a segment names its song and overlaps it; its
start/end are right if within ``--tolerance`` s (default 1 s), its offset if the song
position at the segment start is within 0.5 s.  Segments that match no known excerpt
are false alarms (e.g. during unknown audio).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench")

FADE = 0.5  # s of fade in/out at each excerpt's edges


@dataclass
class Excerpt:
    path: Path
    name: str          # song name (file name without extension)
    known: bool
    song_start: float  # s in the track
    length: float      # s
    start: float = 0.0  # s in the show

    @property
    def end(self) -> float:
        return self.start + self.length


def corpus_tracks(corpus: Path) -> list[tuple[Path, float]]:
    """(mp3 path, seconds) of every corpus track, from its manifest (or ffprobe)."""
    manifest = corpus / "manifest.tsv"
    tracks = []
    if manifest.is_file():
        for line in manifest.read_text().splitlines():
            rel, _, seconds = line.partition("\t")
            if rel and seconds:
                tracks.append((corpus / rel, float(seconds)))
    else:
        for mp3 in sorted((corpus / "mp3").glob("*.mp3")):
            out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                  str(mp3)], capture_output=True, text=True, check=True).stdout
            tracks.append((mp3, float(out)))
    return [(p, s) for p, s in tracks if p.is_file()]


def plan_show(tracks: list[tuple[Path, float]], n_known: int, hours: float,
              seed: int) -> tuple[list[Excerpt], list[Path]]:
    """A random timeline of known and unknown excerpts, ``hours`` long, and the known tracks
    (all to be fingerprinted, whether the show plays them or not)."""
    rng = random.Random(seed)
    tracks = tracks[:]
    rng.shuffle(tracks)
    known, unknown = tracks[:n_known], tracks[n_known:]
    if not unknown:
        raise SystemExit("the corpus needs more tracks than --known")
    show: list[Excerpt] = []
    t = 0.0
    while t < hours * 3600:
        is_known = rng.random() < 0.65
        path, seconds = rng.choice(known if is_known else unknown)
        length = min(rng.uniform(20, 120) if is_known else rng.uniform(10, 60), seconds - 2)
        song_start = rng.uniform(0, max(0.0, seconds - length - 1))
        show.append(Excerpt(path, path.stem, is_known, round(song_start, 2), round(length, 2), round(t, 2)))
        t += show[-1].length
    return show, [p for p, _ in known]


def build_show(show: list[Excerpt], work: Path, out: Path) -> None:
    """Cut, fade and join the excerpts with ffmpeg; add pink noise; encode MP3."""
    pieces = work / "pieces"
    pieces.mkdir(exist_ok=True)
    listing = []
    for i, ex in enumerate(show):
        piece = pieces / f"{i:04d}.wav"
        fades = f"afade=t=in:d={FADE},afade=t=out:st={ex.length - FADE:.3f}:d={FADE}"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{ex.song_start}", "-t", f"{ex.length}",
                        "-i", str(ex.path), "-af", fades, "-ar", "44100", "-ac", "2", "-c:a", "pcm_s16le",
                        str(piece)], check=True)
        listing.append(f"file '{piece}'")
    (work / "pieces.txt").write_text("\n".join(listing) + "\n")
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(work / "pieces.txt"),
                    "-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.02:sample_rate=44100",
                    "-filter_complex", "[1:a]aformat=channel_layouts=stereo[n];[0:a][n]amix=inputs=2:duration=first:normalize=0",
                    "-c:a", "libmp3lame", "-b:a", "128k", str(out)], check=True)
    shutil.rmtree(pieces)


def fingerprint_known(known: list[Path], work: Path, config: Path) -> None:
    """Fingerprint the known tracks with the CLI (separate process)."""
    songs = work / "known"
    if songs.exists():
        shutil.rmtree(songs)
    songs.mkdir()
    for path in sorted(known):
        (songs / path.name).symlink_to(path)
    db = json.loads(config.read_text())["database"]["path"]
    if os.path.exists(db):
        os.remove(db)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(ROOT / "dejavu.py"), "-c", str(config), "--no-progress", "--fingerprint",
                    str(songs), "mp3"], check=True, env=env)


def score(segments: list[dict], show: list[Excerpt], tolerance: float) -> dict:
    """Compare segments with the known excerpts."""
    known = [ex for ex in show if ex.known]
    used: set[int] = set()
    found = bounds_ok = offsets_ok = 0
    start_err, end_err, offset_err = [], [], []
    for ex in known:
        best = None
        for i, seg in enumerate(segments):
            overlap = min(seg["end_seconds"], ex.end) - max(seg["start_seconds"], ex.start)
            if seg["song_name"] == ex.name and overlap > 0 and i not in used:
                if best is None or overlap > best[1]:
                    best = (i, overlap)
        if best is None:
            log.info("missed %s [%.1f, %.1f] (song %.1f s)", ex.name, ex.start, ex.end, ex.song_start)
            continue
        used.add(best[0])
        seg = segments[best[0]]
        found += 1
        ds, de = seg["start_seconds"] - ex.start, seg["end_seconds"] - ex.end
        do = seg["offset_seconds"] - (ex.song_start + ds)
        start_err.append(abs(ds))
        end_err.append(abs(de))
        offset_err.append(abs(do))
        bounds_ok += abs(ds) <= tolerance and abs(de) <= tolerance
        offsets_ok += abs(do) <= 0.5
        if abs(ds) > tolerance or abs(de) > tolerance:
            log.info("bounds of %s [%.1f, %.1f]: segment [%.1f, %.1f]", ex.name, ex.start, ex.end,
                     seg["start_seconds"], seg["end_seconds"])
    false = [seg for i, seg in enumerate(segments) if i not in used]
    for seg in false:
        log.info("false alarm: %s", seg)
    unknown_s = sum(ex.length for ex in show if not ex.known)

    def mean(xs: list[float]) -> float:
        return round(sum(xs) / len(xs), 3) if xs else 0.0

    return {"known_excerpts": len(known), "found": found, "bounds_within_tol": bounds_ok,
            "offsets_within_0.5s": offsets_ok, "mean_abs_start_error_s": mean(start_err),
            "mean_abs_end_error_s": mean(end_err), "max_abs_start_error_s": round(max(start_err, default=0), 3),
            "max_abs_end_error_s": round(max(end_err, default=0), 3), "mean_abs_offset_error_s": mean(offset_err),
            "false_segments": len(false), "false_seconds": round(sum(s["end_seconds"] - s["start_seconds"] for s in false), 1),
            "unknown_excerpts": sum(not ex.known for ex in show), "unknown_seconds": round(unknown_s, 1)}


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem_kb = 0
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cores": os.cpu_count(), "ram_gb": round(mem_kb / 2**20, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path.home() / ".cache" / "dejavu-dev-corpus")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dejavu-monitor-bench"))
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--known", type=int, default=30, help="tracks to fingerprint (the rest are unknown)")
    parser.add_argument("--window", type=float, default=None)
    parser.add_argument("--hop", type=float, default=None)
    parser.add_argument("--tolerance", type=float, default=1.0, help="s, for start/end")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="reuse the show file of a previous run (same plan)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)

    tracks = corpus_tracks(args.corpus)
    if not tracks:
        log.info("building the dev corpus in %s", args.corpus)
        subprocess.run(["bash", str(ROOT.parent / "shared" / "tools" / "get-dev-corpus.sh"), str(args.corpus), "--small"],
                       check=True, stdin=subprocess.DEVNULL)
        tracks = corpus_tracks(args.corpus)
    args.work.mkdir(parents=True, exist_ok=True)
    show_path, plan_path = args.work / "show.mp3", args.work / "show.json"
    config = args.work / "config.json"
    config.write_text(json.dumps({"database_type": "sqlite", "database": {"path": str(args.work / "fp.db")}}))
    show, known = plan_show(tracks, min(args.known, len(tracks) // 2), args.hours, args.seed)
    if not (args.reuse and show_path.is_file() and plan_path.is_file()
            and json.loads(plan_path.read_text()) == [ex.__dict__ | {"path": str(ex.path)} for ex in show]):
        t0 = time.perf_counter()
        build_show(show, args.work, show_path)
        log.info("built %s (%.0f s of audio, %d excerpts) in %.0f s", show_path, show[-1].end, len(show),
                 time.perf_counter() - t0)
        plan_path.write_text(json.dumps([ex.__dict__ | {"path": str(ex.path)} for ex in show]))
    t0 = time.perf_counter()   # always: fingerprint settings may have changed since the last run
    fingerprint_known(known, args.work, config)
    log.info("fingerprinted the known tracks in %.0f s", time.perf_counter() - t0)

    from dejavu import Dejavu
    from dejavu.config import read_config_file

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    segments = []
    with Dejavu(read_config_file(str(config))) as djv:
        stats = djv.stats()
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        for seg in djv.monitor(str(show_path), args.window, args.hop):
            segments.append(seg.to_dict())
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    (args.work / "segments.jsonl").write_text("".join(json.dumps(s) + "\n" for s in segments))
    audio_s = show[-1].end
    report = {
        "machine": machine(),
        "database": {k: stats.get(k) for k in ("songs", "fingerprints", "audio_seconds")},
        "show": {"file": str(show_path), "seconds": round(audio_s, 1), "excerpts": len(show),
                 "bytes": show_path.stat().st_size},
        "accuracy": score(segments, show, args.tolerance),
        "speed": {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "x_realtime": round(audio_s / wall, 1)},
        "memory": {"peak_rss_mb": round(rss_peak / 1024, 1), "rss_before_monitoring_mb": round(rss_before / 1024, 1),
                   "largest_child_peak_rss_mb": round(rss_children / 1024, 1)},
    }
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Decoding cost: CPU seconds ffmpeg spends per audio second, the floor under ingest speed.

    python bench/decode_speed.py [AUDIO_DIR] [--files N]

For N files of the folder, ffmpeg is run (one process per file, one at a time) three ways:
decode only (output discarded), decode + down-mix + resample to the fingerprint's rate
(dejavu's command for files mpg123 cannot take), and the same at the file's own rate;
then mpg123 as dejavu runs it for MP3 files when it is installed.
The CPU time of the decoder processes (user + system, from the kernel's accounting of
child processes) per audio second is printed as audio seconds per CPU second, i.e.
x real time per core, with the ceiling that decoding alone puts on an ingest using
every core.
"""
from __future__ import annotations

import argparse
import glob
import os
import resource
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from _machine import machine  # noqa: E402

from dejavu.config import FingerprintConfig  # noqa: E402
from dejavu.logic.decoder import ffmpeg_command, mpg123_command  # noqa: E402


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_per_file(cmd: list[str]) -> tuple[float, int]:
    """(CPU seconds of the ffmpeg process, bytes it wrote)."""
    before = child_cpu()
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True).stdout
    return child_cpu() - before, len(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio_dir", nargs="?", default=os.path.expanduser("~/.cache/dejavu-dev-corpus/mp3"))
    parser.add_argument("--files", type=int, default=10)
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.audio_dir, "*.mp3")))[:args.files]
    if not files:
        parser.error(f"no MP3 files in {args.audio_dir}")
    rate = FingerprintConfig().sample_rate
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    seconds = 0.0
    taken = 0
    ours_name, mpg123_name = f"ffmpeg → mono {rate} Hz float32", f"mpg123 → mono {rate} Hz float32"
    totals = {"ffmpeg decode only": 0.0, ours_name: 0.0, "ffmpeg → mono at the file's rate": 0.0}
    for path in files:
        ours = ffmpeg_command(path, rate, None)
        cpu, size = cpu_per_file(ours)
        seconds += size / 4 / rate
        totals[ours_name] += cpu
        head = ours[:ours.index("-map")]
        totals["ffmpeg decode only"] += cpu_per_file(head + ["-map", "0:a:0", "-f", "null", "-"])[0]
        totals["ffmpeg → mono at the file's rate"] += cpu_per_file(head + ["-map", "0:a:0", "-ac", "1", "-f", "f32le",
                                                                           "-"])[0]
        fast = mpg123_command(path, rate)
        if fast is not None:
            totals[mpg123_name] = totals.get(mpg123_name, 0.0) + cpu_per_file(fast[0])[0]
            taken += 1
    if taken != len(files):  # mpg123 absent, or some file not an MP3 it can take: no fair total
        totals.pop(mpg123_name, None)
        print(f"mpg123: not installed, or it takes only {taken} of the {len(files)} files (left out)")
    cores = os.cpu_count() or 1
    print(f"{len(files)} files, {seconds:.0f} audio seconds")
    print(f"{'decoder run':36s} {'CPU ms per audio s':>18s} {'x per core':>10s} {f'ceiling on {cores} cores':>18s}")
    for name, cpu in totals.items():
        print(f"{name:36s} {cpu / seconds * 1e3:18.2f} {seconds / cpu:10.0f} {cores * seconds / cpu:17.0f}x")


if __name__ == "__main__":
    main()

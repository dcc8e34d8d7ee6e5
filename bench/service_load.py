"""Load on ``dejavu serve`` over loopback: requests/s and latency per worker count.

    python bench/service_load.py [AUDIO_DIR] [--workers 1 2] [--clients 50] [--seconds 30]
        [--clip-seconds 5] [--songs 10] [--workdir DIR]

The first --songs MP3 files of AUDIO_DIR (default: the dev corpus) are fingerprinted into a
fresh SQLite store, and one --clip-seconds MP3 clip is cut from each (at a third of the song).
Then, for each worker count, ``dejavu serve --workers N`` is started on a free 127.0.0.1
port and --clients threads, each on its own keep-alive connection, POST the clips in turn
as raw ``audio/mpeg`` bodies to ``/v1/recognize`` until --seconds have passed (each client
finishes the request it has begun; the run stops by itself).  An error is any answer
but 200 or a failed connection; a wrong answer is a 200 whose best result is not the
clip's song.  The latency is from sending the request to reading the whole answer
(upload, queueing, ffmpeg, search), as a client on this machine sees it; the clients run
on the same cores as the server.  Prints one table row per worker count, with the machine's
1-minute load average at its end (other work on the machine shows there).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _machine import machine  # noqa: E402

DEFAULT_CORPUS = Path(os.environ.get("DEJAVU_TEST_CORPUS", Path.home() / ".cache" / "dejavu-dev-corpus-small")) / "mp3"


def prepare(audio_dir: Path, songs: int, clip_seconds: float, workdir: Path) -> tuple[Path, list[tuple[str, bytes]]]:
    """Fingerprint the songs into workdir's store; (config file, [(song name, clip bytes)])."""
    files = sorted(audio_dir.glob("*.mp3"))[:songs]
    if not files:
        sys.exit(f"no MP3 files in {audio_dir}")
    config = workdir / "config.json"
    config.write_text(json.dumps({"database_type": "sqlite", "database": {"path": str(workdir / "fp.db")}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for f in files:
        subprocess.run([sys.executable, str(ROOT / "dejavu.py"), "-c", str(config), "-q", "--no-progress",
                        "--fingerprint", str(f)], check=True, env=env)
    clips = []
    for f in files:
        duration = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                                         str(f)], capture_output=True, text=True, check=True).stdout)
        clip = workdir / f"{f.stem}-clip.mp3"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{duration / 3:.2f}", "-t", str(clip_seconds),
                        "-i", str(f), str(clip)], check=True)
        clips.append((f.stem, clip.read_bytes()))
    return config, clips


class Serve:
    """``dejavu serve --workers N`` on a free loopback port."""

    def __init__(self, config: Path, workers: int, workdir: Path) -> None:
        from dejavu.testing import free_port

        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "dejavu.py"), "serve", "-q", "-c", str(config),
                                      "--port", str(self.port), "--workers", str(workers)],
                                     env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=workdir,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit("dejavu serve exited")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    # Every worker answers once the port does (they are started together); settle.
                    time.sleep(2)
                    return
            except OSError:
                time.sleep(0.2)
        sys.exit("dejavu serve did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def client(port: int, clips: list[tuple[str, bytes]], start: int, stop_at: float, out: dict) -> None:
    """POST clips (from index ``start``) until ``stop_at``; record latencies and failures in ``out``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    i = start
    while time.monotonic() < stop_at:
        name, body = clips[i % len(clips)]
        i += 1
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/v1/recognize", body=body, headers={"Content-Type": "audio/mpeg"})
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            out["errors"] += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            continue
        out["latency"].append(time.perf_counter() - t0)
        if response.status != 200:
            out["errors"] += 1
            continue
        results = json.loads(data)["results"]
        if not results or results[0]["song_name"] != name:
            out["wrong"] += 1
    conn.close()


def run(port: int, clips: list[tuple[str, bytes]], clients: int, seconds: float) -> dict:
    outs = [{"latency": [], "errors": 0, "wrong": 0} for _ in range(clients)]
    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(port, clips, k, start + seconds, outs[k])) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    latency = np.array([x for o in outs for x in o["latency"]]) * 1000
    return {"requests": latency.size, "errors": sum(o["errors"] for o in outs), "wrong": sum(o["wrong"] for o in outs),
            "elapsed": elapsed, "rps": latency.size / elapsed,
            **{f"p{q}": float(np.percentile(latency, q)) if latency.size else float("nan") for q in (50, 95, 99)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("audio_dir", nargs="?", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--clip-seconds", type=float, default=5.0)
    parser.add_argument("--songs", type=int, default=10)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dejavu-load-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        config, clips = prepare(args.audio_dir, args.songs, args.clip_seconds, workdir)
        print(f"machine: {machine()}")
        print(f"{len(clips)} songs fingerprinted; {args.clients} clients POST {args.clip_seconds:g} s MP3 clips "
              f"({np.mean([len(c) for _, c in clips]) / 1024:.0f} KiB) to /v1/recognize for {args.seconds:g} s\n")
        print("| workers | requests | errors | wrong | req/s | p50 ms | p95 ms | p99 ms | load avg |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for workers in args.workers:
            server = Serve(config, workers, workdir)
            try:
                r = run(server.port, clips, args.clients, args.seconds)
            finally:
                server.stop()
            print(f"| {workers} | {r['requests']} | {r['errors']} | {r['wrong']} | {r['rps']:.1f} | "
                  f"{r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} | {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()

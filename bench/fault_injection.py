"""Fault injection: kill, crash, fill, freeze and feed garbage to dejavu, and count what happened.

    python bench/fault_injection.py [--kills 20] [--pg-crashes 3] [--truncations 24] [--workdir DIR]

Everything runs this checkout's CLI (``python dejavu.py``) in subprocesses, as a user would:

* ``--kills`` SIGKILLs of an SQLite ingest (2 processes, 16 synthetic songs) at a random
  moment within a clean ingest's time, the store checked after each (SQLite integrity, every listed song complete with
  exactly its rows, none twice); every third kill starts from a fresh store, the others
  resume; at the end one ingest completes the store, checked against a clean ingest;
* ``--pg-crashes`` SIGKILLs of a throwaway PostgreSQL server mid-ingest, restarted at once
  (the ingest must retry and finish), then one outage longer than the retry window (the
  ingest must end saying how many songs it stored, and a second run finish the store);
* a full disk and a read-only mount (an 8 MB tmpfs; root or password-less sudo): listing,
  querying, deleting, adding;
* malformed files (``test/badfiles.py``'s awkward inputs, ``--truncations`` truncated copies
  of real MP3s and of FLACs made from them, a WAV header claiming 3 bits per sample) through
  ``--fingerprint`` (one batch) and ``--recognize file`` (each);
* bad configurations through ``--stats``.

A run that ends in a traceback, an "unexpected error", a hang, a damaged store, a partial or
duplicate song, or a damaged file stored without a warning is a FAILURE; the script prints
every count and exits 1 if there was any failure.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))

from _machine import machine  # noqa: E402

from dejavu.config import load_config  # noqa: E402
from dejavu.database import connect  # noqa: E402
from dejavu.demo import synth_song, write_wav  # noqa: E402
from dejavu.logic.ingest import fingerprint_one  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CORPUS = Path(os.environ.get("DEJAVU_TEST_CORPUS", Path.home() / ".cache" / "dejavu-dev-corpus-small")) / "mp3"
FAILURES: list[str] = []


def cli(config: Path | None, *args: str, timeout: float = 300, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run the CLI; (exit status, stdout, stderr). A timeout is exit status -1."""
    cmd = [sys.executable, str(ROOT / "dejavu.py"), *(["--config", str(config)] if config else []),
           "--no-progress", *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=ENV, timeout=timeout,
                             stdin=subprocess.DEVNULL, cwd=cwd)
    except subprocess.TimeoutExpired:
        return -1, "", "timeout"
    return out.returncode, out.stdout, out.stderr


def judge(name: str, outcome: str, ok: bool, detail: str = "") -> str:
    """Record a FAILURE unless ``ok``; return the outcome to count."""
    if ok:
        return outcome
    FAILURES.append(f"{name}: {outcome}: {detail[-300:]}")
    return "FAILURE"


def clean_error(code: int, err: str) -> bool:
    """An error ending is clean: no traceback, no unexpected error, no hang."""
    return code >= 0 and "Traceback" not in err and "unexpected error" not in err


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(json.dumps(config))
    return path


def report(title: str, counts: Counter) -> None:
    print(f"{title}: " + ", ".join(f"{n} {what}" for what, n in sorted(counts.items(), key=lambda kv: -kv[1])))


# ------------------------------------------------------------------ store checks
def store_problems(config: dict[str, Any], expected: dict[str, int]) -> list[str]:
    """What is wrong with the store (empty: nothing): integrity, partial or duplicate songs."""
    db = connect(config["database_type"], dict(config["database"]))
    try:
        songs = db._fetch("SELECT song_id, song_name, fingerprinted, total_hashes FROM songs")
        if db.type == "sqlite":
            (ok,), = db._fetch("PRAGMA integrity_check")
            rows = np.zeros(max([s[0] for s in songs], default=0) + 1, dtype=np.int64)
            for _, song_ids, _ in db._current().rows():
                rows += np.bincount(song_ids, minlength=rows.size)[:rows.size]
            counted = {s[0]: int(rows[s[0]]) for s in songs}
        else:
            ok = "ok"
            counted = dict(db._fetch("SELECT song_id, COUNT(*) FROM fingerprints GROUP BY song_id"))
    finally:
        db.close()
    problems = [] if ok == "ok" else [f"integrity: {ok}"]
    names = [s[1] for s in songs]
    problems += [f"stored twice: {n}" for n in set(names) if names.count(n) > 1]
    problems += [f"partial: {name}" for song_id, name, done, total in songs
                 if done != 1 or counted.get(song_id, 0) != total or total != expected.get(name)]
    return problems


def synthetic_songs(folder: Path, n: int, seconds: float, seed: int) -> dict[str, int]:
    """Write ``n`` synthetic songs; {name: rows a clean ingest stores}."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg = load_config({})
    expected = {}
    for i in range(n):
        path = folder / f"song {i:02d}.wav"
        write_wav(str(path), synth_song(seed + i, seconds), 22050)
        out = fingerprint_one(str(path), None, cfg)
        expected[out.song_name] = len(np.unique(np.stack([out.hashes, out.offsets.astype(np.int64)], 1), axis=0))
    return expected


# ------------------------------------------------------------------ experiments
def sigkills(work: Path, kills: int, rng: random.Random) -> None:
    songs = work / "songs"
    expected = synthetic_songs(songs, 16, 12.0, 300)
    started = time.monotonic()   # a clean ingest's time: the kills fall within it
    cli(write_config(work / "timing.json", {"database": {"path": str(work / "timing.db")}}), "-n", "2",
        "--fingerprint", str(songs), "wav")
    duration = time.monotonic() - started
    config = {"database_type": "sqlite", "database": {"path": str(work / "kill.db")}}
    path = write_config(work / "kill.json", config)
    counts: Counter = Counter()
    for i in range(kills):
        if i % 3 == 0:
            for leftover in work.glob("kill.db*"):
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        proc = subprocess.Popen([sys.executable, str(ROOT / "dejavu.py"), "--config", str(path), "--no-progress",
                                 "-n", "2", "--fingerprint", str(songs), "wav"], env=ENV, start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, 1.0) * duration)
        finished = proc.poll() is not None
        if not finished:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        problems = store_problems(config, expected) if (work / "kill.db").exists() else []
        counts[judge("SIGKILL", "finished before the kill" if finished else "killed, store intact",
                     not problems, "; ".join(problems))] += 1
    code, _, err = cli(path, "--fingerprint", str(songs), "wav")
    problems = store_problems(config, expected)
    whole = code == 0 and not problems
    counts[judge("SIGKILL", "final ingest completed the store", whole and _song_count(config) == len(expected),
                 err + "; ".join(problems))] += 1
    report(f"SQLite ingest, {kills} SIGKILLs", counts)


def _song_count(config: dict[str, Any]) -> int:
    db = connect(config["database_type"], dict(config["database"]))
    try:
        return db.get_num_songs()
    finally:
        db.close()


def pg_crashes(work: Path, crashes: int) -> None:
    from dejavu.testing import postgres_available, start_postgres

    if not postgres_available():
        print("PostgreSQL crashes: skipped (PostgreSQL server binaries not installed)")
        return
    songs = work / "pg songs"
    expected = synthetic_songs(songs, 30, 30.0, 700)
    (work / "pg").mkdir(parents=True, exist_ok=True)
    server = start_postgres(work / "pg")
    counts: Counter = Counter()
    try:
        config = server.config()
        path = write_config(work / "pg.json", config)
        for _ in range(crashes):
            connect("postgres", dict(config["database"])).empty()
            proc = _ingest(path, songs)
            _wait_for_songs(config, proc)
            server.kill()
            server.start()
            err = proc.communicate(timeout=300)[1].decode()
            problems = store_problems(config, expected)
            ok = proc.returncode == 0 and not problems and _song_count(config) == len(expected)
            counts[judge("PG crash", "server killed and restarted, ingest retried and finished", ok,
                         err + "; ".join(problems))] += 1
        connect("postgres", dict(config["database"])).empty()
        proc = _ingest(path, songs)
        _wait_for_songs(config, proc)
        server.stop()
        err = proc.communicate(timeout=300)[1].decode().strip()
        server.start()
        said = "the ingest stopped after storing" in err.splitlines()[-1] if err else False
        stored = _song_count(config)
        counts[judge("PG outage", "outage beyond the retry window: ended saying what was stored",
                     proc.returncode == 2 and said and clean_error(proc.returncode, err), err)] += 1
        code, _, err = cli(path, "--fingerprint", str(songs), "wav")
        problems = store_problems(config, expected)
        counts[judge("PG outage", f"second run stored the other {len(expected) - stored} songs",
                     code == 0 and not problems and _song_count(config) == len(expected), err)] += 1
    finally:
        server.destroy()
    report(f"PostgreSQL, {crashes} server crashes mid-ingest and one long outage", counts)


def _ingest(config: Path, songs: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "dejavu.py"), "--config", str(config), "--no-progress",
                             "-n", "1", "--fingerprint", str(songs), "wav"], env=ENV, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_songs(config: dict[str, Any], proc: subprocess.Popen) -> None:
    """Until the ingest has stored a song (or ended)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if _song_count(config) > 0:
                return
        except Exception:  # the tables may not exist yet
            pass
        time.sleep(0.05)


def small_disk(work: Path, corpus: list[Path]) -> None:
    point = work / "disk"
    point.mkdir(parents=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    mounted = subprocess.run([*sudo, "mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        print(f"full disk / read-only mount: skipped (cannot mount a tmpfs: {mounted.stderr.strip()})")
        return
    counts: Counter = Counter()
    try:
        path = write_config(work / "disk.json", {"database": {"path": str(point / "fp.db")}})
        for song in corpus[:3]:
            cli(path, "--fingerprint", str(song))
        clip = work / "disk clip.wav"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", "20", "-t", "5", "-i", str(corpus[0]),
                        str(clip)], check=True)
        _fill(point)
        checks: list[tuple[str, tuple[str, ...], Callable[[int, str, str], bool]]] = [
            ("--list", ("--list",), lambda c, o, e: c == 0 and len(o.splitlines()) == 3),
            ("--recognize", ("--recognize", "file", str(clip)), lambda c, o, e: c == 0 and corpus[0].stem in o),
            ("--fingerprint (refused in one line)", ("--fingerprint", str(corpus[3])),
             lambda c, o, e: c == 2 and len(e.splitlines()) == 1 and "needs about" in e),
            ("--delete", ("--delete", "2"), lambda c, o, e: c == 0)]
        for name, args, good in checks:
            code, out, err = cli(path, *args)
            counts[judge("full disk", f"full disk {name} ok", good(code, out, err) and clean_error(code, err),
                         err)] += 1
        (point / "filler").unlink()
        subprocess.run([*sudo, "mount", "-o", "remount,ro", str(point)], check=True)
        before = sorted(os.listdir(point))
        for name, args, good in [
                ("--list", ("--list",), lambda c, o, e: c == 0 and len(o.splitlines()) == 2),
                ("--recognize", ("--recognize", "file", str(clip)), lambda c, o, e: c == 0),
                ("--fingerprint (one line: read-only)", ("--fingerprint", str(corpus[3])),
                 lambda c, o, e: c == 2 and len(e.splitlines()) == 1 and "read-only" in e),
                ("--delete (one line: read-only)", ("--delete", "1"),
                 lambda c, o, e: c == 2 and len(e.splitlines()) == 1 and "read-only" in e)]:
            code, out, err = cli(path, *args)
            counts[judge("read-only", f"read-only {name} ok", good(code, out, err) and clean_error(code, err)
                         and sorted(os.listdir(point)) == before, err)] += 1
    finally:
        subprocess.run([*sudo, "umount", "-l", str(point)], check=False)
    report("8 MB tmpfs, 100 % full then read-only", counts)


def _fill(point: Path) -> None:
    try:
        with open(point / "filler", "wb") as fh:
            while True:
                fh.write(bytes(1 << 16))
                fh.flush()
    except OSError:
        pass


def malformed(work: Path, corpus: list[Path], truncations: int, rng: random.Random) -> None:
    from badfiles import EXTENSIONS, make_corpus

    folder = work / "malformed"
    cases = {str(case.path): case.expect for case in make_corpus(folder)}
    damaged = set()
    for i in range(truncations):
        source = rng.choice(corpus)
        if i % 3 == 2:   # a FLAC of the first minute
            whole = work / f"whole {i}.flac"
            subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-t", "60", "-i", str(source), str(whole)],
                           check=True)
            data, name = whole.read_bytes(), folder / f"cut {i:02d}.flac"
        else:
            data, name = source.read_bytes(), folder / f"cut {i:02d}.mp3"
        name.write_bytes(data[:int(len(data) * rng.uniform(0.02, 0.9))])
        damaged.add(str(name))
    wav = folder / "three bits.wav"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-t", "20", "-i", str(corpus[0]), str(wav)], check=True)
    data = bytearray(wav.read_bytes())
    data[34:36] = (3).to_bytes(2, "little")
    wav.write_bytes(bytes(data))
    cases[str(wav)] = "fail"
    path = write_config(work / "malformed.json", {"database": {"path": str(work / "malformed.db")}})
    code, _, err = cli(path, "-n", "2", "--fingerprint", str(folder), *EXTENSIONS, "flac")
    counts: Counter = Counter()
    counts[judge("malformed batch", "batch ended cleanly", code in (0, 1) and clean_error(code, err), err)] += 1
    lines = err.splitlines()
    for file in sorted(damaged):
        said = [line for line in lines if file in line]
        outcome = ("FAILURE" if len(said) != 1 else
                   "truncated: stored with a warning naming both lengths" if "its header declares" in said[0] else
                   "truncated: stored with a warning (decoder errors)" if "decoder reported" in said[0] else
                   "truncated: refused (no fingerprints)" if "no fingerprints" in said[0] else
                   "truncated: refused (cannot decode)" if "cannot decode" in said[0] else "FAILURE")
        counts[judge("truncated", outcome, outcome != "FAILURE", f"{file}: {said}")] += 1
    code, out, _ = cli(path, "--list")
    stored = {json.loads(line)["song_name"] for line in out.splitlines()}
    counts[judge("3-bit WAV", "3-bit WAV refused", "three bits" not in stored, str(stored))] += 1
    outcomes: Counter = Counter()
    for file in sorted(set(cases) | damaged):
        code, out, err = cli(path, "--recognize", "file", file, timeout=120)
        ok = clean_error(code, err) and len(err.strip().splitlines()) <= 1 and code in (0, 1, 2)
        outcomes[judge("recognize", f"exit {code}", ok, f"{file}: {err}")] += 1
    report(f"--fingerprint of {len(cases) + len(damaged)} malformed files in one batch", counts)
    report(f"--recognize file of {len(cases) + len(damaged)} malformed files", outcomes)


#: (what, configuration text, whether it must be refused); "warn" ones load with a warning.
BAD_CONFIGS = [
    ('amp_min NaN', '{"fingerprint": {"amp_min": NaN}}', True),
    ('fan_value 1e9', '{"fingerprint": {"fan_value": 1000000000}}', True),
    ('window_size 2^40', '{"fingerprint": {"window_size": 1099511627776}}', True),
    ('neighborhood_freq 1e9', '{"fingerprint": {"neighborhood_freq": 1000000000}}', True),
    ('freq_max_hz Infinity', '{"fingerprint": {"freq_max_hz": Infinity}}', True),
    ('fingerprint_limit 1e308', '{"fingerprint_limit": 1e308}', True),
    ('peaks_per_second 1e300', '{"fingerprint": {"peaks_per_second": 1e300}}', True),
    ('hop_size 0', '{"fingerprint": {"hop_size": 0}}', True),
    ('sample_rate -1', '{"fingerprint": {"sample_rate": -1}}', True),
    ('key "md5"', '{"fingerprint": {"key": "md5"}}', True),
    ('topn 0', '{"matching": {"topn": 0}}', True),
    ('margin_ratio "high"', '{"matching": {"margin_ratio": "high"}}', True),
    ('speed_factors 1e9 entries', '{"matching": {"speed_factors": 5}}', True),
    ('monitor hop > window', '{"monitor": {"window_seconds": 2, "hop_seconds": 5}}', True),
    ('microphone channels 99', '{"microphone": {"channels": 99}}', True),
    ('URL postgresql://:@:::/', '{"database": "postgresql://:@:::/"}', True),
    ('URL ftp://x', '{"database": "ftp://example.org/db"}', True),
    ('database_type "oracle"', '{"database_type": "oracle"}', True),
    ('database a list', '{"database": [1, 2]}', True),
    ('typo databse_type', '{"databse_type": "postgres"}', True),
    ('typo databse', '{"databse": {"path": "x.db"}}', True),
    ('unknown fingerprint key', '{"fingerprint": {"fanvalue": 3}}', True),
    ('sqlite unknown key', '{"database": {"path": "x.db", "pth": 1}}', True),
    ('strict_decoding "yes"', '{"strict_decoding": "yes"}', True),
    ('not JSON', '{"database": ', True),
    ('a JSON list', '[1, 2, 3]', True),
    ('typo fingerprint_limt (warn)', '{"fingerprint_limt": 10}', False),
]


def bad_configs(work: Path) -> None:
    counts: Counter = Counter()
    for i, (what, text, refuse) in enumerate(BAD_CONFIGS):
        folder = work / f"config {i}"
        folder.mkdir(parents=True)
        (folder / "c.json").write_text(text)
        code, _, err = cli(folder / "c.json", "--stats", cwd=folder, timeout=60)
        created = [p.name for p in folder.iterdir() if p.name != "c.json"]
        if refuse:
            ok = code == 2 and len(err.strip().splitlines()) == 1 and clean_error(code, err) and not created
            counts[judge("config", "refused in one line, nothing created", ok, f"{what}: {err} {created}")] += 1
        else:
            counts[judge("config", "loaded with a warning", "unknown top-level key" in err and clean_error(code, err),
                         f"{what}: {err}")] += 1
    report(f"{len(BAD_CONFIGS)} bad configurations through --stats", counts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--pg-crashes", type=int, default=3)
    parser.add_argument("--truncations", type=int, default=24)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--workdir", help="keep the files here (default: a temporary directory, removed)")
    args = parser.parse_args()
    corpus = sorted(CORPUS.glob("*.mp3"))
    if len(corpus) < 4:
        sys.exit(f"fault_injection: needs 4+ MP3s in {CORPUS} (bash ../shared/tools/get-dev-corpus.sh DIR --small)")
    print(f"machine: {machine()}; load {os.getloadavg()[0]:.1f}")
    rng = random.Random(args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dejavu-faults-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        sigkills(work / "kills", args.kills, rng)
        pg_crashes(work / "postgres", args.pg_crashes)
        small_disk(work / "disk", corpus)
        malformed(work / "malformed", corpus, args.truncations, rng)
        bad_configs(work / "configs")
    print(f"{len(FAILURES)} failure(s) in {time.monotonic() - started:.0f} s")
    for failure in FAILURES:
        print("FAILURE", failure)
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 19: storage faults of the default SQLite store, and PostgreSQL outages (the real CLI).

* A full disk: adding a song needs space for its own rows, not for the whole store (a merge
  without room is skipped with a warning, the store stays complete); a store on a disk
  that is 100 % full can still be listed, queried and have songs deleted, and a song that
  does not fit is one line saying how much it needs.
* A read-only mount: listed and queried without creating side files; a write is one line
  saying "read-only".
* A PostgreSQL server gone for longer than the retry window: the ingest ends with a line
  saying how many songs it stored, and running it again stores the rest.

The filesystems are small tmpfs mounts (root, or password-less sudo, as CI has).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT, cut, run_cli
from dejavu.database import connect
from dejavu.demo import synth_song, write_wav
from dejavu.testing import Server, postgres_available

DISK_MB = 8
SONGS = 30   # synthetic songs of the PostgreSQL outage: it begins once the first ones are stored


def _mount(*args: str) -> subprocess.CompletedProcess:
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    return subprocess.run([*sudo, "mount", *args], capture_output=True, text=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A fresh tmpfs of DISK_MB MB (unmounted afterwards)."""
    point = tmp_path / "disk"
    point.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0777", "tmpfs", str(point))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or password-less sudo): {mounted.stderr.strip()}")
    yield point
    subprocess.run([*([] if os.geteuid() == 0 else ["sudo", "-n"]), "umount", "-l", str(point)], check=False)


def _cli(store: Path, *args: str) -> tuple[int, str, list[str]]:
    """Run the CLI on the store; (exit status, stdout, stderr lines)."""
    config = store.parent.parent / f"{store.name}.json"
    config.write_text(json.dumps({"database": {"path": str(store)}}))
    out = run_cli("--config", str(config), "--no-progress", *args, timeout=300)
    err = out.stderr.decode()
    assert "Traceback" not in err, err
    return out.returncode, out.stdout.decode(), err.splitlines()


def _songs(store: Path) -> list[str]:
    code, out, err = _cli(store, "--list")
    assert code == 0, err
    return [json.loads(line)["song_name"] for line in out.splitlines()]


def _fill(disk: Path, leave: int) -> Path:
    """Fill the disk with a filler file but ``leave`` bytes (0: until writing fails)."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    try:
        with open(filler, "wb") as fh:
            fh.write(bytes(max(0, stat.f_bavail * stat.f_frsize - leave)))
            while leave == 0:
                fh.write(bytes(4096))
                fh.flush()
    except OSError:   # full
        pass
    return filler


def _recognized(store: Path, clip: Path) -> str | None:
    code, out, _ = _cli(store, "--recognize", "file", str(clip))
    results = json.loads(out)["results"] if out else []
    return results[0]["song_name"] if results else None


def test_full_disk_adds_in_proportion_lists_queries_and_deletes(disk: Path, corpus: list[Path],
                                                                tmp_path: Path) -> None:
    store = disk / "fp.db"
    first, second, third = corpus[:3]
    fourth = max(corpus[3:], key=lambda path: path.stat().st_size)  # a quarter of the store or more: merged
    for song in (first, second, third):
        assert _cli(store, "--fingerprint", str(song))[0] == 0
    size = sum(f.stat().st_size for f in (disk / "fp.db-segments").iterdir()) + store.stat().st_size
    clip = cut(first, tmp_path / "clip.wav", 20, 5)
    # Room for the new song's own rows but less than the store: it is added, the merge waits.
    filler = _fill(disk, 900_000)
    assert shutil.disk_usage(disk).free < size
    code, _, err = _cli(store, "--fingerprint", str(fourth))
    assert code == 0, err
    assert any("no space to merge" in line and "needs about" in line for line in err), err
    assert _songs(store) == [s.stem for s in (first, second, third, fourth)]
    assert not [f for f in (disk / "fp.db-segments").iterdir() if f.name.endswith(".tmp")]
    # 100 % full: listing, querying and deleting still work; a new song is one line.
    filler.unlink()
    _fill(disk, 0)
    assert shutil.disk_usage(disk).free < 4096
    assert _recognized(store, clip) == first.stem
    fifth = next(song for song in corpus if song not in (first, second, third, fourth))
    code, _, err = _cli(store, "--fingerprint", str(fifth))
    assert code == 2 and len(err) == 1, err
    assert re.search(r"no space left on the device: storing 1 song\(s\) needs about \d+\.\d MB, \d+\.\d MB free", err[0])
    code, _, err = _cli(store, "--delete", "2")
    assert code == 0, err
    assert _songs(store) == [s.stem for s in (first, third, fourth)]
    assert _recognized(store, clip) == first.stem
    _fill(disk, 0)   # the reserve is spent: another delete says how much room it needs
    code, _, err = _cli(store, "--delete", "3")
    assert code == 2 and len(err) == 1, err
    assert re.search(r"the disk is full: deleting 1 song\(s\) needs about \d+\.\d MB free, 0\.0 MB free", err[0])


def test_deleted_space_comes_back_once_there_is_room(disk: Path, corpus: list[Path]) -> None:
    store = disk / "fp.db"
    for song in corpus[:3]:
        assert _cli(store, "--fingerprint", str(song))[0] == 0
    filler = _fill(disk, 0)
    code, _, err = _cli(store, "--delete", "3")   # more than a quarter of the rows: a compaction is due
    assert code == 0 and _songs(store) == [s.stem for s in corpus[:2]], err
    assert any("no space to drop the deleted songs' rows" in line and "needs about" in line for line in err), err
    segments = disk / "fp.db-segments"
    before = sum(f.stat().st_size for f in segments.iterdir())
    filler.unlink()
    code, _, err = _cli(store, "--delete", "3")   # nothing left to delete, but the compaction runs now
    after = sum(f.stat().st_size for f in segments.iterdir())
    assert after < 0.8 * before, (before, after, err)
    assert _songs(store) == [s.stem for s in corpus[:2]]


def test_read_only_mount_is_listed_and_queried_and_refuses_writes(disk: Path, corpus: list[Path],
                                                                  tmp_path: Path) -> None:
    store = disk / "fp.db"
    for song in corpus[:2]:
        assert _cli(store, "--fingerprint", str(song))[0] == 0
    before = sorted(p.name for p in disk.iterdir())
    remounted = _mount("-o", "remount,ro", str(disk))
    assert remounted.returncode == 0, remounted.stderr
    clip = cut(corpus[1], tmp_path / "clip.wav", 30, 5)
    assert _songs(store) == [s.stem for s in corpus[:2]]
    assert _recognized(store, clip) == corpus[1].stem
    code, out, err = _cli(store, "--stats")
    assert code == 0 and json.loads(out)["songs"] == 2, err
    for args in (("--fingerprint", str(corpus[2])), ("--delete", "1")):
        code, _, err = _cli(store, *args)
        assert code == 2 and len(err) == 1 and "read-only" in err[0], (args, err)
    assert sorted(p.name for p in disk.iterdir()) == before
    assert _songs(store) == [s.stem for s in corpus[:2]]


# ------------------------------------------------------------------ PostgreSQL gone for good
needs_postgres = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL server binaries not installed")


@needs_postgres
def test_postgres_outage_beyond_the_retry_window_says_how_many_songs_were_stored(throwaway_postgres: Server,
                                                                                 tmp_path: Path) -> None:
    pg = throwaway_postgres
    store = connect("postgres", dict(pg.config()["database"]))
    store.empty()
    store.close()
    folder = tmp_path / "songs"
    folder.mkdir()
    for i in range(SONGS):
        write_wav(str(folder / f"song {i:02d}.wav"), synth_song(500 + i, 30.0), 22050)
    config = tmp_path / "pg.json"
    config.write_text(json.dumps(pg.config()))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "dejavu.py"), "--config", str(config), "--no-progress", "-n", "1",
                             "--fingerprint", str(folder), "wav"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = connect("postgres", dict(pg.config()["database"]))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if db.get_num_songs() > 0:
                break
        except Exception:  # the tables may not exist yet
            pass
        time.sleep(0.05)
    db.close()
    pg.stop()
    try:
        err = proc.communicate(timeout=120)[1].decode().strip().splitlines()
    finally:
        pg.start()
    assert proc.returncode == 2 and "Traceback" not in "\n".join(err), err
    stopped = re.search(r"the ingest stopped after storing (\d+) song\(s\)", err[-1])
    assert stopped and "running it again goes on with the rest" in err[-1], err
    stored = int(stopped.group(1))
    db = connect("postgres", dict(pg.config()["database"]))
    assert 0 < stored < SONGS and db.get_num_songs() == stored
    db.close()
    out = run_cli("--config", str(config), "--no-progress", "--fingerprint", str(folder), "wav", timeout=300)
    assert out.returncode == 0, out.stderr.decode()
    db = connect("postgres", dict(pg.config()["database"]))
    names = [song["song_name"] for song in db.get_songs()]
    db.close()
    assert sorted(names) == [f"song {i:02d}" for i in range(SONGS)]


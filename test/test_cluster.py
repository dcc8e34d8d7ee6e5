"""Ingest on a Dask cluster (a LocalCluster of 2 worker processes on loopback) through the real CLI:
the same store as a local ingest; without dask.distributed, one line saying what to install."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, run_cli


def fingerprint(tmp_path: Path, name: str, songs: Path, *extra: str) -> tuple[Path, str]:
    """Fingerprint ``songs`` into a new SQLite store by the CLI: (store path, stderr)."""
    store = tmp_path / f"{name}.db"
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps({"database_type": "sqlite", "database": {"path": str(store)},
                                  "fingerprint_limit": 45}))
    done = run_cli("--config", str(config), "--fingerprint", str(songs), "mp3", "--no-progress", *extra)
    assert done.returncode == 0, done.stderr.decode()
    return config, done.stderr.decode()


def content(config: Path) -> tuple[list, list]:
    """(songs as (name, sha1, total_hashes, duration), every fingerprint row as (hash, song name, offset))."""
    listed = run_cli("--config", str(config), "--list")
    songs = [json.loads(line) for line in listed.stdout.decode().splitlines()]
    names = {song["song_id"]: song["song_name"] for song in songs}
    from dejavu import Dejavu

    with Dejavu(json.loads(config.read_text())) as djv:
        rows = sorted((int(h), names[int(s)], int(o)) for h, s, o in djv.db.query(None))
    return sorted((s["song_name"], s["file_sha1"], s["total_hashes"], s["duration"]) for s in songs), rows


def song_folder(tmp_path: Path, corpus: list[Path], n: int) -> Path:
    """A folder of ``n`` songs of the corpus."""
    songs = tmp_path / "songs"
    songs.mkdir()
    for path in corpus[:n]:
        shutil.copy(path, songs / path.name)
    return songs


def local_cluster() -> Any:
    """A Dask LocalCluster of 2 single-threaded worker processes on loopback."""
    pytest.importorskip("distributed", reason="the optional extra 'dist' (dask.distributed) is not installed")
    from distributed import LocalCluster

    return LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                        processes=True)


def test_cluster_ingest_gives_the_store_of_a_local_ingest(corpus, tmp_path) -> None:
    songs = song_folder(tmp_path, corpus, 3)
    local, _ = fingerprint(tmp_path, "local", songs, "-n", "2")
    with local_cluster() as cluster:
        remote, stderr = fingerprint(tmp_path, "cluster", songs, "--cluster", cluster.scheduler_address)
        assert "2 worker(s)" in stderr
        again, stderr = fingerprint(tmp_path, "cluster", songs, "--cluster", cluster.scheduler_address)
        assert "skipped 3" in stderr
    expected = content(local)
    assert len(expected[0]) == 3 and expected[1]
    assert content(remote) == expected


def test_cluster_without_dask_says_what_to_install(tmp_path, corpus) -> None:
    hidden = tmp_path / "no-dask" / "distributed"  # an import of dask.distributed fails
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('No module named distributed')\n")
    songs = song_folder(tmp_path, corpus, 1)
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"database_type": "sqlite", "database": {"path": str(tmp_path / "c.db")}}))
    done = run_cli("--config", str(config), "--fingerprint", str(songs), "mp3", "--cluster", "tcp://127.0.0.1:1",
                   env={"PYTHONPATH": f"{hidden.parent}{os.pathsep}{ROOT}"})
    err = done.stderr.decode().strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and "pip install 'PyDejavu[dist]'" in err[0], err
    assert sqlite3.connect(tmp_path / "c.db").execute("SELECT COUNT(*) FROM songs").fetchone()[0] == 0


def test_a_worker_killed_mid_ingest_loses_nothing(corpus, tmp_path) -> None:
    songs = song_folder(tmp_path, corpus, 8)
    local, _ = fingerprint(tmp_path, "local", songs, "-n", "2")
    remote = tmp_path / "remote.json"
    remote.write_text(local.read_text().replace("local.db", "remote.db"))
    with local_cluster() as cluster, pytest.importorskip("distributed").Client(cluster) as client:
        victim, pid = next(iter(client.run(os.getpid).items()))
        ingest = subprocess.Popen([sys.executable, str(ROOT / "dejavu.py"), "--config", str(remote), "--fingerprint",
                                   str(songs), "mp3", "--no-progress", "--cluster", cluster.scheduler_address],
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline, busy = time.monotonic() + 60, set()
        while not busy:  # a file the victim has had for a while: it is decoding or fingerprinting it
            assert time.monotonic() < deadline and ingest.poll() is None, "no file stayed on the worker"
            first = {key for key in client.processing().get(victim, ()) if str(key).startswith("dejavu-")}
            time.sleep(0.1)
            busy = first & set(client.processing().get(victim, ()))
        os.kill(pid, signal.SIGKILL)
        out, err = ingest.communicate(timeout=300)
    assert ingest.returncode == 0, err.decode()
    assert "fingerprinted 8" in err.decode(), err.decode()
    assert content(remote) == content(local)  # every song, once, with every row

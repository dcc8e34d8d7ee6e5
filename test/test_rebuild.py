"""dejavu --rebuild SOURCE: a store of other settings (or another backend) fingerprinted again,
from the files its songs came from, into a store of the current format. Real CLI, real audio."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import cut, run_cli
from dejavu import Dejavu
from dejavu.exceptions import ConfigError
from dejavu.testing import Server, postgres_available, start_postgres

SONGS = [f"Demo Song {seed:02d}" for seed in range(1, 5)]
OLD_SETTINGS = {"fingerprint": {"key": "sha1"}}   # keys the current default cannot read


@pytest.fixture(scope="module")
def music(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dejavu.demo import write_demo_songs

    folder = tmp_path_factory.mktemp("music")
    write_demo_songs(str(folder), count=len(SONGS), seconds=20.0)
    return folder


def _old_store(music: Path, tmp_path: Path, database: Any = None) -> Path:
    """Copy the songs to tmp_path/music, fingerprint them with SHA1 keys; the config file's path."""
    shutil.copytree(music, tmp_path / "music")
    config = tmp_path / "old.json"
    config.write_text(json.dumps({"database": database or {"path": str(tmp_path / "old.db")}, **OLD_SETTINGS}))
    out = run_cli("--config", str(config), "--fingerprint", str(tmp_path / "music"), "wav", "--no-progress")
    assert out.returncode == 0, out.stderr.decode()
    return config


def _listed(tmp_path: Path, *config: str) -> list[dict[str, Any]]:
    out = run_cli(*config, "--list", cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    return [json.loads(line) for line in out.stdout.decode().splitlines()]


def _best(tmp_path: Path, clip: Path, *config: str) -> dict[str, Any]:
    out = run_cli(*config, "--recognize", "file", str(clip), cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)["results"][0]


def _one_line(out: Any) -> str:
    err = out.stderr.decode()
    assert out.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_help_documents_rebuild(tmp_path: Path) -> None:
    text = run_cli("--help", cwd=tmp_path).stdout.decode()
    assert "--rebuild SOURCE" in text and "--rebuild old.db" in text


def test_a_store_of_other_settings_is_rebuilt_in_the_current_format(music: Path, tmp_path: Path) -> None:
    old = _old_store(music, tmp_path)
    refused = run_cli("--list", cwd=tmp_path, env={"DEJAVU_DATABASE_URL": f"sqlite:///{tmp_path / 'old.db'}"})
    assert "fingerprint.key is 'sha1' in the store but 'packed'" in _one_line(refused)
    out = run_cli("--rebuild", str(tmp_path / "old.db"), "-n", "2", "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    assert "rebuilt 4 of 4 song(s), skipped 0" in out.stderr.decode()
    before, after = _listed(tmp_path, "--config", str(old)), _listed(tmp_path)
    assert sorted((s["song_name"], s["file_sha1"], s["source_path"]) for s in before) == \
        sorted((s["song_name"], s["file_sha1"], s["source_path"]) for s in after)
    assert sorted(s["song_name"] for s in after) == SONGS
    clip = cut(tmp_path / "music" / "Demo Song 03.wav", tmp_path / "clip.mp3", 7.0, 5.0)
    was, now = _best(tmp_path, clip, "--config", str(old)), _best(tmp_path, clip)
    assert was["song_name"] == now["song_name"] == "Demo Song 03"
    assert abs(was["offset_seconds"] - now["offset_seconds"]) <= 0.03 and abs(now["offset_seconds"] - 7.0) <= 0.1
    again = run_cli("--rebuild", str(old), "--no-progress", cwd=tmp_path)  # SOURCE as a JSON config
    assert again.returncode == 0 and "rebuilt 0 of 4 song(s), skipped 4" in again.stderr.decode()


def test_songs_whose_files_are_gone_or_changed_are_named(music: Path, tmp_path: Path) -> None:
    old = _old_store(music, tmp_path)
    (tmp_path / "music" / "Demo Song 01.wav").unlink()
    with open(tmp_path / "music" / "Demo Song 02.wav", "ab") as fh:
        fh.write(b"\0")  # still decodes, but these are no longer the bytes fingerprinted
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"database": {"path": str(tmp_path / "new.db")}}))
    out = run_cli("--rebuild", str(old), "--config", str(new), "--no-progress", cwd=tmp_path)
    err = out.stderr.decode()
    assert out.returncode == 1 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    gone = f"dejavu: rebuild: 'Demo Song 01': {str(tmp_path / 'music' / 'Demo Song 01.wav')!r}: no such file"
    assert [line for line in lines if line.startswith(gone)] and len(lines) == 3, err
    assert any(line.startswith("dejavu: rebuild: 'Demo Song 02': ") and "changed" in line for line in lines)
    assert "rebuilt 2 of 4 song(s), skipped 0 (already in the database), could not rebuild 2" in lines[-1]
    assert sorted(s["song_name"] for s in _listed(tmp_path, "--config", str(new))) == SONGS[2:]
    with Dejavu({"database": {"path": str(tmp_path / "lib.db")}}) as djv:  # the library call
        report = djv.rebuild_from(tmp_path / "old.db", nprocesses=1)
    assert (report.songs, report.rebuilt, report.skipped, report.failed, report.ok) == (4, 2, 0, 2, False)
    assert sorted(u.song_name for u in report.unrebuilt) == SONGS[:2]


def test_rebuilding_a_store_into_itself_is_refused(music: Path, tmp_path: Path) -> None:
    old = _old_store(music, tmp_path)
    for args in (["--rebuild", str(old), "--config", str(old)],
                 ["--rebuild", "sqlite:///old.db", "--config", str(old)],   # a URL, relative to cwd
                 ["--rebuild", "./old.db"]):
        env = {"DEJAVU_DATABASE_URL": "sqlite:///old.db"} if len(args) == 2 else None  # the target, not SOURCE
        assert "cannot rebuild a store into itself" in _one_line(run_cli(*args, cwd=tmp_path, env=env))
    assert len(_listed(tmp_path, "--config", str(old))) == 4
    with Dejavu({"database": {"path": str(tmp_path / "old.db")}, **OLD_SETTINGS}) as djv:
        with pytest.raises(ConfigError, match="into itself"):
            djv.rebuild_from({"database": {"path": str(tmp_path / "old.db")}})


def test_a_store_of_the_previous_format_gives_one_line(tmp_path: Path) -> None:
    """A dejavu 1.x store does not record where its songs came from: nothing to rebuild from."""
    with sqlite3.connect(tmp_path / "v1.db") as con:
        con.execute("CREATE TABLE songs (song_id INTEGER PRIMARY KEY, song_name TEXT, fingerprinted INTEGER, "
                    "file_sha1 BLOB, total_hashes INTEGER, duration REAL, date_created TEXT, date_modified TEXT)")
        con.execute('CREATE TABLE fingerprints (hash INTEGER, song_id INTEGER, "offset" INTEGER)')
        con.execute("INSERT INTO songs VALUES (1, 'x', 1, ?, 10, 1.0, '', '')", (bytes(20),))
    err = _one_line(run_cli("--rebuild", "v1.db", cwd=tmp_path))
    assert "does not record where its songs came from" in err and "--fingerprint" in err
    for source, reason in (("missing.db", "no such file"), (".", "directory"), ("v1.db-missing.json", "no such")):
        assert reason in _one_line(run_cli("--rebuild", source, cwd=tmp_path)).lower()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not postgres_available():
        pytest.skip("PostgreSQL server binaries not installed")
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    server.destroy()


def test_a_postgres_store_is_rebuilt_into_sqlite(music: Path, tmp_path: Path, postgres: Server) -> None:
    old = _old_store(music, tmp_path, database=postgres.dsn())
    assert "into itself" in _one_line(run_cli("--rebuild", postgres.dsn(), "--config", str(old), cwd=tmp_path))
    out = run_cli("--rebuild", postgres.dsn(), "--no-progress", cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    assert sorted(s["song_name"] for s in _listed(tmp_path)) == SONGS
    clip = cut(tmp_path / "music" / "Demo Song 02.wav", tmp_path / "clip.wav", 11.0, 5.0)
    assert _best(tmp_path, clip)["song_name"] == _best(tmp_path, clip, "--config", str(old))["song_name"]

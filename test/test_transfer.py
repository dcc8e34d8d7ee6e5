"""dejavu --export / --import: a catalogue moved between backends (SQLite → PostgreSQL →
MariaDB → SQLite) without decoding the audio again, checked by recognition before and after.
Real music, real servers, the real CLI."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import archived_songs, cut, run_cli
from dejavu import Dejavu
from dejavu.logic.recognizer.file_recognizer import FileRecognizer
from dejavu.testing import Server, mariadb_available, postgres_available, start_mariadb, start_postgres

SONGS = 4


@pytest.fixture(scope="module")
def source(corpus: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite store of real songs (one deleted after, so its rows linger in the index)."""
    folder = tmp_path_factory.mktemp("transfer")
    config = folder / "source.json"
    config.write_text(json.dumps({"database": {"path": str(folder / "source.db")}}))
    with Dejavu(json.loads(config.read_text())) as djv:
        report = djv.fingerprint_files([str(p) for p in corpus[:SONGS + 1]], 2)
        assert len(report.fingerprinted) == SONGS + 1
        djv.delete_songs_by_id([report.fingerprinted[-1].song_id])
    return config


@pytest.fixture(scope="module")
def clips(corpus: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("clips")
    return [cut(song, folder / f"clip{i}.wav", 20.0 + 7 * i, 5.0) for i, song in enumerate(corpus[:SONGS + 1])]


def _server(start: Any, available: Any, name: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not available():
        pytest.skip(f"{name} server binaries not installed")
    server = start(tmp_path_factory.mktemp(name))
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server(start_postgres, postgres_available, "postgres", tmp_path_factory)


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _server(start_mariadb, mariadb_available, "mariadb", tmp_path_factory)


def _answers(config: dict[str, Any], clips: list[Path]) -> list[Any]:
    """The best result of each clip: (song, offset, matched hashes), or None."""
    with Dejavu(config) as djv:
        found = [djv.recognize(FileRecognizer, str(clip))["results"] for clip in clips]
    return [(r[0]["song_name"], r[0]["offset"], r[0]["hashes_matched_in_input"]) if r else None for r in found]


def _ok(out: Any) -> str:
    assert out.returncode == 0, out.stderr.decode()
    return out.stderr.decode()


def _one_line(out: Any) -> str:
    err = out.stderr.decode()
    assert out.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_a_catalogue_moves_through_every_backend_and_answers_the_same(
        source: Path, clips: list[Path], postgres: Server, mariadb: Server, tmp_path: Path) -> None:
    before = _answers(json.loads(source.read_text()), clips)
    assert sum(a is not None for a in before) == SONGS and before[-1] is None  # the deleted song is gone
    first = tmp_path / "first.zip"
    assert "exported 4 songs" in _ok(run_cli("--config", str(source), "--export", str(first), cwd=tmp_path))

    hops = [postgres.dsn(), mariadb.dsn(), f"sqlite:///{tmp_path / 'last.db'}"]
    archive = first
    for url in hops:
        env = {"DEJAVU_DATABASE_URL": url}
        assert "imported 4 songs" in _ok(run_cli("--import", str(archive), cwd=tmp_path, env=env))
        again = run_cli("--import", str(archive), cwd=tmp_path, env=env)
        assert "imported 0 songs" in _ok(again) and "4 already" in again.stderr.decode()
        archive = tmp_path / f"from-{url.split(':')[0]}.zip"
        _ok(run_cli("--export", str(archive), cwd=tmp_path, env=env))
        assert archived_songs(archive) == archived_songs(first), url  # same songs, names, durations and rows
        assert _answers({"database": url}, clips) == before, url


def test_import_refuses_other_settings_and_damaged_archives(source: Path, tmp_path: Path) -> None:
    archive = tmp_path / "cat.zip"
    _ok(run_cli("--config", str(source), "--export", str(archive), cwd=tmp_path))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"database": {"path": str(tmp_path / "other.db")},
                                 "fingerprint": {"fan_value": 10}}))
    assert "fingerprint.fan_value is 5 in the archive but 10" in _one_line(
        run_cli("--config", str(other), "--import", str(archive), cwd=tmp_path))

    target = tmp_path / "target.json"
    target.write_text(json.dumps({"database": {"path": str(tmp_path / "target.db")}}))
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte inside the rows
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    assert "damaged catalogue archive" in _one_line(run_cli("--config", str(target), "--import", str(damaged)))
    (tmp_path / "junk.zip").write_text("not an archive")
    assert "not a catalogue archive" in _one_line(
        run_cli("--config", str(target), "--import", str(tmp_path / "junk.zip")))
    assert "no such file" in _one_line(run_cli("--config", str(target), "--import", str(tmp_path / "none.zip")))
    assert "no such file" in _one_line(
        run_cli("--config", str(source), "--export", str(tmp_path / "nodir" / "x.zip")))
    assert not list(tmp_path.glob("**/*.partial"))

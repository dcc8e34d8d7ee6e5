"""The store contract, run the same on every backend: SQLite, PostgreSQL, MySQL/MariaDB.

PostgreSQL and MariaDB are real throwaway servers (dejavu.testing) started once per
session; a server backend is skipped only when its binaries are not installed.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from dejavu import Dejavu
from dejavu.database import BaseDatabase, connect
from dejavu.exceptions import ConfigError, DatabaseError
from dejavu.logic.recognizer.file_recognizer import FileRecognizer
from dejavu.testing import Server, mariadb_available, postgres_available, start_mariadb, start_postgres

ROOT = Path(__file__).resolve().parent.parent
needs_postgres = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL server binaries not installed")
needs_mariadb = pytest.mark.skipif(not mariadb_available(), reason="MariaDB server binaries not installed")
BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=needs_postgres),
            pytest.param("mysql", marks=needs_mariadb)]
SERVER_BACKENDS = BACKENDS[1:]
SAMPLE_RATE = 22050
SONG_SECONDS = 20.0


# ------------------------------------------------------------------ servers and stores
def _session_server(start: Callable[[Path], Server], name: str) -> Any:
    """A session fixture running one throwaway server (its log under pytest's tmp dir)."""

    @pytest.fixture(scope="session")
    def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
        running = start(tmp_path_factory.mktemp(name))
        yield running
        running.destroy()

    return server


postgres_server = _session_server(start_postgres, "postgres")
mysql_server = _session_server(start_mariadb, "mariadb")


def _server(request: pytest.FixtureRequest, backend: str) -> Server:
    return request.getfixturevalue(f"{backend}_server")


@pytest.fixture(params=BACKENDS)
def config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """A dejavu configuration naming an empty store of each backend in turn."""
    if request.param == "sqlite":
        return {"database_type": "sqlite", "database": {"path": str(tmp_path / "fp.db")}}
    cfg = _server(request, request.param).config()
    store = connect(cfg["database_type"], dict(cfg["database"]))
    store.empty()
    store.close()
    return cfg


@pytest.fixture
def db(config: dict[str, Any]) -> Iterator[BaseDatabase]:
    store = connect(config["database_type"], dict(config["database"]))
    yield store
    store.close()


def fake_song(seed: int, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Random (hashes, offsets), including the int64 extremes and a repeated pair."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, n, dtype=np.int64, endpoint=True)
    offsets = rng.integers(0, 20000, n).astype(np.int32)
    hashes[:3] = [np.iinfo(np.int64).min, np.iinfo(np.int64).max, 0]
    hashes[-1], offsets[-1] = hashes[-2], offsets[-2]
    return hashes, offsets


def sha1_of(seed: int) -> str:
    return f"{seed:040X}"


def stored_rows(db: BaseDatabase, hashes: np.ndarray) -> set[tuple[int, int, int]]:
    h, s, o = db.return_matches(hashes)
    assert h.dtype == s.dtype == o.dtype == np.int64
    return set(zip(h.tolist(), s.tolist(), o.tolist()))


# ------------------------------------------------------------------ the contract
def test_setup_is_idempotent(db: BaseDatabase) -> None:
    db.setup()
    song_id = db.store_song("kept", sha1_of(1), *fake_song(1, 50), 5.0)
    db.setup()
    db.setup()
    assert [s["song_id"] for s in db.get_songs()] == [song_id]
    assert db.get_num_fingerprints() == 49


def test_rename_song(db: BaseDatabase) -> None:
    song_id = db.store_song("old name", sha1_of(9), *fake_song(9, 50), 5.0)
    for name in ("new – \"name\"; DROP TABLE songs", "new – \"name\"; DROP TABLE songs"):  # twice: unchanged
        assert db.rename_song(song_id, name) is True
        assert db.get_song_by_id(song_id)["song_name"] == name
    assert db.rename_song(song_id + 1, "nobody") is False
    assert [s["song_name"] for s in db.get_songs()] == [name]


def test_store_and_read_back_exactly(db: BaseDatabase) -> None:
    hashes, offsets = fake_song(2)
    song_id = db.store_song("song two", sha1_of(2), hashes, offsets, 123.25)
    assert isinstance(song_id, int)
    expected = {(int(h), song_id, int(o)) for h, o in zip(hashes, offsets)}
    song = {"song_id": song_id, "song_name": "song two", "file_sha1": sha1_of(2),
            "total_hashes": len(expected), "duration": 123.25}
    [listed] = db.get_songs()
    assert {k: listed[k] for k in song} == song and listed["date_created"]
    assert {k: db.get_song_by_id(song_id)[k] for k in song} == song
    assert db.get_song_by_sha1(sha1_of(2))["song_id"] == song_id
    assert db.get_songs_by_ids([song_id, song_id + 99]).keys() == {song_id}
    assert db.get_song_by_id(song_id + 99) is None
    assert db.get_num_songs() == 1 and db.get_num_fingerprints() == len(expected)
    assert db.get_fingerprinted_sha1s() == {sha1_of(2)}
    unknown = np.arange(-5, 5, dtype=np.int64) * 7919 + 1
    assert stored_rows(db, np.concatenate([hashes, unknown])) == expected
    assert stored_rows(db, hashes[:10]) == {r for r in expected if r[0] in set(hashes[:10].tolist())}
    assert stored_rows(db, unknown[:0]) == set()
    stats = db.stats()
    assert (stats["songs"], stats["fingerprints"], stats["audio_seconds"]) == (1, len(expected), 123.2)
    assert stats["size_bytes"] is None or stats["size_bytes"] > 0


def test_song_is_invisible_until_commit(config: dict[str, Any], db: BaseDatabase) -> None:
    observer = connect(config["database_type"], dict(config["database"]))
    seen: list[tuple] = []
    bulk_insert = db._bulk_insert

    def insert_then_look(cur: Any, rows: np.ndarray) -> None:
        bulk_insert(cur, rows)
        seen.append((observer.get_num_songs(), observer.get_num_fingerprints(),
                     observer.return_matches(rows[:, 0])[0].size))

    db._bulk_insert = insert_then_look  # type: ignore[method-assign]
    hashes, offsets = fake_song(15, 500)
    db.store_song("atomic", sha1_of(15), hashes, offsets, 3.0)
    assert seen == [(0, 0, 0)]
    assert (observer.get_num_songs(), observer.get_num_fingerprints()) == (1, 499)
    observer.close()


def test_duplicate_sha1_stores_nothing(db: BaseDatabase) -> None:
    first = db.store_song("original", sha1_of(3), *fake_song(3), 10.0)
    other_hashes, other_offsets = fake_song(4)
    assert db.store_song("copy", sha1_of(3), other_hashes, other_offsets, 10.0) is None
    assert [s["song_id"] for s in db.get_songs()] == [first]
    assert db.get_num_fingerprints() == len(set(zip(*fake_song(3))))
    assert stored_rows(db, other_hashes[3:]) == set()


@needs_postgres
def test_duplicate_found_only_at_commit_is_still_a_duplicate(postgres_server: Server) -> None:
    store = connect("postgres", postgres_server.config()["database"])
    store.empty()
    with store.cursor(write=True) as cur:  # the unique check now waits until COMMIT
        cur.execute("ALTER TABLE songs DROP CONSTRAINT songs_file_sha1_key, ADD CONSTRAINT songs_file_sha1_key "
                    "UNIQUE (file_sha1) DEFERRABLE INITIALLY DEFERRED")
    first = store.store_song("original", sha1_of(9), *fake_song(9, 100), 1.0)
    assert store.store_song("copy", sha1_of(9), *fake_song(10, 100), 1.0) is None
    assert [s["song_id"] for s in store.get_songs()] == [first] and store.get_num_fingerprints() == 99
    store.empty()
    store.close()


def test_lookup_returns_rows_by_hash_and_skips_hashes_stored_more_than_the_cap(
        config: dict[str, Any], db: BaseDatabase) -> None:
    common, rare = np.int64(-7), np.int64(42)
    ids = []
    for song in range(3):  # ``common`` three times per song, ``rare`` once in the first song
        hashes, offsets = fake_song(20 + song, 300)
        hashes[-4:-1], offsets[-4:-1] = common, [7, -5, 2 ** 31 - 1]
        if song == 0:
            hashes[-1], offsets[-1] = rare, 11
        ids.append(db.store_song(f"song {song}", sha1_of(20 + song), hashes, offsets, 1.0))
    query = np.array([rare, common, rare, 99], dtype=np.int64)
    everything = {(int(common), i, o) for i in ids for o in (7, -5, 2 ** 31 - 1)} | {(int(rare), ids[0], 11)}
    assert db.return_matches(query)[0].tolist() == [common] * 9 + [rare]
    for cap, expected in [(None, everything), (8, {(int(rare), ids[0], 11)}), (9, everything)]:
        capped = connect(config["database_type"], {**config["database"], "max_rows_per_hash": cap})
        assert stored_rows(capped, query) == expected
        for songs in ([ids[0]], [ids[1], ids[2]], [ids[2], 10**6]):  # only these songs' rows
            h, s, o = capped.return_matches(query, song_ids=songs)
            assert set(zip(h.tolist(), s.tolist(), o.tolist())) == {r for r in expected if r[1] in songs}
            assert h.tolist() == sorted(h.tolist())
        assert capped.return_matches(query, song_ids=[])[0].size == 0
        capped.close()
    for bad in (0, -1, 2.5, True, "10"):
        with pytest.raises(ConfigError, match="max_rows_per_hash"):
            connect(config["database_type"], {**config["database"], "max_rows_per_hash": bad})


NAMES = ["it's \"quoted\"", "semi; colon; DROP TABLE songs; --", "Ünïcødé – 日本語 🎵",
         "100% %s %(name)s ? :1 $1", "back\\slash\ttab", "x" * 400]


def test_awkward_names_round_trip(db: BaseDatabase) -> None:
    ids = {db.store_song(name, sha1_of(10 + i), *fake_song(10 + i, 20), 1.0): name for i, name in enumerate(NAMES)}
    assert {s["song_id"]: s["song_name"] for s in db.get_songs()} == ids
    assert all(db.get_song_by_id(i)["song_name"] == name for i, name in ids.items())


def test_delete_removes_the_songs_fingerprints_only(db: BaseDatabase) -> None:
    h1, o1 = fake_song(5)
    h2, o2 = fake_song(6)
    h2[:100] = h1[100:200]  # shared hashes must survive for the other song
    gone = db.store_song("gone", sha1_of(5), h1, o1, 1.0)
    kept = db.store_song("kept", sha1_of(6), h2, o2, 1.0)
    assert db.delete_songs_by_id([gone, gone + kept + 100]) == 1
    assert [s["song_id"] for s in db.get_songs()] == [kept]
    assert db.get_song_by_id(gone) is None
    assert {r[1] for r in stored_rows(db, np.concatenate([h1, h2]))} == {kept}
    assert db.get_num_fingerprints() == len(set(zip(h2.tolist(), o2.tolist())))
    assert db.delete_songs_by_id([]) == 0
    assert db.store_song("gone again", sha1_of(5), h1, o1, 1.0) is not None  # its SHA1 is free again


def _store_in_child(config: dict[str, Any], barrier: Any, results: Any) -> None:
    store = connect(config["database_type"], dict(config["database"]))
    hashes, offsets = fake_song(7, 40000)
    barrier.wait(timeout=30)
    results.put(store.store_song("raced", sha1_of(7), hashes, offsets, 60.0))
    store.close()


def test_two_processes_storing_one_file_store_it_once(config: dict[str, Any]) -> None:
    # No connection may be open in this process before the fork (a child would inherit it).
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    children = [ctx.Process(target=_store_in_child, args=(config, barrier, results)) for _ in range(2)]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    winners = [o for o in outcomes if o is not None]
    assert len(winners) == 1 and outcomes.count(None) == 1
    with Dejavu(config) as djv:
        assert [s["song_id"] for s in djv.get_fingerprinted_songs()] == winners
        assert djv.db.get_num_fingerprints() == len(set(zip(*map(np.ndarray.tolist, fake_song(7, 40000)))))


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_connect_errors_are_one_line(request: pytest.FixtureRequest, backend: str) -> None:
    server = _server(request, backend)
    good = server.config()["database"]
    where = f"cannot connect to {backend} at 127.0.0.1"
    cases = {"wrong password": ({"password": "wrong"}, ("password", "denied")),
             "unreachable port": ({"port": _closed_port()}, ("connection refused",)),
             "missing database": ({"database": "dejavu_missing"}, ("dejavu_missing",))}
    for case, (change, words) in cases.items():
        with pytest.raises(DatabaseError) as caught:
            connect(backend, {**good, **change})
        message = str(caught.value)
        assert "\n" not in message and message.startswith(where), (case, message)
        assert any(w in message.lower() for w in words), (case, message)
        assert caught.value.__cause__ is None and caught.value.__suppress_context__, case


def _closed_port() -> int:
    from dejavu.testing import free_port

    return free_port()


@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_original_option_names(request: pytest.FixtureRequest, backend: str) -> None:
    good = _server(request, backend).config()["database"]
    legacy = {"host": good["host"], "port": str(good["port"]), "user": good["user"],
              "passwd": good["password"], "db" if backend == "mysql" else "dbname": good["database"]}
    store = connect(backend, legacy)
    assert store.get_num_songs() >= 0
    store.close()


# ------------------------------------------------------------------ end to end
def synth_song(seed: int, seconds: float = SONG_SECONDS, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Random three-note chords of harmonic tones, a new chord every 0.25 s (float, peak 0.8)."""
    rng = np.random.default_rng(seed)
    step = int(0.25 * rate)
    t = np.arange(step) / rate
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01)  # no clicks between chords
    chords = []
    for _ in range(int(np.ceil(seconds / 0.25))):
        freqs = 440.0 * 2.0 ** ((rng.integers(45, 85, 3) - 69) / 12)
        chord = sum(0.6 ** k * np.sin(2 * np.pi * f * (k + 1) * t + rng.uniform(0, 2 * np.pi))
                    for f in freqs for k in range(4))
        chords.append(chord * fade)
    audio = np.concatenate(chords)[:int(seconds * rate)]
    return 0.8 * audio / np.abs(audio).max()


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """16-bit mono WAV through the standard library."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


SONGS = {"chords one": 11, "chords two": 12, "chords three": 13}
EXCERPTS = {"chords one": 3.3, "chords two": 9.85, "chords three": 14.1}  # seconds into the song


@pytest.fixture(scope="session")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """songs/*.wav (3 songs of 20 s), clips/<song>.wav (5 s excerpts), unknown.wav."""
    root = tmp_path_factory.mktemp("audio")
    (root / "songs").mkdir()
    (root / "clips").mkdir()
    for name, seed in SONGS.items():
        samples = synth_song(seed)
        write_wav(root / "songs" / f"{name}.wav", samples)
        start = int(EXCERPTS[name] * SAMPLE_RATE)
        write_wav(root / "clips" / f"{name}.wav", samples[start:start + 5 * SAMPLE_RATE])
    write_wav(root / "unknown.wav", synth_song(99, 8.0))
    return root


def test_fingerprint_and_recognize(config: dict[str, Any], audio: Path) -> None:
    with Dejavu(config) as djv:
        report = djv.fingerprint_directory(str(audio / "songs"), [".wav"], 2)
        assert len(report.fingerprinted) == 3 and not report.failed
        assert len(djv.fingerprint_directory(str(audio / "songs"), [".wav"], 1).skipped) == 3
        assert sorted(s["song_name"] for s in djv.get_fingerprinted_songs()) == sorted(SONGS)
        for name, start in EXCERPTS.items():
            best = djv.recognize(FileRecognizer, str(audio / "clips" / f"{name}.wav"))["results"][0]
            assert best["song_name"] == name
            assert abs(best["offset_seconds"] - start) <= 0.1, (name, best["offset_seconds"])
        assert djv.recognize(FileRecognizer, str(audio / "unknown.wav"))["results"] == []


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python dejavu.py ARGS`` in a subprocess (no DEJAVU_* variables inherited)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEJAVU_")}
    return subprocess.run([sys.executable, str(ROOT / "dejavu.py"), *args], capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(ROOT), **(env or {})}, cwd=cwd, timeout=120,
                          stdin=subprocess.DEVNULL)


@needs_postgres
def test_cli_dsn_and_environment_override(postgres_server: Server, audio: Path, tmp_path: Path) -> None:
    server = postgres_server
    store = connect("postgres", server.config()["database"])
    store.empty()
    store.close()
    dsn_config = tmp_path / "dsn.json"
    dsn_config.write_text(json.dumps({"database_type": "postgres", "database": server.dsn()}))
    song = audio / "songs" / "chords two.wav"
    done = run_cli("--config", str(dsn_config), "--fingerprint", str(song), "--no-progress")
    assert done.returncode == 0, done.stderr

    # A config naming SQLite, overridden by the URL (without password) and the password variable.
    sqlite_config = tmp_path / "sqlite.json"
    sqlite_config.write_text(json.dumps({"database_type": "sqlite", "database": {"path": "never.db"}}))
    url = server.dsn().replace(f":{server.password}@", "@")
    env = {"DEJAVU_DATABASE_URL": url, "DEJAVU_DATABASE_PASSWORD": server.password}
    listed = run_cli("--config", str(sqlite_config), "--list", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["song_name"] for line in listed.stdout.splitlines()] == ["chords two"]
    assert not (tmp_path / "never.db").exists()
    found = run_cli("--config", str(sqlite_config), "--recognize", "file", str(audio / "clips" / "chords two.wav"),
                    env=env, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["results"][0]["song_name"] == "chords two"

    # A wrong password in the file: the variable fixes it; without it, one line and exit 2.
    wrong = server.config()
    wrong["database"]["password"] = "wrong"
    wrong_config = tmp_path / "wrong.json"
    wrong_config.write_text(json.dumps(wrong))
    fixed = run_cli("--config", str(wrong_config), "--stats", env={"DEJAVU_DATABASE_PASSWORD": server.password})
    assert fixed.returncode == 0 and json.loads(fixed.stdout)["songs"] == 1, fixed.stderr
    failed = run_cli("--config", str(wrong_config), "--stats")
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr
    assert "cannot connect to postgres" in failed.stderr and "password authentication failed" in failed.stderr


# ------------------------------------------------------------------ server restarts (last: they bounce the servers)
@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_reconnects_after_server_restart(request: pytest.FixtureRequest, backend: str) -> None:
    server = _server(request, backend)
    store = connect(backend, server.config()["database"])
    store.empty()
    song_id = store.store_song("survivor", sha1_of(8), *fake_song(8, 100), 2.0)
    server.restart()
    try:  # the first call may find the old connection dead: one clear error ...
        store.get_num_songs()
    except DatabaseError as exc:
        assert "\n" not in str(exc)
    assert [s["song_id"] for s in store.get_songs()] == [song_id]  # ... then it reconnects
    store.close()


# ------------------------------------------------------------------ format and settings
def test_store_records_its_format_and_settings_and_refuses_others(config: dict[str, Any], audio: Path,
                                                                  tmp_path: Path) -> None:
    """A store keeps the keys of one configuration: opening it with a setting that changes keys
    is one error naming the setting, stored value and configured value; query-side settings
    may differ."""
    song = audio / "songs" / f"{next(iter(SONGS))}.wav"
    djv = Dejavu(config)
    djv.fingerprint_file(str(song))
    djv.close()
    for section, stored, changed in (("window_size", 1024, 2048), ("hop_size", 256, 128),
                                     ("sample_rate", 11025, 8000), ("key", "packed", "sha1"),
                                     ("fan_value", 5, 10)):
        with pytest.raises(ConfigError) as err:
            Dejavu({**config, "fingerprint": {section: changed}})
        assert f"fingerprint.{section} is {stored!r} in the store but {changed!r}" in str(err.value)
    with Dejavu({**config, "fingerprint": {"query_fan_value": 10}}) as same:
        assert same.recognize(FileRecognizer, str(song))["results"][0]["song_name"] == song.stem
        assert same.get_fingerprinted_songs()[0]["source_path"] == str(song.resolve())
    out = subprocess.run([sys.executable, "-m", "dejavu", "--config", str(_write_config(tmp_path, {
        **config, "fingerprint": {"hop_size": 512}})), "--recognize", "file", str(song)],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "fingerprint.hop_size is 256 in the store" in out.stderr


def _write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_a_store_of_the_previous_format_is_refused(tmp_path: Path) -> None:
    """A dejavu 1.x SQLite store (songs and fingerprints, no recorded format) gives one line."""
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE songs (song_id INTEGER PRIMARY KEY, song_name TEXT, fingerprinted INTEGER, "
                    "file_sha1 BLOB, total_hashes INTEGER, duration REAL, date_created TEXT, date_modified TEXT)")
        con.execute('CREATE TABLE fingerprints (hash INTEGER, song_id INTEGER, "offset" INTEGER)')
    with pytest.raises(DatabaseError, match="a store of format 1"):
        Dejavu({"database": {"path": str(path)}})
    out = subprocess.run([sys.executable, "-m", "dejavu", "--config", str(_write_config(
        tmp_path, {"database": {"path": str(path)}})), "--list"], capture_output=True, text=True, cwd=ROOT,
        timeout=60)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr


# ------------------------------------------------------------------ bulk load (server stores)
@pytest.mark.parametrize("backend", SERVER_BACKENDS)
def test_load_catalogue_fills_an_empty_server_store(request: pytest.FixtureRequest, backend: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """load_catalogue: chunks in key order, sent in several batches, read back exactly as loaded;
    the next song stored gets a new id; a store that is not empty, rows out of key order, a
    repeated row or a song not listed are refused, and leave the store as it was."""
    from dejavu.database import server as server_module

    monkeypatch.setattr(server_module, "LOAD_BATCH_ROWS", 900)  # 4,000 rows: several batches
    store = connect(backend, _server(request, backend).config()["database"])
    rng = np.random.default_rng(77)
    songs = [(song_id, f"loaded {song_id}", sha1_of(300 + song_id), 30.0 + song_id) for song_id in (2, 3, 5, 9)]
    rows = np.column_stack([rng.integers(-300, 300, 4200), rng.choice([2, 3, 5, 9], 4200),
                            rng.integers(-3, 20000, 4200)])
    rows[:2] = [[np.iinfo(np.int64).min, 2, 7], [np.iinfo(np.int64).max, 9, 2 ** 31 - 1]]
    rows = np.unique(rows, axis=0)  # key order (hash, song_id, offset), no repeats
    chunks = [tuple(part.T.copy()) for part in np.array_split(rows, 3)]
    query = np.concatenate([rows[::7, 0], [np.iinfo(np.int64).min, 301, -301]])
    expected = {tuple(r) for r in rows.tolist() if r[0] in set(query.tolist())}
    modes = [None, "insert"] if backend == "mysql" else [None]  # mysql: LOAD DATA, then without local_infile
    for mode in modes:
        store.empty()
        if mode == "insert":
            monkeypatch.setattr(type(store), "_load_begin", lambda self, cur: None)
        assert store.load_catalogue(songs, iter(chunks)) == len(rows)
        assert stored_rows(store, query) == expected
        distinct = np.unique(query)
        assert store.count_matches(distinct).tolist() == [int((rows[:, 0] == h).sum()) for h in distinct]
        assert [(s["song_id"], s["song_name"], s["file_sha1"], s["duration"], s["total_hashes"]) for s in
                store.get_songs()] == [(*song[:2], song[2].upper(), song[3], int((rows[:, 1] == song[0]).sum()))
                                       for song in songs]
        assert store.get_num_fingerprints() == len(rows)

    def refused(error: type[Exception], match: str, catalogue: list, chunks: list) -> None:
        with pytest.raises(error, match=match):
            store.load_catalogue(catalogue, iter(chunks))

    refused(DatabaseError, "not empty", [(20, "more", sha1_of(320), 1.0)], [])
    assert store.get_num_fingerprints() == len(rows) and len(store.get_songs()) == len(songs)
    new_id = store.store_song("stored after", sha1_of(330), *fake_song(330, 40), 1.0)
    assert new_id > 9 and {r for r in stored_rows(store, query) if r[1] != new_id} == expected

    store.empty()
    reversed_chunks = chunks[::-1]
    repeated = [chunks[0], tuple(np.concatenate([a, a[-1:]]) for a in chunks[1])]
    stray = [chunks[0], tuple(np.concatenate([a, [b]]) for a, b in zip(chunks[1], (chunks[1][0][-1], 4, 0)))]
    refused(ValueError, "hash order", songs, reversed_chunks)
    refused(ValueError, "given twice", songs, repeated)
    refused(DatabaseError, "song 4", songs, stray)
    assert store.get_songs() == [] and store.get_num_fingerprints() == 0
    assert store.load_catalogue(songs, iter(chunks)) == len(rows)  # the failed loads left it usable
    assert stored_rows(store, query) == expected
    store.empty()
    store.close()

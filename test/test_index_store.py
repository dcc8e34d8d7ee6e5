"""The SQLite store on its segment index (dejavu.database.sqlite + index): every answer
checked against a plain Python model of the songs stored and deleted, through segments,
merges and compactions; deleted rows physically gone; a SIGKILL at each step of a write,
a merge and a compaction; concurrent writers and a reader racing merges; the original
step-by-step API.  (test_segments.py tests the file format and merge functions alone.)"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from contextlib import closing
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pytest

from dejavu.database.base import hex_to_int64
from dejavu.database.index import SegmentIndex
from dejavu.database.segments import Segment
from dejavu.database.sqlite import DEAD_SHARE, SQLiteDatabase
from dejavu.logic.store import NewSong

ROOT = Path(__file__).resolve().parent.parent
I64 = np.iinfo(np.int64)
Row = tuple[int, int, int]


# ------------------------------------------------------------------ songs and the reference
def sha1_of(tag: object) -> str:
    return hashlib.sha1(str(tag).encode()).hexdigest().upper()


def key_pool(rng: np.random.Generator) -> np.ndarray:
    """Distinct keys the songs draw from: small ones and full-range ones, the extremes included,
    so that many songs share keys."""
    pool = np.concatenate([rng.integers(0, 2000, 700), rng.integers(I64.min, I64.max, 400, endpoint=True),
                           [I64.min, I64.max, 0, -1]])
    return np.unique(pool)


def random_songs(rng: np.random.Generator, pool: np.ndarray, first: int, count: int, rows: int | None = None,
                 span: int = 60) -> list[NewSong]:
    """Songs ``first``.. with random keys of ``pool`` (a fourth of them among its first four, keys
    of thousands of rows) and offsets in [i*span, i*span+span) (an offset tells its song:
    offset // span), some (key, offset) pairs repeated; ``rows`` each, or a random number (none
    for every 25th song)."""
    songs = []
    for i in range(first, first + count):
        n = (0 if i % 25 == 7 else int(rng.integers(1, 400))) if rows is None else rows
        hashes = np.where(rng.random(n) < 1 / 4, rng.choice(pool[:4], n), rng.choice(pool, n)).astype(np.int64)
        offsets = (i * span + rng.integers(0, span, n)).astype(np.int32)
        songs.append(NewSong(f"song {i}", sha1_of(i), hashes, offsets, n / 87.0))
    return songs


def pairs_of(song: NewSong) -> set[tuple[int, int]]:
    return set(zip(song.hashes.tolist(), song.offsets.astype(np.int64).tolist()))


class Model:
    """The store as plain Python: every song ever stored (song id → its distinct (key, offset)
    pairs, its SHA1), which are live, and key → (song, offset) of every song ever stored."""

    def __init__(self) -> None:
        self.pairs: dict[int, set[tuple[int, int]]] = {}
        self.sha1: dict[int, str] = {}
        self.live: set[int] = set()
        self.by_key: dict[int, list[tuple[int, int]]] = defaultdict(list)

    def add(self, song_id: int, song: NewSong) -> None:
        assert song_id not in self.pairs, f"song id {song_id} given twice"
        self.pairs[song_id], self.sha1[song_id] = pairs_of(song), song.file_sha1
        for k, o in self.pairs[song_id]:
            self.by_key[k].append((song_id, o))
        self.live.add(song_id)

    def delete(self, song_ids: Iterable[int]) -> None:
        self.live -= set(song_ids)

    def rows(self, keys: Iterable[int] | None = None, song_ids: Iterable[int] | None = None) -> list[Row]:
        """Sorted rows (key, song, offset) of the live songs (of ``keys`` and ``song_ids`` only, if given)."""
        songs = self.live if song_ids is None else self.live & {int(s) for s in song_ids}
        wanted = self.by_key if keys is None else {int(k) for k in keys}
        return sorted((k, s, o) for k in wanted for s, o in self.by_key.get(k, ()) if s in songs)

    def counts(self, keys: np.ndarray, songs: Iterable[int]) -> np.ndarray:
        """Rows of ``songs`` per key of ``keys``."""
        songs = set(songs)
        return np.array([sum(s in songs for s, _ in self.by_key.get(int(k), ())) for k in keys], dtype=np.int64)

    def live_rows(self) -> int:
        return sum(len(self.pairs[s]) for s in self.live)


def assert_hits(got: tuple[np.ndarray, ...], want: list[Row]) -> None:
    """``got`` holds exactly the rows ``want``, as int64 arrays grouped by key in ascending key order."""
    keys, songs, offsets = got
    assert all(a.dtype == np.int64 for a in got) and keys.size == songs.size == offsets.size
    assert np.all(keys[1:] >= keys[:-1]), "rows not grouped by ascending key"
    assert sorted(zip(keys.tolist(), songs.tolist(), offsets.tolist())) == want


# ------------------------------------------------------------------ the store's files
def open_store(path: Path) -> SQLiteDatabase:
    db = SQLiteDatabase(str(path))
    db.setup()
    return db


def segment_dir(path: Path | str) -> Path:
    return Path(f"{path}-segments")


def listed(path: Path | str) -> dict[str, int]:
    """The catalogue's segments, oldest first: name → rows (read with a connection of its own)."""
    with closing(sqlite3.connect(str(path))) as conn:
        return dict(conn.execute("SELECT name, rows FROM segments ORDER BY segment_id").fetchall())


def files(path: Path | str) -> set[str]:
    directory = segment_dir(path)
    return set(os.listdir(directory)) if directory.is_dir() else set()


def physical_rows(path: Path | str) -> list[Row]:
    """Every row of every listed segment file, dead songs' rows included, sorted (Segment.open)."""
    rows: list[Row] = []
    for name, count in listed(path).items():
        with Segment.open(segment_dir(path) / name) as seg:
            assert seg.rows == count
            for chunk in seg.iter_rows():
                rows.extend(zip(*(a.tolist() for a in chunk)))
    return sorted(rows)


def assert_segments_bounded(path: Path | str) -> None:
    """O(log rows) segments, and no file in the directory that the catalogue does not list."""
    segments = listed(path)
    assert len(segments) <= math.log(max(sum(segments.values()), 1), 4) + 3, segments
    assert files(path) == set(segments), f"unlisted files left: {files(path) - set(segments)}"


def count_calls(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> list[tuple]:
    """Record the calls of ``owner.name`` (behaviour unchanged)."""
    calls: list[tuple] = []
    original = getattr(owner, name)

    def recorded(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)
    return calls


# ------------------------------------------------------------------ 1. the store equals a brute-force reference
def check_store(store: SQLiteDatabase, model: Model, rng: np.random.Generator, pool: np.ndarray) -> bool:
    """Every read of ``store`` against ``model``; True if counts included deleted rows."""
    absent = np.setdiff1d(np.concatenate([rng.integers(I64.min, I64.max, 30), np.arange(2000, 2030)]), pool)
    for _ in range(3):
        q = np.concatenate([rng.choice(pool, int(rng.integers(0, 300))), rng.choice(absent, 10), pool[:3]])
        q = np.concatenate([q, q[:int(rng.integers(0, q.size + 1))]])  # repeated keys
        rng.shuffle(q)
        query = q.tolist() if rng.random() < 0.3 else q
        assert_hits(store.return_matches(query), model.rows(q))
        some = rng.choice(sorted(model.pairs) + [10**6], int(rng.integers(0, 6))).tolist() if model.pairs else []
        assert_hits(store.return_matches(query, song_ids=some), model.rows(q, some))
    key = int(rng.choice(pool))
    assert sorted(store.query(key)) == model.rows([key])
    assert sorted(store.query()) == model.rows()
    assert sorted(store.get_iterable_kv_pairs()) == model.rows()
    # count_matches counts the rows in the segment files: at least the live songs' rows, at most
    # the rows of every song ever stored (deleted songs' rows count until a merge drops them).
    keys = np.unique(np.concatenate([pool, absent]))
    counts = store.count_matches(keys)
    live, ever = model.counts(keys, model.live), model.counts(keys, model.pairs)
    assert counts.dtype == np.int64 and np.all(live <= counts) and np.all(counts <= ever)
    assert store.get_num_fingerprints() == model.live_rows()
    assert {s["song_id"]: s["file_sha1"] for s in store.get_songs()} == {s: model.sha1[s] for s in model.live}
    return bool(np.any(counts > live))


def test_store_equals_a_brute_force_reference(tmp_path, monkeypatch) -> None:
    """Random batches (shared keys, repeated pairs, empty songs, duplicate SHA1s) and deletes,
    through segments, merges and compactions: after each step two stores on the file (the
    writer and another connection) answer every read exactly as the model."""
    merges = count_calls(monkeypatch, SegmentIndex, "merge")
    compactions = count_calls(monkeypatch, SQLiteDatabase, "compact")
    rng = np.random.default_rng(11)
    pool = key_pool(rng)
    path = tmp_path / "fp.db"
    db, other = open_store(path), SQLiteDatabase(str(path))
    model = Model()
    stored, dead_counted = 0, False
    for step in range(48):
        if step % 4 == 3 and model.live:  # a few songs; at step 27 two fifths of them: compacts
            many = len(model.live) * 2 // 5 if step == 27 else int(rng.integers(1, 6))
            victims = rng.choice(sorted(model.live), min(len(model.live), many), replace=False)
            assert db.delete_songs_by_id(victims.tolist() + [10**6]) == victims.size
            model.delete(victims.tolist())
        else:
            batch = random_songs(rng, pool, stored, int(rng.integers(1, 7)))
            stored += len(batch)
            duplicates = []
            if step % 5 == 4 and model.live:  # a SHA1 stored already, and one twice in the batch
                duplicates = [batch[0]._replace(song_name="again", file_sha1=model.sha1[min(model.live)]), batch[0]]
            ids = db.store_songs(batch + duplicates)
            assert ids[len(batch):] == [None] * len(duplicates)
            assert None not in ids[:len(batch)] and len(set(ids[:len(batch)])) == len(batch)
            for song_id, song in zip(ids, batch):
                model.add(song_id, song)
        for store in (db, other):
            dead_counted |= check_store(store, model, rng, pool)
        assert_segments_bounded(path)
    assert len(merges) >= 10 and compactions, (len(merges), len(compactions))
    assert dead_counted, "no deleted row was ever still in a segment: the live filter went untested"
    db.compact()
    assert len(listed(path)) == 1
    keys = np.unique(pool)
    for store in (db, other):
        np.testing.assert_array_equal(store.count_matches(keys), model.counts(keys, model.live))
        check_store(store, model, rng, pool)
    assert physical_rows(path) == model.rows()


# ------------------------------------------------------------------ 2. deletes give space back
def test_deletes_give_space_back(tmp_path) -> None:
    """Deletes under DEAD_SHARE leave the files alone; past it the store compacts: fewer bytes,
    the deleted rows physically gone; compact() leaves one segment of exactly the live rows."""
    rng = np.random.default_rng(5)
    pool = key_pool(rng)
    path = tmp_path / "fp.db"
    db, model = open_store(path), Model()
    for first, count in ((0, 30), (30, 7), (37, 1)):  # sizes 9000, 2100, 300 rows: never merged
        batch = random_songs(rng, pool, first, count, rows=300)
        for song_id, song in zip(db.store_songs(batch), batch):
            model.add(song_id, song)
    assert len(listed(path)) == 3
    total = model.live_rows()
    order = rng.permutation(sorted(model.live)).tolist()

    def take(share: float) -> list[int]:  # songs of the order, in turn, until `share` of the rows
        chosen = []
        while sum(len(model.pairs[s]) for s in chosen) < share * total:
            chosen.append(order.pop())
        return chosen

    few = take(DEAD_SHARE - 0.1)
    before, size0 = listed(path), db.size_bytes()
    assert db.delete_songs_by_id(few) == len(few)
    model.delete(few)
    assert listed(path) == before and files(path) == set(before), "deletes under DEAD_SHARE rewrote segments"
    assert sorted(db.query()) == model.rows()

    more = take(0.12)
    dead = sum(len(model.pairs[s]) for s in few + more)
    assert dead > DEAD_SHARE * total
    assert db.delete_songs_by_id(more) == len(more)
    model.delete(more)
    size1 = db.size_bytes()
    assert size1 < size0 - 7 * dead, (size0, size1, dead)  # a row takes 8 bytes (song id, offset)
    assert physical_rows(path) == model.rows(), "deleted rows still in the segment files"
    assert files(path) == set(listed(path))
    assert not {s for _, s, _ in physical_rows(path)} & set(few + more)

    batch = random_songs(rng, pool, 40, 5, rows=100)  # small: a segment of its own beside the big one
    for song_id, song in zip(db.store_songs(batch), batch):
        model.add(song_id, song)
    gone = [order.pop()]
    assert db.delete_songs_by_id(gone) == 1
    model.delete(gone)
    assert len(listed(path)) > 1 and len(physical_rows(path)) > model.live_rows()  # not compacted yet
    db.compact()
    (name, rows), = listed(path).items()
    assert rows == model.live_rows() and files(path) == {name}
    assert physical_rows(path) == model.rows() == sorted(db.query())
    keys = np.unique(pool)
    np.testing.assert_array_equal(db.count_matches(keys), model.counts(keys, model.live))

    everything = sorted(model.live)
    assert db.delete_songs_by_id(everything) == len(everything)
    model.delete(everything)
    assert db.query() == [] and physical_rows(path) == [] and files(path) == set(listed(path))
    assert db.size_bytes() < size1


# ------------------------------------------------------------------ child processes
CHILD = r'''
"""A child of test_index_store.py: argv = mode, store path, pickled job, mode arguments."""
import json, os, pickle, signal, sys, time
from collections import defaultdict
from dejavu.database.index import SegmentIndex
from dejavu.database.sqlite import SQLiteDatabase

mode, path, job_file = sys.argv[1:4]
with open(job_file, "rb") as fh:
    job = pickle.load(fh)
db = SQLiteDatabase(path)
calls = defaultdict(int)
phase = {"armed": False, "merging": False, "merged": False}
original_merge = SegmentIndex.merge


def merge(self, *args, **kwargs):
    calls["merge"] += 1
    phase["merging"] = True
    try:
        return original_merge(self, *args, **kwargs)
    finally:
        phase["merging"], phase["merged"] = False, True


SegmentIndex.merge = merge


def kill_at(owner, name, when, condition):
    """Once armed, SIGKILL this process `when` ("before"/"after") a call of owner.name if condition()."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if phase["armed"] and when == "before" and condition():
            die(name)
        result = original(*args, **kwargs)
        if phase["armed"] and when == "after" and condition():
            die(name)
        return result

    setattr(owner, name, wrapper)


def die(name):
    print("killed", "merging" if phase["merging"] else "merged" if phase["merged"] else "writing", name, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


FAULTS = {
    "write: before the rename": (os, "replace", "before", lambda: not phase["merging"]),
    "write: renamed, not committed": (SegmentIndex, "write", "after", lambda: True),
    "merge: before the rename": (os, "replace", "before", lambda: phase["merging"]),
    "merge: written, not committed": (SegmentIndex, "merge", "after", lambda: True),
    "merge: committed, old files kept": (SegmentIndex, "remove_unlisted", "before", lambda: phase["merged"]),
    "compaction: written, not committed": (SegmentIndex, "merge", "after", lambda: True),
}

if mode == "crash":
    db.setup()
    for batch in job["before"]:
        db.store_songs(batch)
    print("stored", len(job["before"]), "merges", calls["merge"], flush=True)
    kill_at(*FAULTS[sys.argv[4]])
    phase["armed"], phase["merged"] = True, False
    if job["after"]:
        db.store_songs(job["after"])
    if job["delete"]:
        db.delete_songs_by_id(db.get_song_by_sha1(sha1)["song_id"] for sha1 in job["delete"])
    print("survived", flush=True)
elif mode == "writer":
    while not os.path.exists(sys.argv[4]):
        time.sleep(0.001)
    began, ids = time.time(), {}
    for batch in job:
        ids.update(zip((song.file_sha1 for song in batch), db.store_songs(batch)))
    print(json.dumps({"ids": ids, "merges": calls["merge"], "began": began, "ended": time.time()}))
elif mode == "reader":
    ready, stop = sys.argv[4:6]
    keys, expected, span = job["keys"], job["expected"], job["span"]
    tag_of, states, loops, filtered, last, gone = {}, set(), 0, 0, set(), set()
    open(ready, "w").close()
    while not os.path.exists(stop):
        some = sorted(tag_of)[loops % 7::5] if loops % 3 == 2 else None
        found, seen = db.return_matches(keys, some), defaultdict(list)
        for k, s, o in zip(*(a.tolist() for a in found)):
            seen[s].append((k, o))
        for song_id, rows in seen.items():
            tags = {o // span for _, o in rows}
            assert len(tags) == 1, f"song {song_id}: rows of several songs {sorted(tags)}"
            tag = tags.pop()
            assert tag_of.setdefault(song_id, tag) == tag, f"song {song_id} is song {tag_of[song_id]}, then {tag}"
            assert len(set(rows)) == len(rows), f"song {song_id}: rows returned twice"
            assert set(rows) == expected[tag], f"song {song_id} seen with {len(rows)} of its {len(expected[tag])} rows"
        assert not gone & set(seen), f"songs {gone & set(seen)} came back after they had gone"
        if some is None:  # every song has rows among the keys: one not seen now is deleted
            gone |= last - set(seen)
            last = set(seen)
            states.add(frozenset(seen))
        else:
            assert set(seen) <= set(some), f"rows of songs not asked for: {set(seen) - set(some)}"
            filtered += 1
        loops += 1
    print(json.dumps({"loops": loops, "filtered": filtered, "states": len(states)}))
'''


def child(mode: str, path: Path, job: object, *args: str) -> subprocess.Popen:
    """Start CHILD in ``mode`` on the store ``path`` with ``job`` (pickled beside it)."""
    job_file = path.parent / f"{mode}-{time.monotonic_ns()}.pkl"
    job_file.write_bytes(pickle.dumps(job))
    return subprocess.Popen([sys.executable, "-c", CHILD, mode, str(path), str(job_file), *args],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def model_of(db: SQLiteDatabase, songs: Sequence[NewSong]) -> Model:
    """The model of ``songs`` under the ids the store gave them (each must be stored)."""
    by_sha1 = {song.file_sha1: song for song in songs}
    model = Model()
    for song in db.get_songs():
        model.add(song["song_id"], by_sha1[song["file_sha1"]])
    return model


def assert_store_holds(db: SQLiteDatabase, songs: Sequence[NewSong], pool: np.ndarray,
                       deleted: Sequence[NewSong] = ()) -> Model:
    """``db`` holds exactly ``songs``, each whole, and answers as their model (``deleted``: songs
    deleted from it, whose rows count_matches may still count)."""
    assert {s["file_sha1"] for s in db.get_songs()} == {song.file_sha1 for song in songs}
    model = model_of(db, songs)
    for n, song in enumerate(deleted):
        model.add(10**7 + n, song)  # under an id of its own: its rows are counted, never returned
    model.delete(10**7 + n for n in range(len(deleted)))
    assert {s["song_id"]: s["total_hashes"] for s in db.get_songs()} == {i: len(model.pairs[i]) for i in model.live}
    check_store(db, model, np.random.default_rng(0), pool)
    return model


# ------------------------------------------------------------------ 3. a crash at each write step
@pytest.mark.parametrize("fault", [
    "write: before the rename", "write: renamed, not committed", "merge: before the rename",
    "merge: written, not committed", "merge: committed, old files kept", "compaction: written, not committed"])
def test_a_crash_at_each_write_step_leaves_committed_songs_whole(tmp_path, fault) -> None:
    """A child stores three batches, then SIGKILLs itself at one step of the fourth batch's
    write, of its merge, or of a compaction after deletes.  The store then opens, lists only
    whole segment files and holds exactly the songs committed, each whole; the next write
    removes what the crash left."""
    rng = np.random.default_rng(zlib.crc32(fault.encode()))
    pool = key_pool(rng)
    batches = [random_songs(rng, pool, first, 4, rows=100) for first in range(0, 16, 4)]
    compaction = fault.startswith("compaction")
    songs = [song for batch in batches for song in batch]
    delete = [song.file_sha1 for song in songs[::3]] if compaction else []  # a third of the rows: compacts
    job = {"before": batches if compaction else batches[:3], "after": None if compaction else batches[3],
           "delete": delete}
    path = tmp_path / "fp.db"
    proc = child("crash", path, job, fault)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and "survived" not in out, (fault, out, err)
    assert "stored 3 merges" in out or "stored 4 merges" in out, out
    committed = {"write": songs[:12], "merge": songs, "compaction": [s for s in songs if s.file_sha1 not in delete]}
    expected = committed[fault.split(":")[0]]

    segments = listed(path)
    leftovers = files(path) - set(segments)
    assert leftovers, f"{fault}: the crash left nothing behind, so it did not land where intended"
    if "before the rename" in fault:
        assert any(name.endswith(".tmp") for name in leftovers), leftovers
    else:
        assert any(name.endswith(".seg") for name in leftovers), leftovers
    with closing(sqlite3.connect(str(path))) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT COUNT(*) FROM songs WHERE fingerprinted = 0").fetchone() == (0,)
    for name, rows in segments.items():
        with Segment.open(segment_dir(path) / name) as seg:
            assert seg.rows == rows

    db = open_store(path)
    deleted = [song for song in songs if song.file_sha1 in delete]
    model = assert_store_holds(db, expected, pool, deleted)
    extra = random_songs(rng, pool, 100, 3, rows=100)
    for song_id, song in zip(db.store_songs(extra), extra):
        model.add(song_id, song)
    assert not any(name.endswith(".tmp") for name in files(path))
    assert files(path) == set(listed(path)), "the next write left the crash's files"
    assert_store_holds(db, expected + extra, pool, deleted)


# ------------------------------------------------------------------ 4. concurrency
def test_two_processes_storing_at_once_store_each_song_once(tmp_path) -> None:
    """Two processes store batches into one store at once, a third of the songs in both:
    each SHA1 is stored once (one process gets its id, the other None), with all its rows,
    and both merged."""
    rng = np.random.default_rng(3)
    pool = key_pool(rng)
    songs = random_songs(rng, pool, 0, 90)
    path = tmp_path / "fp.db"
    open_store(path).close()
    go = tmp_path / "go"
    jobs = []
    for part in (songs[:60], songs[30:]):
        part = [part[i] for i in rng.permutation(len(part))]
        cuts = [0, *sorted(rng.choice(np.arange(1, len(part)), 24, replace=False).tolist()), len(part)]
        jobs.append([part[a:b] for a, b in zip(cuts, cuts[1:])])
    procs = [child("writer", path, job, str(go)) for job in jobs]
    time.sleep(0.5)  # both started and waiting
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    first, second = results
    assert first["began"] < second["ended"] and second["began"] < first["ended"], "the writers did not overlap"
    assert first["merges"] and second["merges"], [r["merges"] for r in results]
    db = open_store(path)
    ids = {s["file_sha1"]: s["song_id"] for s in db.get_songs()}
    assert len(ids) == len(songs)
    for sha1, song_id in ids.items():
        given = [r["ids"][sha1] for r in results if sha1 in r["ids"]]
        assert [i for i in given if i is not None] == [song_id] and len(given) - 1 == given.count(None), given
    assert_store_holds(db, songs, pool)
    assert_segments_bounded(path)


def test_a_reader_never_sees_a_song_partially(tmp_path, monkeypatch) -> None:
    """A reader process loops return_matches while this process stores batches, deletes songs,
    merges and compacts: it never raises, and every song it sees has all its rows."""
    merges = count_calls(monkeypatch, SegmentIndex, "merge")
    compactions = count_calls(monkeypatch, SQLiteDatabase, "compact")
    rng = np.random.default_rng(8)
    pool = key_pool(rng)
    span = 1000
    songs = random_songs(rng, pool, 0, 100, rows=150, span=span)
    keys = rng.choice(pool, pool.size * 2 // 3, replace=False)
    queried = set(keys.tolist())
    expected = {i: {(k, o) for k, o in pairs_of(song) if k in queried} for i, song in enumerate(songs)}
    path = tmp_path / "fp.db"
    db, model = open_store(path), Model()

    def store(batch: list[NewSong]) -> None:
        for song_id, song in zip(db.store_songs(batch), batch):
            model.add(song_id, song)

    for first in range(0, 20, 5):
        store(songs[first:first + 5])
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    reader = child("reader", path, {"keys": keys, "expected": expected, "span": span}, str(ready), str(stop))
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and reader.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        for first in range(20, 100, 3):
            store(songs[first:first + 3])
            oldest = sorted(model.live)[:2]
            assert db.delete_songs_by_id(oldest) == len(oldest)
            model.delete(oldest)
            if first % 9 == 8:
                db.compact()
            time.sleep(0.01)
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    seen = json.loads(out)
    assert seen["loops"] >= 20 and seen["filtered"] and seen["states"] >= 5, seen
    assert len(merges) >= 10 and len(compactions) >= 3, (len(merges), len(compactions))
    check_store(db, model, rng, pool)


def test_a_reader_retries_when_a_listed_segment_is_merged_away(tmp_path) -> None:
    """The race _current() handles: a reader reads the segment list, then, before it opens the
    files, a writer merges them and removes the old ones.  The reader reads the list again."""
    rng = np.random.default_rng(9)
    pool = key_pool(rng)
    songs = random_songs(rng, pool, 0, 8, rows=200)
    path = tmp_path / "fp.db"
    writer, reader = open_store(path), SQLiteDatabase(str(path))
    writer.store_songs(songs[:4])
    first_listed = set(listed(path))
    use = reader.index.use
    raced = []

    def use_after_a_merge(names, live):  # the writer commits a merge between the reader's two steps
        if not raced:
            raced.append(list(names))
            writer.store_songs(songs[4:])
            assert not first_listed & files(path), "the writer did not merge the listed segment away"
        return use(names, live)

    reader.index.use = use_after_a_merge
    assert_hits(reader.return_matches(pool), model_of(writer, songs).rows(pool))
    assert raced and set(raced[0]) == first_listed


# ------------------------------------------------------------------ 5. the original API
def test_original_step_by_step_api(tmp_path) -> None:
    """insert_song, insert_hashes (hex hashes, as the original) and set_song_fingerprinted, then
    query and get_iterable_kv_pairs; empty() removes every segment file."""
    path = tmp_path / "fp.db"
    db = open_store(path)
    pairs = {(hashlib.sha1(f"{i % 40}".encode()).hexdigest()[:20], i % 97) for i in range(300)}
    song_id = db.insert_song("old way", sha1_of("old"), len(pairs))
    db.insert_hashes(song_id, pairs)
    assert db.query() == [] and db.get_songs() == []  # not fingerprinted yet: invisible
    db.set_song_fingerprinted(song_id)
    rows = sorted({(hex_to_int64(h), song_id, o) for h, o in pairs})
    assert sorted(db.get_iterable_kv_pairs()) == rows == sorted(db.query())
    some = next(iter(pairs))[0]
    assert sorted(db.query(some)) == sorted(db.query(hex_to_int64(some))) == [r for r in rows
                                                                               if r[0] == hex_to_int64(some)]
    db.insert("ab" * 10, song_id, 5)
    assert (hex_to_int64("ab" * 10), song_id, 5) in db.query()
    assert db.get_num_fingerprints() == len(pairs)
    assert files(path) and all(name.endswith(".seg") for name in files(path))
    db.empty()
    assert files(path) == set() and db.query() == [] and db.get_songs() == []
    song = random_songs(np.random.default_rng(1), key_pool(np.random.default_rng(1)), 0, 1, rows=50)
    new_id, = db.store_songs(song)
    assert sorted(db.query()) == model_of(db, song).rows()
    assert files(path) == set(listed(path)) and len(files(path)) == 1 and new_id is not None


@pytest.mark.parametrize("meanwhile", ["another song stored", "another song deleted"])
def test_rows_inserted_step_by_step_survive_a_merge_before_the_song_is_marked(tmp_path, meanwhile) -> None:
    """The original API writes a song's rows before it marks the song fingerprinted; a merge or
    compaction in between (another song's write, or a delete) must keep those rows."""
    rng = np.random.default_rng(4)
    pool = key_pool(rng)
    path = tmp_path / "fp.db"
    db = open_store(path)
    others = random_songs(rng, pool, 0, 3, rows=300)
    if meanwhile == "another song deleted":
        db.store_songs(others[:2])
    old = random_songs(rng, pool, 10, 1, rows=300)[0]
    song_id = db.insert_song(old.song_name, old.file_sha1, len(pairs_of(old)))
    db.insert_hashes(song_id, pairs_of(old))
    if meanwhile == "another song stored":
        db.store_songs(others[2:])
    else:
        db.delete_songs_by_id([db.get_song_by_sha1(others[0].file_sha1)["song_id"]])
    db.set_song_fingerprinted(song_id)
    mine = sorted((k, song_id, o) for k, o in pairs_of(old))
    assert [row for row in sorted(db.query()) if row[1] == song_id] == mine

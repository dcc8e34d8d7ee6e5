"""Segments (dejavu.database.segments): lookups, counts, merges, the streaming writer, the
merge policy and crash safety, each checked against a plain Python reference."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from dejavu.database import segments
from dejavu.database.segment_writer import SegmentWriter, merge_segments, plan_merge, write_segment
from dejavu.database.segments import DATA_START, Segment, SegmentError, lookup_all

ROOT = Path(__file__).resolve().parent.parent
I64 = np.iinfo(np.int64)
Reference = dict[int, list[tuple[int, int]]]


def random_rows(rng: np.random.Generator, n: int, songs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n rows: keys from a pool of small and full-range int64 keys (the extremes included), so
    keys repeat and some rows are exact duplicates; song ids drawn from ``songs``."""
    pool = np.concatenate([rng.integers(0, 3000, 400), rng.integers(I64.min, I64.max, 300, endpoint=True),
                           [I64.min, I64.max, 0, -1, 1]])
    keys = rng.choice(pool, n)
    offsets = rng.integers(-3, 400, n)
    offsets[:2] = [np.iinfo(np.int32).min, np.iinfo(np.int32).max]
    return keys, rng.choice(songs, n), offsets


def reference(*parts: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Reference:
    """key → sorted distinct (song, offset) pairs, built row by row in Python."""
    ref: dict[int, set[tuple[int, int]]] = defaultdict(set)
    for keys, songs, offsets in parts:
        for k, s, o in zip(keys.tolist(), songs.tolist(), offsets.tolist()):
            ref[k].add((s, o))
    return {k: sorted(v) for k, v in ref.items()}


def expected(ref: Reference, query, song_ids=None) -> tuple[np.ndarray, ...]:
    """The reference's rows of the distinct query keys, by key then (song, offset)."""
    rows = [(k, s, o) for k in sorted({int(q) for q in query}) for s, o in ref.get(k, [])
            if song_ids is None or s in set(song_ids)]
    return tuple(np.array(rows, dtype=np.int64).reshape(-1, 3).T)


def assert_rows(got: tuple[np.ndarray, ...], want: tuple[np.ndarray, ...]) -> None:
    assert all(g.dtype == np.int64 for g in got)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def random_queries(rng: np.random.Generator, ref: Reference, count: int) -> list:
    """Query sets: present and absent keys, duplicates, empty, Python lists and int64 arrays."""
    present = np.array(sorted(ref), dtype=np.int64)
    queries: list = [[], np.zeros(0, dtype=np.int64), [I64.min, I64.max]]
    for _ in range(count):
        q = np.concatenate([rng.choice(present, rng.integers(0, 60)), rng.integers(I64.min, I64.max, rng.integers(0, 20)),
                            rng.integers(-50, 3050, rng.integers(0, 20))])
        q = np.concatenate([q, q[: rng.integers(0, q.size + 1)]])  # duplicates
        rng.shuffle(q)
        queries.append(q.tolist() if rng.random() < 0.2 else q)
    return queries


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Segment, Reference, tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(7)
    rows = random_rows(rng, 30_000, np.arange(60))
    path = tmp_path_factory.mktemp("seg") / "one.seg"
    info = write_segment(path, *rows)
    ref = reference(rows)
    assert (info.rows, info.n_keys) == (sum(map(len, ref.values())), len(ref)) and info.rows < rows[0].size
    seg = Segment.open(path)
    assert (seg.rows, seg.n_keys, seg.nbytes) == (info.rows, info.n_keys, path.stat().st_size)
    return seg, ref, rows


def test_lookup_equals_reference(data) -> None:
    seg, ref, _ = data
    for q in random_queries(np.random.default_rng(1), ref, 300):
        assert_rows(seg.lookup(q), expected(ref, q))


@pytest.mark.parametrize("searched", [0, 10**9])  # every key's postings searched / read whole
def test_lookup_song_filter(data, searched, monkeypatch) -> None:
    monkeypatch.setattr(segments, "SEARCHED_POSTINGS", searched)
    seg, ref, _ = data
    rng = np.random.default_rng(2)
    for q in random_queries(rng, ref, 100):
        songs = rng.choice(70, rng.integers(0, 8), replace=False).tolist()  # ids 60-69 have no rows
        assert_rows(seg.lookup(q, songs), expected(ref, q, songs))
    assert seg.lookup(sorted(ref), [])[0].size == 0


def test_counts(data) -> None:
    seg, ref, _ = data
    for q in random_queries(np.random.default_rng(3), ref, 100):
        np.testing.assert_array_equal(seg.counts(q), [len(ref.get(int(k), [])) for k in q])


def test_uint64_keys_are_their_int64_bits(tmp_path) -> None:
    keys = np.array([2**64 - 1, 2**63, 5, 2**63 + 7], dtype=np.uint64)
    seg = Segment.open(write_segment(tmp_path / "u.seg", keys, [1, 2, 3, 4], [0, 0, 0, 0]).path)
    found = seg.lookup(keys)
    np.testing.assert_array_equal(found[0], np.sort(keys.view(np.int64)))  # int64 order: negatives first
    np.testing.assert_array_equal(found[1], [2, 4, 1, 3])
    np.testing.assert_array_equal(seg.counts(np.array([2**63 + 7, 6], dtype=np.uint64)), [1, 0])


def test_bad_rows_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="differ in length"):
        write_segment(tmp_path / "a.seg", [1, 2], [1], [1, 2])
    with pytest.raises(ValueError, match="song ids"):
        write_segment(tmp_path / "a.seg", [1], [-1], [0])
    with pytest.raises(ValueError, match="int32"):
        write_segment(tmp_path / "a.seg", [1], [1], [2**31])
    assert os.listdir(tmp_path) == []  # nothing written, no temporary file left


def test_empty_segment(tmp_path) -> None:
    seg = Segment.open(write_segment(tmp_path / "e.seg", [], [], []).path)
    assert (seg.rows, seg.n_keys) == (0, 0)
    assert seg.lookup([1, 2])[0].size == 0 and seg.counts([1, 2]).tolist() == [0, 0]
    assert list(seg.iter_rows()) == []


def test_merge_equals_reference_without_dead_songs(tmp_path) -> None:
    rng = np.random.default_rng(4)
    parts = [random_rows(rng, int(rng.integers(500, 6000)), np.arange(10 * i, 10 * i + 10)) for i in range(5)]
    parts.append(tuple(a[:300] for a in parts[0]))  # rows stored twice: written once by the merge
    segments = [Segment.open(write_segment(tmp_path / f"{i}.seg", *p).path) for i, p in enumerate(parts)]
    ref = reference(*parts)
    q = np.array(sorted(ref) + [12345678], dtype=np.int64)
    refs = [reference(p) for p in parts]  # unmerged: by key, then segment by segment in the given order
    want = [(k, s, o) for k in sorted(ref) for r in refs for s, o in r.get(k, [])]
    assert_rows(lookup_all(segments, q[::-1]), tuple(np.array(want, dtype=np.int64).T))
    songs = [3, 10, 11, 59]
    want = [(k, s, o) for k, s, o in want if s in songs]
    assert_rows(lookup_all(segments, q, songs), tuple(np.array(want, dtype=np.int64).T))
    dead = {3, 17, 25, 26, 40, 49}
    live_ids = set(range(50)) - dead
    mask = np.ones(45, dtype=bool)  # ids past the end (45-49) are dead too
    mask[list(dead & set(range(45)))] = False
    for name, live, gone in (("set.seg", live_ids, dead), ("mask.seg", mask, dead | set(range(45, 50))),
                             ("all.seg", None, set())):
        info = merge_segments(segments, tmp_path / name, live, chunk_rows=700)  # many key ranges
        merged = Segment.open(info.path)
        want = {k: [r for r in v if r[0] not in gone] for k, v in ref.items()}
        want = {k: v for k, v in want.items() if v}
        assert (merged.rows, merged.n_keys) == (sum(map(len, want.values())), len(want))
        assert_rows(merged.lookup(q), expected(want, q))
        chunks = list(merged.iter_rows(chunk_rows=500))
        assert len(chunks) > 5 and all(c[0].size <= 500 or c[0][0] == c[0][-1] for c in chunks)
        assert_rows(tuple(np.concatenate(c) for c in zip(*chunks)), expected(want, sorted(want)))


def test_streaming_writer_equals_write_segment(tmp_path) -> None:
    rng = np.random.default_rng(5)
    keys, songs, offsets = random_rows(rng, 20_000, np.arange(30))
    whole = write_segment(tmp_path / "whole.seg", keys, songs, offsets)
    order = np.argsort(keys, kind="stable")  # key order only: postings of a key unsorted, duplicates kept
    cuts = np.sort(rng.choice(keys.size, 40, replace=False))  # chunks end mid-key too
    with SegmentWriter(tmp_path / "streamed.seg") as writer:
        for idx in np.split(order, cuts):
            writer.append(keys[idx], songs[idx], offsets[idx])
    assert writer.info == whole._replace(path=str(tmp_path / "streamed.seg"))
    assert (tmp_path / "streamed.seg").read_bytes() == (tmp_path / "whole.seg").read_bytes()


def test_streaming_writer_refuses_keys_out_of_order(tmp_path) -> None:
    with pytest.raises(ValueError, match="ascending key order"):
        with SegmentWriter(tmp_path / "bad.seg") as writer:
            writer.append([5, 9, 9], [1, 1, 2], [0, 0, 0])
            writer.append([9, 10], [0, 0], [0, 0])  # 9 continues the last key: allowed
            writer.append([8], [0], [0])
    assert os.listdir(tmp_path) == []


def simulate(appends: list[int], start: list[int] | None = None) -> tuple[list[int], int, list[list[int]]]:
    """Append segments of these sizes, merging as plan_merge says: (final sizes, rows written, plans)."""
    sizes, written, plans = list(start or []), 0, []
    for size in appends:
        sizes.append(size)
        written += size
        while plan := plan_merge(sizes):
            assert plan == list(range(plan[0], len(sizes))) and len(plan) >= 2
            plans.append(plan)
            written += sum(sizes[i] for i in plan)
            sizes[plan[0]:] = [sum(sizes[i] for i in plan)]
        assert len(sizes) <= math.log(sum(sizes), 4) + 2
    return sizes, written, plans


def test_merge_policy_keeps_segments_logarithmic() -> None:
    rng = np.random.default_rng(6)
    for appends in ([1000] * 1000, [1] * 1000, list(range(1, 1001)), list(range(1000, 0, -1)),
                    rng.choice([1, 10, 100, 1000, 10_000], 1000).tolist()):
        sizes, written, _ = simulate(appends)
        assert sum(sizes) == sum(appends)
        assert sizes == sorted(sizes, reverse=True)
        assert written / sum(appends) <= 3 * math.log(len(appends), 4) + 1  # each row rewritten O(log n) times
    assert plan_merge([]) == plan_merge([7]) == plan_merge([10**9, 10]) == []
    assert plan_merge([200, 30, 10]) == [1, 2]
    assert plan_merge([150, 30, 10]) == [0, 1, 2]  # the older one against all the newer ones merged


def test_merge_policy_never_rewrites_a_huge_segment_for_small_appends() -> None:
    appends = np.random.default_rng(8).integers(1, 1000, 1000).tolist()
    sizes, _, plans = simulate(appends, start=[10**9])
    assert sizes[0] == 10**9 and plans and all(0 not in plan for plan in plans)


def test_unfinished_temp_and_damaged_files_are_not_segments(tmp_path, data) -> None:
    seg, _, rows = data
    writer = SegmentWriter(tmp_path / "new.seg")
    writer.append(*rows)
    temp = [p for p in tmp_path.iterdir()]  # a crash here leaves only the temporary file
    assert len(temp) == 1 and temp[0].name.startswith(".new.seg.") and temp[0].name.endswith(".tmp")
    assert not (tmp_path / "new.seg").exists()
    with pytest.raises(SegmentError, match=f"{temp[0]}: not a segment"):
        Segment.open(temp[0])
    writer.abort()
    assert list(tmp_path.iterdir()) == []

    good = Path(seg.path).read_bytes()
    damaged = {"truncated.seg": good[:-1], "half.seg": good[:len(good) // 2], "header-only.seg": good[:DATA_START],
               "tiny.seg": good[:100], "empty.seg": b"", "magic.seg": b"X" + good[1:],
               "json.seg": good[:20] + b"}" + good[21:], "version.seg": good.replace(b'"version": 1', b'"version": 2', 1),
               "rows.seg": re.sub(rb'"rows": (\d+)', lambda m: b'"rows": %d' % (int(m[1]) - 1), good, count=1)}
    for name, content in damaged.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SegmentError, match=re.escape(str(tmp_path / name))):
            Segment.open(tmp_path / name)
    with pytest.raises(SegmentError, match="missing.seg"):
        Segment.open(tmp_path / "missing.seg")


READER = """
import sys, numpy as np
from dejavu.database.segments import Segment
seg = Segment.open(sys.argv[1])
query = np.load(sys.argv[2])
for _ in range(20):
    found = seg.lookup(query)
np.save(sys.argv[3], np.stack(found))
"""


def test_processes_read_one_segment_concurrently(tmp_path, data) -> None:
    seg, ref, _ = data
    query = np.array(sorted(ref)[::3], dtype=np.int64)
    np.save(tmp_path / "query.npy", query)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    readers = [subprocess.Popen([sys.executable, "-c", READER, seg.path, str(tmp_path / "query.npy"),
                                 str(tmp_path / f"out{i}.npy")], env=env) for i in range(2)]
    for _ in range(20):
        mine = np.stack(seg.lookup(query))
    assert [p.wait(timeout=60) for p in readers] == [0, 0]
    assert mine.shape[1] > 1000
    for i in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"out{i}.npy"), mine)

"""Offset alignment and the no-match decision on constructed hits."""
from __future__ import annotations

import numpy as np

from dejavu.config import MatchingConfig
from dejavu.logic.matching import _vote_counts, align, song_scores


def _hits(rng, n_songs=5, rows=4000):
    hashes = rng.integers(0, 300, size=rows).astype(np.int64)
    return hashes, rng.integers(1, n_songs + 1, size=rows).astype(np.int64), rng.integers(0, 5000, size=rows).astype(np.int64)


def test_chunked_vote_counting_equals_one_pass():
    rng = np.random.default_rng(0)
    qh = rng.integers(0, 300, size=900).astype(np.int64)
    qo = rng.integers(0, 400, size=900).astype(np.int32)
    hh, hs, ho = _hits(rng)
    k1, v1 = _vote_counts(qh, qo, hh, hs, ho)
    k2, v2 = _vote_counts(qh, qo, hh, hs, ho, max_pairs=97)
    assert np.array_equal(k1, k2) and np.array_equal(v1, v2)
    assert v1.sum() == sum(int((qh == h).sum()) for h in hh)   # every (row, query offset) pair voted once


def _reference_scores(qh, qo, hh, hs, ho, tolerance):
    """song_scores by counting in Python dicts: per song {Δ: votes}, then the best ±tolerance window."""
    votes: dict[int, dict[int, int]] = {}
    for h, s, o in zip(hh.tolist(), hs.tolist(), ho.tolist()):
        for q in qo[qh == h].tolist():
            per = votes.setdefault(s, {})
            per[o - q] = per.get(o - q, 0) + 1
    out = []
    for s in sorted(votes):
        per = votes[s]
        window = {d: sum(per.get(d + k, 0) for k in range(-tolerance, tolerance + 1)) for d in per}
        best = max(window.values())
        out.append((s, best, sum(per.values()), min(d for d in per if window[d] == best)))
    return [np.array(col, dtype=np.int64) for col in zip(*out)] if out else [np.zeros(0, np.int64)] * 4


def test_song_scores_equal_a_plain_count():
    rng = np.random.default_rng(2)
    for trial in range(60):
        q, n = int(rng.integers(1, 200)), int(rng.integers(0, 800))
        qh = rng.integers(0, 40, size=q).astype(np.int64)          # query hashes repeat
        qo = rng.integers(0, 300, size=q).astype(np.int32)
        hh = rng.choice(qh, size=n).astype(np.int64)               # hits in no particular order
        hs = rng.integers(1, 5, size=n).astype(np.int64)
        ho = rng.integers(0, 60, size=n).astype(np.int64)          # dense: neighbouring Δs are common
        tolerance = trial % 3
        got = song_scores(qh, qo, hh, hs, ho, tolerance)
        want = _reference_scores(qh, qo, hh, hs, ho, tolerance)
        for g, w, what in zip(got, want, ("songs", "best", "hits", "offsets")):
            assert np.array_equal(g, w), f"trial {trial}: {what} differ"


def test_a_true_alignment_wins_and_noise_alone_gives_nothing():
    rng = np.random.default_rng(1)
    cfg = MatchingConfig()
    qh = rng.integers(0, 10**12, size=300).astype(np.int64)
    qo = rng.integers(0, 200, size=300).astype(np.int32)
    noise = _hits(rng, rows=3000)
    assert align(qh, qo, *noise, cfg) == []
    # song 7 holds 60 of the query's hashes at offset + 1234
    pick = rng.choice(300, size=60, replace=False)
    hh = np.concatenate([noise[0], qh[pick]])
    hs = np.concatenate([noise[1], np.full(60, 7)])
    ho = np.concatenate([noise[2], qo[pick].astype(np.int64) + 1234])
    best = align(qh, qo, hh, hs, ho, cfg)
    assert len(best) == 1 and best[0].song_id == 7 and best[0].offset == 1234 and best[0].score == 60

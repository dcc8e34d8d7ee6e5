"""Offset alignment and the no-match decision on constructed hits."""
from __future__ import annotations

import numpy as np

from dejavu.config import MatchingConfig
from dejavu.logic.matching import _vote_counts, align


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

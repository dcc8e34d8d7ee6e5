"""Match: stored hash hits → per-song offset alignment → scored results, or no match.

A query's hashes are looked up in the store; every hit (song s, stored offset t_db)
of a query hash at query offset t_q votes for the alignment d = t_db − t_q of song s.
A true match piles its votes onto one d; chance hits spread over the whole song.

Score: the votes within ±``offset_tolerance`` frames of the best d (tolerates the
frame jitter of resampled or re-encoded audio).

No-match decision (calibrated on real music, see README "Recognition quality"):
chance alignments between unrelated songs reach scores of 20+ for long queries, but
then several songs reach similar scores.  The chance level of a candidate is the mean
score of the ``chance_songs`` songs ranked after it (missing ones count 0); averaging
several runner-ups estimates chance more steadily than the single next song.  A
candidate is reported only if its score is at least ``min_aligned`` and at least
``min_aligned_share`` × the number of query hashes (long queries pile up larger chance
scores), AND at least ``margin_ratio`` × its chance level + ``min_margin``; so an
unknown clip, whose best songs are all alike, returns nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dejavu.config import MatchingConfig


@dataclass(frozen=True)
class Candidate:
    """One aligned song. Counts are numbers of query hashes (each counted once)."""

    song_id: int
    offset: int              # frames, t_db − t_q at the best alignment
    score: int               # query hashes aligned within the tolerance
    hits: int                # query-hash hits on the song at any alignment
    margin: int              # score minus the next candidate song's score


def _vote_counts(query_hashes: np.ndarray, query_offsets: np.ndarray, hit_hashes: np.ndarray,
                 hit_song_ids: np.ndarray, hit_offsets: np.ndarray,
                 max_pairs: int = 500_000) -> tuple[np.ndarray, np.ndarray]:
    """Votes per (song, Δ = t_db − t_q), keyed ``song << 32 | (Δ + 2^31)``, sorted by key.

    Every stored row is paired with every query offset of its hash; the pairs are
    counted ``max_pairs`` at a time and merged, so memory stays bounded by the number
    of distinct (song, Δ) keys even when a long, repetitive query meets itself.
    """
    order = np.argsort(query_hashes, kind="stable")
    qh, qo = query_hashes[order], query_offsets[order].astype(np.int64)
    left = np.searchsorted(qh, hit_hashes, side="left")
    count = np.searchsorted(qh, hit_hashes, side="right") - left
    ends = np.cumsum(count)  # pairs up to and including each stored row
    keys: list[np.ndarray] = []
    votes: list[np.ndarray] = []
    start = 0
    while start < hit_hashes.size:
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + max_pairs, side="right")))
        c = count[start:stop]
        rows = np.repeat(np.arange(start, stop), c)
        local_start = np.cumsum(c) - c  # first pair of each row within this chunk
        qidx = np.repeat(left[start:stop] - local_start, c) + np.arange(rows.size)
        delta = hit_offsets[rows].astype(np.int64) - qo[qidx]
        k, v = np.unique((hit_song_ids[rows].astype(np.int64) << 32) | (delta + (1 << 31)), return_counts=True)
        keys.append(k)
        votes.append(v)
        if sum(a.size for a in keys) > max_pairs:  # merge to keep memory bounded
            merged = _merge(keys, votes)
            keys, votes = [merged[0]], [merged[1]]
        start = stop
    if not keys:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return _merge(keys, votes)


def _merge(keys: list[np.ndarray], votes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sum vote counts of equal keys across pieces; returns sorted unique keys and their counts."""
    k = np.concatenate(keys)
    uk, inv = np.unique(k, return_inverse=True)
    return uk, np.bincount(inv.reshape(-1), weights=np.concatenate(votes), minlength=uk.size).astype(np.int64)


def song_scores(query_hashes: np.ndarray, query_offsets: np.ndarray, hit_hashes: np.ndarray,
                hit_song_ids: np.ndarray, hit_offsets: np.ndarray,
                tolerance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per song with hits, ascending by id: (song ids, best score, hits, offset of the best).

    The score of an offset Δ is the votes within ±``tolerance`` frames of it; a song's
    best is its highest score (the first, lowest Δ, on ties); hits count all its votes.
    Shapes (s,), int64; offsets in frames (t_db − t_q).
    """
    empty = np.zeros(0, dtype=np.int64)
    if hit_hashes.size == 0 or query_hashes.size == 0:
        return empty, empty, empty, empty
    ukey, votes = _vote_counts(query_hashes, query_offsets, hit_hashes, hit_song_ids, hit_offsets)
    if ukey.size == 0:
        return empty, empty, empty, empty
    window = votes.copy()
    for shift in range(1, tolerance + 1):
        for sign in (-1, 1):
            pos = np.searchsorted(ukey, ukey + sign * shift)
            pos_c = np.minimum(pos, ukey.size - 1)
            found = (pos < ukey.size) & (ukey[pos_c] == ukey + sign * shift)
            window += np.where(found, votes[pos_c], 0)
    usong = ukey >> 32
    song_start = np.r_[0, np.flatnonzero(np.diff(usong)) + 1]
    best = np.maximum.reduceat(window, song_start)
    hits = np.add.reduceat(votes, song_start)
    # Index of the (first) best window per song.
    is_best = window == np.repeat(best, np.diff(np.r_[song_start, ukey.size]))
    first_best = np.maximum.reduceat(np.where(is_best, -np.arange(ukey.size), -ukey.size), song_start) * -1
    offsets = (ukey[first_best] & 0xFFFFFFFF) - (1 << 31)
    return usong[song_start], best, hits, offsets


def align(query_hashes: np.ndarray, query_offsets: np.ndarray, hit_hashes: np.ndarray,
          hit_song_ids: np.ndarray, hit_offsets: np.ndarray, cfg: MatchingConfig) -> list[Candidate]:
    """Align stored hits with the query and return the convincing candidates, best first.

    Parameters
    ----------
    query_hashes, query_offsets : np.ndarray [shape=(q,)], the query's (hash, frame) pairs
    hit_hashes, hit_song_ids, hit_offsets : np.ndarray [shape=(r,)], stored rows whose
        hash occurs in the query
    cfg : matching parameters

    Returns at most ``cfg.topn`` candidates that pass the no-match decision.
    """
    songs, best, hits, offsets = song_scores(query_hashes, query_offsets, hit_hashes, hit_song_ids,
                                             hit_offsets, cfg.offset_tolerance)
    floor = max(cfg.min_aligned, cfg.min_aligned_share * query_hashes.size)
    ranked = np.argsort(-best, kind="stable")[: cfg.topn + cfg.chance_songs]
    candidates = []
    for k, i in enumerate(ranked[: cfg.topn]):
        score = int(best[i])
        runner_up = int(best[ranked[k + 1]]) if k + 1 < ranked.size else 0
        chance = best[ranked[k + 1: k + 1 + cfg.chance_songs]].sum() / cfg.chance_songs
        if score < floor or score < cfg.margin_ratio * chance + cfg.min_margin:
            break  # this one and every weaker one are not convincing
        candidates.append(Candidate(int(songs[i]), int(offsets[i]), score, int(hits[i]), score - runner_up))
    return candidates

"""Match: stored hash hits → per-song offset alignment → scored results, or no match.

A query's hashes are looked up in the store; every hit (song s, stored offset t_db)
of a query hash at query offset t_q votes for the alignment d = t_db − t_q of song s.
A true match piles its votes onto one d; chance hits spread over the whole song.

Score: the votes within ±``offset_tolerance`` frames of the best d (tolerates the
frame jitter of resampled or re-encoded audio).

No-match decision: under chance, a song's ``m`` hits fall uniformly on its ``D``
possible alignments, so a window of ``w`` alignments gets Poisson(λ = m·w/D) votes.
The probability that any window of any candidate song reaches the best score by
chance is bounded by ``n_songs · D/w · P(Poisson(λ) ≥ score)`` (Chernoff bound on the
tail).  A result is reported only if that bound is below ``max_false_alarm`` and the
score is at least ``min_aligned``.
"""
from __future__ import annotations

import math
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
    false_alarm: float       # bound on the chance of this score being random


def _chance_log_tail(score: int, lam: float) -> float:
    """log P(Poisson(lam) ≥ score), Chernoff bound (exact 0 when score ≤ lam)."""
    if score <= lam:
        return 0.0
    lam = max(lam, 1e-12)
    return -lam + score * (1.0 + math.log(lam) - math.log(score))


def align(query_hashes: np.ndarray, query_offsets: np.ndarray, hit_hashes: np.ndarray,
          hit_song_ids: np.ndarray, hit_offsets: np.ndarray, song_frames: dict[int, int],
          query_frames: int, n_songs: int, cfg: MatchingConfig) -> list[Candidate]:
    """Align stored hits with the query and return the convincing candidates, best first.

    Parameters
    ----------
    query_hashes, query_offsets : np.ndarray [shape=(q,)], the query's (hash, frame) pairs
    hit_hashes, hit_song_ids, hit_offsets : np.ndarray [shape=(r,)], stored rows whose
        hash occurs in the query
    song_frames : song_id → song length in frames (for the chance model)
    query_frames : length of the query in frames
    n_songs : number of songs in the store (for the multiple-comparison bound)
    cfg : matching parameters

    Returns at most ``cfg.topn`` candidates that pass the no-match decision.
    """
    if hit_hashes.size == 0 or query_hashes.size == 0:
        return []
    # Expand every stored row against every query offset of its hash.
    order = np.argsort(query_hashes, kind="stable")
    qh, qo = query_hashes[order], query_offsets[order]
    left = np.searchsorted(qh, hit_hashes, side="left")
    count = np.searchsorted(qh, hit_hashes, side="right") - left
    rows = np.repeat(np.arange(hit_hashes.size), count)
    qidx = np.repeat(left - np.cumsum(count) + count, count) + np.arange(rows.size)
    songs = hit_song_ids[rows].astype(np.int64)
    delta = hit_offsets[rows].astype(np.int64) - qo[qidx].astype(np.int64)
    # Count votes per (song, delta); then per song, the best window of width 2·tol+1.
    key = (songs << 32) | (delta + (1 << 31))
    ukey, votes = np.unique(key, return_counts=True)
    tol = cfg.offset_tolerance
    window = votes.copy()
    for shift in range(1, tol + 1):
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
    width = 2 * tol + 1
    candidates = []
    for i in np.argsort(-best, kind="stable")[: max(cfg.topn * 4, 8)]:
        song_id = int(usong[song_start[i]])
        score = int(best[i])
        span = max(song_frames.get(song_id, 0), 1) + query_frames
        lam = float(hits[i]) * width / span
        log_fa = math.log(max(n_songs, 1) * max(span / width, 1.0)) + _chance_log_tail(score, lam)
        false_alarm = math.exp(min(log_fa, 0.0))
        if score >= cfg.min_aligned and false_alarm <= cfg.max_false_alarm:
            offset = int((ukey[first_best[i]] & 0xFFFFFFFF) - (1 << 31))
            candidates.append(Candidate(song_id, offset, score, int(hits[i]), false_alarm))
    candidates.sort(key=lambda c: (-c.score, c.song_id))
    return candidates[: cfg.topn]

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
unknown clip, whose best songs are all alike, returns nothing.  That rule is
:func:`accepts`, one pure function that the calibration bench measures too.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

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
                 max_pairs: int = 4_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Votes per (song, Δ = t_db − t_q), keyed ``song << 32 | (Δ + 2^31)``, sorted by key.

    Every stored row is paired with every query offset of its hash.  The rows are
    taken a run of hashes at a time, about ``max_pairs`` pairs per run (a hash's rows
    stay in one run); each run's keys are sorted and counted, and the runs merged, so
    memory stays bounded even when a long, repetitive query meets itself.
    """
    starts = _runs(hit_hashes)
    if np.unique(hit_hashes[starts]).size < starts.size:  # a hash's rows are not all together
        by_hash = np.argsort(hit_hashes, kind="stable")
        hit_hashes, hit_song_ids, hit_offsets = hit_hashes[by_hash], hit_song_ids[by_hash], hit_offsets[by_hash]
        starts = _runs(hit_hashes)
    order = np.argsort(query_hashes, kind="stable")
    qh, qo = query_hashes[order], query_offsets[order].astype(np.int64)
    # Rows come in runs of one hash: the query offsets of a run are qo[left:left + m].
    sizes = np.diff(np.r_[starts, hit_hashes.size])
    left = np.searchsorted(qh, hit_hashes[starts], side="left")
    m = np.searchsorted(qh, hit_hashes[starts], side="right") - left
    base = (hit_song_ids.astype(np.int64) << 32) + hit_offsets.astype(np.int64) + (1 << 31)
    ends = np.cumsum(sizes * m)  # pairs up to and including each run
    keys: list[np.ndarray] = []
    votes: list[np.ndarray] = []
    g = 0
    while g < starts.size:
        stop = max(g + 1, int(np.searchsorted(ends, (ends[g - 1] if g else 0) + max_pairs, side="right")))
        k, v = _count(_keys(base[starts[g]:starts[g] + sizes[g:stop].sum()], sizes[g:stop], qo, left[g:stop],
                            m[g:stop]))
        keys.append(k)
        votes.append(v)
        if len(keys) > 1 and sum(a.size for a in keys) > max_pairs:  # merge to keep memory bounded
            merged = _merge(keys, votes)
            keys, votes = [merged[0]], [merged[1]]
        g = stop
    if not keys:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return (keys[0], votes[0]) if len(keys) == 1 else _merge(keys, votes)


def _runs(values: np.ndarray) -> np.ndarray:
    """Indices where a run of equal values starts."""
    return np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if values.size else np.zeros(0, dtype=np.int64)


def _keys(base: np.ndarray, sizes: np.ndarray, qo: np.ndarray, left: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Vote keys of runs of rows: ``base`` (song << 32 | t_db + 2^31) of each row minus
    each query offset of its run; the j-th offsets of all runs at a time (most runs have one)."""
    row_m = np.repeat(m, sizes)
    pieces = []
    for j in range(int(m.max(initial=0))):
        more = m > j
        rows = base if more.all() else base[row_m > j]
        pieces.append(rows - np.repeat(qo[left[more] + j], sizes[more]))
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces) if pieces else base[:0]


def _count(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys, sorted, and how often each occurs."""
    keys = np.sort(keys)
    first = _runs(keys)
    return keys[first], np.diff(np.r_[first, keys.size])


def _merge(keys: list[np.ndarray], votes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sum vote counts of equal keys across pieces; returns sorted unique keys and their counts."""
    k, v = np.concatenate(keys), np.concatenate(votes)
    order = np.argsort(k, kind="stable")
    k, v = k[order], v[order]
    first = _runs(k)
    return k[first], np.add.reduceat(v, first)


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
    n = ukey.size
    window = votes.copy()
    for shift in range(1, tolerance + 1):
        for j in range(1, shift + 1):  # keys are distinct and sorted: key + shift is at most shift places on
            near = ukey[j:] == ukey[:-j] + shift
            window[:-j] += np.where(near, votes[j:], 0)
            window[j:] += np.where(near, votes[:-j], 0)
    usong = ukey >> 32
    song_start = _runs(usong)
    best = np.maximum.reduceat(window, song_start)
    hits = np.add.reduceat(votes, song_start)
    # Index of the (first) best window per song.
    is_best = window == np.repeat(best, np.diff(np.r_[song_start, n]))
    first_best = np.minimum.reduceat(np.where(is_best, np.arange(n), n), song_start)
    offsets = (ukey[first_best] & 0xFFFFFFFF) - (1 << 31)
    return usong[song_start], best, hits, offsets


def accepts(ranked: np.ndarray, query_hashes: int | np.ndarray, rule: MatchingConfig) -> np.ndarray:
    """The no-match rule: does the first of ``ranked`` stand convincingly above chance?

    Parameters
    ----------
    ranked : np.ndarray [shape=(..., k)], best-window scores of one query's songs sorted
        descending (songs beyond the last count 0)
    query_hashes : number of hashes of each query, shape (...,) or a scalar
    rule : the thresholds

    Returns a bool array of shape (...,): the first score is at least ``min_aligned``
    and ``min_aligned_share`` × ``query_hashes``, and at least ``margin_ratio`` × the
    chance level (the mean of the next ``chance_songs`` scores) + ``min_margin``.
    """
    ranked = np.asarray(ranked, dtype=np.float64)
    top = ranked[..., 0]
    chance = ranked[..., 1:1 + rule.chance_songs].sum(axis=-1) / rule.chance_songs
    floor = np.maximum(rule.min_aligned, rule.min_aligned_share * np.asarray(query_hashes, dtype=np.float64))
    return (top >= floor) & (top >= rule.margin_ratio * chance + rule.min_margin)


def stricter(rule: MatchingConfig) -> MatchingConfig:
    """The no-match rule for an extra try (a speed-corrected query, a quick first pass):
    doubled ``min_aligned`` and 1.5 × ``margin_ratio``, since each try is another chance
    for a random match."""
    return replace(rule, min_aligned=2 * rule.min_aligned, margin_ratio=1.5 * rule.margin_ratio)


def align(query_hashes: np.ndarray, query_offsets: np.ndarray, hit_hashes: np.ndarray,
          hit_song_ids: np.ndarray, hit_offsets: np.ndarray, cfg: MatchingConfig) -> list[Candidate]:
    """Align stored hits with the query and return the convincing candidates, best first.

    Parameters
    ----------
    query_hashes, query_offsets : np.ndarray [shape=(q,)], the query's (hash, frame) pairs
    hit_hashes, hit_song_ids, hit_offsets : np.ndarray [shape=(r,)], stored rows whose
        hash occurs in the query
    cfg : matching parameters

    Returns at most ``cfg.topn`` candidates that pass :func:`accepts`.  Equal scores are
    ranked by hits at any alignment, then by song id: a clip of the part a truncated copy
    (a stub) shares with the whole song aligns the same hashes on both, and the whole song,
    whose other rows meet more of the query's hashes by chance, comes first.
    """
    songs, best, hits, offsets = song_scores(query_hashes, query_offsets, hit_hashes, hit_song_ids,
                                             hit_offsets, cfg.offset_tolerance)
    ranked = np.lexsort((-hits, -best))[: cfg.topn + cfg.chance_songs]  # stable: song id last
    scores = best[ranked]
    candidates = []
    for k, i in enumerate(ranked[: cfg.topn]):
        if not accepts(scores[k:], query_hashes.size, cfg):
            break  # this one and every weaker one are not convincing
        runner_up = int(scores[k + 1]) if k + 1 < scores.size else 0
        candidates.append(Candidate(int(songs[i]), int(offsets[i]), int(scores[k]), int(hits[i]),
                                    int(scores[k]) - runner_up))
    return candidates

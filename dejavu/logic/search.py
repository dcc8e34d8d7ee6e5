"""Search: a query's hashes → the store → aligned candidates (rare keys first, rescoring, speed search).

:func:`recognize_samples` is the whole of recognizing audio in memory: resample,
fingerprint, :func:`match_hashes` (the query's rarest keys first, under a row budget,
then the candidate songs with every key), results; a query that matches nothing as
recorded is tried again undoing playback-speed changes, under the same budget.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from dejavu.config import Config, MatchingConfig
from dejavu.logic.fingerprint import fingerprint
from dejavu.logic.matching import Candidate, align, song_scores, stricter
from dejavu.logic.resample import resample, stretch
from dejavu.logic.results import build_results, recognition
from dejavu.logic.store import Hits, Store

#: Rare-first search: the query's distinct keys are looked up rarest first (rows per key
#: from Store.count_matches), in stages that read about FIRST_ROWS stored rows, then
#: ROWS_GROWTH times more each, up to ``matching.row_budget``.  A clean clip is settled by
#: its rare keys in the first stage (a song's keys are rare in other songs) ...
FIRST_ROWS = 4_000
ROWS_GROWTH = 8


def match_hashes(store: Store, hashes: np.ndarray, offsets: np.ndarray, rule: MatchingConfig,
                 ) -> tuple[list[Candidate], float, float]:
    """Look the query's hashes up, rarest keys first, and align them: (candidates, lookup s, align s).

    Each stage adds the next rarest keys within its row budget and aligns the query hashes
    of every key read so far.  A stage that has not read every key must pass the
    :func:`~dejavu.logic.matching.stricter` rule; the songs it finds are then scored again
    with all of ``hashes`` (reading only those songs' rows), so their scores and offsets
    are those of a full lookup.  The last stage reads every key (``rule`` as given: exactly
    a full lookup) or, when the keys find more than ``rule.row_budget`` rows, the rarest
    keys within it (``rule`` as given, on those keys): what one query reads is bounded.
    """
    t0 = time.perf_counter()
    wanted = np.unique(hashes)
    counts = store.count_matches(wanted)
    present = np.argsort(counts, kind="stable")
    present = present[counts[present] > 0]          # indices into wanted, rarest first
    reach = np.cumsum(counts[present])
    total = int(reach[-1]) if reach.size else 0
    limit = min(total, rule.row_budget) if rule.row_budget else total
    found: list[Hits] = [(wanted[:0],) * 3]
    taken = 0
    budget = FIRST_ROWS if rule.quick_pass else limit
    lookup, aligning = time.perf_counter() - t0, 0.0
    while True:
        final = budget >= limit
        t0 = time.perf_counter()
        n = present.size if final and limit == total else \
            max(taken + 1, int(np.searchsorted(reach, min(budget, limit), side="right")))
        found.append(store.return_matches(np.sort(wanted[present[taken:n]])))
        taken = min(n, present.size)
        complete = taken == present.size
        t1 = time.perf_counter()
        lookup += t1 - t0
        hits = [np.concatenate(column) for column in zip(*found)]
        if complete:
            stage_hashes, stage_offsets = hashes, offsets
        else:
            inside = np.isin(hashes, wanted[present[:taken]])
            stage_hashes, stage_offsets = hashes[inside], offsets[inside]
        candidates = align(stage_hashes, stage_offsets, *hits, rule if final else stricter(rule))
        aligning += time.perf_counter() - t1
        if candidates and not complete:
            t0 = time.perf_counter()
            songs = [c.song_id for c in candidates]
            mine = np.isin(hits[1], songs)
            rest = np.delete(wanted, present[:taken])
            more = store.return_matches(rest, song_ids=songs)
            t1 = time.perf_counter()
            candidates = _rescored(candidates, hashes, offsets, [np.concatenate([a[mine], b])
                                                                for a, b in zip(hits, more)], rule)
            lookup, aligning = lookup + t1 - t0, aligning + time.perf_counter() - t1
        if candidates or final:
            return candidates, lookup, aligning
        budget *= ROWS_GROWTH


def _rescored(candidates: list[Candidate], hashes: np.ndarray, offsets: np.ndarray, hits: list[np.ndarray],
              rule: MatchingConfig) -> list[Candidate]:
    """The candidates with score, hits and offset from all query hashes (``hits``: every
    row of the candidates' songs for them), best first."""
    songs, best, total, shift = song_scores(hashes, offsets, *hits, rule.offset_tolerance)
    at = np.searchsorted(songs, [c.song_id for c in candidates])
    rescored = [replace(c, score=int(best[i]), hits=int(total[i]), offset=int(shift[i])) for c, i in zip(candidates, at)]
    return sorted(rescored, key=lambda c: -c.score)


def rank_songs(store: Store, config: Config, hashes: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(song ids, best-window scores) of every song with hits, best first, from a full
    lookup of the query's (hashes, offsets): what the no-match rule judges."""
    songs, best, _, _ = song_scores(hashes, offsets, *store.return_matches(hashes),
                                    config.matching.offset_tolerance)
    order = np.argsort(-best, kind="stable")
    return songs[order], best[order]


def recognize_samples(store: Store, config: Config, samples: np.ndarray, sample_rate: int,
                      as_recorded: bool = True) -> dict[str, Any]:
    """Recognize float mono audio, shape (n,) at ``sample_rate`` Hz.

    With ``matching.speed_search``, a query that matches nothing as recorded is tried
    again undoing playback-speed changes (``speed_factors``); those tries must pass a
    doubled ``min_aligned`` and 1.5 × ``margin_ratio``, since each try is another chance
    for a random match.  ``as_recorded=False`` skips the unstretched try (the caller
    has made it already).

    Returns the original's result dict: ``total_time``, ``fingerprint_time``,
    ``query_time``, ``align_time`` (seconds) and ``results`` (best first; empty when
    nothing is convincingly better than chance).
    """
    fp, mc = config.fingerprint, config.matching
    t_fp = t_query = t_align = 0.0
    start = time.perf_counter()
    x = resample(samples, sample_rate, fp.sample_rate)
    # Stretch factors to try: as recorded, then (if nothing matched) speed-corrected.
    factors = ((1.0,) if as_recorded else ()) + (tuple(mc.speed_factors) if mc.speed_search else ())
    candidates: list[Candidate] = []
    total_hashes = 0
    for factor in factors:
        t0 = time.perf_counter()
        y = x if factor == 1.0 else stretch(x, factor)
        hashes, offsets = fingerprint(y, fp, query=True)
        t1 = time.perf_counter()
        if factor == 1.0 or not total_hashes:
            total_hashes = int(hashes.size)
        candidates, dt_query, dt_align = match_hashes(store, hashes, offsets,
                                                      mc if factor == 1.0 else stricter(mc))
        t_fp, t_query, t_align = t_fp + t1 - t0, t_query + dt_query, t_align + dt_align
        if candidates or hashes.size == 0:
            break
    results = build_results(store, config, candidates, total_hashes, x.size / fp.sample_rate)
    t_align += time.perf_counter() - start - t_fp - t_query - t_align
    return recognition(t_fp, t_query, t_align, results)

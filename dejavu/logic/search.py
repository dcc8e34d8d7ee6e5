"""Search: a query's hashes → the store → aligned candidates (rare keys first, rescoring, speed search).

:func:`recognize_samples` is the whole of recognizing audio in memory: resample,
fingerprint, :func:`match_hashes` (the query's rarest keys first, under a row budget,
then the candidate songs with every key), results; a query that matches nothing as
recorded is tried again undoing playback-speed changes, under the same budget.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from dejavu.config import Config, MatchingConfig
from dejavu.logic.fingerprint import Hashes, fingerprint
from dejavu.logic.matching import Candidate, align, song_scores, stricter
from dejavu.logic.resample import resample, stretch
from dejavu.logic.results import SPEED_FACTOR, build_results, recognition
from dejavu.logic.store import Hits, Store

#: Songs the rarest keys nominate when a query's keys find more than :data:`FULL_LOOKUP_ROWS`
#: rows; each is then scored with every query key.  Enough for the best song and, behind it,
#: the runner-ups whose scores set the chance level of the no-match rule.
CANDIDATE_SONGS = 32
#: A query whose keys find at most this many stored rows reads and aligns them all: cheaper
#: than nominating and verifying (measured at 1,000 songs, where a 5 s clip finds ~80,000).
FULL_LOOKUP_ROWS = 50_000


def query_hits(store: Store, hashes: np.ndarray, offsets: np.ndarray, rule: MatchingConfig,
               quick: Hashes | None = None) -> tuple[Hits, float, float]:
    """The stored rows a query is judged on: (rows, lookup s, nomination s).

    The distinct keys are counted first (:meth:`Store.count_matches`, no rows read).  If
    they find at most :data:`FULL_LOOKUP_ROWS` rows (or ``rule.row_budget`` is 0, or
    ``quick_pass`` is off), every row is read: a full lookup.  Otherwise the rarest
    nominating keys within ``rule.row_budget`` rows are read and aligned; the
    :data:`CANDIDATE_SONGS` best songs there are nominated and only their rows are read,
    for every key.  So what one query reads is bounded, whatever
    the size of the catalogue: common keys, found in many songs, say little about which
    one is playing and cost the most.

    ``quick``: the query's (hashes, offsets) at the stored density, a ninth of ``hashes``
    of which a clean clip aligns about 40 % (against a few % of the denser ones): the
    rarest of their keys nominate the songs, when given.
    """
    t0 = time.perf_counter()
    wanted = np.unique(hashes)
    counts = store.count_matches(wanted)
    present = counts > 0
    total = int(counts.sum())
    budget = rule.row_budget
    if not (rule.quick_pass and budget) or total <= min(budget, FULL_LOOKUP_ROWS):
        return store.return_matches(wanted[present]), time.perf_counter() - t0, 0.0
    nominating, nominating_offsets = quick if quick is not None else (hashes, offsets)
    keys = np.flatnonzero(present & np.isin(wanted, nominating))
    if not keys.size:  # none of the stored-density keys is stored: the denser ones nominate
        nominating, nominating_offsets, keys = hashes, offsets, np.flatnonzero(present)
    order = keys[np.argsort(counts[keys], kind="stable")]
    n = max(1, int(np.searchsorted(np.cumsum(counts[order]), budget, side="right")))
    rare = np.sort(wanted[order[:n]])
    hits = store.return_matches(rare)
    t1 = time.perf_counter()
    inside = np.isin(nominating, rare)
    songs, best, _, _ = song_scores(nominating[inside], nominating_offsets[inside], *hits, rule.offset_tolerance)
    nominated = np.sort(songs[np.argsort(-best, kind="stable")[:CANDIDATE_SONGS]])
    t2 = time.perf_counter()
    verified = store.return_matches(wanted[present], song_ids=nominated.tolist())
    return verified, (t1 - t0) + (time.perf_counter() - t2), t2 - t1


def match_hashes(store: Store, hashes: np.ndarray, offsets: np.ndarray, rule: MatchingConfig,
                 quick: Hashes | None = None) -> tuple[list[Candidate], float, float]:
    """Look the query's hashes up (:func:`query_hits`) and align them with ``rule``:
    (candidates, lookup s, align s)."""
    hits, t_lookup, t_nominate = query_hits(store, hashes, offsets, rule, quick)
    t0 = time.perf_counter()
    return align(hashes, offsets, *hits, rule), t_lookup, t_nominate + time.perf_counter() - t0


def rank_songs(store: Store, config: Config, hashes: np.ndarray, offsets: np.ndarray,
               quick: Hashes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(song ids, best-window scores) of every song with hits, best first: what the no-match
    rule judges, from the rows :func:`query_hits` reads for the query (hashes, offsets) and
    its stored-density ``quick`` hashes (as recognition does)."""
    hits, _, _ = query_hits(store, hashes, offsets, config.matching, quick)
    songs, best, _, _ = song_scores(hashes, offsets, *hits, config.matching.offset_tolerance)
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
    nothing is convincingly better than chance); results of a speed-corrected try also
    carry ``speed_factor`` (:data:`~dejavu.logic.results.SPEED_FACTOR`).
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
        quick = fingerprint(y, fp) if mc.quick_pass else None
        t1 = time.perf_counter()
        if factor == 1.0 or not total_hashes:
            total_hashes = int(hashes.size)
        candidates, dt_query, dt_align = match_hashes(store, hashes, offsets,
                                                      mc if factor == 1.0 else stricter(mc), quick)
        t_fp, t_query, t_align = t_fp + t1 - t0, t_query + dt_query, t_align + dt_align
        if candidates or hashes.size == 0:
            break
    results = build_results(store, config, candidates, total_hashes, x.size / fp.sample_rate)
    if candidates and factor != 1.0:
        for result in results:
            result[SPEED_FACTOR] = factor
    t_align += time.perf_counter() - start - t_fp - t_query - t_align
    return recognition(t_fp, t_query, t_align, results)

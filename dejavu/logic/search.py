"""Search: a query's hashes → the store → aligned candidates (quick pass, rescoring, speed search).

:func:`recognize_samples` is the whole of recognizing audio in memory: resample,
fingerprint, :func:`match_hashes` (a quick pass over a sample of the query's
stored-density hashes, then every hash if needed), results; a query that matches
nothing as recorded is tried again undoing playback-speed changes.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from dejavu.config import Config, MatchingConfig
from dejavu.logic.fingerprint import Hashes, fingerprint
from dejavu.logic.matching import Candidate, align, song_scores, stricter
from dejavu.logic.resample import resample, stretch
from dejavu.logic.results import build_results, recognition
from dejavu.logic.store import Hits, Store

#: The quick pass starts with a sample of about this many stored-density hashes (those
#: whose key, mixed by a multiplicative hash, is divisible by some d: a uniform sample
#: whatever the key layout).  A clean query aligns about 40 % of them, well above the
#: stricter rule's 24.
QUICK_SAMPLE = 100
_MIX = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: spreads nearby keys apart
#: ... unless the store returns fewer rows than this per hash of the first stage: then
#: rescoring (an index seek per query hash, ~3 µs on SQLite) would cost more than
#: fetching every row (~0.3 µs each).  Sampled hashes find about 4x the rows of an
#: average query hash (80 per hash at 100 songs, 700 at 1,000): break-even is near 50 songs.
QUICK_MIN_ROWS = 40


def _stages(quick: Hashes | None) -> list[Hashes]:
    """The quick pass's stages: a sample of about QUICK_SAMPLE hashes if there are at
    least twice as many, then all of them."""
    if quick is None or not quick[0].size:
        return []
    every = quick[0].size // QUICK_SAMPLE
    sample = (quick[0].view(np.uint64) * _MIX >> np.uint64(32)) % np.uint64(every) == 0 if every > 1 else None
    return ([(quick[0][sample], quick[1][sample])] if sample is not None else []) + [quick]


def match_hashes(store: Store, hashes: np.ndarray, offsets: np.ndarray, rule: MatchingConfig,
                 quick: Hashes | None = None) -> tuple[list[Candidate], float, float]:
    """Look the query's hashes up and align them: (candidates, lookup s, align s).

    ``quick`` are the query's (hashes, offsets) at the stored density, a subset of about
    a ninth of ``hashes``.  A clean query is recognized by a share of them, so they are
    looked up first, in the stages of :func:`_stages`; when the hashes of a stage pass
    the :func:`~dejavu.logic.matching.stricter` rule, the songs found are scored again
    with all of ``hashes`` (looking up only those songs' rows), so their scores and
    offsets are those a full lookup gives.  Otherwise the rest of ``hashes`` is looked
    up and all are aligned, exactly as without ``quick``.
    """
    lookup = aligning = 0.0
    found: list[Hits] = []
    fetched = hashes[:0]
    stages = _stages(quick) + [(hashes, offsets)]
    k = 0
    while True:
        stage_hashes, stage_offsets = stages[k]
        final = k == len(stages) - 1
        t0 = time.perf_counter()
        wanted = np.setdiff1d(stage_hashes, fetched)  # distinct, sorted
        found.append(store.return_matches(wanted))
        fetched = np.concatenate([fetched, wanted])
        t1 = time.perf_counter()
        lookup += t1 - t0
        if not final and found[-1][0].size < QUICK_MIN_ROWS * wanted.size:
            k = len(stages) - 1  # a small store: looking everything up costs less than rescoring
            continue
        # Each hash's rows came from one lookup, together: align needs no sorting.
        hits = [np.concatenate(column) for column in zip(*found)]
        candidates = align(stage_hashes, stage_offsets, *hits, rule if final else stricter(rule))
        aligning += time.perf_counter() - t1
        if candidates and not final:
            t0 = time.perf_counter()
            songs = [c.song_id for c in candidates]
            mine = np.isin(hits[1], songs)
            more = store.return_matches(np.setdiff1d(hashes, fetched), song_ids=songs)
            t1 = time.perf_counter()
            candidates = _rescored(candidates, hashes, offsets, [np.concatenate([a[mine], b])
                                                                for a, b in zip(hits, more)], rule)
            lookup, aligning = lookup + t1 - t0, aligning + time.perf_counter() - t1
        if candidates or final:
            return candidates, lookup, aligning
        k += 1


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
    t_align += time.perf_counter() - start - t_fp - t_query - t_align
    return recognition(t_fp, t_query, t_align, results)

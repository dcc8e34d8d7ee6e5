"""Recognition of in-memory audio: resample → fingerprint → look up → align → results."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from dejavu.logic.decoder import resample, stretch, to_mono_float
from dejavu.logic.fingerprint import Hashes, fingerprint
from dejavu.config import MatchingConfig
from dejavu.database.base import Hits
from dejavu.logic.matching import Candidate, align, song_scores

if TYPE_CHECKING:
    from dejavu import Dejavu

# Result keys (the original's names).
SONG_ID, SONG_NAME, RESULTS = "song_id", "song_name", "results"
INPUT_HASHES, FINGERPRINTED_HASHES = "input_total_hashes", "fingerprinted_hashes_in_db"
HASHES_MATCHED, INPUT_CONFIDENCE = "hashes_matched_in_input", "input_confidence"
FINGERPRINTED_CONFIDENCE, OFFSET, OFFSET_SECS = "fingerprinted_confidence", "offset", "offset_seconds"
FIELD_FILE_SHA1 = "file_sha1"
TOTAL_TIME, FINGERPRINT_TIME, QUERY_TIME, ALIGN_TIME = "total_time", "fingerprint_time", "query_time", "align_time"


def stricter(rule: MatchingConfig) -> MatchingConfig:
    """The no-match rule for an extra try (a speed-corrected query, a quick first pass):
    doubled ``min_aligned`` and 1.5 × ``margin_ratio``, since each try is another chance
    for a random match."""
    return replace(rule, min_aligned=2 * rule.min_aligned, margin_ratio=1.5 * rule.margin_ratio)


#: The quick pass starts with a sample of about this many stored-density hashes (those
#: divisible by some d: hashes are SHA1 bits, so that is a uniform sample).  A clean
#: query aligns about 40 % of them, well above the stricter rule's 24.
QUICK_SAMPLE = 100
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
    sample = quick[0] % every == 0 if every > 1 else None
    return ([(quick[0][sample], quick[1][sample])] if sample is not None else []) + [quick]


def match_hashes(djv: "Dejavu", hashes: np.ndarray, offsets: np.ndarray, rule: MatchingConfig,
                 quick: Hashes | None = None) -> tuple[list[Candidate], float, float]:
    """Look the query's hashes up and align them: (candidates, lookup s, align s).

    ``quick`` are the query's (hashes, offsets) at the stored density, a subset of about
    a ninth of ``hashes``.  A clean query is recognized by a share of them, so they are
    looked up first, in the stages of :func:`_stages`; when the hashes of a stage pass
    the :func:`stricter` rule, the songs found are scored again with all of ``hashes``
    (looking up only those songs' rows), so their scores and offsets are those a full
    lookup gives.  Otherwise the rest of ``hashes`` is looked up and all are aligned,
    exactly as without ``quick``.
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
        found.append(djv.db.return_matches(wanted))
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
            more = djv.db.return_matches(np.setdiff1d(hashes, fetched), song_ids=songs)
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


def build_results(djv: "Dejavu", candidates: list[Candidate], input_hashes: int,
                  query_seconds: float) -> list[dict[str, Any]]:
    """Result dicts for the candidates whose songs are (still) stored."""
    songs = djv.db.get_songs_by_ids(c.song_id for c in candidates)
    return [_result(c, songs[c.song_id], input_hashes, query_seconds, djv)
            for c in candidates if c.song_id in songs]


def recognize_samples(djv: "Dejavu", samples: np.ndarray, sample_rate: int,
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
    cfg = djv.cfg
    fp, mc = cfg.fingerprint, cfg.matching
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
        candidates, dt_query, dt_align = match_hashes(djv, hashes, offsets,
                                                      mc if factor == 1.0 else stricter(mc), quick)
        t_fp, t_query, t_align = t_fp + t1 - t0, t_query + dt_query, t_align + dt_align
        if candidates or hashes.size == 0:
            break
    results = build_results(djv, candidates, total_hashes, x.size / fp.sample_rate)
    t_align += time.perf_counter() - start - t_fp - t_query - t_align
    return {TOTAL_TIME: t_fp + t_query + t_align, FINGERPRINT_TIME: t_fp, QUERY_TIME: t_query,
            ALIGN_TIME: t_align, RESULTS: results}


def _result(c: Candidate, song: dict[str, Any], input_hashes: int, query_seconds: float,
            djv: "Dejavu") -> dict[str, Any]:
    """One result dict. Confidences are fractions in [0, 1]:

    * input_confidence: aligned matches / hashes the song stores for the stretch of
      song the query covers (1.0 = a clean copy of the song);
    * fingerprinted_confidence: aligned matches / all hashes the song stores (the
      original's meaning: the share of the whole song that was heard).
    """
    fp = djv.cfg.fingerprint
    total = max(int(song["total_hashes"]), 1)
    duration = float(song.get("duration") or 0.0)
    covered = total * min(1.0, query_seconds / duration) if duration > 0 else total
    return {
        SONG_ID: c.song_id,
        SONG_NAME: song["song_name"],
        INPUT_HASHES: input_hashes,
        FINGERPRINTED_HASHES: int(song["total_hashes"]),
        HASHES_MATCHED: c.score,
        INPUT_CONFIDENCE: round(min(1.0, c.score / max(covered, 1.0)), 2),
        FINGERPRINTED_CONFIDENCE: round(min(1.0, c.score / total), 2),
        OFFSET: c.offset,
        OFFSET_SECS: round(c.offset * fp.frame_seconds, 5),
        FIELD_FILE_SHA1: song["file_sha1"],
    }


class BaseRecognizer:
    """A way of getting audio to recognize; subclasses implement ``recognize``."""

    def __init__(self, dejavu: "Dejavu") -> None:
        self.dejavu = dejavu
        self.Fs = dejavu.cfg.fingerprint.sample_rate

    def _recognize(self, *channels: np.ndarray) -> dict[str, Any]:
        """Recognize one or more channels of samples at ``self.Fs`` (mixed to mono)."""
        if not channels:
            return recognize_samples(self.dejavu, np.zeros(0, dtype=np.float32), self.Fs)
        mono = to_mono_float(np.stack([np.asarray(c) for c in channels], axis=1))
        return recognize_samples(self.dejavu, mono, self.Fs)

    def recognize(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError

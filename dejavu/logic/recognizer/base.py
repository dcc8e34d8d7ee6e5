"""Recognition of in-memory audio: resample → fingerprint → look up → align → results."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from dejavu.logic.decoder import resample, stretch, to_mono_float
from dejavu.logic.fingerprint import fingerprint
from dejavu.config import MatchingConfig
from dejavu.logic.matching import Candidate, align

if TYPE_CHECKING:
    from dejavu import Dejavu

# Result keys (the original's names).
SONG_ID, SONG_NAME, RESULTS = "song_id", "song_name", "results"
INPUT_HASHES, FINGERPRINTED_HASHES = "input_total_hashes", "fingerprinted_hashes_in_db"
HASHES_MATCHED, INPUT_CONFIDENCE = "hashes_matched_in_input", "input_confidence"
FINGERPRINTED_CONFIDENCE, OFFSET, OFFSET_SECS = "fingerprinted_confidence", "offset", "offset_seconds"
FIELD_FILE_SHA1 = "file_sha1"
TOTAL_TIME, FINGERPRINT_TIME, QUERY_TIME, ALIGN_TIME = "total_time", "fingerprint_time", "query_time", "align_time"


def match_hashes(djv: "Dejavu", hashes: np.ndarray, offsets: np.ndarray,
                 rule: MatchingConfig) -> tuple[list[Candidate], float, float]:
    """Look the query's hashes up and align them: (candidates, lookup s, align s)."""
    t0 = time.perf_counter()
    hit_h, hit_s, hit_o = djv.db.return_matches(hashes)
    t1 = time.perf_counter()
    candidates = align(hashes, offsets, hit_h, hit_s, hit_o, rule)
    return candidates, t1 - t0, time.perf_counter() - t1


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
    stretched_rule = replace(mc, min_aligned=2 * mc.min_aligned, margin_ratio=1.5 * mc.margin_ratio)
    candidates: list[Candidate] = []
    total_hashes = 0
    for factor in factors:
        t0 = time.perf_counter()
        y = x if factor == 1.0 else stretch(x, factor)
        hashes, offsets = fingerprint(y, fp, query=True)
        t1 = time.perf_counter()
        if factor == 1.0 or not total_hashes:
            total_hashes = int(hashes.size)
        candidates, dt_query, dt_align = match_hashes(djv, hashes, offsets,
                                                      mc if factor == 1.0 else stretched_rule)
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

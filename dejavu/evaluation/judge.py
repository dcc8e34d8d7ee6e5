"""Judging one query: what the recognizer answered for a clip, and whether it was right.

Offsets: a match's offset is correct if ``|offset_seconds − start| ≤ 0.1 s``, with
``start`` the clip's position in the original song (also for speed changes).  Where a
passage repeats inside a song the matcher may legitimately report another copy, so an
offset that misses is still accepted when the song's own audio at the reported offset
matches the audio at the true start: the peak normalized cross-correlation of the
two stretches of the (clean, decoded) reference song, searched over ±0.1 s of lag,
exceeds 0.9.  Only sample-level repeats qualify (loops, copied bars); a passage that
is played again with different expression or mixing does not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dejavu.evaluation.songs import ROLE_DB, ROLE_NEGATIVE

OFFSET_TOLERANCE_S = 0.1
REPEAT_CORRELATION = 0.9


@dataclass
class ClipOutcome:
    """What happened to one query; JSON-ready (one line of ``clips.jsonl``)."""

    song: int                       # Song.index
    key: str
    role: str
    condition: str
    length: float                   # seconds asked
    clip: int                       # index among the song's clips of this length
    start: float                    # seconds into the original song
    true_song_id: int | None
    query_seconds: float = 0.0
    error: str | None = None        # the condition failed (e.g. a silent clip)
    results: int = 0                # number of results returned
    song_id: int | None = None      # first result
    correct: bool | None = None     # database songs: first result is the true song
    false_positive: bool | None = None  # negatives: any result returned
    offset_seconds: float | None = None
    offset_error: float | None = None   # |offset_seconds − start|
    offset_ok: bool | None = None       # within tolerance, or a matching repeat
    offset_repeat: bool = False         # accepted because the audio repeats there
    repeat_correlation: float | None = None  # checked when the offset missed (see repeat_correlation)
    input_confidence: float | None = None
    fingerprinted_confidence: float | None = None
    hashes_matched: int | None = None
    total_time: float | None = None     # seconds, as the recognizer reports ...
    fingerprint_time: float | None = None   # ... of which fingerprinting the query,
    query_time: float | None = None         # database look-up
    align_time: float | None = None         # and offset alignment


def repeat_correlation(reference: np.ndarray, sr: int, true_start: float, reported: float,
                       length: float, max_lag: float = OFFSET_TOLERANCE_S) -> float | None:
    """Peak normalized cross-correlation between ``length`` s of ``reference`` at
    ``true_start`` and at ``reported`` (lags within ± ``max_lag`` s); None when a stretch
    falls outside the song or is silent.  1.0 means the passage repeats exactly."""
    from scipy.signal import correlate

    n = int(round(length * sr))
    a0 = int(round(true_start * sr))
    lag = int(round(max_lag * sr))
    b0 = int(round(reported * sr)) - lag
    if n <= 0 or a0 < 0 or a0 + n > reference.size:
        return None
    b_lo, b_hi = max(0, b0), min(reference.size, b0 + n + 2 * lag)
    if b_hi - b_lo < n:
        return None
    a = reference[a0:a0 + n].astype(np.float64)
    b = reference[b_lo:b_hi].astype(np.float64)
    a_norm = math.sqrt(float(np.dot(a, a)))
    if a_norm == 0.0:
        return None
    dots = correlate(b, a, mode="valid", method="fft")
    energy = np.concatenate(([0.0], np.cumsum(b * b)))
    b_norms = np.sqrt(np.maximum(energy[n:] - energy[:-n], 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(b_norms > 0, dots / (a_norm * b_norms), 0.0)
    return float(np.max(scores)) if scores.size else None


def repeat_matches(reference: np.ndarray, sr: int, true_start: float, reported: float,
                   length: float, max_lag: float = OFFSET_TOLERANCE_S,
                   threshold: float = REPEAT_CORRELATION) -> bool:
    """True if ``reference`` around ``reported`` (± ``max_lag`` s) has the same audio as at
    ``true_start``: :func:`repeat_correlation` > ``threshold``."""
    score = repeat_correlation(reference, sr, true_start, reported, length, max_lag)
    return score is not None and score > threshold


def judge(outcome: ClipOutcome, result: dict[str, Any], reference: np.ndarray, sr: int) -> None:
    """Fill ``outcome`` from a recognizer result dict."""
    from dejavu.logic import results as r

    matches = result.get(r.RESULTS) or []
    outcome.total_time = float(result.get(r.TOTAL_TIME, 0.0))
    for name in (r.FINGERPRINT_TIME, r.QUERY_TIME, r.ALIGN_TIME):
        if name in result:
            setattr(outcome, name, round(float(result[name]), 5))
    outcome.results = len(matches)
    if outcome.role == ROLE_NEGATIVE:
        outcome.false_positive = bool(matches)
    if not matches:
        if outcome.role == ROLE_DB:
            outcome.correct = False
        return
    top = matches[0]
    outcome.song_id = int(top[r.SONG_ID])
    outcome.input_confidence = float(top[r.INPUT_CONFIDENCE])
    outcome.fingerprinted_confidence = float(top[r.FINGERPRINTED_CONFIDENCE])
    outcome.hashes_matched = int(top[r.HASHES_MATCHED])
    outcome.offset_seconds = float(top[r.OFFSET_SECS])
    if outcome.role != ROLE_DB:
        return
    outcome.correct = outcome.song_id == outcome.true_song_id
    if not outcome.correct:
        return
    outcome.offset_error = round(float(abs(outcome.offset_seconds - outcome.start)), 5)
    outcome.offset_ok = bool(outcome.offset_error <= OFFSET_TOLERANCE_S + 1e-9)
    if not outcome.offset_ok:
        score = repeat_correlation(reference, sr, outcome.start, outcome.offset_seconds, outcome.length)
        outcome.repeat_correlation = None if score is None else round(score, 3)
        if score is not None and score > REPEAT_CORRELATION:
            outcome.offset_ok = outcome.offset_repeat = True

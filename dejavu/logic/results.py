"""Results: aligned candidates → the original's result dicts (keys, confidences, timings).

Used alike by the file and microphone recognizers, the monitor, the evaluation and the CLI.
"""
from __future__ import annotations

from typing import Any

from dejavu.config import Config
from dejavu.logic.matching import Candidate
from dejavu.logic.store import Store

# Result keys (the original's names).
SONG_ID, SONG_NAME, RESULTS = "song_id", "song_name", "results"
INPUT_HASHES, FINGERPRINTED_HASHES = "input_total_hashes", "fingerprinted_hashes_in_db"
HASHES_MATCHED, INPUT_CONFIDENCE = "hashes_matched_in_input", "input_confidence"
FINGERPRINTED_CONFIDENCE, OFFSET, OFFSET_SECS = "fingerprinted_confidence", "offset", "offset_seconds"
FIELD_FILE_SHA1 = "file_sha1"
#: Only on a result found by the speed search: the query was stretched by this factor to match,
#: i.e. it plays about this many times as fast as the stored song (1.03: 3 % fast).
SPEED_FACTOR = "speed_factor"
TOTAL_TIME, FINGERPRINT_TIME, QUERY_TIME, ALIGN_TIME = "total_time", "fingerprint_time", "query_time", "align_time"


def input_confidence(matched: int, song: dict[str, Any], seconds: float) -> float:
    """Aligned matches / the hashes ``song`` stores for ``seconds`` of it, in [0, 1]
    (1.0 = a clean copy), rounded to 2 digits."""
    total = max(int(song.get("total_hashes") or 0), 1)
    duration = float(song.get("duration") or 0.0)
    covered = total * min(1.0, seconds / duration) if duration > 0 else total
    return round(min(1.0, matched / max(covered, 1.0)), 2)


def result_dict(c: Candidate, song: dict[str, Any], input_hashes: int, query_seconds: float,
                config: Config) -> dict[str, Any]:
    """One result. Confidences are fractions in [0, 1]:

    * input_confidence: see :func:`input_confidence`;
    * fingerprinted_confidence: aligned matches / all hashes the song stores (the
      original's meaning: the share of the whole song that was heard).
    """
    total = max(int(song["total_hashes"]), 1)
    return {
        SONG_ID: c.song_id,
        SONG_NAME: song["song_name"],
        INPUT_HASHES: input_hashes,
        FINGERPRINTED_HASHES: int(song["total_hashes"]),
        HASHES_MATCHED: c.score,
        INPUT_CONFIDENCE: input_confidence(c.score, song, query_seconds),
        FINGERPRINTED_CONFIDENCE: round(min(1.0, c.score / total), 2),
        OFFSET: c.offset,
        OFFSET_SECS: round(config.fingerprint.frames_to_seconds(c.offset), 5),
        FIELD_FILE_SHA1: song["file_sha1"],
    }


def build_results(store: Store, config: Config, candidates: list[Candidate], input_hashes: int,
                  query_seconds: float) -> list[dict[str, Any]]:
    """Result dicts for the candidates whose songs are (still) stored, in their order."""
    songs = store.get_songs_by_ids(c.song_id for c in candidates)
    return [result_dict(c, songs[c.song_id], input_hashes, query_seconds, config)
            for c in candidates if c.song_id in songs]


def recognition(fingerprint_time: float, query_time: float, align_time: float,
                results: list[dict[str, Any]]) -> dict[str, Any]:
    """The original's answer: timings in seconds (decoding excluded) and ``results``, best first."""
    return {TOTAL_TIME: fingerprint_time + query_time + align_time, FINGERPRINT_TIME: fingerprint_time,
            QUERY_TIME: query_time, ALIGN_TIME: align_time, RESULTS: results}

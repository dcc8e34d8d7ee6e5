"""Recognize audio files (any format ffmpeg reads)."""
from __future__ import annotations

import time
from typing import Any

from dejavu.config import Config
from dejavu.exceptions import DecodeError
from dejavu.logic import decoder
from dejavu.logic.fingerprint import Hashes, StreamFingerprinter, concat
from dejavu.logic.recognizer.base import BaseRecognizer
from dejavu.logic.results import ALIGN_TIME, FINGERPRINT_TIME, INPUT_HASHES, QUERY_TIME, RESULTS, build_results, \
    recognition
from dejavu.logic.search import match_hashes, recognize_samples
from dejavu.logic.store import Store
from dejavu.quoting import quote


def recognize_file(store: Store, config: Config, filename: str) -> dict[str, Any]:
    """Recognize ``filename`` (its first ``fingerprint_limit`` seconds, as the original).

    The file is decoded and fingerprinted block by block, so memory grows with the
    query's hashes (about 10 kB per second of audio), not with its samples; the
    result is the same as for the whole decoded file.  With ``matching.speed_search``
    an unmatched file of at most ``speed_search_max_seconds`` is decoded again whole
    for the speed-corrected tries.  Raises DecodeError naming the file.
    """
    fp, mc = config.fingerprint, config.matching
    fingerprinter = StreamFingerprinter(fp, query=True)
    # The nominating hashes (stored density), see match_hashes.
    quick_fingerprinter = StreamFingerprinter(fp) if mc.quick_pass else None
    parts: list[Hashes] = []
    quick_parts: list[Hashes] = []
    t_fp = 0.0
    for block in decoder.stream(filename, fp.sample_rate, block_seconds=decoder.QUERY_BLOCK_SECONDS,
                                limit=config.fingerprint_limit):
        t0 = time.perf_counter()
        parts.append(fingerprinter.feed(block))
        if quick_fingerprinter is not None:
            quick_parts.append(quick_fingerprinter.feed(block))
        t_fp += time.perf_counter() - t0
    if fingerprinter.total_samples == 0:
        raise DecodeError(f"{quote(filename)}: contains no audio samples")
    t0 = time.perf_counter()
    parts.append(fingerprinter.flush())
    hashes, offsets = concat(parts)
    quick = concat(quick_parts + [quick_fingerprinter.flush()]) if quick_fingerprinter is not None else None
    parts.clear()
    quick_parts.clear()
    t_fp += time.perf_counter() - t0
    candidates, t_query, t_align = match_hashes(store, hashes, offsets, mc, quick)
    seconds = fingerprinter.total_samples / fp.sample_rate
    results = build_results(store, config, candidates, int(hashes.size), seconds)
    if not results and mc.speed_search and hashes.size and seconds <= mc.speed_search_max_seconds:
        retry = recognize_samples(store, config, decoder.decode(filename, fp.sample_rate,
                                                                limit=config.fingerprint_limit),
                                  fp.sample_rate, as_recorded=False)
        t_fp += retry[FINGERPRINT_TIME]
        t_query += retry[QUERY_TIME]
        t_align += retry[ALIGN_TIME]
        results = retry[RESULTS]
        for r in results:
            r[INPUT_HASHES] = int(hashes.size)
    return recognition(t_fp, t_query, t_align, results)


class FileRecognizer(BaseRecognizer):
    """``djv.recognize(FileRecognizer, "clip.mp3")``."""

    def recognize_file(self, filename: str) -> dict[str, Any]:
        """Recognize ``filename``: see :func:`recognize_file`."""
        return recognize_file(self.store, self.config, filename)

    def recognize(self, filename: str) -> dict[str, Any]:
        return self.recognize_file(filename)

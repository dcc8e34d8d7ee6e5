"""Recognize audio files (any format ffmpeg reads)."""
from __future__ import annotations

import time
from typing import Any

from dejavu.exceptions import DecodeError
from dejavu.logic import decoder
from dejavu.logic.fingerprint import Hashes, StreamFingerprinter, concat
from dejavu.logic.recognizer.base import (ALIGN_TIME, FINGERPRINT_TIME, QUERY_TIME, RESULTS, TOTAL_TIME,
                                          BaseRecognizer, build_results, match_hashes, recognize_samples)

#: Seconds of audio decoded and fingerprinted at a time.
BLOCK_SECONDS = 10.0


class FileRecognizer(BaseRecognizer):
    """``djv.recognize(FileRecognizer, "clip.mp3")``."""

    def recognize_file(self, filename: str) -> dict[str, Any]:
        """Recognize ``filename`` (its first ``fingerprint_limit`` seconds, as the original).

        The file is decoded and fingerprinted block by block, so memory grows with the
        query's hashes (about 10 kB per second of audio), not with its samples; the
        result is the same as for the whole decoded file.  With ``matching.speed_search``
        an unmatched file of at most ``speed_search_max_seconds`` is decoded again whole
        for the speed-corrected tries.  Raises DecodeError naming the file.
        """
        djv = self.dejavu
        mc = djv.cfg.matching
        fingerprinter = StreamFingerprinter(djv.cfg.fingerprint, query=True)
        # The quick pass's hashes (stored density), see match_hashes.
        quick_fingerprinter = StreamFingerprinter(djv.cfg.fingerprint) if mc.quick_pass else None
        parts: list[Hashes] = []
        quick_parts: list[Hashes] = []
        t_fp = 0.0
        for block in decoder.stream(filename, self.Fs, block_seconds=BLOCK_SECONDS, limit=djv.limit):
            t0 = time.perf_counter()
            parts.append(fingerprinter.feed(block))
            if quick_fingerprinter is not None:
                quick_parts.append(quick_fingerprinter.feed(block))
            t_fp += time.perf_counter() - t0
        if fingerprinter.total_samples == 0:
            raise DecodeError(f"{filename}: contains no audio samples")
        t0 = time.perf_counter()
        parts.append(fingerprinter.flush())
        hashes, offsets = concat(parts)
        quick = concat(quick_parts + [quick_fingerprinter.flush()]) if quick_fingerprinter is not None else None
        parts.clear()
        quick_parts.clear()
        t_fp += time.perf_counter() - t0
        candidates, t_query, t_align = match_hashes(djv, hashes, offsets, mc, quick)
        seconds = fingerprinter.total_samples / self.Fs
        results = build_results(djv, candidates, int(hashes.size), seconds)
        if not results and mc.speed_search and hashes.size and seconds <= mc.speed_search_max_seconds:
            retry = recognize_samples(djv, decoder.decode(filename, self.Fs, limit=djv.limit), self.Fs,
                                      as_recorded=False)
            t_fp += retry[FINGERPRINT_TIME]
            t_query += retry[QUERY_TIME]
            t_align += retry[ALIGN_TIME]
            results = retry[RESULTS]
            for r in results:
                r["input_total_hashes"] = int(hashes.size)
        return {TOTAL_TIME: t_fp + t_query + t_align, FINGERPRINT_TIME: t_fp, QUERY_TIME: t_query,
                ALIGN_TIME: t_align, RESULTS: results}

    def recognize(self, filename: str) -> dict[str, Any]:
        return self.recognize_file(filename)

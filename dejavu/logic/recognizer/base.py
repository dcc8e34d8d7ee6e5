"""BaseRecognizer: a way of getting audio to recognize (a file, a microphone).

Recognizers keep the original's constructor, ``FileRecognizer(djv)``: they take the
store and the configuration from it (``djv.db``, ``djv.cfg``) and hand those to the
pipeline (:mod:`dejavu.logic.search`); nothing below them sees the facade.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from dejavu.config import Config
from dejavu.logic.decoder import to_mono_float
from dejavu.logic.results import (ALIGN_TIME, FIELD_FILE_SHA1, FINGERPRINT_TIME, FINGERPRINTED_CONFIDENCE,
                                  FINGERPRINTED_HASHES, HASHES_MATCHED, INPUT_CONFIDENCE, INPUT_HASHES, OFFSET,
                                  OFFSET_SECS, QUERY_TIME, RESULTS, SONG_ID, SONG_NAME, TOTAL_TIME)
from dejavu.logic.search import recognize_samples
from dejavu.logic.store import Store

__all__ = ["BaseRecognizer", "Wiring", "ALIGN_TIME", "FIELD_FILE_SHA1", "FINGERPRINT_TIME",
           "FINGERPRINTED_CONFIDENCE", "FINGERPRINTED_HASHES", "HASHES_MATCHED", "INPUT_CONFIDENCE",
           "INPUT_HASHES", "OFFSET", "OFFSET_SECS", "QUERY_TIME", "RESULTS", "SONG_ID", "SONG_NAME", "TOTAL_TIME"]


class Wiring(Protocol):
    """What a recognizer is built from: a store and a configuration (the facade has both)."""

    db: Store
    cfg: Config


class BaseRecognizer:
    """A way of getting audio to recognize; subclasses implement ``recognize``."""

    def __init__(self, dejavu: Wiring) -> None:
        self.dejavu = dejavu          # the original's attribute
        self.store: Store = dejavu.db
        self.config: Config = dejavu.cfg
        self.Fs = self.config.fingerprint.sample_rate

    def _recognize(self, *channels: np.ndarray) -> dict[str, Any]:
        """Recognize one or more channels of samples at ``self.Fs`` (mixed to mono)."""
        if not channels:
            return recognize_samples(self.store, self.config, np.zeros(0, dtype=np.float32), self.Fs)
        mono = to_mono_float(np.stack([np.asarray(c) for c in channels], axis=1))
        return recognize_samples(self.store, self.config, mono, self.Fs)

    def recognize(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        raise NotImplementedError

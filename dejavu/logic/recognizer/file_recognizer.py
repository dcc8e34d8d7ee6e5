"""Recognize audio files (any format ffmpeg reads)."""
from __future__ import annotations

import time
from typing import Any

from dejavu.logic import decoder
from dejavu.logic.recognizer.base import BaseRecognizer, recognize_samples


class FileRecognizer(BaseRecognizer):
    """``djv.recognize(FileRecognizer, "clip.mp3")``."""

    def recognize_file(self, filename: str) -> dict[str, Any]:
        """Decode ``filename`` (its first ``fingerprint_limit`` seconds, as the original)
        at the fingerprint rate and recognize it. Raises DecodeError naming the file."""
        samples = decoder.decode(filename, self.Fs, limit=self.dejavu.limit)
        return recognize_samples(self.dejavu, samples, self.Fs)

    def recognize(self, filename: str) -> dict[str, Any]:
        return self.recognize_file(filename)

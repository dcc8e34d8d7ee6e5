"""What an evaluation is asked to do: :class:`Settings`, their defaults and their checks."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from dejavu.exceptions import EvaluationError

DEFAULT_EXTENSIONS = ("mp3", "wav", "flac", "ogg", "oga", "opus", "m4a", "aac", "wma", "aif", "aiff")
DEFAULT_DECODE_RATE = 44100
DEFAULT_DISTRACTOR_SECONDS = 200.0


@dataclass
class Settings:
    """What to evaluate; the CLI fills this from its arguments."""

    audio_dir: str
    results_dir: str
    lengths: list[float] = field(default_factory=lambda: [1.0, 2.0, 3.0, 4.0, 5.0])
    conditions: list[str] = field(default_factory=lambda: ["clean"])
    clips_per_song: int = 1
    padding: float = 10.0
    seed: int | None = None
    config_path: str | None = None
    negatives_dir: str | None = None
    holdout: float = 0.0
    ingest: bool = True
    temp_dir: str | None = None
    extensions: Sequence[str] = DEFAULT_EXTENSIONS
    nprocs: int | None = None
    jobs: int = 1
    decode_rate: int = DEFAULT_DECODE_RATE
    distractors: int = 0            # synthetic songs added after ingest (dejavu.evaluation.distractors)
    distractor_seconds: float = DEFAULT_DISTRACTOR_SECONDS  # length of each, s

    def validate(self) -> None:
        """Raise EvaluationError on values that cannot work."""
        if not os.path.isdir(self.audio_dir):
            raise EvaluationError(f"{self.audio_dir}: not a directory")
        if self.negatives_dir is not None and not os.path.isdir(self.negatives_dir):
            raise EvaluationError(f"--negatives {self.negatives_dir}: not a directory")
        if not self.lengths or any(not math.isfinite(n) or n <= 0 for n in self.lengths):
            raise EvaluationError("clip lengths must be positive numbers of seconds")
        if self.clips_per_song < 1:
            raise EvaluationError("--clips-per-song must be at least 1")
        if not math.isfinite(self.padding) or self.padding < 0:
            raise EvaluationError("--padding must be a non-negative number of seconds")
        if not 0.0 <= self.holdout < 1.0:
            raise EvaluationError("--holdout must be a fraction in [0, 1)")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise EvaluationError("--seed must be a non-negative integer")
        if self.jobs < 1 or (self.nprocs is not None and self.nprocs < 1):
            raise EvaluationError("--jobs and --nprocs must be at least 1")
        if not 8000 <= self.decode_rate <= 192000:
            raise EvaluationError("--decode-rate must lie in 8000..192000 Hz")
        if self.distractors < 0:
            raise EvaluationError("--distractors must be a non-negative number of songs")
        if self.distractors and not self.ingest:
            raise EvaluationError("--distractors are added while ingesting: not with --no-ingest (a reused "
                                  "database keeps the distractors it was built with)")
        if not math.isfinite(self.distractor_seconds) or not 1.0 <= self.distractor_seconds <= 3600.0:
            raise EvaluationError("--distractor-seconds must lie in 1..3600 s")
        if not self.conditions:
            raise EvaluationError("give at least one condition")
        if len({c.strip().lower() for c in self.conditions}) != len(self.conditions):
            raise EvaluationError("a condition is listed twice")
        for name in self.conditions:
            check_condition(name)


def check_condition(name: str) -> None:
    """Raise EvaluationError unless ``name`` is a known condition (babble included)."""
    from dejavu.evaluation import degrade  # pulls in scipy.signal: imported only when needed

    try:
        degrade.parse_condition(name, other=np.ones(8, dtype=np.float32))
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None

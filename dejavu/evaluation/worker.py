"""Evaluating songs: every clip length × clip × condition of one song, recognized in
this process or in a pool of worker processes, each holding its own Dejavu instance."""
from __future__ import annotations

import logging
import multiprocessing
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from dejavu.demo import write_wav
from dejavu.evaluation.judge import ClipOutcome, judge
from dejavu.evaluation.songs import Song, clip_starts, generator
from dejavu.exceptions import DecodeError, EvaluationError

if TYPE_CHECKING:  # degrade pulls in scipy.signal: imported only when clips are made
    from dejavu.evaluation.degrade import Condition

log = logging.getLogger(__name__)

CLIP_MARGIN = 1.1
"""Clips are cut this much longer than asked, then trimmed to the asked length after
the condition, so a speed-up still yields a full-length query."""


@dataclass
class SongTask:
    """Everything a worker needs to evaluate one song (picklable)."""

    song: Song
    lengths: list[float]
    conditions: list[str]
    clips_per_song: int
    padding: float
    seed: int
    decode_rate: int
    temp_dir: str | None
    babble_paths: list[str]


class Worker:
    """Holds a Dejavu instance and evaluates songs with it (one per process)."""

    def __init__(self, config: Any) -> None:
        from dejavu import Dejavu

        self.djv = Dejavu(config)
        self._babble: dict[str, np.ndarray] = {}
        # The first recognition pays for imports and caches; keep that out of the timings.
        warm = np.random.default_rng(0).standard_normal(11025).astype(np.float32) * 0.1
        self.djv.recognize_samples(warm, 11025)

    def close(self) -> None:
        """Close the Dejavu instance (its database connection)."""
        self.djv.close()

    def _other_audio(self, task: SongTask) -> np.ndarray:
        """Music to mix in for babble: the first listed file that is not this song."""
        from dejavu.logic.decoder import decode

        path = next((p for p in task.babble_paths if p != task.song.path), None)
        if path is None:
            raise EvaluationError("babble needs a second song to mix in")
        if path not in self._babble:
            self._babble[path] = decode(path, task.decode_rate)
        return self._babble[path]

    def _condition(self, name: str, task: SongTask) -> Condition:
        from dejavu.evaluation import degrade

        if name.strip().lower().startswith("babble"):
            return degrade.parse_condition(name, other=self._other_audio(task))
        return degrade.parse_condition(name)

    def evaluate(self, task: SongTask) -> tuple[Song, list[ClipOutcome]]:
        """Decode the song once and run every clip length × clip × condition on it."""
        from dejavu.logic.decoder import decode

        song, sr = task.song, task.decode_rate
        try:
            audio = decode(song.path, sr)
        except DecodeError as exc:
            log.warning("%s: left out", exc)
            return song, []
        song.duration = audio.size / sr
        conditions = [(name, self._condition(name, task)) for name in task.conditions]
        outcomes: list[ClipOutcome] = []
        for length in task.lengths:
            starts = clip_starts(song.duration, length, task.clips_per_song, task.padding,
                                 generator(task.seed, "starts", song.key, round(length * 1000)))
            if starts is None:
                log.warning("%s: %.1f s long, too short for %g s clips: skipped", song.path,
                            song.duration, length)
                continue
            for k, start in enumerate(starts):
                s0 = int(round(start * sr))
                source = audio[s0:s0 + int(round(length * CLIP_MARGIN * sr))]
                for name, apply in conditions:
                    rng = generator(task.seed, "condition", song.key, round(length * 1000), k,
                                    name.strip().lower())
                    outcomes.append(self._query(task, audio, source, name, apply, rng, length, k, start))
        return song, outcomes

    def _query(self, task: SongTask, audio: np.ndarray, source: np.ndarray, name: str,
               apply: Condition, rng: np.random.Generator, length: float, k: int,
               start: float) -> ClipOutcome:
        """Degrade one clip, recognize it (saving it first if asked) and judge the answer."""
        song = task.song
        outcome = ClipOutcome(song.index, song.key, song.role, name, length, k, start, song.song_id)
        try:
            samples, rate = apply(source, task.decode_rate, rng)
        except ValueError as exc:  # e.g. noise at an SNR over a silent clip
            outcome.error = str(exc)
            return outcome
        samples = samples[:int(round(length * rate))]
        outcome.query_seconds = round(samples.size / rate, 4)
        if task.temp_dir:
            write_wav(os.path.join(task.temp_dir, clip_file_name(outcome)), samples, rate)
        result = self.djv.recognize_samples(samples, rate)
        judge(outcome, result, audio, task.decode_rate)
        return outcome


def clip_file_name(o: ClipOutcome) -> str:
    """WAV name for a saved clip, built from indices only (file names are never trusted)."""
    cond = re.sub(r"[^A-Za-z0-9.+-]", "_", o.condition)
    return f"{o.role[:3]}{o.song:04d}_{cond}_{o.length:g}s_{o.clip}_{o.start:.3f}.wav"


_worker: Worker | None = None


def _init_process(config: Any) -> None:
    """Pool initializer: this process's Worker, with warnings-only logging."""
    global _worker
    logging.getLogger().setLevel(logging.WARNING)
    _worker = Worker(config)


def _evaluate_in_process(task: SongTask) -> tuple[Song, list[ClipOutcome]]:
    """Pool task: evaluate one song with this process's Worker."""
    assert _worker is not None
    return _worker.evaluate(task)


def evaluate_songs(config: Any, tasks: list[SongTask], jobs: int) -> Iterator[tuple[Song, list[ClipOutcome]]]:
    """Evaluate songs in order, in this process or in ``jobs`` worker processes."""
    if jobs <= 1 or len(tasks) <= 1:
        worker = Worker(config)
        try:
            for task in tasks:
                yield worker.evaluate(task)
        finally:
            worker.close()
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(jobs, len(tasks)), initializer=_init_process, initargs=(config,)) as pool:
        yield from pool.imap(_evaluate_in_process, tasks)

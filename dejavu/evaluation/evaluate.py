"""Measure recognition accuracy: clips of known songs, degraded, recognized in-process.

Flow of :func:`run_evaluation`:

1. Split the audio folder into songs that go into the database and held-out songs
   (``holdout`` fraction, chosen by seed); songs from a ``negatives`` folder are
   added to the held-out ones.  Held-out songs are never fingerprinted: their clips
   measure the false-positive rate.
2. Fingerprint the database songs through the library (unless ``ingest`` is off),
   then map every file to its ``song_id`` by the SHA1 of its bytes.  File names are
   never parsed, so any name works.
3. For each song (decoded once, kept in memory only while it is evaluated) and each
   clip length, draw ``clips_per_song`` start positions, cut the clip, apply every
   condition and recognize it with :meth:`Dejavu.recognize_samples`.
4. Summarize per condition × clip length (:func:`summarize`), write ``report.json``
   and ``clips.jsonl``, and return a Markdown table (:func:`markdown_table`).

Determinism: every random choice comes from a generator seeded with the run's seed and
a stable key (relative file path, clip length, clip index, condition name), so the same
seed gives the same split, the same clip positions and the same degradations,
whatever the order songs are processed in, and adding a condition or a song does not
move the clips of the others.

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

import hashlib
import json
import logging
import math
import multiprocessing
import os
import re
import secrets
import time
import wave
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:  # degrade pulls in scipy.signal: imported only when clips are made
    from dejavu.evaluation.degrade import Condition

log = logging.getLogger(__name__)
#: Per-clip outcomes are logged here (the CLI points it at ``--log-file``).
clip_log = logging.getLogger("dejavu.evaluation.clips")

DEFAULT_EXTENSIONS = ("mp3", "wav", "flac", "ogg", "oga", "opus", "m4a", "aac", "wma", "aif", "aiff")
DEFAULT_DECODE_RATE = 44100
OFFSET_TOLERANCE_S = 0.1
REPEAT_CORRELATION = 0.9
CLIP_MARGIN = 1.1
"""Clips are cut this much longer than asked, then trimmed to the asked length after
the condition, so a speed-up still yields a full-length query."""

ROLE_DB, ROLE_NEGATIVE = "database", "negative"
REPORT_FILE, CLIPS_FILE, DEFAULT_DB_FILE = "report.json", "clips.jsonl", "eval.db"


class EvaluationError(Exception):
    """The evaluation cannot run as asked (the message is one line)."""


# --------------------------------------------------------------------------- settings
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
        if not self.conditions:
            raise EvaluationError("give at least one condition")
        if len({c.strip().lower() for c in self.conditions}) != len(self.conditions):
            raise EvaluationError("a condition is listed twice")
        for name in self.conditions:
            check_condition(name)


def check_condition(name: str) -> None:
    """Raise EvaluationError unless ``name`` is a known condition (babble included)."""
    from dejavu.evaluation import degrade

    try:
        degrade.parse_condition(name, other=np.ones(8, dtype=np.float32))
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None


# --------------------------------------------------------------------------- songs and seeds
@dataclass
class Song:
    """One audio file taking part; ``key`` is its path relative to its folder."""

    index: int
    path: str
    key: str
    role: str                       # ROLE_DB or ROLE_NEGATIVE
    sha1: str = ""
    song_id: int | None = None      # set for database songs
    duration: float | None = None   # seconds, once decoded


def stable_words(text: str) -> list[int]:
    """Four 32-bit words from the SHA1 of ``text``: a seed component stable across runs."""
    digest = hashlib.sha1(text.encode("utf-8", "surrogateescape")).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]


def generator(seed: int, *parts: int | str) -> np.random.Generator:
    """A generator determined by ``seed`` and ``parts`` (strings are hashed)."""
    entropy: list[int] = [seed]
    for part in parts:
        entropy.extend(stable_words(part) if isinstance(part, str) else [int(part)])
    return np.random.default_rng(entropy)


def list_audio(folder: str, extensions: Iterable[str]) -> list[tuple[str, str]]:
    """(absolute path, path relative to ``folder``) of audio files under ``folder``, sorted."""
    from dejavu.logic.decoder import find_files

    root = os.path.abspath(folder)
    return [(p, os.path.relpath(p, root)) for p, _ in find_files(root, list(extensions))]


def split_holdout(keys: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The keys held out of the database: ``round(fraction · n)`` of them (at least one
    if ``fraction`` > 0, at most n − 1), chosen by ``seed`` independently of list order."""
    if fraction <= 0 or len(keys) < 2:
        return set()
    count = min(len(keys) - 1, max(1, round(fraction * len(keys))))
    ranked = sorted(keys, key=lambda k: generator(seed, "holdout", k).random())
    return set(ranked[:count])


def clip_starts(duration: float, length: float, count: int, padding: float,
                rng: np.random.Generator) -> list[float] | None:
    """``count`` start positions (s) for clips of ``length`` s, at least ``padding`` s from
    both ends when the song is long enough (else the padding shrinks evenly).  Starts are
    whole milliseconds.  None if the song is shorter than the clip."""
    room = duration - length
    if room < 0:
        return None
    pad = min(padding, room / 2)
    lo, hi = int(math.ceil(pad * 1000)), int(math.floor((duration - pad - length) * 1000))
    hi = max(hi, lo)
    return [int(v) / 1000 for v in rng.integers(lo, hi + 1, size=count)]


# --------------------------------------------------------------------------- one clip
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
    from dejavu.logic.recognizer import base as r

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


# --------------------------------------------------------------------------- one song
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
        from dejavu.exceptions import DecodeError
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


def write_wav(path: str, samples: np.ndarray, rate: int) -> None:
    """16-bit mono PCM WAV."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(path, "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(int(rate))
        fh.writeframes(pcm.tobytes())


_worker: Worker | None = None


def _init_process(config: Any) -> None:
    global _worker
    logging.getLogger().setLevel(logging.WARNING)
    _worker = Worker(config)


def _evaluate_in_process(task: SongTask) -> tuple[Song, list[ClipOutcome]]:
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


# --------------------------------------------------------------------------- summary
def _percentiles(values: list[float], digits: int = 3) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "p10": None, "p90": None}
    arr = np.asarray(values, dtype=np.float64)
    p10, p50, p90 = np.percentile(arr, [10, 50, 90])
    return {"n": len(values), "median": round(float(p50), digits), "p10": round(float(p10), digits),
            "p90": round(float(p90), digits)}


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def summarize(outcomes: Sequence[ClipOutcome], conditions: Sequence[str],
              lengths: Sequence[float]) -> list[dict[str, Any]]:
    """One dict per condition × clip length (conditions outer, in the order given).

    Percentages are of valid clips (``errors`` are clips a condition could not be
    applied to); ``offset_accuracy`` is of correct matches; times are seconds.
    """
    cells: dict[tuple[str, float], list[ClipOutcome]] = {(c, n): [] for c in conditions for n in lengths}
    for o in outcomes:
        cells.setdefault((o.condition, o.length), []).append(o)
    rows = []
    for (cond, length), group in cells.items():
        valid = [o for o in group if o.error is None]
        pos = [o for o in valid if o.role == ROLE_DB]
        neg = [o for o in valid if o.role == ROLE_NEGATIVE]
        correct = [o for o in pos if o.correct]
        wrong = [o for o in pos if not o.correct and o.results]
        offset_ok = [o for o in correct if o.offset_ok]
        fps = [o for o in neg if o.false_positive]
        t_pos = [o.total_time for o in pos if o.total_time is not None]
        t_neg = [o.total_time for o in neg if o.total_time is not None]
        rows.append({
            "condition": cond,
            "length": length,
            "clips": len(pos),
            "correct": len(correct),
            "song_accuracy": _pct(len(correct), len(pos)),
            "wrong_song": len(wrong),
            "no_result": len(pos) - len(correct) - len(wrong),
            "offset_correct": len(offset_ok),
            "offset_accuracy": _pct(len(offset_ok), len(correct)),
            "offset_via_repeat": sum(o.offset_repeat for o in offset_ok),
            "offset_error_median": _percentiles([o.offset_error for o in correct if o.offset_error is not None],
                                                4)["median"],
            "negative_clips": len(neg),
            "false_positives": len(fps),
            "false_positive_rate": _pct(len(fps), len(neg)),
            "confidence": {
                "correct": _percentiles([o.input_confidence for o in correct if o.input_confidence is not None]),
                "wrong_song": _percentiles([o.input_confidence for o in wrong if o.input_confidence is not None]),
                "false_positive": _percentiles([o.input_confidence for o in fps if o.input_confidence is not None]),
            },
            "time_to_match": _time_stats(t_pos),
            "time_breakdown_p50": {
                name: _median([getattr(o, name) for o in pos if getattr(o, name) is not None])
                for name in ("fingerprint_time", "query_time", "align_time")},
            "time_negatives": _time_stats(t_neg),
            "errors": len(group) - len(valid),
        })
    return rows


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 4) if values else None


def _time_stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    p50, p95 = np.percentile(np.asarray(values), [50, 95])
    return {"n": len(values), "p50": round(float(p50), 4), "p95": round(float(p95), 4),
            "max": round(float(max(values)), 4)}


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as a Markdown table (one row per condition × clip length)."""
    def pct(value: float | None, part: int, whole: int) -> str:
        return "–" if value is None else f"{value:.1f} ({part}/{whole})"

    def conf(stats: dict[str, Any], spread: bool = True) -> str:
        if not stats["n"]:
            return "–"
        return f"{stats['median']:.2f} [{stats['p10']:.2f}–{stats['p90']:.2f}]" if spread \
            else f"{stats['median']:.2f}"

    def ms(stats: dict[str, Any]) -> str:
        return "–" if not stats["n"] else f"{stats['p50'] * 1000:.0f} / {stats['p95'] * 1000:.0f}"

    lines = ["| condition | clip (s) | song accuracy % | offset accuracy % | false positives % "
             "| confidence, correct: median [p10–p90] | confidence, false pos.: median [p10–p90] "
             "| time to match p50 / p95 (ms) |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(
            f"| {r['condition']} | {r['length']:g} "
            f"| {pct(r['song_accuracy'], r['correct'], r['clips'])} "
            f"| {pct(r['offset_accuracy'], r['offset_correct'], r['correct'])} "
            f"| {pct(r['false_positive_rate'], r['false_positives'], r['negative_clips'])} "
            f"| {conf(r['confidence']['correct'])} | {conf(r['confidence']['false_positive'])} "
            f"| {ms(r['time_to_match'])} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the run
@dataclass
class Report:
    """A finished evaluation."""

    settings: dict[str, Any]
    songs: list[Song]
    outcomes: list[ClipOutcome]
    summary: list[dict[str, Any]]
    timings: dict[str, float]
    files: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The content of report.json (per-clip outcomes go to clips.jsonl)."""
        return {"settings": self.settings, "timings": self.timings, "files": self.files,
                "songs": [asdict(s) for s in self.songs], "summary": self.summary}


def make_config(settings: Settings) -> Any:
    """The dejavu Config: ``--config`` if it names a database, else the throwaway SQLite
    database in the results folder (with ``--config``'s fingerprint and matching
    parameters).  DEJAVU_DATABASE_URL applies only to a ``--config`` that names a
    database: an evaluation never writes into a database it was not pointed at."""
    from dejavu.config import load_config, read_config_file

    default_db = {"database_type": "sqlite",
                  "database": {"path": os.path.join(os.path.abspath(settings.results_dir), DEFAULT_DB_FILE)}}
    if not settings.config_path:
        return load_config(default_db, environ={})
    cfg = read_config_file(settings.config_path)
    if "database" in cfg.raw or "database_type" in cfg.raw:
        return cfg
    return load_config({**cfg.raw, **default_db}, environ={})


def _is_throwaway(cfg: Any, settings: Settings) -> bool:
    path = cfg.database.get("path") if cfg.database_type == "sqlite" else None
    if not path:
        return False
    return os.path.abspath(path) == os.path.join(os.path.abspath(settings.results_dir), DEFAULT_DB_FILE)


def collect_songs(settings: Settings, seed: int) -> list[Song]:
    """Database songs and negatives (held-out and from ``negatives_dir``), indexed."""
    files = list_audio(settings.audio_dir, settings.extensions)
    if not files:
        raise EvaluationError(f"{settings.audio_dir}: no audio files "
                              f"({', '.join(settings.extensions)})")
    held = split_holdout([k for _, k in files], settings.holdout, seed)
    pairs = [(p, k, ROLE_NEGATIVE if k in held else ROLE_DB) for p, k in files]
    if settings.negatives_dir:
        negatives = list_audio(settings.negatives_dir, settings.extensions)
        if not negatives:
            log.warning("%s: no audio files to use as negatives", settings.negatives_dir)
        pairs += [(p, "negatives/" + k, ROLE_NEGATIVE) for p, k in negatives]
    seen: set[str] = set()
    songs: list[Song] = []
    for path, key, role in pairs:
        if os.path.realpath(path) in seen:
            continue
        seen.add(os.path.realpath(path))
        songs.append(Song(len(songs), path, key, role))
    return songs


def ingest_and_map(djv: Any, songs: list[Song], settings: Settings) -> list[Song]:
    """Fingerprint the database songs (if asked), then give every song its song_id by
    SHA1; drop songs that cannot take part (logged).  Returns the songs kept."""
    from dejavu.exceptions import DecodeError
    from dejavu.logic.decoder import unique_hash

    kept = []
    for song in songs:
        try:
            song.sha1 = unique_hash(song.path)
        except DecodeError as exc:
            log.warning("%s: skipped", exc)
            continue
        kept.append(song)
    if settings.ingest:
        todo = [s.path for s in kept if s.role == ROLE_DB]
        log.info("fingerprinting %d songs (%d processes)", len(todo), settings.nprocs or os.cpu_count() or 1)
        report = djv.fingerprint_files(todo, nprocesses=settings.nprocs)
        for failed in report.failed:
            log.warning("not fingerprinted, left out: %s", failed.reason)
    ids = {s["file_sha1"]: int(s["song_id"]) for s in djv.get_fingerprinted_songs()}
    result = []
    for song in kept:
        in_db = ids.get(song.sha1)
        if song.role == ROLE_DB:
            if in_db is None:
                if settings.ingest:
                    continue  # its failure was logged above
                log.warning("%s: not in the database, used as a negative", song.path)
                song.role = ROLE_NEGATIVE
            song.song_id = in_db
        elif in_db is not None:
            log.warning("%s: held out but the database has it (song_id %d): left out", song.path, in_db)
            continue
        result.append(song)
    return result


def run_evaluation(settings: Settings) -> Report:
    """Run the whole evaluation and write report.json, clips.jsonl (and plots: see cli)."""
    settings.validate()
    seed = settings.seed if settings.seed is not None else secrets.randbelow(2**31)
    if settings.seed is None:
        log.info("seed %d (pass --seed %d to repeat this run)", seed, seed)
    os.makedirs(settings.results_dir, exist_ok=True)
    if settings.temp_dir:
        os.makedirs(settings.temp_dir, exist_ok=True)
    cfg = make_config(settings)
    if _is_throwaway(cfg, settings):
        db_path = cfg.database["path"]
        if settings.ingest:
            for suffix in ("", "-wal", "-shm", "-journal"):
                if os.path.exists(db_path + suffix):
                    os.remove(db_path + suffix)
        elif not os.path.exists(db_path):
            raise EvaluationError(f"--no-ingest: {db_path} does not exist (run once without "
                                  "--no-ingest, or pass --config)")
    from dejavu import Dejavu

    t0 = time.perf_counter()
    songs = collect_songs(settings, seed)
    with Dejavu(cfg) as djv:
        songs = ingest_and_map(djv, songs, settings)
    t_ingest = time.perf_counter() - t0
    n_db = sum(s.role == ROLE_DB for s in songs)
    n_neg = len(songs) - n_db
    if n_db == 0:
        raise EvaluationError("no song of the audio folder is in the database")
    log.info("%d songs in the database, %d negatives; %d queries to run", n_db, n_neg,
             len(songs) * len(settings.lengths) * settings.clips_per_song * len(settings.conditions))
    babble = [s.path for s in songs if s.role == ROLE_NEGATIVE][:2] + [s.path for s in songs][:2]
    tasks = [SongTask(s, list(settings.lengths), list(settings.conditions), settings.clips_per_song,
                      settings.padding, seed, settings.decode_rate,
                      os.path.abspath(settings.temp_dir) if settings.temp_dir else None, babble)
             for s in songs]
    t1 = time.perf_counter()
    outcomes: list[ClipOutcome] = []
    done: list[Song] = []
    for i, (song, clips) in enumerate(evaluate_songs(cfg, tasks, settings.jobs), 1):
        done.append(song)
        outcomes.extend(clips)
        for o in clips:
            clip_log.info("%s", describe(o))
        log.info("[%d/%d] %s (%s): %s", i, len(tasks), song.key, song.role, _song_line(clips))
    t_eval = time.perf_counter() - t1
    summary = summarize(outcomes, settings.conditions, settings.lengths)
    timings = {"ingest_seconds": round(t_ingest, 2), "evaluate_seconds": round(t_eval, 2),
               "queries": len(outcomes),
               "audio_seconds": round(sum(s.duration or 0.0 for s in done), 1)}
    report = Report(_settings_dict(settings, seed, cfg), done, outcomes, summary, timings)
    write_results(report, settings.results_dir)
    return report


def describe(o: ClipOutcome) -> str:
    """One log line for a clip outcome."""
    head = (f"{o.condition} {o.length:g}s {o.role} song#{o.song} id={o.true_song_id} "
            f"clip={o.clip} start={o.start:.3f} key={o.key!r}")
    if o.error:
        return f"{head} -> ERROR {o.error}"
    if not o.results:
        verdict = "no result" + (" (miss)" if o.role == ROLE_DB else " (ok)")
        return f"{head} -> {verdict} time={(o.total_time or 0.0) * 1000:.0f}ms"
    if o.role == ROLE_NEGATIVE:
        verdict = f"FALSE POSITIVE id={o.song_id}"
    elif not o.correct:
        verdict = f"WRONG SONG id={o.song_id}"
    else:
        verdict = (f"ok offset={o.offset_seconds:.3f} err={o.offset_error:.3f} "
                   + ("ok" + (" (repeat)" if o.offset_repeat else "") if o.offset_ok else "WRONG OFFSET"))
    return (f"{head} -> {verdict} conf={o.input_confidence:.2f} matched={o.hashes_matched} "
            f"time={(o.total_time or 0.0) * 1000:.0f}ms")


def _song_line(clips: list[ClipOutcome]) -> str:
    valid = [o for o in clips if o.error is None]
    if not valid:
        return "no clips"
    if valid[0].role == ROLE_DB:
        return f"{sum(bool(o.correct) for o in valid)}/{len(valid)} correct"
    return f"{sum(bool(o.false_positive) for o in valid)}/{len(valid)} false positives"


def code_version() -> str | None:
    """``git describe`` of the dejavu checkout (``-dirty`` with local changes), or None."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _settings_dict(settings: Settings, seed: int, cfg: Any) -> dict[str, Any]:
    out = {k: v for k, v in asdict(settings).items() if k not in ("seed", "extensions")}
    from dejavu import __version__

    out.update(seed=seed, extensions=list(settings.extensions), dejavu_version=__version__,
               code_version=code_version(),
               offset_tolerance=OFFSET_TOLERANCE_S, repeat_correlation=REPEAT_CORRELATION,
               database_type=cfg.database_type,
               fingerprint=asdict(cfg.fingerprint), matching=asdict(cfg.matching))
    out["matching"]["speed_factors"] = list(cfg.matching.speed_factors)
    return out


def write_results(report: Report, results_dir: str) -> None:
    """report.json and clips.jsonl in ``results_dir``."""
    report.files.update(report=REPORT_FILE, clips=CLIPS_FILE)
    with open(os.path.join(results_dir, CLIPS_FILE), "w", encoding="utf-8") as fh:
        for o in report.outcomes:
            fh.write(json.dumps(asdict(o), ensure_ascii=False) + "\n")
    save_report(report, results_dir)


def save_report(report: Report, results_dir: str) -> None:
    """(Re)write report.json."""
    path = os.path.join(results_dir, REPORT_FILE)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        json.dump(report.to_json(), fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    os.replace(path + ".tmp", path)


def load_clips(results_dir: str) -> list[dict[str, Any]]:
    """The per-clip records of a finished run (clips.jsonl)."""
    with open(os.path.join(results_dir, CLIPS_FILE), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


__all__ = ["Settings", "Song", "ClipOutcome", "Report", "EvaluationError", "run_evaluation",
           "summarize", "markdown_table", "clip_starts", "split_holdout", "repeat_matches",
           "generator", "check_condition", "load_clips"]

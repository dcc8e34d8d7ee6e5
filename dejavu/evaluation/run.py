"""Measure recognition accuracy: clips of known songs, degraded, recognized in-process.

Flow of :func:`run_evaluation`:

1. Split the audio folder into songs that go into the database and held-out songs
   (``holdout`` fraction, chosen by seed); songs from a ``negatives`` folder are
   added to the held-out ones.  Held-out songs are never fingerprinted: their clips
   measure the false-positive rate.
2. Fingerprint the database songs through the library (unless ``ingest`` is off),
   then map every file to its ``song_id`` by the SHA1 of its bytes.  File names are
   never parsed, so any name works.  With ``distractors``, that many synthetic songs
   whose keys follow the database songs' key distribution are added to the store
   (:mod:`dejavu.evaluation.distractors`); a match to one is a wrong answer.
3. For each song (decoded once, kept in memory only while it is evaluated) and each
   clip length, draw ``clips_per_song`` start positions, cut the clip, apply every
   condition and recognize it with :meth:`Dejavu.recognize_samples`.
4. Summarize per condition × clip length (:func:`~dejavu.evaluation.summary.summarize`)
   and write ``report.json`` and ``clips.jsonl``; the CLI prints the summary as a
   Markdown table (:func:`~dejavu.evaluation.summary.markdown_table`).

Seeds and the split are explained in :mod:`dejavu.evaluation.songs`, the offset rule
in :mod:`dejavu.evaluation.judge`.
"""
from __future__ import annotations

import logging
import os
import secrets
import time
from typing import Any

from dejavu.evaluation.judge import ClipOutcome
from dejavu.evaluation.report import Report, settings_dict, write_results
from dejavu.evaluation.settings import Settings
from dejavu.evaluation.songs import ROLE_DB, ROLE_NEGATIVE, Song, collect_songs, generator, ingest_and_map
from dejavu.evaluation.summary import describe, song_line, summarize
from dejavu.evaluation.worker import SongTask, evaluate_songs
from dejavu.exceptions import EvaluationError

log = logging.getLogger(__name__)
#: Per-clip outcomes are logged here (the CLI points it at ``--log-file``).
clip_log = logging.getLogger("dejavu.evaluation.clips")

DEFAULT_DB_FILE = "eval.db"


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
    """True if ``cfg`` is the throwaway SQLite database in the results folder."""
    path = cfg.database.get("path") if cfg.database_type == "sqlite" else None
    if not path:
        return False
    return os.path.abspath(path) == os.path.join(os.path.abspath(settings.results_dir), DEFAULT_DB_FILE)


def _add_distractors(djv: Any, songs: list[Song], settings: Settings, seed: int) -> dict[str, float]:
    """Add ``settings.distractors`` synthetic songs to ``djv``'s store, keyed like the
    database songs (seeded by ``seed``); their timings for report.json."""
    from dejavu.evaluation.distractors import add_distractors

    start = time.perf_counter()
    rows = add_distractors(djv.db, settings.distractors, settings.distractor_seconds,
                           generator(seed, "distractors"), frame_seconds=djv.cfg.fingerprint.frame_seconds,
                           real_song_ids=[s.song_id for s in songs if s.role == ROLE_DB])
    took = time.perf_counter() - start
    log.info("added %d distractor songs (%s rows) in %.1f s", settings.distractors, f"{rows:,}", took)
    return {"distractor_rows": rows, "distractor_build_seconds": round(took, 2)}


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
        distractor_timings = _add_distractors(djv, songs, settings, seed) if settings.distractors else {}
    log.info("%d songs in the database%s, %d negatives; %d queries to run", n_db,
             f" (and {settings.distractors} distractors)" if settings.distractors else "", n_neg,
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
        log.info("[%d/%d] %s (%s): %s", i, len(tasks), song.key, song.role, song_line(clips))
    t_eval = time.perf_counter() - t1
    summary = summarize(outcomes, settings.conditions, settings.lengths)
    timings = {"ingest_seconds": round(t_ingest, 2), "evaluate_seconds": round(t_eval, 2),
               "queries": len(outcomes),
               "audio_seconds": round(sum(s.duration or 0.0 for s in done), 1), **distractor_timings}
    report = Report(settings_dict(settings, seed, cfg), done, outcomes, summary, timings)
    write_results(report, settings.results_dir)
    return report

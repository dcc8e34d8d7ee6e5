"""The evaluation's public names in one place (kept for ``from dejavu.evaluation import evaluate``).

The code lives by concern: :mod:`~dejavu.evaluation.settings` (what to evaluate),
:mod:`~dejavu.evaluation.songs` (songs, split, seeds, clip positions),
:mod:`~dejavu.evaluation.judge` (one query's outcome), :mod:`~dejavu.evaluation.worker`
(evaluating songs, in worker processes), :mod:`~dejavu.evaluation.summary` (statistics
and the Markdown table), :mod:`~dejavu.evaluation.report` (report.json, clips.jsonl) and
:mod:`~dejavu.evaluation.run` (the whole run).
"""
from __future__ import annotations

from dejavu.evaluation.judge import ClipOutcome, repeat_correlation, repeat_matches
from dejavu.evaluation.report import Report, load_clips
from dejavu.evaluation.run import run_evaluation
from dejavu.evaluation.settings import Settings, check_condition
from dejavu.evaluation.songs import Song, clip_starts, generator, split_holdout
from dejavu.evaluation.summary import markdown_table, summarize
from dejavu.exceptions import EvaluationError

__all__ = ["Settings", "Song", "ClipOutcome", "Report", "EvaluationError", "run_evaluation",
           "summarize", "markdown_table", "clip_starts", "split_holdout", "repeat_matches",
           "repeat_correlation", "generator", "check_condition", "load_clips"]

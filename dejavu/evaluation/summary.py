"""Summaries of clip outcomes: per condition × clip length statistics, the Markdown table,
and the one-line descriptions logged per clip and per song."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dejavu.evaluation.judge import ClipOutcome
from dejavu.evaluation.songs import ROLE_DB, ROLE_NEGATIVE


def _percentiles(values: list[float], digits: int = 3) -> dict[str, Any]:
    """n, median, p10 and p90 of ``values`` (None without values)."""
    if not values:
        return {"n": 0, "median": None, "p10": None, "p90": None}
    arr = np.asarray(values, dtype=np.float64)
    p10, p50, p90 = np.percentile(arr, [10, 50, 90])
    return {"n": len(values), "median": round(float(p50), digits), "p10": round(float(p10), digits),
            "p90": round(float(p90), digits)}


def _pct(part: int, whole: int) -> float | None:
    """``part`` as a percentage of ``whole`` (None if ``whole`` is 0)."""
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
    """Median of ``values``, or None without values."""
    return round(float(np.median(values)), 4) if values else None


def _time_stats(values: list[float]) -> dict[str, Any]:
    """n, p50, p95 and max of times in seconds."""
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


def song_line(clips: list[ClipOutcome]) -> str:
    """Per-song progress: correct clips of a database song, false positives of a negative."""
    valid = [o for o in clips if o.error is None]
    if not valid:
        return "no clips"
    if valid[0].role == ROLE_DB:
        return f"{sum(bool(o.correct) for o in valid)}/{len(valid)} correct"
    return f"{sum(bool(o.false_positive) for o in valid)}/{len(valid)} false positives"

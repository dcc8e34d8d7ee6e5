"""PNG plots of an evaluation (matplotlib, imported only here, Agg backend).

* ``accuracy_vs_length.png``: song accuracy (and false-positive rate) against clip
  length, one line per condition;
* ``confidence_histograms.png``: input_confidence of correct matches against that of
  wrong songs and false positives on negatives, one panel per condition;
* ``time_vs_length.png``: time to match (median, with the 95th percentile dashed)
  against clip length, one line per condition.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

ACCURACY_PNG = "accuracy_vs_length.png"
CONFIDENCE_PNG = "confidence_histograms.png"
TIME_PNG = "time_vs_length.png"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "*")
LINESTYLES = ("-", "--", "-.", ":")


def _style(i: int) -> dict[str, Any]:
    """Marker and dash differ per line, so identical curves (e.g. clean and sr16000) stay visible."""
    return {"marker": MARKERS[i % len(MARKERS)], "linestyle": LINESTYLES[(i // 2) % len(LINESTYLES)],
            "markersize": 7 - (i % 3), "alpha": 0.85}


def _by_condition(summary: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    for row in summary:
        rows.setdefault(row["condition"], []).append(row)
    for group in rows.values():
        group.sort(key=lambda r: r["length"])
    return rows


def _series(rows: list[dict[str, Any]], get: Any) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        value = get(r)
        if value is not None:
            xs.append(r["length"])
            ys.append(value)
    return xs, ys


def plot_accuracy(summary: Sequence[dict[str, Any]], path: str) -> None:
    """Song accuracy (left) and false-positive rate (right) against clip length."""
    plt = _pyplot()
    groups = _by_condition(summary)
    has_neg = any(r["negative_clips"] for r in summary)
    fig, axes = plt.subplots(1, 2 if has_neg else 1, figsize=(11 if has_neg else 6.5, 4.5), squeeze=False)
    panels = [("song_accuracy", "song accuracy (%)", "Correct song (first result)")]
    if has_neg:
        panels.append(("false_positive_rate", "false positives (%)", "Any result for a song not in the database"))
    for ax, (key, ylabel, title) in zip(axes[0], panels):
        for i, (cond, rows) in enumerate(groups.items()):
            ax.plot(*_series(rows, lambda r, key=key: r[key]), label=cond, **_style(i))
        ax.set(xlabel="clip length (s)", ylabel=ylabel, ylim=(-3, 104), title=title)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confidence(clips: Sequence[dict[str, Any]], conditions: Sequence[str], path: str) -> None:
    """Histograms of input_confidence: correct matches vs wrong songs / false positives.

    Each group is drawn as a share of its own clips, so a handful of false positives
    stays visible next to hundreds of correct matches (counts are in the legend).
    """
    plt = _pyplot()
    n = max(1, len(conditions))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    bins = np.linspace(0.0, 1.0, 26)
    for i, cond in enumerate(conditions):
        ax = axes[i // cols][i % cols]
        mine = [c for c in clips if c["condition"] == cond and c.get("input_confidence") is not None]
        good = [c["input_confidence"] for c in mine if c.get("correct")]
        bad = [c["input_confidence"] for c in mine if c.get("correct") is False or c.get("false_positive")]
        for values, color, label in ((good, "tab:green", "correct"),
                                     (bad, "tab:red", "wrong song / false pos.")):
            weights = np.full(len(values), 1.0 / len(values)) if values else None
            ax.hist(values, bins=bins, weights=weights, alpha=0.55, color=color,
                    label=f"{label} ({len(values)})")
        ax.set(title=cond, xlabel="input_confidence (top result)", ylabel="share of the group's clips")
        ax.legend(fontsize="x-small")
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_time(summary: Sequence[dict[str, Any]], path: str) -> None:
    """Median time to match (solid) and 95th percentile (dashed) against clip length."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (cond, rows) in enumerate(_by_condition(summary).items()):
        xs, p50 = _series(rows, lambda r: r["time_to_match"]["p50"])
        style = {**_style(i), "linestyle": "-"}
        line, = ax.plot(xs, [v * 1000 for v in p50], label=cond, **style)
        xs, p95 = _series(rows, lambda r: r["time_to_match"]["p95"])
        ax.plot(xs, [v * 1000 for v in p95], linestyle="--", color=line.get_color(), alpha=0.6)
    ax.set(xlabel="clip length (s)", ylabel="time to match (ms)",
           title="Time to match: median (solid), p95 (dashed)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(summary: Sequence[dict[str, Any]], clips: Sequence[dict[str, Any]],
                conditions: Sequence[str], out_dir: str) -> list[str]:
    """Write the three PNGs into ``out_dir``; returns their paths.

    Raises ImportError if matplotlib is not installed.
    """
    _pyplot()
    paths = [os.path.join(out_dir, name) for name in (ACCURACY_PNG, CONFIDENCE_PNG, TIME_PNG)]
    plot_accuracy(summary, paths[0])
    plot_confidence(clips, conditions, paths[1])
    plot_time(summary, paths[2])
    log.info("plots: %s", ", ".join(paths))
    return paths

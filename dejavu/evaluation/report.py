"""The results of an evaluation on disk: ``report.json`` and ``clips.jsonl``."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any

from dejavu.evaluation.judge import OFFSET_TOLERANCE_S, REPEAT_CORRELATION, ClipOutcome
from dejavu.evaluation.settings import Settings
from dejavu.evaluation.songs import Song

REPORT_FILE, CLIPS_FILE = "report.json", "clips.jsonl"


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


def code_version() -> str | None:
    """``git describe`` of the dejavu checkout (``-dirty`` with local changes), or None."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def settings_dict(settings: Settings, seed: int, cfg: Any) -> dict[str, Any]:
    """The ``settings`` section of report.json: what was asked, the seed used, the code
    version and the fingerprint and matching parameters of the dejavu Config ``cfg``."""
    from dejavu import __version__

    out = {k: v for k, v in asdict(settings).items() if k not in ("seed", "extensions")}
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

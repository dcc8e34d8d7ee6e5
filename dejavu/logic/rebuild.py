"""Rebuild: fingerprint the songs of another store again, from the files they came from.

An old store (another format, other fingerprint settings) lists each song's name, file
SHA1 and source path (:func:`dejavu.database.catalogue.read_song_list`).  Each file that
is still there with the same bytes is fingerprinted into the store under the song's name,
through :func:`dejavu.logic.ingest.ingest` (worker processes, whole songs, files already
stored skipped); a file that is gone, unreadable or changed is reported, never ingested.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from dejavu.config import Config
from dejavu.exceptions import DejavuError
from dejavu.logic import decoder
from dejavu.logic.ingest import IngestReport, ingest
from dejavu.logic.store import Store
from dejavu.quoting import quote

log = logging.getLogger(__name__)


@dataclass
class Unrebuilt:
    """A song of the old store that could not be fingerprinted again."""

    song_name: str
    source_path: str | None
    reason: str                       # one line; names the file where there is one


@dataclass
class RebuildReport:
    """Outcome of a rebuild: the ingest of the files found, and the songs that were not rebuilt."""

    songs: int = 0                    # fingerprinted songs in the old store
    already: list[dict[str, Any]] = field(default_factory=list)  # in the store before (file not read)
    ingested: IngestReport = field(default_factory=IngestReport)
    unrebuilt: list[Unrebuilt] = field(default_factory=list)

    @property
    def rebuilt(self) -> int:
        """Songs fingerprinted into the store by this rebuild."""
        return len(self.ingested.fingerprinted)

    @property
    def skipped(self) -> int:
        """Songs the store held already (same file SHA1)."""
        return len(self.already) + len(self.ingested.skipped)

    @property
    def failed(self) -> int:
        """Songs not rebuilt: file gone, unreadable, changed, or not decodable."""
        return len(self.unrebuilt) + len(self.ingested.failed)

    @property
    def ok(self) -> bool:
        """True when every song of the old store is in the store."""
        return not self.failed


def check_source(song: Mapping[str, Any]) -> str | None:
    """Why ``song``'s recorded file cannot be fingerprinted again as it was (None: it can)."""
    path = song.get("source_path")
    if not path:
        return "no source path recorded"
    try:
        sha1 = decoder.unique_hash(path)
    except DejavuError as exc:
        return str(exc)
    if sha1 != song["file_sha1"]:
        return f"{quote(path)}: the file changed since it was fingerprinted (SHA1 {sha1}, recorded {song['file_sha1']})"
    return None


def rebuild(store: Store, cfg: Config, songs: Sequence[Mapping[str, Any]], nprocesses: int | None = None,
            progress: bool = False) -> RebuildReport:
    """Fingerprint ``songs`` (dicts with song_name, source_path, file_sha1) into ``store`` from
    their source files, keeping their names; files are checked (SHA1) ``nprocesses`` at a time.

    Songs the store holds already are skipped without reading their files.  Each song whose
    file is gone, unreadable or changed is logged as one line and listed in the report.
    """
    report = RebuildReport(songs=len(songs))
    known = store.get_fingerprinted_sha1s()
    report.already = [s for s in songs if s["file_sha1"] in known]
    todo = [s for s in songs if s["file_sha1"] not in known]
    workers = max(1, min(nprocesses or os.cpu_count() or 1, len(todo) or 1))
    with ThreadPoolExecutor(workers) as pool:  # hashlib releases the GIL: files are read in parallel
        reasons = list(pool.map(check_source, todo))
    tasks: list[tuple[str, str | None]] = []
    for song, reason in zip(todo, reasons):
        if reason is None:
            tasks.append((song["source_path"], song["song_name"]))
        else:
            report.unrebuilt.append(Unrebuilt(song["song_name"], song.get("source_path"), reason))
            log.error("rebuild: %s: %s", quote(song["song_name"]), reason)
    log.debug("rebuild: %d song(s), %d already stored, %d file(s) to fingerprint",
              len(songs), len(report.already), len(tasks))
    report.ingested = ingest(store, cfg, tasks, nprocesses, progress)
    return report

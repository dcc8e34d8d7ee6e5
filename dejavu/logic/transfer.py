"""Export a store's catalogue to one file and import it into another store, without decoding
the audio again (e.g. SQLite → PostgreSQL, or into shards).

The file is a ZIP archive (ZIP64, members stored uncompressed: the rows do not compress
much and the archive is written and read at disk speed):

- ``batches/NNNNNN.json``: a list of songs, each ``song_name``, ``file_sha1`` (uppercase
  hex), ``duration`` (s), ``source_path`` (or null) and ``rows``;
- ``batches/NNNNNN.npy``: their rows, song after song in that order, a numpy structured
  array of ``hash`` (int64) and ``offset`` (int32, frames);
- ``manifest.json``, written last: ``format``, the dejavu version, the fingerprint
  settings the keys were made with, and the song and row counts.

An export is written to ``FILE.partial`` and renamed when complete, so ``FILE`` is never
half written.  An import stores each song all or nothing (the store's ``store_songs``),
skips songs whose file SHA1 the store already holds, and refuses an archive made with
other fingerprint settings than the configuration's.  Song ids are the target store's.
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from dejavu.config import Config
from dejavu.exceptions import ConfigError, DatabaseError
from dejavu.logic.ingest import retrying
from dejavu.logic.store import NewSong, Store
from dejavu.quoting import quote
from dejavu.version import __version__

log = logging.getLogger(__name__)

#: Layout of the archives this version writes and reads.
ARCHIVE_FORMAT = 1
MANIFEST = "manifest.json"
#: One archived row: its key and its offset in frames.
ROW = np.dtype([("hash", "<i8"), ("offset", "<i4")])
#: Rows per archive batch (about 12 bytes each in the file, 24 in memory).
BATCH_ROWS = 1 << 21
#: Songs handed to ``store_songs`` at a time on import.
STORE_SONGS = 16


@dataclass
class TransferReport:
    """What an export or import did: songs written (or added), songs skipped, rows."""

    songs: int = 0
    skipped: int = 0
    rows: int = 0


def export_catalogue(store: Store, config: Config, path: str,
                     progress: Callable[[int], None] | None = None) -> TransferReport:
    """Write every fingerprinted song of ``store`` (made with ``config``'s fingerprint settings)
    to the archive ``path``; ``progress(n)`` is called as each n songs are written.

    Raises DatabaseError (one line) if the store changed under the export (a song's rows
    differ from its count), OSError if ``path`` cannot be written.
    """
    songs = store.get_songs()
    report = TransferReport()
    partial = path + ".partial"
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            by_id = {int(song["song_id"]): song for song in songs}
            for number, rows in enumerate(store.song_rows(songs, BATCH_ROWS)):
                batch = _batch(by_id, rows)
                packed = np.empty(rows.shape[0], dtype=ROW)
                packed["hash"], packed["offset"] = rows[:, 0], rows[:, 2]
                archive.writestr(f"batches/{number:06d}.json", json.dumps(batch, ensure_ascii=False))
                with archive.open(f"batches/{number:06d}.npy", "w", force_zip64=True) as member:
                    np.save(member, packed)
                report.songs += len(batch)
                report.rows += rows.shape[0]
                if progress:
                    progress(len(batch))
            if report.songs != len(songs):
                raise DatabaseError(f"{quote(path)}: {len(songs) - report.songs} songs had no rows when "
                                    "exported (the store changed meanwhile): export again")
            archive.writestr(MANIFEST, json.dumps({
                "format": ARCHIVE_FORMAT, "dejavu": __version__, "settings": config.fingerprint.stored_settings(),
                "songs": report.songs, "rows": report.rows}, indent=1))
        os.replace(partial, path)
    except BaseException:
        _remove(partial)
        raise
    log.debug("exported %d songs (%d rows) to %s", report.songs, report.rows, path)
    return report


def import_catalogue(store: Store, config: Config, path: str,
                     progress: Callable[[int], None] | None = None) -> TransferReport:
    """Store the songs of the archive ``path`` in ``store``; songs already there (same file
    SHA1) are skipped.  ``progress(n)`` is called as each n songs are handled.

    Raises ConfigError (one line) if the archive is not one, is of another format, or was
    made with other fingerprint settings than ``config``'s; DatabaseError if it is damaged.
    """
    report = TransferReport()
    present = store.get_fingerprinted_sha1s()
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ConfigError(f"{quote(path)}: not a catalogue archive (one made by dejavu --export)") from None
    try:
        with archive:
            manifest = _manifest(archive, path)
            _check_settings(manifest, config, path)
            pending: list[NewSong] = []
            for song, hashes, offsets in _songs(archive, path):
                if song["file_sha1"] in present:
                    report.skipped += 1
                    if progress:
                        progress(1)
                    continue
                present.add(song["file_sha1"])
                pending.append(NewSong(song["song_name"], song["file_sha1"], hashes, offsets,
                                       float(song["duration"]), song.get("source_path")))
                if len(pending) == STORE_SONGS:
                    _store(store, pending, report, progress)
            _store(store, pending, report, progress)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ValueError, EOFError) as exc:
        raise DatabaseError(f"{quote(path)}: damaged catalogue archive: {exc}") from None
    log.debug("imported %d songs (%d rows) from %s; %d already stored", report.songs, report.rows, path,
             report.skipped)
    return report


def _batch(by_id: dict[int, dict[str, Any]], rows: np.ndarray) -> list[dict[str, Any]]:
    """The archive entries of the songs whose rows (n, 3) (hash, song_id, offset) are ``rows``."""
    ids, counts = np.unique(rows[:, 1], return_counts=True)
    batch = []
    for song_id, count in zip(ids.tolist(), counts.tolist()):
        song = by_id[song_id]
        if count != int(song["total_hashes"]):
            raise DatabaseError(f"song {song_id} ({song['song_name']!r}) has {count} rows but records "
                                f"{song['total_hashes']} (the store changed meanwhile): export again")
        batch.append({"song_name": song["song_name"], "file_sha1": song["file_sha1"],
                      "duration": song["duration"], "source_path": song.get("source_path"), "rows": count})
    return batch


def _manifest(archive: zipfile.ZipFile, path: str) -> dict[str, Any]:
    try:
        manifest = json.loads(archive.read(MANIFEST))
    except KeyError:
        raise ConfigError(f"{quote(path)}: not a dejavu catalogue archive (no {MANIFEST})") from None
    if manifest.get("format") != ARCHIVE_FORMAT:
        raise ConfigError(f"{quote(path)}: catalogue archive format {manifest.get('format')!r}; this dejavu "
                          f"reads format {ARCHIVE_FORMAT}")
    return manifest


def _check_settings(manifest: dict[str, Any], config: Config, path: str) -> None:
    """Refuse an archive whose keys were made with other fingerprint settings."""
    wanted = config.fingerprint.stored_settings()
    for name, value in manifest.get("settings", {}).items():
        if wanted.get(name) != value:
            raise ConfigError(f"{quote(path)}: {name} is {value!r} in the archive but {wanted.get(name)!r} in "
                              f"the configuration: set it to {value!r} to import this archive")


def _songs(archive: zipfile.ZipFile, path: str) -> Iterator[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
    """Each archived song with its hashes (int64) and offsets (int32), in archive order."""
    names = sorted(name for name in archive.namelist() if name.startswith("batches/") and name.endswith(".json"))
    for name in names:
        songs = json.loads(archive.read(name))
        with archive.open(name[:-len(".json")] + ".npy") as member:
            rows = np.load(member, allow_pickle=False)
        if rows.dtype != ROW or sum(song["rows"] for song in songs) != rows.size:
            raise DatabaseError(f"{quote(path)}: damaged catalogue archive: {name} does not match its rows")
        start = 0
        for song in songs:
            part = rows[start:start + song["rows"]]
            start += song["rows"]
            yield song, part["hash"].astype(np.int64), part["offset"].astype(np.int32)


def _store(store: Store, pending: list[NewSong], report: TransferReport,
           progress: Callable[[int], None] | None) -> None:
    """Store the pending songs (each all or nothing) and count them; empties ``pending``."""
    if not pending:
        return
    ids = retrying(store.store_songs, pending)  # a lost connection is tried again, as on ingest
    for song, song_id in zip(pending, ids):
        if song_id is None:
            report.skipped += 1
        else:
            report.songs += 1
            report.rows += len(song.hashes)
    if progress:
        progress(len(pending))
    pending.clear()



def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass

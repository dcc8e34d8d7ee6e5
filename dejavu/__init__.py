"""dejavu: audio fingerprinting and recognition.

    from dejavu import Dejavu
    from dejavu.logic.recognizer.file_recognizer import FileRecognizer

    djv = Dejavu({"database_type": "sqlite", "database": {"path": "fp.db"}})
    djv.fingerprint_directory("music", [".mp3"])
    djv.recognize(FileRecognizer, "clip.wav")

The ``Dejavu`` facade builds the configuration and the store once and hands both to
the pipeline in :mod:`dejavu.logic` (decode → fingerprint → store / search → results),
whose functions take ``(store, config)``; stores live in :mod:`dejavu.database`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from dejavu.config import Config, load_config
from dejavu.exceptions import ConfigError, DatabaseError, DecodeError, DejavuError
from dejavu.quoting import quote
from dejavu.version import __version__

logging.getLogger(__name__).addHandler(logging.NullHandler())  # the application decides what to show

if TYPE_CHECKING:  # numpy is imported by the pipeline stages, when they run
    import numpy as np

    from dejavu.logic.batch import ClipResult
    from dejavu.logic.ingest import FileOutcome, IngestReport
    from dejavu.logic.monitor import Segment
    from dejavu.logic.rebuild import RebuildReport
    from dejavu.logic.transfer import TransferReport
__all__ = ["Dejavu", "DejavuError", "ConfigError", "DatabaseError", "DecodeError", "__version__"]


class Dejavu:
    """Fingerprint songs into a store and recognize audio against it.

    ``config`` is the original's dict (or a :class:`~dejavu.config.Config`); None
    means the embedded SQLite store ``dejavu.db`` in the current directory.
    """

    def __init__(self, config: Mapping[str, Any] | Config | None = None) -> None:
        from dejavu.database import connect

        self.cfg = load_config(config)
        self.config = dict(self.cfg.raw)
        self.db = connect(self.cfg.database_type, dict(self.cfg.database))
        self.db.check_settings(self.cfg.fingerprint.stored_settings())

    @property
    def limit(self) -> float | None:
        """Seconds fingerprinted from the start of each file (None: all); the
        configuration's ``fingerprint_limit``, which setting this changes."""
        return self.cfg.fingerprint_limit

    @limit.setter
    def limit(self, seconds: float | None) -> None:
        self.cfg = replace(self.cfg, fingerprint_limit=seconds if seconds and seconds > 0 else None)

    # ------------------------------------------------------------- songs
    @property
    def songs(self) -> list[dict[str, Any]]:
        """Fingerprinted songs (read from the store on each access)."""
        return self.db.get_songs()

    @property
    def songhashes_set(self) -> set[str]:
        """Uppercase hex SHA1s of the fingerprinted files."""
        return self.db.get_fingerprinted_sha1s()

    def get_fingerprinted_songs(self) -> list[dict[str, Any]]:
        """Every fingerprinted song as a dict (song_id, song_name, file_sha1, total_hashes, ...)."""
        return self.db.get_songs()

    def delete_songs_by_id(self, song_ids: Iterable[int]) -> int:
        """Delete songs and their fingerprints; return how many were deleted."""
        return self.db.delete_songs_by_id(song_ids)

    def rename_song(self, song_id: int, song_name: str) -> bool:
        """Give song ``song_id`` a new (non-empty) name; False if no song has that id."""
        from dejavu.logic.decoder import clean_text

        if not isinstance(song_name, str) or not song_name.strip():
            raise ConfigError(f"a song name must be non-empty text, got {song_name!r}")
        return self.db.rename_song(int(song_id), clean_text(song_name))

    def stats(self) -> dict[str, Any]:
        """Counts and size of the store: songs, fingerprints, audio_seconds, size_bytes."""
        return self.db.stats()

    # ------------------------------------------------------------- fingerprinting
    def fingerprint_directory(self, path: str, extensions: str | Iterable[str],
                              nprocesses: int | None = None, progress: bool = False,
                              cluster: str | None = None) -> IngestReport:
        """Fingerprint every file under ``path`` whose extension is listed.

        ``extensions`` may be ``[".mp3", "wav"]`` or a single string; ``nprocesses``
        defaults to the CPU count; ``cluster``: decode and fingerprint on the Dask cluster
        whose scheduler is at this address (``tcp://HOST:PORT``) instead.  Files already stored (same SHA1) are skipped and a
        failing file does not stop the batch.  Returns an
        :class:`~dejavu.logic.ingest.IngestReport`.
        """
        from dejavu.logic import decoder
        from dejavu.logic.ingest import ingest

        if not os.path.isdir(path):
            raise DecodeError(f"{quote(path)}: not a directory")
        files = decoder.find_files(path, extensions)
        return ingest(self.db, self.cfg, [(f, None) for f, _ in files], nprocesses, progress, cluster)

    def fingerprint_file(self, file_path: str, song_name: str | None = None) -> FileOutcome:
        """Fingerprint one file (``song_name`` defaults to the file name without extension).

        Returns the :class:`~dejavu.logic.ingest.FileOutcome`; raises DecodeError if the
        file cannot be fingerprinted.
        """
        from dejavu.logic.ingest import ingest

        report = ingest(self.db, self.cfg, [(file_path, song_name)], 1)
        if report.failed:
            raise DecodeError(report.failed[0].reason)
        return (report.fingerprinted or report.skipped)[0]

    def fingerprint_files(self, paths: Iterable[str], nprocesses: int | None = None, progress: bool = False,
                          song_names: Sequence[str | None] | None = None) -> IngestReport:
        """Fingerprint a list of files (named by ``song_names``, default: their file names);
        returns an IngestReport (failures are in it, not raised)."""
        from dejavu.logic.ingest import ingest

        paths = list(paths)
        names = list(song_names) if song_names is not None else [None] * len(paths)
        return ingest(self.db, self.cfg, list(zip(paths, names)), nprocesses, progress)

    def rebuild_from(self, source: str | os.PathLike[str] | Mapping[str, Any] | Config,
                     nprocesses: int | None = None, progress: bool = False) -> RebuildReport:
        """Fingerprint the songs of another store into this one from their source files,
        keeping their names (e.g. to move a store of other settings to the current format).

        ``source``: an SQLite file, a JSON configuration file, a database URL, or a config
        (see :func:`dejavu.database.catalogue.source_config`); it is only read.  Songs whose
        file is gone, unreadable or changed (SHA1) are listed in the returned
        :class:`~dejavu.logic.rebuild.RebuildReport`, not raised.  Raises ConfigError if
        ``source`` is this store, DatabaseError if its song list cannot be read.
        """
        from dejavu.database.catalogue import read_song_list, refuse_same_store, source_config
        from dejavu.logic.rebuild import rebuild

        old = source_config(source)
        refuse_same_store(old, self.cfg)
        songs = read_song_list(old.database_type, old.database)
        return rebuild(self.db, self.cfg, songs, nprocesses, progress)

    def export_catalogue(self, path: str, progress: Callable[[int], None] | None = None) -> TransferReport:
        """Write every song of the store, fingerprints included, to the archive ``path`` (see
        :mod:`dejavu.logic.transfer`); ``progress(n)`` as each n songs are written."""
        from dejavu.logic.transfer import export_catalogue

        return export_catalogue(self.db, self.cfg, path, progress)

    def import_catalogue(self, path: str, progress: Callable[[int], None] | None = None) -> TransferReport:
        """Store the songs of the archive ``path`` (made by :meth:`export_catalogue` with the
        same fingerprint settings), skipping those already stored; ``progress(n)`` as each n
        songs are handled."""
        from dejavu.logic.transfer import import_catalogue

        return import_catalogue(self.db, self.cfg, path, progress)

    def generate_fingerprints(self, samples: np.ndarray, Fs: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(hashes int64, offsets int32) of float mono ``samples`` at ``Fs`` Hz (stored-side settings)."""
        from dejavu.logic.fingerprint import fingerprint
        from dejavu.logic.resample import resample

        fp = self.cfg.fingerprint
        return fingerprint(resample(samples, Fs or fp.sample_rate, fp.sample_rate), fp)

    # ------------------------------------------------------------- recognition
    def recognize(self, recognizer: type, *options: Any, **kwoptions: Any) -> dict[str, Any]:
        """``recognizer(self).recognize(*options, **kwoptions)``, e.g. ``recognize(FileRecognizer, path)``."""
        return recognizer(self).recognize(*options, **kwoptions)

    def recognize_files(self, paths: Iterable[str], nprocesses: int | None = 1) -> Iterator[ClipResult]:
        """Recognize many files (folders: their audio files, recursively), ``nprocesses`` at a
        time (None: the CPU count), yielding a :class:`~dejavu.logic.batch.ClipResult` per file,
        in order; a file that cannot be decoded gets its error, the others go on."""
        from dejavu.logic.batch import find_clips, recognize_files

        return recognize_files(self.db, self.cfg, find_clips(list(paths)), nprocesses or os.cpu_count() or 1)

    def recognize_samples(self, samples: np.ndarray, sample_rate: int) -> dict[str, Any]:
        """Recognize float mono audio, shape (n,), at ``sample_rate`` Hz."""
        from dejavu.logic.search import recognize_samples

        return recognize_samples(self.db, self.cfg, samples, sample_rate)

    def monitor(self, source: str, window: float | None = None, hop: float | None = None,
                **options: Any) -> Iterator[Segment]:
        """Known songs in a long stream, as :class:`~dejavu.logic.monitor.Segment` objects
        yielded as each one ends.

        ``source``: a file, a URL, ``"-"`` (stdin) or ``"mic"``; ``window``/``hop`` in
        seconds (None = the ``monitor`` configuration); ``options``: ``input_args``
        (ffmpeg input options, e.g. for raw PCM) and ``stdin``.
        """
        from dejavu.logic.monitor import monitor

        return monitor(self.db, self.cfg, source, window, hop, **options)

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()

    def __enter__(self) -> "Dejavu":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

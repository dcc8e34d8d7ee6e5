"""Parts of the ``dejavu`` command line kept out of :mod:`dejavu.cli`: choosing the store
(--config, --db), guarding read-only commands, recognizing many files, --delete and
--rename, and log lines that do not break a progress bar.  Thin, like the CLI: they parse,
call the library and print.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

from dejavu.cli import EXIT_ERROR, EXIT_NO_MATCH, EXIT_OK, _emit
from dejavu.config import ENV_DATABASE_URL, Config, load_config, read_config_file, read_config_json
from dejavu.exceptions import ConfigError, DatabaseError
from dejavu.quoting import quote

log = logging.getLogger("dejavu")


class _AboveProgressBar(logging.StreamHandler):
    """Log lines on stderr, written above the progress bar while one is shown (tqdm.write)."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm = sys.modules.get("tqdm")  # imported only when a bar is, or was, shown
        if tqdm is None:
            super().emit(record)
            return
        try:
            tqdm.tqdm.write(self.format(record), file=self.stream)
        except Exception:  # as logging does: report the failure, never raise
            self.handleError(record)


def setup_logging(level: int) -> None:
    """``dejavu: message`` lines on stderr at ``level`` and above."""
    logging.basicConfig(level=level, format="dejavu: %(message)s", handlers=[_AboveProgressBar(sys.stderr)])


def paths_after_double_dash(argv: Sequence[str]) -> list[str]:
    """``argv`` with the ``--`` removed and each later argument that starts with ``-`` (a
    file name such as ``-x.mp3``) written as ``./-x.mp3``, the same file, so that argparse
    takes it for a value, not an option.  Without ``--`` argv is unchanged."""
    argv = list(argv)
    if "--" not in argv:
        return argv
    cut = argv.index("--")
    return argv[:cut] + [os.path.join(os.curdir, a) if a.startswith("-") and a != "-" else a for a in argv[cut + 1:]]


def show_progress(args: argparse.Namespace) -> bool:
    """A progress bar only where someone watches: stderr is a terminal, no -q/--no-progress."""
    return not args.no_progress and not args.quiet and sys.stderr.isatty()


def configuration(args: argparse.Namespace) -> Config:
    """The configuration: --config's file (or the defaults), with --db PATH (an SQLite store
    at PATH) replacing its database, and DEJAVU_DATABASE_URL, for that command line."""
    if not args.db:
        return read_config_file(args.config) if args.config else load_config(None)
    raw = read_config_json(args.config) if args.config else {}
    if not isinstance(raw, dict):
        return read_config_file(args.config)  # one line saying what is wrong with the file
    environ = {k: v for k, v in os.environ.items() if k != ENV_DATABASE_URL}
    try:  # loaded once: its warnings are said once
        return load_config({**raw, "database_type": "sqlite", "database": {"path": args.db}}, environ=environ)
    except ConfigError as exc:
        raise ConfigError(f"{quote(args.config)}: {exc}" if args.config else str(exc)) from None


def needs_a_store(args: argparse.Namespace) -> bool:
    """Commands that never create a store: the read-only ones (--export too), --delete and --rename."""
    return bool(args.recognize or args.monitor or args.list or args.stats or args.delete or args.rename
                or args.export)


def require_store(cfg: Config) -> None:
    """Raise DatabaseError unless the configured SQLite store exists (a server's database
    is created by its administrator: connecting says if it is missing)."""
    if cfg.database_type != "sqlite":
        return
    from dejavu.database import get_database

    get_database("sqlite")(**dict(cfg.database))  # ConfigError for bad options first, as opening would say
    path = str(cfg.database["path"])
    if path != ":memory:" and not os.path.exists(path):
        raise DatabaseError(f"no database at {quote(path)} (fingerprint a folder first, or pass --db/--config)")


def hint_if_empty(djv: Any) -> None:
    """A line on stderr when the store holds no song yet (every query would find nothing)."""
    if djv.db.get_num_songs() == 0:
        log.warning("the database %s holds no songs yet: fingerprint some first, e.g. dejavu --fingerprint "
                    "DIR mp3", quote(djv.db.location))


def recognize_many(djv: Any, paths: Sequence[str], nprocesses: int | None) -> int:
    """One JSON line per file (folders: their audio files), with its ``path``; exit status 0
    if every file matched, else 1 (a file that failed is also named on stderr)."""
    from dejavu.logic.decoder import clean_text

    status = EXIT_OK
    count = 0
    for clip in djv.recognize_files(paths, nprocesses):
        count += 1
        if clip.error is not None:
            log.error("%s", clip.error)
            _emit({"path": clean_text(clip.path), "error": clip.error})
            status = EXIT_NO_MATCH
        else:
            _emit({"path": clean_text(clip.path), **clip.result})
            status = status if clip.result["results"] else EXIT_NO_MATCH
    if not count:
        log.error("no audio files in %s", ", ".join(quote(p) for p in paths))
        return EXIT_NO_MATCH
    return status


def delete(djv: Any, song_ids: Sequence[int]) -> int:
    """Delete songs; name the ids no song has (exit status 1 if any)."""
    wanted = sorted(set(song_ids))
    missing = sorted(set(wanted) - set(djv.db.get_songs_by_ids(wanted)))
    deleted = djv.delete_songs_by_id(wanted)
    log.info("deleted %d song(s)", deleted)
    if missing:
        log.error("no song with id %s", ", ".join(map(str, missing)))
    return EXIT_OK if deleted == len(wanted) else EXIT_NO_MATCH


def rename(djv: Any, song_id: str, name: str) -> int:
    """--rename ID NAME."""
    try:
        number = int(song_id)
    except ValueError:
        log.error("--rename takes a song id (an integer) and a name, got %s", quote(song_id))
        return EXIT_ERROR
    if not djv.rename_song(number, name):
        log.error("no song with id %d", number)
        return EXIT_NO_MATCH
    log.info("song %d is now named %s", number, quote(name))
    return EXIT_OK

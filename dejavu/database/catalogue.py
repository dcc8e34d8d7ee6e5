"""The song list of a store, read raw: for rebuilding a store in the current format.

:func:`read_song_list` reads the ``songs`` table without the format and settings checks
of :mod:`dejavu.database.meta`, so it works on stores written with other fingerprint
settings; it opens the store read-only (SQLite: a ``mode=ro`` URI; servers: a READ ONLY
transaction) and writes nothing.  :func:`source_config` turns what names such a store
(an SQLite file, a JSON configuration file, a database URL) into a configuration.
"""
from __future__ import annotations

import os
import sqlite3
from typing import Any, Mapping
from urllib.parse import quote

from dejavu.config import Config, load_config, read_config_file
from dejavu.exceptions import ConfigError, DatabaseError

#: The first bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"
_SONGS_SQL = "SELECT song_name, source_path, file_sha1 FROM songs WHERE fingerprinted = 1 ORDER BY song_id"
_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def source_config(source: str | os.PathLike[str] | Mapping[str, Any] | Config) -> Config:
    """The configuration of the store ``source`` names: a Config or config dict, a database URL
    (``postgresql://``, ``mysql://``, ``sqlite:///``), a JSON configuration file or an SQLite file.

    ``DEJAVU_DATABASE_URL`` and ``DEJAVU_DATABASE_PASSWORD`` are not applied: they name the
    configured store, not this one.  Raises ConfigError naming ``source`` if it names none.
    """
    if isinstance(source, Config):
        return source
    if isinstance(source, Mapping):
        return load_config(source, environ={})
    text = os.fspath(source)
    if "://" in text:
        return load_config({"database": text}, environ={})
    try:
        with open(text, "rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"{text}: {reason[:1].lower()}{reason[1:]}") from None
    if head == SQLITE_MAGIC:
        return load_config({"database_type": "sqlite", "database": {"path": text}}, environ={})
    if text.lower().endswith(".json") or head.lstrip().startswith(b"{"):
        return load_config(read_config_file(text).raw, environ={})
    raise ConfigError(f"{text}: neither an SQLite database nor a JSON configuration file")


def store_identity(cfg: Config) -> tuple[Any, ...]:
    """What identifies the store ``cfg`` names: (type, real path) or (type, host, port, database)."""
    if cfg.database_type == "sqlite":
        return "sqlite", os.path.realpath(str(cfg.database.get("path", "")))
    from dejavu.database import open_store

    db = open_store(cfg.database_type, dict(cfg.database))
    host = "localhost" if db.host in _LOOPBACK else db.host.lower()
    return db.type, host, db.port, db.database


def refuse_same_store(source: Config, target: Config) -> None:
    """Raise ConfigError if ``source`` and ``target`` name the same store."""
    if store_identity(source) == store_identity(target):
        where = source.database.get("path") if source.database_type == "sqlite" else source.database_type
        raise ConfigError(f"{where}: cannot rebuild a store into itself: rebuild into a new database "
                          "(another path or database name), then replace the old one with it")


def read_song_list(database_type: str, options: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every fingerprinted song of a store, by id: ``song_name``, ``source_path`` (None if not
    recorded) and ``file_sha1`` (uppercase hex).

    Raises DatabaseError (one line) if the store cannot be read, has no ``songs`` table, or
    does not record its songs' source paths (format 1, dejavu 1.x).
    """
    if database_type == "sqlite":
        path = str(options.get("path", ""))
        conn, location, errors, begin = _open_sqlite(path), path, (sqlite3.Error,), ()
        tables_sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        from dejavu.database import open_store

        db = open_store(database_type, dict(options))
        conn, location, errors = db.connection, db.location, db.driver_errors
        begin, tables_sql = ("SET TRANSACTION READ ONLY",), db.tables_sql
    try:
        cur = conn.cursor()
        for statement in begin:
            cur.execute(statement)
        cur.execute(tables_sql)
        if "songs" not in {str(row[0]).lower() for row in cur.fetchall()}:
            raise DatabaseError(f"{location}: not a dejavu store (it has no songs table)")
        cur.execute("SELECT * FROM songs WHERE 1 = 0")
        columns = {str(column[0]).lower() for column in cur.description}
        cur.fetchall()
        if "source_path" not in columns:
            raise DatabaseError(f"{location}: this store does not record where its songs came from (a store of "
                                "format 1, dejavu 1.x): fingerprint the music again with --fingerprint")
        cur.execute(_SONGS_SQL)
        rows = cur.fetchall()
    except errors as exc:
        raise DatabaseError(f"{location}: cannot read its songs: {' '.join(str(exc).split())}") from None
    finally:
        _close(conn)
    return [{"song_name": str(name), "source_path": None if path is None else str(path),
             "file_sha1": _hex(sha1)} for name, path, sha1 in rows]


def _open_sqlite(path: str) -> sqlite3.Connection:
    """A read-only connection to an existing SQLite file (raises DatabaseError)."""
    if not os.path.isfile(path):
        raise DatabaseError(f"{path}: no such database file")
    try:
        return sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True, timeout=60.0)
    except sqlite3.Error as exc:
        raise DatabaseError(f"{path}: cannot open: {exc}") from None


def _close(conn: Any) -> None:
    try:
        conn.rollback()
        conn.close()
    except Exception:  # closing a broken connection may fail; nothing to keep
        pass


def _hex(sha1: Any) -> str:
    """A stored file SHA1 (bytes, memoryview, or the original's hex text) as uppercase hex."""
    return sha1.upper() if isinstance(sha1, str) else bytes(sha1).hex().upper()

"""MySQL / MariaDB dialect (mysqlclient): InnoDB, fingerprints clustered by song.

InnoDB stores a table as its primary key.  With PRIMARY KEY (song_id, offset, hash)
a song's rows are appended in key order (full pages, about 36 bytes a row) and
deleting a song is one key range.  The secondary index on hash holds the primary key
columns too, i.e. (hash, song_id, offset): lookups read that index only.
Measured on 1.25 M fingerprints this takes 71 bytes a row, against 104 for
PRIMARY KEY (hash, song_id, offset) plus an index on song_id (random inserts leave
the clustered pages half empty) and 77 for that key alone (whose deletes scan the
whole table).

``load_catalogue`` (:class:`~dejavu.database.server.ServerDatabase`) drops the hash index,
appends the rows in primary-key order, a batch of whole songs per transaction, with
``LOAD DATA LOCAL INFILE`` from a temporary tab-separated file (written by numpy while the
previous batch loads; multi-row INSERTs if the server has ``local_infile`` off), then adds
the index back (InnoDB builds it by sorting) and analyzes.  DDL commits in MySQL, so a
load is not one transaction: a failed load empties the store again.
"""
from __future__ import annotations

import os
import socket
import tempfile
from typing import Any

import MySQLdb
import numpy as np

from dejavu.database.server import ServerDatabase
from dejavu.exceptions import DatabaseError

_ER_DUP_ENTRY = 1062
#: Client errors that mean the server connection is gone (server gone away, lost, ...).
_CR_DISCONNECTS = {2006, 2013, 2055}
#: Client errors for "could not reach the server" (the OS error is not reported reliably).
_CR_UNREACHABLE = {2002, 2003}
#: The secondary index of fingerprints (its clause in CREATE TABLE and ALTER TABLE).
_HASH_INDEX = "ix_fingerprints_hash (hash)"
#: Characters of a row in the loader's files: three fixed-width numbers (sign, digits), tabs, newline.
_WIDTHS = (20, 11, 11)


class MySQLDatabase(ServerDatabase):
    """InnoDB tables; hits come from the covering hash index in batched IN lists."""

    type = "mysql"
    placeholder = "%s"
    offset_column = "`offset`"
    max_params = 6000
    default_port = 3306
    driver_errors = (MySQLdb.Error,)
    hash_table = "JSON_TABLE(?, '$[*]' COLUMNS (value BIGINT PATH '$')) AS q"  # MySQL 8.0.4+, MariaDB 10.6+
    tables_sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()"
    schema = (
        """CREATE TABLE IF NOT EXISTS songs (
            song_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
            song_name TEXT NOT NULL,
            fingerprinted TINYINT NOT NULL DEFAULT 0,
            file_sha1 BINARY(20) NOT NULL UNIQUE,
            total_hashes INT NOT NULL DEFAULT 0,
            duration DOUBLE NOT NULL DEFAULT 0,
            date_created DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
            date_modified DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
            source_path TEXT
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""",
        f"""CREATE TABLE IF NOT EXISTS fingerprints (
            hash BIGINT NOT NULL,
            song_id INT NOT NULL,
            `offset` INT NOT NULL,
            PRIMARY KEY (song_id, `offset`, hash),
            KEY {_HASH_INDEX}
        ) ENGINE=InnoDB""",
    )
    load_start = ("ALTER TABLE fingerprints DROP INDEX ix_fingerprints_hash",)
    load_finish = (f"ALTER TABLE fingerprints ADD INDEX {_HASH_INDEX}", "ANALYZE TABLE songs, fingerprints")

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._infile: Any = None  # the loader's connection that may send files

    def _open(self, **options: Any) -> Any:
        credentials = {k: v for k, v in (("user", self.user), ("password", self.password)) if v is not None}
        conn = MySQLdb.connect(host=self.host, port=self.port, database=self.database, charset="utf8mb4",
                               connect_timeout=self.connect_timeout, autocommit=False,
                               **credentials, **{**self.extra, **options})
        with conn.cursor() as cur:
            # Row locks only on rows really written; no gap locks from scans.
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        return conn

    def _connect_reason(self, exc: Exception) -> str:
        code = exc.args[0] if exc.args else None
        text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        if code in _CR_UNREACHABLE and self.host != "localhost" and "unix_socket" not in self.extra:
            text = self._socket_reason() or text  # (MySQL's "localhost" means its unix socket)
        return text[:1].lower() + text[1:]

    def _socket_reason(self) -> str | None:
        """What the OS says when connecting to host:port (the driver only reports an errno)."""
        try:
            socket.create_connection((self.host, self.port), timeout=min(self.connect_timeout, 5)).close()
        except socket.timeout:
            return "timed out"
        except OSError as exc:
            return exc.strerror or str(exc)
        return None

    def _is_duplicate(self, exc: Exception) -> bool:
        return isinstance(exc, MySQLdb.IntegrityError) and bool(exc.args) and exc.args[0] == _ER_DUP_ENTRY

    def _is_disconnect(self, exc: Exception) -> bool:
        if isinstance(exc, MySQLdb.InterfaceError):
            return True
        return isinstance(exc, MySQLdb.OperationalError) and bool(exc.args) and exc.args[0] in _CR_DISCONNECTS

    def _bulk_insert(self, cur: Any, rows: np.ndarray) -> None:
        """Multi-row INSERTs in primary-key order, so InnoDB appends instead of splitting pages."""
        super()._bulk_insert(cur, rows[np.lexsort((rows[:, 0], rows[:, 2], rows[:, 1]))])

    def _load_begin(self, cur: Any) -> None:
        """Open the connection that sends the row files, if the server accepts them (``local_infile``)."""
        cur.execute("SELECT @@local_infile")
        if cur.fetchone()[0]:
            self._infile = self._open(local_infile=1)

    def _load_prepare(self, rows: np.ndarray, directory: str) -> Any:
        """The rows as a tab-separated file in ``directory`` (its path), or as they are if the
        server does not accept files."""
        if self._infile is None:
            return rows
        widths = np.cumsum((0,) + tuple(w + 1 for w in _WIDTHS))  # each number is followed by \t or \n
        text = np.full((len(rows), widths[-1]), ord("\t"), dtype=np.uint8)
        text[:, -1] = ord("\n")
        for column, (start, width) in enumerate(zip(widths, _WIDTHS)):
            values = rows[:, column]
            text[:, start] = np.where(values < 0, ord("-"), ord("0"))
            magnitude = np.abs(values).view(np.uint64)  # abs(-2**63) wraps to 2**63 as uint64
            for digit in range(start + width - 1, start, -1):
                magnitude, text[:, digit] = np.divmod(magnitude, np.uint64(10))
            text[:, start + 1:start + width] += ord("0")
        handle, path = tempfile.mkstemp(suffix=".tsv", dir=directory)
        with os.fdopen(handle, "wb") as out:
            out.write(text.tobytes())
        return path

    def _load_rows(self, cur: Any, prepared: Any) -> None:
        """Load one batch and commit it (a transaction per batch keeps InnoDB's undo log small)."""
        if isinstance(prepared, str):
            with self._infile.cursor() as infile:
                infile.execute("LOAD DATA LOCAL INFILE %s INTO TABLE fingerprints (hash, song_id, `offset`)",
                               (prepared,))
            self._infile.commit()
            os.remove(prepared)
        else:
            super()._load_rows(cur, prepared)
            self.connection.commit()

    def _load_end(self, undo: bool) -> None:
        """Close the file-sending connection; ``undo``: empty the store again (the songs, and the
        fingerprints table with what it holds)."""
        if self._infile is not None:
            self._infile.close()
            self._infile = None
        if undo:
            try:
                with self.cursor(write=True) as cur:
                    cur.execute("DELETE FROM songs")
                    cur.execute("DROP TABLE fingerprints")
                    for statement in self.schema:
                        cur.execute(statement)
            except DatabaseError:  # e.g. the connection is gone: the load's own error says more
                pass

    def size_bytes(self) -> int | None:
        with self.cursor() as cur:
            cur.execute("ANALYZE TABLE songs, fingerprints")  # refresh the persistent statistics
            cur.fetchall()
            cur.execute("SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables "
                        "WHERE table_schema = DATABASE() AND table_name IN (%s, %s)", ("songs", "fingerprints"))
            (size,), = cur.fetchall()
        return int(size)

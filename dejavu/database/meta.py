"""Store format and fingerprint settings, recorded in every store's ``dejavu_meta`` table.

A store holds the keys of one fingerprint configuration: a query or a song fingerprinted
with other settings (window, hop, peaks, fan-out, key layout, ...) would find nothing or
wrong offsets, silently.  So the first use records ``format_version`` and every setting
that changes stored keys, and each later opening compares them with its configuration:
a difference is one error line naming the setting, never a silent empty result.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Mapping

from dejavu.exceptions import ConfigError, DatabaseError

if TYPE_CHECKING:
    from dejavu.database.base import BaseDatabase

#: Layout of the stores this version writes: 2 added ``dejavu_meta`` and ``songs.source_path``
#: (1: dejavu 1.x, SHA1 keys, settings not recorded).
STORE_FORMAT = 2
META_TABLE = "dejavu_meta"
META_DDL = f"CREATE TABLE IF NOT EXISTS {META_TABLE} (name VARCHAR(100) NOT NULL PRIMARY KEY, value TEXT NOT NULL)"


def read_meta(db: BaseDatabase) -> dict[str, str]:
    """Every recorded name → value (JSON text)."""
    return {str(name): str(value) for name, value in db._fetch(f"SELECT name, value FROM {META_TABLE}")}


def check_previous_format(db: BaseDatabase, tables: set[str]) -> None:
    """Raise DatabaseError if the store was written by dejavu 1.x (songs but no meta table)."""
    if "songs" in tables and META_TABLE not in tables:
        raise DatabaseError(
            f"{db.location}: a store of format 1 (dejavu 1.x: SHA1 keys, no recorded settings); this "
            f"version reads format {STORE_FORMAT}: fingerprint the music into a new database "
            "(another path or database name), then delete this one")


def _record(db: BaseDatabase, values: Mapping[str, str]) -> None:
    """Insert name → value rows; rows another process inserted first are left as they are."""
    for name, value in values.items():
        try:
            with db.cursor(write=True) as cur:
                cur.execute(db._sql(f"INSERT INTO {META_TABLE} (name, value) VALUES (?, ?)"), (name, value))
        except DatabaseError as exc:
            if exc.__cause__ is None or not db._is_duplicate(exc.__cause__):
                raise


def check_format(db: BaseDatabase) -> None:
    """Record the format of a new store; raise DatabaseError if the store has another one."""
    stored = read_meta(db).get("format_version")
    if stored is None:
        _record(db, {"format_version": str(STORE_FORMAT)})
        stored = read_meta(db)["format_version"]
    if int(stored) != STORE_FORMAT:
        raise DatabaseError(f"{db.location}: a store of format {stored}; this version of dejavu reads "
                            f"format {STORE_FORMAT}: use the version that wrote it, or fingerprint the music "
                            "into a new database")


def check_settings(db: BaseDatabase, settings: Mapping[str, Any]) -> None:
    """Record ``settings`` (name → JSON-able value) where the store has none; raise ConfigError
    naming the first setting whose recorded value differs."""
    _record(db, {name: json.dumps(value) for name, value in settings.items()
                 if name not in read_meta(db)})
    stored = read_meta(db)
    for name, value in settings.items():
        recorded = json.loads(stored[name])
        if recorded != value:
            raise ConfigError(
                f"{db.location}: {name} is {recorded!r} in the store but {value!r} in the configuration: "
                f"set it to {recorded!r} (the store's value), or rebuild the store into a new database with "
                "the new settings (dejavu --rebuild)")

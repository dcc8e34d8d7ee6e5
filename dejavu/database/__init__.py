"""Fingerprint stores: one shared SQL core (base.py) and a thin dialect per backend."""
from __future__ import annotations

import importlib
from typing import Any

from dejavu.database.base import BaseDatabase
from dejavu.exceptions import ConfigError, DatabaseError

#: database_type → (module, class); drivers are imported only when chosen.
DATABASES = {
    "sqlite": ("dejavu.database.sqlite", "SQLiteDatabase"),
    "mysql": ("dejavu.database.mysql", "MySQLDatabase"),
    "postgres": ("dejavu.database.postgres", "PostgreSQLDatabase"),
}


def get_database(database_type: str = "sqlite") -> type[BaseDatabase]:
    """The BaseDatabase subclass for ``database_type`` (sqlite, mysql or postgres)."""
    try:
        module_name, class_name = DATABASES[database_type.lower()]
    except KeyError:
        raise ConfigError(f"unknown database_type '{database_type}' "
                          f"(use one of: {', '.join(DATABASES)})") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DatabaseError(f"{database_type}: its driver is not installed ({exc.name}); "
                            f"pip install 'PyDejavu[{database_type}]'") from None
    return getattr(module, class_name)


def connect(database_type: str, options: dict[str, Any]) -> BaseDatabase:
    """Create the store, connect and make sure its tables exist."""
    db = get_database(database_type)(**options)
    db.setup()
    return db


__all__ = ["BaseDatabase", "DATABASES", "connect", "get_database"]

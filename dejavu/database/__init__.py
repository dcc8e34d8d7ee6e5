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


#: The PyPI package of each server backend's driver, and what building it needs.
DRIVERS = {"mysql": ("mysqlclient", ", which builds against the MySQL/MariaDB client headers "
                                    "(Debian: apt-get install libmariadb-dev pkg-config gcc)"),
           "postgres": ("psycopg2", ", which builds against libpq (Debian: apt-get install libpq-dev gcc)")}


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
        package, builds_with = DRIVERS.get(database_type.lower(), (exc.name, ""))
        raise DatabaseError(f"{database_type}: its driver is not installed (module {exc.name}, package {package}): "
                            f"pip install 'PyDejavu[{database_type.lower()}]'{builds_with}") from None
    return getattr(module, class_name)


def open_store(database_type: str, options: dict[str, Any]) -> BaseDatabase:
    """The store of ``options``, not yet connected (a postgres store with ``shards`` is a
    :class:`~dejavu.database.sharded.ShardedDatabase`)."""
    if database_type.lower() == "postgres" and "shards" in options:
        from dejavu.database.sharded import ShardedDatabase

        return ShardedDatabase(**options)
    return get_database(database_type)(**options)


def connect(database_type: str, options: dict[str, Any]) -> BaseDatabase:
    """Create the store, connect and make sure its tables exist."""
    db = open_store(database_type, options)
    db.setup()
    return db


__all__ = ["BaseDatabase", "DATABASES", "connect", "get_database", "open_store"]

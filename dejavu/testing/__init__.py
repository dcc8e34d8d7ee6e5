"""Throwaway PostgreSQL and MariaDB servers, for the test suite and the benchmarks.

The servers are real: they are started from the binaries installed on the
machine (Debian's ``postgresql`` and ``mariadb-server`` packages), listen on
127.0.0.1 only, on a free port picked at runtime, and authenticate a
``dejavu`` user by password over TCP, so a wrong password really fails.

Typical use from a fixture::

    server = start_postgres(tmp_path_factory.mktemp("pg"))
    yield server
    server.destroy()

Layout: ``base_dir`` receives the server log (``postgres.log`` or
``mariadb.log``).  The data directory and the unix socket live in a short
private directory under /tmp, because unix socket paths are limited to about
107 bytes and because PostgreSQL, which refuses to run as root, runs as an
unprivileged user that cannot enter pytest's 0700 temporary directories.
``destroy()`` (or an ``atexit`` hook, as a fallback) removes that directory.

Any number of servers may run at once (each on its own port and directory).
:mod:`dejavu.testing.server` holds the shared machinery, :mod:`.postgres` and
:mod:`.mariadb` what differs per kind.
"""
from __future__ import annotations

from dejavu.testing.mariadb import MariaDBServer, mariadb_available, mariadb_programs, start_mariadb
from dejavu.testing.postgres import PostgresServer, postgres_available, postgres_bindir, start_postgres
from dejavu.testing.server import (
    APP_USER,
    DATABASE,
    LOOPBACK,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Server,
    ServerError,
    free_port,
    log_tail,
    wait_until_ready,
)

__all__ = [
    "APP_USER", "DATABASE", "LOOPBACK", "START_TIMEOUT", "STOP_TIMEOUT",
    "Server", "ServerError", "PostgresServer", "MariaDBServer",
    "free_port", "log_tail", "wait_until_ready",
    "postgres_available", "postgres_bindir", "start_postgres",
    "mariadb_available", "mariadb_programs", "start_mariadb",
]

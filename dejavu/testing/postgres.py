"""A throwaway PostgreSQL server: initdb, then ``postgres`` on a free 127.0.0.1 port.

The superuser ``postgres`` logs in over the private unix socket only; the ``dejavu``
role by password (scram-sha-256) over TCP.  As root, the server runs as ``postgres``
(else ``nobody``), since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from dejavu.testing.server import LOOPBACK, START_TIMEOUT, Account, Server, ServerError, require_driver, run_tool

log = logging.getLogger(__name__)

_PG_SUPERUSER = "postgres"
_PG_ROOT = Path("/usr/lib/postgresql")


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.name))


def postgres_bindir() -> Path | None:
    """Directory with ``postgres`` and ``initdb``: the highest Debian version, else PATH."""
    candidates = sorted(
        (d / "bin" for d in _PG_ROOT.glob("*") if re.fullmatch(r"\d+(\.\d+)?", d.name)),
        key=lambda bindir: _version_key(bindir.parent),
        reverse=True,
    )
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("postgres", "initdb")):
            return bindir
    return None


def postgres_available() -> bool:
    """True when PostgreSQL server binaries are installed."""
    return postgres_bindir() is not None


@dataclass(kw_only=True, eq=False)
class PostgresServer(Server):
    """A throwaway PostgreSQL server; see start_postgres."""

    bindir: Path

    kind: ClassVar[str] = "postgres"
    database_type: ClassVar[str] = "postgres"
    dsn_scheme: ClassVar[str] = "postgresql"
    _runtime_prefix: ClassVar[str] = "pg"
    # SIGINT is "fast" shutdown: it disconnects clients instead of waiting for them.
    _stop_signal: ClassVar[signal.Signals] = signal.SIGINT

    def connect(self, **overrides: Any) -> Any:
        import psycopg2

        params: dict[str, Any] = {
            "host": self.host, "port": self.port, "user": self.user,
            "password": self.password, "dbname": self.database, "connect_timeout": 5,
        }
        if "database" in overrides:
            overrides["dbname"] = overrides.pop("database")
        params.update(overrides)
        return psycopg2.connect(**params)

    def _admin_connect(self) -> Any:
        import psycopg2

        connection = psycopg2.connect(
            host=str(self.runtime_dir), port=self.port, user=_PG_SUPERUSER,
            dbname="postgres", connect_timeout=5,
        )
        connection.autocommit = True  # CREATE DATABASE refuses transactions
        return connection

    def _initialize(self) -> None:
        run_tool(
            [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", _PG_SUPERUSER,
             "--encoding=UTF8", "--locale=C", "--auth=reject", "--no-sync"],
            self.log_path, self._account, self.runtime_dir,
        )
        # Superuser over the private socket only; everyone else by password over TCP.
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "# written by dejavu.testing\n"
            f"local all {_PG_SUPERUSER} trust\n"
            f"host all all {LOOPBACK}/32 scram-sha-256\n"
        )
        if self._account:
            os.chown(hba, self._account.uid, self._account.gid)

    def _server_argv(self) -> list[str]:
        settings = {
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.runtime_dir),
            "password_encryption": "scram-sha-256",
            # Throwaway data: no durability against OS crashes, but a commit
            # still reaches the kernel, so it survives kill() of the server.
            "fsync": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "logging_collector": "off",
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def _bootstrap_statements(self) -> list[tuple[str, tuple[Any, ...] | None]]:
        return [
            (f'CREATE ROLE "{self.user}" LOGIN CREATEDB PASSWORD %s', (self.password,)),
            (f'CREATE DATABASE "{self.database}" OWNER "{self.user}" ENCODING %s', ("UTF8",)),
        ]


def start_postgres(base_dir: Path, timeout: float = START_TIMEOUT) -> Server:
    """Initialise and start a throwaway PostgreSQL server (log in ``base_dir``).

    The ``dejavu`` role (with CREATEDB) owns database ``dejavu_test`` and logs
    in with a random password over TCP (scram-sha-256).
    """
    bindir = postgres_bindir()
    if bindir is None:
        raise ServerError(f"no PostgreSQL server binaries under {_PG_ROOT} or in PATH")
    require_driver("psycopg2", "psycopg2")
    account = Account.unprivileged()
    if account:
        log.debug("running as root: PostgreSQL will run as %r", account.name)
    return PostgresServer.launch(base_dir, timeout, account, bindir=bindir)

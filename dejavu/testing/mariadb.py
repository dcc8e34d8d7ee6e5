"""A throwaway MariaDB server: mariadb-install-db, then ``mariadbd`` on a free 127.0.0.1 port.

``root`` logs in over the private unix socket only; ``dejavu`` by password over TCP.
No system configuration is read (``--no-defaults``).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from dejavu.testing.server import START_TIMEOUT, Server, ServerError, require_driver, run_tool

_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/libexec")
_BIN_DIRS = ("/usr/bin", "/usr/local/bin")


def _find_program(names: Sequence[str], dirs: Sequence[str]) -> str | None:
    """Return the first of ``names`` found in PATH, then in ``dirs``."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for directory in dirs:
        for name in names:
            candidate = Path(directory, name)
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return None


def mariadb_programs() -> tuple[str, str] | None:
    """Return (server, install-db script) paths, or None when absent."""
    server = _find_program(("mariadbd", "mysqld"), _SBIN_DIRS)
    installer = _find_program(("mariadb-install-db", "mysql_install_db"), _BIN_DIRS)
    return (server, installer) if server and installer else None


def mariadb_available() -> bool:
    """True when MariaDB server binaries are installed."""
    return mariadb_programs() is not None


@dataclass(kw_only=True, eq=False)
class MariaDBServer(Server):
    """A throwaway MariaDB server; see start_mariadb."""

    mariadbd: str
    install_db: str

    kind: ClassVar[str] = "mariadb"
    database_type: ClassVar[str] = "mysql"
    dsn_scheme: ClassVar[str] = "mysql"
    _runtime_prefix: ClassVar[str] = "my"
    _stop_signal: ClassVar[signal.Signals] = signal.SIGTERM

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / "mysqld.sock"

    def connect(self, **overrides: Any) -> Any:
        import MySQLdb

        params: dict[str, Any] = {
            "host": self.host, "port": self.port, "user": self.user,
            "password": self.password, "database": self.database,
            "charset": "utf8mb4", "connect_timeout": 5,
        }
        params.update(overrides)
        return MySQLdb.connect(**params)

    def _admin_connect(self) -> Any:
        import MySQLdb

        return MySQLdb.connect(unix_socket=str(self.socket_path), user="root", connect_timeout=5)

    def _common_options(self) -> list[str]:
        """Options shared by install-db and the server: no system config, small footprint."""
        options = [
            "--no-defaults",  # must come first; ignore /etc/mysql entirely
            f"--datadir={self.data_dir}",
            f"--socket={self.socket_path}",
            f"--tmpdir={self.runtime_dir}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M",
            "--innodb-flush-log-at-trx-commit=2",  # write at commit, fsync 1/s
            "--loose-innodb-doublewrite=0",
            "--loose-performance-schema=OFF",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
        ]
        if os.geteuid() == 0:
            options.append("--user=root")  # mariadbd refuses root without it
        return options

    def _initialize(self) -> None:
        self.data_dir.mkdir()
        run_tool(
            [self.install_db, *self._common_options(),
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            self.log_path, None, self.runtime_dir,
        )

    def _server_argv(self) -> list[str]:
        return [
            self.mariadbd, *self._common_options(),
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--pid-file={self.runtime_dir / 'mysqld.pid'}",
            "--skip-log-bin",
        ]

    def _bootstrap_statements(self) -> list[tuple[str, tuple[Any, ...] | None]]:
        statements: list[tuple[str, tuple[Any, ...] | None]] = [
            # install-db also makes password-less root@127.0.0.1, ::1 and
            # root@<hostname>; keep root on the private socket only.
            ("DELETE FROM mysql.global_priv WHERE User = '' OR Host <> 'localhost'", None),
            ("DELETE FROM mysql.proxies_priv WHERE Host <> 'localhost'", None),
            ("FLUSH PRIVILEGES", None),
            (f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4", None),
        ]
        for host in (self.host, "%"):
            statements += [
                ("CREATE USER %s@%s IDENTIFIED BY %s", (self.user, host, self.password)),
                (f"GRANT ALL PRIVILEGES ON `{self.database}`.* TO %s@%s", (self.user, host)),
                # Lets tests create extra databases named dejavu_*.
                ("GRANT ALL PRIVILEGES ON `dejavu\\_%%`.* TO %s@%s", (self.user, host)),
            ]
        return statements


def start_mariadb(base_dir: Path, timeout: float = START_TIMEOUT) -> Server:
    """Initialise and start a throwaway MariaDB server (log in ``base_dir``).

    Users ``'dejavu'@'127.0.0.1'`` and ``'dejavu'@'%'`` get all privileges on
    ``dejavu_test`` (and ``dejavu_*``) with a random password.
    """
    programs = mariadb_programs()
    if programs is None:
        raise ServerError("no mariadbd/mysqld and mariadb-install-db in PATH or /usr/sbin")
    require_driver("MySQLdb", "mysqlclient")
    return MariaDBServer.launch(base_dir, timeout, mariadbd=programs[0], install_db=programs[1])

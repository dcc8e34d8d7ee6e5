"""Throwaway PostgreSQL and MariaDB servers for the test suite.

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
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DATABASE = "dejavu_test"
APP_USER = "dejavu"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

_PG_SUPERUSER = "postgres"
_PG_ROOT = Path("/usr/lib/postgresql")
_SBIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/usr/libexec")
_BIN_DIRS = ("/usr/bin", "/usr/local/bin")
# Minimal environment for server processes: predictable messages and locale.
_SERVER_ENV = {
    "PATH": os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
    "LANG": "C",
}


class ServerError(RuntimeError):
    """A throwaway server could not be initialised, started or reached."""


# --------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 40, start: int = 0) -> str:
    """Return the last ``lines`` lines of ``path`` from byte ``start`` on."""
    try:
        with path.open("rb") as handle:
            handle.seek(start)
            data = handle.read()
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def wait_until_ready(
    probe: Callable[[], object],
    process: subprocess.Popen[bytes],
    *,
    what: str,
    log_path: Path,
    log_start: int = 0,
    timeout: float = START_TIMEOUT,
    interval: float = 0.1,
) -> float:
    """Call ``probe`` until it stops raising; return the seconds waited.

    Fails fast when ``process`` exits, and raises ServerError with the tail
    of the server log when ``timeout`` runs out.
    """
    started = time.monotonic()
    last_error: BaseException | None = None
    while True:
        code = process.poll()
        if code is not None:
            raise ServerError(
                f"{what} exited with status {code} before accepting connections; "
                f"log {log_path}:\n{log_tail(log_path, start=log_start)}"
            )
        try:
            probe()
        except Exception as exc:  # the driver's "not yet" errors vary by kind
            last_error = exc
        else:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise ServerError(
                f"{what} did not accept connections within {timeout:.0f} s "
                f"(last error: {last_error!r}); log {log_path}:\n"
                f"{log_tail(log_path, start=log_start)}"
            )
        time.sleep(interval)


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


def mariadb_programs() -> tuple[str, str] | None:
    """Return (server, install-db script) paths, or None when absent."""
    server = _find_program(("mariadbd", "mysqld"), _SBIN_DIRS)
    installer = _find_program(("mariadb-install-db", "mysql_install_db"), _BIN_DIRS)
    return (server, installer) if server and installer else None


def postgres_available() -> bool:
    """True when PostgreSQL server binaries are installed."""
    return postgres_bindir() is not None


def mariadb_available() -> bool:
    """True when MariaDB server binaries are installed."""
    return mariadb_programs() is not None


@dataclass(frozen=True)
class _Account:
    """An OS account that a server process is switched to."""

    name: str
    uid: int
    gid: int

    @classmethod
    def unprivileged(cls) -> _Account | None:
        """``postgres`` (else ``nobody``) when running as root, otherwise None."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(name, entry.pw_uid, entry.pw_gid)
        raise ServerError("running as root, but neither 'postgres' nor 'nobody' exists")

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _require_driver(module: str, pip_name: str) -> None:
    """Fail at once, not after the start timeout, when the DB driver is missing."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ServerError(f"the {module} driver is needed: pip install {pip_name} ({exc})") from exc


def _short_private_dir(kind: str, owner: _Account | None) -> Path:
    """A 0700 directory with a short path (unix socket limit), owned by ``owner``."""
    parent = "/tmp" if os.access("/tmp", os.W_OK | os.X_OK) else None
    path = Path(tempfile.mkdtemp(prefix=f"djv-{kind}-", dir=parent))
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)
    return path


def _run_tool(argv: Sequence[str], log_path: Path, account: _Account | None, cwd: Path) -> None:
    """Run an initialisation tool, appending its output to the log."""
    logger.debug("running %s", " ".join(argv))
    start = log_path.stat().st_size if log_path.exists() else 0
    kwargs = account.popen_kwargs() if account else {}
    with log_path.open("ab") as log:
        result = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=cwd, env=_SERVER_ENV, check=False, **kwargs,
        )
    if result.returncode != 0:
        raise ServerError(
            f"{Path(argv[0]).name} failed with status {result.returncode}; log {log_path}:\n"
            f"{log_tail(log_path, start=start)}"
        )


# Servers not yet destroyed, so an interrupted run does not leave them behind.
_LIVE: set[Server] = set()


@atexit.register
def _destroy_leftovers() -> None:
    for server in list(_LIVE):
        try:
            server.destroy(timeout=10.0)
        except Exception:  # best effort at interpreter exit
            logger.exception("could not clean up %s server", server.kind)


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------


@dataclass(kw_only=True, eq=False)
class Server:
    """A running throwaway database server; see start_postgres / start_mariadb."""

    kind: str
    port: int
    password: str
    runtime_dir: Path
    log_path: Path
    host: str = LOOPBACK
    user: str = APP_USER
    database: str = DATABASE
    _account: _Account | None = field(default=None, repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    database_type: ClassVar[str]  # dejavu's "database_type"
    dsn_scheme: ClassVar[str]
    _stop_signal: ClassVar[signal.Signals]

    # ---- public API -----------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The dejavu configuration dict for this server."""
        return {
            "database_type": self.database_type,
            "database": {
                "host": self.host,
                "port": self.port,
                "user": self.user,
                "password": self.password,
                "database": self.database,
            },
        }

    def dsn(self) -> str:
        """A URL such as ``postgresql://user:pw@127.0.0.1:port/db``."""
        return (
            f"{self.dsn_scheme}://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(self.database, safe='')}"
        )

    @property
    def data_dir(self) -> Path:
        return self.runtime_dir / "data"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def connect(self, **overrides: Any) -> Any:
        """A new DB-API connection as the app user over TCP; keyword
        arguments (``user``, ``password``, ``database``, ...) override."""
        raise NotImplementedError

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server on the existing data dir; wait until it is ready."""
        if self.running:
            raise ServerError(f"{self.kind} server is already running")
        if not self.data_dir.is_dir():
            raise ServerError(f"{self.kind} data dir {self.data_dir} is gone (destroyed?)")
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        began = time.monotonic()
        self._process = self._spawn(self._server_argv())
        try:
            wait_until_ready(
                self._admin_probe, self._process, what=f"{self.kind} server",
                log_path=self.log_path, log_start=log_start, timeout=timeout,
            )
        except BaseException:
            self.kill()
            raise
        logger.info(
            "%s server ready on %s:%d in %.2f s (pid %d)",
            self.kind, self.host, self.port, time.monotonic() - began, self._process.pid,
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Shut down cleanly; kill the process group if that hangs. Keeps data."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(self._stop_signal)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s server ignored %s for %.0f s; killing it",
                               self.kind, self._stop_signal.name, timeout)
                self.kill()
        self._process = None
        logger.info("%s server on port %d stopped", self.kind, self.port)

    def kill(self) -> None:
        """SIGKILL the server and its children at once (simulates a crash)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self._process = None

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop, then start again on the same data dir and port."""
        self.stop()
        self.start(timeout)

    def destroy(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server and delete its data dir and socket."""
        try:
            self.stop(timeout)
        finally:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            _LIVE.discard(self)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    # ---- per-kind hooks -------------------------------------------------

    def _initialize(self) -> None:
        """Create the data dir (initdb / install-db)."""
        raise NotImplementedError

    def _server_argv(self) -> list[str]:
        raise NotImplementedError

    def _admin_connect(self) -> Any:
        """Superuser connection over the unix socket."""
        raise NotImplementedError

    def _bootstrap_statements(self) -> list[tuple[str, tuple[Any, ...] | None]]:
        """(SQL, parameters) run as superuser once: app user and database."""
        raise NotImplementedError

    # ---- shared machinery -----------------------------------------------

    def _admin_probe(self) -> None:
        self._admin_connect().close()

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session, output appended to the log."""
        prefix: list[str] = []
        setpriv = shutil.which("setpriv")
        # The parent-death signal fires when the *thread* that forked exits,
        # so it is only safe to ask for it from the main thread.
        if setpriv and threading.current_thread() is threading.main_thread():
            prefix = [setpriv, f"--pdeathsig={self._stop_signal.name.removeprefix('SIG')}", "--"]
        kwargs = self._account.popen_kwargs() if self._account else {}
        logger.debug("starting %s", " ".join(argv))
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                prefix + argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.runtime_dir, env=_SERVER_ENV, start_new_session=True, **kwargs,
            )

    def _first_start(self, timeout: float) -> None:
        """Initialise, start (retrying once per port clash), create the app user."""
        began = time.monotonic()
        _LIVE.add(self)
        try:
            self._initialize()
            for attempt in range(3):
                try:
                    self.start(timeout)
                    break
                except ServerError as exc:
                    if attempt == 2 or "already in use" not in str(exc):
                        raise
                    self.port = free_port(self.host)
                    logger.warning("port clash; retrying %s on port %d", self.kind, self.port)
            connection = self._admin_connect()
            try:
                cursor = connection.cursor()
                for statement, params in self._bootstrap_statements():
                    cursor.execute(statement, params)
                connection.commit()
            finally:
                connection.close()
            self.connect().close()  # the app user really gets in over TCP
        except BaseException:
            self.destroy()
            raise
        logger.info("%s server initialised and started in %.2f s",
                    self.kind, time.monotonic() - began)


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


@dataclass(kw_only=True, eq=False)
class _PostgresServer(Server):
    bindir: Path

    database_type: ClassVar[str] = "postgres"
    dsn_scheme: ClassVar[str] = "postgresql"
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
        _run_tool(
            [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", _PG_SUPERUSER,
             "--encoding=UTF8", "--locale=C", "--auth=reject", "--no-sync"],
            self.log_path, self._account, self.runtime_dir,
        )
        # Superuser over the private socket only; everyone else by password over TCP.
        hba = self.data_dir / "pg_hba.conf"
        hba.write_text(
            "# written by test/servers.py\n"
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
    _require_driver("psycopg2", "psycopg2")
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    account = _Account.unprivileged()
    if account:
        logger.debug("running as root: PostgreSQL will run as %r", account.name)
    server = _PostgresServer(
        kind="postgres", port=free_port(), password=secrets.token_hex(12),
        runtime_dir=_short_private_dir("pg", account), log_path=base_dir / "postgres.log",
        bindir=bindir, _account=account,
    )
    server._first_start(timeout)
    return server


# --------------------------------------------------------------------------
# MariaDB
# --------------------------------------------------------------------------


@dataclass(kw_only=True, eq=False)
class _MariaDBServer(Server):
    mariadbd: str
    install_db: str

    database_type: ClassVar[str] = "mysql"
    dsn_scheme: ClassVar[str] = "mysql"
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
        _run_tool(
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
    _require_driver("MySQLdb", "mysqlclient")
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    server = _MariaDBServer(
        kind="mariadb", port=free_port(), password=secrets.token_hex(12),
        runtime_dir=_short_private_dir("my", None), log_path=base_dir / "mariadb.log",
        mariadbd=programs[0], install_db=programs[1],
    )
    server._first_start(timeout)
    return server

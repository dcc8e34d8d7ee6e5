"""The shared base of the throwaway servers: the Server class (start, stop, kill,
restart, destroy), the process and readiness helpers, and the cleanup at exit.

A kind of server (:mod:`dejavu.testing.postgres`, :mod:`dejavu.testing.mariadb`)
subclasses :class:`Server` and fills in its per-kind hooks.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import os
import pwd
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

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DATABASE = "dejavu_test"
APP_USER = "dejavu"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

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


@dataclass(frozen=True)
class Account:
    """An OS account that a server process is switched to."""

    name: str
    uid: int
    gid: int

    @classmethod
    def unprivileged(cls) -> Account | None:
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
        """Keyword arguments of subprocess.Popen that run the child as this account."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def require_driver(module: str, pip_name: str) -> None:
    """Fail at once, not after the start timeout, when the DB driver is missing."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ServerError(f"the {module} driver is needed: pip install {pip_name} ({exc})") from exc


def _short_private_dir(prefix: str, owner: Account | None) -> Path:
    """A 0700 directory with a short path (unix socket limit), owned by ``owner``."""
    parent = "/tmp" if os.access("/tmp", os.W_OK | os.X_OK) else None
    path = Path(tempfile.mkdtemp(prefix=f"djv-{prefix}-", dir=parent))
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)
    return path


def run_tool(argv: Sequence[str], log_path: Path, account: Account | None, cwd: Path) -> None:
    """Run an initialisation tool, appending its output to the log."""
    log.debug("running %s", " ".join(argv))
    start = log_path.stat().st_size if log_path.exists() else 0
    kwargs = account.popen_kwargs() if account else {}
    with log_path.open("ab") as output:
        result = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
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
            log.exception("could not clean up %s server", server.kind)


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------


@dataclass(kw_only=True, eq=False)
class Server:
    """A running throwaway database server; see start_postgres / start_mariadb."""

    port: int
    password: str
    runtime_dir: Path
    log_path: Path
    host: str = LOOPBACK
    user: str = APP_USER
    database: str = DATABASE
    _account: Account | None = field(default=None, repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    kind: ClassVar[str]  # "postgres", "mariadb": also the log file's name
    database_type: ClassVar[str]  # dejavu's "database_type"
    dsn_scheme: ClassVar[str]
    _runtime_prefix: ClassVar[str]  # of the private runtime directory's name
    _stop_signal: ClassVar[signal.Signals]

    @classmethod
    def launch(cls, base_dir: Path, timeout: float = START_TIMEOUT, account: Account | None = None,
               **fields: Any) -> Server:
        """Initialise and start a new server of this kind, running as ``account``: a free
        port, a random password, a private runtime dir, the log ``base_dir/<kind>.log``;
        ``fields`` are the subclass's own (program paths)."""
        base_dir = Path(base_dir)
        base_dir.mkdir(parents=True, exist_ok=True)
        server = cls(
            port=free_port(), password=secrets.token_hex(12),
            runtime_dir=_short_private_dir(cls._runtime_prefix, account),
            log_path=base_dir / f"{cls.kind}.log", _account=account, **fields,
        )
        server._first_start(timeout)
        return server

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
        log.info(
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
                log.warning("%s server ignored %s for %.0f s; killing it",
                            self.kind, self._stop_signal.name, timeout)
                self.kill()
        self._process = None
        log.info("%s server on port %d stopped", self.kind, self.port)

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
        log.debug("starting %s", " ".join(argv))
        with self.log_path.open("ab") as output:
            return subprocess.Popen(
                prefix + argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
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
                    log.warning("port clash; retrying %s on port %d", self.kind, self.port)
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
        log.info("%s server initialised and started in %.2f s",
                 self.kind, time.monotonic() - began)

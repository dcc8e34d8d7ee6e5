"""ServerDatabase: what the client/server stores (PostgreSQL, MySQL) share: connection
options, where the server is, and one-line connect errors."""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from dejavu.database.base import BaseDatabase
from dejavu.exceptions import ConfigError, DatabaseError, DatabaseUnavailableError


class ServerDatabase(BaseDatabase):
    """A client/server store (PostgreSQL, MySQL): connection options and connect errors.

    Options are the original's ``host``, ``port``, ``user``, ``password``, ``database``
    (aliases ``db``/``dbname`` and ``passwd``), ``connect_timeout`` (seconds) and
    ``max_rows_per_hash`` (see BaseDatabase); any other key is passed to the driver's
    ``connect`` as is.
    """

    #: Port used when the configuration names none.
    default_port: ClassVar[int] = 0
    _ALIASES: ClassVar[dict[str, str]] = {"db": "database", "dbname": "database", "passwd": "password"}

    def __init__(self, **options: Any) -> None:
        opts = {self._ALIASES[k]: v for k, v in options.items() if k in self._ALIASES}
        opts.update((k, v) for k, v in options.items() if k not in self._ALIASES)
        super().__init__(opts.pop("max_rows_per_hash", None), **opts)
        self.host = str(opts.pop("host", None) or "127.0.0.1")
        port, timeout = opts.pop("port", None), opts.pop("connect_timeout", 10)
        try:
            self.port = int(port or self.default_port)
            self.connect_timeout = max(1, int(timeout))
        except (TypeError, ValueError):
            raise ConfigError(f"{self.type}: port and connect_timeout must be numbers, "
                              f"got {port!r} and {timeout!r}") from None
        self.user: str | None = opts.pop("user", None)
        self.password: str | None = opts.pop("password", None)
        self.database = str(opts.pop("database", None) or "dejavu")
        self.extra = opts

    @property
    def location(self) -> str:
        return f"{self.type} at {self.host}:{self.port}/{self.database}"

    @abstractmethod
    def _open(self) -> Any:
        """Open a driver connection with autocommit off (driver errors propagate)."""

    @abstractmethod
    def _connect_reason(self, exc: Exception) -> str:
        """Why a connection attempt failed, in a few words (no location, one line)."""

    def _connect(self) -> Any:
        try:
            return self._open()
        except (*self.driver_errors, TypeError) as exc:  # TypeError: unknown option
            reason = self._connect_reason(exc) if not isinstance(exc, TypeError) else str(exc)
            error = DatabaseError if isinstance(exc, TypeError) else DatabaseUnavailableError
            raise error(f"cannot connect to {self.type} at {self.host}:{self.port}: "
                        f"{' '.join(reason.split())}") from None

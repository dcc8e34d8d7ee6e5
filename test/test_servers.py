"""Tests for the throwaway PostgreSQL / MariaDB servers of dejavu.testing."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from dejavu.testing import (
    Server,
    ServerError,
    mariadb_available,
    postgres_available,
    start_mariadb,
    start_postgres,
)

KINDS = [
    pytest.param(
        "postgres",
        marks=pytest.mark.skipif(not postgres_available(), reason="PostgreSQL binaries not installed"),
    ),
    pytest.param(
        "mariadb",
        marks=pytest.mark.skipif(not mariadb_available(), reason="MariaDB binaries not installed"),
    ),
]
STARTERS = {"postgres": start_postgres, "mariadb": start_mariadb}
BLOB_TYPE = {"postgres": "BYTEA", "mariadb": "VARBINARY(32)"}


@pytest.fixture(scope="module", params=KINDS)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = STARTERS[request.param](tmp_path_factory.mktemp(request.param))
    try:
        yield started
    finally:
        started.destroy()


def _query(server: Server, sql: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    connection = server.connect()
    try:
        cursor = connection.cursor()
        cursor.execute(sql, params)
        rows = [tuple(row) for row in cursor.fetchall()] if cursor.description else []
        connection.commit()
        return rows
    finally:
        connection.close()


def _create_table(server: Server, name: str) -> None:
    _query(server, f"CREATE TABLE {name} (id INTEGER PRIMARY KEY, "
                   f"name VARCHAR(200) NOT NULL, hash {BLOB_TYPE[server.kind]} NOT NULL)")


def test_config_and_dsn_describe_the_server(server: Server) -> None:
    database = server.config()["database"]
    assert server.config()["database_type"] == {"postgres": "postgres", "mariadb": "mysql"}[server.kind]
    assert database == {"host": "127.0.0.1", "port": server.port, "user": "dejavu",
                        "password": server.password, "database": "dejavu_test"}
    url = urlsplit(server.dsn())
    assert url.scheme == {"postgres": "postgresql", "mariadb": "mysql"}[server.kind]
    assert (url.hostname, url.port, url.username, unquote(url.password or ""), url.path) == (
        "127.0.0.1", server.port, "dejavu", server.password, "/dejavu_test")


def test_parameterized_insert_and_select(server: Server) -> None:
    _create_table(server, "roundtrip")
    rows = [(1, "Café del Mar ☕", b"\x00\xffhash"), (2, "O'Brien; DROP TABLE x", b"\x01" * 20)]
    connection = server.connect()
    try:
        cursor = connection.cursor()
        cursor.executemany("INSERT INTO roundtrip (id, name, hash) VALUES (%s, %s, %s)", rows)
        connection.commit()
        cursor.execute("SELECT id, name, hash FROM roundtrip WHERE name = %s", (rows[1][1],))
        fetched = [(i, n, bytes(h)) for i, n, h in cursor.fetchall()]
    finally:
        connection.close()
    assert fetched == [rows[1]]
    assert _query(server, "SELECT name FROM roundtrip WHERE id = %s", (1,)) == [("Café del Mar ☕",)]


def test_wrong_password_and_unknown_user_are_refused(server: Server) -> None:
    for overrides in ({"password": "not-the-password"}, {"user": "intruder"}):
        with pytest.raises(Exception) as refused:
            server.connect(**overrides).close()
        message = str(refused.value)
        if server.kind == "postgres":
            assert "password authentication failed" in message
        else:
            assert refused.value.args[0] == 1045, message  # ER_ACCESS_DENIED_ERROR
    server.connect().close()  # the right credentials still work


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN state on ``port`` (Linux /proc)."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                raw = bytes.fromhex(address)
                # /proc prints each 32-bit word in host (little-endian) order.
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
                found.add(socket.inet_ntop(family, words))
    return found


def test_listens_on_loopback_only(server: Server) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc/net/tcp")
    assert _listening_addresses(server.port) == {"127.0.0.1"}


def test_restart_keeps_data_and_port(server: Server) -> None:
    _create_table(server, "survivors")
    _query(server, "INSERT INTO survivors (id, name, hash) VALUES (%s, %s, %s)", (7, "kept", b"k"))
    port = server.port
    idle = server.connect()  # an open client must not make stop() hang
    try:
        server.restart()
    finally:
        idle.close()
    assert server.port == port and server.running
    assert _query(server, "SELECT id, name FROM survivors") == [(7, "kept")]


def test_kill_then_start_recovers_committed_rows(server: Server) -> None:
    _create_table(server, "crashy")
    _query(server, "INSERT INTO crashy (id, name, hash) VALUES (%s, %s, %s)", (1, "committed", b"c"))
    server.kill()
    assert not server.running
    server.start()
    assert _query(server, "SELECT name FROM crashy") == [("committed",)]


def test_start_failure_reports_log_tail(server: Server) -> None:
    server.stop()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR only to ignore TIME_WAIT leftovers: a listener still blocks the port.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((server.host, server.port))
        squatter.listen()
        with pytest.raises(ServerError) as failed:
            server.start(timeout=30)
        assert "already in use" in str(failed.value)  # from the server's own log
        assert not server.running
    finally:
        squatter.close()
        if not server.running:
            server.start()
    assert server.running

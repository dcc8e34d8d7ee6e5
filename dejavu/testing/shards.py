"""A throwaway sharded PostgreSQL store: a coordinator and N shard servers (see dejavu.testing).

Each is a server of :func:`dejavu.testing.start_postgres`.  On the coordinator the
superuser creates the extension ``postgres_fdw`` and lets the ``dejavu`` role use it
(what an administrator does once); the store's setup does the rest as ``dejavu``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dejavu.testing.server import Server
from dejavu.testing.postgres import start_postgres


def grant_fdw(coordinator: Server, database: str | None = None) -> None:
    """As the superuser: CREATE EXTENSION postgres_fdw in the coordinator's database (or ``database``
    on its server), usable by its user."""
    import psycopg2

    conn = psycopg2.connect(host=str(coordinator.runtime_dir), port=coordinator.port, user="postgres",
                            dbname=database or coordinator.database, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
            cur.execute(f'GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO "{coordinator.user}"')
        conn.commit()
    finally:
        conn.close()


def start_sharded(base_dir: Path, n_shards: int) -> tuple[Server, list[Server]]:
    """Start a coordinator and ``n_shards`` shard servers (logs under ``base_dir``)."""
    servers: list[Server] = []
    try:
        coordinator = start_postgres(Path(base_dir) / "coordinator")
        servers.append(coordinator)
        grant_fdw(coordinator)
        for k in range(1, n_shards + 1):
            servers.append(start_postgres(Path(base_dir) / f"shard{k}"))
    except BaseException:
        for server in servers:
            server.destroy()
        raise
    return coordinator, servers[1:]


def shard_entry(shard: Server) -> dict[str, Any]:
    """A shard's entry of the ``database.shards`` list."""
    return {"host": shard.host, "port": shard.port, "dbname": shard.database,
            "user": shard.user, "password": shard.password}


def sharded_config(coordinator: Server, shards: list[Server]) -> dict[str, Any]:
    """The dejavu configuration of the coordinator with ``shards``."""
    config = coordinator.config()
    config["database"]["shards"] = [shard_entry(shard) for shard in shards]
    return config

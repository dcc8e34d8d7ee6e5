"""Ingest on a Dask cluster: decode + fingerprint fanned out over ``dask.distributed`` workers.

With a database server (PostgreSQL, sharded or not; MySQL) each worker writes its songs
to the store itself, each song all or nothing as :func:`dejavu.logic.ingest.store` does
(one connection per worker process), so the writes scale with the workers too; with the
embedded SQLite store, which only this machine can open, each finished file's hashes
come back to this process, which writes them as a local ingest does.  The workers must
see the files under the same paths (a shared filesystem).  A worker that dies mid-file
loses nothing: the scheduler runs its file again on another worker (a song it had
stored already is then reported as skipped).  Needs the optional extra:
``pip install 'PyDejavu[dist]'``.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Iterator

from dejavu.config import Config
from dejavu.exceptions import ConfigError, DejavuError

log = logging.getLogger(__name__)

#: Seconds to wait for the scheduler to answer.
CONNECT_TIMEOUT = 10


#: On a worker process: the stores it has opened, by their configuration (JSON text).
_stores: dict[str, Any] = {}


def _fingerprint(path: str, song_name: str | None, cfg: Config, known: frozenset[str], write: bool) -> Any:
    """On a worker: decode and fingerprint one file, and with ``write`` store its song; the
    FileOutcome (only a store that stays unreachable raises, DatabaseUnavailableError)."""
    from dejavu.database import connect
    from dejavu.logic import ingest

    ingest._init_worker(known)
    outcome = ingest.fingerprint_one(path, song_name, cfg)
    if write and outcome.status == "fingerprinted":
        key = json.dumps([cfg.database_type, dict(cfg.database)], sort_keys=True, default=str)
        if key not in _stores:
            _stores[key] = connect(cfg.database_type, dict(cfg.database))
        [outcome] = ingest.retrying(ingest.store, _stores[key], [outcome])
    return outcome


def _client(address: str) -> Any:
    """A dask.distributed Client of the scheduler at ``address`` (one error line if it cannot)."""
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("ingest on a cluster needs dask.distributed: pip install 'PyDejavu[dist]'") from None
    try:
        return Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise DejavuError(f"cannot reach the Dask scheduler at {address}: {' '.join(str(exc).split())}") from None


def on_cluster(address: str, work: list[tuple[str, str | None, Config]], known: frozenset[str]) -> Iterator[Any]:
    """Outcomes of ``work`` ((path, song name or None, config) per file), fingerprinted on the
    cluster whose scheduler is at ``address`` (``tcp://HOST:PORT``), in the order they finish.
    Files whose SHA1 is in ``known`` come back skipped; with a server store, songs come back
    stored by the worker (``song_id`` set, no hashes)."""
    client = _client(address)
    from distributed import as_completed

    try:
        workers = len(client.scheduler_info().get("workers", {}))
        log.info("fingerprinting %d file(s) on the Dask cluster at %s (%d worker(s))", len(work), address, workers)
        [shared] = client.scatter([known], broadcast=True)
        futures = [client.submit(_fingerprint, path, name, cfg, shared, cfg.database_type != "sqlite",
                                 pure=False, key=f"dejavu-{i}-{path}")
                   for i, (path, name, cfg) in enumerate(work)]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()

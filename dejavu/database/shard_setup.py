"""Setup of a sharded PostgreSQL store: the coordinator's catalogue and partitions, each shard's table.

Layout (the SQL stays within what Citus takes: one ``fingerprints`` table distributed
by ``song_id``, a song's rows all on one node):

* each shard server: ``fingerprints(hash, song_id, offset)`` with a covering btree
  ``(hash) INCLUDE (song_id, offset)`` and a BRIN on song_id (deletes);
  ``dejavu_shard(shard_id, store_id)`` records which shard of which store it is, so a
  reordered shard list, or a shard of another store, is refused instead of mixing songs.  The covering btree lets every
  lookup read the index only: a song's rows are written together, so the rows of one
  key lie all over the heap, and reading them through a plain btree on hash costs a
  random heap fetch each (measured on a store of 1,000 songs of 200 s: a 5 s clip's rows
  of 32 candidate songs took 3.9 s that way, 0.4 s by the BRIN and a sort).  Its price:
  it cannot deduplicate equal keys, 31.5 B a row instead of 7 (75.8 B a row in all).
* the coordinator: ``songs`` (the catalogue), ``dejavu_meta``, ``dejavu_store`` (a
  random id of the store), ``dejavu_shards`` (shard id → host, port, dbname), and ``fingerprints`` partitioned BY RANGE (song_id): shard
  ``k`` (1-based) owns the song ids ``[k * 2^24, (k + 1) * 2^24)``, handed out by the
  sequence ``songs_shard_k``, and its partition ``fingerprints_k`` is a foreign table
  on the server ``dejavu_shard_k`` (postgres_fdw, ``async_capable``, ``batch_size``).

:func:`setup` creates what is missing, logs each thing it created, and is harmless
to run again (every connection runs it).  Adding a shard to the configuration's list
adds a partition; songs stay where they are.  ``CREATE EXTENSION postgres_fdw`` needs
a superuser once per coordinator database (the error says so).
"""
from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from dejavu.database.postgres import FINGERPRINT_INDEXES, PostgreSQLDatabase
from dejavu.exceptions import ConfigError, DatabaseError

if TYPE_CHECKING:
    from dejavu.database.sharded import ShardedDatabase

log = logging.getLogger(__name__)

#: Bits of a song id below the shard number: 16.7 M songs per shard, up to 127 shards.
SHARD_BITS = 24
MAX_SHARDS = (1 << (31 - SHARD_BITS)) - 1
#: Key of the advisory locks of setup (with 0) and of a song being written (with its id).
LOCK_KEY = 0x646A76  # "djv"
#: Rows postgres_fdw sends per INSERT round trip, and fetches per cursor round trip.
FDW_BATCH_SIZE = 10000

#: The catalogue is the single-server store's ``songs`` (ids given by the shards' sequences).
COORDINATOR_SCHEMA = (
    next(statement for statement in PostgreSQLDatabase.schema if "TABLE IF NOT EXISTS songs" in statement),
    "CREATE INDEX IF NOT EXISTS ix_songs_unfinished ON songs (song_id) WHERE fingerprinted = 0",
    "CREATE TABLE IF NOT EXISTS dejavu_store (store_id TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS dejavu_shards (
        shard_id SMALLINT PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL, dbname TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS fingerprints (
        hash BIGINT NOT NULL, song_id INTEGER NOT NULL, "offset" INTEGER NOT NULL) PARTITION BY RANGE (song_id)""",
)
#: A shard's fingerprints are the single-server store's table and indexes.
SHARD_INDEXES = tuple(FINGERPRINT_INDEXES.values())
SHARD_SCHEMA = (
    f"SELECT pg_advisory_xact_lock({LOCK_KEY}, 0)",
    next(statement for statement in PostgreSQLDatabase.schema if "TABLE IF NOT EXISTS fingerprints" in statement),
    *SHARD_INDEXES,
    "CREATE TABLE IF NOT EXISTS dejavu_shard (shard_id SMALLINT NOT NULL, store_id TEXT NOT NULL)",
)


def first_song_id(shard: int) -> int:
    """The smallest song id of shard ``shard`` (1-based)."""
    return shard << SHARD_BITS


def shard_of(song_id: Any) -> Any:
    """The shard (1-based) holding a song id (an int or an int array)."""
    return song_id >> SHARD_BITS


def setup(db: ShardedDatabase) -> list[str]:
    """Create whatever is missing on the shards and the coordinator; return (and log) what was done.

    Raises ConfigError when the configuration's shard list disagrees with the store's
    (fewer shards, or a server that is another shard), DatabaseError when a shard or
    the extension cannot be set up."""
    if len(db.shards) > MAX_SHARDS:
        raise ConfigError(f"{db.location}: at most {MAX_SHARDS} shards, the configuration lists {len(db.shards)}")
    done = []
    with db.cursor(write=True) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_KEY,))
        cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'postgres_fdw'")
        if not cur.fetchone():
            done.append(_create_extension(db, cur))
        for statement in COORDINATOR_SCHEMA:
            cur.execute(statement)
        cur.execute("INSERT INTO dejavu_store (store_id) SELECT %s WHERE NOT EXISTS (SELECT 1 FROM dejavu_store)",
                    (uuid.uuid4().hex,))
        cur.execute("SELECT store_id FROM dejavu_store")
        store_id = str(cur.fetchone()[0])
        done += [f"shard {k} ({shard.host}:{shard.port}): {what}"
                 for k, shard in enumerate(db.shards, start=1) for what in _setup_shard(shard, k, store_id)]
        cur.execute("SELECT shard_id, host, port, dbname FROM dejavu_shards ORDER BY shard_id")
        known = {int(row[0]): tuple(row[1:]) for row in cur.fetchall()}
        if len(known) > len(db.shards):
            raise ConfigError(f"{db.location}: the store has {len(known)} shards but the configuration lists "
                              f"{len(db.shards)}: list every shard, in the order they were added")
        for k, shard in enumerate(db.shards, start=1):
            done += [f"shard {k} ({shard.host}:{shard.port}): {what}"
                     for what in _setup_partition(db, cur, k, known.get(k))]
    for line in done:
        log.info("%s: %s", db.location, line)
    return done


def _create_extension(db: ShardedDatabase, cur: Any) -> str:
    try:
        cur.execute("SAVEPOINT extension")
        cur.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
    except Exception as exc:
        if getattr(exc, "pgcode", None) != "42501":  # insufficient_privilege
            raise
        raise DatabaseError(f"{db.location}: creating the extension postgres_fdw needs a superuser: run "
                            f"'CREATE EXTENSION postgres_fdw; GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw "
                            f"TO {db.user}' in database {db.database} as one") from None
    return "created the extension postgres_fdw"


def _setup_shard(shard: Any, k: int, store_id: str) -> list[str]:
    """Create the shard's table and indexes if missing; check it is shard ``k`` of the store ``store_id``."""
    done = []
    with shard.cursor(write=True) as cur:
        cur.execute("SELECT to_regclass('fingerprints') IS NOT NULL")
        if not cur.fetchone()[0]:
            done.append("created the fingerprints table")
        for statement in SHARD_SCHEMA:
            cur.execute(statement)
        cur.execute("SELECT shard_id, store_id FROM dejavu_shard")
        recorded = [(int(row[0]), str(row[1])) for row in cur.fetchall()]
        where = f"shard at {shard.host}:{shard.port}/{shard.database}"
        if not recorded:
            cur.execute("INSERT INTO dejavu_shard (shard_id, store_id) VALUES (%s, %s)", (k, store_id))
        elif recorded[0][1] != store_id:
            raise ConfigError(f"{where} belongs to another sharded store (another coordinator database): "
                              "give each store shard databases of its own")
        elif recorded[0][0] != k:
            raise ConfigError(f"{where} is shard {recorded[0][0]} of its store, but the configuration lists it "
                              f"as shard {k}: keep the order of the shard list")
    return done


def _setup_partition(db: ShardedDatabase, cur: Any, k: int, recorded: tuple | None) -> list[str]:
    """Create shard ``k``'s foreign server, user mapping, partition and id sequence if missing."""
    shard, server = db.shards[k - 1], f"dejavu_shard_{k}"
    where = (shard.host, shard.port, shard.database)
    options = {"host": shard.host, "port": str(shard.port), "dbname": shard.database,
               "async_capable": "true", "batch_size": str(FDW_BATCH_SIZE), "fetch_size": str(FDW_BATCH_SIZE)}
    done = []
    if recorded is None:
        cur.execute("INSERT INTO dejavu_shards (shard_id, host, port, dbname) VALUES (%s, %s, %s, %s)", (k, *where))
    elif tuple(recorded) != where:
        cur.execute("UPDATE dejavu_shards SET host = %s, port = %s, dbname = %s WHERE shard_id = %s", (*where, k))
        cur.execute(f"ALTER SERVER {server} OPTIONS (SET host %s, SET port %s, SET dbname %s)",
                    (shard.host, str(shard.port), shard.database))
        done.append(f"moved from {recorded[0]}:{recorded[1]}/{recorded[2]}")
    cur.execute("SELECT 1 FROM pg_foreign_server WHERE srvname = %s", (server,))
    if not cur.fetchone():
        cur.execute(f"CREATE SERVER {server} FOREIGN DATA WRAPPER postgres_fdw OPTIONS ("
                    + ", ".join(f"{name} %s" for name in options) + ")", tuple(options.values()))
        done.append(f"created the foreign server {server}")
    cur.execute("SELECT 1 FROM pg_user_mappings WHERE srvname = %s AND usename = current_user", (server,))
    if not cur.fetchone():
        cur.execute(f"CREATE USER MAPPING FOR CURRENT_USER SERVER {server} OPTIONS (user %s, password %s)",
                    (shard.user or db.user, shard.password or ""))
        done.append("created the user mapping")
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (f"fingerprints_{k}",))
    if not cur.fetchone()[0]:
        cur.execute(f"CREATE FOREIGN TABLE fingerprints_{k} PARTITION OF fingerprints "
                    f"FOR VALUES FROM ({first_song_id(k)}) TO ({first_song_id(k + 1)}) "
                    f"SERVER {server} OPTIONS (table_name 'fingerprints')")
        cur.execute(f"CREATE SEQUENCE IF NOT EXISTS songs_shard_{k} AS INTEGER MINVALUE {first_song_id(k)} "
                    f"MAXVALUE {first_song_id(k + 1) - 1}")
        done.append(f"created the partition fingerprints_{k} (song ids from {first_song_id(k)})")
    return done


def remove_unfinished(db: ShardedDatabase) -> int:
    """Delete the songs left unfinished by a writer that is gone (a kill, a shard failure), with
    their rows on the shards; a song whose writer still holds its lock is left alone.  How many went."""
    with db.cursor(write=True) as cur:
        cur.execute("SELECT song_id FROM songs WHERE fingerprinted = 0 AND pg_try_advisory_xact_lock(%s, song_id)",
                    (LOCK_KEY,))
        ids = [int(row[0]) for row in cur.fetchall()]
        if ids:
            db.delete_rows(ids)
            cur.execute("DELETE FROM songs WHERE song_id = ANY(%s) AND fingerprinted = 0", (ids,))
    if ids:
        log.info("%s: removed %d song(s) left unfinished by an earlier run", db.location, len(ids))
    return len(ids)

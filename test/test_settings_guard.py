"""Issue 19: a store never mixes fingerprint settings (SQLite and PostgreSQL, the real CLI).

Before stores recorded their settings, a query with another ``window_size``,
``sample_rate`` or ``freq_quantization`` got ``"results": []`` (exit 1, like an unknown
song), another ``hop_size`` the right song at a wrong ``offset_seconds``, and a song
ingested with other settings was stored, never found, and then refused as "already
fingerprinted" when ingested again with the right ones.  Now every such command is one
line naming the setting, the stored and the configured value, exit 2, and stores nothing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from dejavu.testing import Server, postgres_available

#: setting → a value other than the default each store was made with.
CHANGED = {"window_size": 2048, "sample_rate": 8000, "freq_quantization": 2, "hop_size": 128}
DEFAULTS = {"window_size": 1024, "sample_rate": 11025, "freq_quantization": 1, "hop_size": 256}
needs_postgres = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL server binaries not installed")


def _store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    if backend == "sqlite":
        return {"database_type": "sqlite", "database": {"path": str(tmp_path / "fp.db")}}
    server: Server = request.getfixturevalue("throwaway_postgres")
    conn = server.connect()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP SCHEMA public CASCADE")
        cur.execute("CREATE SCHEMA public")
    conn.close()
    return server.config()


def _cli(config: dict[str, Any], tmp_path: Path, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    out = run_cli("--config", str(path), "--no-progress", *args, timeout=180)
    return out.returncode, out.stdout.decode(), out.stderr.decode()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=needs_postgres)])
def test_other_settings_at_query_and_ingest_time_are_refused_by_name(backend: str, corpus: list[Path],
                                                                     tmp_path: Path,
                                                                     request: pytest.FixtureRequest) -> None:
    config = _store(backend, tmp_path, request)
    stored, later = corpus[0], corpus[1]
    assert _cli(config, tmp_path, "--fingerprint", str(stored))[0] == 0
    for name, value in CHANGED.items():
        other = {**config, "fingerprint": {name: value}}
        expected = f"fingerprint.{name} is {DEFAULTS[name]!r} in the store but {value!r} in the configuration"
        for args in (("--recognize", "file", str(stored)), ("--fingerprint", str(later))):
            code, out, err = _cli(other, tmp_path, *args)
            assert (code, out) == (2, ""), (name, args, err)
            assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err, err
    assert _names(config, tmp_path) == [stored.stem]
    code, _, err = _cli(config, tmp_path, "--fingerprint", str(later))   # not "already fingerprinted"
    assert code == 0 and _names(config, tmp_path) == [stored.stem, later.stem], err


def _names(config: dict[str, Any], tmp_path: Path) -> list[str]:
    return [json.loads(line)["song_name"] for line in _cli(config, tmp_path, "--list")[1].splitlines()]

"""The sharded PostgreSQL store (a coordinator + 3 shards, then a 4th) through the real CLI, against the
single-server PostgreSQL store on the same songs: same results, songs spread, a shard stopped
mid-query and mid-ingest, recovery with nothing lost or duplicated, --list/--stats/--delete."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, archived_songs, cut
from conftest import run_cli as run_cli_bytes
from dejavu.testing import Server, postgres_available
from dejavu.testing.shards import grant_fdw

pytestmark = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL server binaries not installed")

#: Seconds of each song fingerprinted (keeps the module fast; both stores use the same setting).
LIMIT = 45
N_SONGS = 6


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Any:
    """A coordinator and four shard servers (the fourth joins later); a database ``single`` on the
    coordinator's server is the single-server store compared with."""
    from dejavu.testing.shards import start_sharded

    coordinator, shards = start_sharded(tmp_path_factory.mktemp("sharded"), 4)
    conn = coordinator.connect(database="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE single")
    conn.close()
    yield coordinator, shards
    for server in (coordinator, *shards):
        server.destroy()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, its output decoded."""
    done = run_cli_bytes(*args)
    done.stdout, done.stderr = done.stdout.decode(), done.stderr.decode()
    return done


def write_config(path: Path, coordinator: Server, shards: list[Server] | None, database: str | None = None) -> str:
    from dejavu.testing.shards import sharded_config

    config = sharded_config(coordinator, shards) if shards else coordinator.config()
    if database:
        config["database"]["database"] = database
    config["fingerprint_limit"] = LIMIT
    path.write_text(json.dumps(config))
    return str(path)


@pytest.fixture(scope="module")
def setup(servers, corpus, tmp_path_factory) -> dict[str, Any]:
    """Both stores filled by the CLI from the same songs; clips of three of them."""
    coordinator, shards = servers
    work = tmp_path_factory.mktemp("sharded-work")
    songs = work / "songs"
    songs.mkdir()
    for path in corpus[:N_SONGS]:
        shutil.copy(path, songs / path.name)
    configs = {"single": write_config(work / "single.json", coordinator, None, "single"),
               "sharded": write_config(work / "sharded.json", coordinator, shards[:3])}
    for name, config in configs.items():
        done = run_cli("--config", config, "--fingerprint", str(songs), "mp3", "-n", "2", "--no-progress")
        assert done.returncode == 0, done.stderr
    clips = [cut(path, work / f"clip-{path.stem}.wav", 12.0, 5.0) for path in corpus[:3]]
    return {"work": work, "songs": songs, "configs": configs, "clips": clips, "shards": shards,
            "coordinator": coordinator}


def recognize(config: str, clip: Path) -> subprocess.CompletedProcess:
    return run_cli("--config", config, "--recognize", "file", str(clip))


def without_ids(result: dict[str, Any]) -> list[dict[str, Any]]:
    """A recognition's results without the song ids (the stores number songs differently) and timings."""
    return [{k: v for k, v in match.items() if k != "song_id"} for match in result["results"]]


def listed(config: str) -> list[dict[str, Any]]:
    done = run_cli("--config", config, "--list")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def stats(config: str) -> dict[str, Any]:
    done = run_cli("--config", config, "--stats")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_complete(config: str, names: set[str]) -> None:
    """Every song once, its rows all stored once, nothing else."""
    songs = listed(config)
    assert sorted(song["song_name"] for song in songs) == sorted(names)
    assert len({song["file_sha1"] for song in songs}) == len(songs)
    shown = stats(config)
    assert shown["fingerprints"] == sum(song["total_hashes"] for song in songs)
    assert sum(shard["songs"] for shard in shown["shards"]) == len(songs)


def test_sharded_store_matches_the_single_server_store(setup) -> None:
    configs = setup["configs"]
    for clip in setup["clips"]:
        single, sharded = recognize(configs["single"], clip), recognize(configs["sharded"], clip)
        assert single.returncode == 0 and sharded.returncode == 0, single.stderr + sharded.stderr
        expected = without_ids(json.loads(single.stdout))
        assert expected and expected[0]["song_name"] == clip.stem.removeprefix("clip-")
        assert without_ids(json.loads(sharded.stdout)) == expected
    single_songs = {(s["song_name"], s["total_hashes"]) for s in listed(configs["single"])}
    assert {(s["song_name"], s["total_hashes"]) for s in listed(configs["sharded"])} == single_songs
    shown = stats(configs["sharded"])
    assert [shard["shard"] for shard in shown["shards"]] == [1, 2, 3]
    assert all(shard["songs"] >= 1 and shard["fingerprints"] > 0 for shard in shown["shards"]), shown
    assert shown["fingerprints"] == stats(configs["single"])["fingerprints"]
    assert {shard["server"].split("/")[0] for shard in shown["shards"]} == \
        {f"127.0.0.1:{s.port}" for s in setup["shards"][:3]}


def test_a_sharded_catalogue_exports_as_the_single_server_one_and_imports_elsewhere(setup) -> None:
    configs, work = setup["configs"], setup["work"]
    archives = {name: work / f"{name}.zip" for name in configs}
    for name, config in configs.items():
        done = run_cli("--config", config, "--export", str(archives[name]))
        assert done.returncode == 0 and f"exported {N_SONGS} songs" in done.stderr, done.stderr
    assert archived_songs(archives["sharded"]) == archived_songs(archives["single"])
    copy = json.dumps({"database": {"path": str(work / "from-shards.db")}, "fingerprint_limit": LIMIT})
    (work / "from-shards.json").write_text(copy)
    done = run_cli("--config", str(work / "from-shards.json"), "--import", str(archives["sharded"]))
    assert done.returncode == 0 and f"imported {N_SONGS} songs" in done.stderr, done.stderr
    clip = setup["clips"][0]
    expected = without_ids(json.loads(recognize(configs["sharded"], clip).stdout))
    assert without_ids(json.loads(recognize(str(work / "from-shards.json"), clip).stdout)) == expected


def test_setup_is_harmless_to_run_again(setup) -> None:
    again = run_cli("--config", setup["configs"]["sharded"], "--stats")
    assert again.returncode == 0 and "created" not in again.stderr, again.stderr


def test_a_shard_down_mid_query_is_one_line_and_recovers(setup) -> None:
    config, shard, clip = setup["configs"]["sharded"], setup["shards"][1], setup["clips"][0]
    before = json.loads(recognize(config, clip).stdout)
    shard.kill()  # as pg_ctl stop -m immediate
    try:
        failed = recognize(config, clip)
        assert failed.returncode == 2
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1 and f"127.0.0.1:{shard.port}" in lines[0] and "Traceback" not in failed.stderr, lines
        listing = run_cli("--config", config, "--stats")
        assert listing.returncode == 2 and f"127.0.0.1:{shard.port}" in listing.stderr
    finally:
        shard.start()
    again = recognize(config, clip)
    assert again.returncode == 0 and json.loads(again.stdout)["results"] == before["results"]


def test_a_shard_down_mid_ingest_loses_and_duplicates_nothing(setup) -> None:
    config, shards, songs = setup["configs"]["sharded"], setup["shards"], setup["songs"]
    names = {path.stem for path in songs.glob("*.mp3")}
    victims = [song["song_id"] for song in listed(config)[:4]]
    assert run_cli("--config", config, "--delete", *map(str, victims)).returncode == 0
    assert len(listed(config)) == len(names) - 4
    # The shard the next song goes to (the one with the fewest rows) is down while the ingest writes.
    load = [shard["fingerprints"] for shard in stats(config)["shards"]]
    down = shards[load.index(min(load))]
    down.kill()  # as pg_ctl stop -m immediate
    try:
        failed = run_cli("--config", config, "--fingerprint", str(songs), "mp3", "-n", "1", "--no-progress")
        assert failed.returncode == 2, failed.stderr
        last = failed.stderr.strip().splitlines()[-1]
        assert f"127.0.0.1:{down.port}" in last and "Traceback" not in failed.stderr, failed.stderr
    finally:
        down.start()
    resumed = run_cli("--config", config, "--fingerprint", str(songs), "mp3", "-n", "2", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert_complete(config, names)
    found = recognize(config, setup["clips"][0])
    assert json.loads(found.stdout)["results"][0]["song_name"] == setup["clips"][0].stem.removeprefix("clip-")


#: A writer killed after its song's rows were committed on the shard, before the song was marked fingerprinted.
KILLED_WRITER = """
import json, os, sys
import numpy as np
from dejavu.database import connect
from dejavu.logic.store import NewSong
db = connect("postgres", json.loads(sys.argv[1])["database"])
rows = np.array([[int(h), 0, 7] for h in sys.argv[2].split(",")], dtype=np.int64)
song_id = db._begin_song(NewSong("half song", "AB" * 20, rows[:, 0], rows[:, 2], 1.0), len(rows), 1)
rows[:, 1] = song_id
with db.shards[0].cursor(write=True) as cur:
    db._bulk_insert(cur, rows)
print(song_id, flush=True)
os._exit(9)
"""


def test_a_writer_killed_between_shard_and_coordinator_leaves_nothing_visible(setup) -> None:
    from dejavu.database import connect

    config = json.loads(Path(setup["configs"]["sharded"]).read_text())
    store = connect("postgres", config["database"])
    try:
        hashes = sorted({int(row[0]) for row in store.shards[1].query(None)[:200]})
        before = store.return_matches(hashes)
        counts = store.count_matches(hashes)
        killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, json.dumps(config), ",".join(map(str, hashes))],
                                env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)
        assert killed.returncode == 9, killed.stderr
        half = int(killed.stdout)
        assert store.shards[0]._fetch("SELECT COUNT(*) FROM fingerprints WHERE song_id = %s", (half,))[0][0] == len(hashes)
        after = store.return_matches(hashes)  # the rows are on the shard, but the song is not finished
        assert all((a == b).all() for a, b in zip(before, after)) and (store.count_matches(hashes) == counts).all()
    finally:
        store.close()
    again = connect("postgres", config["database"])  # the next connection removes the leftovers
    try:
        assert again.shards[0]._fetch("SELECT COUNT(*) FROM fingerprints WHERE song_id = %s", (half,))[0][0] == 0
        assert again._fetch("SELECT COUNT(*) FROM songs WHERE song_id = %s", (half,))[0][0] == 0
    finally:
        again.close()


def test_a_fourth_shard_joins_and_takes_new_songs(setup, corpus) -> None:
    work, coordinator, shards = setup["work"], setup["coordinator"], setup["shards"]
    config = write_config(work / "four.json", coordinator, shards)
    joined = run_cli("--config", config, "--stats")
    assert joined.returncode == 0 and "created the partition fingerprints_4" in joined.stderr, joined.stderr
    assert json.loads(joined.stdout)["shards"][3]["songs"] == 0
    more = work / "more"
    more.mkdir()
    shutil.copy(corpus[N_SONGS], more / corpus[N_SONGS].name)
    assert run_cli("--config", config, "--fingerprint", str(more), "mp3", "--no-progress").returncode == 0
    shown = stats(config)
    assert shown["shards"][3]["songs"] == 1 and shown["shards"][3]["fingerprints"] > 0
    names = {path.stem for path in setup["songs"].glob("*.mp3")} | {corpus[N_SONGS].stem}
    assert_complete(config, names)
    clip = cut(corpus[N_SONGS], work / "clip-new.wav", 10.0, 5.0)
    found = json.loads(recognize(config, clip).stdout)
    assert found["results"][0]["song_name"] == corpus[N_SONGS].stem
    old = json.loads(recognize(config, setup["clips"][1]).stdout)
    assert old["results"][0]["song_name"] == setup["clips"][1].stem.removeprefix("clip-")
    fewer = run_cli("--config", setup["configs"]["sharded"], "--stats")
    assert fewer.returncode == 2 and "4 shards" in fewer.stderr and "lists 3" in fewer.stderr


def test_delete_across_shards(setup, corpus) -> None:
    config = write_config(setup["work"] / "four.json", setup["coordinator"], setup["shards"])
    songs = listed(config)
    by_shard = {song["song_id"] >> 24: song for song in songs}
    assert len(by_shard) >= 3
    before = stats(config)
    gone = [song["song_id"] for song in list(by_shard.values())[:2]]
    deleted = run_cli("--config", config, "--delete", *map(str, gone))
    assert deleted.returncode == 0, deleted.stderr
    assert {song["song_id"] for song in listed(config)} == {song["song_id"] for song in songs} - set(gone)
    after = stats(config)
    removed = sum(song["total_hashes"] for song in songs if song["song_id"] in gone)
    assert after["fingerprints"] == before["fingerprints"] - removed
    assert_complete(config, {song["song_name"] for song in songs if song["song_id"] not in gone})


def test_the_compose_profile_runs_a_coordinator_two_shards_and_dask() -> None:
    import yaml

    from test_docker import _compose

    out = _compose("--profile", "sharded", "config")
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    config = json.loads((ROOT / "config" / "dejavu.sharded.json").read_text())["database"]
    assert config["host"] == "coordinator" and [s["host"] for s in config["shards"]] == ["shard1", "shard2"]
    assert {"coordinator", "shard1", "shard2", "scheduler", "worker", "sharded"} <= set(services)
    assert services["sharded"]["entrypoint"][-1] == "/config/dejavu.sharded.json"
    assert "dist" in services["sharded"]["build"]["args"]["EXTRAS"]
    assert services["worker"]["entrypoint"][:3] == ["dask", "worker", "tcp://scheduler:8786"]


def create_databases(name: str, *servers: Server) -> None:
    """CREATE DATABASE ``name`` on each server (as the app user, who may)."""
    for server in servers:
        conn = server.connect(database="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        conn.close()


def test_dask_workers_write_their_songs_to_a_sharded_store(setup) -> None:
    pytest.importorskip("distributed", reason="the optional extra 'dist' (dask.distributed) is not installed")
    from distributed import LocalCluster

    coordinator, shards, work = setup["coordinator"], setup["shards"][:3], setup["work"]
    create_databases("viadask", coordinator, *shards)
    grant_fdw(coordinator, "viadask")
    config = json.loads(Path(setup["configs"]["sharded"]).read_text())
    config["database"]["database"] = "viadask"
    for shard in config["database"]["shards"]:
        shard["dbname"] = "viadask"
    path = work / "viadask.json"
    path.write_text(json.dumps(config))
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster:
        done = run_cli("--config", str(path), "--fingerprint", str(setup["songs"]), "mp3", "--no-progress",
                       "--cluster", cluster.scheduler_address)
    assert done.returncode == 0, done.stderr
    expected = {(s["song_name"], s["total_hashes"]) for s in listed(setup["configs"]["single"])}
    assert {(s["song_name"], s["total_hashes"]) for s in listed(str(path))} == expected
    assert_complete(str(path), {name for name, _ in expected})
    clip = setup["clips"][2]
    assert json.loads(recognize(str(path), clip).stdout)["results"][0]["song_name"] == \
        clip.stem.removeprefix("clip-")


def test_a_new_coordinator_needs_the_extension_and_refuses_a_shard_of_another_store(setup) -> None:
    coordinator, work = setup["coordinator"], setup["work"]
    create_databases("otherstore", coordinator)
    config = json.loads(Path(setup["configs"]["sharded"]).read_text())
    config["database"]["database"] = "otherstore"
    path = work / "other.json"
    path.write_text(json.dumps(config))
    refused = run_cli("--config", str(path), "--stats")
    assert refused.returncode == 2 and "needs a superuser: run 'CREATE EXTENSION postgres_fdw;" in refused.stderr
    grant_fdw(coordinator, "otherstore")
    refused = run_cli("--config", str(path), "--stats")
    assert refused.returncode == 2 and "belongs to another sharded store" in refused.stderr, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_rebuild_reads_the_song_list_of_a_sharded_store(setup) -> None:
    from dejavu.database.catalogue import read_song_list

    path = write_config(setup["work"] / "every-shard.json", setup["coordinator"], setup["shards"])
    songs = read_song_list("postgres", json.loads(Path(path).read_text())["database"])
    assert songs and {song["song_name"] for song in songs} == {song["song_name"] for song in listed(path)}
    assert all(song["source_path"] and Path(song["source_path"]).exists() for song in songs)

"""Reliability (issue 8): crash-safe ingest, bad input handled, nothing lost.

Everything runs the real CLI in subprocesses against real stores: SQLite files and a
throwaway PostgreSQL server (dejavu.testing; its tests are skipped only when the
server binaries are not installed).  The bad-file corpus is built by test/badfiles.py.
"""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pytest

from badfiles import EXTENSIONS, Case, make_corpus
from conftest import ROOT, cut
from dejavu import Dejavu
from dejavu.config import load_config, read_config_file
from dejavu.database import BaseDatabase, connect
from dejavu.demo import synth_song, write_wav
from dejavu.logic.ingest import fingerprint_one
from dejavu.logic.recognizer.file_recognizer import FileRecognizer
from dejavu.testing import Server, postgres_available, start_postgres

log = logging.getLogger(__name__)

needs_postgres = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL server binaries not installed")
BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=needs_postgres)]
SONGS = 8                # synthetic songs of the crash and concurrency tests ...
SONG_SECONDS = 12.0      # ... each this long
MEMORY_LIMIT_MB = 500


# ------------------------------------------------------------------ running the CLI
def dejavu(config: Path | None, *args: str, prefix: list[str] | None = None,
           timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``python dejavu.py [--config CONFIG] ARGS`` and return it with text output."""
    cmd = [*(prefix or []), sys.executable, str(ROOT / "dejavu.py"),
           *(["--config", str(config)] if config else []), *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, capture_output=True, text=True, errors="replace", env=env,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def spawn(config: Path, *args: str, stderr: Any = subprocess.DEVNULL) -> subprocess.Popen:
    """Start the CLI in its own process group (its group id is its pid)."""
    return subprocess.Popen([sys.executable, str(ROOT / "dejavu.py"), "--config", str(config), *args],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)


def clean(out: subprocess.CompletedProcess) -> str:
    """stderr, after checking that nothing crashed."""
    assert "Traceback" not in out.stderr and "unexpected error" not in out.stderr, out.stderr
    assert "Traceback" not in out.stdout, out.stdout
    return out.stderr


def lines_naming(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if name in line]


def live_group_members(pgid: int) -> list[int]:
    """Processes of group ``pgid`` that still run (zombies excluded)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


def without_dac_override() -> list[str] | None:
    """A command prefix under which a mode-000 file is unreadable.

    Root reads any file (CAP_DAC_OVERRIDE), so as root the program runs with that
    capability (and CAP_DAC_READ_SEARCH) removed from its bounding set (setpriv);
    None if that is impossible here.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    return prefix if probe.returncode == 0 else None


# ------------------------------------------------------------------ stores
@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    yield server
    server.destroy()


def new_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A config file naming a new, empty store of ``backend`` for this test."""
    if backend == "sqlite":
        cfg: dict[str, Any] = {"database_type": "sqlite", "database": {"path": str(tmp_path / "store.db")}}
    else:
        server: Server = request.getfixturevalue("pg_server")
        database = f"dejavu_{request.node.name}".lower().translate({ord(c): "_" for c in "[]-."})[:60]
        conn = server.connect()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{database}"')
            cur.execute(f'CREATE DATABASE "{database}"')
        conn.close()
        cfg = server.config()
        cfg["database"]["database"] = database
    path = tmp_path / "store.json"
    path.write_text(json.dumps(cfg))
    return path


def open_store(config: Path) -> BaseDatabase:
    cfg = read_config_file(str(config))
    return connect(cfg.database_type, dict(cfg.database))


def store_state(config: Path, deleted: Iterable[int] = ()) -> dict[str, int]:
    """{song name: hashes} of the store, after checking what recognition may see.

    Each check reads one snapshot, so it holds while another process writes: every
    song row is complete (fingerprinted = 1, exactly total_hashes fingerprint rows), no
    fingerprint belongs to a missing song (but to the ``deleted`` songs, in the SQLite
    store's segments until a merge drops them: recognition filters them out), and no
    song is stored twice.
    """
    db = open_store(config)
    try:
        with db.cursor() as cur:
            if db.type == "sqlite":  # the rows are in the segment files the catalogue lists
                per_song = None
                while per_song is None:  # one snapshot of the catalogue whose files all exist
                    cur.execute("BEGIN")
                    cur.execute("PRAGMA integrity_check")
                    assert cur.fetchone()[0] == "ok"
                    cur.execute("SELECT song_id, song_name, fingerprinted, total_hashes FROM songs")
                    songs = cur.fetchall()
                    cur.execute("SELECT name FROM segments")
                    per_song = segment_rows_per_song(Path(db.index.directory), [r[0] for r in cur.fetchall()])
                    cur.execute("COMMIT")
                rows = [(*song, per_song.pop(song[0], 0)) for song in songs]
                orphans = sum(n for song, n in per_song.items() if song not in set(deleted))
            else:
                cur.execute("SELECT s.song_id, s.song_name, s.fingerprinted, s.total_hashes, "
                            "(SELECT COUNT(*) FROM fingerprints f WHERE f.song_id = s.song_id) FROM songs s")
                rows = cur.fetchall()
                cur.execute("SELECT COUNT(*) FROM fingerprints WHERE song_id NOT IN (SELECT song_id FROM songs)")
                orphans = cur.fetchone()[0]
    finally:
        db.close()
    partial = [r for r in rows if r[2] != 1 or r[3] != r[4]]
    assert not partial, f"partially stored songs visible: {partial}"
    assert orphans == 0, f"{orphans} fingerprints of no song"
    names = [r[1] for r in rows]
    assert len(names) == len(set(names)), f"a song is stored twice: {sorted(names)}"
    return {r[1]: int(r[3]) for r in rows}


def segment_rows_per_song(directory: Path, names: list[str]) -> dict[int, int] | None:
    """{song id: rows} in the listed segment files (every row, deleted songs' included), or
    None if one of them is gone: a merge that committed after the list was read removed it,
    and the list must be read again (as the store's readers do)."""
    from dejavu.database.segments import Segment, SegmentError

    counts: dict[int, int] = {}
    for name in names:
        try:
            segment = Segment.open(directory / name)
        except SegmentError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return None
            raise
        with segment:
            for song, n in zip(*np.unique(np.asarray(segment.songs), return_counts=True)):
                counts[int(song)] = counts.get(int(song), 0) + int(n)
    return counts


# ------------------------------------------------------------------ audio
@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SONGS synthetic songs of SONG_SECONDS (22.05 kHz WAV)."""
    folder = tmp_path_factory.mktemp("songs")
    for i in range(SONGS):
        write_wav(str(folder / f"song {i:02d}.wav"), synth_song(300 + i, SONG_SECONDS), 22050)
    return folder


@pytest.fixture(scope="module")
def expected(songs: Path) -> dict[str, int]:
    """{song name: distinct (hash, offset) pairs} as a clean ingest stores them."""
    cfg = load_config({})
    counts = {}
    for path in sorted(songs.glob("*.wav")):
        out = fingerprint_one(str(path), None, cfg)
        pairs = np.stack([out.hashes, out.offsets.astype(np.int64)], axis=1)
        counts[out.song_name] = len(np.unique(pairs, axis=0))
    return counts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return make_corpus(tmp_path_factory.mktemp("bad") / "corpus")


# ------------------------------------------------------------------ crash safety
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_during_ingest_never_leaves_a_partial_song(backend, songs, expected, tmp_path, request):
    """SIGKILL `dejavu --fingerprint` (and Ctrl-C it) at random moments: afterwards the
    store holds only complete songs and no process is left behind; a rerun completes."""
    config = new_store(backend, tmp_path, request)
    args = ("--fingerprint", str(songs), "wav", "--no-progress")
    began = time.monotonic()
    assert spawn(config, *args).wait(timeout=120) == 0
    full_run = time.monotonic() - began
    assert store_state(config) == expected
    rng = random.Random(f"issue-8-{backend}")
    plan = [signal.SIGKILL] * 10 + [signal.SIGINT] * 2
    rng.shuffle(plan)
    stages, lingered = [], 0.0
    while plan:
        db = open_store(config)
        if db.get_num_songs() > SONGS // 2 or rng.random() < 0.5:  # mostly start afresh: work to kill
            db.delete_songs_by_id(s["song_id"] for s in db.get_songs())
        db.close()
        proc = spawn(config, *args, "--nprocs", str(rng.choice([1, 2])), stderr=subprocess.PIPE)
        sig = plan[-1]
        if sig == signal.SIGINT:  # Ctrl-C only once at work (at start-up Python prints a traceback)
            started = time.monotonic()
            while len(live_group_members(proc.pid)) < 2 and proc.poll() is None \
                    and time.monotonic() < started + 30:
                time.sleep(0.01)
        time.sleep(rng.uniform(0.0, full_run if sig == signal.SIGKILL else full_run / 2))
        if proc.poll() is None:
            plan.pop()
            if sig == signal.SIGKILL:
                os.kill(proc.pid, sig)      # the main process dies at once
            else:
                os.killpg(proc.pid, sig)    # Ctrl-C: the whole process group
        err = proc.communicate()[1].decode()
        signalled_at = time.monotonic()
        assert "Traceback" not in err, err
        if proc.returncode not in (0, -signal.SIGKILL) and "fingerprinted" not in err:  # not done yet
            assert proc.returncode == 130 and err == "dejavu: interrupted\n", err
        while live_group_members(proc.pid) and time.monotonic() < signalled_at + 5:
            time.sleep(0.02)
        lingered = max(lingered, time.monotonic() - signalled_at)
        left = live_group_members(proc.pid)
        if left:
            os.killpg(proc.pid, signal.SIGKILL)
        assert not left, f"processes {left} outlived the killed ingest"
        state = store_state(config)
        assert all(expected[name] == n for name, n in state.items())
        stages.append(len(state))
    log.info("%s: 10 kills and 2 interrupts in %d runs, %.1f s (a full run %.1f s); songs stored "
             "after each: %s; children outlived the signal by %.2f s at most", backend, len(stages),
             time.monotonic() - began, full_run, stages, lingered)
    # Songs are committed in batches (ingest.BATCH_SECONDS), so a short run stores its
    # songs in one or two transactions: kills before and after a commit are the stages.
    assert len(set(stages)) >= 2, f"the signals did not land at different stages: {stages}"
    out = dejavu(config, *args)
    assert out.returncode == 0, clean(out)
    assert store_state(config) == expected


# ------------------------------------------------------------------ bad input
def test_bad_files_in_a_batch_each_get_one_line(corpus, tmp_path):
    """Each bad file: one stderr line naming it and the reason; good ones are stored."""
    prefix = without_dac_override()
    cases = list(corpus)
    if prefix is None:  # root and no way to drop CAP_DAC_OVERRIDE: root reads a mode-000 file
        cases = [Case(c.kind, c.path, "good") if c.kind.startswith("unreadable") else c for c in cases]
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"database_type": "sqlite", "database": {"path": str(tmp_path / "bad.db")}}))
    folder = corpus[0].path.parent
    out = dejavu(config, "--fingerprint", str(folder), *EXTENSIONS, "--nprocs", "2", "--no-progress",
                 prefix=prefix)
    err = clean(out)
    assert out.returncode == 1, err
    bad = [c for c in cases if c.expect != "good" and c.in_batch]
    good = [c for c in cases if c.expect == "good"]
    assert len({c.kind for c in corpus}) >= 15
    for case in bad:
        said = lines_naming(err, case.path.name)
        assert len(said) == 1, f"{case.kind}: {said}"
        assert case.reason in said[0].lower(), f"{case.kind}: {said[0]}"
    for case in good + [c for c in cases if not c.in_batch]:
        assert not lines_naming(err, case.path.name[-12:]), case.kind
    assert f"fingerprinted {len(good)}, skipped 0 (already in the database), failed {len(bad)}" in err
    listed = [json.loads(line) for line in dejavu(config, "--list").stdout.splitlines()]
    expected_names = {c.path.stem if c.raw_name is None else "caf\ufffd latin-1" for c in good}
    assert {s["song_name"] for s in listed} == expected_names
    with Dejavu(read_config_file(str(config))) as djv:  # every good file is recognized
        for case in good:
            if case.raw_name is None:
                results = djv.recognize(FileRecognizer, str(case.path))["results"]
                assert results and results[0]["song_name"] == case.path.stem, case.kind


def test_recognizing_bad_files(corpus, demo_djv, tmp_path):
    """--recognize file: a bad file gives exit 2 and one line naming it; audio without
    fingerprints (silence, a few milliseconds) gives exit 1 and no results."""
    prefix = without_dac_override()
    config = tmp_path / "demo.json"
    config.write_text(json.dumps(demo_djv.config))
    cases = [c for c in corpus
             if c.expect != "good" and (prefix is not None or not c.kind.startswith("unreadable"))]

    def recognize(case: Case) -> tuple[Case, subprocess.CompletedProcess]:
        return case, dejavu(config, "--recognize", "file", str(case.path), prefix=prefix)

    with ThreadPoolExecutor(3) as pool:
        for case, out in pool.map(recognize, cases):
            err = clean(out)
            if case.path.is_dir():  # recognized as a folder: one JSON line per audio file in it
                lines = [json.loads(line) for line in out.stdout.splitlines()]
                assert [x["path"] for x in lines] == [str(p) for p in sorted(case.path.glob("*.wav"))], err
                continue
            if case.expect == "silent":
                assert out.returncode == 1, f"{case.kind}: {err}"
                assert json.loads(out.stdout)["results"] == [] and not err
            else:
                assert out.returncode == 2, f"{case.kind}: {err}"
                assert len(err.splitlines()) == 1 and case.path.name in err, f"{case.kind}: {err}"
                assert out.stdout == ""


def test_silence_and_too_short_queries_are_no_match(demo_djv, demo_dir, tmp_path):
    """No result, never an exception or a floating-point error, for empty, silent,
    constant, tiny or too-short audio (API), and exit 1 from the CLI."""
    song = synth_song(1, 25.0)
    queries = {
        "empty": np.zeros(0, np.float32), "one sample": np.array([0.5], np.float32),
        "ten samples": np.zeros(10, np.float32), "5 s of silence": np.zeros(5 * 22050, np.float32),
        "DC offset": np.full(3 * 22050, 0.25, np.float32),
        "-240 dB noise": (1e-12 * np.random.default_rng(8).standard_normal(3 * 22050)).astype(np.float32),
        "50 ms of a song": song[22050:23152], "0.15 s of a song": song[22050:25358],
    }
    with np.errstate(all="raise"):
        for what, samples in queries.items():
            assert demo_djv.recognize_samples(samples, 22050)["results"] == [], what
        poisoned = song[22050:6 * 22050].copy()
        poisoned[::1000], poisoned[1::1000] = np.nan, -np.inf
        assert demo_djv.recognize_samples(poisoned, 22050)["results"][0]["song_name"] == "Plain Song"
    short = cut(demo_dir / "songs" / "Plain Song.wav", tmp_path / "short.wav", 3.0, 0.05)
    silent = tmp_path / "silent.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo",
                    "-t", "4", str(silent)], check=True)
    config = tmp_path / "demo.json"
    config.write_text(json.dumps(demo_djv.config))
    for clip in (short, silent):
        assert demo_djv.recognize(FileRecognizer, str(clip))["results"] == []
        out = dejavu(config, "--recognize", "file", str(clip))
        clean(out)
        assert out.returncode == 1 and json.loads(out.stdout)["results"] == []


def test_streamed_file_recognition_equals_whole_file(demo_djv, demo_dir, tmp_path):
    """FileRecognizer streams the file; the answer is that of the decoded whole."""
    from dejavu.logic.decoder import decode
    from dejavu.logic.search import recognize_samples

    clip = cut(demo_dir / "songs" / "under_score_song.wav", tmp_path / "clip.mp3", 2.5, 14.0)
    streamed = demo_djv.recognize(FileRecognizer, str(clip))
    whole = recognize_samples(demo_djv.db, demo_djv.cfg, decode(str(clip), 11025), 11025)
    assert streamed["results"] and streamed["results"] == whole["results"]


# ------------------------------------------------------------------ configuration
CONFIGS = {  # file content → words the one error line must contain
    None: "cannot read configuration",
    "": "invalid json",
    "{not json": "invalid json",
    "[1, 2]": "must be a json object",
    '{"database_type": "oracle"}': "database_type 'oracle'",
    '{"database_type": 5}': "'database_type'",
    '{"database": 5}': "'database'",
    '{"database": {"path": 5}}': "database.path",
    '{"database": {"path": "x.db", "timeout": "long"}}': "database.timeout",
    '{"database": {"pth": "x.db"}}': "database.pth",
    '{"database_type": "postgres", "database": {"port": "five"}}': "port",
    '{"fingerprint_limit": "ten"}': "fingerprint_limit",
    '{"fingerprint": {"fan_value": "5"}}': "fingerprint.fan_value",
    '{"fingerprint": {"fan_valeu": 5}}': "fingerprint.fan_valeu",
    '{"matching": {"topn": 0}}': "matching.topn",
    '{"fingerprint": []}': "'fingerprint'",
}


def test_bad_configuration_is_one_line_and_exit_2(tmp_path):
    def run(item: tuple[int, tuple[str | None, str]]) -> None:
        number, (content, words) = item
        path = tmp_path / f"config {number}.json"
        if content is not None:
            path.write_text(content)
        out = dejavu(path, "--stats")
        err = clean(out)
        assert out.returncode == 2, (content, err)
        assert len(err.splitlines()) == 1 and words in err.lower(), (content, err)
        if content is not None:
            assert path.name in err or "database." in err or "port" in err, err

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(run, enumerate(CONFIGS.items())))
    assert not list(tmp_path.glob("*.db")) and not (tmp_path / "dejavu.db").exists()


# ------------------------------------------------------------------ database trouble
@needs_postgres
def test_postgres_down_then_restarted_mid_ingest(pg_server, songs, expected, tmp_path, request):
    config = new_store("postgres", tmp_path, request)
    pg_server.stop()
    try:
        for args in (["--fingerprint", str(songs), "wav"], ["--stats"]):
            out = dejavu(config, *args)
            err = clean(out)
            assert out.returncode == 2 and len(err.splitlines()) == 1, err
            assert "cannot connect to postgres" in err and str(pg_server.port) in err
    finally:
        pg_server.start()
    proc = spawn(config, "--fingerprint", str(songs), "wav", "--nprocs", "1", "--no-progress",
                 stderr=subprocess.PIPE)
    # Restart the server once the ingest holds its connection (and has had 0.3 s to read
    # the stored SHA1s), before it stores: songs are stored in batches, so waiting for
    # the first stored song could be too late.
    db = open_store(config)
    deadline = time.monotonic() + 60
    others = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    while db._fetch(others)[0][0] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert db.get_num_songs() == 0, "the ingest stored before the restart; the test proves nothing"
    db.close()
    pg_server.restart()
    err = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "lost the connection" in err and "trying again" in err, err
    assert store_state(config) == expected
    out = dejavu(config, "--fingerprint", str(songs), "wav", "--no-progress")
    assert out.returncode == 0 and f"skipped {SONGS}" in clean(out)
    assert store_state(config) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_sql_special_names_round_trip(backend, tmp_path, request):
    folder = tmp_path / "names"
    folder.mkdir()
    names = ["Robert'); DROP TABLE songs;--", "it's \"100%\" _a;b*", "back\\slash %s ? $1"]
    for seed, name in enumerate(names, start=40):
        write_wav(str(folder / f"{name}.wav"), synth_song(seed, 6.0), 22050)
    config = new_store(backend, tmp_path, request)
    out = dejavu(config, "--fingerprint", str(folder), "wav", "--no-progress")
    assert out.returncode == 0, clean(out)
    listed = [json.loads(line)["song_name"] for line in dejavu(config, "--list").stdout.splitlines()]
    assert sorted(listed) == sorted(names)
    out = dejavu(config, "--fingerprint", str(folder / f"{names[1]}.wav"), "--name", names[0] + " (again)")
    assert out.returncode == 0 and "already" in clean(out)


# ------------------------------------------------------------------ concurrency
@pytest.mark.parametrize("backend", BACKENDS)
def test_overlapping_ingests_store_each_song_once(backend, songs, expected, tmp_path, request):
    """Two ingests of overlapping folders at once, while another process recognizes."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    files = sorted(songs.glob("*.wav"))
    for path in files[:6]:
        shutil.copy(path, first)
    for path in files[2:]:
        shutil.copy(path, second)
    config = new_store(backend, tmp_path, request)
    out = dejavu(config, "--fingerprint", str(files[0]))
    assert out.returncode == 0, clean(out)
    clip = cut(files[0], tmp_path / "clip.mp3", 4.0, 5.0)
    procs = [spawn(config, "--fingerprint", str(folder), "wav", "--nprocs", "1", "--no-progress",
                   stderr=subprocess.PIPE) for folder in (first, second)]
    with ThreadPoolExecutor(1) as pool:
        cli = pool.submit(dejavu, config, "--recognize", "file", str(clip))
        recognitions = 0
        with Dejavu(read_config_file(str(config))) as djv:
            while any(p.poll() is None for p in procs) or recognitions < 3:
                best = djv.recognize(FileRecognizer, str(clip))["results"][0]
                assert best["song_name"] == "song 00" and abs(best["offset_seconds"] - 4.0) < 0.1
                store_state(config)  # complete songs only, even mid-ingest
                recognitions += 1
        out = cli.result()
    assert out.returncode == 0 and json.loads(out.stdout)["results"][0]["song_name"] == "song 00", clean(out)
    for proc in procs:
        err = proc.communicate(timeout=120)[1].decode()
        assert proc.returncode == 0 and "Traceback" not in err and "locked" not in err, err
    assert store_state(config) == expected
    log.info("%s: %d recognitions during the two ingests", backend, recognitions)


# ------------------------------------------------------------------ management
def test_list_delete_stats_and_deleting_during_recognition(songs, tmp_path, request):
    config = new_store("sqlite", tmp_path, request)
    assert dejavu(config, "--fingerprint", str(songs), "wav", "--no-progress").returncode == 0
    with Dejavu(read_config_file(str(config))) as djv:
        stored = djv.get_fingerprinted_songs()
    clips = []
    for song in stored:
        seed = 300 + int(song["song_name"].split()[-1])
        clips.append(tmp_path / f"{song['song_id']}.wav")
        write_wav(str(clips[-1]), synth_song(seed, SONG_SECONDS)[3 * 22050:7 * 22050], 22050)
    errors: list[BaseException] = []
    stop = threading.Event()

    def recognize_all() -> None:
        try:
            with Dejavu(read_config_file(str(config))) as djv:
                while not stop.is_set():
                    for clip, song in zip(clips, stored):
                        for result in djv.recognize(FileRecognizer, str(clip))["results"]:
                            assert result["song_name"] == song["song_name"]
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=recognize_all)
    thread.start()
    try:
        for song in stored[:3]:
            out = dejavu(config, "--delete", str(song["song_id"]))
            assert out.returncode == 0 and "deleted 1" in clean(out)
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    out = dejavu(config, "--delete", str(stored[0]["song_id"]), "999999")
    assert out.returncode == 1 and "deleted 0" in clean(out)
    listed = [json.loads(line) for line in dejavu(config, "--list").stdout.splitlines()]
    assert listed == stored[3:]
    stats = json.loads(dejavu(config, "--stats").stdout)
    assert stats["songs"] == SONGS - 3 and stats["fingerprints"] == sum(s["total_hashes"] for s in listed)
    assert set(store_state(config, deleted=[s["song_id"] for s in stored[:3]])) == {s["song_name"] for s in listed}


# ------------------------------------------------------------------ memory
def write_long_wav(path: Path, seconds: int, seed: int = 8, rate: int = 11025) -> None:
    """A long, never-repeating piece: three-note chords on a 48-semitone scale, nine a
    second, drawn at random.  Roughly as self-similar as long real music: a stored hash
    recurs ~100 times in a query of the whole 2 hours (30 times in 47 min of the dev
    corpus, a number that grows with the length)."""
    rng = np.random.default_rng(seed)
    note = rate // 9  # 11025 Hz: exactly 1225 samples
    t = np.arange(note) / rate
    tones = np.sin(2 * np.pi * (110 * 2 ** (np.arange(48) / 12))[:, None] * t) * np.exp(-6 * t)
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        for _ in range(seconds // 60):
            chords = rng.integers(0, 48, size=(540, 3))
            gains = rng.uniform(0.1, 0.3, size=(540, 3, 1))
            fh.writeframes(((tones[chords] * gains).sum(axis=1) * 32767).astype("<i2").tobytes())


def run_measured(*args: str, limit_mb: float = MEMORY_LIMIT_MB,
                 timeout: float = 600) -> tuple[int, str, str, float]:
    """Run the CLI; return (exit status, stdout, stderr, peak RSS in MB).

    The peak is the child's own ``ru_maxrss`` (os.wait4).  A watchdog kills it once
    its RSS passes ``limit_mb`` (exit status -9), so a regression fails fast instead
    of exhausting the machine.
    """
    with subprocess.Popen([sys.executable, str(ROOT / "dejavu.py"), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}) as proc:
        output: dict[str, bytes] = {}
        readers = [threading.Thread(target=lambda k=k, f=f: output.__setitem__(k, f.read()))
                   for k, f in (("out", proc.stdout), ("err", proc.stderr))]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                with open(f"/proc/{proc.pid}/status") as fh:
                    rss_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                rss_kb = 0
            if rss_kb > limit_mb * 1024 or time.monotonic() > deadline:
                os.kill(proc.pid, signal.SIGKILL)
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        for reader in readers:
            reader.join()
    return proc.returncode, output["out"].decode(), output["err"].decode(), usage.ru_maxrss / 1024


@pytest.fixture(scope="module")
def two_hours(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """(a 2-hour WAV, a store holding it, the ingest's peak RSS in MB)."""
    folder = tmp_path_factory.mktemp("two_hours")
    audio = folder / "two hours.wav"
    write_long_wav(audio, 7200)
    config = folder / "long.json"
    config.write_text(json.dumps({"database_type": "sqlite", "database": {"path": str(folder / "long.db")}}))
    began = time.monotonic()
    code, _, err, peak = run_measured("--config", str(config), "--fingerprint", str(audio), "--no-progress")
    log.info("2-hour ingest: %.1f s, peak RSS %.0f MB", time.monotonic() - began, peak)
    assert code == 0, err
    return audio, config, peak


def test_two_hour_file_ingest_and_query_stay_under_500_mb(two_hours, demo_djv, tmp_path):
    audio, config, ingest_peak = two_hours
    assert ingest_peak < MEMORY_LIMIT_MB
    stats = json.loads(dejavu(config, "--stats").stdout)
    assert stats["songs"] == 1 and stats["audio_seconds"] == 7200.0
    clip = cut(audio, tmp_path / "clip.mp3", 4321.0, 8.0)
    best = json.loads(dejavu(config, "--recognize", "file", str(clip)).stdout)["results"][0]
    assert best["song_name"] == "two hours" and abs(best["offset_seconds"] - 4321.0) < 0.1
    # The whole 2-hour file as a query, against a store of other songs.
    other = tmp_path / "other.json"
    other.write_text(json.dumps(demo_djv.config))
    began = time.monotonic()
    code, stdout, err, peak = run_measured("--config", str(other), "--recognize", "file", str(audio))
    log.info("2-hour query (no match): %.1f s, peak RSS %.0f MB", time.monotonic() - began, peak)
    assert code == 1 and json.loads(stdout)["results"] == [], (code, err)
    assert peak < MEMORY_LIMIT_MB


def test_two_hour_file_recognized_whole_under_500_mb(two_hours):
    audio, config, _ = two_hours
    code, stdout, _, peak = run_measured("--config", str(config), "--recognize", "file", str(audio))
    log.info("2-hour query (matching itself): exit %d, peak RSS %.0f MB", code, peak)
    assert code == 0 and peak < MEMORY_LIMIT_MB
    best = json.loads(stdout)["results"][0]
    assert best["song_name"] == "two hours" and best["offset"] == 0

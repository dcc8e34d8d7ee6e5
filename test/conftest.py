"""Shared fixtures: synthetic songs, the real-music dev corpus, a fingerprinted SQLite store."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_TOOLS = Path(os.environ.get("DEJAVU_DEV_TOOLS") or ROOT.parent / "shared" / "tools")
CORPUS_DIR = Path(os.environ.get("DEJAVU_TEST_CORPUS", Path.home() / ".cache" / "dejavu-dev-corpus-small"))

sys.path.insert(0, str(ROOT))


def run_cli(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None,
            input: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python dejavu.py ARGS`` (the real CLI) in a subprocess; text output."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "dejavu.py"), *args], cwd=cwd, env=full_env,
                          capture_output=True, timeout=timeout, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """Four synthetic songs (25 s, 22.05 kHz WAV) with awkward names, plus two never fingerprinted."""
    from dejavu.demo import synth_song, write_wav

    d = tmp_path_factory.mktemp("demo")
    (d / "songs").mkdir()
    (d / "unknown").mkdir()
    names = ["Plain Song", "under_score_song", "quote's \"song\"", "ünïcødé – song"]
    for seed, name in enumerate(names, start=1):
        write_wav(str(d / "songs" / f"{name}.wav"), synth_song(seed, 25.0), 22050)
    for seed in (102, 103):  # (seed 101 is near-identical to seed 4: same tempo, close key)
        write_wav(str(d / "unknown" / f"unknown {seed}.wav"), synth_song(seed, 25.0), 22050)
    return d


@pytest.fixture(scope="session")
def demo_djv(demo_dir, tmp_path_factory):
    """A Dejavu on a fresh SQLite file with the four demo songs fingerprinted."""
    from dejavu import Dejavu

    db = tmp_path_factory.mktemp("db") / "fp.db"
    djv = Dejavu({"database_type": "sqlite", "database": {"path": str(db)}})
    report = djv.fingerprint_directory(str(demo_dir / "songs"), [".wav"], 2)
    assert len(report.fingerprinted) == 4 and not report.failed
    return djv


@pytest.fixture(scope="session")
def config_file(demo_djv, tmp_path_factory) -> str:
    """A JSON config file for the CLI, on the demo store."""
    path = tmp_path_factory.mktemp("config") / "config.json"
    path.write_text(json.dumps({"database_type": "sqlite", "database": {"path": demo_djv.cfg.database["path"]}}))
    return str(path)


@pytest.fixture(scope="session")
def corpus() -> list[Path]:
    """Real music: the small dev corpus (built by ../shared/tools/get-dev-corpus.sh if missing)."""
    mp3 = CORPUS_DIR / "mp3"
    if not mp3.is_dir() or not any(mp3.glob("*.mp3")):
        tool = SHARED_TOOLS / "get-dev-corpus.sh"
        subprocess.run(["bash", str(tool), str(CORPUS_DIR), "--small"], check=True,
                       stdin=subprocess.DEVNULL, timeout=1800)
    files = sorted(mp3.glob("*.mp3"))
    assert len(files) >= 6, f"dev corpus at {mp3} has too few tracks"
    return files


def cut(src: os.PathLike, dst: os.PathLike, start: float, length: float, *args: str) -> Path:
    """Cut [start, start+length) s of ``src`` into ``dst`` with ffmpeg (extra output args allowed)."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{start}", "-t", f"{length}",
                    "-i", str(src), *args, str(dst)], check=True)
    return Path(dst)


@pytest.fixture(scope="session")
def throwaway_postgres(tmp_path_factory):
    """A throwaway PostgreSQL server shared by the session's tests that take it (skipped where
    the server binaries are not installed); a test may stop and start it, not destroy it."""
    from dejavu.testing import postgres_available, start_postgres

    if not postgres_available():
        pytest.skip("PostgreSQL server binaries not installed")
    server = start_postgres(tmp_path_factory.mktemp("postgres-shared"))
    yield server
    server.destroy()


def archived_songs(path: Path) -> dict[str, Any]:
    """Songs of a catalogue archive (dejavu --export) by SHA1: (name, duration, rows sorted)."""
    songs: dict[str, Any] = {}
    with zipfile.ZipFile(path) as archive:
        for name in sorted(n for n in archive.namelist() if n.endswith(".json") and n.startswith("batches/")):
            with archive.open(name[:-5] + ".npy") as member:
                rows = np.load(member)
            start = 0
            for song in json.loads(archive.read(name)):
                part = np.sort(rows[start:start + song["rows"]])
                start += song["rows"]
                songs[song["file_sha1"]] = (song["song_name"], song["duration"], part.tobytes())
    return songs

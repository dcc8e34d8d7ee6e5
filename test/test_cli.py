"""The real command line, in a subprocess: python dejavu.py and the installed `dejavu`."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, cut, run_cli


def test_help_documents_the_default_database(tmp_path):
    out = run_cli("--help", cwd=tmp_path)
    assert out.returncode == 0
    text = out.stdout.decode()
    for word in ("--fingerprint", "--recognize", "dejavu.db", "--config", "exit status"):
        assert word in text
    assert not (tmp_path / "dejavu.db").exists()


@pytest.mark.parametrize("args", [["--recognize", "file"], ["--recognize", "radio", "x"],
                                  ["--recognize", "mic", "soon"], ["--bogus"], ["--nprocs", "two", "-f", "x"]])
def test_bad_arguments_give_usage_not_traceback(tmp_path, args):
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 2
    err = out.stderr.decode()
    assert "usage:" in err and "Traceback" not in err
    assert not (tmp_path / "dejavu.db").exists()


def test_fingerprint_and_recognize_without_config(demo_dir, tmp_path):
    out = run_cli("--fingerprint", str(demo_dir / "songs"), "wav", cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    assert (tmp_path / "dejavu.db").exists()
    assert "fingerprinted 4" in out.stderr.decode()
    again = run_cli("--fingerprint", str(demo_dir / "songs"), ".wav", cwd=tmp_path)
    assert again.returncode == 0 and "skipped 4" in again.stderr.decode()
    clip = cut(demo_dir / "songs" / "ünïcødé – song.wav", tmp_path / "clip.mp3", 9.0, 5.0)
    out = run_cli("--recognize", "file", str(clip), cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    result = json.loads(out.stdout)
    best = result["results"][0]
    assert best["song_name"] == "ünïcødé – song" and abs(best["offset_seconds"] - 9.0) <= 0.1
    assert isinstance(best["file_sha1"], str) and len(best["file_sha1"]) == 40
    unknown = cut(demo_dir / "unknown" / "unknown 102.wav", tmp_path / "u.wav", 3.0, 5.0)
    out = run_cli("--recognize", "file", str(unknown), cwd=tmp_path)
    assert out.returncode == 1 and json.loads(out.stdout)["results"] == []
    out = run_cli("--recognize", "file", str(tmp_path / "missing.wav"), cwd=tmp_path)
    assert out.returncode == 2 and "missing.wav" in out.stderr.decode()
    assert "Traceback" not in out.stderr.decode()
    listed = [json.loads(line) for line in run_cli("--list", cwd=tmp_path).stdout.decode().splitlines()]
    assert len(listed) == 4
    stats = json.loads(run_cli("--stats", cwd=tmp_path).stdout)
    assert stats["songs"] == 4 and stats["fingerprints"] > 0


def test_fingerprint_single_file_and_config(demo_dir, tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"database_type": "sqlite", "database": {"path": str(tmp_path / "c.db")}}))
    song = demo_dir / "songs" / "quote's \"song\".wav"
    out = run_cli("--config", str(cfg), "--fingerprint", str(song), cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    assert (tmp_path / "c.db").exists() and not (tmp_path / "dejavu.db").exists()
    out = run_cli("--config", str(cfg), "--fingerprint", str(demo_dir / "songs"), cwd=tmp_path)
    assert out.returncode == 2 and "give the extensions" in out.stderr.decode()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = run_cli("--config", str(bad), "--stats", cwd=tmp_path)
    assert out.returncode == 2 and "bad.json" in out.stderr.decode() and "Traceback" not in out.stderr.decode()


def test_batch_with_a_bad_file_continues_and_says_so(demo_dir, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(demo_dir / "songs" / "Plain Song.wav", folder)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    out = run_cli("--fingerprint", str(folder), "wav", "--no-progress", cwd=tmp_path)
    err = out.stderr.decode()
    assert out.returncode == 1
    assert "broken.wav" in err and "Traceback" not in err and "fingerprinted 1" in err


def test_installed_console_script(tmp_path):
    exe = shutil.which("dejavu")
    assert exe, "the `dejavu` console script is not installed (pip install -e .)"
    out = subprocess.run([exe, "--help"], capture_output=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0 and b"--fingerprint" in out.stdout


def test_help_imports_no_heavy_modules():
    """`--help` must start fast: no numpy, scipy, tqdm, matplotlib or database drivers."""
    code = ("import sys\nfrom dejavu.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = ('numpy', 'scipy', 'tqdm', 'matplotlib', 'sqlite3', 'psycopg2', 'MySQLdb')\n"
            "print('LOADED', sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout.splitlines()[-1]

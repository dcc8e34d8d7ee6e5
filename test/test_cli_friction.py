"""A new user's first hour with the real CLI (issue 19): configs that cannot break the store,
quoted file names, --db and stores that read-only commands never create, progress and
summary lines, --delete/--rename, many clips in one process, speed-corrected results, a
library that never prints, and a README that cannot drift from the CLI."""
from __future__ import annotations

import ast
import fcntl
import json
import os
import pty
import re
import shlex
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from conftest import ROOT, cut, run_cli


def _db_args(tmp_path: Path) -> list[str]:
    return ["--db", str(tmp_path / "fp.db")]


@pytest.fixture(scope="module")
def store(demo_dir, tmp_path_factory) -> Path:
    """An SQLite store (via --db) with the four demo songs."""
    db = tmp_path_factory.mktemp("friction") / "fp.db"
    out = run_cli("--db", str(db), "--fingerprint", str(demo_dir / "songs"), "wav", "-n", "2")
    assert out.returncode == 0, out.stderr.decode()
    return db


# ------------------------------------------------------------------ configuration
@pytest.mark.parametrize("text, words", [
    ('{"fingerprint": {"amp_min": NaN}}', ["fingerprint.amp_min", "nan", "-200..0"]),
    ('{"fingerprint": {"fan_value": 1e9}}', ["fingerprint.fan_value", "1000000000.0", "1..100"]),
    ('{"fingerprint": {"neighborhood_freq": 1000000000}}', ["fingerprint.neighborhood_freq", "1..256"]),
    ('{"fingerprint": {"freq_max_hz": Infinity}}', ["fingerprint.freq_max_hz", "inf", "1..24000"]),
    ('{"fingerprint_limit": 1e308}', ["fingerprint_limit", "1e+308"]),
    ('{"database": "postgresql://:@:::/"}', ["database URL is not valid"]),
    ('{"databse": {"path": "x.db"}}', ["'databse'", "did you mean 'database'"]),
])
def test_a_bad_config_is_one_line_exit_2(tmp_path, text, words):
    cfg = tmp_path / "bad.json"
    cfg.write_text(text)
    out = run_cli("--config", str(cfg), "--fingerprint", str(tmp_path), "wav", cwd=tmp_path)
    err = out.stderr.decode()
    assert out.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert "unexpected error" not in err and all(w in err for w in words), err
    assert not list(tmp_path.glob("*.db"))


def test_an_unknown_top_level_key_is_a_warning_naming_the_closest(store, tmp_path):
    cfg = tmp_path / "typo.json"
    cfg.write_text(json.dumps({"database": {"path": str(store)}, "fingerprint_limt": 10}))
    out = run_cli("--config", str(cfg), "--stats")
    assert out.returncode == 0 and json.loads(out.stdout)["songs"] == 4
    assert "unknown top-level key 'fingerprint_limt' ignored (did you mean 'fingerprint_limit'?)" \
        in out.stderr.decode()


# ------------------------------------------------------------------ messages
def test_a_file_name_with_a_newline_stays_on_one_line(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bad\nname.wav").write_bytes(b"RIFF\x00\x00garbage" * 20)
    out = run_cli(*_db_args(tmp_path), "--fingerprint", str(folder), "wav", cwd=tmp_path)
    lines = out.stderr.decode().strip().splitlines()
    assert out.returncode == 1
    bad = [line for line in lines if "name.wav" in line]
    assert len(bad) == 1 and bad[0].startswith("dejavu: '") and "/bad\\nname.wav': cannot decode" in bad[0], lines


def test_a_symlink_loop_is_reported_as_such(store, tmp_path):
    loop = tmp_path / "loop.mp3"
    loop.symlink_to(loop)
    for args in (["--fingerprint", str(loop)], ["--recognize", "file", str(loop)]):
        out = run_cli("--db", str(store), *args, cwd=tmp_path)
        err = out.stderr.decode()
        assert out.returncode == 2 and "symbolic link loop" in err and "no such file" not in err, err


def test_file_names_starting_with_a_dash(demo_dir, tmp_path):
    shutil.copy(demo_dir / "songs" / "Plain Song.wav", tmp_path / "-x.wav")
    shutil.copy(demo_dir / "songs" / "under_score_song.wav", tmp_path / "-y.wav")
    db = _db_args(tmp_path)
    out = run_cli(*db, "--fingerprint", "--", "-x.wav", cwd=tmp_path)
    assert out.returncode == 0 and "usage:" not in out.stderr.decode(), out.stderr.decode()
    out = run_cli(*db, "--fingerprint", "./-y.wav", cwd=tmp_path)
    assert out.returncode == 0, out.stderr.decode()
    assert sorted(json.loads(line)["song_name"] for line in run_cli(*db, "--list", cwd=tmp_path).stdout.splitlines()) \
        == ["-x", "-y"]
    out = run_cli(*db, "--recognize", "file", "--", "-x.wav", cwd=tmp_path)
    assert out.returncode == 0 and json.loads(out.stdout)["results"][0]["song_name"] == "-x"


# ------------------------------------------------------------------ --db and missing / empty stores
@pytest.mark.parametrize("args", [["--recognize", "file", "clip.wav"], ["--monitor", "clip.wav"], ["--list"],
                                  ["--stats"], ["--delete", "1"], ["--rename", "1", "x"]])
def test_reading_commands_never_create_a_database(tmp_path, args):
    for db_args, name in (([], "dejavu.db"), (["--db", "mine.db"], "mine.db")):
        out = run_cli(*db_args, *args, cwd=tmp_path)
        err = out.stderr.decode()
        assert out.returncode == 2, err
        assert f"no database at '{name}' (fingerprint a folder first, or pass --db/--config)" in err
        assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_an_empty_store_gets_a_hint_and_db_works_for_every_command(demo_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = run_cli("--db", "x.db", "--fingerprint", str(empty), "mp3", cwd=tmp_path)
    assert out.returncode == 1 and "no files ending in .mp3 under" in out.stderr.decode()
    out = run_cli("--db", "x.db", "--list", cwd=tmp_path)
    assert out.returncode == 0 and out.stdout == b"" and "holds no songs yet" in out.stderr.decode()
    out = run_cli("--db", "x.db", "--fingerprint", str(demo_dir / "songs" / "Plain Song.wav"), cwd=tmp_path)
    assert out.returncode == 0 and not (tmp_path / "dejavu.db").exists()
    elsewhere = {"DEJAVU_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"}  # --db wins over it
    out = run_cli("--db", "x.db", "--stats", cwd=tmp_path, env=elsewhere)
    assert json.loads(out.stdout)["songs"] == 1 and "holds no songs" not in out.stderr.decode()


# ------------------------------------------------------------------ progress and summary lines
def test_already_fingerprinted_files_are_one_summary_line(store, demo_dir):
    out = run_cli("--db", str(store), "--fingerprint", str(demo_dir / "songs"), "wav")
    lines = out.stderr.decode().strip().splitlines()
    assert out.returncode == 0 and len(lines) == 1 and "skipped 4 (already in the database)" in lines[0], lines
    out = run_cli("--db", str(store), "--fingerprint", str(demo_dir / "songs"), "wav", "-v")
    assert out.stderr.decode().count("already fingerprinted") == 4


def _run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; (exit status, what the terminal got)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100 characters
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(ROOT / "dejavu.py"), *args], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


def test_error_lines_go_above_the_bar_and_no_bar_off_a_terminal(demo_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(demo_dir / "songs" / "Plain Song.wav", folder / "a.wav")
    (folder / "b.wav").write_bytes(b"RIFF\x00\x00garbage" * 20)
    shutil.copy(demo_dir / "songs" / "under_score_song.wav", folder / "c.wav")
    status, screen = _run_on_a_terminal(["--db", "t.db", "--fingerprint", str(folder), "wav", "-n", "1"], tmp_path)
    assert status == 1 and "fingerprinting" in screen, screen  # the bar was shown
    line = next(ln for ln in screen.splitlines() if "b.wav" in ln)
    assert line.rsplit("\r", 1)[-1].startswith("dejavu: "), repr(line)  # not glued to the bar
    out = run_cli("--db", "p.db", "--fingerprint", str(folder), "wav", "-n", "1", cwd=tmp_path)
    err = out.stderr.decode()
    assert "fingerprinting" not in err and "\r" not in err and "%|" not in err, err


# ------------------------------------------------------------------ --delete and --rename
def test_delete_names_missing_ids_and_rename(demo_dir, tmp_path):
    db = _db_args(tmp_path)
    assert run_cli(*db, "--fingerprint", str(demo_dir / "songs"), "wav", "-n", "2").returncode == 0
    songs = {json.loads(line)["song_name"]: json.loads(line)["song_id"] for line in run_cli(*db, "--list").stdout.splitlines()}
    plain = songs["Plain Song"]
    out = run_cli(*db, "--rename", str(plain), "Renamed – \"it\"")
    assert out.returncode == 0, out.stderr.decode()
    clip = cut(demo_dir / "songs" / "Plain Song.wav", tmp_path / "clip.wav", 5.0, 5.0)
    best = json.loads(run_cli(*db, "--recognize", "file", str(clip)).stdout)["results"][0]
    assert best["song_name"] == "Renamed – \"it\"" and best["song_id"] == plain
    out = run_cli(*db, "--rename", "999", "x")
    assert out.returncode == 1 and "no song with id 999" in out.stderr.decode()
    out = run_cli(*db, "--delete", str(plain), "998", "999")
    assert out.returncode == 1 and "no song with id 998, 999" in out.stderr.decode()
    assert "deleted 1 song(s)" in out.stderr.decode()


def test_rename_in_the_library_for_a_missing_id(demo_djv):
    assert demo_djv.rename_song(10**6, "nobody") is False


# ------------------------------------------------------------------ many clips, speed factor
def test_many_clips_in_one_process_one_line_each_in_order(store, demo_dir, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    a = cut(demo_dir / "songs" / "Plain Song.wav", clips / "a.mp3", 4.0, 5.0)
    b = cut(demo_dir / "songs" / "under_score_song.wav", clips / "b.wav", 10.0, 5.0)
    c = cut(demo_dir / "unknown" / "unknown 102.wav", tmp_path / "c.wav", 3.0, 5.0)
    (clips / "notes.txt").write_text("not audio")
    for jobs in ("1", "2"):
        out = run_cli("--db", str(store), "-j", jobs, "--recognize", "file", str(c), str(clips),
                      str(tmp_path / "missing.wav"))
        lines = [json.loads(line) for line in out.stdout.splitlines()]
        assert out.returncode == 1 and [x["path"] for x in lines] == [str(c), str(a), str(b),
                                                                        str(tmp_path / "missing.wav")]
        assert lines[0]["results"] == []
        assert lines[1]["results"][0]["song_name"] == "Plain Song"
        assert abs(lines[1]["results"][0]["offset_seconds"] - 4.0) <= 0.1
        assert lines[2]["results"][0]["song_name"] == "under_score_song"
        assert "no such file" in lines[3]["error"] and "missing.wav" in out.stderr.decode()


@pytest.mark.parametrize("factor", [1.03, 0.97])
def test_a_speed_corrected_match_says_so(store, demo_dir, tmp_path, factor):
    from dejavu.demo import write_wav
    from dejavu.evaluation.degrade import speed
    from dejavu.logic.decoder import decode

    song = decode(str(demo_dir / "songs" / "Plain Song.wav"), 22050)
    write_wav(str(tmp_path / "fast.wav"), speed(song[6 * 22050:15 * 22050], 22050, factor), 22050)
    write_wav(str(tmp_path / "clean.wav"), song[6 * 22050:15 * 22050], 22050)
    fast = json.loads(run_cli("--db", str(store), "--recognize", "file", str(tmp_path / "fast.wav")).stdout)
    best = fast["results"][0]
    assert best["song_name"] == "Plain Song" and best["speed_factor"] == factor
    assert abs(best["offset_seconds"] - 6.0) <= 0.1
    clean = json.loads(run_cli("--db", str(store), "--recognize", "file", str(tmp_path / "clean.wav")).stdout)
    assert set(clean["results"][0]) == set(best) - {"speed_factor"}


# ------------------------------------------------------------------ the library never prints
#: Files that talk to a user directly: command lines and the demo script.
MAY_PRINT = {"cli.py", "cli_commands.py", "evaluation/cli.py", "demo.py", "server/cli.py"}


def test_the_library_never_prints_and_logs_to_a_null_handler():
    package = ROOT / "dejavu"
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if str(path.relative_to(package)) in MAY_PRINT:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = ast.unparse(node.func)
                if func == "print" or re.fullmatch(r"sys\.(stdout|stderr)\.write", func):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {func}")
    assert offenders == []
    code = "import logging, dejavu; print([type(h).__name__ for h in logging.getLogger('dejavu').handlers])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "['NullHandler']", out.stderr


# ------------------------------------------------------------------ the README cannot drift
def _readme_commands() -> list[list[str]]:
    """The argument lists of every ``dejavu ...`` command in the README's shell blocks."""
    readme = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", readme, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("|"):
                words = shlex.split(part, comments=True)
                if words and words[0] == "dejavu" and words[1:2] != ["serve"]:
                    commands.append(words[1:])
    return commands


def test_readme_commands_parse_and_options_exist():
    from dejavu.cli import _check_options, _check_recognize, build_parser
    from dejavu.cli_commands import paths_after_double_dash

    parser = build_parser()
    commands = _readme_commands()
    assert len(commands) >= 10
    for words in commands:
        args = parser.parse_args(paths_after_double_dash(words))  # SystemExit (a failure) if it drifted
        if args.recognize:
            _check_recognize(args, parser)
        _check_options(args, parser)
    known = {opt for action in parser._actions for opt in action.option_strings}
    readme = (ROOT / "README.md").read_text()
    cli_text = "".join(re.findall(r"\n## (?:Use it from the shell|Microphone|Monitoring[^\n]*)\n(.*?)(?=\n## )",
                                  readme, re.S))
    mentioned = set(re.findall(r"`(?:dejavu )?(--[a-z][a-z-]+)", cli_text))
    assert len(mentioned) >= 5 and mentioned - known == set()


def test_readme_monitor_fields_are_what_the_cli_prints(store, demo_dir):
    readme = (ROOT / "README.md").read_text()
    sentence = re.search(r"printed as one JSON line as soon as it ends: (.*?)\. ", readme, re.S).group(1)
    fields = set(re.findall(r"`([a-z_]+)`", sentence))
    out = run_cli("--db", str(store), "--monitor", str(demo_dir / "songs" / "Plain Song.wav"))
    segments = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 0 and segments and all(set(s) == fields for s in segments), (fields, segments)

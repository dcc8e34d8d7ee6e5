"""Tests for the evaluation tool (``python -m dejavu.evaluation``) on synthetic songs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import wave

import numpy as np
import pytest

from dejavu.evaluation import evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 22050
SONG_SECONDS = 20.0
NAMES = ("first song.wav", "second_song_take_2.wav", "it's the third.wav", "fourth — ünïcode.wav")

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def synthetic_song(seed: int, seconds: float = SONG_SECONDS, rate: int = RATE) -> np.ndarray:
    """A random melody of harmonic notes over chords, with noise bursts; float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = np.zeros(n)
    t = 0
    while t < n:  # melody: notes of 0.1-0.4 s, 3 harmonics, decaying
        dur = int(rng.uniform(0.1, 0.4) * rate)
        f0 = 220.0 * 2 ** (rng.integers(0, 24) / 12)
        tt = np.arange(min(dur, n - t)) / rate
        env = np.exp(-tt * rng.uniform(2, 8))
        note = sum(np.sin(2 * np.pi * f0 * h * tt) / h for h in (1, 2, 3))
        out[t:t + tt.size] += 0.3 * env * note
        t += dur
    t = 0
    while t < n:  # chords: 1-2 s, three notes
        dur = int(rng.uniform(1.0, 2.0) * rate)
        tt = np.arange(min(dur, n - t)) / rate
        root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
        chord = sum(np.sin(2 * np.pi * root * 2 ** (s / 12) * tt) for s in (0, 4, 7))
        out[t:t + tt.size] += 0.1 * chord
        t += dur
    for _ in range(int(seconds * 2)):  # short filtered noise bursts
        start, length = int(rng.integers(0, n - rate // 10)), int(rng.uniform(0.02, 0.08) * rate)
        burst = np.convolve(rng.standard_normal(length), np.ones(4) / 4, mode="same")
        out[start:start + length] += 0.2 * burst * np.hanning(length)
    return (0.9 * out / np.max(np.abs(out))).astype(np.float32)


def write_wav(path: str, samples: np.ndarray, rate: int = RATE) -> None:
    with wave.open(path, "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes((samples * 32767).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("songs") / "my music"
    folder.mkdir()
    for i, name in enumerate(NAMES):
        write_wav(str(folder / name), synthetic_song(100 + i))
    return str(folder)


def run_eval(*args: str, timeout: float = 120, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **env_extra)
    return subprocess.run([sys.executable, "-m", "dejavu.evaluation", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


BASE_ARGS = ("--secs", "2", "--conditions", "clean", "pink:10", "--holdout", "0.25",
             "--clips-per-song", "2", "--padding", "2", "--seed", "7", "--jobs", "1")


@pytest.fixture(scope="module")
def first_run(corpus: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, subprocess.CompletedProcess]:
    results = str(tmp_path_factory.mktemp("results"))
    log_file = os.path.join(results, "logs", "clips.log")
    proc = run_eval(*BASE_ARGS, "--results", results, "--log-file", log_file, corpus)
    return results, proc


@needs_ffmpeg
def test_run_writes_report_table_plots_and_log(first_run: tuple[str, subprocess.CompletedProcess]) -> None:
    results, proc = first_run
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(results, "report.json"), encoding="utf-8") as fh:
        report = json.load(fh)
    assert {"settings", "timings", "songs", "summary", "files"} <= set(report)
    assert report["settings"]["seed"] == 7 and report["settings"]["lengths"] == [1.0, 2.0]
    roles = sorted(s["role"] for s in report["songs"])
    assert roles == ["database"] * 3 + ["negative"]
    assert {os.path.basename(s["path"]) for s in report["songs"]} == set(NAMES)
    for song in report["songs"]:
        assert (song["song_id"] is None) == (song["role"] == "negative")
    cells = {(r["condition"], r["length"]): r for r in report["summary"]}
    assert set(cells) == {(c, n) for c in ("clean", "pink:10") for n in (1.0, 2.0)}
    for row in report["summary"]:
        assert row["clips"] == 3 * 2 and row["negative_clips"] == 2
        for key in ("song_accuracy", "offset_accuracy", "false_positive_rate", "confidence",
                    "time_to_match", "wrong_song", "no_result"):
            assert key in row
        assert set(row["confidence"]["correct"]) == {"n", "median", "p10", "p90"}
        assert set(row["time_to_match"]) >= {"p50", "p95"}
    clean2 = cells[("clean", 2.0)]
    assert clean2["song_accuracy"] >= 80 and clean2["offset_accuracy"] >= 80
    assert clean2["confidence"]["correct"]["median"] > 0.3
    assert clean2["false_positive_rate"] is not None and clean2["false_positive_rate"] <= 50
    assert cells[("pink:10", 2.0)]["song_accuracy"] >= 50
    assert 0 < clean2["time_to_match"]["p50"] < 2.0
    # the Markdown table on stdout: header, separator, one row per cell
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("|")]
    assert len(lines) == 2 + 4 and "song accuracy" in lines[0]
    with open(os.path.join(results, "logs", "clips.log"), encoding="utf-8") as fh:
        logged = fh.read().splitlines()
    assert len(logged) == 4 * 2 * 2 * 2
    assert "Traceback" not in proc.stderr
    if not _has_matplotlib():
        pytest.skip("matplotlib not installed: no plots")
    assert report["files"]["plots"] == ["accuracy_vs_length.png", "confidence_histograms.png",
                                        "time_vs_length.png"]
    for name in report["files"]["plots"]:
        path = os.path.join(results, name)
        assert os.path.getsize(path) > 1000
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


@needs_ffmpeg
def test_same_seed_same_clips(corpus: str, first_run: tuple[str, subprocess.CompletedProcess],
                              tmp_path_factory: pytest.TempPathFactory) -> None:
    results, proc = first_run
    assert proc.returncode == 0, proc.stderr
    again = str(tmp_path_factory.mktemp("again"))
    # parameters only: the throwaway database is still used, whatever the environment says
    params = os.path.join(again, "params.json")
    with open(params, "w", encoding="utf-8") as fh:
        json.dump({"matching": {"topn": 1}}, fh)
    elsewhere = os.path.join(again, "elsewhere.db")
    proc2 = run_eval(*BASE_ARGS, "--results", again, "--config", params, "--no-plots", "-q", corpus,
                     DEJAVU_DATABASE_URL="sqlite:///" + elsewhere)
    assert proc2.returncode == 0, proc2.stderr
    assert os.path.exists(os.path.join(again, "eval.db")) and not os.path.exists(elsewhere)
    with open(os.path.join(again, "report.json"), encoding="utf-8") as fh:
        assert json.load(fh)["settings"]["matching"]["topn"] == 1

    def positions(folder: str) -> list[tuple]:
        return [(c["key"], c["role"], c["condition"], c["length"], c["clip"], c["start"], c["correct"],
                 c["false_positive"]) for c in evaluate.load_clips(folder)]

    first, second = positions(results), positions(again)
    assert first == second
    starts = {p[5] for p in first}
    assert len(starts) > 4 and all(2.0 <= s <= SONG_SECONDS - 2.0 - 1.0 for s in starts)

    def accuracy(folder: str) -> list[tuple]:
        with open(os.path.join(folder, "report.json"), encoding="utf-8") as fh:
            rows = json.load(fh)["summary"]
        return [(r["condition"], r["length"], r["correct"], r["offset_correct"], r["false_positives"],
                 r["confidence"]["correct"]) for r in rows]

    assert accuracy(results) == accuracy(again)


BAD_ARGUMENTS = [
    (("--secs", "0"), "--secs"),
    (("--lengths", "1", "x"), "--lengths"),
    (("--conditions", "nonsense"), "unknown condition"),
    (("--conditions", "clean", "clean"), "twice"),
    (("--holdout", "1.5"), "--holdout"),
    (("--clips-per-song", "0"), "--clips-per-song"),
    (("--padding", "-1"), "--padding"),
    (("--seed", "abc"), "--seed"),
    (("--seed", "-3"), "--seed"),
    (("--negatives", "/nonexistent/dir"), "--negatives"),
    (("--distractors", "-1"), "--distractors"),
    (("--distractors", "5", "--no-ingest"), "--no-ingest"),
    (("--distractor-seconds", "0"), "--distractor-seconds"),
]


@pytest.mark.parametrize("args, message", BAD_ARGUMENTS)
def test_bad_arguments_one_line_exit_2(corpus: str, args: tuple[str, ...], message: str,
                                       tmp_path: "os.PathLike[str]",
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from dejavu.evaluation import cli

    with pytest.raises(SystemExit) as exc:
        cli.main([*args, "--results", str(tmp_path), corpus])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dejavu-eval: error:") and message in lines[0]
    assert out == "" and not os.listdir(tmp_path)


@pytest.mark.parametrize("args", [("--seed", "abc"), ("--conditions", "nonsense")])
def test_bad_arguments_in_a_real_process(corpus: str, args: tuple[str, ...]) -> None:
    proc = run_eval(*args, corpus, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_missing_folder_and_bad_config(tmp_path: "os.PathLike[str]") -> None:
    proc = run_eval(str(tmp_path / "nope"), timeout=30)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    (tmp_path / "songs").mkdir()
    bad = tmp_path / "bad.json"
    bad.write_text('{"fingerprint": {"fan_value": "many"}}')
    write_wav(str(tmp_path / "songs" / "a.wav"), synthetic_song(1, seconds=3.0))
    proc = run_eval("--config", str(bad), "--results", str(tmp_path / "r"), str(tmp_path / "songs"),
                    timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "fan_value" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------- library functions, in-process
def test_clip_starts_deterministic_and_padded() -> None:
    a = evaluate.clip_starts(100.0, 5.0, 10, 10.0, evaluate.generator(42, "starts", "x.mp3", 5000))
    b = evaluate.clip_starts(100.0, 5.0, 10, 10.0, evaluate.generator(42, "starts", "x.mp3", 5000))
    c = evaluate.clip_starts(100.0, 5.0, 10, 10.0, evaluate.generator(43, "starts", "x.mp3", 5000))
    assert a == b and a != c
    assert all(10.0 <= s <= 85.0 for s in a)
    short = evaluate.clip_starts(12.0, 10.0, 5, 10.0, np.random.default_rng(0))
    assert short is not None and all(0.0 <= s <= 2.0 for s in short)
    assert evaluate.clip_starts(4.0, 5.0, 3, 0.0, np.random.default_rng(0)) is None


def test_split_holdout_by_seed_not_order() -> None:
    keys = [f"song {i}.mp3" for i in range(20)]
    held = evaluate.split_holdout(keys, 0.2, 5)
    assert len(held) == 4 and held == evaluate.split_holdout(list(reversed(keys)), 0.2, 5)
    assert held != evaluate.split_holdout(keys, 0.2, 6)
    assert evaluate.split_holdout(keys, 0.0, 5) == set()
    assert len(evaluate.split_holdout(keys[:2], 0.9, 5)) == 1


def test_repeat_matches_accepts_a_copied_passage_only() -> None:
    sr = 8000
    rng = np.random.default_rng(3)
    a, b, c = (rng.standard_normal(3 * sr).astype(np.float32) for _ in range(3))
    song = np.concatenate([a, b, a, c])              # a at 0 s and again at 6 s
    assert evaluate.repeat_matches(song, sr, 0.5, 6.5, 2.0)
    assert evaluate.repeat_matches(song, sr, 0.5, 6.53, 2.0)   # frame-rounded offset
    assert not evaluate.repeat_matches(song, sr, 0.5, 3.5, 2.0)
    assert not evaluate.repeat_matches(song, sr, 0.5, 11.5, 2.0)  # runs past the end
    assert evaluate.repeat_correlation(song, sr, 0.5, 6.5, 2.0) == pytest.approx(1.0)
    assert evaluate.repeat_correlation(song, sr, 0.5, 11.5, 2.0) is None


def test_summarize_counts_and_table() -> None:
    def clip(role: str, **kw: object) -> evaluate.ClipOutcome:
        o = evaluate.ClipOutcome(0, "k", role, "clean", 2.0, 0, 10.0, 1 if role == "database" else None)
        for name, value in kw.items():
            setattr(o, name, value)
        return o

    outcomes = [
        clip("database", results=1, song_id=1, correct=True, offset_ok=True, offset_error=0.01,
             input_confidence=0.8, total_time=0.02),
        clip("database", results=1, song_id=1, correct=True, offset_ok=False, offset_error=3.0,
             input_confidence=0.4, total_time=0.03),
        clip("database", results=1, song_id=2, correct=False, input_confidence=0.1, total_time=0.02),
        clip("database", results=0, correct=False, total_time=0.05),
        clip("negative", results=1, song_id=2, false_positive=True, input_confidence=0.05, total_time=0.1),
        clip("negative", results=0, false_positive=False, total_time=0.1),
        clip("database", error="samples are silent"),
    ]
    (row,) = evaluate.summarize(outcomes, ["clean"], [2.0])
    assert (row["clips"], row["correct"], row["wrong_song"], row["no_result"]) == (4, 2, 1, 1)
    assert row["song_accuracy"] == 50.0 and row["offset_accuracy"] == 50.0
    assert row["false_positive_rate"] == 50.0 and row["errors"] == 1
    assert row["confidence"]["false_positive"]["median"] == 0.05
    table = evaluate.markdown_table([row])
    assert "50.0 (2/4)" in table and table.count("\n") == 2


# ----------------------------------------------------------------- distractors
@needs_ffmpeg
def test_distractors_join_the_store_and_clean_clips_are_still_found(corpus: str,
                                                                     tmp_path: "os.PathLike[str]") -> None:
    import sqlite3

    results = str(tmp_path)
    proc = run_eval("--lengths", "2", "--conditions", "clean", "--holdout", "0.25", "--padding", "2",
                    "--seed", "7", "--no-plots", "--distractors", "50", "--distractor-seconds", "30",
                    "--results", results, corpus)
    assert proc.returncode == 0, proc.stderr
    assert "added 50 distractor songs" in proc.stderr and "Traceback" not in proc.stderr
    with open(os.path.join(results, "report.json"), encoding="utf-8") as fh:
        report = json.load(fh)
    assert report["settings"]["distractors"] == 50 and report["settings"]["distractor_seconds"] == 30.0
    with sqlite3.connect(os.path.join(results, "eval.db")) as conn:
        names = [row[0] for row in conn.execute("SELECT song_name FROM songs ORDER BY song_id")]
        per_second = dict(conn.execute("SELECT song_name LIKE 'distractor %', SUM(total_hashes) / SUM(duration) "
                                       "FROM songs GROUP BY 1"))
    assert len(names) == 3 + 50 and names[3:] == [f"distractor {i:06d}" for i in range(1, 51)]
    assert per_second[1] == pytest.approx(per_second[0], rel=0.05)  # as dense as the real songs
    assert report["timings"]["distractor_rows"] == pytest.approx(50 * 30 * per_second[0], rel=0.05)
    (clean,) = report["summary"]
    assert clean["correct"] == clean["clips"] == 3 and clean["false_positives"] == 0


def _key_rows(count: int = 400, seed: int = 0) -> np.ndarray:
    """``count`` distinct hashes with skewed counts (1..40 rows each), shape (n, 3), sorted."""
    rng = np.random.default_rng(seed)
    hashes = np.sort(rng.choice(np.arange(-2**40, 2**40, 2**20, dtype=np.int64), count, replace=False))
    per = rng.integers(1, 41, count)
    rows = np.stack([np.repeat(hashes, per), rng.integers(1, 4, per.sum()), rng.integers(0, 5000, per.sum())], 1)
    rows = np.unique(rows, axis=0)
    return rows[np.lexsort(rows.T[::-1])]


def _chi_square(observed: np.ndarray, weights: np.ndarray) -> float:
    expected = observed.sum() * weights / weights.sum()
    return float(((observed - expected) ** 2 / expected).sum())


def test_synthetic_rows_follow_the_key_distribution_in_key_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from dejavu.evaluation import distractors

    monkeypatch.setattr(distractors, "CHUNK_ROWS", 20_000)  # several hash ranges
    real = _key_rows()
    chunks = list(distractors.synthetic_rows(real, 100_000, (10, 1009), 8000, np.random.default_rng(1)))
    assert len(chunks) > 3
    rows = np.concatenate([np.stack(c, 1) for c in chunks])
    keys = rows[:, 0].astype(object) * 2**40 + rows[:, 1] * 2**20 + rows[:, 2]
    assert all(keys[1:] > keys[:-1])  # key order, across chunks, without duplicates
    synth = rows[rows[:, 1] >= 10]
    assert len(rows) == len(real) + len(synth) and len(synth) > 99_900
    assert {tuple(r) for r in real} <= {tuple(r) for r in rows}
    assert synth[:, 2].min() >= 0 and synth[:, 2].max() < 8000 and synth[:, 1].max() <= 1009
    hashes, real_count = np.unique(real[:, 0], return_counts=True)
    synth_count = np.array([np.count_nonzero(synth[:, 0] == h) for h in hashes])
    df = hashes.size - 1  # chi-square of a multinomial: mean df, sd sqrt(2 df)
    assert _chi_square(synth_count, real_count) < df + 4 * np.sqrt(2 * df)
    assert _chi_square(synth_count, np.ones(hashes.size)) > 10 * df  # not uniform over hashes


def test_add_distractors_through_the_store(tmp_path: "os.PathLike[str]",
                                           caplog: pytest.LogCaptureFixture) -> None:
    from dejavu.database.sqlite import SQLiteDatabase
    from dejavu.evaluation import distractors
    from dejavu.logic.store import NewSong

    def real_store(name: str) -> SQLiteDatabase:
        store = SQLiteDatabase(str(tmp_path / name))
        store.setup()
        for song_id in (1, 2, 3):  # three real songs of 60 s
            mine = real[real[:, 1] == song_id]
            store.store_songs([NewSong(f"real {song_id}", f"{song_id:040X}", mine[:, 0],
                                       mine[:, 2].astype(np.int32), 60.0)])
        return store

    real = _key_rows(seed=3)
    store = real_store("d.db")
    per_second = len(real) / 180.0
    caplog.set_level("INFO", logger="dejavu.evaluation.distractors")
    added = distractors.add_distractors(store, 25, 40.0, np.random.default_rng(5), frame_seconds=0.02,
                                        batch_rows=7000, log_every=10)  # 4 songs a batch
    songs = store.get_songs()
    assert [s["song_name"] for s in songs[3:]] == [f"distractor {i:06d}" for i in range(1, 26)]
    assert added == sum(s["total_hashes"] for s in songs[3:]) == pytest.approx(25 * 40 * per_second, rel=0.01)
    assert sum("distractors: " in r.getMessage() for r in caplog.records) == 3  # after 12, 20 and 25 songs
    rows = np.array(store.query(), dtype=np.int64)
    synth = rows[rows[:, 1] > 3]
    assert synth[:, 2].min() >= 0 and synth[:, 2].max() < 2000  # 40 s of 0.02 s frames
    hashes, real_count = np.unique(real[:, 0], return_counts=True)
    assert set(np.unique(synth[:, 0])) <= set(hashes)
    synth_count = np.array([np.count_nonzero(synth[:, 0] == h) for h in hashes])
    df = hashes.size - 1
    assert _chi_square(synth_count, real_count) < df + 4 * np.sqrt(2 * df)
    # a re-run adds nothing; asking for more adds the new ones only, with the rows they get in one go
    assert distractors.add_distractors(store, 25, 40.0, np.random.default_rng(5), frame_seconds=0.02) == 0
    other = real_store("e.db")
    distractors.add_distractors(other, 10, 40.0, np.random.default_rng(5), frame_seconds=0.02, batch_rows=7000)
    more = distractors.add_distractors(other, 25, 40.0, np.random.default_rng(5), frame_seconds=0.02,
                                       batch_rows=7000)
    assert sorted(other.query()) == sorted(store.query())
    assert more == sum(s["total_hashes"] for s in other.get_songs()[13:])
    store.close()
    other.close()

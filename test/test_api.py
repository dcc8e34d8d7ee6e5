"""The original's Python API, used exactly as its users do."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from conftest import cut

RESULT_KEYS = {"song_id", "song_name", "input_total_hashes", "fingerprinted_hashes_in_db",
               "hashes_matched_in_input", "input_confidence", "fingerprinted_confidence",
               "offset", "offset_seconds", "file_sha1"}


def test_issue_snippet(demo_dir, tmp_path, monkeypatch):
    from dejavu import Dejavu
    from dejavu.logic.recognizer.file_recognizer import FileRecognizer

    monkeypatch.chdir(tmp_path)
    config = {"database_type": "sqlite", "database": {"path": "fp.db"}}
    djv = Dejavu(config)
    djv.fingerprint_directory(str(demo_dir / "songs"), [".wav"], 2)
    assert djv.db.get_num_fingerprints() > 1000
    assert len(djv.get_fingerprinted_songs()) == 4
    clip = cut(demo_dir / "songs" / "Plain Song.wav", tmp_path / "clip.wav", 7.0, 5.0)
    r = djv.recognize(FileRecognizer, str(clip))
    assert set(r) == {"total_time", "fingerprint_time", "query_time", "align_time", "results"}
    best = r["results"][0]
    assert set(best) == RESULT_KEYS
    assert best["song_name"] == "Plain Song"
    assert abs(best["offset_seconds"] - 7.0) <= 0.1
    assert 0 <= best["input_confidence"] <= 1 and 0 <= best["fingerprinted_confidence"] <= 1
    assert best["file_sha1"] == __import__("hashlib").sha1((demo_dir / "songs" / "Plain Song.wav").read_bytes()).hexdigest().upper()
    # re-running skips everything (same file SHA1); extensions without dots work too
    report = djv.fingerprint_directory(str(demo_dir / "songs"), ["wav"], 1)
    assert len(report.skipped) == 4 and not report.fingerprinted
    assert (tmp_path / "fp.db").exists()


def test_names_are_preserved(demo_djv):
    names = {s["song_name"] for s in demo_djv.get_fingerprinted_songs()}
    assert names == {"Plain Song", "under_score_song", "quote's \"song\"", "ünïcødé – song"}


def test_fingerprint_file_with_and_without_name(demo_dir, tmp_path):
    from dejavu import Dejavu

    djv = Dejavu({"database_type": "sqlite", "database": {"path": str(tmp_path / "one.db")}})
    out = djv.fingerprint_file(str(demo_dir / "songs" / "Plain Song.wav"))
    assert out.status == "fingerprinted" and out.song_name == "Plain Song"
    out = djv.fingerprint_file(str(demo_dir / "unknown" / "unknown 102.wav"), "My Name")
    assert out.song_name == "My Name"
    assert djv.fingerprint_file(str(demo_dir / "songs" / "Plain Song.wav")).status == "skipped"
    assert sorted(s["song_name"] for s in djv.songs) == ["My Name", "Plain Song"]


def test_fingerprint_limit_stores_only_the_start(demo_dir, tmp_path):
    from dejavu import Dejavu
    from dejavu.logic.recognizer.file_recognizer import FileRecognizer

    djv = Dejavu({"database": {"path": str(tmp_path / "lim.db")}, "fingerprint_limit": 10})
    djv.fingerprint_file(str(demo_dir / "songs" / "Plain Song.wav"))
    song = djv.songs[0]
    assert song["duration"] == pytest.approx(10.0, abs=0.05)
    offsets = [row[2] for row in djv.db.query()]
    assert max(offsets) * djv.cfg.fingerprint.frame_seconds <= 10.0
    early = cut(demo_dir / "songs" / "Plain Song.wav", tmp_path / "early.wav", 2.0, 5.0)
    assert djv.recognize(FileRecognizer, str(early))["results"][0]["song_name"] == "Plain Song"


def test_unknown_song_gives_empty_results(demo_djv, demo_dir, tmp_path):
    from dejavu.logic.recognizer.file_recognizer import FileRecognizer

    for name in ("unknown 102.wav", "unknown 103.wav"):
        clip = cut(demo_dir / "unknown" / name, tmp_path / "u.wav", 5.0, 5.0)
        assert demo_djv.recognize(FileRecognizer, str(clip))["results"] == []


def test_silence_and_tiny_queries_give_no_match(demo_djv):
    assert demo_djv.recognize_samples(np.zeros(44100 * 3, dtype=np.float32), 44100)["results"] == []
    assert demo_djv.recognize_samples(np.zeros(1, dtype=np.float32), 44100)["results"] == []


FORMATS = [(rate, codec, channels) for rate in (8000, 16000, 22050, 44100, 48000)
           for codec, channels in (("pcm_s16le", 1), ("pcm_s24le", 2), ("pcm_s32le", 1), ("pcm_f32le", 2))]
FORMATS += [(16000, "pcm_u8", 1), (96000, "pcm_s16le", 6)]


@pytest.mark.parametrize("rate, codec, channels", FORMATS)
def test_offsets_are_right_at_any_rate_width_and_channel_count(demo_djv, demo_dir, tmp_path, rate, codec, channels):
    from dejavu.logic.recognizer.file_recognizer import FileRecognizer

    start = 11.3
    clip = cut(demo_dir / "songs" / "under_score_song.wav", tmp_path / f"c{rate}.wav", start, 5.0,
               "-ar", str(rate), "-ac", str(channels), "-c:a", codec)
    r = demo_djv.recognize(FileRecognizer, str(clip))
    assert r["results"], f"no match at {rate} Hz {codec} x{channels}"
    best = r["results"][0]
    assert best["song_name"] == "under_score_song"
    assert abs(best["offset_seconds"] - start) <= 0.1


@pytest.mark.parametrize("ext, args", [(".mp3", ["-b:a", "128k"]), (".ogg", ["-c:a", "libvorbis"]),
                                       (".opus", ["-c:a", "libopus"]), (".flac", []), (".m4a", ["-c:a", "aac"])])
def test_any_format_ffmpeg_reads(demo_djv, demo_dir, tmp_path, ext, args):
    from dejavu.logic.recognizer.file_recognizer import FileRecognizer

    clip = cut(demo_dir / "songs" / "Plain Song.wav", tmp_path / f"clip{ext}", 4.0, 5.0, *args)
    best = demo_djv.recognize(FileRecognizer, str(clip))["results"][0]
    assert best["song_name"] == "Plain Song" and abs(best["offset_seconds"] - 4.0) <= 0.1


def test_decode_errors_name_the_file(demo_djv, tmp_path):
    from dejavu.exceptions import DecodeError
    from dejavu.logic.recognizer.file_recognizer import FileRecognizer

    bogus = tmp_path / "not audio.mp3"
    bogus.write_text("hello, I am text")
    with pytest.raises(DecodeError, match="not audio.mp3"):
        demo_djv.recognize(FileRecognizer, str(bogus))
    with pytest.raises(DecodeError, match="no such file"):
        demo_djv.recognize(FileRecognizer, str(tmp_path / "missing.wav"))
    report = demo_djv.fingerprint_files([str(bogus)], 1)
    assert len(report.failed) == 1 and "not audio.mp3" in report.failed[0].reason


@pytest.mark.parametrize("factor", [1.03, 0.97])
def test_playback_speed_changes_are_undone(demo_djv, demo_dir, tmp_path, factor):
    from dejavu.demo import write_wav
    from dejavu.evaluation.degrade import speed
    from dejavu.logic.decoder import decode
    from dejavu.logic.recognizer.file_recognizer import FileRecognizer

    song = decode(str(demo_dir / "songs" / "Plain Song.wav"), 22050)
    start = 6.0
    clip = speed(song[int(start * 22050):int((start + 9) * 22050)], 22050, factor)
    write_wav(str(tmp_path / "fast.wav"), clip, 22050)
    best = demo_djv.recognize(FileRecognizer, str(tmp_path / "fast.wav"))["results"][0]
    assert best["song_name"] == "Plain Song" and abs(best["offset_seconds"] - start) <= 0.1

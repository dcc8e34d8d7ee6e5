"""End to end on real music (the dev corpus): the README's promise."""
from __future__ import annotations

import random
import shutil

import pytest

from conftest import cut


@pytest.fixture(scope="module")
def corpus_djv(corpus, tmp_path_factory):
    from dejavu import Dejavu

    db = tmp_path_factory.mktemp("real") / "fp.db"
    djv = Dejavu({"database_type": "sqlite", "database": {"path": str(db)}})
    known, unknown = corpus[:-3], corpus[-3:]
    report = djv.fingerprint_files([str(p) for p in known], 2)
    assert len(report.fingerprinted) == len(known) and not report.failed
    return djv, known, unknown


def _decode(path):
    from dejavu.logic.decoder import decode

    return decode(str(path), 8000)


def _same_audio(samples, a: float, b: float, seconds: float = 5.0) -> bool:
    """True if the song's audio at a and at b seconds is the same passage (a repeat)."""
    import numpy as np

    from dejavu.logic.spectrogram import spectrogram

    x, y = (spectrogram(samples[int(t * 8000):int((t + seconds) * 8000)], 512, 128) for t in (a, b))
    n = min(len(x), len(y))
    return n > 0 and float(np.corrcoef(x[:n].ravel(), y[:n].ravel())[0, 1]) > 0.8


def test_clips_of_fingerprinted_songs_are_named_with_the_right_offset(corpus_djv, tmp_path):
    from dejavu.logic.recognizer.file_recognizer import FileRecognizer

    djv, known, _ = corpus_djv
    rng = random.Random(7)
    for i, song in enumerate(known):
        samples = _decode(song)
        start = round(rng.uniform(5, samples.size / 8000 - 12), 2)
        clip = cut(song, tmp_path / f"clip{i}.wav", start, 5.0, "-ar", rng.choice(["16000", "44100", "48000"]))
        results = djv.recognize(FileRecognizer, str(clip))["results"]
        assert results, f"{song.name}: no match"
        assert results[0]["song_name"] == song.stem
        found = results[0]["offset_seconds"]
        # where a passage repeats inside the song, any of its copies counts
        assert abs(found - start) <= 0.1 or _same_audio(samples, start, found), (song.name, start, results[0])


def test_songs_never_fingerprinted_are_rejected(corpus_djv, tmp_path):
    from dejavu.logic.recognizer.file_recognizer import FileRecognizer

    djv, _, unknown = corpus_djv
    for i, song in enumerate(unknown):
        for start in (10.0, 25.0):
            clip = cut(song, tmp_path / f"neg{i}.mp3", start, 5.0)
            assert djv.recognize(FileRecognizer, str(clip))["results"] == [], song.name


def test_the_budgeted_search_answers_exactly_as_a_full_lookup(corpus_djv, tmp_path, monkeypatch):
    """With a row budget far below what the clips' keys find, clips are recognized from their
    rarest keys and the songs those nominate, verified with every key: the results equal
    those of reading every row (``quick_pass`` off), and unknown songs stay unknown."""
    from dejavu import Dejavu
    from dejavu.logic.recognizer.file_recognizer import FileRecognizer

    from dejavu.logic import search

    djv, known, unknown = corpus_djv
    monkeypatch.setattr(search, "FULL_LOOKUP_ROWS", 100)  # the clips' keys find more: budget or full
    budgeted = Dejavu({**djv.config, "matching": {"row_budget": 300}})
    full = Dejavu({**djv.config, "matching": {"quick_pass": False}})
    verified, whole = [], []
    for store, calls in ((budgeted.db, verified), (full.db, whole)):
        monkeypatch.setattr(store, "return_matches", lambda hashes, song_ids=None, calls=calls, lookup=store.return_matches:
                            calls.append(song_ids) or lookup(hashes, song_ids))
    rng = random.Random(11)
    for i, song in enumerate(known + unknown):
        start = round(rng.uniform(5, 40), 2)
        clip = cut(song, tmp_path / f"q{i}.mp3", start, rng.choice([2.0, 5.0, 10.0]))
        quick = budgeted.recognize(FileRecognizer, str(clip))["results"]
        assert quick == full.recognize(FileRecognizer, str(clip))["results"], song.name
        assert bool(quick) == (song in known), song.name
    assert sum(ids is not None for ids in verified) >= len(known), "the budget never applied"
    assert whole and all(ids is None for ids in whole), "quick_pass off must read every row of every key"


@pytest.mark.skipif(shutil.which("mpg123") is None, reason="mpg123 not installed (optional MP3 decoder)")
def test_decoder_paths_agree(corpus, tmp_path, monkeypatch):
    """MP3s decoded by mpg123 (44.1 / 22.05 / 11.025 kHz, stereo and mono) give what ffmpeg gives:
    the same length and level, and nearly all the same fingerprints; other rates stay with ffmpeg."""
    import numpy as np

    from dejavu.config import FingerprintConfig
    from dejavu.logic import decoder
    from dejavu.logic.fingerprint import fingerprint

    source = corpus[0]
    files = {"as shipped": source}
    for name, args in [("mono", ["-ac", "1"]), ("22 kHz", ["-ar", "22050"]), ("11 kHz mono", ["-ar", "11025", "-ac", "1"]),
                       ("48 kHz", ["-ar", "48000"])]:
        files[name] = cut(source, tmp_path / f"{name}.mp3", 10.0, 40.0, *args)
    cfg = FingerprintConfig()
    for name, path in files.items():
        assert (decoder.mpg123_command(str(path), cfg.sample_rate) is None) == (name == "48 kHz"), name
        fast = decoder.decode(str(path), cfg.sample_rate)
        fast_limited = decoder.decode(str(path), cfg.sample_rate, limit=3.3)
        monkeypatch.setenv(decoder.ENV_DECODER, "ffmpeg")
        plain = decoder.decode(str(path), cfg.sample_rate)
        plain_limited = decoder.decode(str(path), cfg.sample_rate, limit=3.3)
        monkeypatch.delenv(decoder.ENV_DECODER)
        assert abs(fast.size - plain.size) <= 300 and fast_limited.size == plain_limited.size, name
        level = float(np.sqrt(np.mean(fast ** 2)) / np.sqrt(np.mean(plain ** 2)))
        assert 0.97 < level < 1.03, (name, level)
        pairs = [set(zip(*(a.tolist() for a in fingerprint(x, cfg)))) for x in (fast, plain)]
        assert len(pairs[0] & pairs[1]) >= 0.95 * len(pairs[1]), name

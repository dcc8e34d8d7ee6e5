"""End to end on real music (the dev corpus): the README's promise."""
from __future__ import annotations

import random

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


def test_the_quick_pass_answers_exactly_as_a_full_lookup(corpus_djv, tmp_path, monkeypatch):
    """Clips are recognized from a sample of their hashes and rescored: the results equal
    those of looking every query hash up (``quick_pass`` off), and unknown songs stay unknown."""
    from dejavu import Dejavu
    from dejavu.logic.recognizer import base
    from dejavu.logic.recognizer.file_recognizer import FileRecognizer

    djv, known, unknown = corpus_djv
    monkeypatch.setattr(base, "QUICK_MIN_ROWS", 0)  # a 9-song store is below the size where it pays
    full = Dejavu({**djv.config, "matching": {"quick_pass": False}})
    rescored = []
    lookup = djv.db.return_matches
    monkeypatch.setattr(djv.db, "return_matches",
                        lambda hashes, song_ids=None: rescored.append(song_ids) or lookup(hashes, song_ids))
    rng = random.Random(11)
    for i, song in enumerate(known + unknown):
        start = round(rng.uniform(5, 40), 2)
        clip = cut(song, tmp_path / f"q{i}.mp3", start, rng.choice([2.0, 5.0, 10.0]))
        quick = djv.recognize(FileRecognizer, str(clip))["results"]
        assert quick == full.recognize(FileRecognizer, str(clip))["results"], song.name
        assert bool(quick) == (song in known), song.name
    assert sum(ids is not None for ids in rescored) >= len(known) - 1, "the quick pass never answered"

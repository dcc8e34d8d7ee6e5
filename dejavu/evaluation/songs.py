"""The songs an evaluation uses, and the seeded random choices made about them.

Songs are split into those that go into the database and held-out ones (negatives,
never fingerprinted), then mapped to their ``song_id`` by the SHA1 of their bytes:
file names are never parsed, so any name works.

Determinism: every random choice comes from a generator seeded with the run's seed and
a stable key (relative file path, clip length, clip index, condition name), so the same
seed gives the same split, the same clip positions and the same degradations,
whatever the order songs are processed in, and adding a condition or a song does not
move the clips of the others.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from dejavu.evaluation.settings import Settings
from dejavu.exceptions import DecodeError, EvaluationError

log = logging.getLogger(__name__)

ROLE_DB, ROLE_NEGATIVE = "database", "negative"


@dataclass
class Song:
    """One audio file taking part; ``key`` is its path relative to its folder."""

    index: int
    path: str
    key: str
    role: str                       # ROLE_DB or ROLE_NEGATIVE
    sha1: str = ""
    song_id: int | None = None      # set for database songs
    duration: float | None = None   # seconds, once decoded


def stable_words(text: str) -> list[int]:
    """Four 32-bit words from the SHA1 of ``text``: a seed component stable across runs."""
    digest = hashlib.sha1(text.encode("utf-8", "surrogateescape")).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]


def generator(seed: int, *parts: int | str) -> np.random.Generator:
    """A generator determined by ``seed`` and ``parts`` (strings are hashed)."""
    entropy: list[int] = [seed]
    for part in parts:
        entropy.extend(stable_words(part) if isinstance(part, str) else [int(part)])
    return np.random.default_rng(entropy)


def list_audio(folder: str, extensions: Iterable[str]) -> list[tuple[str, str]]:
    """(absolute path, path relative to ``folder``) of audio files under ``folder``, sorted."""
    from dejavu.logic.decoder import find_files

    root = os.path.abspath(folder)
    return [(p, os.path.relpath(p, root)) for p, _ in find_files(root, list(extensions))]


def split_holdout(keys: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The keys held out of the database: ``round(fraction · n)`` of them (at least one
    if ``fraction`` > 0, at most n − 1), chosen by ``seed`` independently of list order."""
    if fraction <= 0 or len(keys) < 2:
        return set()
    count = min(len(keys) - 1, max(1, round(fraction * len(keys))))
    ranked = sorted(keys, key=lambda k: generator(seed, "holdout", k).random())
    return set(ranked[:count])


def clip_starts(duration: float, length: float, count: int, padding: float,
                rng: np.random.Generator) -> list[float] | None:
    """``count`` start positions (s) for clips of ``length`` s, at least ``padding`` s from
    both ends when the song is long enough (else the padding shrinks evenly).  Starts are
    whole milliseconds.  None if the song is shorter than the clip."""
    room = duration - length
    if room < 0:
        return None
    pad = min(padding, room / 2)
    lo, hi = int(math.ceil(pad * 1000)), int(math.floor((duration - pad - length) * 1000))
    hi = max(hi, lo)
    return [int(v) / 1000 for v in rng.integers(lo, hi + 1, size=count)]


def collect_songs(settings: Settings, seed: int) -> list[Song]:
    """Database songs and negatives (held-out and from ``negatives_dir``), indexed."""
    files = list_audio(settings.audio_dir, settings.extensions)
    if not files:
        raise EvaluationError(f"{settings.audio_dir}: no audio files "
                              f"({', '.join(settings.extensions)})")
    held = split_holdout([k for _, k in files], settings.holdout, seed)
    pairs = [(p, k, ROLE_NEGATIVE if k in held else ROLE_DB) for p, k in files]
    if settings.negatives_dir:
        negatives = list_audio(settings.negatives_dir, settings.extensions)
        if not negatives:
            log.warning("%s: no audio files to use as negatives", settings.negatives_dir)
        pairs += [(p, "negatives/" + k, ROLE_NEGATIVE) for p, k in negatives]
    seen: set[str] = set()
    songs: list[Song] = []
    for path, key, role in pairs:
        if os.path.realpath(path) in seen:
            continue
        seen.add(os.path.realpath(path))
        songs.append(Song(len(songs), path, key, role))
    return songs


def ingest_and_map(djv: Any, songs: list[Song], settings: Settings) -> list[Song]:
    """Fingerprint the database songs (if asked), then give every song its song_id by
    SHA1; drop songs that cannot take part (logged).  Returns the songs kept."""
    from dejavu.logic.decoder import unique_hash

    kept = []
    for song in songs:
        try:
            song.sha1 = unique_hash(song.path)
        except DecodeError as exc:
            log.warning("%s: skipped", exc)
            continue
        kept.append(song)
    if settings.ingest:
        todo = [s.path for s in kept if s.role == ROLE_DB]
        log.info("fingerprinting %d songs (%d processes)", len(todo), settings.nprocs or os.cpu_count() or 1)
        report = djv.fingerprint_files(todo, nprocesses=settings.nprocs)
        for failed in report.failed:
            log.warning("not fingerprinted, left out: %s", failed.reason)
    ids = {s["file_sha1"]: int(s["song_id"]) for s in djv.get_fingerprinted_songs()}
    result = []
    for song in kept:
        in_db = ids.get(song.sha1)
        if song.role == ROLE_DB:
            if in_db is None:
                if settings.ingest:
                    continue  # its failure was logged above
                log.warning("%s: not in the database, used as a negative", song.path)
                song.role = ROLE_NEGATIVE
            song.song_id = in_db
        elif in_db is not None:
            log.warning("%s: held out but the database has it (song_id %d): left out", song.path, in_db)
            continue
        result.append(song)
    return result

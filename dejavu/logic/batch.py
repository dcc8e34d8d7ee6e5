"""Batch recognition: many files in one process, or in worker processes, one answer per file.

Opening the store and importing the pipeline happen once, not once per clip, which is
what makes recognizing a folder of clips with one command faster than one command per
clip (``bench/recognize_many.py``).
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from dejavu.config import Config
from dejavu.exceptions import DejavuError
from dejavu.logic import decoder
from dejavu.logic.recognizer.file_recognizer import recognize_file
from dejavu.logic.store import Store
from dejavu.quoting import quote

#: Extensions taken from a folder given to :func:`find_clips` (any other file there is left out).
AUDIO_EXTENSIONS = ("mp3", "wav", "flac", "ogg", "oga", "opus", "m4a", "aac", "wma", "aif", "aiff", "mp4", "mka",
                    "webm")


@dataclass
class ClipResult:
    """The answer for one file: its recognition dict, or why it could not be recognized."""

    path: str
    result: dict[str, Any] | None = None   # the recognizer's dict (``results`` may be empty)
    error: str | None = None               # one line naming the file


def find_clips(paths: Sequence[str]) -> list[str]:
    """``paths`` with each folder replaced by its audio files (:data:`AUDIO_EXTENSIONS`,
    recursively, sorted); files are kept as given, whatever their extension."""
    clips: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            clips += [f for f, _ in decoder.find_files(path, AUDIO_EXTENSIONS)]
        else:
            clips.append(path)
    return clips


_worker: tuple[Store, Config] | None = None


def _recognize_one(path: str) -> ClipResult:
    """Recognize ``path`` with the worker's store and config; never raises for one bad file."""
    assert _worker is not None
    store, config = _worker
    try:
        return ClipResult(path, result=recognize_file(store, config, path))
    except DejavuError as exc:
        return ClipResult(path, error=str(exc))
    except Exception as exc:  # a batch survives anything one file does
        return ClipResult(path, error=f"{quote(path)}: unexpected error: {exc!r}")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool


def recognize_files(store: Store, config: Config, paths: Sequence[str], processes: int = 1) -> Iterator[ClipResult]:
    """Recognize each file of ``paths``, yielding a ClipResult per file in their order.

    With ``processes`` > 1 (where processes can be forked), that many worker processes
    share the work; each opens its own connection to the store.
    """
    global _worker
    _worker = (store, config)
    processes = max(1, min(processes, len(paths)))
    if processes == 1 or "fork" not in multiprocessing.get_all_start_methods():
        yield from map(_recognize_one, paths)
        return
    store.close()  # children must not share the parent's connection; each reopens its own
    pool = multiprocessing.get_context("fork").Pool(processes, initializer=_ignore_sigint)
    try:
        yield from pool.imap(_recognize_one, paths)
    finally:
        pool.terminate()
        pool.join()

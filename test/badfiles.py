"""A corpus of awkward inputs for the reliability tests (test/test_reliability.py).

``make_corpus(folder)`` writes one file (or directory, symlink, FIFO) per kind and
returns a :class:`Case` for each, saying what dejavu must do with it:

* ``"fail"``: fingerprinting reports one line naming the file and ``reason``;
  ``--recognize file`` exits 2 with one line naming the file;
* ``"silent"``: audio without fingerprints (silence, a few milliseconds): fingerprinting
  fails with "no fingerprints", recognition answers ``results: []`` (exit 1);
* ``"good"``: unusual but valid audio (8/24-bit, float, 6 channels, 384 kHz, odd
  names): fingerprinted and recognized like any other song.

Every good file is a different synthetic song, so each can be recognized.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dejavu.demo import synth_song

SR = 22050
#: Extensions to pass to ``--fingerprint DIR ...`` so that every case is considered.
EXTENSIONS = ("wav", "mp3", "mp4")


@dataclass(frozen=True)
class Case:
    """One awkward input and the behaviour dejavu owes it."""

    kind: str            # what is wrong (or unusual) about it
    path: Path           # where it is (a non-UTF-8 name holds surrogate escapes)
    expect: str          # "fail", "silent" or "good"
    reason: str = ""     # lower-case words the error line must contain ("fail"/"silent")
    in_batch: bool = True  # a directory walk offers it as a file
    raw_name: bytes | None = None  # the file name's bytes when they are not valid UTF-8


def wav_bytes(data: np.ndarray, sr: int, sample_format: str = "s16") -> bytes:
    """A WAV file holding ``data`` (shape (n,) or (n, channels), float in [-1, 1]).

    ``sample_format``: "u8", "s16", "s24" (integer PCM) or "f32" (IEEE float, written
    as given: NaN and Inf too).
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    channels = data.shape[1]
    clipped = data if sample_format == "f32" else np.clip(data, -1.0, 1.0)
    if sample_format == "u8":
        raw, width, tag = np.round(clipped * 127 + 128).astype(np.uint8).tobytes(), 1, 1
    elif sample_format == "s16":
        raw, width, tag = np.round(clipped * 32767).astype("<i2").tobytes(), 2, 1
    elif sample_format == "s24":
        ints = np.round(clipped * (2**23 - 1)).astype("<i4").reshape(-1)
        raw, width, tag = ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes(), 3, 1
    elif sample_format == "f32":
        raw, width, tag = clipped.astype("<f4").tobytes(), 4, 3
    else:
        raise ValueError(sample_format)
    fmt = struct.pack("<HHIIHH", tag, channels, sr, sr * channels * width, channels * width, 8 * width)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(raw)) + raw
    return b"RIFF" + struct.pack("<I", len(body)) + body


def song(seed: int, seconds: float, sr: int = SR) -> np.ndarray:
    """Synthetic song ``seed`` as float mono at ``sr`` Hz (linear interpolation to other
    rates: the images it leaves lie far above the band dejavu fingerprints)."""
    x = synth_song(seed, seconds, SR)
    if sr != SR:
        x = np.interp(np.arange(int(seconds * sr)) * (SR / sr), np.arange(x.size), x)
    return x


def _mp3(wav: Path, mp3: Path) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(wav), "-c:a", "libmp3lame",
                    "-b:a", "128k", str(mp3)], check=True)


def make_corpus(folder: Path, seconds: float = 8.0) -> list[Case]:
    """Write every case into ``folder`` (created) and return the cases."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def bad(kind: str, name: str, data: bytes, reason: str, expect: str = "fail") -> Path:
        (folder / name).write_bytes(data)
        cases.append(Case(kind, folder / name, expect, reason))
        return folder / name

    def good(kind: str, name: str, data: bytes) -> None:
        (folder / name).write_bytes(data)
        cases.append(Case(kind, folder / name, "good"))

    # ---- not audio at all
    bad("empty file", "empty.mp3", b"", "empty")
    bad("zero-length audio (valid WAV header, 0 frames)", "zero frames.wav", wav_bytes(np.zeros(0), SR),
        "no audio")
    garbage = np.random.default_rng(8).bytes(4000)
    bad("corrupt header", "corrupt header.wav", b"RIFF\x24\x00\x00\x00WAVEfmX " + garbage, "cannot decode")
    bad("text file renamed .mp3", "notes.mp3", b"These are my notes, not a song.\n" * 40, "cannot decode")
    bad("pure silence", "silence.wav", wav_bytes(np.zeros(SR * 5), SR), "no fingerprints", "silent")
    bad("one sample", "one sample.wav", wav_bytes(np.array([0.5]), SR), "no audio")

    # ---- truncated MP3: the header and a few frames of a real song
    scratch = folder.parent / (folder.name + "-scratch")
    scratch.mkdir(exist_ok=True)
    (scratch / "whole.wav").write_bytes(wav_bytes(song(90, 6.0), SR))
    _mp3(scratch / "whole.wav", scratch / "whole.mp3")
    bad("truncated MP3 (a few milliseconds left)", "truncated.mp3", (scratch / "whole.mp3").read_bytes()[:1500],
        "no fingerprints", "silent")

    # ---- video without an audio stream
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=5:duration=2", "-c:v", "mpeg4", str(folder / "video only.mp4")],
                   check=True)
    cases.append(Case("video without audio", folder / "video only.mp4", "fail", "no audio"))
    shutil.rmtree(scratch)

    # ---- not a regular, readable file
    (folder / "folder.mp3").mkdir()  # a directory named like a song: a batch walks it as a folder
    cases.append(Case("directory named like a file", folder / "folder.mp3", "fail", "directory",
                      in_batch=False))
    good("song inside a directory named like a file", "folder.mp3/inside.wav", wav_bytes(song(10, seconds), SR))
    locked = bad("unreadable (mode 000)", "locked.wav", wav_bytes(song(91, seconds), SR), "permission denied")
    locked.chmod(0)
    os.symlink("loop b.wav", folder / "loop a.wav")
    os.symlink("loop a.wav", folder / "loop b.wav")
    cases.append(Case("symlink loop", folder / "loop a.wav", "fail", "symbolic links"))
    cases.append(Case("symlink loop", folder / "loop b.wav", "fail", "symbolic links"))
    os.symlink("nowhere.wav", folder / "dangling.wav")
    cases.append(Case("dangling symlink", folder / "dangling.wav", "fail", "no such file"))
    os.mkfifo(folder / "pipe.wav")
    cases.append(Case("named pipe (FIFO)", folder / "pipe.wav", "fail", "not a regular file"))

    # ---- unusual but valid audio: each a different song
    good("8-bit unsigned WAV", "eight bit.wav", wav_bytes(song(11, seconds), SR, "u8"))
    good("24-bit WAV", "twenty-four bit.wav", wav_bytes(song(12, seconds), SR, "s24"))
    good("32-bit float WAV", "float.wav", wav_bytes(song(13, seconds), SR, "f32"))
    poisoned = song(19, seconds)
    poisoned[::2000], poisoned[1::2000], poisoned[2::2000] = np.nan, np.inf, -np.inf
    good("float WAV with NaN and Inf samples", "nan and inf.wav", wav_bytes(poisoned, SR, "f32"))
    six = np.stack([song(14, seconds) * g for g in (0.9, 0.8, 1.0, 0.0, 0.6, 0.5)], axis=1)
    good("6-channel WAV", "six channels.wav", wav_bytes(six, SR))
    good("384 kHz WAV", "384 kHz.wav", wav_bytes(song(15, seconds, 384000), 384000))
    good("SQL in the name", "Robert'); DROP TABLE songs;--.wav", wav_bytes(song(16, seconds), SR))
    good("quotes, semicolon, wildcards", "it's \"100%\" _a;b*.wav", wav_bytes(song(17, seconds), SR))
    raw_name = b"caf\xe9 latin-1.wav"  # not valid UTF-8
    with open(os.fsencode(folder) + b"/" + raw_name, "wb") as fh:
        fh.write(wav_bytes(song(18, seconds), SR))
    cases.append(Case("non-UTF-8 file name", folder / os.fsdecode(raw_name), "good", raw_name=raw_name))
    return cases

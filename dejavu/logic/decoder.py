"""Decode: any audio ffmpeg reads → float32 mono samples at the fingerprint's rate.

ffmpeg does the decoding, down-mixing and resampling in one streamed pass (no
intermediate WAV, no whole-file buffers), so long files cost bounded memory.  MP3
files whose rate is 1, 2 or 4 times the target rate are decoded by mpg123 instead
when it is installed (2.4x less CPU, the same fingerprints; see :func:`mpg123_command`).
PCM arrays already in memory (microphone) become float32 mono with :func:`to_mono_float`;
their rate is changed by :mod:`dejavu.logic.resample` (``resample`` and ``stretch``
are re-exported here, where they used to live).
"""
from __future__ import annotations

import errno
import fnmatch
import hashlib
import itertools
import logging
import math
import os
import re
import shutil
import stat
import subprocess
from typing import IO, Iterable, Iterator, Sequence

import numpy as np

from dejavu.exceptions import DecodeError
from dejavu.quoting import quote
from dejavu.logic.integrity import MPEG_RATES, DecodeReport, DecoderLog, declared_seconds, first_mp3_frame
from dejavu.logic.resample import finite, resample, stretch

__all__ = [
    "INGEST_BLOCK_SECONDS", "QUERY_BLOCK_SECONDS", "STREAM_BLOCK_SECONDS", "DECODE_BLOCK_SECONDS", "ENV_DECODER",
    "unique_hash", "normalize_extensions", "find_files", "get_audio_name_from_path", "clean_text", "check_file",
    "mp3_layout", "ffmpeg_command", "mpg123_command", "stream", "decode", "to_mono_float", "resample", "stretch",
]

log = logging.getLogger(__name__)

_BYTES_PER_SAMPLE = 4  # float32
#: Seconds of audio per decoded block, by use (memory stays bounded by one block):
INGEST_BLOCK_SECONDS = 30.0   # fingerprinting a file for the store
QUERY_BLOCK_SECONDS = 10.0    # recognizing a file (and the default of :func:`stream`)
STREAM_BLOCK_SECONDS = 1.0    # monitoring a stream: small blocks keep segments timely
DECODE_BLOCK_SECONDS = 60.0   # :func:`decode`, which keeps the whole signal anyway
#: Set to ``ffmpeg`` to decode MP3 files with ffmpeg even where mpg123 is installed.
ENV_DECODER = "DEJAVU_DECODER"
#: mpg123's options for decoding at 1/1, 1/2 and 1/4 of the file's rate.
_MPG123_RATIOS = {1: [], 2: ["--2to1"], 4: ["--4to1"]}


def unique_hash(file_path: str, block_size: int = 2**20) -> str:
    """SHA1 of the file's bytes as uppercase hex (the original's ``file_sha1``)."""
    check_file(file_path)
    sha1 = hashlib.sha1()
    try:
        with open(file_path, "rb") as fh:
            while block := fh.read(block_size):
                sha1.update(block)
    except OSError as exc:
        raise DecodeError(f"{quote(file_path)}: cannot read file: {_os_reason(exc)}") from None
    return sha1.hexdigest().upper()


def normalize_extensions(extensions: str | Iterable[str] | None) -> list[str]:
    """``"mp3"``, ``[".mp3", "WAV"]`` → ``["mp3", "wav"]`` (lower case, no dots)."""
    if extensions is None:
        return []
    if isinstance(extensions, str):
        extensions = [extensions]
    return [e.strip().lstrip(".").lower() for e in extensions if e.strip().lstrip(".")]


def find_files(path: str, extensions: str | Iterable[str] | None) -> list[tuple[str, str]]:
    """Files under ``path`` (recursively, sorted) whose extension is in ``extensions``.

    Extensions match case-insensitively, with or without the dot; an empty list
    matches every file.  Returns ``(file_path, extension)`` pairs, as the original.
    """
    wanted = normalize_extensions(extensions)
    found = []
    for dirpath, dirnames, filenames in os.walk(path, onerror=lambda e: log.warning("%s", e)):
        dirnames.sort()
        for name in sorted(filenames):
            ext = os.path.splitext(name)[1].lstrip(".")
            if not wanted or ext.lower() in wanted or any(fnmatch.fnmatch(name.lower(), f"*.{w}") for w in wanted):
                found.append((os.path.join(dirpath, name), ext))
    return found


def get_audio_name_from_path(file_path: str) -> str:
    """Default song name: the file name without its extension (as valid Unicode)."""
    return clean_text(os.path.splitext(os.path.basename(file_path))[0])


def clean_text(text: str) -> str:
    """``text`` as storable Unicode: the undecodable bytes of a non-UTF-8 file name
    (Python's surrogate escapes) become U+FFFD."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # lone surrogates that are not escaped bytes
        return text.encode("utf-8", "replace").decode("utf-8")


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise DecodeError("ffmpeg was not found on PATH; install it (e.g. apt-get install ffmpeg)")
    return exe


def ffmpeg_command(source: str, sample_rate: int, limit: float | None,
                   input_args: Sequence[str] = (), loglevel: str = "error") -> list[str]:
    """The ffmpeg command decoding ``source`` (a path, a URL, or ``"-"`` for standard
    input) to float32 mono at ``sample_rate`` on its stdout: its first ``limit`` seconds
    (None = all), ``input_args`` before ``-i``, messages of ``loglevel`` and above on
    stderr.  DecodeError if ffmpeg is not installed."""
    cmd = [_ffmpeg(), "-hide_banner", "-nostats", "-loglevel", loglevel, *(["-nostdin"] if source != "-" else []),
           *input_args, "-i", "pipe:0" if source == "-" else source,
           "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(sample_rate)]
    if limit:
        cmd += ["-t", f"{limit:.6f}"]
    return cmd + ["-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"]


def ffmpeg_reason(stderr: bytes, source: str) -> str:
    """Why ffmpeg (or mpg123) could not decode ``source``, in one line, from its error output."""
    # The file's name is left out: the message names it already, quoted; a name holding a
    # newline reaches here cut into lines (each of its pieces is dropped).
    text = stderr.replace(os.fsencode(source) + b": ", b"").decode("utf-8", "replace")
    pieces = source.splitlines() or [source]
    lines = [ln.strip().removeprefix(f"{pieces[-1]}: ") for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if ln and (len(pieces) < 2 or ln not in pieces)]
    if not lines:
        return "the decoder failed without a message"
    if any("matches no streams" in ln or "does not contain any stream" in ln for ln in lines):
        return "no audio stream"
    # "[wav @ 0x55d0] no 'fmt ' tag found" → the demuxer's own words, if it said any.
    details = [re.sub(r"^\[[^]]*@ 0x[0-9a-f]+\]\s*", "", ln) for ln in lines if ln.startswith("[")]
    last = lines[-1]
    if last.startswith(("Invalid data", "Invalid argument")):
        return f"not an audio file, or corrupt ({details[0] if details else last})"
    return last


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


def check_file(path: str) -> None:
    """Raise DecodeError naming ``path`` unless it is a readable, non-empty regular file.

    Catches what ffmpeg would hang on (a FIFO) or report unclearly (a directory, a
    symlink loop, no permission).
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise DecodeError(f"{quote(path)}: {_os_reason(exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise DecodeError(f"{quote(path)}: is a directory, not an audio file")
    if not stat.S_ISREG(info.st_mode):
        raise DecodeError(f"{quote(path)}: not a regular file (a pipe, socket or device)")
    if not os.access(path, os.R_OK):
        raise DecodeError(f"{quote(path)}: permission denied")
    if info.st_size == 0:
        raise DecodeError(f"{quote(path)}: file is empty")


def mp3_layout(path: str) -> tuple[int, int] | None:
    """(sample rate, channels) from the first frame header of an MPEG-1/2/2.5 Layer III
    file (after an ID3v2 tag), or None if the file does not start like one."""
    frame = first_mp3_frame(path)
    if frame is None:
        return None
    return MPEG_RATES[frame[1] >> 3 & 3][frame[2] >> 2 & 3], 1 if frame[3] >> 6 == 3 else 2


def mpg123_command(source: str, sample_rate: int) -> tuple[list[str], float] | None:
    """An mpg123 command decoding the MP3 file ``source`` to float32 mono at
    ``sample_rate``, and the gain that matches ffmpeg's levels; None where ffmpeg must do it.

    mpg123 decodes MP3 1.7x faster than ffmpeg, and its 2:1 and 4:1 modes synthesise only
    the sub-bands below the new Nyquist frequency: a 44.1 kHz MP3 becomes 11,025 Hz mono for
    1.1 ms of CPU per audio second instead of ffmpeg's 2.6 ms, with 99-100 % of the
    (hash, offset) pairs equal (``bench/decode_speed.py``, ``test_decoder_paths_agree``).
    """
    if source == "-" or "://" in source or os.environ.get(ENV_DECODER, "").lower() == "ffmpeg":
        return None
    exe = shutil.which("mpg123")
    layout = mp3_layout(source) if exe else None
    if layout is None or layout[0] % sample_rate or layout[0] // sample_rate not in _MPG123_RATIOS:
        return None
    rate, channels = layout
    cmd = [exe, "--quiet", "--mono", "--encoding", "f32", "--stdout", *_MPG123_RATIOS[rate // sample_rate],
           "--", source]
    # mpg123 mixes stereo as (L + R) / 2, ffmpeg as (L + R) / sqrt(2).
    return cmd, math.sqrt(2) if channels == 2 else 1.0


def stream(source: str, sample_rate: int, *, block_seconds: float = QUERY_BLOCK_SECONDS,
           limit: float | None = None, input_args: Sequence[str] = (),
           stdin: IO[bytes] | None = None, report: DecodeReport | None = None) -> Iterator[np.ndarray]:
    """Yield consecutive float32 mono blocks of ``source`` at ``sample_rate`` Hz.

    ``source`` is a file path, a URL ffmpeg can open, or ``"-"`` for ``stdin``;
    ``input_args`` go before ``-i`` (e.g. ``["-f", "s16le", "-ar", "8000", "-ac", "1"]``
    for raw PCM).  Each block holds ``block_seconds`` of audio except the last.
    Memory stays bounded by one block.  Raises DecodeError naming the source.
    ``report`` receives the length the file declares and the errors of a decoder that went
    on (:mod:`dejavu.logic.integrity`); a WAV header that contradicts itself is refused.
    """
    if source != "-" and "://" not in source:
        check_file(source)
        if report is not None:
            report.declared = declared_seconds(source)
    block_samples = max(1, int(block_seconds * sample_rate))
    fast = None if input_args else mpg123_command(source, sample_rate)
    if fast is not None:
        samples = None if limit is None else max(0, math.ceil(limit * sample_rate - 1e-6))  # as ffmpeg's -t
        blocks = _blocks(fast[0], subprocess.DEVNULL, block_samples, samples, "=f4", source, report)
        try:
            first = next(blocks, None)
        except DecodeError:
            first = None
        if first is not None:  # else mpg123 found nothing to decode: ffmpeg explains why
            gain = np.float32(fast[1])
            for block in itertools.chain([first], blocks):
                yield block * gain if gain != 1 else block
            return
    yield from _blocks(ffmpeg_command(source, sample_rate, limit, input_args, "level+info"),
                       stdin if source == "-" else subprocess.DEVNULL, block_samples, None, "<f4", source, report)


def _blocks(cmd: list[str], stdin: IO[bytes] | int | None, block_samples: int, max_samples: int | None,
            dtype: str, source: str, report: DecodeReport | None = None) -> Iterator[np.ndarray]:
    """Run a decoder writing float32 mono to stdout; yield its samples ``block_samples`` at
    a time (at most ``max_samples`` in all).  Raises DecodeError if it fails before any;
    its stderr goes to ``report`` (:class:`~dejavu.logic.integrity.DecoderLog`)."""
    block_bytes = block_samples * _BYTES_PER_SAMPLE
    left = None if max_samples is None else max_samples * _BYTES_PER_SAMPLE
    proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    messages = DecoderLog(proc.stderr, report)
    total = 0
    try:
        pending = b""
        while left is None or left > 0:
            want = block_bytes - len(pending)
            chunk = proc.stdout.read(want if left is None else min(want, left))
            if not chunk:
                break
            pending += chunk
            if left is not None:
                left -= len(chunk)
            if len(pending) >= block_bytes:
                total += len(pending)
                yield finite(np.frombuffer(pending, dtype=dtype).astype(np.float32))
                pending = b""
        usable = len(pending) - len(pending) % _BYTES_PER_SAMPLE
        if usable:
            total += usable
            yield finite(np.frombuffer(pending[:usable], dtype=dtype).astype(np.float32))
        if left is not None and left <= 0:
            return  # the limit is reached: the decoder is stopped below
        code = proc.wait()
        stderr = messages.finish()
        if code != 0 and total == 0:
            raise DecodeError(f"{quote(source)}: cannot decode: {ffmpeg_reason(stderr, source)}")
        if code != 0 and report is None:
            log.warning("%s: decoding stopped early: %s", quote(source), ffmpeg_reason(stderr, source))
        elif code != 0:
            report.note_error(f"stopped early: {ffmpeg_reason(stderr, source)}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        messages.finish()
        proc.stdout.close()
        proc.stderr.close()


def decode(source: str, sample_rate: int, limit: float | None = None) -> np.ndarray:
    """The whole of ``source`` (or its first ``limit`` seconds) as float32 mono, shape (n,).

    Raises DecodeError if the file holds no audio.
    """
    blocks = list(stream(source, sample_rate, block_seconds=DECODE_BLOCK_SECONDS, limit=limit))
    samples = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    if samples.size == 0:
        raise DecodeError(f"{quote(source)}: contains no audio samples")
    return samples


def to_mono_float(data: np.ndarray) -> np.ndarray:
    """Interleaved or (n, channels) integer/float PCM → float32 mono in [-1, 1], shape (n,)."""
    data = np.asarray(data)
    if data.dtype.kind in "iu":
        info = np.iinfo(data.dtype)
        scale = float(max(-int(info.min), int(info.max) + 1)) if data.dtype.kind == "i" else (info.max + 1) / 2
        data = (data.astype(np.float32) - (0 if data.dtype.kind == "i" else scale)) / scale
    data = data.astype(np.float32, copy=False)
    return data.mean(axis=1, dtype=np.float32) if data.ndim == 2 else data

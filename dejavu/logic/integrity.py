"""Is a decoded file whole?  The length its header declares, what the decoder said while it
went on, and the verdict ingest acts on (a warning, or a refusal with ``strict_decoding``).

A truncated or damaged file decodes without failing: ffmpeg and mpg123 deliver what they can
and exit 0, so the first 50 KB of a 219 s MP3 becomes a 2 s song.  Where the file states its
length (an MP3's Xing/Info/VBRI frame count, a WAV's data chunk size, the container duration
ffmpeg prints for FLAC, Ogg, MP4, ...), :meth:`DecodeReport.problem` compares it with what was
decoded; error messages of a decoder that went on count too.  A WAV header whose sample width
contradicts its frame size (3 bits per sample in 4-byte stereo frames) is refused outright: it
decodes to noise of the wrong length.
"""
from __future__ import annotations

import re
import struct
import threading
from dataclasses import dataclass, field
from typing import IO

from dejavu.exceptions import DecodeError
from dejavu.quoting import quote

#: Decoded audio may fall short of the declared length by this many seconds, or this share of
#: it, whichever is more, before the file counts as truncated (encoder padding, rounding).
SHORT_SECONDS = 1.0
SHORT_SHARE = 0.02
#: Error messages of one decode kept for the report (the first ones) and for the reason of a
#: failure (the last ones); the rest are only counted.
KEPT_MESSAGES = 5
#: MPEG audio sample rates by the header's version bits (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5).
MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_WAV_PCM_TAGS = (1, 3, 0xFFFE)   # integer PCM, IEEE float, WAVE_FORMAT_EXTENSIBLE
_FFMPEG_LINE = re.compile(r"^(\[[^]]* @ 0x[0-9a-f]+\] )?\[(\w+)\] (.*)$")
_DURATION = re.compile(r"^\s*Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


@dataclass
class DecodeReport:
    """What one decode of a file found (filled in by :func:`dejavu.logic.decoder.stream`)."""

    declared: float | None = None     # seconds the file says it holds (None: it does not say)
    decoded: float = 0.0              # seconds delivered (before any limit cut them)
    limit: float | None = None        # seconds asked for from the start (None: all)
    errors: int = 0                   # error messages of a decoder that went on
    messages: list[str] = field(default_factory=list)  # the first KEPT_MESSAGES of them

    def note_error(self, message: str) -> None:
        self.errors += 1
        if len(self.messages) < KEPT_MESSAGES:
            self.messages.append(message)

    def problem(self) -> str | None:
        """Why the decoded audio is not the whole file, in a phrase, or None."""
        if self.declared is not None:
            expected = self.declared if self.limit is None else min(self.declared, self.limit)
            if expected - self.decoded > max(SHORT_SECONDS, SHORT_SHARE * expected):
                return (f"decoded {self.decoded:.1f} s of the {self.declared:.1f} s its header declares "
                        "(truncated or damaged)")
        if self.errors:
            return f"the decoder reported {self.errors} error(s), first: {self.messages[0]}"
        return None


def declared_seconds(path: str) -> float | None:
    """Seconds an MP3 (Xing/Info/VBRI frame count) or a WAV (data chunk) declares; None for
    other files and for those that do not say.  Raises DecodeError for a WAV header that
    contradicts itself."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if head[:4] == b"RIFF" and head[8:] == b"WAVE":
                return _wav_seconds(fh, path)
    except OSError:
        return None
    return _mp3_seconds(path)


def _wav_seconds(fh: IO[bytes], path: str) -> float | None:
    """The data chunk's seconds, from the chunks after the RIFF header."""
    layout = None
    while len(chunk := fh.read(8)) == 8:
        name, size = chunk[:4], int.from_bytes(chunk[4:], "little")
        if name == b"fmt ":
            body = fh.read(size + (size & 1))
            if len(body) < 16:
                return None
            tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", body[:16])
            if tag in _WAV_PCM_TAGS and (bits < 8 or channels == 0 or align != channels * ((bits + 7) // 8)):
                raise DecodeError(f"{quote(path)}: the WAV header contradicts itself ({bits} bits per sample, "
                                  f"{channels} channel(s), {align} bytes per frame): damaged or not PCM")
            layout = (rate, align)
        elif name == b"data":
            if layout is None or not layout[0] or not layout[1] or size in (0, 0xFFFFFFFF):
                return None    # (0 and 0xFFFFFFFF: written by a stream that never went back to say)
            return size / layout[1] / layout[0]
        else:
            fh.seek(size + (size & 1), 1)
    return None


def first_mp3_frame(path: str) -> bytes | None:
    """The first bytes (up to 200) of the first frame of an MPEG-1/2/2.5 Layer III file (after
    an ID3v2 tag), or None if the file does not start like one."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(10)
            start = 0
            if len(head) == 10 and head[:3] == b"ID3":  # size: four 7-bit bytes; a footer adds 10
                start = 10 + (head[6] << 21 | head[7] << 14 | head[8] << 7 | head[9]) + (10 if head[5] & 0x10 else 0)
            fh.seek(start)
            frame = fh.read(200)
    except OSError:
        return None
    if len(frame) < 4 or frame[0] != 0xFF or frame[1] & 0xE0 != 0xE0:
        return None
    version, layer, bitrate, rate = frame[1] >> 3 & 3, frame[1] >> 1 & 3, frame[2] >> 4, frame[2] >> 2 & 3
    return None if version == 1 or layer != 1 or bitrate in (0, 15) or rate == 3 else frame


def _mp3_seconds(path: str) -> float | None:
    """Frames × samples per frame / rate, from the first frame's Xing, Info or VBRI header."""
    frame = first_mp3_frame(path)
    if frame is None:
        return None
    version, mono = frame[1] >> 3 & 3, frame[3] >> 6 == 3
    rate = MPEG_RATES[version][frame[2] >> 2 & 3]
    side = (17 if mono else 32) if version == 3 else (9 if mono else 17)   # side information bytes
    xing = frame[4 + side:16 + side]
    frames = None
    if xing[:4] in (b"Xing", b"Info") and len(xing) == 12 and xing[7] & 1:
        frames = int.from_bytes(xing[8:12], "big")
    elif frame[36:40] == b"VBRI" and len(frame) >= 54:
        frames = int.from_bytes(frame[50:54], "big")
    return frames * (1152 if version == 3 else 576) / rate if frames else None


class DecoderLog:
    """Reads a decoder's standard error on a thread while the audio is read from its output
    (a decoder that writes much to a full pipe would stall), keeping what matters: ffmpeg's
    ``Duration:`` of the input (run with ``-loglevel level+info``) unless it was only
    estimated from the bit rate, and the error messages of ffmpeg or mpg123."""

    def __init__(self, stderr: IO[bytes], report: DecodeReport | None) -> None:
        self.report = report or DecodeReport()
        self._last: list[str] = []
        self._duration: float | None = None
        self._estimated = False
        self._thread = threading.Thread(target=self._read, args=(stderr,), daemon=True)
        self._thread.start()

    def _read(self, stderr: IO[bytes]) -> None:
        for raw in stderr:
            line = raw.decode("utf-8", "replace").strip()
            match = _FFMPEG_LINE.match(line)
            if match is None:   # mpg123 (or an ffmpeg run without level tags)
                if re.search(r"\berror\b", line, re.IGNORECASE):
                    self._error(line)
                continue
            context, level, text = match.groups()
            if level in ("error", "fatal", "panic"):
                self._error((context or "") + text)
            elif level == "warning" and "Estimating duration from bitrate" in text:
                self._estimated = True
            elif level == "info" and self._duration is None and (found := _DURATION.match(text)):
                hours, minutes, seconds = found.groups()
                self._duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)

    def _error(self, line: str) -> None:
        self.report.note_error(line)
        self._last = (self._last + [line])[-KEPT_MESSAGES:]

    def finish(self) -> bytes:
        """Wait for the decoder's stderr to end; the last error messages, one per line (what
        ``-loglevel error`` would have shown, for the reason of a failure)."""
        self._thread.join()
        if self.report.declared is None and not self._estimated:
            self.report.declared = self._duration
        return "\n".join(self._last).encode()

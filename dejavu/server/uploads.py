"""Uploads: a request body (raw ``audio/*`` or multipart) → a private temp file → samples.

Network input never becomes a URL or a path for the decoder: the body is written, while it
is received and counted against the size limit, to a file of our own (``mkstemp``, mode
0600), and ffmpeg opens only that file, with the ``file`` protocol alone and only audio
container demuxers (a playlist or ``ffconcat`` script sent as "audio" would otherwise make
ffmpeg open other URLs or files).  Decoding is bounded in audio length (``-t``) and in time
(the decoder is killed after a timeout).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from dejavu.logic import decoder
from dejavu.logic.resample import finite

log = logging.getLogger(__name__)

#: ffmpeg demuxers an upload may use: audio containers only (no playlists, no concat scripts).
AUDIO_DEMUXERS = ("wav,w64,mp3,ogg,flac,matroska,mov,aac,aiff,caf,au,ac3,eac3,amr,asf,wv,ape,tta,mpc,mpc8")
#: ffmpeg input options for uploads: local files only, audio demuxers only.
SAFE_INPUT_ARGS = ("-protocol_whitelist", "file", "-format_whitelist", AUDIO_DEMUXERS)
#: Samples per MPEG-1 Layer III frame: mpg123 is told to stop after max_seconds' worth of frames
#: (an MPEG-2 file, of 576-sample frames, decodes up to twice that, then cut).
MP3_FRAME_SAMPLES = 1152
#: Multipart text fields kept (their values are capped at TEXT_FIELD_BYTES).
TEXT_FIELDS = ("name",)
TEXT_FIELD_BYTES = 4096
#: The multipart field holding the audio.
FILE_FIELD = "file"
#: Content types accepted as a raw audio body (besides audio/* and video/*).
RAW_TYPES = ("application/octet-stream",)


class UploadError(Exception):
    """A request the service refuses: HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Upload:
    """An uploaded file on disk (removed by :meth:`remove`)."""

    path: str
    size: int = 0                                           # bytes
    sha1: str = ""                                          # uppercase hex of the bytes
    filename: str | None = None                             # the client's file name, if any
    fields: dict[str, str] = field(default_factory=dict)    # multipart text fields

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


class _Sink:
    """Writes the audio to the temp file, counting the body and hashing the audio."""

    def __init__(self, fh: IO[bytes], limit: int) -> None:
        self.fh, self.limit = fh, limit
        self.received = 0
        self.written = 0
        self.sha1 = hashlib.sha1()

    def count(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            raise UploadError(413, f"request body is larger than the limit of {self.limit} bytes")

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.sha1.update(data)
        self.written += len(data)


class _Multipart:
    """Callbacks of python-multipart's streaming parser: the ``file`` part goes to the sink,
    the text fields are kept (capped), other parts are dropped."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.file_parts = 0
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._target: str | None = None
        self._text = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._target = {}, None
        self._text.clear()

    def _header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == FILE_FIELD:
            self.file_parts += 1
            if self.file_parts > 1:
                raise UploadError(400, f"more than one '{FILE_FIELD}' field")
            raw_filename = options.get(b"filename")
            self.filename = raw_filename.decode("utf-8", "replace") if raw_filename else None
        self._target = name if name == FILE_FIELD or name in TEXT_FIELDS else None

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._target == FILE_FIELD:
            self.sink.write(data[start:end])
        elif self._target is not None and len(self._text) < TEXT_FIELD_BYTES:
            self._text.extend(data[start:min(end, start + TEXT_FIELD_BYTES - len(self._text))])

    def _part_end(self) -> None:
        if self._target in TEXT_FIELDS:
            self.fields[self._target] = self._text.decode("utf-8", "replace")


async def receive_upload(request: Request, limit: int) -> Upload:
    """Receive the audio of ``request`` into a private temp file.

    The body is a multipart form with the audio in field ``file`` (and text fields such as
    ``name``) or raw audio (``audio/*``, ``video/*``, ``application/octet-stream``).
    Raises UploadError: 413 as soon as more than ``limit`` bytes are announced or received,
    415 for another content type, 400 for a missing or empty file or a malformed form.
    """
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise UploadError(413, f"request body of {length} bytes is larger than the limit of {limit} bytes")
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    kind = content_type.decode("latin-1").lower()
    multipart = kind == "multipart/form-data"
    if not (multipart or kind.startswith(("audio/", "video/")) or kind in RAW_TYPES):
        raise UploadError(415, f"send the audio as multipart field '{FILE_FIELD}' or as an audio/* body, "
                               f"not {kind or 'no content type'}")
    if multipart and not options.get(b"boundary"):
        raise UploadError(400, "multipart body without a boundary")
    fd, path = tempfile.mkstemp(prefix="dejavu-upload-")   # mode 0600; a name of ours, never the client's
    upload = Upload(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            sink = _Sink(fh, limit)
            form = _Multipart(sink) if multipart else None
            parser = MultipartParser(options[b"boundary"], form.callbacks()) if form else None
            async for chunk in request.stream():
                sink.count(chunk)
                if parser is not None:
                    parser.write(chunk)
                else:
                    sink.write(chunk)
            if parser is not None:
                parser.finalize()
    except UploadError:
        upload.remove()
        raise
    except Exception as exc:  # python-multipart's parse errors, a client that went away
        upload.remove()
        log.debug("upload failed", exc_info=True)
        raise UploadError(400, f"malformed request body: {exc}") from None
    upload.size, upload.sha1 = sink.written, sink.sha1.hexdigest().upper()
    if form is not None:
        upload.fields, upload.filename = form.fields, form.filename
        if not form.file_parts:
            upload.remove()
            raise UploadError(400, f"missing multipart field '{FILE_FIELD}'")
    if upload.size == 0:
        upload.remove()
        raise UploadError(400, "the uploaded file is empty")
    return upload


def decode_upload(path: str, sample_rate: int, max_seconds: float, timeout: float) -> np.ndarray:
    """The first ``max_seconds`` of the uploaded file ``path`` as float32 mono at
    ``sample_rate`` Hz, shape (n,).  Raises UploadError 422 if it holds no decodable audio
    or decoding takes longer than ``timeout`` seconds (the decoder is killed).

    An MP3 file is decoded by mpg123 where the CLI would use it (it reads MPEG audio frames
    only, and starts in milliseconds where ffmpeg takes ~0.1 s); ffmpeg decodes the rest.
    """
    deadline = time.monotonic() + timeout
    fast = decoder.mpg123_command(path, sample_rate)
    if fast is not None:
        cmd, gain = fast
        frames = math.ceil(max_seconds * decoder.mp3_layout(path)[0] / MP3_FRAME_SAMPLES) + 1
        samples, _, _ = _run([*cmd[:-2], "--frames", str(frames), *cmd[-2:]], deadline, timeout)
        if samples.size:
            return finite(samples[:int(max_seconds * sample_rate)] * np.float32(gain))
    cmd = decoder.ffmpeg_command("file:" + path, sample_rate, max_seconds, input_args=SAFE_INPUT_ARGS)
    samples, code, stderr = _run(cmd, deadline, timeout)
    if code != 0 and samples.size == 0:
        reason = decoder.ffmpeg_reason(stderr, "file:" + path).replace(path, "upload")  # not our temp name
        raise UploadError(422, f"undecodable audio ({reason})")
    if samples.size == 0:
        raise UploadError(422, "undecodable audio (no audio samples)")
    return finite(samples)


def _run(cmd: list[str], deadline: float, timeout: float) -> tuple[np.ndarray, int, bytes]:
    """(float32 samples on stdout, exit status, stderr) of a decoder killed at ``deadline``
    (``time.monotonic()``), ``timeout`` seconds after decoding began."""
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=max(deadline - time.monotonic(), 0.001))
    except subprocess.TimeoutExpired:
        raise UploadError(422, f"undecodable audio: decoding took longer than {timeout:g} s") from None
    samples = np.frombuffer(proc.stdout[:len(proc.stdout) // 4 * 4], dtype="<f4").astype(np.float32)
    return samples, proc.returncode, proc.stderr

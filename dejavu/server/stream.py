"""A live recognition session: PCM frames of a WebSocket → timeline events.

The protocol (``WS /v1/stream``; also in the README):

1. the client sends one text message ``{"sample_rate": 48000, "format": "f32le"}``
   (``format``: ``f32le`` float32 or ``s16le`` int16, little-endian, mono);
2. then binary messages of PCM samples, any length up to ``server.max_frame_bytes``;
3. optionally the text ``{"event": "end"}``: the server reports the segments still open
   and answers ``{"event": "end"}``.

The server answers text messages (JSON), times in seconds of the stream:

* ``{"event": "ready", ...}`` after the first message;
* every :data:`LIVE_EVERY_SECONDS`, for the last ``monitor.window_seconds`` heard,
  ``{"event": "match", "time", "song_id", "song_name", "position_seconds", "confidence",
  "hashes_matched"}`` (``position_seconds``: where in the song the stream is now;
  ``confidence``: the result's ``input_confidence``) or ``{"event": "no_match", "time"}``;
* ``{"event": "segment", ...}`` with the monitor's segment fields (``start_seconds``,
  ``end_seconds``, ``song_id``, ``song_name``, ``offset_seconds``, ``confidence``,
  ``hashes_matched``) as each song heard ends;
* ``{"event": "error", "message"}`` before the server closes a session it refuses.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from dejavu.config import Config
from dejavu.logic.monitor import Monitor
from dejavu.logic.resample import StreamResampler, finite
from dejavu.logic.results import HASHES_MATCHED, INPUT_CONFIDENCE, OFFSET_SECS, RESULTS, SONG_ID, SONG_NAME
from dejavu.logic.search import recognize_samples
from dejavu.logic.store import Store

#: Sample formats of the PCM frames: numpy dtype and full-scale value.
FORMATS = {"f32le": ("<f4", 1.0), "s16le": ("<i2", 32768.0)}
#: Sample rates a client may announce (Hz).
MIN_RATE, MAX_RATE = 8000, 192000
#: Seconds of stream between two live answers (match / no_match).
LIVE_EVERY_SECONDS = 2.5


class ProtocolError(Exception):
    """The client broke the protocol (the message says how)."""


def parse_start(message: Any) -> tuple[int, str]:
    """(sample rate, format) of the first message's decoded JSON; ProtocolError if malformed."""
    if not isinstance(message, dict):
        raise ProtocolError('the first message must be JSON like {"sample_rate": 48000, "format": "f32le"}')
    rate, fmt = message.get("sample_rate"), message.get("format", "f32le")
    if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
        raise ProtocolError(f"sample_rate must be an integer in {MIN_RATE}..{MAX_RATE} Hz, got {rate!r}")
    if fmt not in FORMATS:
        raise ProtocolError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return rate, fmt


class StreamSession:
    """Feeds one client's PCM to a :class:`~dejavu.logic.monitor.Monitor` and, every
    :data:`LIVE_EVERY_SECONDS`, recognizes the latest window for a live answer.

    Not thread-safe: call it from the one thread that uses ``store``.
    """

    def __init__(self, store: Store, config: Config, sample_rate: int, fmt: str, max_seconds: float) -> None:
        self.store = store
        # Live windows are answered as recorded: speed search would multiply their cost.
        self.config = replace(config, matching=replace(config.matching, speed_search=False))
        self.monitor = Monitor(store, config)
        self.rate = config.fingerprint.sample_rate
        self.dtype, self.scale = FORMATS[fmt]
        self.width = np.dtype(self.dtype).itemsize
        self.resampler = StreamResampler(sample_rate, self.rate)
        self.window = int(config.monitor.window_seconds * self.rate)     # samples at self.rate
        self.every = int(LIVE_EVERY_SECONDS * self.rate)
        self.max_samples = int(max_seconds * self.rate)
        self._recent = np.zeros(0, dtype=np.float32)                     # the last window heard
        self._total = 0                                                  # samples at self.rate
        self._next_live = self.every

    @property
    def seconds(self) -> float:
        """Seconds of stream received (after resampling)."""
        return self._total / self.rate

    def feed(self, frame: bytes) -> list[dict[str, Any]]:
        """Add one binary frame of PCM; return the events it produced."""
        if len(frame) % self.width:
            raise ProtocolError(f"a frame of {len(frame)} bytes is not a whole number of {self.width}-byte samples")
        pcm = np.frombuffer(frame, dtype=self.dtype).astype(np.float32)
        x = self.resampler.feed(finite(pcm / self.scale if self.scale != 1.0 else pcm))
        return self._add(x)

    def finish(self) -> list[dict[str, Any]]:
        """End of stream: the events of the rest of the audio and of the songs still heard."""
        events = self._add(self.resampler.flush())
        return events + [self._segment(s) for s in self.monitor.flush()]

    def _add(self, x: np.ndarray) -> list[dict[str, Any]]:
        self._total += x.size
        if self._total > self.max_samples:
            raise ProtocolError(f"the stream is longer than the limit of {self.max_samples / self.rate:g} s")
        self._recent = np.concatenate([self._recent, x])[-self.window:]
        events = [self._segment(s) for s in self.monitor.feed(x)]
        if self._total >= self._next_live:
            self._next_live = self._total + self.every
            events.append(self._live())
        return events

    def _live(self) -> dict[str, Any]:
        """The answer for the last window heard."""
        now = round(self.seconds, 2)
        results = recognize_samples(self.store, self.config, self._recent, self.rate)[RESULTS]
        if not results:
            return {"event": "no_match", "time": now}
        best = results[0]
        heard = self._recent.size / self.rate
        return {"event": "match", "time": now, "song_id": best[SONG_ID], "song_name": best[SONG_NAME],
                "position_seconds": round(best[OFFSET_SECS] + heard, 2), "confidence": best[INPUT_CONFIDENCE], "hashes_matched": best[HASHES_MATCHED]}

    @staticmethod
    def _segment(segment: Any) -> dict[str, Any]:
        return {"event": "segment", **segment.to_dict()}

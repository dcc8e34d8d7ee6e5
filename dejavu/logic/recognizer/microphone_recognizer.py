"""Recognize audio recorded from an input device (PyAudio → PortAudio).

    from dejavu.logic.recognizer.microphone_recognizer import MicrophoneRecognizer

    djv.recognize(MicrophoneRecognizer, seconds=10)                   # record 10 s, then match
    djv.recognize(MicrophoneRecognizer, seconds=10, until_match=True)  # stop at the first match

The recording is made by a :class:`~dejavu.logic.microphone.Microphone` set up from the
configuration's ``microphone`` section; the result dict is that of file recognition.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator

import numpy as np

from dejavu.exceptions import AudioDeviceError, NoRecordingError
from dejavu.logic.decoder import to_mono_float
from dejavu.logic.microphone import PA_INT16, Microphone, list_input_devices
from dejavu.logic.recognizer.base import BaseRecognizer, Wiring
from dejavu.logic.results import RESULTS
from dejavu.logic.search import recognize_samples

__all__ = ["MicrophoneRecognizer", "NoRecordingError", "AudioDeviceError", "list_input_devices",
           "LISTEN_TIME"]

log = logging.getLogger(__name__)

#: Extra result key of ``recognize(..., until_match=True)``: seconds listened before returning.
LISTEN_TIME = "listen_time"

_CHECK_EVERY = 1.0  # seconds of new audio between recognition attempts with until_match


def _on_microphone(name: str, doc: str) -> property:
    """A recognizer attribute that is the attribute ``name`` of its :class:`Microphone`."""
    return property(lambda self: getattr(self.microphone, name),
                    lambda self, value: setattr(self.microphone, name, value), doc=doc)


class MicrophoneRecognizer(BaseRecognizer):
    """Record from an input device and recognize the recording.

    The class attributes are the defaults of the configuration's ``microphone`` section;
    the instance takes its values from the configuration.
    """

    default_chunksize = 2048          # frames per read
    default_format = PA_INT16         # 16-bit signed samples
    default_channels = 1
    default_samplerate = 44100        # Hz

    device = _on_microphone("device", "Input device: None = default, an index or a name substring.")
    channels = _on_microphone("channels", "Channels recorded (1 or 2).")
    samplerate = _on_microphone("sample_rate", "Sample rate recorded, Hz.")
    chunksize = _on_microphone("chunk_size", "Frames per read.")
    device_info = _on_microphone("device_info", "The device opened last (a dict as list_input_devices gives).")
    audio = _on_microphone("audio", "pyaudio.PyAudio, created on first use.")
    stream = _on_microphone("stream", "The open input stream, if any.")

    def __init__(self, dejavu: Wiring) -> None:
        super().__init__(dejavu)
        self.microphone = Microphone(self.config.microphone)
        self.recorded = False
        self._chunks: list[np.ndarray] = []   # int16, shape (frames, channels)
        self._frames = 0

    # ----------------------------------------------------------------- recording
    def start_recording(self, channels: int | None = None, samplerate: int | None = None,
                        chunksize: int | None = None) -> None:
        """Open the configured input device (None = keep the configured value) and
        forget any previous recording.

        If the device refuses 2 channels it is opened in mono; if it refuses the rate,
        at its default rate (``self.channels`` / ``self.samplerate`` tell what is used).
        """
        self.microphone.open(channels, samplerate, chunksize)
        self._chunks = []
        self._frames = 0
        self.recorded = False

    def process_recording(self, frames: int | None = None) -> int:
        """Record one chunk (``frames`` frames, default ``chunksize``); return frames read."""
        chunk = self.microphone.read(frames)
        self._chunks.append(chunk)
        self._frames += chunk.shape[0]
        return chunk.shape[0]

    def stop_recording(self) -> None:
        """Close the input stream; the recording can now be recognized."""
        self.microphone.stop()
        self.recorded = True

    def close(self) -> None:
        """Close the stream and release PortAudio."""
        self.microphone.close()

    def __enter__(self) -> "MicrophoneRecognizer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @property
    def data(self) -> list[np.ndarray]:
        """The recording, one int16 array per channel (the original kept one list per channel)."""
        joined = self._joined(self._frames)
        return [joined[:, c] for c in range(joined.shape[1])]

    def _joined(self, frames: int) -> np.ndarray:
        chunks = self._chunks[:]  # snapshot: a recording thread may be appending
        if not chunks:
            return np.zeros((0, self.channels), dtype=np.int16)
        return np.concatenate(chunks)[:frames]

    def get_recorded_time(self) -> float:
        """Seconds recorded so far."""
        return self._frames / float(self.samplerate)

    def listen(self) -> Iterator[np.ndarray]:
        """Record until the caller stops iterating; yield int16 chunks, shape (frames, channels),
        without keeping them (for continuous monitoring)."""
        self.start_recording()
        try:
            while True:
                yield self.microphone.read()
        finally:
            self.stop_recording()

    # ----------------------------------------------------------------- recognition
    def recognize_recording(self) -> dict[str, Any]:
        """Recognize what was recorded: the same result dict as file recognition."""
        if not self.recorded:
            raise NoRecordingError("nothing recorded yet: call start_recording(), "
                                   "process_recording() and stop_recording() first")
        return self._recognize_frames(self._frames)

    def _recognize_frames(self, frames: int) -> dict[str, Any]:
        mono = to_mono_float(self._joined(frames))
        return recognize_samples(self.store, self.config, mono, self.samplerate)

    def recognize(self, seconds: float = 10, until_match: bool = False) -> dict[str, Any]:
        """Record ``seconds`` of audio and recognize it.

        With ``until_match`` recognition re-runs on the recording every ~1 s and returns
        at the first match (or after ``seconds``); the result then also holds
        ``listen_time``, the seconds listened.
        """
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        if until_match:
            return self._recognize_until_match(seconds)
        self.start_recording()
        try:
            target = round(seconds * self.samplerate)
            while self._frames < target:
                self.process_recording(min(self.chunksize, target - self._frames))
        finally:
            self.stop_recording()
        return self.recognize_recording()

    def _recognize_until_match(self, seconds: float) -> dict[str, Any]:
        self.start_recording()
        target = round(seconds * self.samplerate)
        stop = threading.Event()
        failure: list[BaseException] = []

        def record() -> None:
            try:
                while not stop.is_set() and self._frames < target:
                    self.process_recording(min(self.chunksize, target - self._frames))
            except BaseException as exc:  # handed to the caller below
                failure.append(exc)

        recorder = threading.Thread(target=record, name="dejavu-mic", daemon=True)
        recorder.start()
        # Pay the pipeline's one-off costs (lazy imports, caches) while the first second records.
        silence = np.zeros(self.samplerate // 2, dtype=np.float32)
        recognize_samples(self.store, self.config, silence, self.samplerate)
        step = round(_CHECK_EVERY * self.samplerate)
        checked = 0
        result: dict[str, Any] | None = None
        try:
            while True:
                finished = not recorder.is_alive()
                frames = self._frames
                if frames - checked >= step or (finished and frames > checked):
                    checked = frames
                    result = self._recognize_frames(frames)
                    if result[RESULTS]:
                        log.info("match after %.1f s", frames / self.samplerate)
                        break
                elif finished:
                    break
                else:
                    time.sleep(0.02)
        finally:
            stop.set()
            recorder.join()
            self.stop_recording()
        if failure:
            raise failure[0]
        if result is None:
            result = self._recognize_frames(self._frames)
        result[LISTEN_TIME] = round(self.get_recorded_time(), 3)
        return result

"""Recognize audio recorded from an input device (PyAudio → PortAudio).

    from dejavu.logic.recognizer.microphone_recognizer import MicrophoneRecognizer

    djv.recognize(MicrophoneRecognizer, seconds=10)                   # record 10 s, then match
    djv.recognize(MicrophoneRecognizer, seconds=10, until_match=True)  # stop at the first match

The device, rate, channels and chunk size come from the configuration's ``microphone``
section.  PyAudio is imported only when a device is opened; when it (or PortAudio, or
any input device) is missing, :class:`~dejavu.exceptions.AudioDeviceError` says so in
one line.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from dejavu.exceptions import AudioDeviceError, NoRecordingError
from dejavu.logic.decoder import to_mono_float
from dejavu.logic.recognizer.base import RESULTS, BaseRecognizer, recognize_samples

if TYPE_CHECKING:
    from dejavu import Dejavu

__all__ = ["MicrophoneRecognizer", "NoRecordingError", "AudioDeviceError", "list_input_devices",
           "LISTEN_TIME"]

log = logging.getLogger(__name__)

#: Extra result key of ``recognize(..., until_match=True)``: seconds listened before returning.
LISTEN_TIME = "listen_time"

_PA_INT16 = 8  # pyaudio.paInt16 (PortAudio's sample-format flag), without importing PyAudio
_CHECK_EVERY = 1.0  # seconds of new audio between recognition attempts with until_match


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence what C libraries write to fd 2 (ALSA/JACK probing noise) unless debugging."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _open_pyaudio() -> Any:
    """A new ``pyaudio.PyAudio()``; AudioDeviceError if PyAudio or PortAudio is missing."""
    try:
        import pyaudio
    except ImportError as exc:
        raise AudioDeviceError(
            f"microphone support needs PyAudio and PortAudio ({exc}); install them with "
            "'apt-get install portaudio19-dev' and 'pip install pyaudio'") from None
    try:
        with _quiet_native_stderr():
            return pyaudio.PyAudio()
    except Exception as exc:  # PortAudio initialisation failure
        raise AudioDeviceError(f"cannot initialise PortAudio: {exc}") from None


def _input_devices(pa: Any) -> list[dict[str, Any]]:
    with _quiet_native_stderr():
        infos = [pa.get_device_info_by_index(i) for i in range(pa.get_device_count())]
        try:
            default = int(pa.get_default_input_device_info()["index"])
        except (OSError, ValueError):
            default = -1
    return [{"index": int(d["index"]), "name": str(d["name"]),
             "channels": int(d["maxInputChannels"]),
             "default_sample_rate": int(d["defaultSampleRate"]),
             "default": int(d["index"]) == default}
            for d in infos if int(d["maxInputChannels"]) > 0]


def list_input_devices() -> list[dict[str, Any]]:
    """Input devices as dicts: index, name, channels (max input), default_sample_rate (Hz), default."""
    pa = _open_pyaudio()
    try:
        return _input_devices(pa)
    finally:
        pa.terminate()


def _select_device(pa: Any, device: int | str | None) -> dict[str, Any]:
    """The input device the ``microphone.device`` setting names (None = system default)."""
    devices = _input_devices(pa)
    if not devices:
        raise AudioDeviceError("no audio input device found (is a microphone connected and "
                               "PortAudio able to see it? try 'dejavu --list-devices')")
    if device is None:
        chosen = [d for d in devices if d["default"]] or devices[:1]
    elif isinstance(device, int):
        chosen = [d for d in devices if d["index"] == device]
        if not chosen:
            raise AudioDeviceError(f"microphone.device {device} is not an input device "
                                   f"(inputs: {', '.join(str(d['index']) for d in devices)})")
    else:
        chosen = [d for d in devices if device.lower() in d["name"].lower()]
        if not chosen:
            names = ", ".join(repr(d["name"]) for d in devices)
            raise AudioDeviceError(f"no input device name contains {device!r} (inputs: {names})")
    return chosen[0]


class MicrophoneRecognizer(BaseRecognizer):
    """Record from an input device and recognize the recording.

    The class attributes are the defaults of the configuration's ``microphone`` section;
    the instance takes its values from the configuration.
    """

    default_chunksize = 2048          # frames per read
    default_format = _PA_INT16        # 16-bit signed samples
    default_channels = 1
    default_samplerate = 44100        # Hz

    def __init__(self, dejavu: "Dejavu") -> None:
        super().__init__(dejavu)
        mc = dejavu.cfg.microphone
        self.device: int | str | None = mc.device
        self.channels: int = mc.channels
        self.samplerate: int = mc.sample_rate
        self.chunksize: int = mc.chunk_size
        self.audio: Any = None        # pyaudio.PyAudio, created on first use
        self.stream: Any = None
        self.device_info: dict[str, Any] | None = None
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
        self._close_stream()
        self.chunksize = int(chunksize or self.chunksize)
        want_channels = int(channels or self.channels)
        want_rate = int(samplerate or self.samplerate)
        if self.audio is None:
            self.audio = _open_pyaudio()
        info = _select_device(self.audio, self.device)
        self.device_info = info
        attempts = []
        for ch in dict.fromkeys([min(want_channels, max(info["channels"], 1)), 1]):
            for rate in dict.fromkeys([want_rate, info["default_sample_rate"]]):
                attempts.append((ch, rate))
        errors = []
        for ch, rate in attempts:
            try:
                with _quiet_native_stderr():
                    self.stream = self.audio.open(format=self.default_format, channels=ch, rate=rate,
                                                  input=True, input_device_index=info["index"],
                                                  frames_per_buffer=self.chunksize)
            except (OSError, ValueError) as exc:
                errors.append(f"{ch} ch at {rate} Hz: {exc}")
                continue
            if (ch, rate) != (want_channels, want_rate):
                log.info("input device %r: recording %d channel(s) at %d Hz", info["name"], ch, rate)
            self.channels, self.samplerate = ch, rate
            break
        else:
            raise AudioDeviceError(f"cannot open input device {info['index']} ({info['name']}): "
                                   + "; ".join(errors))
        self._chunks = []
        self._frames = 0
        self.recorded = False
        log.info("* start recording")

    def _read(self, frames: int) -> np.ndarray:
        """Read ``frames`` frames from the open stream: int16, shape (frames, channels)."""
        if self.stream is None:
            raise NoRecordingError("start_recording() must be called before reading")
        try:
            raw = self.stream.read(frames, exception_on_overflow=False)
        except (OSError, ValueError) as exc:
            raise AudioDeviceError(f"reading from the input device failed: {exc}") from None
        return np.frombuffer(raw, dtype="<i2").reshape(-1, self.channels)

    def process_recording(self, frames: int | None = None) -> int:
        """Record one chunk (``frames`` frames, default ``chunksize``); return frames read."""
        chunk = self._read(int(frames or self.chunksize))
        self._chunks.append(chunk)
        self._frames += chunk.shape[0]
        return chunk.shape[0]

    def stop_recording(self) -> None:
        """Close the input stream; the recording can now be recognized."""
        log.info("* done recording")
        self._close_stream()
        self.recorded = True

    def _close_stream(self) -> None:
        if self.stream is not None:
            try:
                self.stream.stop_stream()
                self.stream.close()
            except (OSError, ValueError):
                pass
            self.stream = None

    def close(self) -> None:
        """Close the stream and release PortAudio."""
        self._close_stream()
        if self.audio is not None:
            self.audio.terminate()
            self.audio = None

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
                yield self._read(self.chunksize)
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
        return recognize_samples(self.dejavu, mono, self.samplerate)

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
        recognize_samples(self.dejavu, np.zeros(self.samplerate // 2, dtype=np.float32), self.samplerate)
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

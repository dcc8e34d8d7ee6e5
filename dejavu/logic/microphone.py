"""Microphone: an audio input device opened through PyAudio (PortAudio).

    mic = Microphone(config.microphone)
    for block in mic.blocks(11025):     # float32 mono at 11025 Hz until the caller stops
        ...

The device, rate, channels and chunk size come from the configuration's ``microphone``
section.  PyAudio is imported only when a device is opened; when it (or PortAudio, or
any input device) is missing, :class:`~dejavu.exceptions.AudioDeviceError` says so in
one line.
"""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np

from dejavu.config import MicrophoneConfig
from dejavu.exceptions import AudioDeviceError, NoRecordingError
from dejavu.logic.decoder import to_mono_float
from dejavu.logic.resample import StreamResampler

log = logging.getLogger(__name__)

#: pyaudio.paInt16 (PortAudio's sample-format flag for 16-bit signed samples), without importing PyAudio.
PA_INT16 = 8


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


class Microphone:
    """An input device recording 16-bit samples.

    ``device``, ``channels``, ``sample_rate`` (Hz) and ``chunk_size`` (frames per read)
    start as the configuration says; :meth:`open` sets ``channels`` and ``sample_rate``
    to what the device accepted and ``device_info`` to the device it opened.
    """

    def __init__(self, config: MicrophoneConfig) -> None:
        self.device: int | str | None = config.device
        self.channels: int = config.channels
        self.sample_rate: int = config.sample_rate
        self.chunk_size: int = config.chunk_size
        self.device_info: dict[str, Any] | None = None
        self.audio: Any = None        # pyaudio.PyAudio, created on first use
        self.stream: Any = None       # the open input stream, if any

    def open(self, channels: int | None = None, sample_rate: int | None = None,
             chunk_size: int | None = None) -> None:
        """Open the input stream (closing one already open); None = keep the current value.

        If the device refuses 2 channels it is opened in mono; if it refuses the rate,
        at its default rate (``channels`` / ``sample_rate`` then tell what is used).
        """
        self._close_stream()
        self.chunk_size = int(chunk_size or self.chunk_size)
        want_channels = int(channels or self.channels)
        want_rate = int(sample_rate or self.sample_rate)
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
                    self.stream = self.audio.open(format=PA_INT16, channels=ch, rate=rate,
                                                  input=True, input_device_index=info["index"],
                                                  frames_per_buffer=self.chunk_size)
            except (OSError, ValueError) as exc:
                errors.append(f"{ch} ch at {rate} Hz: {exc}")
                continue
            if (ch, rate) != (want_channels, want_rate):
                log.info("input device %r: recording %d channel(s) at %d Hz", info["name"], ch, rate)
            self.channels, self.sample_rate = ch, rate
            break
        else:
            raise AudioDeviceError(f"cannot open input device {info['index']} ({info['name']}): "
                                   + "; ".join(errors))
        log.info("* start recording")

    def read(self, frames: int | None = None) -> np.ndarray:
        """Read ``frames`` frames (default ``chunk_size``) from the open stream: int16,
        shape (frames, channels)."""
        if self.stream is None:
            raise NoRecordingError("the microphone is not open: call start_recording() (or open()) first")
        try:
            raw = self.stream.read(int(frames or self.chunk_size), exception_on_overflow=False)
        except (OSError, ValueError) as exc:
            raise AudioDeviceError(f"reading from the input device failed: {exc}") from None
        return np.frombuffer(raw, dtype="<i2").reshape(-1, self.channels)

    def stop(self) -> None:
        """End the recording: close the input stream (PortAudio stays ready for :meth:`open`)."""
        log.info("* done recording")
        self._close_stream()

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

    def blocks(self, rate: int) -> Iterator[np.ndarray]:
        """Record until the caller stops iterating, then close; yield float32 mono blocks
        at ``rate`` Hz."""
        try:
            self.open()
            try:
                resampler = StreamResampler(self.sample_rate, rate)
                pending: list[np.ndarray] = []
                while True:
                    pending.append(resampler.feed(to_mono_float(self.read())))
                    if sum(p.size for p in pending) >= rate // 2:   # hand over ~0.5 s at a time
                        yield np.concatenate(pending)
                        pending = []
            finally:
                self.stop()
        finally:
            self.close()

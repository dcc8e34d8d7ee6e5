"""Deterministic audio degradations for measuring recognition robustness.

Every function takes a mono floating-point signal ``samples`` of shape ``(n,)``
with values nominally in [-1, 1] and its sample rate ``sr`` in Hz, and returns
a new float32 array; the input is never modified.  Randomness comes only from
the ``rng`` argument, so the same input with the same seed always gives the
same output.

``CONDITIONS`` maps condition names to callables
``(samples, sr, rng) -> (samples, sr)``; ``parse_condition`` also understands
parameterised names such as ``"pink:5"`` or ``"speed:1.02"``.  The ``"babble"``
condition needs a second piece of music, so it is not in ``CONDITIONS``: get it
from ``parse_condition("babble", other=music)``.
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
from fractions import Fraction
from typing import Callable

import numpy as np
from scipy import signal

Condition = Callable[[np.ndarray, int, np.random.Generator], tuple[np.ndarray, int]]

PINK_LOW_HZ = 20.0
"""Pink noise has no energy below this frequency (sub-audio rumble would
otherwise take a large share of the noise power)."""

BABBLE_SNR_DB = 5.0
"""SNR of the plain ``"babble"`` condition."""

MIN_SPEED, MAX_SPEED = 0.1, 10.0
"""Range of playback speed factors accepted by :func:`speed`."""

MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
"""Sample rates (Hz) that MP3 can store; others are resampled around the codec."""


# -- validation ---------------------------------------------------------------


def _signal(samples: np.ndarray, name: str = "samples") -> np.ndarray:
    """Check a mono float signal and return it as a float64 copy."""
    if not isinstance(samples, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(samples).__name__}")
    if samples.ndim != 1:
        raise ValueError(f"{name} must be mono with shape (n,), got shape {samples.shape}")
    if not np.issubdtype(samples.dtype, np.floating):
        raise TypeError(f"{name} must have a floating dtype, got {samples.dtype}")
    if samples.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(samples)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return samples.astype(np.float64)


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _finite(value: float, name: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _generator(rng: np.random.Generator) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


# -- helpers ------------------------------------------------------------------


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x)))


def _fit_peak(x: np.ndarray) -> np.ndarray:
    """Scale down (never up) so that the peak is at most 1; return float32."""
    peak = float(np.max(np.abs(x)))
    return (x / peak if peak > 1.0 else x).astype(np.float32)


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Crop or zero-pad ``x`` at the end to exactly ``n`` samples."""
    return x[:n] if x.size >= n else np.pad(x, (0, n - x.size))


def _mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Return ``x + g * noise`` with ``g`` chosen so power(x) / power(g * noise) = snr_db."""
    signal_power, noise_power = _power(x), _power(noise)
    if signal_power == 0.0:
        raise ValueError("samples are silent: the SNR is undefined")
    if noise_power == 0.0:
        raise ValueError("the interfering signal is silent over this clip")
    gain = math.sqrt(signal_power / (noise_power * 10.0 ** (snr_db / 10.0)))
    return _fit_peak(x + gain * noise)


def _pink_noise(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """White noise shaped in the frequency domain to a 1/f power spectrum above PINK_LOW_HZ."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, d=1.0 / sr)
    shape = np.zeros_like(freqs)
    audible = freqs >= PINK_LOW_HZ
    shape[audible] = 1.0 / np.sqrt(freqs[audible])
    return np.fft.irfft(spectrum * shape, n)


# -- degradations -------------------------------------------------------------


def add_noise(
    samples: np.ndarray,
    sr: int,
    snr_db: float,
    color: str = "white",
    *,
    rng: np.random.Generator,
) -> np.ndarray:
    """Add Gaussian noise at a given signal-to-noise ratio.

    The noise is scaled so that mean signal power / mean noise power over the
    whole clip equals ``snr_db`` (dB).  ``color`` is ``"white"`` (flat
    spectrum) or ``"pink"`` (1/f power spectrum, -10 dB/decade, from 20 Hz).
    If the mix would clip, signal and noise are scaled down together.
    Returns float32, shape (n,).  Raises ValueError on a silent input.
    """
    x = _signal(samples)
    sr = _positive_int(sr, "sr")
    snr_db = _finite(snr_db, "snr_db")
    _generator(rng)
    if color == "white":
        noise = rng.standard_normal(x.size)
    elif color == "pink":
        noise = _pink_noise(x.size, sr, rng)
    else:
        raise ValueError(f"color must be 'white' or 'pink', got {color!r}")
    return _mix_at_snr(x, noise, snr_db)


def add_babble(
    samples: np.ndarray,
    sr: int,
    other: np.ndarray,
    snr_db: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mix in another recording (e.g. other music) at a given SNR.

    ``other`` is a mono float signal at the same ``sr``; it is read from a
    random start position and looped to the length of ``samples``.  Its level
    is set so that power(samples) / power(other segment) equals ``snr_db`` (dB).
    Returns float32, shape (n,).
    """
    x = _signal(samples)
    _positive_int(sr, "sr")
    interference = _signal(other, "other")
    snr_db = _finite(snr_db, "snr_db")
    _generator(rng)
    start = int(rng.integers(interference.size))
    segment = np.take(interference, np.arange(start, start + x.size), mode="wrap")
    return _mix_at_snr(x, segment, snr_db)


def band_limit(
    samples: np.ndarray,
    sr: int,
    low_hz: float,
    high_hz: float,
    order: int = 4,
) -> np.ndarray:
    """Butterworth band-pass between ``low_hz`` and ``high_hz`` (Hz).

    Filtering is zero-phase (forward-backward), so nothing is delayed and the
    response is -6 dB at the edges.  If ``high_hz >= sr / 2`` only a high-pass
    is applied; ``low_hz == 0`` gives only a low-pass.  Returns float32, shape (n,).
    """
    x = _signal(samples)
    sr = _positive_int(sr, "sr")
    low, high = _finite(low_hz, "low_hz"), _finite(high_hz, "high_hz")
    order = _positive_int(order, "order")
    nyquist = sr / 2.0
    if not 0.0 <= low < nyquist:
        raise ValueError(f"low_hz must be in [0, {nyquist:g}) Hz, got {low_hz!r}")
    if high <= low:
        raise ValueError(f"high_hz ({high_hz!r}) must be above low_hz ({low_hz!r})")
    if high >= nyquist and low == 0.0:
        return x.astype(np.float32)
    if high >= nyquist:
        sos = signal.butter(order, low, btype="highpass", fs=sr, output="sos")
    elif low == 0.0:
        sos = signal.butter(order, high, btype="lowpass", fs=sr, output="sos")
    else:
        sos = signal.butter(order, [low, high], btype="bandpass", fs=sr, output="sos")
    return signal.sosfiltfilt(sos, x).astype(np.float32)


def room_impulse_response(
    sr: int,
    rt60: float = 0.35,
    drr_db: float = 3.0,
    *,
    rng: np.random.Generator,
) -> np.ndarray:
    """Synthetic small-room impulse response.

    A unit direct-path impulse at sample 0 followed by a Gaussian noise tail
    whose energy decays by 60 dB in ``rt60`` seconds; the tail is scaled so
    that direct energy / tail energy equals ``drr_db`` (dB).
    Returns float32, shape (round(rt60 * sr) + 1,).
    """
    sr = _positive_int(sr, "sr")
    rt60 = _finite(rt60, "rt60")
    if rt60 <= 0.0:
        raise ValueError(f"rt60 must be positive (seconds), got {rt60!r}")
    drr_db = _finite(drr_db, "drr_db")
    _generator(rng)
    n_tail = max(1, round(rt60 * sr))
    t = np.arange(1, n_tail + 1) / sr
    tail = rng.standard_normal(n_tail) * 10.0 ** (-3.0 * t / rt60)
    tail *= math.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(np.square(tail)))
    return np.concatenate(([1.0], tail)).astype(np.float32)


def reverb(
    samples: np.ndarray,
    sr: int,
    rt60: float = 0.35,
    drr_db: float = 3.0,
    *,
    rng: np.random.Generator,
) -> np.ndarray:
    """Convolve with a :func:`room_impulse_response` (RT60 in s, DRR in dB).

    The direct path is at lag 0, so the output stays time-aligned; it is cut
    to the input length and scaled down if it would clip.  Returns float32, shape (n,).
    """
    x = _signal(samples)
    response = room_impulse_response(sr, rt60, drr_db, rng=rng)
    wet = signal.fftconvolve(x, response.astype(np.float64))[: x.size]
    return _fit_peak(wet)


def resample(samples: np.ndarray, sr: int, new_sr: int) -> np.ndarray:
    """Change the sample rate from ``sr`` to ``new_sr`` (Hz) with a polyphase filter.

    Duration and pitch are kept.  Returns float32, shape (ceil(n * new_sr / sr),).
    """
    x = _signal(samples)
    sr = _positive_int(sr, "sr")
    new_sr = _positive_int(new_sr, "new_sr")
    common = math.gcd(sr, new_sr)
    return signal.resample_poly(x, new_sr // common, sr // common).astype(np.float32)


def speed(samples: np.ndarray, sr: int, factor: float) -> np.ndarray:
    """Play back ``factor`` times faster, like a turntable or tape: pitch and tempo both change.

    ``factor`` 1.03 raises every frequency by 3% and shortens the clip to
    n / 1.03 samples at the same ``sr``.  The factor is approximated by a
    fraction with denominator <= 1000.  Accepts MIN_SPEED <= factor <= MAX_SPEED.
    Returns float32, shape (about n / factor,).
    """
    x = _signal(samples)
    _positive_int(sr, "sr")
    factor = _finite(factor, "factor")
    if not MIN_SPEED <= factor <= MAX_SPEED:
        raise ValueError(f"factor must be in [{MIN_SPEED}, {MAX_SPEED}], got {factor!r}")
    ratio = Fraction(factor).limit_denominator(1000)
    return signal.resample_poly(x, ratio.denominator, ratio.numerator).astype(np.float32)


def mp3_reencode(samples: np.ndarray, sr: int, bitrate_kbps: int = 64) -> np.ndarray:
    """Encode to constant-bitrate MP3 with ffmpeg/libmp3lame and decode back.

    The codec delay is removed so the output is time-aligned with the input,
    and the output has the input length.  Rates that MP3 cannot store are
    resampled to the next higher MP3 rate around the codec.  Decoded values are
    clipped to [-1, 1] as a PCM decoder would.  Needs ``ffmpeg`` on PATH.
    Returns float32, shape (n,).
    """
    x = _signal(samples)
    sr = _positive_int(sr, "sr")
    bitrate_kbps = _positive_int(bitrate_kbps, "bitrate_kbps")
    codec_sr = next((rate for rate in MP3_RATES if rate >= sr), MP3_RATES[-1])
    coded = x if codec_sr == sr else resample(x, sr, codec_sr).astype(np.float64)
    decoded = _mp3_aligned(coded, codec_sr, bitrate_kbps)
    if codec_sr != sr:
        decoded = resample(decoded, codec_sr, sr).astype(np.float64)
    return np.clip(_fit_length(decoded, x.size), -1.0, 1.0).astype(np.float32)


def _ffmpeg(args: list[str], data: bytes) -> bytes:
    executable = shutil.which("ffmpeg")
    if executable is None:
        raise RuntimeError("mp3_reencode needs ffmpeg on PATH (e.g. apt-get install ffmpeg)")
    result = subprocess.run(
        [executable, "-hide_banner", "-nostats", "-loglevel", "error", *args],
        input=data,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def _mp3_roundtrip(x: np.ndarray, sr: int, bitrate_kbps: int) -> np.ndarray:
    """Raw encode/decode through pipes; the result still contains the codec delay."""
    encoded = _ffmpeg(
        ["-f", "f32le", "-ar", str(sr), "-ac", "1", "-i", "pipe:0",
         "-c:a", "libmp3lame", "-b:a", f"{bitrate_kbps}k", "-write_xing", "0",
         "-f", "mp3", "pipe:1"],
        x.astype("<f4").tobytes(),
    )
    decoded = _ffmpeg(["-f", "mp3", "-i", "pipe:0", "-ac", "1", "-f", "f32le", "pipe:1"], encoded)
    return np.frombuffer(decoded, dtype="<f4").astype(np.float64)


@functools.lru_cache(maxsize=None)
def _mp3_delay(sr: int, bitrate_kbps: int) -> int:
    """Codec delay in samples, measured once per setting by cross-correlating 1 s of noise."""
    probe = np.random.default_rng(0).uniform(-0.5, 0.5, sr)
    decoded = _mp3_roundtrip(probe, sr, bitrate_kbps)
    correlation = signal.correlate(decoded, probe, mode="full", method="fft")
    lags = signal.correlation_lags(decoded.size, probe.size, mode="full")
    return int(lags[np.argmax(correlation)])


def _mp3_aligned(x: np.ndarray, sr: int, bitrate_kbps: int) -> np.ndarray:
    delay = _mp3_delay(sr, bitrate_kbps)
    decoded = _mp3_roundtrip(x, sr, bitrate_kbps)
    shifted = decoded[delay:] if delay >= 0 else np.pad(decoded, (-delay, 0))
    return _fit_length(shifted, x.size)


def simulated_microphone(samples: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Music played through a speaker in a small room and recorded by a phone.

    Chain: speaker band-limit 150 Hz-7 kHz, room reverb (RT60 0.35 s, DRR 3 dB),
    microphone band-limit 100 Hz-8 kHz, pink noise at 5 dB SNR, 64 kbps MP3.
    Returns float32, shape (n,).
    """
    _signal(samples)
    _positive_int(sr, "sr")
    _generator(rng)
    speaker = band_limit(samples, sr, 150.0, 7000.0)
    room = reverb(speaker, sr, rt60=0.35, drr_db=3.0, rng=rng)
    microphone = band_limit(room, sr, 100.0, 8000.0)
    noisy = add_noise(microphone, sr, 5.0, "pink", rng=rng)
    return mp3_reencode(noisy, sr, 64)


# -- named conditions ---------------------------------------------------------


def _clean(samples: np.ndarray, sr: int, _rng: np.random.Generator) -> tuple[np.ndarray, int]:
    return _signal(samples).astype(np.float32), _positive_int(sr, "sr")


def _microphone(samples: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    return simulated_microphone(samples, sr, rng), sr


def _telephone_band(
    samples: np.ndarray, sr: int, _rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    return band_limit(samples, sr, 300.0, 3400.0), sr


def _room(samples: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    return reverb(samples, sr, rng=rng), sr


def _noise(color: str, snr_db: float) -> Condition:
    def apply(samples: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        return add_noise(samples, sr, snr_db, color, rng=rng), sr

    return apply


def _babble(other: np.ndarray, snr_db: float) -> Condition:
    def apply(samples: np.ndarray, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        return add_babble(samples, sr, other, snr_db, rng), sr

    return apply


def _mp3(bitrate_kbps: int) -> Condition:
    def apply(samples: np.ndarray, sr: int, _rng: np.random.Generator) -> tuple[np.ndarray, int]:
        return mp3_reencode(samples, sr, bitrate_kbps), sr

    return apply


def _resampled(new_sr: int) -> Condition:
    def apply(samples: np.ndarray, sr: int, _rng: np.random.Generator) -> tuple[np.ndarray, int]:
        return resample(samples, sr, new_sr), new_sr

    return apply


def _faster(factor: float) -> Condition:
    def apply(samples: np.ndarray, sr: int, _rng: np.random.Generator) -> tuple[np.ndarray, int]:
        return speed(samples, sr, factor), sr

    return apply


CONDITIONS: dict[str, Condition] = {
    "clean": _clean,
    "mic": _microphone,
    "pink0": _noise("pink", 0.0),
    "white10": _noise("white", 10.0),
    "bandlimit": _telephone_band,
    "reverb": _room,
    "mp3_64": _mp3(64),
    "sr8000": _resampled(8000),
    "sr16000": _resampled(16000),
    "sr22050": _resampled(22050),
    "speed+1": _faster(1.01),
    "speed-1": _faster(0.99),
    "speed+3": _faster(1.03),
    "speed-3": _faster(0.97),
    "speed+5": _faster(1.05),
    "speed-5": _faster(0.95),
}
"""Named conditions: ``(samples, sr, rng) -> (degraded samples, their sample rate)``.

"bandlimit" is the 300-3400 Hz telephone band; "reverb" uses RT60 0.35 s and
DRR 3 dB; "srNNNN" return audio at NNNN Hz.  "babble" is only available
through :func:`parse_condition` because it needs other audio.
"""

_PARAMETERS: dict[str, tuple[str, Callable[[str], float], Callable[[float], bool]]] = {
    "pink": ("snr_db", float, math.isfinite),
    "white": ("snr_db", float, math.isfinite),
    "babble": ("snr_db", float, math.isfinite),
    "speed": ("factor", float, lambda value: MIN_SPEED <= value <= MAX_SPEED),
    "sr": ("hz", int, lambda value: value > 0),
    "mp3": ("kbps", int, lambda value: value > 0),
}

_FACTORIES: dict[str, Callable[[float], Condition]] = {
    "pink": functools.partial(_noise, "pink"),
    "white": functools.partial(_noise, "white"),
    "speed": _faster,
    "sr": _resampled,
    "mp3": _mp3,
}


def _valid_names() -> str:
    forms = ", ".join(f"{kind}:<{label}>" for kind, (label, _, _) in _PARAMETERS.items())
    return f"{', '.join(CONDITIONS)}, babble (needs other audio); or {forms}"


def parse_condition(name: str, other: np.ndarray | None = None) -> Condition:
    """Look up a condition by name, e.g. ``"mic"``, ``"pink:5"``, ``"speed:1.02"``.

    Parameterised forms: ``pink:<snr_db>``, ``white:<snr_db>``,
    ``babble:<snr_db>``, ``speed:<factor>``, ``sr:<hz>``, ``mp3:<kbps>``.
    ``"babble"`` (BABBLE_SNR_DB) and ``"babble:<snr_db>"`` mix in ``other``, a
    mono float signal at the sample rate of the audio the condition is applied
    to.  Raises ValueError for unknown names or invalid parameters.
    """
    key = name.strip().lower()
    if key in CONDITIONS:
        return CONDITIONS[key]
    if key == "babble":
        key = f"babble:{BABBLE_SNR_DB}"
    kind, separator, argument = key.partition(":")
    if not separator or kind not in _PARAMETERS:
        raise ValueError(f"unknown condition {name!r}; valid: {_valid_names()}")
    label, convert, is_valid = _PARAMETERS[kind]
    try:
        value = convert(argument)
    except ValueError:
        value = None
    if value is None or not is_valid(value):
        raise ValueError(f"condition {name!r}: invalid {label} {argument!r}")
    if kind != "babble":
        return _FACTORIES[kind](value)
    if other is None:
        raise ValueError(f"condition {name!r} needs the other audio: pass other=...")
    _signal(other, "other")
    return _babble(other, value)

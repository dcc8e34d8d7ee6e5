"""Tests for dejavu.evaluation.degrade on synthetic signals."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from scipy import signal

from dejavu.evaluation import degrade

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def tone(freq_hz: float, sr: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def sweep(sr: int, seconds: float, f0: float = 200.0, f1: float = 3500.0) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (0.5 * signal.chirp(t, f0, seconds, f1)).astype(np.float32)


def snr_db(clean: np.ndarray, degraded: np.ndarray) -> float:
    clean64 = clean.astype(np.float64)
    noise = degraded.astype(np.float64) - clean64
    return float(10 * np.log10(np.mean(clean64**2) / np.mean(noise**2)))


def peak_frequency(x: np.ndarray, sr: int) -> float:
    n_fft = 1 << 20
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size), n_fft))
    return float(np.argmax(spectrum) * sr / n_fft)


def best_lag(reference: np.ndarray, degraded: np.ndarray) -> int:
    """Lag (samples) by which ``degraded`` trails ``reference``."""
    correlation = signal.correlate(degraded, reference, mode="full", method="fft")
    lags = signal.correlation_lags(degraded.size, reference.size, mode="full")
    return int(lags[np.argmax(correlation)])


def rms_db(x: np.ndarray) -> float:
    middle = x[x.size // 4 : 3 * x.size // 4].astype(np.float64)
    return float(10 * np.log10(np.mean(middle**2)))


# -- noise --------------------------------------------------------------------


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("target_db", [0.0, 5.0, 10.0, 20.0])
def test_add_noise_hits_requested_snr(color: str, target_db: float) -> None:
    clean = tone(440.0, 16000, 2.0, amplitude=0.1)
    noisy = degrade.add_noise(clean, 16000, target_db, color, rng=np.random.default_rng(1))
    assert noisy.dtype == np.float32 and noisy.shape == clean.shape
    assert abs(snr_db(clean, noisy) - target_db) < 0.5


def test_pink_noise_falls_10_db_per_decade() -> None:
    sr = 16000
    clean = tone(1000.0, sr, 3.0, amplitude=0.1)
    noisy = degrade.add_noise(clean, sr, 0.0, "pink", rng=np.random.default_rng(2))
    noise = noisy.astype(np.float64) - clean
    freqs, psd = signal.welch(noise, fs=sr, nperseg=4096)
    band = (freqs >= 50) & (freqs <= 5000)
    slope, _ = np.polyfit(np.log10(freqs[band]), 10 * np.log10(psd[band]), 1)
    assert abs(slope - -10.0) <= 3.0


def test_white_noise_is_flat() -> None:
    sr = 16000
    clean = tone(1000.0, sr, 3.0, amplitude=0.1)
    noisy = degrade.add_noise(clean, sr, 0.0, "white", rng=np.random.default_rng(2))
    freqs, psd = signal.welch(noisy.astype(np.float64) - clean, fs=sr, nperseg=4096)
    band = (freqs >= 50) & (freqs <= 5000)
    slope, _ = np.polyfit(np.log10(freqs[band]), 10 * np.log10(psd[band]), 1)
    assert abs(slope) <= 1.0


def test_loud_mix_is_scaled_below_clipping() -> None:
    clean = tone(440.0, 16000, 1.0, amplitude=1.0)
    noisy = degrade.add_noise(clean, 16000, -5.0, "white", rng=np.random.default_rng(3))
    assert np.max(np.abs(noisy)) <= 1.0


def test_add_babble_hits_requested_snr_and_loops_short_other() -> None:
    sr = 8000
    clean = tone(300.0, sr, 2.0, amplitude=0.1)
    other = sweep(sr, 0.7, 500.0, 3000.0)
    for target_db in (0.0, 5.0, 12.0):
        mixed = degrade.add_babble(clean, sr, other, target_db, np.random.default_rng(4))
        assert mixed.shape == clean.shape
        assert abs(snr_db(clean, mixed) - target_db) < 0.5


def test_silent_input_has_no_snr() -> None:
    with pytest.raises(ValueError, match="silent"):
        degrade.add_noise(np.zeros(1000, np.float32), 8000, 5.0, rng=np.random.default_rng(0))


# -- filtering and reverb -----------------------------------------------------


def test_band_limit_keeps_in_band_and_cuts_out_of_band() -> None:
    sr = 16000
    for freq, inside in ((1000.0, True), (100.0, False), (6000.0, False)):
        x = tone(freq, sr, 1.0)
        change_db = rms_db(degrade.band_limit(x, sr, 300.0, 3400.0)) - rms_db(x)
        if inside:
            assert abs(change_db) <= 1.0
        else:
            assert change_db <= -20.0


def test_band_limit_above_nyquist_is_high_pass_only() -> None:
    sr = 8000
    kept, cut = tone(3000.0, sr, 1.0), tone(40.0, sr, 1.0)
    assert abs(rms_db(degrade.band_limit(kept, sr, 150.0, 7000.0)) - rms_db(kept)) <= 1.0
    assert rms_db(degrade.band_limit(cut, sr, 150.0, 7000.0)) - rms_db(cut) <= -20.0


def test_band_limit_rejects_bad_band() -> None:
    x = tone(440.0, 8000, 0.5)
    with pytest.raises(ValueError):
        degrade.band_limit(x, 8000, 3000.0, 300.0)
    with pytest.raises(ValueError):
        degrade.band_limit(x, 8000, 5000.0, 6000.0)


def schroeder_rt60(response: np.ndarray, sr: int) -> float:
    """RT60 from the -5..-25 dB range of the backward-integrated energy decay curve."""
    energy = np.cumsum(response[::-1].astype(np.float64) ** 2)[::-1]
    decay_db = 10 * np.log10(energy / energy[0])
    fit = (decay_db <= -5.0) & (decay_db >= -25.0)
    slope, _ = np.polyfit(np.flatnonzero(fit) / sr, decay_db[fit], 1)
    return -60.0 / slope


@pytest.mark.parametrize(("rt60", "drr_db"), [(0.35, 3.0), (0.6, 0.0), (0.2, 8.0)])
def test_room_impulse_response_has_requested_rt60_and_drr(rt60: float, drr_db: float) -> None:
    sr = 16000
    response = degrade.room_impulse_response(sr, rt60, drr_db, rng=np.random.default_rng(5))
    assert abs(schroeder_rt60(response, sr) - rt60) <= 0.2 * rt60
    measured_drr = 10 * np.log10(response[0] ** 2 / np.sum(response[1:].astype(np.float64) ** 2))
    assert abs(measured_drr - drr_db) <= 1.0


def test_reverb_applies_the_impulse_response_at_lag_zero() -> None:
    sr = 8000
    impulse = np.zeros(sr, np.float32)
    impulse[0] = 1.0
    wet = degrade.reverb(impulse, sr, rng=np.random.default_rng(6))
    response = degrade.room_impulse_response(sr, rng=np.random.default_rng(6))
    assert wet.shape == impulse.shape and wet.dtype == np.float32
    np.testing.assert_allclose(wet[: response.size], response / np.max(np.abs(response)), atol=1e-6)


def test_reverb_keeps_length_and_does_not_clip() -> None:
    x = tone(220.0, 16000, 1.5, amplitude=1.0)
    wet = degrade.reverb(x, 16000, rt60=0.8, drr_db=-6.0, rng=np.random.default_rng(7))
    assert wet.shape == x.shape
    assert np.max(np.abs(wet)) <= 1.0


# -- codec --------------------------------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize("sr", [8000, 16000, 22050, 11000])
def test_mp3_reencode_keeps_length_and_alignment(sr: int) -> None:
    x = sweep(sr, 1.5)
    y = degrade.mp3_reencode(x, sr, 64)
    assert y.shape == x.shape and y.dtype == np.float32
    assert abs(best_lag(x, y)) <= sr // 1000
    assert np.corrcoef(x, y)[0, 1] > 0.9


@needs_ffmpeg
def test_simulated_microphone_stays_aligned() -> None:
    sr = 16000
    x = sweep(sr, 2.0)
    y = degrade.simulated_microphone(x, sr, np.random.default_rng(8))
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
    assert abs(best_lag(x, y)) <= sr // 1000


# -- time and rate ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sr", "new_sr"), [(16000, 8000), (16000, 22050), (22050, 16000), (8000, 8000)]
)
def test_resample_changes_length_but_not_pitch(sr: int, new_sr: int) -> None:
    x = tone(1000.0, sr, 1.0)
    y = degrade.resample(x, sr, new_sr)
    assert y.dtype == np.float32
    assert abs(y.size - x.size * new_sr / sr) <= 1
    assert abs(peak_frequency(y, new_sr) - 1000.0) <= 2.0


@pytest.mark.parametrize("factor", [1.01, 0.99, 1.03, 0.97, 1.05, 0.95, 1.0])
def test_speed_scales_length_and_pitch(factor: float) -> None:
    sr = 16000
    x = tone(1000.0, sr, 1.0)
    y = degrade.speed(x, sr, factor)
    assert y.dtype == np.float32
    assert abs(y.size - x.size / factor) <= 1
    assert abs(peak_frequency(y, sr) - 1000.0 * factor) <= 2.0


def test_speed_rejects_out_of_range_factor() -> None:
    with pytest.raises(ValueError):
        degrade.speed(tone(440.0, 8000, 0.5), 8000, 0.0)


# -- registry -----------------------------------------------------------------


def test_registry_has_the_documented_names() -> None:
    assert set(degrade.CONDITIONS) == {
        "clean", "mic", "pink0", "white10", "bandlimit", "reverb", "mp3_64",
        "sr8000", "sr16000", "sr22050",
        "speed+1", "speed-1", "speed+3", "speed-3", "speed+5", "speed-5",
    }


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=needs_ffmpeg) if name in ("mic", "mp3_64") else name
        for name in degrade.CONDITIONS
    ],
)
def test_conditions_are_deterministic(name: str) -> None:
    sr = 16000
    x = sweep(sr, 1.0)
    condition = degrade.CONDITIONS[name]
    first, first_sr = condition(x, sr, np.random.default_rng(9))
    second, second_sr = condition(x, sr, np.random.default_rng(9))
    assert first.dtype == np.float32 and first_sr == second_sr
    np.testing.assert_array_equal(first, second)
    assert x.dtype == np.float32 and np.array_equal(x, sweep(sr, 1.0))


@pytest.mark.parametrize("name", ["pink0", "white10", "reverb"])
def test_random_conditions_depend_on_seed(name: str) -> None:
    x = sweep(8000, 1.0)
    first, _ = degrade.CONDITIONS[name](x, 8000, np.random.default_rng(1))
    second, _ = degrade.CONDITIONS[name](x, 8000, np.random.default_rng(2))
    assert not np.array_equal(first, second)


def test_condition_sample_rates() -> None:
    x = tone(440.0, 22050, 1.0)
    rng = np.random.default_rng(0)
    assert degrade.CONDITIONS["sr8000"](x, 22050, rng)[1] == 8000
    assert degrade.CONDITIONS["speed+3"](x, 22050, rng)[1] == 22050
    assert degrade.CONDITIONS["clean"](x, 22050, rng)[1] == 22050


def test_parse_condition_parameterised_forms() -> None:
    sr = 16000
    x = tone(500.0, sr, 1.0, amplitude=0.1)
    rng = np.random.default_rng(10)
    assert degrade.parse_condition("mic") is degrade.CONDITIONS["mic"]
    noisy, noisy_sr = degrade.parse_condition("pink:5")(x, sr, rng)
    assert noisy_sr == sr and abs(snr_db(x, noisy) - 5.0) < 0.5
    assert abs(snr_db(x, degrade.parse_condition(" White:0 ")(x, sr, rng)[0])) < 0.5
    faster, _ = degrade.parse_condition("speed:1.02")(x, sr, rng)
    assert abs(faster.size - x.size / 1.02) <= 1
    resampled, new_sr = degrade.parse_condition("sr:8000")(x, sr, rng)
    assert new_sr == 8000 and resampled.size == x.size // 2


@needs_ffmpeg
def test_parse_condition_mp3_bitrate() -> None:
    x = sweep(16000, 1.0)
    y, y_sr = degrade.parse_condition("mp3:32")(x, 16000, np.random.default_rng(0))
    assert y_sr == 16000 and y.shape == x.shape


def test_parse_condition_babble_needs_other_audio() -> None:
    sr = 8000
    x = tone(300.0, sr, 1.0, amplitude=0.1)
    other = sweep(sr, 0.5, 400.0, 2000.0)
    with pytest.raises(ValueError, match="other"):
        degrade.parse_condition("babble")
    mixed, _ = degrade.parse_condition("babble", other=other)(x, sr, np.random.default_rng(0))
    assert abs(snr_db(x, mixed) - degrade.BABBLE_SNR_DB) < 0.5
    condition = degrade.parse_condition("babble:-3", other=other)
    first, _ = condition(x, sr, np.random.default_rng(11))
    second, _ = condition(x, sr, np.random.default_rng(11))
    np.testing.assert_array_equal(first, second)
    assert abs(snr_db(x, first) - -3.0) < 0.5


def test_parse_condition_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError) as error:
        degrade.parse_condition("telephone")
    message = str(error.value)
    for expected in ("clean", "mic", "speed-5", "babble", "pink:<snr_db>", "sr:<hz>", "mp3:<kbps>"):
        assert expected in message


@pytest.mark.parametrize(
    "name",
    [
        "pink", "pink:", "pink:loud", "white:nan",
        "speed:0", "speed:-1.02", "sr:-8000", "sr:16000.5", "mp3:0",
    ],
)
def test_parse_condition_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError):
        degrade.parse_condition(name)


# -- input validation ---------------------------------------------------------


def test_inputs_are_validated() -> None:
    rng = np.random.default_rng(0)
    x = tone(440.0, 8000, 0.5)
    with pytest.raises(TypeError):
        degrade.add_noise(np.ones(100, np.int16), 8000, 5.0, rng=rng)
    with pytest.raises(ValueError):
        degrade.add_noise(np.stack([x, x]), 8000, 5.0, rng=rng)
    with pytest.raises(ValueError):
        degrade.add_noise(np.full(100, np.nan, np.float32), 8000, 5.0, rng=rng)
    with pytest.raises(ValueError):
        degrade.add_noise(x, 8000, 5.0, "brown", rng=rng)
    with pytest.raises(TypeError):
        degrade.add_noise(x, 8000, 5.0, rng=np.random.RandomState(0))
    with pytest.raises(ValueError):
        degrade.resample(x, 8000, 0)
    with pytest.raises(ValueError):
        degrade.reverb(x, 8000, rt60=0.0, rng=rng)

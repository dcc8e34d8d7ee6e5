"""Unit tests of the fingerprint stages on synthetic signals."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dejavu.config import FingerprintConfig
from dejavu.logic.fingerprint import concat, fingerprint, fingerprint_stream, frames_to_seconds
from dejavu.logic.hashing import hash_pairs, pair_peaks, sha1_hash
from dejavu.logic.peaks import find_peaks
from dejavu.logic.spectrogram import n_frames, spectrogram

CFG = FingerprintConfig()


def test_spectrogram_of_a_sine_peaks_at_its_bin_at_0_dbfs():
    sr, win, hop = 11025, 1024, 256
    k = 100                                    # bin centre: k·sr/win Hz
    x = np.sin(2 * np.pi * k * sr / win * np.arange(sr) / sr).astype(np.float32)
    spec = spectrogram(x, win, hop)
    assert spec.shape == (n_frames(sr, win, hop), win // 2 + 1)
    assert np.all(spec.argmax(axis=1) == k)
    assert np.allclose(spec[:, k], 0.0, atol=0.1)


def test_spectrogram_pads_short_input_and_handles_silence():
    spec = spectrogram(np.zeros(10, dtype=np.float32), 1024, 256)
    assert spec.shape == (1, 513) and np.all(spec <= -190)


def test_find_peaks_finds_isolated_maxima_and_caps_density():
    spec = np.full((100, 200), -100.0, dtype=np.float32)
    points = [(10, 20), (10, 150), (50, 80), (90, 30)]
    for t, f in points:
        spec[t, f] = -10.0
    frames, bins, levels = find_peaks(spec, 5, 5, -60.0, block=1000, per_block=100)
    assert sorted(zip(frames.tolist(), bins.tolist())) == points
    assert np.all(levels == -10.0)
    # density cap: one peak per 40-frame block keeps the loudest of each block
    spec[50, 80] = -5.0
    frames, bins, _ = find_peaks(spec, 5, 5, -60.0, block=40, per_block=1)
    assert list(zip(frames.tolist(), bins.tolist())) == [(10, 20), (50, 80), (90, 30)]
    # amp_min drops quiet peaks
    assert find_peaks(spec, 5, 5, -8.0, block=40, per_block=10)[0].tolist() == [50]


def test_pair_peaks_respects_zone_and_fan_out():
    frames = np.array([0, 1, 2, 3, 100, 101], dtype=np.int32)
    bins = np.array([10, 20, 500, 30, 10, 11], dtype=np.int32)
    anchors, targets = pair_peaks(frames, bins, fan_value=2, min_dt=1, max_dt=63, max_df=120)
    pairs = set(zip(anchors.tolist(), targets.tolist()))
    # 0→1, 0→3 (2 is too far in frequency; fan-out 2), 1→3, 4→5; nothing spans 63+ frames
    assert pairs == {(0, 1), (0, 3), (1, 3), (4, 5)}


def test_hash_is_sha1_of_the_original_text_form():
    # The original hashed "f1|f2|dt" with SHA1; "1|2|3" → c97f62de1ba14379f6f0...
    assert hashlib.sha1(b"1|2|3").hexdigest().startswith("c97f62de1ba14379f6f0")
    assert sha1_hash(1, 2, 3) == int.from_bytes(bytes.fromhex("c97f62de1ba14379"), "big", signed=True)
    frames, bins = np.array([5, 8]), np.array([1, 2])
    hashes, offsets = hash_pairs(frames, bins, np.array([0]), np.array([1]))
    assert hashes.tolist() == [sha1_hash(1, 2, 3)] and offsets.tolist() == [5]


def _noise_music(seconds: float, seed: int = 0) -> np.ndarray:
    from dejavu.demo import synth_song
    from dejavu.logic.decoder import resample

    return resample(synth_song(seed, seconds), 22050, CFG.sample_rate)


def test_streamed_fingerprint_equals_whole():
    x = _noise_music(20)
    whole = fingerprint(x, CFG)
    for pieces in (2, 7, 50):
        parts = concat(fingerprint_stream(np.array_split(x, pieces), CFG))
        assert sorted(zip(*map(np.ndarray.tolist, parts))) == sorted(zip(*map(np.ndarray.tolist, whole)))


def test_delay_by_whole_frames_shifts_offsets_only():
    x = _noise_music(12)
    shift = 40                                     # frames
    delayed = np.concatenate([np.zeros(shift * CFG.hop_size, dtype=np.float32), x])
    h1, o1 = fingerprint(x, CFG)
    h2, o2 = fingerprint(delayed, CFG)
    a = set(zip(h1.tolist(), (o1 + shift).tolist()))
    b = set(zip(h2.tolist(), o2.tolist()))
    assert len(a & b) >= 0.9 * len(a)
    assert frames_to_seconds(shift, CFG) == pytest.approx(shift * 256 / 11025)


def test_density_is_bounded_and_silence_gives_nothing():
    x = _noise_music(20)
    h, _ = fingerprint(x, CFG)
    per_second = h.size / 20
    assert 5 < per_second <= CFG.peaks_per_second * CFG.fan_value
    hq, _ = fingerprint(x, CFG, query=True)
    assert hq.size > h.size                        # the query side is denser
    assert fingerprint(np.zeros(11025 * 5, dtype=np.float32), CFG)[0].size == 0
    assert fingerprint(np.zeros(0, dtype=np.float32), CFG)[0].size == 0


def test_running_max_equals_a_brute_force_maximum():
    from dejavu.logic.peaks import running_max

    rng = np.random.default_rng(3)
    a = rng.standard_normal((37, 23)).astype(np.float32)
    for size in (1, 3, 7, 11):
        for axis in (0, 1):
            h = size // 2
            padded = np.pad(a, [(h, h) if ax == axis else (0, 0) for ax in (0, 1)], constant_values=-np.inf)
            brute = np.max([np.take(padded, range(k, k + a.shape[axis]), axis=axis) for k in range(size)], axis=0)
            assert np.array_equal(running_max(a, size, axis), brute)

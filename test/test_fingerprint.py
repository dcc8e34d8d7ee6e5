"""Unit tests of the fingerprint stages on synthetic signals."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from dejavu.config import FingerprintConfig
from dejavu.logic.fingerprint import concat, fingerprint, fingerprint_stream
from dejavu.logic.hashing import PairHasher, hash_pairs, pair_peaks, sha1_hash, sha1_hashes
from dejavu.logic.peaks import find_peaks
from dejavu.logic.spectrogram import n_frames, power_spectrogram, spectrogram, to_db

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
    power = np.full((100, 200), 1e-10, dtype=np.float32)       # -100 dB
    points = [(10, 20), (10, 150), (50, 80), (90, 30)]
    for t, f in points:
        power[t, f] = 0.1                                       # -10 dB
    frames, bins, levels = find_peaks(power, 5, 5, -60.0, block=1000, per_block=100)
    assert sorted(zip(frames.tolist(), bins.tolist())) == points
    assert np.allclose(levels, -10.0)
    # density cap: one peak per 40-frame block keeps the loudest of each block
    power[50, 80] = 10 ** -0.5                                  # -5 dB
    frames, bins, _ = find_peaks(power, 5, 5, -60.0, block=40, per_block=1)
    assert list(zip(frames.tolist(), bins.tolist())) == [(10, 20), (50, 80), (90, 30)]
    # amp_min drops quiet peaks
    assert find_peaks(power, 5, 5, -8.0, block=40, per_block=10)[0].tolist() == [50]


def _reference_peaks(power, nt, nf, amp_min, block, per_block):
    """The definition: a maximum filter on the dB spectrogram, then the loudest per block
    (ties in level keep the earlier cell in row-major order)."""
    from scipy.ndimage import maximum_filter

    spec = to_db(power)
    local = maximum_filter(spec, size=(2 * nt + 1, 2 * nf + 1), mode="constant", cval=-np.inf)
    t, f = np.nonzero((spec == local) & (spec > amp_min))
    kept = []
    for b in np.unique(t // block):
        cells = np.flatnonzero(t // block == b)
        kept += sorted(cells, key=lambda i: -spec[t[i], f[i]])[:per_block]   # stable sort
    kept = np.sort(np.array(kept, dtype=int))
    return t[kept], f[kept], spec[t[kept], f[kept]]


@pytest.mark.parametrize("nt, nf, amp_min", [(3, 5, -70.0), (1, 2, -250.0), (0, 4, -30.0), (6, 0, -70.0)])
def test_find_peaks_on_power_equals_the_filter_on_levels(nt, nf, amp_min):
    # Peaks are found on the power and only candidates are converted to dB; levels that
    # round to the same dB value must still tie, so plant exact and near ties (powers a few
    # float32 steps apart, same level) and digital silence next to each other.
    rng = np.random.default_rng(nt * 10 + nf)
    power = rng.exponential(1e-4, (300, 60)).astype(np.float32)  # 300 frames: several tiles
    power[rng.random(power.shape) < 0.3] = 1e-9
    cells = rng.integers(0, [299, 59], (2000, 2))
    neighbour = power[cells[:, 0], cells[:, 1]]
    steps = rng.integers(-3, 4, cells.shape[0]).astype(np.int32)
    power[cells[:, 0] + 1, cells[:, 1] + 1] = (neighbour.view(np.int32) + steps).view(np.float32)
    power[100:140, 10:30] = 0.0
    power[200:203, :] = power[203:206, :]                       # repeated frames: exact ties
    for per_block in (9, 10**6):                                 # capped, and every local maximum
        frames, bins, levels = find_peaks(power, nt, nf, amp_min, block=43, per_block=per_block)
        ref = _reference_peaks(power, nt, nf, amp_min, block=43, per_block=per_block)
        assert np.array_equal(frames, ref[0]) and np.array_equal(bins, ref[1]) and np.array_equal(levels, ref[2])
        assert frames.dtype == bins.dtype == np.int32 and levels.dtype == np.float32


def test_power_spectrogram_is_the_power_of_the_level():
    x = _noise_music(3)
    power = power_spectrogram(x, 1024, 256, (9, 466))
    assert power.shape == (n_frames(x.size, 1024, 256), 457) and power.dtype == np.float32
    assert np.array_equal(to_db(power), spectrogram(x, 1024, 256, (9, 466)))


def test_pair_peaks_respects_zone_and_fan_out():
    frames = np.array([0, 1, 2, 3, 100, 101], dtype=np.int32)
    bins = np.array([10, 20, 500, 30, 10, 11], dtype=np.int32)
    anchors, targets = pair_peaks(frames, bins, fan_value=2, min_dt=1, max_dt=63, max_df=120)
    pairs = set(zip(anchors.tolist(), targets.tolist()))
    # 0→1, 0→3 (2 is too far in frequency; fan-out 2), 1→3, 4→5; nothing spans 63+ frames
    assert pairs == {(0, 1), (0, 3), (1, 3), (4, 5)}


def _reference_pairs(frames, bins, fan_value, min_dt, max_dt, max_df):
    """The definition, one anchor at a time: the first fan_value peaks in the target zone
    among the next 4·fan_value + 16 peaks."""
    pairs = []
    for i in range(frames.size):
        found = [j for j in range(i + 1, min(frames.size, i + 4 * fan_value + 17))
                 if min_dt <= frames[j] - frames[i] <= max_dt and abs(int(bins[j]) - int(bins[i])) <= max_df]
        pairs += [(i, j) for j in found[:fan_value]]
    return pairs


@pytest.mark.parametrize("fan_value, min_dt", [(1, 0), (5, 1), (20, 1), (3, 4)])
def test_pair_peaks_equals_the_definition(fan_value, min_dt):
    rng = np.random.default_rng(fan_value)
    frames = np.sort(np.r_[rng.integers(0, 400, 300), np.full(150, 200)]).astype(np.int32)  # a dense frame
    bins = rng.integers(0, 300, frames.size).astype(np.int32)
    anchors, targets = pair_peaks(frames, bins, fan_value, min_dt, 63, 120)
    assert list(zip(anchors.tolist(), targets.tolist())) == _reference_pairs(frames, bins, fan_value, min_dt, 63, 120)
    # n_anchors: only the first anchors, with the same targets
    part = pair_peaks(frames, bins, fan_value, min_dt, 63, 120, n_anchors=100)
    assert np.array_equal(part[0], anchors[anchors < 100]) and np.array_equal(part[1], targets[anchors < 100])


def test_hash_is_sha1_of_the_original_text_form():
    # The original hashed "f1|f2|dt" with SHA1; "1|2|3" → c97f62de1ba14379f6f0...
    assert hashlib.sha1(b"1|2|3").hexdigest().startswith("c97f62de1ba14379f6f0")
    assert sha1_hash(1, 2, 3) == int.from_bytes(bytes.fromhex("c97f62de1ba14379"), "big", signed=True)
    frames, bins = np.array([5, 8]), np.array([1, 2])
    hashes, offsets = hash_pairs(frames, bins, np.array([0]), np.array([1]))
    assert hashes.tolist() == [sha1_hash(1, 2, 3)] and offsets.tolist() == [5]


@pytest.mark.parametrize("top", [1, 10, 100, 1000, 10_000, 100_000])
def test_vectorised_sha1_equals_hashlib(top):
    rng = np.random.default_rng(top)
    f1, f2, dt = (rng.integers(0, top, 3000) for _ in range(3))
    f1[:4], f2[:4], dt[:4] = [0, top - 1, 9 % top, 0], [top - 1] * 4, [0, top - 1, top - 1, 10 % top]
    expected = [sha1_hash(a, b, c) for a, b, c in zip(f1.tolist(), f2.tolist(), dt.tolist())]
    assert sha1_hashes(f1, f2, dt).tolist() == expected


def test_pair_hasher_table_gives_the_sha1_hashes():
    hasher = PairHasher(n_freq=466, max_df=120, max_dt=63)
    rng = np.random.default_rng(5)
    for _ in range(3):                                   # cold, then partly and fully warm
        f1 = rng.integers(0, 466, 5000)
        f2 = np.clip(f1 + rng.integers(-120, 121, f1.size), 0, 465)
        dt = rng.integers(0, 64, f1.size)
        assert np.array_equal(hasher(f1, f2, dt), sha1_hashes(f1, f2, dt))
        assert np.array_equal(hasher(f1, f2, dt), sha1_hashes(f1, f2, dt))
    outside = np.array([500]), np.array([10]), np.array([3])   # beyond the table: hashed directly
    assert hasher(*outside).tolist() == [sha1_hash(500, 10, 3)]
    assert hasher(*(np.zeros(0, dtype=int),) * 3).size == 0


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
    assert CFG.frames_to_seconds(shift) == pytest.approx(shift * 256 / 11025)


def test_density_is_bounded_and_silence_gives_nothing():
    x = _noise_music(20)
    h, _ = fingerprint(x, CFG)
    per_second = h.size / 20
    assert 5 < per_second <= CFG.peaks_per_second * CFG.fan_value
    hq, _ = fingerprint(x, CFG, query=True)
    assert hq.size > h.size                        # the query side is denser
    assert fingerprint(np.zeros(11025 * 5, dtype=np.float32), CFG)[0].size == 0
    assert fingerprint(np.zeros(0, dtype=np.float32), CFG)[0].size == 0


def test_packed_keys_are_the_pair_coordinates_and_distinct():
    """A packed key holds (f1, f2 − f1, Δt) in 23 bits for the defaults and gives them back."""
    from dejavu.logic.hashing import PackedKeys

    keys = PackedKeys(n_freq=466, max_df=120, max_dt=63)
    assert keys.bits == 23
    f1, df, dt = np.meshgrid(np.arange(0, 466, 7), np.arange(-120, 121, 3), np.arange(0, 64), indexing="ij")
    f1, f2, dt = f1.ravel(), (f1 + df).ravel(), dt.ravel()
    packed = keys(f1, f2, dt)
    assert np.unique(packed).size == packed.size and 0 <= packed.min() and packed.max() < 2 ** 23
    assert all(np.array_equal(a, b) for a, b in zip(keys.unpack(packed), (f1, f2, dt)))


def test_packed_and_sha1_keys_index_the_same_pairs():
    """The two key kinds name the same pairs: one-to-one on a real fingerprint, same offsets."""
    from dataclasses import replace

    x = _noise_music(20.0, 5)
    packed, offsets = fingerprint(x, CFG)
    sha1, sha1_offsets = fingerprint(x, replace(CFG, key="sha1"))
    assert np.array_equal(offsets, sha1_offsets) and packed.size > 1000
    pairs = np.unique(np.stack([packed, sha1]), axis=1)
    assert np.unique(pairs[0]).size == np.unique(pairs[1]).size == pairs.shape[1]

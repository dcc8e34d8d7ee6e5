"""Fingerprint: samples → (hash, offset) pairs, whole or streamed block by block.

Wires :mod:`spectrogram` → :mod:`peaks` → :mod:`hashing`.  The streaming form keeps
just enough context between blocks (the peak neighbourhood and the pairing window)
that a file fingerprinted in blocks gives exactly the hashes of the whole file, with
memory bounded by one block.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from dejavu.config import FingerprintConfig
from dejavu.logic.hashing import hash_pairs, pair_hasher, pair_peaks
from dejavu.logic.peaks import find_peaks
from dejavu.logic.spectrogram import n_frames, power_spectrogram

Hashes = tuple[np.ndarray, np.ndarray]  # (hashes int64 (m,), offsets int32 (m,))


class StreamFingerprinter:
    """Incremental fingerprinting of one continuous signal at ``cfg.sample_rate``.

    ``feed(block)`` returns the hashes that are final so far, ``flush()`` the rest.
    ``query=True`` selects the denser query-side peak and fan-out settings.
    """

    def __init__(self, cfg: FingerprintConfig, query: bool = False) -> None:
        self.cfg = cfg
        fs, win = cfg.sample_rate, cfg.window_size
        self._bins = (max(1, int(cfg.freq_min_hz * win / fs)),
                      min(win // 2 + 1, int(np.ceil(cfg.freq_max_hz * win / fs)) + 1))
        self._block = max(1, round(fs / cfg.hop_size))  # density block ≈ 1 s of frames
        pps = cfg.query_peaks_per_second if query else cfg.peaks_per_second
        self._per_block = max(1, round(pps * self._block * cfg.hop_size / fs))
        self._fan = cfg.query_fan_value if query else cfg.fan_value
        q = cfg.freq_quantization
        n_freq = (self._bins[1] - 1) // q + 1                     # hashed bins are 0..n_freq-1
        max_df = min(-(-cfg.max_hash_freq_delta // q), n_freq - 1)  # their largest |f2 - f1|
        self._hasher = pair_hasher(n_freq, max_df, cfg.max_hash_time_delta, cfg.key)
        self._context = cfg.neighborhood_time
        self._samples = np.zeros(0, dtype=np.float32)
        self._samples_start = 0      # absolute frame whose first sample is _samples[0]
        self._final = 0              # peaks of frames < _final are known
        self._peak_frames = np.zeros(0, dtype=np.int32)
        self._peak_bins = np.zeros(0, dtype=np.int32)
        self.total_samples = 0

    def feed(self, block: np.ndarray) -> Hashes:
        """Add samples (float32 mono, shape (n,)); return the hashes now final."""
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        self.total_samples += block.size
        self._samples = np.concatenate([self._samples, block]) if self._samples.size else block
        end = self._samples_start + n_frames(self._samples.size, self.cfg.window_size, self.cfg.hop_size) \
            if self._samples.size >= self.cfg.window_size else self._samples_start
        final = ((end - self._context) // self._block) * self._block
        if final <= self._final:
            return _empty()
        self._advance(final)
        return self._hash(final - self.cfg.max_hash_time_delta)

    def flush(self) -> Hashes:
        """End of signal: return every remaining hash."""
        if self.total_samples == 0:
            return _empty()
        end = self._samples_start + n_frames(self._samples.size, self.cfg.window_size, self.cfg.hop_size)
        if end > self._final:
            self._advance(end, last=True)
        return self._hash(None)

    def _advance(self, final: int, last: bool = False) -> None:
        """Find the peaks of frames [_final, final) from the buffered samples."""
        cfg = self.cfg
        first = max(self._samples_start, self._final - self._context)
        skip = (first - self._samples_start) * cfg.hop_size
        stop = None if last else (final + self._context - self._samples_start - 1) * cfg.hop_size + cfg.window_size
        power = power_spectrogram(self._samples[skip:stop], cfg.window_size, cfg.hop_size, self._bins)
        frames, bins, _ = find_peaks(power, cfg.neighborhood_time, cfg.neighborhood_freq, cfg.amp_min,
                                     self._block, self._per_block, frame_offset=first)
        keep = (frames >= self._final) & (frames < final)
        self._peak_frames = np.concatenate([self._peak_frames, frames[keep]])
        self._peak_bins = np.concatenate([self._peak_bins, bins[keep] + self._bins[0]])
        self._final = final
        drop = max(0, final - self._context - self._samples_start)
        if not last and drop:
            self._samples = self._samples[drop * cfg.hop_size:]
            self._samples_start += drop

    def _hash(self, limit: int | None) -> Hashes:
        """Hash the buffered anchors of frames < limit (all when limit is None)."""
        cfg = self.cfg
        cut = self._peak_frames.size if limit is None else int(np.searchsorted(self._peak_frames, limit))
        anchors, targets = pair_peaks(self._peak_frames, self._peak_bins, self._fan,
                                      cfg.min_hash_time_delta, cfg.max_hash_time_delta,
                                      cfg.max_hash_freq_delta, n_anchors=cut)
        hashes = hash_pairs(self._peak_frames, self._peak_bins // cfg.freq_quantization, anchors, targets,
                            self._hasher)
        self._peak_frames, self._peak_bins = self._peak_frames[cut:], self._peak_bins[cut:]
        return hashes


def _empty() -> Hashes:
    return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)


def concat(parts: Iterable[Hashes]) -> Hashes:
    """Join (hashes, offsets) pieces into one pair of arrays."""
    parts = [p for p in parts if p[0].size]
    if not parts:
        return _empty()
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def fingerprint_stream(blocks: Iterable[np.ndarray], cfg: FingerprintConfig,
                       query: bool = False) -> Iterator[Hashes]:
    """Fingerprint a signal given as consecutive blocks; yields hashes as they become final."""
    fp = StreamFingerprinter(cfg, query)
    for block in blocks:
        out = fp.feed(block)
        if out[0].size:
            yield out
    yield fp.flush()


def fingerprint(samples: np.ndarray, cfg: FingerprintConfig | None = None,
                query: bool = False) -> Hashes:
    """Fingerprint a whole signal.

    Parameters
    ----------
    samples : np.ndarray [shape=(n,)], float32 mono at ``cfg.sample_rate`` Hz, full scale ±1
    cfg : fingerprint parameters (defaults when None)
    query : use the denser query-side settings

    Returns
    -------
    hashes : np.ndarray [shape=(m,)], int64
    offsets : np.ndarray [shape=(m,)], int32, anchor frame of each hash
    """
    return concat(fingerprint_stream([samples], cfg or FingerprintConfig(), query))

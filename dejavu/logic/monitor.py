"""Continuous monitoring: which known songs play when in a long stream (radio, a recording).

The stream is decoded in small blocks and fingerprinted incrementally
(:class:`~dejavu.logic.fingerprint.StreamFingerprinter`); only the hashes of the
current window are kept, so memory is bounded whatever the length of the input.
Every ``hop`` seconds the last ``window`` seconds of hashes are looked up and aligned.
A song found in consecutive windows at a constant alignment (song time − stream
time, within ``merge_tolerance_seconds``) is one :class:`Segment`; its start and end
are the stream times of the first and last hashes that match at that alignment, so
they do not depend on the window grid.

    for segment in djv.monitor("show.mp3", window=10, hop=5):
        print(segment.start_seconds, segment.end_seconds, segment.song_name)
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from typing import IO, Any, Iterator, Sequence

import numpy as np

from dejavu.config import Config
from dejavu.logic import decoder
from dejavu.logic.fingerprint import StreamFingerprinter
from dejavu.logic.matching import align
from dejavu.logic.microphone import Microphone
from dejavu.logic.results import input_confidence
from dejavu.logic.store import Hits, Store

log = logging.getLogger(__name__)

#: ``source`` value that monitors the configured microphone.
MICROPHONE = "mic"

# Fixed parameters of segment tracking (the tunable ones are in config.MonitorConfig).
#: An aligned hash counts for a segment's span only if, within ± this many seconds, ...
DENSE_SECONDS = 1.0
#: ... at least this many hashes align (a song heard gives ~20-40 per second).
DENSE_HASHES = 8
#: Seconds of hashes kept before the window, to find where a newly seen alignment began, ...
LOOKBACK_SECONDS = 30.0
#: ... walking back through aligned hashes no further apart than this many seconds.
MAX_GAP_SECONDS = 2.0


@dataclass(frozen=True)
class Segment:
    """A known song heard in the stream. Times in seconds."""

    start_seconds: float      # stream time where the song is first heard
    end_seconds: float        # stream time where it is last heard
    song_id: int
    song_name: str
    offset_seconds: float     # position in the song at ``start_seconds``
    confidence: float         # aligned matches / hashes the song stores for that stretch, in [0, 1]
    hashes_matched: int       # query hashes matched at the segment's alignment

    @property
    def duration(self) -> float:
        """Seconds from start to end."""
        return self.end_seconds - self.start_seconds

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return asdict(self)


@dataclass
class _Track:
    """A song heard at one alignment, while it is still open. Times in frames."""

    song_id: int
    shift: int           # song frame − stream frame, of the best window
    last_shift: int      # ... of the latest window (followed for merging)
    best_score: int      # aligned hashes in its best window
    first: int           # stream frame of the first aligned hash
    last: int            # stream frame of the last aligned hash
    matched: int = 0     # aligned query hashes, each counted once
    counted_until: int = 0  # aligned hashes before this stream frame are counted
    windows: int = 0


class Monitor:
    """Sliding-window recognition of a stream fed block by block.

    ``feed(samples)`` takes float32 mono samples at the fingerprint rate
    (``config.fingerprint.sample_rate``) and returns the segments that closed;
    ``flush()`` ends the stream and returns the rest.  ``window``, ``hop`` and
    ``merge_tolerance`` are seconds (None = the ``monitor`` configuration).
    """

    def __init__(self, store: Store, config: Config, window: float | None = None, hop: float | None = None,
                 merge_tolerance: float | None = None) -> None:
        mon = replace(config.monitor, **{k: float(v) for k, v in (
            ("window_seconds", window), ("hop_seconds", hop),
            ("merge_tolerance_seconds", merge_tolerance)) if v is not None})
        mon.validate()
        self.store = store
        self.config = config
        self.fp = fp = config.fingerprint
        self.window = max(1, fp.seconds_to_frames(mon.window_seconds))   # frames
        self.hop = max(1, fp.seconds_to_frames(mon.hop_seconds))         # frames
        self.tolerance = max(1, fp.seconds_to_frames(mon.merge_tolerance_seconds))
        # Hashes of anchors this many frames before the end of the fed audio are final
        # (peak neighbourhood + ~1 s peak-density block + pairing span), with a margin.
        self._lag = fp.neighborhood_time + fp.max_hash_time_delta + 2 * fp.seconds_to_frames(1.0)
        self.min_hashes = mon.min_hashes
        self._dense = fp.seconds_to_frames(DENSE_SECONDS)
        self._lookback = fp.seconds_to_frames(LOOKBACK_SECONDS)
        self._max_gap = fp.seconds_to_frames(MAX_GAP_SECONDS)
        # Frame time → stream time: a frame's energy is centred half a window after its start.
        self._centre = fp.window_size / 2 / fp.sample_rate
        self._fingerprinter = StreamFingerprinter(fp, query=True)
        self._hashes = np.zeros(0, dtype=np.int64)
        self._offsets = np.zeros(0, dtype=np.int64)
        self._next = 0                 # index of the next window
        self._processed_end = 0        # end frame of the last window processed
        self._tracks: list[_Track] = []
        self._recent: list[_Track] = []   # reported tracks that a later one might overlap
        self._songs: dict[int, dict[str, Any]] = {}
        # Stored rows of the last window's distinct hashes, reused where windows overlap.
        self._cached_hashes = np.zeros(0, dtype=np.int64)
        self._cached_hits = (np.zeros(0, dtype=np.int64),) * 3
        self.windows_processed = 0

    # ----------------------------------------------------------------- feeding
    @property
    def position(self) -> float:
        """Seconds of audio fed so far."""
        return self._fingerprinter.total_samples / self.fp.sample_rate

    def _frames_fed(self) -> int:
        return self._fingerprinter.total_samples // self.fp.hop_size

    def feed(self, samples: np.ndarray) -> list["Segment"]:
        """Add float32 mono samples at the fingerprint rate; return the segments closed."""
        self._add(self._fingerprinter.feed(samples))
        closed: list[Segment] = []
        while self._start(self._next) + self.window + self._lag <= self._frames_fed():
            closed += self._process(self._next)
        return closed

    def flush(self) -> list["Segment"]:
        """End of stream: recognize the remaining windows and close every segment."""
        self._add(self._fingerprinter.flush())
        total = self._frames_fed()
        closed: list[Segment] = []
        # Every window that adds audio the previous one did not cover.
        while self._next == 0 or self._start(self._next - 1) + self.window < total:
            if self._start(self._next) >= total:
                break
            closed += self._process(self._next)
        for track in sorted(self._tracks, key=lambda t: t.first):
            closed += self._close(track)
        self._tracks = []
        self._recent = []
        return sorted(closed, key=lambda s: s.start_seconds)

    def _start(self, index: int) -> int:
        return index * self.hop

    def _add(self, hashes: tuple[np.ndarray, np.ndarray]) -> None:
        h, o = hashes
        if not h.size:
            return
        late = int(np.count_nonzero(o < self._processed_end))
        if late:
            log.debug("%d hashes arrived after their window was recognized", late)
        self._hashes = np.concatenate([self._hashes, h.astype(np.int64)])
        self._offsets = np.concatenate([self._offsets, o.astype(np.int64)])

    # ----------------------------------------------------------------- windows
    def _process(self, index: int) -> list["Segment"]:
        """Recognize window ``index``; return the segments that closed with it."""
        start = self._start(index)
        end = start + self.window
        self._next = index + 1
        self._processed_end = end
        self.windows_processed += 1
        inside = (self._offsets >= start) & (self._offsets < end)
        q_h, q_o = self._hashes[inside], self._offsets[inside]
        keep = self._offsets >= self._start(self._next) - self._lookback   # the rest is never needed again
        self._hashes, self._offsets = self._hashes[keep], self._offsets[keep]
        seen: set[int] = set()
        if q_h.size:
            seen = self._match(q_h, q_o, start, end)
        closed: list[Segment] = []
        for track in list(self._tracks):
            # Closed once a window beginning after its last match no longer hears it.
            if id(track) not in seen and track.last < start:
                closed += self._close(track)
                self._tracks.remove(track)
        self._recent = [t for t in self._recent if t.last >= start - 2 * self.window]
        return closed

    def _match(self, q_h: np.ndarray, q_o: np.ndarray, start: int, end: int) -> set[int]:
        """Align one window's hashes; extend or open tracks. Returns ids of tracks heard.

        A song that passes the match decision extends each of its open tracks whose own
        alignment still explains at least half as many hashes as the song's best alignment
        (a repeated passage fits several alignments equally well: continuity wins).  The
        best alignment opens a new track only when no open track of the song continues.
        Other open tracks go on if their alignment still explains ``min_aligned`` hashes.
        """
        hit_h, hit_s, hit_o = self._lookup(q_h)
        if not hit_h.size:
            return set()
        rel = (q_o - start).astype(np.int32)
        candidates = align(q_h, rel, hit_h, hit_s, hit_o, self.config.matching)
        min_aligned = self.config.matching.min_aligned
        seen: set[int] = set()
        for c in candidates:
            shift = c.offset - start          # song frame = stream frame + shift
            best = self._aligned_frames(q_h, q_o, hit_h, hit_s, hit_o, c.song_id, shift)
            log.debug("window %.1f s: song %d shift %d score %d (%d aligned hashes, %d hits, %d hashes)",
                      self.fp.frames_to_seconds(start), c.song_id, shift, c.score, best.size, c.hits, q_h.size)
            if best.size < min_aligned:
                continue
            continued = False
            for track in [t for t in self._tracks if t.song_id == c.song_id]:
                if abs(track.last_shift - shift) <= self.tolerance:
                    frames, track_shift = best, shift
                else:
                    track_shift = track.last_shift
                    frames = self._aligned_frames(q_h, q_o, hit_h, hit_s, hit_o, c.song_id, track_shift)
                if frames.size >= max(min_aligned, best.size // 2):
                    self._extend(track, frames, track_shift, end)
                    seen.add(id(track))
                    continued = True
            if not continued:
                track = _Track(c.song_id, shift, shift, 0, int(best[0]), int(best[-1]), counted_until=start)
                self._tracks.append(track)
                self._extend(track, best, shift, end)
                self._backfill(track, start)
                seen.add(id(track))
                log.debug("window %.1f s: song %d at shift %d (new, from %.1f s)", self.fp.frames_to_seconds(start),
                          c.song_id, shift, self.fp.frames_to_seconds(track.first))
        # An open track needs less evidence to go on than a new song to be declared: windows
        # holding two songs may pass no match decision, yet each song still aligns there.
        for track in self._tracks:
            if id(track) not in seen:
                frames = self._aligned_frames(q_h, q_o, hit_h, hit_s, hit_o, track.song_id, track.last_shift)
                if frames.size >= min_aligned:
                    self._extend(track, frames, track.last_shift, end)
                    seen.add(id(track))
        return seen

    def _lookup(self, q_h: np.ndarray) -> Hits:
        """``store.return_matches(q_h)``, querying only hashes the previous window did not have."""
        wanted = np.unique(q_h)
        known = np.isin(wanted, self._cached_hashes, assume_unique=True)
        c_h, c_s, c_o = self._cached_hits
        reuse = np.isin(c_h, wanted[known])
        new = self.store.return_matches(wanted[~known]) if not known.all() else (c_h[:0], c_s[:0], c_o[:0])
        hits = tuple(np.concatenate([old[reuse], fresh]) for old, fresh in zip(self._cached_hits, new))
        self._cached_hashes, self._cached_hits = wanted, hits
        return hits  # type: ignore[return-value]

    def _backfill(self, track: _Track, start: int) -> None:
        """Extend a new track back into the kept hashes before its first window, through
        the contiguous run of hashes that match its alignment (in looped music a passage
        fits several alignments; the right one may be recognized only after it began)."""
        before = (self._offsets >= start - self._lookback) & (self._offsets < start)
        if not before.any():
            return
        q_h, q_o = self._hashes[before], self._offsets[before]
        hits = self.store.return_matches(q_h, song_ids=[track.song_id])
        frames = self._aligned_frames(q_h, q_o, *hits, track.song_id, track.shift)
        first, added = track.first, 0
        for frame in frames[::-1]:
            if first - frame > self._max_gap:
                break
            first = int(frame)
            added += 1
        track.first, track.matched = first, track.matched + added

    @staticmethod
    def _extend(track: _Track, frames: np.ndarray, shift: int, end: int) -> None:
        """Add a window's aligned hashes (sorted stream frames) to a track."""
        track.first = min(track.first, int(frames[0]))
        track.last = max(track.last, int(frames[-1]))
        track.matched += int(np.count_nonzero(frames >= track.counted_until))
        track.counted_until = max(track.counted_until, end)
        track.last_shift = shift
        if frames.size > track.best_score:
            track.best_score, track.shift = int(frames.size), shift
        track.windows += 1

    def _aligned_frames(self, q_h: np.ndarray, q_o: np.ndarray, hit_h: np.ndarray, hit_s: np.ndarray,
                        hit_o: np.ndarray, song_id: int, shift: int) -> np.ndarray:
        """Sorted stream frames (one per hash) of the query hashes that match ``song_id`` at
        ``shift`` (within the matching tolerance), in dense stretches only: chance matches
        at a given alignment are sparse, a song heard gives many per second."""
        mine = hit_s == song_id
        s_h, s_o = hit_h[mine], hit_o[mine]
        order = np.argsort(q_h, kind="stable")
        qh, qo = q_h[order], q_o[order]
        left = np.searchsorted(qh, s_h, side="left")
        count = np.searchsorted(qh, s_h, side="right") - left
        rows = np.repeat(np.arange(s_h.size), count)
        qidx = np.repeat(left - np.cumsum(count) + count, count) + np.arange(rows.size)
        ok = np.abs(s_o[rows] - qo[qidx] - shift) <= self.config.matching.offset_tolerance
        frames = np.sort(qo[np.unique(qidx[ok])])   # one entry per matching query hash
        around = np.searchsorted(frames, frames + self._dense, side="right") - \
            np.searchsorted(frames, frames - self._dense, side="left")
        return frames[around >= DENSE_HASHES]

    # ----------------------------------------------------------------- segments
    def _close(self, track: _Track) -> list["Segment"]:
        """The segment of a track that ended, or nothing if it has too little evidence or
        lies mostly inside a stronger track of the same song (a repeated passage matched
        at the wrong place)."""
        for other in self._tracks + self._recent:
            overlap = min(track.last, other.last) - max(track.first, other.first)
            if other is not track and other.song_id == track.song_id and other.matched > track.matched \
                    and overlap > (track.last - track.first) / 2:
                log.debug("dropped song %d at shift %d (%d hashes): overlaps shift %d (%d hashes)",
                          track.song_id, track.shift, track.matched, other.shift, other.matched)
                return []
        if track.matched < self.min_hashes:
            log.debug("dropped song %d at shift %d: %d hashes", track.song_id, track.shift, track.matched)
            return []
        self._recent.append(track)
        song = self._song(track.song_id)
        if song is None:
            return []
        start = self.fp.frames_to_seconds(track.first) + self._centre
        # The last aligned anchor is followed by its paired peak(s) before the song ends.
        end = self.fp.frames_to_seconds(track.last) + self._centre + self._pair_span()
        segment = Segment(
            start_seconds=round(start, 2), end_seconds=round(end, 2), song_id=track.song_id,
            song_name=str(song["song_name"]),
            offset_seconds=round(max(0.0, self.fp.frames_to_seconds(track.first + track.shift)), 3),
            confidence=input_confidence(track.matched, song, end - start),
            hashes_matched=track.matched)
        log.debug("closed %s (%d windows, best %d)", segment, track.windows, track.best_score)
        return [segment]

    def _pair_span(self) -> float:
        """Typical seconds between a hash's anchor and its paired peak (stored side)."""
        fp = self.fp
        return min(fp.frames_to_seconds(fp.max_hash_time_delta), (fp.fan_value + 1) / 2 / fp.peaks_per_second)

    def _song(self, song_id: int) -> dict[str, Any] | None:
        if song_id not in self._songs:
            self._songs.update(self.store.get_songs_by_ids([song_id]))
        return self._songs.get(song_id)


def monitor(store: Store, config: Config, source: str, window: float | None = None, hop: float | None = None,
            *, input_args: Sequence[str] = (), stdin: IO[bytes] | None = None) -> Iterator[Segment]:
    """Yield the :class:`Segment` of each known song in ``source`` as soon as it ends.

    ``source`` is a file path, a URL ffmpeg opens, ``"-"`` (standard input, or
    ``stdin``; ``input_args`` such as ``["-f", "s16le", "-ar", "44100", "-ac", "2"]``
    describe raw PCM) or ``"mic"`` (the configured microphone, until interrupted).
    ``window``/``hop`` are seconds (None = the ``monitor`` configuration).
    Raises DecodeError / AudioDeviceError if the source cannot be read.
    """
    mon = Monitor(store, config, window, hop)
    rate = config.fingerprint.sample_rate
    if source == MICROPHONE:
        blocks = Microphone(config.microphone).blocks(rate)
    else:
        blocks = decoder.stream(source, rate, block_seconds=decoder.STREAM_BLOCK_SECONDS,
                                input_args=input_args, stdin=stdin)
    interrupted = False
    try:
        for block in blocks:
            yield from mon.feed(block)
    except KeyboardInterrupt:   # report what was heard up to the interruption
        interrupted = True
    finally:
        blocks.close()
    yield from mon.flush()
    log.debug("monitored %.1f s in %d windows", mon.position, mon.windows_processed)
    if interrupted:
        raise KeyboardInterrupt

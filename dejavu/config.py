"""Every tunable parameter of dejavu, with defaults and validation, in one place.

A user configuration is the original dejavu's JSON object::

    {"database_type": "sqlite", "database": {"path": "fp.db"},
     "fingerprint_limit": null,
     "fingerprint": {"fan_value": 10},          # optional overrides
     "matching": {"topn": 2},                   # optional overrides
     "microphone": {"device": null, "channels": 1},
     "monitor": {"window_seconds": 10, "hop_seconds": 5}}

`load_config` turns it into a validated :class:`Config`; unknown keys inside the
``fingerprint``, ``matching``, ``microphone`` and ``monitor`` sections, wrong types and
impossible values raise :class:`~dejavu.exceptions.ConfigError` naming the key.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, NamedTuple

from dejavu.exceptions import ConfigError
from dejavu.quoting import quote

#: Database file used when no configuration names one.
DEFAULT_SQLITE_PATH = "dejavu.db"

#: Environment variables that override the configuration file.
ENV_DATABASE_URL = "DEJAVU_DATABASE_URL"
ENV_DATABASE_PASSWORD = "DEJAVU_DATABASE_PASSWORD"

DATABASE_TYPES = ("sqlite", "mysql", "postgres")
#: Fingerprint settings used only when querying (a store does not depend on them).
QUERY_SIDE = ("query_peaks_per_second", "query_fan_value")
#: Values of ``fingerprint.key`` (the classes are in dejavu.logic.hashing).
KEY_KINDS = ("packed", "sha1")
_TYPE_ALIASES = {"postgresql": "postgres", "mariadb": "mysql", "sqlite3": "sqlite"}

log = logging.getLogger(__name__)

#: Top-level keys of a configuration; any other is kept in ``Config.raw`` with a warning
#: naming the closest of these.  A new section adds its name here.
KNOWN_KEYS = ("database_type", "database", "fingerprint_limit", "fingerprint", "matching", "microphone",
              "monitor", "server", "strict_decoding")
#: An unknown key this close (one edit) to one of these is refused: the data would go elsewhere.
GUARDED_KEYS = ("database_type", "database")


class Range(NamedTuple):
    """The finite range a numeric setting must lie in (inclusive)."""

    lo: float
    hi: float
    integer: bool = True
    unit: str = ""

    def describe(self) -> str:
        """E.g. "an integer in 1..100" or "a number in 0..1 s"."""
        lo, hi = (int(x) if float(x).is_integer() else x for x in (self.lo, self.hi))
        return f"{'an integer' if self.integer else 'a number'} in {lo}..{hi}{' ' + self.unit if self.unit else ''}"


#: ``section.key`` → its range, checked at load for every numeric setting (README, Configuration,
#: lists them).  Relations between settings (hop_size ≤ window_size, ...) are checked after.
RANGES: dict[str, Range] = {
    "fingerprint_limit": Range(-1, 1e6, False, "s"),
    "fingerprint.sample_rate": Range(4000, 48000, True, "Hz"),
    "fingerprint.window_size": Range(64, 65536, True, "samples, a power of two"),
    "fingerprint.hop_size": Range(1, 65536, True, "samples, at most window_size"),
    "fingerprint.freq_min_hz": Range(0, 24000, False, "Hz"),
    "fingerprint.freq_max_hz": Range(1, 24000, False, "Hz, above freq_min_hz"),
    "fingerprint.amp_min": Range(-200, 0, False, "dBFS"),
    "fingerprint.neighborhood_freq": Range(1, 256, True, "bins"),
    "fingerprint.neighborhood_time": Range(1, 256, True, "frames"),
    "fingerprint.peaks_per_second": Range(1, 500, False),
    "fingerprint.fan_value": Range(1, 100),
    "fingerprint.query_peaks_per_second": Range(1, 500, False),
    "fingerprint.query_fan_value": Range(1, 100),
    "fingerprint.freq_quantization": Range(1, 64, True, "bins"),
    "fingerprint.min_hash_time_delta": Range(0, 1023, True, "frames"),
    "fingerprint.max_hash_time_delta": Range(1, 1023, True, "frames, at least min_hash_time_delta"),
    "fingerprint.max_hash_freq_delta": Range(1, 4096, True, "bins"),
    "matching.topn": Range(1, 1000),
    "matching.min_aligned": Range(1, 100_000, True, "hashes"),
    "matching.min_aligned_share": Range(0, 1, False),
    "matching.margin_ratio": Range(1, 10, False),
    "matching.min_margin": Range(0, 100_000, True, "hashes"),
    "matching.chance_songs": Range(1, 100, True, "songs"),
    "matching.offset_tolerance": Range(0, 10, True, "frames"),
    "matching.row_budget": Range(0, 1e9, True, "rows (0: no limit)"),
    "matching.speed_factors": Range(0.8, 1.25, False, "(each)"),
    "matching.speed_search_max_seconds": Range(0, 3600, False, "s"),
    "microphone.sample_rate": Range(8000, 192000, True, "Hz"),
    "microphone.channels": Range(1, 2),
    "microphone.chunk_size": Range(64, 65536, True, "frames"),
    "monitor.window_seconds": Range(2, 600, False, "s"),
    "monitor.hop_seconds": Range(0.5, 600, False, "s, at most window_seconds"),
    "monitor.merge_tolerance_seconds": Range(0.01, 5, False, "s"),
    "monitor.min_hashes": Range(1, 100_000, True, "hashes"),
}


def check_number(key: str, value: Any, rng: Range | None = None) -> None:
    """Raise ConfigError naming ``key``, ``value`` and the range unless ``value`` is a finite
    number (an integer where one is needed) inside ``rng`` (default ``RANGES[key]``)."""
    rng = rng or RANGES[key]
    kinds = int if rng.integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) \
            or (isinstance(value, float) and not math.isfinite(value)) or not rng.lo <= value <= rng.hi:
        raise ConfigError(f"{key} must be {rng.describe()}, got {value!r}")


def _check_ranges(section: Any, name: str) -> None:
    """check_number for every field of ``section`` that has a range."""
    for f in fields(section):
        key = f"{name}.{f.name}"
        if key in RANGES:
            values = getattr(section, f.name)
            for value in values if isinstance(values, tuple) else (values,):
                check_number(key, value)


@dataclass(frozen=True)
class FingerprintConfig:
    """Parameters of decode → spectrogram → peaks → hashes.

    Units are given per field; ``frames`` are spectrogram columns of ``hop_size``
    samples at ``sample_rate``.
    """

    sample_rate: int = 11025          # Hz; every input is resampled to this rate, mono
    window_size: int = 1024           # samples per FFT frame (Hann window)
    hop_size: int = 256               # samples between frames (≈ 23.2 ms)
    freq_min_hz: float = 100.0        # peaks below are ignored (rumble, hum)
    freq_max_hz: float = 5000.0       # peaks above are ignored
    amp_min: float = -70.0            # dBFS a peak needs at least (full-scale sine = 0)
    neighborhood_freq: int = 5        # peak must be the maximum over ±bins ...
    neighborhood_time: int = 3        # ... and ±frames
    peaks_per_second: float = 18.0    # density cap: strongest peaks kept per second (stored)
    fan_value: int = 5                # targets paired with each anchor peak (stored)
    query_peaks_per_second: float = 40.0  # denser peaks on the query side ...
    query_fan_value: int = 20         # ... and more pairs, so more stored pairs are found
    freq_quantization: int = 1        # bins per hashed frequency step (2 absorbs ±1-bin jitter but
                                      # makes hashes 4x less specific: slower, more chance hits)
    min_hash_time_delta: int = 1      # frames, inclusive
    max_hash_time_delta: int = 63     # frames, inclusive (≈ 1.46 s)
    max_hash_freq_delta: int = 120    # bins, |f2 - f1|
    key: str = "packed"               # pair → key: "packed" (f1, f2 - f1, dt bit fields, 23 bits) or
                                      # "sha1" (the original's SHA1 of "f1|f2|dt", 64 bits)

    @property
    def frame_seconds(self) -> float:
        """Duration of one hop in seconds (the unit of offsets)."""
        return self.hop_size / self.sample_rate

    def frames_to_seconds(self, frames: Any) -> Any:
        """Frames (a number or a numpy array) → seconds: the one conversion of offsets."""
        return frames * self.frame_seconds

    def seconds_to_frames(self, seconds: float) -> int:
        """Seconds → whole frames (rounded to nearest)."""
        return int(round(seconds / self.frame_seconds))

    def stored_settings(self) -> dict[str, Any]:
        """``fingerprint.<name>`` → value of every setting that changes stored keys (all but
        the query-side density): a store records them and refuses other values."""
        return {f"fingerprint.{f.name}": getattr(self, f.name) for f in fields(self) if f.name not in QUERY_SIDE}

    def validate(self) -> None:
        """Raise ConfigError if the parameters cannot work together."""
        if self.key not in KEY_KINDS:
            raise ConfigError(f"fingerprint.key must be one of {', '.join(KEY_KINDS)}, got {self.key!r}")
        _check_ranges(self, "fingerprint")
        if self.window_size & (self.window_size - 1):
            raise ConfigError(f"fingerprint.window_size must be a power of two, got {self.window_size}")
        if self.hop_size > self.window_size:
            raise ConfigError(f"fingerprint.hop_size must be at most window_size ({self.window_size}), "
                              f"got {self.hop_size}")
        if self.freq_min_hz >= self.freq_max_hz:
            raise ConfigError(f"fingerprint.freq_min_hz must be below freq_max_hz ({self.freq_max_hz:g}), "
                              f"got {self.freq_min_hz:g}")
        if self.min_hash_time_delta > self.max_hash_time_delta:
            raise ConfigError(f"fingerprint.max_hash_time_delta must be at least min_hash_time_delta "
                              f"({self.min_hash_time_delta}), got {self.max_hash_time_delta}")


@dataclass(frozen=True)
class MatchingConfig:
    """Parameters of offset alignment and the no-match decision.

    How many songs a budgeted search verifies is a named constant of :mod:`dejavu.logic.search`
    (``CANDIDATE_SONGS``); the stricter rule of extra tries is :func:`dejavu.logic.matching.stricter`.
    """

    topn: int = 2                     # results returned at most
    min_aligned: int = 12             # aligned hash matches a result needs at least, and at
    min_aligned_share: float = 0.004  # least this share of the query's hashes (long queries) ...
    margin_ratio: float = 1.8         # ... and at least margin_ratio × the chance level ...
    min_margin: int = 3               # ... plus min_margin, where the chance level is
    chance_songs: int = 5             # the mean score of this many next-best songs
    offset_tolerance: int = 1         # frames; offsets this close vote together
    quick_pass: bool = True           # false: read every row of every query key (no row_budget)
    row_budget: int = 150_000         # a query whose keys find more stored rows reads only its
                                      # rarest keys' rows up to this, then verifies the songs they
                                      # nominate with every key (0 = no limit: every row is read)
    speed_search: bool = True         # retry with stretch factors when nothing matches ...
    speed_factors: tuple[float, ...] = (0.97, 1.03, 0.98, 1.02, 0.96, 1.04)
    speed_search_max_seconds: float = 60.0  # ... for file queries up to this long

    def validate(self) -> None:
        _check_ranges(self, "matching")
        for name in ("quick_pass", "speed_search"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"matching.{name} must be true or false, got {getattr(self, name)!r}")
        if len(self.speed_factors) > 20:
            raise ConfigError(f"matching.speed_factors must list at most 20 factors, got {len(self.speed_factors)}")


@dataclass(frozen=True)
class MicrophoneConfig:
    """Recording from an audio input device (PyAudio)."""

    device: int | str | None = None   # None = default input; int = device index; str = name substring
    sample_rate: int = 44100          # Hz requested from the device
    channels: int = 1                 # 1 or 2 (falls back to 1 if the device refuses 2)
    chunk_size: int = 2048            # frames per read

    def validate(self) -> None:
        if self.device is not None and (isinstance(self.device, bool)
                                        or not isinstance(self.device, (int, str))):
            raise ConfigError("microphone.device must be null, a device index or a name substring, "
                              f"got {self.device!r}")
        if isinstance(self.device, int) and not 0 <= self.device <= 1023:
            raise ConfigError(f"microphone.device must be a device index in 0..1023, got {self.device!r}")
        if isinstance(self.device, str) and not self.device.strip():
            raise ConfigError("microphone.device must not be an empty name")
        _check_ranges(self, "microphone")


@dataclass(frozen=True)
class MonitorConfig:
    """Continuous monitoring: a window slid over a stream, windows merged into segments.

    How dense aligned hashes must be to count for a segment and how far a new segment
    is traced back are named constants of :mod:`dejavu.logic.monitor` (``DENSE_SECONDS``,
    ``DENSE_HASHES``, ``LOOKBACK_SECONDS``, ``MAX_GAP_SECONDS``).
    """

    window_seconds: float = 10.0      # audio recognized at a time
    hop_seconds: float = 5.0          # step between windows (<= window_seconds)
    merge_tolerance_seconds: float = 0.5  # windows of a song join if (song − source) time moves less
    min_hashes: int = 80              # matched hashes a segment needs (chance alignments reach ~40)

    def validate(self) -> None:
        _check_ranges(self, "monitor")
        if self.hop_seconds > self.window_seconds:
            raise ConfigError(f"monitor.hop_seconds must be at most window_seconds ({self.window_seconds:g}), "
                              f"got {self.hop_seconds:g}")


@dataclass(frozen=True)
class Config:
    """A validated dejavu configuration."""

    database_type: str = "sqlite"
    database: Mapping[str, Any] = field(default_factory=lambda: {"path": DEFAULT_SQLITE_PATH})
    fingerprint_limit: float | None = None   # seconds from the start; None = whole file
    strict_decoding: bool = False            # refuse files decoded short of their declared length
                                             # or with decoder errors (else: stored, with a warning)
    fingerprint: FingerprintConfig = field(default_factory=FingerprintConfig)
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    microphone: MicrophoneConfig = field(default_factory=MicrophoneConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    raw: Mapping[str, Any] = field(default_factory=dict)  # the user's dict, unchanged


def _section(cls: type, raw: Any, name: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"'{name}' must be a JSON object")
    known = {f.name: f for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown key '{name}.{key}' (known: {', '.join(sorted(known))})")
    values = dict(raw)
    if "speed_factors" in values:
        if not isinstance(values["speed_factors"], (list, tuple)):
            raise ConfigError(f"'{name}.speed_factors' must be a list of numbers")
        values["speed_factors"] = tuple(values["speed_factors"])
    section = replace(cls(), **values)
    section.validate()
    return section


def _database_from_url(url: str) -> tuple[str, dict[str, Any]]:
    """Parse ``postgresql://user:pw@host:port/db``, ``mysql://…`` or ``sqlite:///path``."""
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in 0..65535)
    except ValueError as exc:  # the URL may hold a password: not echoed
        raise ConfigError(f"the database URL is not valid ({exc}); expected e.g. "
                          "postgresql://user:password@host:5432/database or sqlite:///path") from None
    scheme = _TYPE_ALIASES.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme not in DATABASE_TYPES:
        raise ConfigError(f"database URL scheme '{parts.scheme}' is not one of "
                          "postgresql://, mysql://, sqlite:///")
    if scheme == "sqlite":
        return scheme, {"path": unquote(parts.path[1:]) or DEFAULT_SQLITE_PATH}
    db: dict[str, Any] = {"host": parts.hostname or "127.0.0.1",
                          "database": unquote(parts.path.lstrip("/")) or "dejavu"}
    if parts.port:
        db["port"] = parts.port
    if parts.username:
        db["user"] = unquote(parts.username)
    if parts.password:
        db["password"] = unquote(parts.password)
    return scheme, db


def _one_edit_apart(a: str, b: str) -> bool:
    """True if ``a`` becomes ``b`` by one inserted, deleted, replaced or swapped character."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        swapped = a[i + 1:i + 2] == b[i:i + 1] and a[i:i + 1] == b[i + 1:i + 2] and a[i + 2:] == b[i + 2:]
        return a[i + 1:] == b[i + 1:] or swapped
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    return longer[i + 1:] == shorter[i:]


def _check_top_level_keys(raw: Mapping[str, Any]) -> None:
    """Warn about each unknown top-level key, naming the closest known one; refuse a key one
    edit away from a :data:`GUARDED_KEYS` key (a typo there silently stores elsewhere)."""
    for key in raw:
        if key in KNOWN_KEYS:
            continue
        guarded = [k for k in GUARDED_KEYS if _one_edit_apart(str(key), k) and k not in raw]
        if guarded:
            raise ConfigError(f"unknown key {key!r}: did you mean {guarded[0]!r}? (refused: the data would "
                              "go to another database)")
        import difflib  # only for a key that is not known

        close = difflib.get_close_matches(str(key), KNOWN_KEYS, n=1, cutoff=0.6)
        log.warning("configuration: unknown top-level key %r ignored%s", key,
                    f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(KNOWN_KEYS)})")


def load_config(raw: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None) -> Config:
    """Validate a user configuration dict (the original's shape) into a Config.

    Without ``database_type`` the original meant MySQL; that is kept when the
    ``database`` section names a server (``host``/``user``), otherwise the embedded
    SQLite store is used.  ``DEJAVU_DATABASE_URL`` replaces the database settings and
    ``DEJAVU_DATABASE_PASSWORD`` the password.
    """
    environ = os.environ if environ is None else environ
    if raw is None:
        raw = {}
    if isinstance(raw, Config):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError("the configuration must be a JSON object")
    _check_top_level_keys(raw)
    db_type = raw.get("database_type")
    if db_type is not None and not isinstance(db_type, str):
        raise ConfigError("'database_type' must be a string")
    database = raw.get("database") or {}
    if isinstance(database, Mapping) and "url" in database:
        database = str(database["url"])
    if isinstance(database, str):
        db_type, database = _database_from_url(database)
    elif not isinstance(database, Mapping):
        raise ConfigError("'database' must be a JSON object or a URL string")
    else:
        database = dict(database)
        if db_type is None:  # the original's default was MySQL
            db_type = "mysql" if {"host", "user", "db", "database"} & set(database) else "sqlite"
    if environ.get(ENV_DATABASE_URL):
        db_type, database = _database_from_url(environ[ENV_DATABASE_URL])
    db_type = _TYPE_ALIASES.get(str(db_type).lower(), str(db_type).lower())
    if db_type not in DATABASE_TYPES:
        raise ConfigError(f"unknown database_type '{db_type}' (use one of: {', '.join(DATABASE_TYPES)})")
    if environ.get(ENV_DATABASE_PASSWORD) and db_type != "sqlite":
        database["password"] = environ[ENV_DATABASE_PASSWORD]
    if db_type == "sqlite":
        database.setdefault("path", DEFAULT_SQLITE_PATH)

    limit = raw.get("fingerprint_limit")
    if limit is not None:
        check_number("fingerprint_limit", limit)
        if limit <= 0:          # -1 (and 0) mean "whole file", as in the original
            limit = None
    strict = raw.get("strict_decoding", False)
    if not isinstance(strict, bool):
        raise ConfigError(f"'strict_decoding' must be true or false, got {strict!r}")
    return Config(database_type=db_type, database=database, fingerprint_limit=limit, strict_decoding=strict,
                  fingerprint=_section(FingerprintConfig, raw.get("fingerprint"), "fingerprint"),
                  matching=_section(MatchingConfig, raw.get("matching"), "matching"),
                  microphone=_section(MicrophoneConfig, raw.get("microphone"), "microphone"),
                  monitor=_section(MonitorConfig, raw.get("monitor"), "monitor"),
                  raw=dict(raw))


def read_config_file(path: str) -> Config:
    """Read and validate a JSON configuration file."""
    raw = read_config_json(path)
    try:
        return load_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{quote(path)}: {exc}") from None


def read_config_json(path: str) -> Any:
    """The JSON of a configuration file, not validated (ConfigError if unreadable or not JSON)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {quote(path)}: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{quote(path)}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    return raw

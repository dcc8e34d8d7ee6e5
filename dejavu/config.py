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
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from dejavu.exceptions import ConfigError

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
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "key":
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ConfigError(f"fingerprint.{f.name} must be a number, got {value!r}")
            if f.type == "int" and not isinstance(value, int):
                raise ConfigError(f"fingerprint.{f.name} must be an integer, got {value!r}")
        if not 4000 <= self.sample_rate <= 48000:
            raise ConfigError("fingerprint.sample_rate must lie in 4000..48000 Hz")
        if self.window_size < 64 or self.window_size & (self.window_size - 1):
            raise ConfigError("fingerprint.window_size must be a power of two >= 64")
        if not 1 <= self.hop_size <= self.window_size:
            raise ConfigError("fingerprint.hop_size must lie in 1..window_size")
        if not 0 <= self.freq_min_hz < self.freq_max_hz:
            raise ConfigError("fingerprint.freq_min_hz must be below freq_max_hz")
        for name in ("neighborhood_freq", "neighborhood_time", "fan_value", "query_fan_value", "freq_quantization",
                     "min_hash_time_delta", "max_hash_freq_delta"):
            if getattr(self, name) < (0 if name == "min_hash_time_delta" else 1):
                raise ConfigError(f"fingerprint.{name} is out of range")
        if not self.min_hash_time_delta <= self.max_hash_time_delta < 2**10:
            raise ConfigError("fingerprint.max_hash_time_delta must lie in min_hash_time_delta..1023")
        if self.peaks_per_second <= 0 or self.query_peaks_per_second <= 0:
            raise ConfigError("fingerprint.peaks_per_second and query_peaks_per_second must be positive")


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
    row_budget: int = 50_000          # a query whose keys find more stored rows reads only its
                                      # rarest keys' rows up to this, then verifies the songs they
                                      # nominate with every key (0 = no limit: every row is read)
    speed_search: bool = True         # retry with stretch factors when nothing matches ...
    speed_factors: tuple[float, ...] = (0.97, 1.03, 0.98, 1.02, 0.96, 1.04)
    speed_search_max_seconds: float = 60.0  # ... for file queries up to this long

    def validate(self) -> None:
        if not isinstance(self.topn, int) or self.topn < 1:
            raise ConfigError("matching.topn must be an integer >= 1")
        if not isinstance(self.min_aligned, int) or self.min_aligned < 1:
            raise ConfigError("matching.min_aligned must be an integer >= 1")
        if not isinstance(self.min_margin, int) or self.min_margin < 0:
            raise ConfigError("matching.min_margin must be an integer >= 0")
        if not isinstance(self.margin_ratio, (int, float)) or not 1.0 <= self.margin_ratio <= 10.0:
            raise ConfigError("matching.margin_ratio must be a number in 1..10")
        if not isinstance(self.min_aligned_share, (int, float)) or not 0 <= self.min_aligned_share <= 1:
            raise ConfigError("matching.min_aligned_share must be a number in 0..1")
        if isinstance(self.row_budget, bool) or not isinstance(self.row_budget, int) \
                or not 0 <= self.row_budget <= 10**9:
            raise ConfigError("matching.row_budget must be an integer in 0..1000000000 rows (0: no limit)")
        if not isinstance(self.chance_songs, int) or not 1 <= self.chance_songs <= 100:
            raise ConfigError("matching.chance_songs must be an integer in 1..100")
        if not isinstance(self.offset_tolerance, int) or not 0 <= self.offset_tolerance <= 10:
            raise ConfigError("matching.offset_tolerance must be an integer in 0..10")
        for name in ("quick_pass", "speed_search"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"matching.{name} must be true or false")
        if not isinstance(self.speed_search_max_seconds, (int, float)) or self.speed_search_max_seconds < 0:
            raise ConfigError("matching.speed_search_max_seconds must be a number of seconds >= 0")
        if any(not isinstance(s, (int, float)) or not 0.8 <= s <= 1.25 for s in self.speed_factors):
            raise ConfigError("matching.speed_factors must be numbers in 0.8..1.25")


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
        if isinstance(self.device, int) and self.device < 0:
            raise ConfigError("microphone.device must be a device index >= 0")
        if isinstance(self.device, str) and not self.device.strip():
            raise ConfigError("microphone.device must not be an empty name")
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int) \
                or not 8000 <= self.sample_rate <= 192000:
            raise ConfigError("microphone.sample_rate must be an integer in 8000..192000 Hz")
        if self.channels not in (1, 2) or isinstance(self.channels, bool):
            raise ConfigError("microphone.channels must be 1 or 2")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) \
                or not 64 <= self.chunk_size <= 65536:
            raise ConfigError("microphone.chunk_size must be an integer in 64..65536 frames")


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
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"monitor.{f.name} must be a number, got {value!r}")
        if not isinstance(self.min_hashes, int) or self.min_hashes < 1:
            raise ConfigError("monitor.min_hashes must be an integer >= 1")
        if not 2.0 <= self.window_seconds <= 600.0:
            raise ConfigError("monitor.window_seconds must lie in 2..600 s")
        if not 0.5 <= self.hop_seconds <= self.window_seconds:
            raise ConfigError("monitor.hop_seconds must lie in 0.5..window_seconds")
        if not 0.0 < self.merge_tolerance_seconds <= 5.0:
            raise ConfigError("monitor.merge_tolerance_seconds must lie in (0, 5] s")


@dataclass(frozen=True)
class Config:
    """A validated dejavu configuration."""

    database_type: str = "sqlite"
    database: Mapping[str, Any] = field(default_factory=lambda: {"path": DEFAULT_SQLITE_PATH})
    fingerprint_limit: float | None = None   # seconds from the start; None = whole file
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

    parts = urlsplit(url)
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
        if isinstance(limit, bool) or not isinstance(limit, (int, float)):
            raise ConfigError(f"'fingerprint_limit' must be a number of seconds or null, got {limit!r}")
        if limit <= 0:          # -1 (and 0) mean "whole file", as in the original
            limit = None
    return Config(database_type=db_type, database=database, fingerprint_limit=limit,
                  fingerprint=_section(FingerprintConfig, raw.get("fingerprint"), "fingerprint"),
                  matching=_section(MatchingConfig, raw.get("matching"), "matching"),
                  microphone=_section(MicrophoneConfig, raw.get("microphone"), "microphone"),
                  monitor=_section(MonitorConfig, raw.get("monitor"), "monitor"),
                  raw=dict(raw))


def read_config_file(path: str) -> Config:
    """Read and validate a JSON configuration file."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror or exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    try:
        return load_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None

"""The ``server`` section of the JSON configuration: token and per-request limits.

    {"database_type": "sqlite", "database": {"path": "fp.db"},
     "server": {"token": "s3cret", "max_upload_bytes": 8388608, "max_audio_seconds": 30}}

``DEJAVU_SERVER_TOKEN`` overrides ``server.token``.  Without a token the write routes
(POST/DELETE /v1/songs) answer 403.  Unknown keys and impossible values raise
:class:`~dejavu.exceptions.ConfigError` naming the key, as the rest of the configuration.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from dejavu.config import Range, check_number
from dejavu.exceptions import ConfigError

#: Environment variable holding the bearer token (overrides ``server.token``).
ENV_SERVER_TOKEN = "DEJAVU_SERVER_TOKEN"

#: The range of each numeric setting.
_RANGES: dict[str, Range] = {
    "max_upload_bytes": Range(1024, 2**31, True, "bytes"),
    "max_song_bytes": Range(1024, 2**33, True, "bytes"),
    "max_audio_seconds": Range(1.0, 600.0, False, "s"),
    "max_song_seconds": Range(1.0, 36000.0, False, "s"),
    "decode_timeout_seconds": Range(0.5, 3600.0, False, "s"),
    "max_stream_seconds": Range(1.0, 86400.0, False, "s"),
    "max_frame_bytes": Range(256, 2**24, True, "bytes"),
    "page_size_max": Range(1, 10000, True, "songs"),
}


@dataclass(frozen=True)
class ServerSettings:
    """Settings of ``dejavu serve``. Sizes in bytes, times in seconds."""

    token: str | None = None              # bearer token for writes (and reads with protect_reads)
    protect_reads: bool = False           # true: every /v1 route needs the token
    max_upload_bytes: int = 8 * 2**20     # body of a recognition request (413 beyond)
    max_song_bytes: int = 200 * 2**20     # body of POST /v1/songs
    max_audio_seconds: float = 30.0       # audio of a query decoded at most (the rest is ignored)
    max_song_seconds: float = 1800.0      # audio of an uploaded song fingerprinted at most
    decode_timeout_seconds: float = 20.0  # ffmpeg is killed after this (422)
    max_stream_seconds: float = 3600.0    # audio one WebSocket session may send
    max_frame_bytes: int = 2**20          # one WebSocket PCM frame
    page_size_max: int = 1000             # songs per page of GET /v1/songs

    def validate(self) -> None:
        """Raise ConfigError naming the first impossible value."""
        if self.token is not None and (not isinstance(self.token, str) or not self.token.strip()):
            raise ConfigError("server.token must be a non-empty string or null")
        if not isinstance(self.protect_reads, bool):
            raise ConfigError("server.protect_reads must be true or false")
        for name, rng in _RANGES.items():
            check_number(f"server.{name}", getattr(self, name), rng)
        if self.protect_reads and self.token is None:
            raise ConfigError(f"server.protect_reads needs a token (server.token or {ENV_SERVER_TOKEN})")


def server_settings(raw: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> ServerSettings:
    """The validated ``server`` section of the user's configuration dict ``raw``."""
    environ = os.environ if environ is None else environ
    section = raw.get("server") or {}
    if not isinstance(section, Mapping):
        raise ConfigError("'server' must be a JSON object")
    known = {f.name for f in fields(ServerSettings)}
    for key in section:
        if key not in known:
            raise ConfigError(f"unknown key 'server.{key}' (known: {', '.join(sorted(known))})")
    settings = replace(ServerSettings(), **section)
    if environ.get(ENV_SERVER_TOKEN):
        settings = replace(settings, token=environ[ENV_SERVER_TOKEN])
    settings.validate()
    return settings

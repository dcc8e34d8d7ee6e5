"""Errors dejavu raises; each message is one line that names the file or key at fault."""


class DejavuError(Exception):
    """Base class of every error dejavu raises on purpose."""


class ConfigError(DejavuError):
    """The configuration is missing, malformed or names impossible values."""


class DecodeError(DejavuError):
    """An input could not be decoded as audio (the message names the file and why)."""


class DatabaseError(DejavuError):
    """The database could not be reached or refused an operation."""


class DatabaseUnavailableError(DatabaseError):
    """The database server cannot be reached, or the connection to it was lost;
    nothing of the failed transaction was stored, and trying again later may succeed."""


class NoRecordingError(DejavuError):
    """recognize_recording() was called before anything was recorded."""


class AudioDeviceError(DejavuError):
    """No usable audio input device (or PyAudio/PortAudio is missing)."""


class EvaluationError(DejavuError):
    """The evaluation cannot run as asked (the message is one line)."""

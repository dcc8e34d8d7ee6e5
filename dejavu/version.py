"""The version of dejavu, in one place (pyproject.toml reads it from this file)."""

__version__ = "1.0.0"

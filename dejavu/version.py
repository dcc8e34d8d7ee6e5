"""The version of dejavu, in one place (setup.py reads it from this file)."""

__version__ = "1.0.0"

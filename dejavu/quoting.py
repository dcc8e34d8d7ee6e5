"""File names in messages: one way to quote them, so that any name stays on one line.

``quote("a\\nb.mp3")`` → ``'a\\\\nb.mp3'``: Python's string quoting (control characters
escaped, printable Unicode kept as is), with the undecodable bytes of a non-UTF-8 name
(surrogate escapes) shown as ``\\xNN``.
"""
from __future__ import annotations

import os
import re

_ESCAPED_BYTE = re.compile(r"\\udc([89a-f][0-9a-f])")


def quote(name: str | bytes | os.PathLike) -> str:
    """``name`` (a path or any user-given text) quoted for a one-line message."""
    text = os.fsdecode(name) if isinstance(name, (bytes, os.PathLike)) else str(name)
    return _ESCAPED_BYTE.sub(r"\\x\1", repr(text))

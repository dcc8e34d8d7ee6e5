"""What the embedded store needs of its filesystem: free space, and whether it may write.

* **A full disk.**  SQLite in WAL mode cannot even open a store without a few pages for its
  ``-shm`` and ``-wal`` files, so a store on a full disk could neither be listed nor have a
  song deleted.  On a full disk the store is opened read-only (listing and queries work),
  and each store keeps a small reserve file (:data:`RESERVE_BYTES`), ``<path>-reserve``
  beside it, given up to let a delete through and taken again once there is room.  Writes
  that cannot fit are one line saying how much space they need and how much there is.
* **Read-only storage.**  A store on a read-only mount, or in a directory this process may
  not write, is opened read-only (no side files are created): it can be listed and
  queried, and a write is refused with one line saying it is read-only.
"""
from __future__ import annotations

import errno
import logging
import os
import sqlite3

log = logging.getLogger(__name__)

#: Bytes kept in reserve beside a store for its catalogue's side files on a full disk.
RESERVE_BYTES = 1 << 20
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: Why a store on a full disk is read-only.
DISK_FULL = "the disk is full"


def free_bytes(directory: str) -> int:
    """Bytes this process may still write in ``directory``'s filesystem."""
    try:
        info = os.statvfs(directory)
    except OSError:
        return 0
    return info.f_bavail * info.f_frsize


def read_only_reason(directory: str) -> str | None:
    """Why nothing can be written in ``directory`` (a read-only mount, no permission), or None."""
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        return None
    return None if os.access(directory, os.W_OK) else "no permission to write in the directory"


def is_full(exc: BaseException, directory: str) -> bool:
    """True if ``exc`` (an OSError, an SQLite error or a DatabaseError caused by one) means that
    ``directory``'s disk or quota is full."""
    for err in (exc, exc.__cause__, exc.__context__):
        if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
            return True
        if isinstance(err, sqlite3.Error) and ("disk is full" in str(err) or (
                "disk I/O error" in str(err) and free_bytes(directory) < RESERVE_BYTES)):
            return True
    return False


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class Reserve:
    """The reserve file of the store at ``path`` (its SQLite file)."""

    def __init__(self, path: str) -> None:
        self.path = path + "-reserve"

    def take(self) -> None:
        """Create the reserve if it is missing and the disk has room for it and as much again."""
        if os.path.exists(self.path) or free_bytes(os.path.dirname(os.path.abspath(self.path))) < 2 * RESERVE_BYTES:
            return
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(bytes(RESERVE_BYTES))   # written, not sparse: the blocks are really held
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.debug("no reserve for %s: %s", self.path, exc)
            if os.path.exists(tmp):
                os.remove(tmp)

    def release(self) -> bool:
        """Give the reserve's space back to the filesystem; True if there was one."""
        try:
            os.remove(self.path)
        except OSError:
            return False
        log.warning("%s: the disk is full: using the %s reserved for it", self.path[:-len("-reserve")],
                    megabytes(RESERVE_BYTES))
        return True

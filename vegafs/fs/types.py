"""Plain value types the filesystem hands to its callers (fuse_ops, drivers, hooks)."""

from __future__ import annotations

import os
from dataclasses import dataclass


class FsError(Exception):
    """A POSIX failure: ``errno`` is what the application must see.

    Raised by every :class:`~vegafs.fs.FileSystem` method; fuse_ops turns it
    into ``FUSEError(errno)`` in one place.
    """

    def __init__(self, errno: int, message: str = "") -> None:
        super().__init__(message or os.strerror(errno))
        self.errno = errno


@dataclass(frozen=True, slots=True)
class Ctx:
    """Who asks: the caller's credentials, as the kernel reports them."""

    uid: int = 0
    gid: int = 0
    pid: int = 0

    @property
    def is_root(self) -> bool:
        return self.uid == 0


ROOT_CTX = Ctx()


@dataclass(slots=True)
class Attr:
    """The attributes of one inode as the caller sees them right now.

    For a file with buffered writes, ``size`` and the times include the
    buffered, not yet committed, changes: every reader sees a write at once.
    """

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blocks: int  # 512-byte units actually allocated (holes excluded)
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True, slots=True)
class StatFs:
    """What ``statvfs`` reports."""

    bsize: int
    frsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    favail: int
    namemax: int


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One readdir result: ``next_off`` resumes the listing after this entry."""

    name: bytes
    attr: Attr
    next_off: int

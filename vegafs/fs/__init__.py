"""vegafs.fs — the POSIX model of a mounted store, without FUSE.

What it owns: the meaning of POSIX operations over the store's inodes and
directory entries — open handles, the kernel's lookup counts, per-file write
buffers, unlinked-but-open files, permission rules the kernel leaves to the
file system (sticky directories, set-group-ID inheritance, clearing
set-user-ID on chown and write), parent times and link counts, xattrs
(``user.*``/``trusted.*``/``security.*`` stored, ``vega.*`` read-only facts),
and the read-only ``/.snapshots`` tree over ``store.view(name)``.

What it must never do: know about FUSE, trio or threads beyond the documented
split (``fetch_chunks``, ``fill`` and ``put_chunk`` may run in a worker thread;
everything else runs on the owner's thread); mutate objects the store
returned; hold the store's state in a second copy (the head state is the
store's — the fs adds only handles, buffers and caches).

Invariants:
* Every failure is an :class:`FsError` carrying the errno an application
  must see; a store I/O error keeps its errno (ENOSPC stays ENOSPC).
* A reader sees every write at once (buffers are consulted before the
  store); a commit records a file's buffered changes as one ``set_blocks``
  transaction, so no version in the log is ever torn.
* Memory stays bounded: a block is stored as soon as a write completes it,
  and at most ``MAX_DIRTY_BLOCKS`` partial blocks stay in memory.
* Inode numbers at or above ``SNAP_BASE`` are snapshot views: read-only,
  every change is EROFS.
"""

from vegafs.fs.buffers import ChunkJob
from vegafs.fs.filesystem import (
    NAME_MAX,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    SNAP_BASE,
    SNAPSHOT_DIR_NAME,
    XATTR_CREATE,
    XATTR_REPLACE,
    FileSystem,
    ReadPlan,
)
from vegafs.fs.types import ROOT_CTX, Attr, Ctx, DirEntry, FsError, StatFs

__all__ = [
    "NAME_MAX",
    "RENAME_EXCHANGE",
    "RENAME_NOREPLACE",
    "ROOT_CTX",
    "SNAPSHOT_DIR_NAME",
    "SNAP_BASE",
    "XATTR_CREATE",
    "XATTR_REPLACE",
    "Attr",
    "ChunkJob",
    "Ctx",
    "DirEntry",
    "FileSystem",
    "FsError",
    "ReadPlan",
    "StatFs",
]

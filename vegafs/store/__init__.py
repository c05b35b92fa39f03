"""vegafs.store — the append-only, content-addressed store everything else stands on.

What it owns. The log: framed, checksummed, hash-chained records in segment
files, each with a monotonic logseq that is never reused. File data as chunks
named by their blake3 hash, stored once. The metadata state the filesystem
needs (inodes, directory entries, symlink targets, xattrs, each file's block
map and version), which it keeps in memory and records in the log as one TXN
record per transaction. Publish boundaries, recovery, the derived index
(checkpoints + chunk index), snapshots, rollback, gc and fsck. The on-disk
format is documented in docs/store-format.md.

What it must never do. Import anything else of vegafs (it knows nothing of
FUSE or Vega). Touch a file except through its :class:`Backend` (so faults can
be injected and an object store can replace the directory). Modify a sealed
segment. Show a torn record or anything after the last publish once reopened.
Reuse a logseq or an inode number. Drop data silently: damage is reported, and
repair quarantines bytes it cannot decode.

Invariants.
* Replaying the log from its first record gives exactly the in-memory state
  (the index is derived; fsck proves it, and deleting ``index/`` is safe).
* A transaction is applied whole or not at all, in memory and in the log.
* After a crash the store opens at its last PUBLISH record, deterministically.
* Every chunk reachable from the head or a snapshot survives gc, at every step.
* One writer at a time, enforced by a lock that names its holder.

Threads. Appends are serialized by one lock; a publish fsyncs outside it, so
transactions keep going while a worker thread waits for the disk. Head-state
reads take no lock. ``put_chunk`` hashes outside the lock, and a chunk put but
not yet referenced survives one gc (a write in flight).
"""

from vegafs.store.backend import Backend, LocalBackend, LockHolder, default_store_path
from vegafs.store.errors import (
    STORE_CONCURRENT_MODIFICATION,
    STORE_EXISTS,
    STORE_IO_ERROR,
    STORE_NOT_FOUND,
    STORE_OK,
    StoreError,
)
from vegafs.store.fsck import FsckReport
from vegafs.store.gc import GcReport
from vegafs.store.state import BLOCK_SIZE, ROOT_INO, Inode, TxnError
from vegafs.store.store import (
    FileVersion,
    HeadChanges,
    HeadUpdate,
    RollbackInfo,
    Snapshot,
    Store,
    StoreView,
    Transaction,
)

__all__ = [
    "BLOCK_SIZE",
    "ROOT_INO",
    "STORE_CONCURRENT_MODIFICATION",
    "STORE_EXISTS",
    "STORE_IO_ERROR",
    "STORE_NOT_FOUND",
    "STORE_OK",
    "Backend",
    "FileVersion",
    "FsckReport",
    "GcReport",
    "HeadChanges",
    "HeadUpdate",
    "Inode",
    "LocalBackend",
    "LockHolder",
    "RollbackInfo",
    "Snapshot",
    "Store",
    "StoreError",
    "StoreView",
    "Transaction",
    "TxnError",
    "default_store_path",
]

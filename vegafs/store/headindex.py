"""The head index: the published head's inode and directory tables on disk (SQLite).

Why: a store with a million files cannot keep every inode in memory (even
packed, ~300 bytes a file with the table's slot and key), or the daemon's RSS
grows with every file that exists. The head tables (:class:`~vegafs.store.state.PackedTable`)
keep only decoded hot values and what changed since the last flush; every
other value is read from here on demand, through SQLite's bounded page cache.

It is derived data, like the checkpoint it replaces (docs/store-format.md §6):

* one file, ``head.sqlite``, in the backend's local index directory
  (``index/`` of a local store, the cache directory of an S3 store);
* tables ``inodes`` and ``dirs`` (key -> the packed value, as in a STATE
  record), ``chunks`` and ``meta`` (the chunk index's shards and the view
  locators, in pieces, so a flush rewrites what changed) and ``head`` (one
  row: the rest of the checkpoint map, with the log position it was written
  at, checksummed);
* written only at a publish, rows and position in one SQLite transaction, so
  it only ever holds a *published* state and never runs ahead of the log:
  recovery's truncation of an unpublished tail cannot leave it ahead;
* anything wrong with it (missing, unreadable, another layout, a position
  the log does not confirm) makes the store ignore it and replay the log.

SQLite, not a custom paged file: atomic multi-row commits with crash
recovery, a bounded page cache (``cache_size``) and B-tree point lookups come
with the standard library; a point read costs a few microseconds, and only
values not already hot are read.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import blake3

from vegafs.store.errors import STORE_IO_ERROR, StoreError

INDEX_NAME = "head.sqlite"
TABLES = ("inodes", "dirs", "chunks", "meta")
#: SQLite's page cache per connection, in KiB (negative cache_size = KiB).
CACHE_KIB = 2 * 1024
_BATCH = 4096  # rows per query when walking a table


#: Bytes of BLAKE3 before each stored value: a damaged row is never trusted.
CHECK = 8


def _failed(path: Path, e: Exception) -> StoreError:
    """The index cannot be read: damage, like a bad record (repair rebuilds the index)."""
    return StoreError(
        STORE_IO_ERROR,
        f"head index {path} is damaged ({e}); run `vegafs fsck --repair` or delete it",
        errno.EIO,
    )


def seal(value: bytes) -> bytes:
    """A value as stored: its checksum, then the value."""
    return blake3.blake3(value).digest(CHECK) + value


def _open_sealed(path: Path, key: int, row: bytes) -> bytes:
    raw = bytes(row)
    value = raw[CHECK:]
    if len(raw) < CHECK or blake3.blake3(value).digest(CHECK) != raw[:CHECK]:
        raise _failed(path, ValueError(f"row {key} does not match its checksum"))
    return value


def remove(directory: Path) -> None:
    """Delete the index in ``directory`` (with SQLite's side files), if any."""
    for suffix in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            (directory / (INDEX_NAME + suffix)).unlink()


class HeadIndex:
    """One connection to ``head.sqlite``; every method may be called from any thread."""

    def __init__(self, path: Path, *, read_only: bool) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.Lock()
        try:
            if read_only:
                self._db = sqlite3.connect(
                    f"file:{path}?mode=ro", uri=True, check_same_thread=False, timeout=5
                )
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, check_same_thread=False, timeout=5)
                # A rollback journal, deleted at each commit: the index takes its
                # own size on disk and no more (a write-ahead log would keep up to
                # 4 MiB beside it, too much for a small disk). FULL: a commit is
                # atomic across a power loss too.
                self._db.execute("PRAGMA journal_mode=DELETE")
                self._db.execute("PRAGMA synchronous=FULL")
                for table in TABLES:
                    self._db.execute(
                        f"CREATE TABLE IF NOT EXISTS {table} (k INTEGER PRIMARY KEY, v BLOB NOT NULL)"
                    )
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS head (id INTEGER PRIMARY KEY, body BLOB NOT NULL)"
                )
                self._db.commit()
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        except (sqlite3.Error, OSError) as e:
            raise OSError(errno.EIO, f"head index {path}: {e}") from e

    def recreate(self) -> HeadIndex:
        """A new, empty index file in place of this one (closed): what a flush of a
        whole new state writes into, whatever the old file holds (even damage)."""
        self.close()
        remove(self.path.parent)
        return HeadIndex(self.path, read_only=False)

    @classmethod
    def open(cls, directory: Path | None, *, read_only: bool) -> HeadIndex | None:
        """The index in ``directory``; None if there is none to read or it cannot be opened."""
        if directory is None:
            return None
        path = directory / INDEX_NAME
        if read_only and not path.exists():
            return None
        try:
            return cls(path, read_only=read_only)
        except OSError:
            return None

    # -- reads -------------------------------------------------------------------

    def body(self) -> bytes | None:
        """The checkpoint map (with its checksum) the rows belong to, or None."""
        row = self._one("SELECT body FROM head WHERE id = 0", ())
        return None if row is None else bytes(row[0])

    def get(self, table: str, key: int) -> bytes | None:
        row = self._one(f"SELECT v FROM {table} WHERE k = ?", (key,))
        return None if row is None else _open_sealed(self.path, key, row[0])

    def has(self, table: str, key: int) -> bool:
        return self._one(f"SELECT 1 FROM {table} WHERE k = ?", (key,)) is not None

    def count(self, table: str) -> int:
        row = self._one(f"SELECT count(*) FROM {table}", ())
        return int(row[0]) if row is not None else 0

    def items(self, table: str) -> Iterator[tuple[int, bytes]]:
        """Every (key, packed value), in key order, read in batches (no transaction held)."""
        last = -(1 << 63)
        while True:
            with self._lock:
                try:
                    rows = self._db.execute(
                        f"SELECT k, v FROM {table} WHERE k > ? ORDER BY k LIMIT {_BATCH}", (last,)
                    ).fetchall()
                except sqlite3.Error as e:
                    raise _failed(self.path, e) from e
            for key, row in rows:
                yield key, _open_sealed(self.path, key, row)
            if len(rows) < _BATCH:
                return
            last = rows[-1][0]

    def snapshot(self) -> tuple[bytes | None, dict[str, dict[int, bytes]]]:
        """The body and every row, read in one transaction (a consistent copy for a
        read-only store: the writer may commit meanwhile)."""
        with self._lock:
            try:
                self._db.execute("BEGIN")
                try:
                    row = self._db.execute("SELECT body FROM head WHERE id = 0").fetchone()
                    tables = {
                        t: {
                            k: _open_sealed(self.path, k, v)
                            for k, v in self._db.execute(f"SELECT k, v FROM {t}")
                        }
                        for t in TABLES
                    }
                finally:
                    self._db.execute("COMMIT")
            except sqlite3.Error as e:
                raise _failed(self.path, e) from e
        return (None if row is None else bytes(row[0])), tables

    def _one(self, sql: str, args: tuple[object, ...]) -> tuple[Any, ...] | None:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchone()
            except sqlite3.Error as e:
                raise _failed(self.path, e) from e

    # -- the one write -----------------------------------------------------------

    def write(
        self,
        changes: Mapping[str, tuple[bool, Iterable[tuple[int, bytes]], Iterable[int]]],
        body: bytes,
    ) -> None:
        """Apply ``{table: (replace_all, puts, deletes)}`` and the new body in ONE transaction.

        Raises OSError (nothing changed: SQLite rolled back) on failure. A
        whole new state (``replace_all``) goes to a new file instead (see
        :meth:`recreate`), so a damaged file is never written into.
        """
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    for table, (replace_all, puts, deletes) in changes.items():
                        if replace_all:
                            db.execute(f"DELETE FROM {table}")
                        else:
                            db.executemany(
                                f"DELETE FROM {table} WHERE k = ?", ((k,) for k in deletes)
                            )
                        db.executemany(
                            f"INSERT OR REPLACE INTO {table} (k, v) VALUES (?, ?)",
                            ((k, seal(v)) for k, v in puts),
                        )
                    db.execute("INSERT OR REPLACE INTO head (id, body) VALUES (0, ?)", (body,))
                except BaseException:
                    db.rollback()
                    raise
                db.commit()
            except sqlite3.Error as e:
                raise OSError(errno.EIO, f"head index {self.path}: {e}") from e

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()

"""The head index (vegafs/store/headindex.py): the head's tables on disk, a bounded part in memory.

What must hold (docs/store-format.md §6): memory keeps only hot values and
what changed since the last flush; the index holds only published states
(flushed at a publish, rows and position in one transaction), so a crash
never leaves it ahead of the log; a missing, stale or damaged index is
rebuilt from the log, never trusted; a wholesale new state (rollback) is
written whole; a read-only store (follower) reads a consistent copy.
"""

from __future__ import annotations

import gc
import shutil
import sqlite3
from pathlib import Path

from vegafs.store import ROOT_INO, Store
from vegafs.store.headindex import INDEX_NAME

from .test_memory import DIR, FILE, _make_files, traced_bytes_per_file


def _flush(store: Store) -> None:
    """Publish and flush the index now (as a publish does every CHECKPOINT_INTERVAL records)."""
    store.publish()
    store._since_checkpoint = max(store._since_checkpoint, 1)
    store._write_checkpoint()


def _more_files(store: Store, tag: bytes, count: int) -> None:
    """``count`` empty files in a new directory ``tag`` of the root."""
    parent = store.alloc_ino()
    with store.transaction() as t:
        t.create_inode(parent, mode=DIR, uid=0, gid=0, times_ns=1)
        t.link(ROOT_INO, tag, parent)
        t.update(parent, nlink=2)
    for i in range(count):
        ino = store.alloc_ino()
        with store.transaction() as t:
            t.create_inode(ino, mode=FILE, uid=0, gid=0, times_ns=2)
            t.link(parent, b"f%d" % i, ino)
            t.update(ino, nlink=1)


def _names(store: Store) -> dict[bytes, int]:
    """Every file name under every directory of the root (the test trees are two deep)."""
    out: dict[bytes, int] = {}
    for dname, dino in store.listdir(ROOT_INO):
        for fname, ino in store.listdir(dino):
            out[dname + b"/" + fname] = ino
    return out


def test_cold_values_live_in_the_index_not_in_memory(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s", create=True)
    inodes, dirs = store._state.inodes, store._state.dirs
    inodes.hot_limit, dirs.hot_limit = 64, 300
    inos = _make_files(store, 3000, per_dir=100)
    _flush(store)
    assert len(inodes._d) <= 64 and len(dirs._d) <= 8  # only the hot ones stay
    assert len(inodes) == 3000 + 31 and len(dirs) == 31
    for i, ino in enumerate(inos):
        inode = store.get_inode(ino)
        assert inode is not None and inode.size == len(b"file %d\n" % i)
    assert len(inodes._d) <= 2 * 64
    # changes since the flush are what memory holds, deletions included
    with store.transaction() as t:
        t.unlink(store.lookup(ROOT_INO, b"d00000"), b"f0000000")  # type: ignore[arg-type]
        t.update(inos[0], nlink=0)
        t.delete_inode(inos[0])
        t.update(inos[1], mtime_ns=5)
    assert inos[0] not in inodes and store.get_inode(inos[0]) is None
    assert len(inodes) == 3000 + 30
    _flush(store)
    assert store.get_inode(inos[1]).mtime_ns == 5  # type: ignore[union-attr]
    expected = _names(store)
    store.close()
    with Store.open(tmp_path / "s") as again:
        assert _names(again) == expected and again.get_inode(inos[0]) is None
        assert again.fsck().ok


def test_store_memory_does_not_grow_with_files_once_flushed(tmp_path: Path) -> None:
    """Traced store memory per small file beyond the bounded caches: 289 bytes with
    every inode packed in memory (test_memory.py), 53 with the chunk index in memory
    too; with the chunk index served from the head index, what is left per file
    written is its record's locator for views (16 bytes, until a gc). The warm
    rounds fill what is bounded by the files changed between two flushes (the
    tables' dicts keep their size) and the chunk index's LRU."""
    per_file = traced_bytes_per_file(tmp_path / "s", 20_000, 20_000, _flush)
    print(f"store memory per small file after a flush: {per_file:.0f} bytes")
    assert per_file < 32


def test_the_index_never_holds_an_unpublished_state(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s", create=True)
    _make_files(store, 50)
    _flush(store)
    published = _names(store)
    _more_files(store, b"late", 20)  # appended, never published
    store._write_checkpoint()  # a flush refuses while records are unpublished
    store.backend.close()  # "killed": no publish, no close
    with Store.open(tmp_path / "s") as again:
        assert _names(again) == published
        assert again.fsck().ok


def test_a_missing_stale_or_damaged_index_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Store.open(path, create=True) as s:
        _make_files(s, 300)
        expected = _names(s)
    shutil.rmtree(path / "index")
    with Store.open(path) as s:
        assert _names(s) == expected
    assert (path / "index" / INDEX_NAME).exists()
    stale = (path / "index" / INDEX_NAME).read_bytes()
    with Store.open(path) as s:
        _more_files(s, b"more", 10)
        expected = _names(s)
        s.gc()  # a new generation: the copy above no longer matches the log
    del s
    gc.collect()  # its index connection goes with it
    (path / "index" / INDEX_NAME).write_bytes(stale)
    with Store.open(path) as s:
        assert _names(s) == expected and s.fsck().ok
    # a row changed behind the store's back fails its checksum when open reads every
    # row: the store replays the log instead, never serving a wrong inode
    db = sqlite3.connect(path / "index" / INDEX_NAME)
    for table in ("inodes", "dirs"):
        for k, v in db.execute(f"SELECT k, v FROM {table}").fetchall():
            flipped = bytes(v[:9]) + bytes([v[9] ^ 1]) + bytes(v[10:])
            db.execute(f"UPDATE {table} SET v = ? WHERE k = ?", (flipped, k))
    db.commit()
    db.close()
    with Store.open(path) as s:
        assert _names(s) == expected and s.fsck().ok
    with Store.open(path, repair=True) as s:
        assert s.fsck(repair=True).ok
    with Store.open(path) as s:
        assert _names(s) == expected and s.fsck().ok


def test_a_rollback_replaces_the_index_whole(tmp_path: Path) -> None:
    path = tmp_path / "s"
    store = Store.open(path, create=True)
    store._state.inodes.hot_limit = 8
    _make_files(store, 200)
    _flush(store)
    store.create_snapshot("before")
    expected = _names(store)
    _more_files(store, b"more", 30)
    _flush(store)
    store.rollback("before")
    assert store._state.inodes._base is None  # a new state: all in memory until the flush
    _flush(store)
    assert store._state.inodes._base is not None and len(store._state.inodes._d) <= 8
    assert _names(store) == expected
    store.close()
    with Store.open(path) as again:
        assert _names(again) == expected and again.fsck().ok


def test_a_reader_copies_a_consistent_index_while_the_writer_flushes(tmp_path: Path) -> None:
    path = tmp_path / "s"
    writer = Store.open(path, create=True)
    _make_files(writer, 100)
    _flush(writer)
    reader = Store.open(path, read_only=True)
    assert reader._state.inodes._base is None  # copied: the writer keeps committing
    first = _names(reader)
    _more_files(writer, b"more", 20)
    _flush(writer)
    assert _names(reader) == first  # its copy did not move under it
    update = reader.poll_head()
    assert update is not None
    reader.apply_head(update)
    assert _names(reader) == _names(writer)
    reader.close()
    writer.close()


def test_an_index_sqlite_cannot_open_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Store.open(path, create=True) as s:
        _make_files(s, 100)
        expected = _names(s)
    del s
    gc.collect()
    (path / "index" / INDEX_NAME).write_bytes(b"not a database" * 100)
    with Store.open(path) as s:
        assert _names(s) == expected and s.fsck().ok
        assert s._index is not None  # a new index: the writer's memory stays bounded
    with Store.open(path) as s:
        assert s._state.inodes._base is not None and _names(s) == expected

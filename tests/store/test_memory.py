"""The head state's memory: packed inodes and directories, the compact chunk index.

The store keeps the head in memory (docs/architecture.md), so what a file
costs there decides how many files a daemon can hold; these tests pin the
compact forms and the rules that keep them correct (a bounded decoded set,
live objects, walks that decode nothing for good), and a byte budget per
file measured with tracemalloc (deterministic, unlike RSS).
"""

from __future__ import annotations

import random
import stat
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from vegafs.store import Store, chunkindex
from vegafs.store.chunkindex import ChunkIndex
from vegafs.store.headindex import HeadIndex

FILE = stat.S_IFREG | 0o644
DIR = stat.S_IFDIR | 0o755


def _make_files(store: Store, count: int, per_dir: int = 1000, first: int = 0) -> list[int]:
    """``count`` one-block files, ``per_dir`` to a directory, one transaction per file;
    file ``i`` (from ``first``) holds ``file i`` (a chunk of its own)."""
    inos: list[int] = []
    parent = 0
    for i in range(first, first + count):
        if i % per_dir == 0:
            parent = store.alloc_ino()
            with store.transaction() as t:
                t.create_inode(parent, mode=DIR, uid=0, gid=0, times_ns=i)
                t.link(1, b"d%05d" % (i // per_dir), parent)
                t.update(parent, nlink=2)
        h = store.put_chunk(b"file %d\n" % i)
        ino = store.alloc_ino()
        with store.transaction() as t:
            t.create_inode(ino, mode=FILE, uid=0, gid=0, times_ns=1_700_000_000_000_000_000 + i)
            t.link(parent, b"f%07d" % i, ino)
            t.update(ino, nlink=1)
            t.set_blocks(ino, {0: h}, len(b"file %d\n" % i))
        inos.append(ino)
    return inos


def test_chunk_index_is_a_map(tmp_path: Path) -> None:
    rng = random.Random(7)
    index, model = ChunkIndex(), {}
    for n in range(5000):
        h = rng.randbytes(32)
        index[h] = model[h] = n << 40 | rng.randrange(1 << 40)
    assert len(index) == len(model) and index == model
    assert all(index[h] == loc and h in index for h, loc in model.items())
    assert rng.randbytes(32) not in index and index.get(b"short") is None
    assert dict(index.items()) == model
    with pytest.raises(ValueError, match="indexed already"):
        index[next(iter(model))] = 1
    with pytest.raises(ValueError, match="32 bytes"):
        index[b"x"] = 1
    full, rows, _ = index.changes(full=False)  # never saved: every shard
    assert full and sum(len(r) for _, r in rows) == 40 * len(model)
    again = ChunkIndex.from_rows(rows)
    assert again == index and len(again) == len(index)
    # Saved into a head index: memory drops the records, lookups read the base.
    base = HeadIndex(tmp_path / "head.sqlite", read_only=False)
    base.write({"chunks": (full, rows, [])}, b"")
    index.saved(base)
    assert not any(index._shards) and index == model
    assert len(index._cache) <= 1 + len(model)  # only shards that were found
    h = rng.randbytes(32)
    index[h] = model[h] = 1
    n = h[0] << 8 | h[1]
    expected = bytes(again._shards[n] or b"") + h + (1).to_bytes(8, "little")
    assert index.changes(full=False) == (False, [(n, expected)], [])  # the one changed shard
    base.write({"chunks": index.changes(full=False)}, b"")
    index.saved(base)
    assert index[h] == 1 and not any(index._shards)
    reopened = ChunkIndex.from_base(base)
    assert reopened == model and len(reopened) == len(model)
    reopened.detach()  # the base is going away: every record back in memory
    base.close()
    assert reopened == model
    with pytest.raises(ValueError, match="malformed"):
        ChunkIndex.from_rows([(rows[0][0], rows[0][1][:-1])])


@pytest.mark.parametrize("scan", [False, True])
def test_locate_finds_many_hashes_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scan: bool
) -> None:
    """``locate`` (gc's lookup of every live chunk) agrees with ``get``, whether it
    reads point by point or walks the table, over saved records and newer ones."""
    if scan:
        monkeypatch.setattr(chunkindex, "LOCATE_SCAN", 0)
    rng = random.Random(11)
    index, model = ChunkIndex(), {}
    for n in range(3000):
        h = rng.randbytes(32)
        index[h] = model[h] = n
    base = HeadIndex(tmp_path / "head.sqlite", read_only=False)
    base.write({"chunks": index.changes(full=False)}, b"")
    index.saved(base)
    for n in range(3000, 3100):  # the delta: not in the base yet
        h = rng.randbytes(32)
        index[h] = model[h] = n
    absent = [rng.randbytes(32) for _ in range(50)]
    wanted = [*rng.sample(sorted(model), 1000), *absent, b"short"]
    assert index.locate(wanted) == {h: model[h] for h in wanted if h in model}
    base.close()


def test_decoded_inodes_and_directories_stay_bounded(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s", create=True)
    inodes, dirs = store._state.inodes, store._state.dirs
    inodes.hot_limit, dirs.hot_limit = 64, 300
    inos = _make_files(store, 3000, per_dir=100)
    assert len(inodes._hot) <= 64 and len(dirs._hot) <= 8
    # every inode and entry is still there, packed or not
    for i, ino in enumerate(inos):
        inode = store.get_inode(ino)
        assert inode is not None and inode.size == len(b"file %d\n" % i)
        assert store.lookup(store.lookup(1, b"d%05d" % (i // 100)), b"f%07d" % i) == ino
    assert len(inodes._hot) <= 2 * 64  # reads trim too, once they doubled the set
    # walks decode for the walk only
    assert sum(1 for _ in inodes.values()) == len(inos) + 31  # files, dirs, root
    assert len(inodes._hot) <= 2 * 64
    store.close()
    with Store.open(tmp_path / "s") as again:
        assert again._state.inodes == inodes and again._state.dirs == dirs
        assert again.fsck().ok


def test_a_fetched_inode_stays_live_across_a_transaction(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s", create=True)
    store._state.inodes.hot_limit = 4
    inos = _make_files(store, 50)
    inode = store.get_inode(inos[0])  # packed until now
    assert inode is not None
    with store.transaction() as t:
        t.update(inos[0], mtime_ns=42)
    assert inode.mtime_ns == 42 and store.get_inode(inos[0]) is inode
    # a failed transaction leaves the live object as it was
    with pytest.raises(ValueError), store.transaction() as t:
        t.update(inos[0], mtime_ns=43)
        t.unlink(1, b"no such entry")
    assert inode.mtime_ns == 42
    store.close()


def test_a_rollback_restores_packed_state(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s", create=True)
    store._state.inodes.hot_limit = 8
    inos = _make_files(store, 200)
    store.create_snapshot("before")
    for ino in inos[:100]:
        with store.transaction() as t:
            t.update(ino, mtime_ns=7)
    store.rollback("before")
    assert all(store.get_inode(ino).mtime_ns != 7 for ino in inos)  # type: ignore[union-attr]
    assert store.fsck().ok
    store.close()


def test_store_bytes_per_file(tmp_path: Path) -> None:
    """What a small file costs the head (traced Python memory, store only): 807 bytes
    before issue 5's work (decoded Inode objects, dict block maps and directories, a
    dict chunk index), 289 after; the bound leaves room for noise, not for a relapse."""
    per_file = traced_bytes_per_file(tmp_path / "s", 10_000, 20_000, Store.publish)
    print(f"store memory per small file: {per_file:.0f} bytes")
    assert per_file < 400


def traced_bytes_per_file(
    path: Path, warm: int, count: int, settle: Callable[[Store], object]
) -> float:
    """Traced Python memory a new store at ``path`` keeps per small file: ``warm``
    files first, twice (they fill what is bounded: decoded sets, dicts at their
    size, caches of what a first ``settle`` saved), then what ``count`` more
    files add, each round followed by ``settle``; every file has its own chunk."""
    tracemalloc.start()
    try:
        store = Store.open(path, create=True)
        try:
            for first in (0, warm):
                _make_files(store, warm, first=first)
                settle(store)
            before = tracemalloc.get_traced_memory()[0]
            _make_files(store, count, first=2 * warm)
            settle(store)
            return (tracemalloc.get_traced_memory()[0] - before) / count
        finally:
            store.close()
    finally:
        tracemalloc.stop()


def test_a_failed_batch_over_many_inodes_restores_packed_state(tmp_path: Path) -> None:
    """A batch's undo steps hold inodes until its record is logged: reads and
    transactions inside it must not re-pack (detach) them, or the undo would
    restore objects the table no longer holds."""
    store = Store.open(tmp_path / "s", create=True)
    store._state.inodes.hot_limit = 4
    inos = _make_files(store, 100)
    before = {ino: store.get_inode(ino).mtime_ns for ino in inos}  # type: ignore[union-attr]
    with pytest.raises(RuntimeError), store.batch():
        for ino in inos:
            with store.transaction() as t:
                t.update(ino, mtime_ns=7)
            for other in inos[:20]:
                store.get_inode(other)  # reads that would trim outside a batch
        raise RuntimeError("the guarded operation failed")
    assert {ino: store.get_inode(ino).mtime_ns for ino in inos} == before  # type: ignore[union-attr]
    assert store.fsck().ok
    store.close()
    with Store.open(tmp_path / "s") as again:
        assert all(again.get_inode(ino).mtime_ns != 7 for ino in inos)  # type: ignore[union-attr]

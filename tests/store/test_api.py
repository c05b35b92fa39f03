"""The store API of docs/architecture.md, without faults; every test ends with a clean fsck."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.store.conftest import (
    assert_clean,
    make_dir,
    make_file,
    read_file,
    snapshot_state,
    write_file,
)
from vegafs.store import (
    BLOCK_SIZE,
    ROOT_INO,
    STORE_EXISTS,
    STORE_NOT_FOUND,
    Store,
    StoreError,
    TxnError,
    default_store_path,
)


def test_new_store_has_a_root_and_reopens(store_path: Path) -> None:
    with Store.open(store_path, create=True) as s:
        root = s.get_inode(ROOT_INO)
        assert root is not None and stat.S_ISDIR(root.mode) and root.nlink == 2
        assert s.listdir(ROOT_INO) == []
        assert not s.dirty and s.published_logseq == s.head_logseq
        assert_clean(s)
    with Store.open(store_path) as s:
        assert s.get_inode(ROOT_INO) == root


def test_open_missing_store_and_create_twice(store_path: Path) -> None:
    with pytest.raises(StoreError) as e:
        Store.open(store_path)
    assert e.value.code == STORE_NOT_FOUND
    Store.open(store_path, create=True).close()
    with pytest.raises(StoreError) as e:
        Store.create(store_path)
    assert e.value.code == STORE_EXISTS


def test_files_dirs_symlinks_xattrs_survive_reopen(store_path: Path) -> None:
    data = os.urandom(3 * BLOCK_SIZE + 17)
    with Store.open(store_path, create=True) as s:
        d = make_dir(s, b"dir")
        f = make_file(s, b"file", data, parent=d)
        link = s.alloc_ino()
        with s.transaction() as t:
            t.create_inode(
                link, mode=stat.S_IFLNK | 0o777, uid=1, gid=2, target=b"dir/file", times_ns=5
            )
            t.update(link, nlink=1)
            t.link(ROOT_INO, b"ln", link)
            t.set_xattr(f, b"user.k", b"v")
            t.link(ROOT_INO, b"hard", f)
            t.update(f, nlink=2)
        before = snapshot_state(s)
        assert s.lookup(d, b"file") == f
        assert s.listdir(ROOT_INO) == [(b"dir", d), (b"ln", link), (b"hard", f)]
        assert s.get_inode(link).target == b"dir/file"
        assert s.get_inode(link).size == len(b"dir/file")
        assert read_file(s, f) == data
        assert_clean(s)
    with Store.open(store_path) as s:
        assert snapshot_state(s) == before
        assert read_file(s, f) == data
        assert s.get_inode(f).xattrs == {b"user.k": b"v"}
        assert_clean(s)


def test_transaction_is_all_or_nothing(store: Store) -> None:
    f = make_file(store, b"a", b"x")
    before = snapshot_state(store)
    head = store.head_logseq
    with pytest.raises(RuntimeError), store.transaction() as t:
        t.unlink(ROOT_INO, b"a")
        raise RuntimeError("caller changed its mind")
    with pytest.raises(TxnError), store.transaction() as t:
        t.unlink(ROOT_INO, b"a")
        t.update(f, nlink=0)
        t.link(ROOT_INO, b"b", 999)  # no such inode: the whole transaction is refused
    assert snapshot_state(store) == before
    assert store.head_logseq == head
    assert_clean(store)


def test_invalid_ops_are_refused(store: Store) -> None:
    f = make_file(store, b"a", b"x")
    cases = [
        lambda t: t.create_inode(f, mode=stat.S_IFREG, uid=0, gid=0, times_ns=0),
        lambda t: t.unlink(ROOT_INO, b"nope"),
        lambda t: t.link(f, b"x", f),  # parent is not a directory
        lambda t: t.set_blocks(f, {0: b"\0" * 32}, 10),  # unknown chunk
        lambda t: t.delete_inode(ROOT_INO),
        lambda t: t.remove_xattr(f, b"user.none"),
        lambda t: t.link(ROOT_INO, b"a/b", f),
    ]
    for case in cases:
        with pytest.raises(TxnError), store.transaction() as t:
            case(t)
    with pytest.raises(TypeError):
        store.transaction().update(f, colour=3)
    assert_clean(store)


def test_chunks_are_deduplicated_and_verified(store: Store) -> None:
    data = os.urandom(BLOCK_SIZE)
    h1 = store.put_chunk(data)
    records = store.stats()["records"]
    assert store.put_chunk(data) == h1
    assert store.stats()["records"] == records  # the second put wrote nothing
    assert store.read_chunk(h1) == data
    assert store.read_chunk(store.put_chunk(b"")) == b""
    with pytest.raises(ValueError):
        store.put_chunk(b"\0" * (BLOCK_SIZE + 1))
    with pytest.raises(StoreError) as e:
        store.read_chunk(b"\1" * 32)
    assert e.value.code == STORE_NOT_FOUND
    assert_clean(store)


def test_compression_round_trips(store_path: Path) -> None:
    text = b"all work and no play " * 6000
    with Store.open(store_path, create=True, compression="zstd") as s:
        assert s.compression == "zstd"
        f = make_file(s, b"t", text)
        assert s.stats()["chunk_bytes"] < len(text) // 10
        assert_clean(s)
    with Store.open(store_path) as s:
        assert read_file(s, f) == text
        assert_clean(s)


def test_alloc_ino_is_monotonic_across_reopen_and_rollback(store_path: Path) -> None:
    with Store.open(store_path, create=True) as s:
        s.create_snapshot("empty")
        make_file(s, b"a", b"1")
        last = make_file(s, b"b", b"2")
        s.rollback("empty")
        assert s.alloc_ino() > last
    with Store.open(store_path) as s:
        assert s.alloc_ino() > last + 1
        assert_clean(s)


def test_truncate_drops_blocks_beyond_eof(store: Store) -> None:
    f = make_file(store, b"f", os.urandom(3 * BLOCK_SIZE))
    with store.transaction() as t:
        t.set_blocks(f, {}, BLOCK_SIZE + 1)
    assert sorted(store.get_inode(f).blocks) == [0, 1]
    with store.transaction() as t:
        t.update(f, size=0)
    assert store.get_inode(f).blocks == {}
    assert_clean(store)


def test_annotations_are_kept_in_order(store_path: Path) -> None:
    with Store.open(store_path, create=True) as s:
        with s.transaction() as t:
            t.annotate("hook", b"one")
        with s.transaction() as t:
            t.annotate("hook", b"two")
            t.annotate("other", b"x")
        first = s.annotations("hook")
        assert [p for _l, p in first] == [b"one", b"two"]
        assert first[0][0] < first[1][0]
    with Store.open(store_path) as s:
        assert s.annotations("hook") == first
        assert s.annotations("none") == []
        s.gc()
        assert s.annotations("hook") == first
        assert_clean(s)


def test_unpublished_records_are_gone_after_reopen(store_path: Path) -> None:
    s = Store.open(store_path, create=True)
    make_file(s, b"kept", b"1")
    published = s.publish()
    make_file(s, b"lost", b"2")
    assert s.dirty
    s.backend.close()  # the process dies: no publish, no close
    with Store.open(store_path) as s2:
        assert s2.published_logseq == published
        assert s2.lookup(ROOT_INO, b"kept") is not None
        assert s2.lookup(ROOT_INO, b"lost") is None
        assert_clean(s2)


def test_file_versions_newest_first(store: Store) -> None:
    f = make_file(store, b"f", b"v1")
    write_file(store, f, b"version two")
    write_file(store, f, b"3")
    versions = store.file_versions(f)
    assert [v.version for v in versions] == [3, 2, 1]
    assert [v.size for v in versions] == [1, 11, 2]
    assert versions[0].logseq > versions[1].logseq > versions[2].logseq
    assert store.read_chunk(versions[1].blocks[0]) == b"version two"
    assert store.file_versions(12345) == []
    assert_clean(store)


def test_read_only_open_sees_last_publish_without_lock(store_path: Path) -> None:
    with Store.open(store_path, create=True) as s:
        make_file(s, b"a", b"1")
        s.publish()
        make_file(s, b"b", b"2")
        ro = Store.open(store_path, read_only=True)
        try:
            assert ro.lookup(ROOT_INO, b"a") is not None
            assert ro.lookup(ROOT_INO, b"b") is None
            with pytest.raises(StoreError):
                ro.alloc_ino()
            assert ro.fsck().ok
        finally:
            ro.close()


def test_stats(store: Store) -> None:
    data = os.urandom(BLOCK_SIZE)
    make_file(store, b"a", data)
    make_file(store, b"b", data)
    store.create_snapshot("s")
    st = store.stats()
    assert st["chunks"] == 1 and st["block_refs"] == 2 and st["dedup_ratio"] == 2.0
    assert st["logical_bytes"] == 2 * BLOCK_SIZE
    assert st["snapshots"] == 1 and st["head_logseq"] == st["published_logseq"]
    assert st["store_bytes"] > BLOCK_SIZE


def test_default_store_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VEGAFS_HOME", str(tmp_path / "h"))
    assert default_store_path() == tmp_path / "h" / "default"
    monkeypatch.delenv("VEGAFS_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "x"))
    assert default_store_path("n") == tmp_path / "x" / "vegafs" / "n"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_store_path() == tmp_path / ".local" / "share" / "vegafs" / "default"

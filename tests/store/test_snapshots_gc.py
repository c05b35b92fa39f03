"""Snapshots, views, rollback and its undo, gc (reachability, crash at every gc step), checkpoints."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.store.conftest import assert_clean, make_file, read_file, snapshot_state, write_file
from vegafs.store import (
    BLOCK_SIZE,
    ROOT_INO,
    STORE_EXISTS,
    STORE_NOT_FOUND,
    Store,
    StoreError,
    faultpoints,
)
from vegafs.store import store as store_mod


def test_snapshot_view_and_rollback_with_undo(store_path: Path) -> None:
    with Store.open(store_path, create=True) as s:
        f = make_file(s, b"f", b"one")
        snap = s.create_snapshot("v1")
        assert snap.logseq == s.published_logseq - 1 or snap.logseq <= s.published_logseq
        at_v1 = snapshot_state(s)
        write_file(s, f, b"two")
        g = make_file(s, b"g", b"new")
        at_head = snapshot_state(s)
        view = s.view("v1")
        assert read_file(view, f) == b"one" and view.lookup(ROOT_INO, b"g") is None
        assert view.listdir(ROOT_INO) == [(b"f", f)]
        with pytest.raises(StoreError) as e:
            s.create_snapshot("v1")
        assert e.value.code == STORE_EXISTS
        with pytest.raises(ValueError):
            s.create_snapshot("a/b")
        rb = s.rollback("v1")
        assert snapshot_state(s) == at_v1 and read_file(s, f) == b"one"
        info = s.rollbacks()[-1]
        assert info.logseq == rb and info.name == "v1" and info.target == snap.logseq
        s.rollback_to(info.pre_head)  # undo the rollback
        assert snapshot_state(s) == at_head and read_file(s, g) == b"new"
        assert_clean(s)
    with Store.open(store_path) as s:
        assert snapshot_state(s) == at_head
        shutil.rmtree(store_path / "index")
    with Store.open(store_path) as s:
        assert snapshot_state(s) == at_head  # replay of ROLLBACK records is deterministic
        assert [x.name for x in s.list_snapshots()] == ["v1"]
        s.delete_snapshot("v1")
        with pytest.raises(StoreError) as e:
            s.delete_snapshot("v1")
        assert e.value.code == STORE_NOT_FOUND
        with pytest.raises(StoreError):
            s.rollback("v1")
        assert_clean(s)
    with Store.open(store_path) as s:
        assert s.list_snapshots() == []


def test_gc_keeps_everything_reachable_and_reclaims_the_rest(store_path: Path) -> None:
    with Store.open(store_path, create=True) as s:
        kept_by_snap = os.urandom(BLOCK_SIZE)
        f = make_file(s, b"f", kept_by_snap)
        s.create_snapshot("old")
        for _ in range(5):
            write_file(s, f, os.urandom(BLOCK_SIZE))  # garbage: no snapshot names these
        head_data = os.urandom(2 * BLOCK_SIZE)
        write_file(s, f, head_data)
        before = snapshot_state(s)
        size_before = s.stats()["store_bytes"]
        report = s.gc()
        assert report.chunks_kept == 3 and report.chunks_dropped == 5
        assert s.stats()["store_bytes"] < size_before - 4 * BLOCK_SIZE
        assert snapshot_state(s) == before
        assert read_file(s, f) == head_data
        assert read_file(s.view("old"), f) == kept_by_snap
        assert_clean(s)
        # Still a working store after gc: write, snapshot, rollback, gc again.
        g = make_file(s, b"g", b"after gc")
        s.create_snapshot("new")
        s.rollback("old")
        assert s.lookup(ROOT_INO, b"g") is None
        s.rollback("new")
        assert read_file(s, g) == b"after gc"
        s.gc()
        assert_clean(s)
        final = snapshot_state(s)
    shutil.rmtree(store_path / "index")
    with Store.open(store_path) as s:
        assert snapshot_state(s) == final
        assert read_file(s.view("old"), f) == kept_by_snap
        assert [seg.name for seg in (store_path / "segments").iterdir()] == s._segments
        assert_clean(s)


class Crash(Exception):
    """Stands for the process dying at a fault point."""


GC_POINTS = [n for n in faultpoints.NAMES if n.startswith("gc.")]


@pytest.mark.parametrize("point", GC_POINTS)
def test_crash_at_each_gc_step_loses_nothing_reachable(store_path: Path, point: str) -> None:
    s = Store.open(store_path, create=True)
    f = make_file(s, b"f", b"snap data")
    s.create_snapshot("s")
    write_file(s, f, b"garbage")
    write_file(s, f, b"head data")
    s.publish()
    before = snapshot_state(s)

    def crash(name: str) -> None:
        if name == point:
            raise Crash(name)

    with faultpoints.installed(crash), pytest.raises(Crash):
        s.gc()
    s.backend.close()  # died: no publish, no checkpoint, lock released by the kernel
    with Store.open(store_path) as s2:
        assert snapshot_state(s2) == before
        assert read_file(s2, f) == b"head data"
        assert read_file(s2.view("s"), f) == b"snap data"
        gens = {name.name.split("-")[0] for name in (store_path / "segments").iterdir()}
        assert len(gens) == 1, f"leftovers of the interrupted gc remain: {gens}"
        assert_clean(s2)
        s2.gc()
        assert_clean(s2)


def test_view_at_compacted_history_is_refused(store: Store) -> None:
    f = make_file(store, b"f", b"1")
    early = store.publish()
    write_file(store, f, b"2")
    assert read_file(store.view_at(early), f) == b"1"
    store.gc()
    with pytest.raises(StoreError) as e:
        store.view_at(early)
    assert e.value.code == STORE_NOT_FOUND
    assert [v.size for v in store.file_versions(f)] == [1]  # history before gc is compacted


def test_segments_roll_and_checkpoint_reopens_fast(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "SEGMENT_TARGET", 64 * 1024)
    monkeypatch.setattr(store_mod, "CHECKPOINT_INTERVAL", 5000)
    n = 20_000
    with Store.open(store_path, create=True) as s:
        f = make_file(s, b"f", b"x")
        for i in range(n):
            with s.transaction() as t:
                t.update(f, mtime_ns=i)
            if i % 1000 == 0:
                s.publish()
        expected = snapshot_state(s)
        assert len(s._segments) > 3
    started = time.perf_counter()
    with Store.open(store_path) as s:
        elapsed = time.perf_counter() - started
        assert snapshot_state(s) == expected
        assert_clean(s)
    assert elapsed < 0.5, f"open after a checkpoint took {elapsed:.3f}s"
    shutil.rmtree(store_path / "index")
    with Store.open(store_path) as s:
        assert snapshot_state(s) == expected


@pytest.mark.slow
def test_million_records_open_under_a_second(store_path: Path) -> None:
    with Store.open(store_path, create=True) as s:
        f = make_file(s, b"f", b"x")
        for i in range(1_000_000):
            with s.transaction() as t:
                t.update(f, mtime_ns=i)
            if i % 10_000 == 0:
                s.publish()
    started = time.perf_counter()
    with Store.open(store_path) as s:
        elapsed = time.perf_counter() - started
        assert s.stats()["records"] > 1_000_000
    assert elapsed < 1.0, f"open of 1M records after a checkpoint took {elapsed:.3f}s"


def test_has_chunk_and_view_at(store: Store) -> None:
    h = store.put_chunk(b"abc")
    assert store.has_chunk(h) and not store.has_chunk(b"\0" * 32)
    f = make_file(store, b"f", b"abc")
    at = store.publish()
    write_file(store, f, b"xyz")
    view = store.view_at(at)
    assert view.logseq == at and view.name is None and read_file(view, f) == b"abc"
    with pytest.raises(StoreError):
        store.view_at(store.head_logseq + 10)
    assert_clean(store)


def test_gc_spares_a_chunk_put_but_not_yet_referenced_once(store: Store) -> None:
    f = make_file(store, b"f", b"")
    h = store.put_chunk(b"in flight")
    first = store.gc()
    assert first.chunks_kept == 1  # the write in flight keeps its chunk
    with store.transaction() as t:
        t.set_blocks(f, {0: h}, 9)
    assert read_file(store, f) == b"in flight"
    orphan = store.put_chunk(b"never referenced")
    store.gc()
    assert store.has_chunk(orphan)  # spared once...
    store.gc()
    assert not store.has_chunk(orphan)  # ...and reclaimed by the next gc
    assert store.has_chunk(h)
    assert_clean(store)

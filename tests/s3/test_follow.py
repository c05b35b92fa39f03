"""A read-only store follows its writer: ``poll_head`` + ``apply_head`` (store level).

Run on both backends (the follower mount is the same code on a local store):
the reader must see exactly the writer's published state after each poll —
new files, renames, deletes, new segments, snapshots — replayed
incrementally, and a reload when a rollback or a gc changed the log under it;
a reader pinned to a snapshot never moves.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vegafs.store import ROOT_INO, STORE_IO_ERROR, Store, StoreError
from vegafs.store import store as store_module
from vegafs.store.s3backend import S3Backend

from .conftest import MotoServer, Outage

_ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("_follow_helpers", _ROOT / "tests/store/conftest.py")
assert _spec is not None and _spec.loader is not None
_h = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_h)
make_file, read_file, snapshot_state = _h.make_file, _h.read_file, _h.snapshot_state

Opener = Callable[[], Store]


@pytest.fixture(params=["local", "s3"])
def pair(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Store, Opener]]:
    """(the writer, a factory of read-only openers on their own caches), on either backend."""
    # Every publish past 4 KiB starts a new segment: the follower crosses segments.
    monkeypatch.setattr(store_module, "SEGMENT_TARGET", 4096)
    if request.param == "local":
        location: str = str(tmp_path / "store")

        def reader() -> Store:
            return Store.open(location, read_only=True)

    else:
        server: MotoServer = request.getfixturevalue("s3_server")
        location = request.getfixturevalue("s3_env")
        caches = iter(range(100))

        def reader() -> Store:
            cache = tmp_path / f"reader{next(caches)}"
            return Store.open(S3Backend(location, endpoint_url=server.url, cache_dir=cache), read_only=True)

    writer = Store.open(location, create=True)
    try:
        yield writer, reader
    finally:
        writer.close()


def _follow(reader: Store, writer: Store) -> store_module.HeadChanges | None:
    """One poll of the reader, after the writer's uploads (s3: the journal) reached the bucket."""
    writer.backend.drain()
    update = reader.poll_head()
    return None if update is None else reader.apply_head(update)


def test_reader_follows_incrementally(pair: tuple[Store, Opener]) -> None:
    writer, open_reader = pair
    a = make_file(writer, b"a", b"first" * 1000)
    writer.publish()
    reader = open_reader()
    try:
        assert _follow(reader, writer) is None  # nothing new
        b = make_file(writer, b"b", b"second" * 2000)  # > 4 KiB: the next publish rolls
        with writer.transaction() as t:
            t.link(ROOT_INO, b"a2", a)
            t.unlink(ROOT_INO, b"a")
        writer.publish()
        make_file(writer, b"unpublished", b"x")
        changes = _follow(reader, writer)
        assert changes is not None and not changes.everything
        assert {(ROOT_INO, b"a"), (ROOT_INO, b"a2"), (ROOT_INO, b"b")} <= changes.entries
        assert b in changes.inodes and changes.logseq == reader.published_logseq
        assert reader.lookup(ROOT_INO, b"a") is None
        assert reader.lookup(ROOT_INO, b"a2") == a
        assert read_file(reader, b) == b"second" * 2000
        assert reader.lookup(ROOT_INO, b"unpublished") is None
        writer.publish()
        with writer.transaction() as t:
            t.unlink(ROOT_INO, b"b")
            t.delete_inode(b)
        writer.create_snapshot("s1")  # publishes: SNAPSHOT records replay too
        changes = _follow(reader, writer)
        assert changes is not None and changes.snapshots and b in changes.inodes
        assert [s.name for s in reader.list_snapshots()] == ["s1"]
        assert snapshot_state(reader) == snapshot_state(writer)
        assert len(reader._segments) > 2  # it crossed into new segments
        assert reader.fsck().ok
        if isinstance(reader.backend, S3Backend):  # a follower never writes to the bucket
            assert reader.backend.counters["puts"] == 0 and not reader.backend._writer
    finally:
        reader.close()


def test_reader_reloads_after_rollback_and_gc_and_pinned_reader_stays(
    pair: tuple[Store, Opener],
) -> None:
    writer, open_reader = pair
    make_file(writer, b"keep", b"k" * 5000)
    writer.create_snapshot("s1")
    at_s1 = snapshot_state(writer)
    reader, pinned = open_reader(), open_reader()
    try:
        pinned.pin("s1")
        make_file(writer, b"later", b"l" * 5000)
        writer.publish()
        assert _follow(pinned, writer) is None  # a pinned reader does not move
        changes = _follow(reader, writer)
        assert changes is not None and reader.lookup(ROOT_INO, b"later") is not None
        writer.rollback("s1")
        writer.publish()
        changes = _follow(reader, writer)
        assert changes is not None and changes.everything
        assert snapshot_state(reader) == snapshot_state(writer) == at_s1
        make_file(writer, b"after", b"a" * 5000)
        writer.publish()
        writer.gc()  # a new generation: every segment name changes
        changes = _follow(reader, writer)
        assert changes is not None and changes.everything
        assert snapshot_state(reader) == snapshot_state(writer)
        assert read_file(reader, reader.lookup(ROOT_INO, b"after")) == b"a" * 5000
        changes = _follow(pinned, writer)
        assert changes is not None and changes.everything
        assert snapshot_state(pinned) == at_s1
        keep = pinned.lookup(ROOT_INO, b"keep")
        assert keep is not None and read_file(pinned, keep) == b"k" * 5000  # new segment names
    finally:
        reader.close()
        pinned.close()


def test_failed_poll_keeps_the_state_and_the_next_one_catches_up(
    s3_env: str, s3_server: MotoServer, outage: Outage, tmp_path: Path
) -> None:
    """The endpoint goes away under a follower: a poll fails cleanly, nothing shown changes."""
    with Store.open(S3Backend(s3_env, endpoint_url=s3_server.url, cache_dir=tmp_path / "w"), create=True) as w:
        make_file(w, b"a", b"1")
        w.publish()
        w.backend.drain()
        reader = Store.open(
            S3Backend(s3_env, endpoint_url=outage.url, cache_dir=tmp_path / "r"), read_only=True
        )
        try:
            make_file(w, b"b", b"2")
            w.publish()
            w.backend.drain()
            before = snapshot_state(reader)
            outage.down()
            with pytest.raises(StoreError) as e:
                reader.poll_head()
            assert e.value.code == STORE_IO_ERROR
            assert snapshot_state(reader) == before and reader.lookup(ROOT_INO, b"b") is None
            outage.up()
            update = reader.poll_head()
            assert update is not None
            reader.apply_head(update)
            assert snapshot_state(reader) == snapshot_state(w)
        finally:
            reader.close()

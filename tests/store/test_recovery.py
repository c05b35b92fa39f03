"""Recovery: torn tails, damage in sealed segments, missing segments, a deleted index, ENOSPC."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from tests.store.conftest import assert_clean, make_file, read_file, snapshot_state
from vegafs.store import ROOT_INO, STORE_IO_ERROR, LocalBackend, Store, StoreError
from vegafs.store import store as store_mod
from vegafs.store.backend import Backend
from vegafs.store.records import SEGMENT_HEADER


def _segments(path: Path) -> list[Path]:
    return sorted((path / "segments").iterdir())


def test_truncated_last_record_at_every_offset(store_path: Path) -> None:
    """Cut the last segment inside its last published record, at every byte: the store opens
    at the publish before it, fsck is clean, and the result is the same on every reopen."""
    with Store.open(store_path, create=True) as s:
        make_file(s, b"a", b"first")
        s.publish()
        published = snapshot_state(s)
        first_pub = s.published_logseq
        seg = _segments(store_path)[-1]
        start = seg.stat().st_size
        f = make_file(s, b"b", b"second")  # CHUNK + TXN
        with s.transaction() as t:
            t.set_xattr(f, b"user.x", b"y")
        s.publish()
        full = s.published_logseq
    whole = seg.read_bytes()
    for cut in range(start, len(whole)):
        seg.write_bytes(whole[:cut])
        shutil.rmtree(store_path / "index", ignore_errors=True)  # replay the whole log
        with Store.open(store_path) as s:
            assert s.published_logseq == first_pub, cut
            assert snapshot_state(s) == published, cut
            assert seg.stat().st_size == start
            if cut % 16 == 0:
                assert_clean(s)
        if cut % 7 == 0:  # deterministic and repeatable
            with Store.open(store_path) as s:
                assert snapshot_state(s) == published, cut
    seg.write_bytes(whole)
    shutil.rmtree(store_path / "index", ignore_errors=True)
    with Store.open(store_path) as s:
        assert s.published_logseq == full


def _sealed_store(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, int]:  # type: ignore[type-arg]
    monkeypatch.setattr(store_mod, "SEGMENT_TARGET", 4096)
    with Store.open(store_path, create=True) as s:
        files = {}
        for i in range(6):
            data = os.urandom(3000)
            files[make_file(s, f"f{i}".encode(), data)] = data
            s.publish()
        assert len(_segments(store_path)) > 2
        return files, s.head_logseq


def test_bit_flip_in_sealed_segment_is_detected_and_repaired(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, _head = _sealed_store(store_path, monkeypatch)
    sealed = _segments(store_path)[0]
    raw = bytearray(sealed.read_bytes())
    pos = SEGMENT_HEADER.size + 400  # inside the first file's CHUNK data
    raw[pos] ^= 0x10
    sealed.write_bytes(bytes(raw))
    shutil.rmtree(store_path / "index")
    with pytest.raises(StoreError) as e:
        Store.open(store_path)
    assert e.value.code == STORE_IO_ERROR and "fsck --repair" in str(e.value)
    with Store.open(store_path, read_only=True, repair=True) as ro:
        report = ro.fsck()
        assert not report.ok and any("damaged" in p for p in report.problems)
    with Store.open(store_path, repair=True) as s:
        report = s.fsck(repair=True)
        assert report.ok, report.describe()
        assert any("quarantine" in r for r in report.repaired)
        assert any("reads as zeros" in r for r in report.repaired)
        for ino, data in files.items():
            got = read_file(s, ino)
            assert got == data or (got == bytes(len(data)) and ino == min(files))
    assert list((store_path / "quarantine").iterdir())
    with Store.open(store_path) as s:
        assert_clean(s)


def test_missing_segment_is_reported_and_repaired(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, _head = _sealed_store(store_path, monkeypatch)
    _segments(store_path)[1].unlink()
    with pytest.raises(StoreError) as e:
        Store.open(store_path)
    assert "missing" in str(e.value)
    with Store.open(store_path, repair=True) as s:
        report = s.fsck(repair=True)
        assert report.ok, report.describe()
        kept = [
            ino for ino, data in files.items() if s.get_inode(ino) and read_file(s, ino) == data
        ]
        assert kept, "files outside the missing segment survive"
    with Store.open(store_path) as s:
        assert_clean(s)


def test_deleted_index_rebuilds_identical_state(store_path: Path) -> None:
    with Store.open(store_path, create=True) as s:
        for i in range(20):
            make_file(s, f"f{i}".encode(), os.urandom(100))
        s.create_snapshot("s")
        with s.transaction() as t:
            t.unlink(ROOT_INO, b"f3")
        s.rollback("s")
        before = snapshot_state(s)
        chunks = dict(s._chunks)
    assert (store_path / "index" / "head.sqlite").exists()
    shutil.rmtree(store_path / "index")
    with Store.open(store_path) as s:
        assert snapshot_state(s) == before
        assert s._chunks == chunks
        assert_clean(s)
    assert (store_path / "index" / "head.sqlite").exists()


def test_stale_checkpoint_is_ignored(store_path: Path) -> None:
    with Store.open(store_path, create=True) as s:
        make_file(s, b"a", b"1")
    old_cp = (store_path / "index" / "head.sqlite").read_bytes()
    with Store.open(store_path) as s:
        make_file(s, b"b", b"2")
        s.gc()  # new generation: the old checkpoint no longer matches
        before = snapshot_state(s)
    (store_path / "index" / "head.sqlite").write_bytes(old_cp)
    with Store.open(store_path) as s:
        assert snapshot_state(s) == before
        assert_clean(s)


class FailingBackend(LocalBackend):
    """A local backend whose appends fail (optionally after writing a prefix)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.fail_appends: int | None = None  # errno to raise on append
        self.torn = False
        self.fail_truncate = False

    def append(self, name: str, data: bytes) -> None:
        if self.fail_appends is not None:
            if self.torn:
                super().append(name, data[: len(data) // 2])
            raise OSError(self.fail_appends, os.strerror(self.fail_appends))
        super().append(name, data)

    def truncate(self, name: str, size: int) -> None:
        if self.fail_truncate:
            raise OSError(errno.EIO, "truncate failed")
        super().truncate(name, size)


@pytest.mark.parametrize("torn", [False, True])
def test_enospc_while_appending(store_path: Path, torn: bool) -> None:
    Store.open(store_path, create=True).close()
    backend = FailingBackend(store_path)
    s = Store.open(backend)
    make_file(s, b"a", b"1")
    before = snapshot_state(s)
    head = s.head_logseq
    backend.fail_appends, backend.torn = errno.ENOSPC, torn
    with pytest.raises(StoreError) as e:
        make_file(s, b"b", os.urandom(1000))
    assert e.value.code == STORE_IO_ERROR and e.value.errno == errno.ENOSPC
    assert snapshot_state(s) == before and s.head_logseq == head
    with pytest.raises(StoreError), s.transaction() as t:
        t.unlink(ROOT_INO, b"a")
    assert snapshot_state(s) == before
    backend.fail_appends = None  # space again: the store goes on where it was
    make_file(s, b"c", b"3")
    s.close()
    with Store.open(store_path) as s2:
        assert [n for n, _ in s2.listdir(ROOT_INO)] == [b"a", b"c"]
        assert_clean(s2)


def test_writer_is_sticky_failed_when_tail_cannot_be_restored(store_path: Path) -> None:
    Store.open(store_path, create=True).close()
    backend = FailingBackend(store_path)
    s = Store.open(backend)
    make_file(s, b"a", b"1")
    s.publish()
    backend.fail_appends, backend.torn, backend.fail_truncate = errno.EIO, True, True
    with pytest.raises(StoreError):
        make_file(s, b"b", b"2")
    backend.fail_appends, backend.fail_truncate = None, False
    with pytest.raises(StoreError) as e:
        make_file(s, b"c", b"3")
    assert "stopped accepting writes" in str(e.value)
    s.close()  # must not raise: nothing more is written
    with Store.open(store_path) as s2:
        assert [n for n, _ in s2.listdir(ROOT_INO)] == [b"a"]
        assert_clean(s2)


def test_unknown_record_types_are_skipped(store_path: Path) -> None:
    with Store.open(store_path, create=True) as s:
        make_file(s, b"a", b"1")
        with s._lock:
            s._append(200, b"from the future")
        make_file(s, b"b", b"2")
    shutil.rmtree(store_path / "index")
    with Store.open(store_path) as s:
        assert [n for n, _ in s.listdir(ROOT_INO)] == [b"a", b"b"]
        with s._lock:
            s._append(201, b"must understand", flags=0x8000)
    shutil.rmtree(store_path / "index")
    with pytest.raises(StoreError) as e:
        Store.open(store_path)
    assert "newer vegafs" in str(e.value)


def test_backend_is_abstract() -> None:
    with pytest.raises(TypeError):
        Backend()  # type: ignore[abstract]


def test_interrupted_create_is_finished_on_next_open(store_path: Path) -> None:
    Store.open(store_path, create=True).close()
    (store_path / "MANIFEST").unlink()  # died after FORMAT, before MANIFEST
    seg = _segments(store_path)[0]
    seg.write_bytes(seg.read_bytes()[:70])  # and mid-way through the genesis segment
    with Store.open(store_path, create=True) as s:
        assert s.get_inode(ROOT_INO) is not None
        assert_clean(s)


def test_repair_quarantines_damaged_active_segment_before_recovery_cuts_it(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sealed_store(store_path, monkeypatch)
    active = _segments(store_path)[-1]
    with Store.open(store_path) as s:
        make_file(s, b"late", os.urandom(500))  # published records in the active segment
    raw = bytearray(active.read_bytes())
    size = len(raw)
    raw[0] ^= 0xFF  # its header no longer parses: nothing in it can be framed
    active.write_bytes(bytes(raw))
    shutil.rmtree(store_path / "index")
    with Store.open(store_path, repair=True) as s:
        report = s.fsck(repair=True)
        assert report.ok, report.describe()
    kept = store_path / "quarantine" / f"{active.name}.0.bin"
    assert kept.read_bytes() == bytes(raw) and len(raw) == size
    with Store.open(store_path) as s:
        assert_clean(s)

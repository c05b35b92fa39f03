"""fsck: each invariant is checked (corrupt, then detect), repair fixes, a live writer is no problem."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

from tests.store.conftest import assert_clean, make_file
from vegafs.store import ROOT_INO, Store


def test_memory_diverging_from_the_log_is_found_and_rebuilt(store: Store) -> None:
    f = make_file(store, b"f", b"data")
    store.get_inode(f).uid = 4242  # a bug that changed memory without a record
    report = store.fsck()
    assert any(f"inode {f} in memory differs" in p for p in report.problems), report.describe()
    report = store.fsck(repair=True)
    assert report.ok and any("rebuilt" in r for r in report.repaired), report.describe()
    assert store.get_inode(f).uid == 0
    assert_clean(store)


def test_reference_problems_are_found_and_repaired(store: Store) -> None:
    f = make_file(store, b"f", b"data")
    orphan = make_file(store, b"o", b"x")
    lost = store.alloc_ino()
    with store.transaction() as t:
        t.update(f, nlink=3)  # wrong: one entry names it
        t.unlink(ROOT_INO, b"o")
        t.update(orphan, nlink=0)  # open and unlinked when the store closed: a note
        t.create_inode(lost, mode=stat.S_IFREG | 0o600, uid=0, gid=0, times_ns=1)
        t.update(lost, nlink=1)  # claims an entry but has none: unreachable
    report = store.fsck()
    problems = "\n".join(report.problems)
    assert f"inode {f} has nlink 3, but 1 directory entries name it" in problems
    assert f"inode {lost} is not reachable from the root" in problems
    assert any(f"inode {orphan}" in n for n in report.notes)
    report = store.fsck(repair=True)
    assert report.ok, report.describe()
    assert store.get_inode(f).nlink == 1
    assert store.get_inode(orphan) is None
    lf = store.lookup(ROOT_INO, b"lost+found")
    assert lf is not None and store.lookup(lf, str(lost).encode()) == lost
    assert_clean(store)


def test_fsck_while_a_writer_appends(store_path: Path) -> None:
    with Store.open(store_path, create=True) as s:
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                i = 0
                while not stop.is_set():
                    make_file(s, f"w{i}".encode(), b"x" * 100)
                    i += 1
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=writer)
        t.start()
        try:
            for _ in range(3):
                report = s.fsck()
                assert report.ok, report.describe()
        finally:
            stop.set()
            t.join()
        assert not errors
        assert_clean(s)

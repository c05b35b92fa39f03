"""The failsafe, below FUSE: a store that cannot write turns the file system read-only.

A :class:`FileSystem` runs over a store whose backend fails one call, armed
right after some data was published. For each kind of failure — an fsync
that fails (the store stops for good: its sticky failure), an append that
hits ENOSPC, an append torn halfway with EIO (both undone by the store, which
stays consistent) — the test checks that:

* the request that met the failure gets the store's errno (EIO, ENOSPC);
* from then on every change is refused with EROFS — namespace changes,
  attributes, xattrs, opening for writing, writing on a handle already open —
  and the reason is logged once and kept in ``fs.read_only_reason``;
* a file whose buffered writes could not be stored reports it (EROFS) once,
  at its next flush, and then reads as its last recorded version;
* reads, listings and attributes keep working;
* closing the file system and the store raises nothing, and a reopened store
  is fsck-clean and holds everything published before the failure.

The real-mount version (a full tmpfs, an injected fsync failure under a live
daemon) is tests/store_faults/test_mount_failsafe.py.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from tests.store_faults.faulty_backend import ArmedBackend, FaultPlan
from vegafs.fs import ROOT_CTX, FileSystem, FsError
from vegafs.store import BLOCK_SIZE, ROOT_INO, Store
from vegafs.store.backend import LocalBackend

KEEP = b"published before the failure\n" * 100

# (plan, does the store stop for good)
FAULTS = {
    "fsync-EIO": (FaultPlan("sync", 1, errno.EIO, "error"), True),
    "append-ENOSPC": (FaultPlan("write", 1, errno.ENOSPC, "error"), False),
    "append-torn-EIO": (FaultPlan("write", 1, errno.EIO, "torn"), False),
}


def _errno(fn, *args, **kwargs) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(FsError) as info:
        fn(*args, **kwargs)
    return info.value.errno


def _read_all(fs: FileSystem, ino: int) -> bytes:
    fh = fs.open(ino, os.O_RDONLY, ROOT_CTX)
    try:
        return fs.read(fh, 0, 1 << 20)
    finally:
        fs.release(fh)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_store_failure_turns_the_fs_read_only(
    fault: str, shm_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plan, sticky = FAULTS[fault]
    path = shm_path / "store"
    Store.open(path, create=True).close()
    backend = ArmedBackend(LocalBackend(path), plan)
    store = Store.open(backend)
    fs = FileSystem(store)

    # Before the failure: a published file and directory, and a draft only buffered.
    fh, keep = fs.create(ROOT_INO, b"keep", 0o644, os.O_RDWR, ROOT_CTX)
    fs.write(fh, 0, KEEP)
    fs.release(fh)
    subdir = fs.mkdir(ROOT_INO, b"dir", 0o755, ROOT_CTX)
    fs.sync()
    draft_fh, draft = fs.create(ROOT_INO, b"draft", 0o644, os.O_RDWR, ROOT_CTX)
    fs.write(draft_fh, 0, b"never stored")

    backend.arm()
    with caplog.at_level(logging.ERROR, logger="vegafs.fs"):
        new_fh = None
        try:  # each step appends: a TXN, a CHUNK (a whole block is stored at once), a publish
            new_fh, new = fs.create(ROOT_INO, b"new", 0o644, os.O_RDWR, ROOT_CTX)
            fs.write(new_fh, 0, bytes(BLOCK_SIZE + 10))
            fs.fsync(new_fh, new.ino)
        except FsError as exc:
            first = exc.errno
        else:
            raise AssertionError(f"{plan.describe()} never fired: {backend.counts}")
        assert first == plan.errno, f"{plan.describe()}: the failing request got {first}"
        assert fs.read_only_reason and "injected" in fs.read_only_reason

        # Every change is refused now.
        assert _errno(fs.mkdir, ROOT_INO, b"more", 0o755, ROOT_CTX) == errno.EROFS
        assert _errno(fs.create, ROOT_INO, b"more", 0o644, os.O_RDWR, ROOT_CTX) == errno.EROFS
        assert _errno(fs.unlink, ROOT_INO, b"keep", ROOT_CTX) == errno.EROFS
        assert _errno(fs.rmdir, ROOT_INO, b"dir", ROOT_CTX) == errno.EROFS
        assert _errno(fs.rename, ROOT_INO, b"keep", ROOT_INO, b"kept", 0, ROOT_CTX) == errno.EROFS
        assert _errno(fs.link, keep.ino, ROOT_INO, b"again", ROOT_CTX) == errno.EROFS
        assert _errno(fs.symlink, ROOT_INO, b"sym", b"keep", ROOT_CTX) == errno.EROFS
        assert _errno(fs.setxattr, keep.ino, b"user.k", b"v", 0, ROOT_CTX) == errno.EROFS
        assert _errno(fs.setattr, keep.ino, ROOT_CTX, mode=0o600) == errno.EROFS
        assert _errno(fs.setattr, keep.ino, ROOT_CTX, size=0) == errno.EROFS
        assert _errno(fs.open, keep.ino, os.O_WRONLY, ROOT_CTX) == errno.EROFS
        assert _errno(fs.write, draft_fh, 0, b"x") == errno.EROFS

        # The draft's buffered bytes are lost: its next flush says so, once.
        assert _errno(fs.flush, draft_fh) == errno.EROFS
        fs.flush(draft_fh)
        fs.release(draft_fh)
        if new_fh is not None:
            fs.release(new_fh)

        # Reads keep working, from the published and in-memory state.
        assert _read_all(fs, keep.ino) == KEEP
        assert _read_all(fs, draft.ino) == b""
        assert fs.getattr(subdir.ino).ino == subdir.ino
        assert {name for name, _ in fs.store.listdir(ROOT_INO)} >= {b"keep", b"dir", b"draft"}

        # fsync on a read-only fs: fine when nothing is left unpublished; a
        # store that stopped for good cannot publish what it accepted.
        if sticky:
            assert _errno(fs.fsync, None, keep.ino) == errno.EIO
        else:
            fs.fsync(None, keep.ino)  # publishes what was accepted before the failure
            assert not store.dirty
        fs.close()
        store.close()
    logged = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(logged) == 1, logged
    assert "read-only" in logged[0]

    # Reopened without faults: everything published is there, fsck is clean.
    store = Store.open(path)
    try:
        report = store.fsck()
        assert report.ok, report.problems
        fs = FileSystem(store)
        ino = store.lookup(ROOT_INO, b"keep")
        assert ino is not None and _read_all(fs, ino) == KEEP
        assert store.lookup(ROOT_INO, b"dir") is not None
        fs.mkdir(ROOT_INO, b"writable-again", 0o755, ROOT_CTX)
        fs.close()
    finally:
        store.close()

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

``test_every_failed_call_turns_the_fs_read_only`` does it for every N: the
Nth write (ENOSPC, or torn with EIO) or sync (EIO) call of a nine-step
workload (create, write across blocks, mkdir, rename, unlink, overwrite,
truncate; a sync after each step) fails — 29 + 29 + 9 failure points. Each
time the failing step gets that errno, every later step EROFS (or ENOENT for
a path a refused step would have made), closing raises nothing, and the
reopened store is fsck-clean and holds exactly what the steps before
published (the failing step's own paths: before, after, or empty).

The real-mount version (a full tmpfs, an injected fsync failure under a live
daemon) is tests/store_faults/test_mount_failsafe.py.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------------------
# For every N: the Nth write or sync call of a workload fails.

# A workload of steps, each one operation then a sync (so step k's state is
# published before step k+1 runs). A step is (description, paths it changes,
# function of (fs) -> None). Paths are relative to the root, one level deep.
Step = tuple[str, tuple[str, ...], Any]


def _parent_and_name(fs: FileSystem, path: str) -> tuple[int, bytes]:
    *dirs, name = path.split("/")
    parent = ROOT_INO
    for d in dirs:
        parent = fs.lookup(parent, d.encode()).ino
    return parent, name.encode()


def _put(path: str, data: bytes, offset: int = 0) -> Any:
    def run(fs: FileSystem) -> None:
        parent, name = _parent_and_name(fs, path)
        ino = fs.store.lookup(parent, name)
        if ino is None:
            fh, _ = fs.create(parent, name, 0o644, os.O_RDWR, ROOT_CTX)
        else:
            fh = fs.open(ino, os.O_RDWR, ROOT_CTX)
        try:
            fs.write(fh, offset, data)
            fs.flush(fh)
        except FsError:
            with contextlib.suppress(FsError):  # like the kernel, which ignores release's errno
                fs.release(fh)
            raise
        fs.release(fh)

    return run


def _call(method: str, *paths: str, **kwargs: Any) -> Any:
    def run(fs: FileSystem) -> None:
        args: list[Any] = []
        for p in paths:
            args += _parent_and_name(fs, p)
        getattr(fs, method)(*args, *kwargs.values(), ROOT_CTX)

    return run


def _truncate(path: str, size: int) -> Any:
    def run(fs: FileSystem) -> None:
        parent, name = _parent_and_name(fs, path)
        fs.setattr(fs.lookup(parent, name).ino, ROOT_CTX, size=size)

    return run


BIG = bytes(range(256)) * (BLOCK_SIZE // 256)
STEPS: list[Step] = [
    ("write a", ("a",), _put("a", b"a" * 100)),
    ("mkdir d", ("d",), _call("mkdir", "d", mode=0o755)),
    ("write d/b", ("d/b",), _put("d/b", BIG + b"b" * 500)),
    ("rename a d/a2", ("a", "d/a2"), _call("rename", "a", "d/a2", flags=0)),
    ("write c", ("c",), _put("c", BIG[::-1] * 3)),
    ("unlink c", ("c",), _call("unlink", "c")),
    ("overwrite d/b", ("d/b",), _put("d/b", b"zz", 10)),
    ("truncate d/a2", ("d/a2",), _truncate("d/a2", 10)),
    ("write e", ("e",), _put("e", b"e" * 5000)),
]


def _tree(fs: FileSystem) -> dict[str, bytes | None]:
    """Every path (one level of directories) -> file content, None for a directory."""
    tree: dict[str, bytes | None] = {}
    for name, ino in fs.store.listdir(ROOT_INO):
        inode = fs.store.get_inode(ino)
        if inode.mode & 0o170000 == 0o040000:
            tree[name.decode()] = None
            for sub, sub_ino in fs.store.listdir(ino):
                tree[f"{name.decode()}/{sub.decode()}"] = _read_all(fs, sub_ino)
        else:
            tree[name.decode()] = _read_all(fs, ino)
    return tree


def _models(path: Path) -> list[dict[str, bytes | None]]:
    """The published tree after each step, from a run without faults."""
    Store.open(path, create=True).close()
    store = Store.open(path)
    fs = FileSystem(store)
    models = [_tree(fs)]
    for _what, _paths, run in STEPS:
        run(fs)
        fs.sync()
        models.append(_tree(fs))
    fs.close()
    store.close()
    return models


def _play(path: Path, plan: FaultPlan) -> tuple[ArmedBackend, int | None, int | None]:
    """Run the workload over a faulty store; (backend, failing step, its errno).

    After the first failure every later step must fail with EROFS at its
    first change (or ENOENT at a lookup), and closing must raise nothing.
    """
    Store.open(path, create=True).close()
    backend = ArmedBackend(LocalBackend(path), plan)
    backend.arm()
    store = Store.open(backend)
    fs = FileSystem(store)
    failed_at = first = None
    for k, (what, _paths, run) in enumerate(STEPS):
        try:
            run(fs)
            fs.sync()
        except FsError as exc:
            if failed_at is None:
                failed_at, first = k, exc.errno
                assert fs.read_only_reason, f"{plan.describe()}: {what} failed, fs still writable"
            else:
                # EROFS; ENOENT when a path an earlier, refused step would have made is missing
                assert exc.errno in (errno.EROFS, errno.ENOENT), (
                    f"{plan.describe()}: {what}: {exc!r}"
                )
        else:
            assert failed_at is None, f"{plan.describe()}: {what} succeeded on a read-only fs"
    fs.close()
    store.close()
    return backend, failed_at, first


@pytest.mark.parametrize(
    "plan",
    [
        FaultPlan("write", 0, errno.ENOSPC),
        FaultPlan("write", 0, errno.EIO, "torn"),
        FaultPlan("sync", 0, errno.EIO),
    ],
    ids=["write-ENOSPC", "write-torn-EIO", "sync-EIO"],
)
def test_every_failed_call_turns_the_fs_read_only(plan: FaultPlan, shm_path: Path) -> None:
    """For every N, the Nth call fails: the fs turns read-only there and loses nothing published.

    The reopened store is fsck-clean and equals the state published after the
    last step before the failing one, except on the paths that step changes
    (whose records may or may not have been published before or at close).
    """
    models = _models(shm_path / "model")
    dry, _, _ = _play(shm_path / "dry", FaultPlan(None))
    calls = dry.counts[plan.kind]
    assert calls >= len(STEPS), f"the workload makes only {calls} {plan.kind} calls"
    for nth in range(1, calls + 1):
        path = shm_path / f"n{nth}"
        nth_plan = FaultPlan(plan.kind, nth, plan.errno, plan.mode)
        backend, failed_at, first = _play(path, nth_plan)
        what = nth_plan.describe()
        assert backend.fired and failed_at is not None, f"{what}: nothing failed ({backend.fired})"
        assert first == plan.errno, f"{what}: step {STEPS[failed_at][0]} got errno {first}"
        store = Store.open(path)
        try:
            report = store.fsck()
            assert report.ok, f"{what}: {report.problems}"
            got = _tree(FileSystem(store))
        finally:
            store.close()
        before, after = models[failed_at], models[failed_at + 1]
        touched = set(STEPS[failed_at][1])
        for p in set(got) | set(before):
            if p in touched:
                assert got.get(p) in (before.get(p), after.get(p), b""), f"{what}: {p} is torn"
            else:
                assert got.get(p) == before.get(p), f"{what}: published {p} changed or lost"

"""The failsafe on a real mount: when the store cannot write, the mount turns read-only.

Two ways the store stops writing under a live daemon:

* **a full disk, for real**: the store lives on an 8 MiB tmpfs and a file is
  written through the mount until the disk is full (needs root to mount the
  tmpfs);
* **an fsync that fails** (EIO), injected under the real daemon by
  ``tests/store_faults/faulty_daemon.py`` once the test's data is published:
  the store stops for good (its sticky failure).

Either way the test checks, through the mount and the CLI: the failing
request gets the store's errno; afterwards every change fails with EROFS;
reads, listings and xattrs work; ``vegafs stats`` shows why in
``mount.read_only``; the store's ``vegafs.log`` says it once; ``vegafs
umount`` (or SIGTERM to the daemon) is clean and the daemon exits 0; a fresh mount finds everything
published before the failure, fsck is clean, and it takes writes again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mountutil import force_unmount, mounted, needs_fuse, run_vegafs, wait_mounted

pytestmark = [pytest.mark.mount, needs_fuse]

REPO = Path(__file__).resolve().parents[2]
PIECE = 1 << 20
KEEP = os.urandom(300_000)  # crosses a block boundary: two chunks
LOG_LINE = "the store cannot write"


def _errno(fn, *args) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


def _publish_sample(mnt: Path) -> None:
    """What must survive: a file, a directory with a file and an xattr; then ``vegafs sync``."""
    (mnt / "keep").write_bytes(KEEP)
    (mnt / "dir").mkdir()
    (mnt / "dir" / "small").write_text("small\n")
    os.setxattr(mnt / "dir" / "small", "user.tag", b"kept")
    run_vegafs("sync", mnt, check=True)


def _check_read_only(mnt: Path, store: Path, cause: str) -> None:
    """Every change refused with EROFS, reads fine, the reason visible and logged once."""
    assert _errno(os.mkdir, mnt / "more") == errno.EROFS
    assert _errno(os.unlink, mnt / "keep") == errno.EROFS
    assert _errno(os.rename, mnt / "keep", mnt / "kept") == errno.EROFS
    assert _errno(os.symlink, "keep", mnt / "sym") == errno.EROFS
    assert _errno(os.chmod, mnt / "keep", 0o600) == errno.EROFS
    assert _errno(os.setxattr, mnt / "keep", "user.x", b"1") == errno.EROFS
    assert _errno(os.open, mnt / "keep", os.O_WRONLY) == errno.EROFS
    assert _errno(os.open, mnt / "new", os.O_WRONLY | os.O_CREAT, 0o644) == errno.EROFS
    assert (mnt / "keep").read_bytes() == KEEP
    assert (mnt / "dir" / "small").read_text() == "small\n"
    assert os.getxattr(mnt / "dir" / "small", "user.tag") == b"kept"
    assert {"keep", "dir"} <= set(os.listdir(mnt))
    stats = run_vegafs("stats", "--store", store, "--json", check=True)
    reason = json.loads(stats.stdout)["mount"]["read_only"]
    assert reason and cause in reason, reason
    logged = (store / "vegafs.log").read_text(errors="replace")
    assert logged.count(LOG_LINE) == 1, logged[-3000:]


def _umount_and_check(
    mnt: Path, store: Path, daemon: subprocess.Popen[bytes], *, by_signal: bool = False
) -> None:
    """Clean unmount of the read-only mount (``vegafs umount``, or SIGTERM to the daemon);
    a fresh mount has the published data and takes writes."""
    if by_signal:
        daemon.send_signal(signal.SIGTERM)
    else:
        result = run_vegafs("umount", mnt)
        assert result.returncode == 0, result.stderr
    assert daemon.wait(timeout=60) == 0
    assert not os.path.ismount(mnt)
    fsck = run_vegafs("fsck", "--store", store)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    with mounted(store, mnt):
        assert (mnt / "keep").read_bytes() == KEEP
        assert (mnt / "dir" / "small").read_text() == "small\n"
        assert os.getxattr(mnt / "dir" / "small", "user.tag") == b"kept"
        (mnt / "after").write_text("writable again\n")
        assert (
            run_vegafs("stats", "--store", store, "--json", check=True).stdout.count(
                '"read_only": null'
            )
            == 1
        )


def _fill(path: Path) -> tuple[int, list[int]]:
    """Write distinct data (no dedup) to ``path`` until it fails: (bytes written, errnos seen)."""
    errors: list[int] = []
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while not errors and written < 64 * PIECE:
            try:
                written += os.write(fd, os.urandom(PIECE))
            except OSError as exc:
                errors.append(exc.errno or 0)
    finally:
        try:
            os.close(fd)
        except OSError as exc:
            errors.append(exc.errno or 0)
    return written, errors


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
@pytest.mark.timeout(180)
def test_full_disk_turns_the_mount_read_only(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    with _tmpfs(tmp_path / "tiny", "8m") as tiny:
        store = tiny / "store"
        with mounted(store, mnt) as daemon:
            _publish_sample(mnt)
            written, errors = _fill(mnt / "big")
            # The write that hit the full disk got ENOSPC (EROFS if the group
            # commit's publish hit it first); the close reports that the file's
            # buffered bytes were lost.
            assert errors[0] in (errno.ENOSPC, errno.EROFS) and errors[-1] == errno.EROFS, errors
            assert written < 8 * PIECE
            _check_read_only(mnt, store, os.strerror(errno.ENOSPC))
            _umount_and_check(mnt, store, daemon)


@contextlib.contextmanager
def _faulty_mount(
    store: Path, mnt: Path, arm: Path, plan: tuple[str, str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """``vegafs mount -f`` under tests/store_faults/faulty_daemon.py; always unmounted after."""
    mnt.mkdir(exist_ok=True)
    log = mnt.parent / "faulty.daemon.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.store_faults.faulty_daemon",
                str(arm),
                *plan,
                "--",
                "mount",
                str(mnt),
                "--store",
                str(store),
                "--foreground",
            ],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        wait_mounted(mnt, proc)
        yield proc
    finally:
        if os.path.ismount(mnt) and proc.poll() is None:
            run_vegafs("umount", mnt, timeout=60)
        force_unmount(mnt)
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.mark.timeout(180)
def test_failed_fsync_turns_the_mount_read_only(tmp_path: Path) -> None:
    store, mnt, arm = tmp_path / "store", tmp_path / "mnt", tmp_path / "arm"
    with _faulty_mount(store, mnt, arm, ("sync", "EIO", "error")) as daemon:
        _publish_sample(mnt)
        arm.touch()
        fd = os.open(mnt / "late", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"written after the fault was armed\n")
            assert _errno(os.fsync, fd) == errno.EIO
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
        _check_read_only(mnt, store, "fsync failed")
        _umount_and_check(mnt, store, daemon, by_signal=True)

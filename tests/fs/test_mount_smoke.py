"""Smoke tests on a real FUSE mount: the daemon, the CLI and the cases that kill
naive pyfuse3 file systems. (Real-tool tests — cp -a, tar, git... — are in
tests/mount.)"""

from __future__ import annotations

import errno
import mmap
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.mountutil import force_unmount, mounted, needs_fuse, run_vegafs
from vegafs.cli import control
from vegafs.store import ROOT_INO, Store

pytestmark = [pytest.mark.mount, needs_fuse]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def mnt(tmp_path: Path) -> Path:
    path = tmp_path / "mnt"
    path.mkdir()
    return path


def test_write_read_ls_and_remount(store: Path, mnt: Path) -> None:
    data = os.urandom(1_000_000)
    with mounted(store, mnt):
        (mnt / "dir").mkdir()
        (mnt / "dir" / "file").write_bytes(data)
        os.symlink("dir/file", mnt / "link")
        assert sorted(os.listdir(mnt)) == ["dir", "link"]
        assert (mnt / "link").read_bytes() == data
        result = run_vegafs("umount", mnt)
        assert result.returncode == 0, result.stderr
        assert not os.path.ismount(mnt)
    with mounted(store, mnt):
        assert (mnt / "dir" / "file").read_bytes() == data
        assert os.readlink(mnt / "link") == "dir/file"


def test_cases_that_kill_naive_daemons(store: Path, mnt: Path) -> None:
    with mounted(store, mnt) as proc:
        path = mnt / "f"
        path.write_bytes(b"0123456789")
        # O_DIRECT open, read and write (aligned buffer from mmap).
        fd = os.open(path, os.O_RDWR | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)
        buf.write(b"d" * 4096)
        assert os.pwrite(fd, buf, 0) == 4096
        os.close(fd)
        assert path.read_bytes()[:4] == b"dddd"
        # Truncate to 999,999,999,999,999 bytes: sparse, not allocated.
        os.truncate(path, 999_999_999_999_999)
        st = os.stat(path)
        assert st.st_size == 999_999_999_999_999
        assert st.st_blocks * 512 < 10 * 1024 * 1024
        with open(path, "rb") as f:
            f.seek(999_999_999_999_990)
            assert f.read() == bytes(9)
        # Write past EOF: the gap reads as zeros.
        gap = mnt / "gap"
        with open(gap, "wb") as f:
            f.write(b"a")
            f.seek(1_000_000)
            f.write(b"z")
        assert gap.read_bytes() == b"a" + bytes(999_999) + b"z"
        # The same file open twice, read-only and read-write.
        with open(gap, "rb") as ro, open(gap, "r+b") as rw:
            rw.write(b"b")
            rw.flush()
            assert ro.read(1) == b"b"
        # Errors come back as errno, and the daemon is still alive.
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / "missing")
        with pytest.raises(OSError) as info:
            os.setxattr(path, "vega.hash", b"x")
        assert info.value.errno in (errno.EPERM, errno.ENOTSUP)
        assert len(os.getxattr(path, "vega.hash")) == 64
        assert proc.poll() is None
        assert os.statvfs(mnt).f_namemax == 255


def test_second_mount_of_the_store_is_refused(store: Path, mnt: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    with mounted(store, mnt) as proc:
        result = run_vegafs("mount", other, "--store", store)
        assert result.returncode != 0
        assert str(proc.pid) in result.stderr  # names the holder
        assert not os.path.ismount(other)
        result = run_vegafs("mount", mnt, "--store", tmp_path / "s2")
        assert result.returncode != 0 and "already mounted" in result.stderr


def test_mountpoint_errors_are_one_line(tmp_path: Path, store: Path) -> None:
    missing = run_vegafs("mount", tmp_path / "nope", "--store", store)
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    full = run_vegafs("mount", tmp_path / "full", "--store", store)
    assert full.returncode != 0 and "not empty" in full.stderr
    assert "Traceback" not in missing.stderr + full.stderr
    assert run_vegafs("umount", tmp_path / "full").returncode != 0


def test_daemonized_mount_is_ready_when_the_command_returns(store: Path, mnt: Path) -> None:
    try:
        result = run_vegafs("mount", mnt, "--store", store)
        assert result.returncode == 0, result.stderr
        assert os.path.ismount(mnt)  # no polling: ready on return
        (mnt / "x").write_text("hello")
        result = run_vegafs("umount", mnt)
        assert result.returncode == 0, result.stderr
        assert not os.path.ismount(mnt)
        assert not (store / "control.sock").exists()
    finally:
        force_unmount(mnt)


def test_stale_mount_after_kill_is_detected_and_cleaned(store: Path, mnt: Path) -> None:
    with mounted(store, mnt) as proc:
        (mnt / "f").write_text("x")
        subprocess.run(["sync"], check=False)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with pytest.raises(OSError) as info:
            os.stat(mnt)
        assert info.value.errno == errno.ENOTCONN
        result = run_vegafs("mount", mnt, "--store", store)
        try:
            assert result.returncode == 0, result.stderr
            assert "stale" in result.stderr
            assert os.path.ismount(mnt)
        finally:
            run_vegafs("umount", mnt)
            force_unmount(mnt)


def test_sigterm_unmounts_cleanly(store: Path, mnt: Path) -> None:
    with mounted(store, mnt) as proc:
        with open(mnt / "f", "w") as f:
            f.write("kept")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not os.path.ismount(mnt)
    with mounted(store, mnt):
        assert (mnt / "f").read_text() == "kept"


def test_vegafs_sync_makes_closed_files_durable_at_once(store: Path, mnt: Path) -> None:
    with mounted(store, mnt, "--commit-interval", "100") as proc:
        (mnt / "f").write_text("synced")
        result = run_vegafs("sync", mnt)
        assert result.returncode == 0, result.stderr
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        force_unmount(mnt)
    with mounted(store, mnt):
        assert (mnt / "f").read_text() == "synced"


def test_fusermount_u_is_a_clean_shutdown(store: Path, mnt: Path) -> None:
    with mounted(store, mnt, "--commit-interval", "100") as proc:
        (mnt / "f").write_text("published on unmount")
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
        assert proc.wait(timeout=60) == 0
    reopened = Store.open(store)  # write mode: the lock was released
    try:
        inode = reopened.get_inode(reopened.lookup(ROOT_INO, b"f"))
        assert inode.size == len("published on unmount")
    finally:
        reopened.close()


def test_snapshots_and_rollback_while_mounted(store: Path, mnt: Path) -> None:
    with mounted(store, mnt):
        (mnt / "f").write_text("v1")
        # Through the daemon's control socket, as `vegafs snapshot` does when mounted.
        created = control.call(store, "snapshot_create", name="s1")
        assert created["name"] == "s1"
        (mnt / "f").write_text("v2")
        (mnt / "new").write_text("n")
        assert (mnt / "f").read_text() == "v2"
        assert [s["name"] for s in control.call(store, "snapshot_list")] == ["s1"]
        assert (mnt / ".snapshots" / "s1" / "f").read_text() == "v1"
        assert os.listdir(mnt / ".snapshots") == ["s1"]
        with pytest.raises(OSError) as info:
            (mnt / ".snapshots" / "s1" / "f").write_text("no")
        assert info.value.errno == errno.EROFS
        assert control.call(store, "rollback", name="s1")["logseq"] > 0
        assert (mnt / "f").read_text() == "v1"  # no remount needed
        assert sorted(os.listdir(mnt)) == ["f"]


def test_fsync_is_durable_across_kill(store: Path, mnt: Path) -> None:
    with mounted(store, mnt, "--commit-interval", "100") as proc:
        with open(mnt / "synced", "wb") as f:
            f.write(b"durable")
            f.flush()
            os.fsync(f.fileno())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        force_unmount(mnt)
    with mounted(store, mnt):
        assert (mnt / "synced").read_bytes() == b"durable"


def _published_size(store: Path, name: bytes) -> int | None:
    """Size of /name as of the store's last publish (a lock-free read-only open)."""
    view = Store.open(store, read_only=True)
    try:
        ino = view.lookup(ROOT_INO, name)
        inode = view.get_inode(ino) if ino is not None else None
        return inode.size if inode is not None else None
    finally:
        view.close()


def test_group_commit_publishes_closed_files_within_the_window(store: Path, mnt: Path) -> None:
    with mounted(store, mnt, "--commit-interval", "0.2") as proc:
        (mnt / "closed").write_bytes(b"x" * 1000)
        closed_at = time.monotonic()
        while _published_size(store, b"closed") != 1000:
            assert time.monotonic() - closed_at < 10, "not published within the window"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        force_unmount(mnt)
    with mounted(store, mnt):
        assert (mnt / "closed").read_bytes() == b"x" * 1000


def test_sigterm_on_a_busy_mount_still_exits_cleanly(store: Path, mnt: Path) -> None:
    with mounted(store, mnt) as proc:
        (mnt / "f").write_text("kept")
        busy = subprocess.Popen(["sleep", "60"], cwd=mnt)  # keeps the mount busy
        try:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
            # Detached (lazily), not left behind as a dead ENOTCONN mount.
            os.stat(mnt)
            assert str(mnt) not in Path("/proc/self/mounts").read_text()
        finally:
            busy.kill()
            busy.wait()
    with mounted(store, mnt):
        assert (mnt / "f").read_text() == "kept"


def _read_ahead_kb(mnt: Path) -> int:
    with open("/proc/self/mountinfo") as f:
        dev = [line.split()[2] for line in f if line.split()[4] == str(mnt)][-1]
    return int(Path(f"/sys/class/bdi/{dev}/read_ahead_kb").read_text())


def _wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


@pytest.mark.skipif(os.geteuid() != 0, reason="setting a bdi's read_ahead_kb needs root")
def test_read_ahead_window_is_widened_after_init(store: Path, mnt: Path) -> None:
    """The daemon sets the mount's readahead window once the kernel's INIT is
    done (the INIT reply would cap an earlier setting); --read-ahead 0 keeps
    the kernel's."""
    with mounted(store, mnt):
        assert _wait_for(lambda: _read_ahead_kb(mnt) == 1024)
    with mounted(store, mnt, "--read-ahead", "512"):
        assert _wait_for(lambda: _read_ahead_kb(mnt) == 512)
    with mounted(store, mnt, "--read-ahead", "0"):
        os.listdir(mnt)
        assert _read_ahead_kb(mnt) == 128

"""Mount vegafs for a test, and always clean up — shared by tests/fs and tests/mount.

Habit taken from pyfuse3's own tests: start the daemon in the foreground as a
subprocess, poll ``os.path.ismount`` with a deadline, fail at once if the
process died, and on exit unmount however we can (``vegafs umount``, then
``fusermount3 -u -z``, then terminate, then kill) so that no test ever leaves a
mount or a daemon behind, even when it fails.

Import it as ``from tests.mountutil import mounted, needs_fuse, run_vegafs``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOUNT_TIMEOUT = 30.0
UMOUNT_TIMEOUT = 60.0


def fuse_available() -> bool:
    """Whether this machine can mount FUSE filesystems at all."""
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


# Use as ``pytestmark = [pytest.mark.mount, needs_fuse]`` in mount tests.
needs_fuse = pytest.mark.skipif(
    not fuse_available(), reason="needs /dev/fuse and fusermount3 to mount FUSE"
)


def vegafs_cmd(*args: str | os.PathLike[str]) -> list[str]:
    """The argv that runs the `vegafs` command of this checkout with ``args``."""
    return [sys.executable, "-m", "vegafs", *map(os.fspath, args)]


def run_vegafs(
    *args: str | os.PathLike[str], check: bool = False, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `vegafs ARGS` to completion, capturing stdout and stderr as text."""
    return subprocess.run(
        vegafs_cmd(*args), capture_output=True, text=True, check=check, timeout=timeout
    )


def wait_mounted(mnt: Path, proc: subprocess.Popen[bytes], timeout: float = MOUNT_TIMEOUT) -> None:
    """Poll until ``mnt`` is a mount point; fail if ``proc`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while not os.path.ismount(mnt):
        code = proc.poll()
        if code is not None:
            raise RuntimeError(f"vegafs mount exited with {code} before the mount was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{mnt} not mounted after {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def force_unmount(mnt: Path) -> None:
    """Lazily detach whatever is mounted on ``mnt``; quiet when nothing is."""
    subprocess.run(
        ["fusermount3", "-u", "-z", os.fspath(mnt)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, then kill, the daemon process; always reaps it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=UMOUNT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def mounted(
    store_dir: str | os.PathLike[str], mnt: str | os.PathLike[str], *extra_args: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Mount the store at ``store_dir`` on ``mnt`` for the duration of the block.

    Yields the daemon's ``Popen`` (``--foreground``; its stderr goes to a file
    beside the mountpoint, ``<mnt>.daemon.log``, read it when a test fails).
    On exit — normal or not — the mount is cleanly unmounted with
    ``vegafs umount`` (flush + publish); if that fails, it is forced off with
    ``fusermount3 -u -z`` and the daemon is terminated, then killed. A test
    that wants to check a clean unmount itself may call ``vegafs umount``
    inside the block; the cleanup then finds nothing left to do.
    """
    mnt = Path(mnt)
    mnt.mkdir(parents=True, exist_ok=True)
    log_path = mnt.parent / f"{mnt.name}.daemon.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            vegafs_cmd("mount", mnt, "--store", store_dir, "--foreground", *extra_args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        try:
            wait_mounted(mnt, proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; daemon output:\n{log_path.read_text(errors='replace')}") from exc
        yield proc
    finally:
        try:
            if os.path.ismount(mnt) and proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    run_vegafs("umount", mnt, timeout=UMOUNT_TIMEOUT)
        finally:
            force_unmount(mnt)
            _stop(proc)
            # A daemon killed by the cleanup leaves its mount point behind.
            force_unmount(mnt)

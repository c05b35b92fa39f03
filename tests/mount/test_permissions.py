"""Permission semantics with a second, ordinary user on the mount (``-o allow_other``).

The kernel checks mode bits itself under ``default_permissions``; what it
leaves to the filesystem — and what conformance suites check — is tested
here from a forked child that drops to uid/gid 1001: ownership of new nodes,
who may chmod/chown/utime, suid/sgid cleared on write and chown, and the
sticky bit. The child works through directory fds opened by root because the
test's temp path above the mount is private to root.
"""

from __future__ import annotations

import errno
import os
import pickle
import stat
from collections.abc import Callable

import pytest

from tests.mount.helpers import Mount, needs_root, opened
from tests.mountutil import needs_fuse

pytestmark = [
    pytest.mark.mount,
    needs_fuse,
    needs_root,
    pytest.mark.parametrize("vmount", [("-o", "allow_other")], indirect=True),
]

USER = 1001


def as_user(fn: Callable[[], object]) -> object:
    """Run ``fn`` in a child process as uid/gid 1001; return its result or re-raise its OSError."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.setgroups([])
            os.setgid(USER)
            os.setuid(USER)
            outcome: tuple[str, object] = ("ok", fn())
        except OSError as exc:
            outcome = ("oserror", (exc.errno, str(exc)))
        except BaseException as exc:  # anything else: report, never run the parent's code
            outcome = ("error", repr(exc))
        with os.fdopen(write_end, "wb") as pipe:
            pickle.dump(outcome, pipe)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        kind, value = pickle.load(pipe)
    os.waitpid(pid, 0)
    if kind == "oserror":
        code, text = value  # type: ignore[misc]
        raise OSError(code, text)
    if kind == "error":
        raise AssertionError(f"child failed: {value}")
    return value


def errno_of(fn: Callable[[], object]) -> int:
    """The errno the child's call fails with (0 if it succeeds)."""
    try:
        as_user(fn)
    except OSError as exc:
        return exc.errno or 0
    return 0


@pytest.mark.timeout(60)
def test_new_nodes_belong_to_the_calling_user(vmount: Mount) -> None:
    pub = vmount.mnt / "pub"
    pub.mkdir()
    os.chmod(pub, 0o777)
    with opened(pub, os.O_RDONLY | os.O_DIRECTORY) as d:

        def make() -> None:
            os.umask(0o027)
            os.close(os.open("file", os.O_CREAT | os.O_WRONLY, 0o666, dir_fd=d))
            os.mkdir("dir", 0o777, dir_fd=d)
            os.symlink("file", "link", dir_fd=d)
            os.mkfifo("fifo", 0o666, dir_fd=d)

        as_user(make)
    expected = {"file": 0o640, "dir": 0o750, "fifo": 0o640}
    for name, mode in expected.items():
        st = os.lstat(pub / name)
        assert (st.st_uid, st.st_gid) == (USER, USER), name
        assert stat.S_IMODE(st.st_mode) == mode, name
    assert os.lstat(pub / "link").st_uid == USER


@pytest.mark.timeout(60)
def test_only_the_owner_changes_mode_owner_and_explicit_times(vmount: Mount) -> None:
    d = vmount.mnt / "d"
    d.mkdir()
    os.chmod(d, 0o777)
    (d / "roots").write_bytes(b"root's")
    os.chmod(d / "roots", 0o666)
    with opened(d, os.O_RDONLY | os.O_DIRECTORY) as fd:
        assert errno_of(lambda: os.chmod("roots", 0o777, dir_fd=fd)) == errno.EPERM
        assert errno_of(lambda: os.chown("roots", USER, USER, dir_fd=fd)) == errno.EPERM
        assert errno_of(lambda: os.utime("roots", ns=(1, 1), dir_fd=fd)) == errno.EPERM
        # "touch" (time = now) needs only write permission, which 0666 gives
        assert errno_of(lambda: os.utime("roots", dir_fd=fd)) == 0

        def own() -> None:
            os.close(os.open("mine", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
            os.chmod("mine", 0o600, dir_fd=fd)
            os.utime("mine", ns=(5, 7), dir_fd=fd)
            os.chown("mine", -1, USER, dir_fd=fd)  # to a group it is in: allowed

        assert errno_of(own) == 0
        assert errno_of(lambda: os.chown("mine", 0, -1, dir_fd=fd)) == errno.EPERM
    st = (d / "mine").stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_mtime_ns == 7
    assert stat.S_IMODE((d / "roots").stat().st_mode) == 0o666


@pytest.mark.timeout(60)
def test_mode_bits_are_enforced(vmount: Mount) -> None:
    d = vmount.mnt / "d"
    d.mkdir()
    os.chmod(d, 0o755)
    (d / "secret").write_bytes(b"root only")
    os.chmod(d / "secret", 0o600)
    (d / "readable").write_bytes(b"anyone")
    os.chmod(d / "readable", 0o644)
    with opened(d, os.O_RDONLY | os.O_DIRECTORY) as fd:
        assert errno_of(lambda: os.open("secret", os.O_RDONLY, dir_fd=fd)) == errno.EACCES
        assert errno_of(lambda: os.open("readable", os.O_WRONLY, dir_fd=fd)) == errno.EACCES
        assert errno_of(lambda: os.open("new", os.O_CREAT | os.O_WRONLY, dir_fd=fd)) == errno.EACCES
        assert errno_of(lambda: os.unlink("readable", dir_fd=fd)) == errno.EACCES

        def read() -> bytes:
            rfd = os.open("readable", os.O_RDONLY, dir_fd=fd)
            try:
                return os.read(rfd, 100)
            finally:
                os.close(rfd)

        assert as_user(read) == b"anyone"


@pytest.mark.timeout(60)
def test_write_by_another_user_clears_setuid_setgid(vmount: Mount) -> None:
    d = vmount.mnt / "d"
    d.mkdir()
    os.chmod(d, 0o777)
    prog = d / "prog"
    prog.write_bytes(b"#!/bin/sh\n")
    os.chmod(prog, 0o6777)
    with opened(d, os.O_RDONLY | os.O_DIRECTORY) as fd:

        def write() -> None:
            wfd = os.open("prog", os.O_WRONLY | os.O_APPEND, dir_fd=fd)
            try:
                os.write(wfd, b"echo changed\n")
            finally:
                os.close(wfd)

        as_user(write)
    mode = stat.S_IMODE(prog.stat().st_mode)
    assert not mode & (stat.S_ISUID | stat.S_ISGID), f"suid/sgid kept after a write by another user: {oct(mode)}"
    assert prog.read_bytes() == b"#!/bin/sh\necho changed\n"


@pytest.mark.timeout(60)
def test_sticky_directory(vmount: Mount) -> None:
    tmp = vmount.mnt / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o1777)
    (tmp / "roots").write_bytes(b"owned by root")
    os.chmod(tmp / "roots", 0o666)
    (tmp / "target").write_bytes(b"")
    with opened(tmp, os.O_RDONLY | os.O_DIRECTORY) as fd:
        assert errno_of(lambda: os.unlink("roots", dir_fd=fd)) == errno.EPERM
        assert errno_of(lambda: os.rename("roots", "moved", src_dir_fd=fd, dst_dir_fd=fd)) == errno.EPERM

        def own() -> None:
            os.close(os.open("mine", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
            os.rename("mine", "mine2", src_dir_fd=fd, dst_dir_fd=fd)

        assert errno_of(own) == 0
        # replacing root's file by rename is removing it: refused as well
        assert errno_of(lambda: os.rename("mine2", "target", src_dir_fd=fd, dst_dir_fd=fd)) == errno.EPERM
        assert errno_of(lambda: os.unlink("mine2", dir_fd=fd)) == 0
    assert sorted(os.listdir(tmp)) == ["roots", "target"]


@pytest.mark.timeout(60)
def test_setgid_directory_inheritance(vmount: Mount) -> None:
    shared = vmount.mnt / "shared"
    shared.mkdir()
    os.chown(shared, 0, 4242)
    os.chmod(shared, 0o2777)
    with opened(shared, os.O_RDONLY | os.O_DIRECTORY) as fd:

        def make() -> None:
            os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
            os.mkdir("sub", 0o755, dir_fd=fd)

        as_user(make)
    f, sub = (shared / "f").stat(), (shared / "sub").stat()
    assert (f.st_uid, f.st_gid) == (USER, 4242)
    assert (sub.st_uid, sub.st_gid) == (USER, 4242)
    assert sub.st_mode & stat.S_ISGID, "a subdirectory of a setgid directory must be setgid"
    assert not f.st_mode & stat.S_ISGID

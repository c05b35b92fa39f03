"""Helpers for the real-mount tests: a restartable mount, a watchdog, tree manifests.

Why these exist rather than plain ``mounted()`` blocks in every test:

* A FUSE request the daemon never answers blocks the calling thread in the
  kernel, where pytest-timeout's signal cannot reach it. ``Watchdog`` runs in
  its own thread and, when a test overruns, lazily detaches the mount and
  SIGKILLs the daemon: the kernel then fails every pending request with
  ENOTCONN, the test fails with an error instead of hanging, and the next test
  starts on a fresh mount.
* The tools tests compare whole trees. ``manifest()`` captures everything
  ``cp -a`` / ``tar`` / ``rsync -aHAX`` promise to keep (type, mode, owner,
  size, mtime in ns, content hash, symlink target, user xattrs, and which
  names are hard links of each other) as plain data that ``==`` can compare
  and pytest can diff.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.mountutil import force_unmount, mounted

# Tests that give files away (chown) or act as a second user need root.
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, a second user)")


@dataclass
class Mount:
    """One vegafs store mounted on one mountpoint, which a test may restart or kill.

    ``proc`` is the foreground daemon while mounted. ``stop()`` always leaves
    nothing behind (it is ``mounted()``'s cleanup: ``vegafs umount``, then
    ``fusermount3 -u -z``, terminate, kill).
    """

    store: Path
    mnt: Path
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0  # times a dead daemon was replaced (see conftest's ``workdir``)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def start(self) -> None:
        """Mount; returns once the mountpoint is live (``mounted()`` polls with a deadline)."""
        assert self.proc is None, "already mounted"
        self.proc = self._stack.enter_context(mounted(self.store, self.mnt, *self.extra_args))

    def stop(self) -> None:
        """Unmount cleanly (flush + publish) or, failing that, by force; reap the daemon."""
        try:
            self._stack.close()
        finally:
            self.proc = None
            self._stack = contextlib.ExitStack()

    def remount(self) -> None:
        """A clean unmount then a fresh daemon on the same store: proves what was persisted."""
        self.stop()
        self.start()

    def kill9(self) -> None:
        """SIGKILL the daemon (a crash) and detach its now-dead mount, as an admin would.

        ``stop()`` afterwards still runs the usual cleanup, which then finds nothing to do.
        """
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        force_unmount(self.mnt)

    def alive(self) -> bool:
        """True when the daemon runs and the mount answers a statfs."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            os.statvfs(self.mnt)
        except OSError:
            return False
        return os.path.ismount(self.mnt)

    def log(self) -> str:
        """The daemon's output so far (``mounted()`` writes it beside the mountpoint)."""
        path = self.mnt.parent / f"{self.mnt.name}.daemon.log"
        return path.read_text(errors="replace") if path.exists() else ""


class Watchdog:
    """Kill the daemons of ``mounts`` if the test is still running after ``seconds``.

    Used as a context manager around a test body; ``fired`` tells the fixture to
    report the test as wedged (and to give the next test a new mount).
    """

    def __init__(self, mounts: list[Mount], seconds: float) -> None:
        self.mounts = mounts
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        self.fired = True
        for m in self.mounts:
            force_unmount(m.mnt)
            if m.proc is not None and m.proc.poll() is None:
                m.proc.send_signal(signal.SIGKILL)

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a regular file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def user_xattrs(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """The ``user.*`` xattrs of ``path`` itself (not following a symlink)."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {
        n: os.getxattr(path, n, follow_symlinks=False) for n in sorted(names) if n.startswith("user.")
    }


def manifest(
    root: str | os.PathLike[str], *, owners: bool = True, xattrs: bool = False, times: bool = True
) -> dict[str, tuple[object, ...]]:
    """Everything a faithful copy of the tree under ``root`` must reproduce, keyed by path.

    Hard links become a group number (the first path of the group, in sorted
    walk order), so two trees compare equal exactly when the same names share
    an inode. ``times=False`` leaves mtimes out, for copies that do not
    promise to keep them.
    """
    root = os.fspath(root)
    entries: dict[str, tuple[object, ...]] = {}
    groups: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            kind = stat.S_IFMT(st.st_mode)
            if stat.S_ISREG(kind):
                content: object = sha256_file(full)
            elif stat.S_ISLNK(kind):
                content = os.readlink(full)
            else:
                content = None
            link_group = None
            if stat.S_ISREG(kind) and st.st_nlink > 1:
                link_group = groups.setdefault((st.st_dev, st.st_ino), rel)
            entries[rel] = (
                kind,
                stat.S_IMODE(st.st_mode),
                (st.st_uid, st.st_gid) if owners else None,
                st.st_size if not stat.S_ISDIR(kind) else None,
                st.st_mtime_ns if times else None,
                content,
                link_group,
                st.st_nlink if not stat.S_ISDIR(kind) else None,
                user_xattrs(full) if xattrs else None,
            )
    return entries


def make_sample_tree(root: Path, *, with_fifo: bool = False, with_xattrs: bool = False) -> Path:
    """A small tree with what copy tools get wrong: modes, hard links, symlinks, ns times.

    Content crosses block boundaries (sizes around 128 KiB and a 1 MiB file)
    and repeats data (dedup in the store must not mix files up).
    """
    rnd = hashlib.sha256(b"vegafs sample tree").digest()
    root.mkdir(parents=True)
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    files = {
        "empty": b"",
        "small.txt": b"hello vegafs\n",
        "block-minus-one": rnd * (131072 // 32 - 1) + rnd[:31],
        "block-exact": rnd * (131072 // 32),
        "block-plus-one": rnd * (131072 // 32) + b"!",
        "sub/one-mib.bin": b"".join(
            hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(32768)
        ),
        "sub/deeper/same-as-small.txt": b"hello vegafs\n",
        "sub/deeper/lines.txt": b"".join(b"line %d\n" % i for i in range(5000)),
    }
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    os.chmod(root / "small.txt", 0o600)
    os.chmod(root / "block-exact", 0o755)
    os.chmod(root / "sub/deeper/lines.txt", 0o444)
    os.chmod(root / "sub/deeper", 0o750)
    os.link(root / "block-plus-one", root / "hardlink-a")
    os.link(root / "block-plus-one", root / "sub/hardlink-b")
    os.link(root / "small.txt", root / "sub/deeper/hardlink-small")
    os.symlink("small.txt", root / "link-rel")
    os.symlink("sub/deeper", root / "link-dir")
    os.symlink("does/not/exist", root / "link-dangling")
    os.symlink("/" + "x" * 200, root / "link-long-absolute")
    if with_fifo:
        os.mkfifo(root / "sub/fifo", 0o640)
    if with_xattrs:
        os.setxattr(root / "small.txt", "user.colour", b"blue")
        os.setxattr(root / "sub/one-mib.bin", "user.binary", bytes(range(256)))
        os.setxattr(root / "sub", "user.on-a-dir", b"yes")
    # Times last (writing into a directory moves its mtime), children before parents.
    stamp = 1_600_000_000_123_456_789
    for n, path in enumerate(sorted(root.rglob("*"), key=lambda p: -len(p.parts))):
        ns = stamp + n * 1_000_000_007
        os.utime(path, ns=(ns, ns), follow_symlinks=False)
    os.utime(root, ns=(stamp, stamp))
    return root


def run(cmd: list[str], cwd: str | os.PathLike[str] | None = None, timeout: float = 120) -> str:
    """Run a tool; on failure raise with its output so the test report says what went wrong."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


GIT_ENV = {
    "GIT_AUTHOR_NAME": "Vega Tester",
    "GIT_AUTHOR_EMAIL": "vega@example.invalid",
    "GIT_COMMITTER_NAME": "Vega Tester",
    "GIT_COMMITTER_EMAIL": "vega@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_OPTIONAL_LOCKS": "0",
}


def git(repo: Path, *args: str) -> str:
    """git in ``repo`` with a fixed identity and no user or system config (HOME = its parent)."""
    env_args = [f"{k}={v}" for k, v in GIT_ENV.items()]
    return run(["env", f"HOME={repo.parent}", *env_args, "git", "-c", f"safe.directory={repo}",
                "-C", str(repo), *args])


@contextlib.contextmanager
def opened(path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> Iterator[int]:
    """``os.open`` as a context manager, so an assertion never leaks a descriptor on the mount."""
    fd = os.open(path, flags, mode)
    try:
        yield fd
    finally:
        os.close(fd)


_libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
AT_FDCWD = -100


def renameat2(src: Path, dst: Path, flags: int) -> None:
    """renameat2(2), which the os module does not wrap."""
    if _libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(src))

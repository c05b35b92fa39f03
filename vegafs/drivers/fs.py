"""A VFS driver over a vegafs filesystem: the one path from Vega to the store.

Two hosts use it: ``store://PATH`` (:mod:`vegafs.drivers.store`, a store
opened directly by a ``vegafs run`` script) and the hooks layer, whose driver
subclasses this one to carry calls to the mount's thread with hooks
suppressed and to stage a synchronous hook's effects. Path helpers
(``lookup_path``, ``read_all``) are methods so a host with a faster way (a
name cache) overrides them.

Failures are :class:`~vegafs.vm.vfs.VfsError` codes mapped from the
filesystem's errno, never traps: the program sees a failed ``result``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from typing import Any

from vegafs.fs import ROOT_CTX, FileSystem, FsError
from vegafs.store import ROOT_INO
from vegafs.vm.vfs import DriverCaps, OpenFlags, StatInfo, VfsError


def _direct(fn: Callable[[], Any]) -> Any:
    return fn()


_CAPS = DriverCaps(meta_namespaces=("user.",))
_CODES = {
    errno.ENOENT: "not_found",
    errno.EEXIST: "exists",
    errno.EPERM: "permission",
    errno.EACCES: "permission",
    errno.EROFS: "permission",
    errno.ENOSPC: "no_space",
    errno.EDQUOT: "no_space",
    errno.EISDIR: "is_dir",
    errno.ENOTDIR: "not_dir",
    errno.ENOTEMPTY: "not_empty",
    errno.EBUSY: "busy",
    errno.EINVAL: "invalid",
    errno.ENOTSUP: "unsupported",
}


def _vfs_error(exc: FsError) -> VfsError:
    return VfsError(_CODES.get(exc.errno, "io"), str(exc))


class FsDriver:
    """A VFS :class:`~vegafs.vm.vfs.Driver` over a :class:`~vegafs.fs.FileSystem`.

    ``run(fn)`` is how a call reaches the filesystem: directly (``store://``,
    one thread), or carried to the filesystem's own thread with hooks
    suppressed (the hooks layer's subclass). The caller acts as root; what a
    program may touch is decided by its capabilities before a call gets here.
    """

    scheme = "vegafs"

    def __init__(
        self,
        fs: FileSystem,
        run: Callable[[Callable[[], Any]], Any] | None = None,
        *,
        recorded: bool = False,
    ) -> None:
        self._fs = fs
        self._run = run or _direct
        # Reads (atomic ones, read-only handles, sizes) see each file's last
        # recorded version instead of what open handles have buffered since:
        # an after-hook's input is then a version in the log (docs/hooks.md).
        self._recorded = recorded

    def _do(self, fn: Callable[[], Any]) -> Any:
        try:
            return self._run(fn)
        except FsError as exc:
            raise _vfs_error(exc) from None

    def lookup_path(self, path: str) -> int | None:
        """Inode of ``path`` (relative to the filesystem root), or None."""
        ino = ROOT_INO
        for part in (p for p in path.split("/") if p):
            child = self._fs.store.lookup(ino, os.fsencode(part))
            if child is None:
                return None
            ino = child
        return ino

    def read_all(self, ino: int) -> bytes:
        """The current content of file ``ino`` (buffered writes included unless
        this driver reads recorded versions)."""
        if self._recorded:
            return self._fs.read_recorded(ino)
        fh = self._fs.open(ino, os.O_RDONLY, ROOT_CTX)
        try:
            return self._fs.read(fh, 0, self._fs.getattr(ino).size)
        finally:
            self._fs.release(fh)

    def _ino(self, path: str) -> int:
        ino = self.lookup_path(path)
        if ino is None:
            raise FsError(errno.ENOENT, f"{path} does not exist")
        return ino

    def _parent(self, path: str) -> tuple[int, bytes]:
        head, _, name = path.rstrip("/").rpartition("/")
        if not name:
            raise FsError(errno.EINVAL, f"{path} has no name")
        return self._ino(head or "/"), os.fsencode(name)

    def capabilities(self) -> DriverCaps:
        return _CAPS

    # ------------------------------------------------------------------ handles

    def open(self, path: str, flags: OpenFlags) -> _Handle:
        return self._do(lambda: self._open_now(path, flags))

    def _open_now(self, path: str, flags: OpenFlags) -> _Handle:
        """Open ``path`` (on the filesystem thread, hooks suppressed)."""
        fs = self._fs
        ino = self.lookup_path(path)
        if ino is not None and flags.exclusive:
            raise FsError(errno.EEXIST, f"{path} exists")
        access = os.O_RDWR if flags.write else os.O_RDONLY
        if ino is None:
            if not flags.create:
                raise FsError(errno.ENOENT, f"{path} does not exist")
            parent, name = self._parent(path)
            fh, attr = fs.create(parent, name, 0o644, access, ROOT_CTX)
            ino = attr.ino
        else:
            fh = fs.open(ino, access | (os.O_TRUNC if flags.truncate else 0), ROOT_CTX)
        pos = self._size(ino) if flags.append else 0
        return _Handle(self, fh, ino, pos, recorded=self._recorded and not flags.write)

    # ------------------------------------------------------------------ atomic

    def read(self, path: str, offset: int, size: int | None) -> bytes:
        def run() -> bytes:
            ino = self._ino(path)
            if stat.S_ISDIR(self._fs.getattr(ino).mode):
                raise FsError(errno.EISDIR, f"{path} is a directory")
            data = self.read_all(ino)
            end = len(data) if size is None else offset + size
            return data[offset:end]

        return self._do(run)

    def write(self, path: str, offset: int | None, data: memoryview) -> int:
        payload = bytes(data)

        def run() -> int:
            whole = offset is None or self.lookup_path(path) is None
            handle = self._open_now(path, OpenFlags.parse("w" if whole else "r+"))
            try:
                handle.pos = offset or 0
                return handle.write_here(payload)
            finally:
                handle.close_here()

        return self._do(run)

    def _size(self, ino: int) -> int:
        return self._fs.recorded_size(ino) if self._recorded else self._fs.getattr(ino).size

    def size(self, path: str) -> int:
        return self._do(lambda: self._size(self._ino(path)))

    def list(self, path: str) -> list[str]:
        def run() -> list[str]:
            ino = self._ino(path)
            if not stat.S_ISDIR(self._fs.getattr(ino).mode):
                raise FsError(errno.ENOTDIR, f"{path} is not a directory")
            return sorted(os.fsdecode(name) for name, _ in self._fs.store.listdir(ino))

        return self._do(run)

    def stat(self, path: str) -> StatInfo:
        def run() -> StatInfo:
            ino = self._ino(path)
            attr = self._fs.getattr(ino)
            kind = (
                "dir"
                if stat.S_ISDIR(attr.mode)
                else "file"
                if stat.S_ISREG(attr.mode)
                else "symlink"
                if stat.S_ISLNK(attr.mode)
                else "other"
            )
            size = self._size(ino) if kind == "file" else attr.size
            return StatInfo(kind, size, attr.mtime_ns, attr.mode & 0o7777)

        return self._do(run)

    def mkdir(self, path: str) -> None:
        def run() -> None:
            parent, name = self._parent(path)
            self._fs.mkdir(parent, name, 0o755, ROOT_CTX)

        self._do(run)

    def rename(self, src: str, dst: str) -> None:
        def run() -> None:
            sp, sn = self._parent(src)
            dp, dn = self._parent(dst)
            self._fs.rename(sp, sn, dp, dn, 0, ROOT_CTX)

        self._do(run)

    def remove(self, path: str) -> None:
        def run() -> None:
            parent, name = self._parent(path)
            if stat.S_ISDIR(self._fs.getattr(self._ino(path)).mode):
                self._fs.rmdir(parent, name, ROOT_CTX)
            else:
                self._fs.unlink(parent, name, ROOT_CTX)

        self._do(run)

    # ------------------------------------------------------------------ metadata

    def meta_read(self, path: str) -> dict[str, bytes]:
        def run() -> dict[str, bytes]:
            inode = self._fs.store.get_inode(self._ino(path))
            if inode is None:
                raise FsError(errno.ENOENT, f"{path} does not exist")
            return {os.fsdecode(k): v for k, v in inode.xattrs.items()}

        return self._do(run)

    def meta_commit(self, path: str, changes: dict[str, bytes | None]) -> None:
        def run() -> None:
            ino = self._ino(path)
            inode = self._fs.store.get_inode(ino)
            assert inode is not None
            with self._fs._txn() as t:
                for key, value in changes.items():
                    name = os.fsencode(key)
                    if value is None:
                        if name in inode.xattrs:
                            t.remove_xattr(ino, name)
                    else:
                        t.set_xattr(ino, name, value)

        self._do(run)

    def sync(self, path: str) -> None:
        self._do(self._fs.sync)

    def close(self) -> None:
        """Nothing to release here: whoever made the filesystem closes it."""


class _Handle:
    """A stateful handler: an open file descriptor of the filesystem and a position.

    A read-only handler of a driver that reads recorded versions reads those;
    one that writes reads its own writes (seed 000 §8.1).
    """

    def __init__(self, driver: FsDriver, fh: int, ino: int, pos: int, *, recorded: bool) -> None:
        self._driver = driver
        self.fh = fh
        self.ino = ino
        self.pos = pos
        self._recorded = recorded

    def read(self, size: int) -> bytes:
        def run() -> bytes:
            fs = self._driver._fs
            if self._recorded:
                data = fs.read_recorded(self.ino, self.pos, size)
            else:
                data = fs.read(self.fh, self.pos, size)
            self.pos += len(data)
            return bytes(data)

        return self._driver._do(run)

    def write_here(self, data: bytes) -> int:
        n = self._driver._fs.write(self.fh, self.pos, data, ROOT_CTX)
        self.pos += n
        return n

    def write(self, data: memoryview) -> int:
        payload = bytes(data)
        return self._driver._do(lambda: self.write_here(payload))

    def seek(self, offset: int) -> None:
        if offset < 0:
            raise VfsError("invalid", "negative seek offset")
        self.pos = offset

    def sync(self) -> None:
        self._driver._do(lambda: self._driver._fs.fsync(self.fh, self.ino))

    def close_here(self) -> None:
        self._driver._fs.flush(self.fh)
        self._driver._fs.release(self.fh)

    def close(self) -> None:
        self._driver._do(self.close_here)

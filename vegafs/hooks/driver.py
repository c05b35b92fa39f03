"""The VFS driver hooks get: the live filesystem, mounted at ``/`` of each run.

A hook's VFS calls (``open``, ``read``, ``write``, ``lookup``, ``revert``...)
go through this driver to the :class:`~vegafs.hooks.fs.HookedFileSystem` it
serves. Two rules make that safe:

- **Non-reentrant** (seed 000 §2): every call runs with the engine's hooks
  suppressed, so what a hook does never triggers hooks.
- **One thread owns the filesystem**: a synchronous hook already runs on it;
  an after-hook runs on the worker thread, so each of its calls is carried to
  the filesystem's thread (``via_call``).

The hook acts as the filesystem itself (root credentials); what it may touch
is decided by its capabilities, checked by the VM's namespace before a call
gets here. Failures are ``VfsError`` codes (never a trap): the program sees a
failed ``result``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vegafs.fs import ROOT_CTX, FsError
from vegafs.vm.vfs import DriverCaps, OpenFlags, StatInfo, VfsError

if TYPE_CHECKING:
    from vegafs.hooks.fs import HookedFileSystem

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
    """A VFS :class:`~vegafs.vm.vfs.Driver` over a live HookedFileSystem."""

    scheme = "vegafs"

    def __init__(self, fs: HookedFileSystem, *, via_call: bool) -> None:
        self._fs = fs
        self._via_call = via_call

    def _do(self, fn: Callable[[], Any]) -> Any:
        try:
            if self._via_call:
                return self._fs.call(fn)
            with self._fs.hooks.suppress():
                return fn()
        except FsError as exc:
            raise _vfs_error(exc) from None

    def _ino(self, path: str) -> int:
        ino = self._fs.lookup_path(path)
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
        ino = fs.lookup_path(path)
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
        pos = fs.getattr(ino).size if flags.append else 0
        return _Handle(self, fh, ino, pos)

    # ------------------------------------------------------------------ atomic

    def read(self, path: str, offset: int, size: int | None) -> bytes:
        def run() -> bytes:
            ino = self._ino(path)
            if stat.S_ISDIR(self._fs.getattr(ino).mode):
                raise FsError(errno.EISDIR, f"{path} is a directory")
            data = self._fs.read_all(ino)
            end = len(data) if size is None else offset + size
            return data[offset:end]

        return self._do(run)

    def write(self, path: str, offset: int | None, data: memoryview) -> int:
        payload = bytes(data)

        def run() -> int:
            whole = offset is None or self._fs.lookup_path(path) is None
            handle = self._open_now(path, OpenFlags.parse("w" if whole else "r+"))
            try:
                handle.pos = offset or 0
                return handle.write_here(payload)
            finally:
                handle.close_here()

        return self._do(run)

    def size(self, path: str) -> int:
        return self._do(lambda: self._fs.getattr(self._ino(path)).size)

    def list(self, path: str) -> list[str]:
        def run() -> list[str]:
            ino = self._ino(path)
            if not stat.S_ISDIR(self._fs.getattr(ino).mode):
                raise FsError(errno.ENOTDIR, f"{path} is not a directory")
            return sorted(os.fsdecode(name) for name, _ in self._fs.store.listdir(ino))

        return self._do(run)

    def stat(self, path: str) -> StatInfo:
        def run() -> StatInfo:
            attr = self._fs.getattr(self._ino(path))
            kind = (
                "dir"
                if stat.S_ISDIR(attr.mode)
                else "file"
                if stat.S_ISREG(attr.mode)
                else "symlink"
                if stat.S_ISLNK(attr.mode)
                else "other"
            )
            return StatInfo(kind, attr.size, attr.mtime_ns, attr.mode & 0o7777)

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

    def revert(self, path: str) -> int:
        """Restore the previous version of ``path`` (vegafs extension: ``revert()``)."""
        return self._do(lambda: self._fs.revert(self._ino(path)))

    def close(self) -> None:
        """Nothing to release: the filesystem outlives every run."""


class _Handle:
    """A stateful handler: an open file descriptor of the filesystem and a position."""

    def __init__(self, driver: FsDriver, fh: int, ino: int, pos: int) -> None:
        self._driver = driver
        self.fh = fh
        self.ino = ino
        self.pos = pos

    def read(self, size: int) -> bytes:
        def run() -> bytes:
            data = self._driver._fs.read(self.fh, self.pos, size)
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


#: A staged effect: ("write", path, content) | ("meta", path, changes) |
#: ("mkdir", path) | ("rename", src, dst) | ("remove", path).
Effect = tuple[Any, ...]


class StagingDriver(FsDriver):
    """The driver of a *synchronous* hook: reads see the live tree plus what
    this operation's hooks staged so far; writes, metadata commits, mkdir,
    rename and remove are recorded in :attr:`effects` instead of applied.

    The filesystem applies the effects of every hook that allowed, after the
    operation itself succeeded (:meth:`HookedFileSystem.land`); a denial, a
    trap or a budget stop discards them. ``revert`` is the exception: it
    applies at once (undoing a bad save is the point of denying it).
    """

    def __init__(self, fs: HookedFileSystem, accepted: list[Effect]) -> None:
        super().__init__(fs, via_call=False)
        self._accepted = accepted
        self.effects: list[Effect] = []

    def _staged(self, path: str) -> bytes | None:
        """The newest staged content of ``path`` (raises not_found if staged removed)."""
        for effect in reversed(self._accepted + self.effects):
            if effect[0] == "write" and effect[1] == path:
                return effect[2]
            if effect[0] == "remove" and effect[1] == path:
                raise VfsError("not_found", f"{path} was removed by this operation's hooks")
        return None

    def _current(self, path: str) -> bytes | None:
        staged = self._staged(path)
        if staged is not None:
            return staged
        ino = self._fs.lookup_path(path)
        if ino is None:
            return None
        return self._do(lambda: self._fs.read_all(ino))

    def open(self, path: str, flags: OpenFlags) -> Any:
        current = self._current(path)
        if current is None and not flags.create:
            raise VfsError("not_found", f"{path} does not exist")
        if current is not None and flags.exclusive:
            raise VfsError("exists", f"{path} exists")
        if not flags.write:
            return _StagedHandle(self, path, bytearray(current or b""), 0, writable=False)
        data = bytearray() if flags.truncate or current is None else bytearray(current)
        return _StagedHandle(self, path, data, len(data) if flags.append else 0, writable=True)

    def read(self, path: str, offset: int, size: int | None) -> bytes:
        staged = self._staged(path)
        if staged is None:
            return super().read(path, offset, size)
        return staged[offset : len(staged) if size is None else offset + size]

    def size(self, path: str) -> int:
        staged = self._staged(path)
        return len(staged) if staged is not None else super().size(path)

    def write(self, path: str, offset: int | None, data: memoryview) -> int:
        if offset is None:
            content = bytes(data)
        else:
            base = bytearray(self._current(path) or b"")
            if len(base) < offset:
                base.extend(bytes(offset - len(base)))
            base[offset : offset + len(data)] = data
            content = bytes(base)
        self.effects.append(("write", path, content))
        return len(data)

    def meta_read(self, path: str) -> dict[str, bytes]:
        meta = super().meta_read(path)
        for effect in self._accepted + self.effects:
            if effect[0] == "meta" and effect[1] == path:
                for key, value in effect[2].items():
                    if value is None:
                        meta.pop(key, None)
                    else:
                        meta[key] = value
        return meta

    def meta_commit(self, path: str, changes: dict[str, bytes | None]) -> None:
        self._ino_or_staged(path)
        self.effects.append(("meta", path, dict(changes)))

    def _ino_or_staged(self, path: str) -> None:
        if self._staged(path) is None and self._fs.lookup_path(path) is None:
            raise VfsError("not_found", f"{path} does not exist")

    def mkdir(self, path: str) -> None:
        self.effects.append(("mkdir", path))

    def rename(self, src: str, dst: str) -> None:
        self._ino_or_staged(src)
        self.effects.append(("rename", src, dst))

    def remove(self, path: str) -> None:
        self._ino_or_staged(path)
        self.effects.append(("remove", path))

    def sync(self, path: str) -> None:
        """Staged effects become durable with the operation's own publish."""


class _StagedHandle:
    """A handler over an in-memory copy; closing a writable one stages its content."""

    def __init__(
        self, driver: StagingDriver, path: str, data: bytearray, pos: int, *, writable: bool
    ) -> None:
        self._driver = driver
        self._path = path
        self._data = data
        self._pos = pos
        self._writable = writable
        self._dirty = writable and pos == 0 and not data  # a created/truncated file counts

    def read(self, size: int) -> bytes:
        chunk = bytes(self._data[self._pos : self._pos + size])
        self._pos += len(chunk)
        return chunk

    def write(self, data: memoryview) -> int:
        if not self._writable:
            raise VfsError("permission", f"{self._path} is open for reading")
        end = self._pos + len(data)
        if len(self._data) < self._pos:
            self._data.extend(bytes(self._pos - len(self._data)))
        self._data[self._pos : end] = data
        self._pos = end
        self._dirty = True
        return len(data)

    def seek(self, offset: int) -> None:
        if offset < 0:
            raise VfsError("invalid", "negative seek offset")
        self._pos = offset

    def sync(self) -> None:
        """Staged: durable with the operation."""

    def close(self) -> None:
        if self._dirty:
            self._driver.effects.append(("write", self._path, bytes(self._data)))
            self._dirty = False


def land(fs: HookedFileSystem, effects: list[Effect]) -> None:
    """Apply staged effects in order, hooks suppressed. The operation already
    succeeded, so a failing effect is logged, not raised."""
    import logging

    driver = FsDriver(fs, via_call=False)
    for effect in effects:
        try:
            kind = effect[0]
            if kind == "write":
                driver.write(effect[1], None, memoryview(effect[2]))
            elif kind == "meta":
                driver.meta_commit(effect[1], effect[2])
            elif kind == "mkdir":
                driver.mkdir(effect[1])
            elif kind == "rename":
                driver.rename(effect[1], effect[2])
            elif kind == "remove":
                driver.remove(effect[1])
        except VfsError as exc:
            logging.getLogger(__name__).warning(
                "hooks: staged %s of %s failed: %s", effect[0], effect[1], exc
            )

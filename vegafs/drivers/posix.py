"""`posix://DIR` — a host directory, confined to DIR.

Confinement is structural, not string-based: every path is walked component by
component from a descriptor of DIR with ``O_NOFOLLOW | O_DIRECTORY`` and the
``*at`` system calls (``dir_fd=``), so neither ``..`` (already refused by the
VFS's normalisation, and again here) nor a symlink planted inside DIR — even one
swapped in between two calls — can lead outside: a symlink anywhere on the path
is refused with code "escape" (this driver never follows symlinks). Hard links
and bind mounts placed inside DIR by the host are the host's decision.

Memory: each read fills a bytearray with ``preadv`` (one copy, from the kernel —
the slice is then a zero-copy view of it). A handler recycles a buffer only when
its reference count shows that no slice holds it (see PosixHandle).

Metadata is real xattrs, only in the ``user.`` namespace. A commit of several
keys is *not* atomic on POSIX (xattrs are set one by one); the driver applies
them in order and, if one fails, restores the keys it had already changed —
all-or-nothing against errors, not against crashes or concurrent readers. It
declares ``atomic_meta_commit=False`` accordingly. Whole-file `write` is atomic
(temporary file + rename in the same directory); offset writes are one
``pwrite`` loop. `sync` is a real fsync.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat as st
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from vegafs.drivers import uri_directory
from vegafs.vm.vfs import (
    Buffer,
    DriverCaps,
    OpenFlags,
    StatInfo,
    VfsError,
    check_meta_key,
)

_CAPS = DriverCaps(read=True, write=True, handlers=True, meta=True, atomic_meta_commit=False,
                   atomic_write=True, rename=True, remove=True, sync=True,
                   meta_namespaces=("user.",))

_ERRNO_CODES = {
    errno.ENOENT: "not_found", errno.ENODATA: "not_found", errno.EEXIST: "exists",
    errno.EACCES: "permission", errno.EPERM: "permission", errno.EROFS: "permission",
    errno.ENOSPC: "no_space", errno.EDQUOT: "no_space", errno.E2BIG: "no_space",
    errno.EISDIR: "is_dir", errno.ENOTDIR: "not_dir", errno.ENOTEMPTY: "not_empty",
    errno.ELOOP: "escape", errno.EBUSY: "busy", errno.ENOTSUP: "unsupported",
    errno.EINVAL: "invalid", errno.ENAMETOOLONG: "invalid", errno.EXDEV: "unsupported",
}

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _error(exc: OSError, path: str) -> VfsError:
    code = _ERRNO_CODES.get(exc.errno or 0, "io")
    if code == "escape":
        return VfsError("escape", f"{path}: symlinks are not followed by posix://")
    return VfsError(code, f"{path}: {os.strerror(exc.errno or errno.EIO).lower()}")


@contextmanager
def _oserrors(path: str) -> Iterator[None]:
    """Translate OSError into VfsError in one place."""
    try:
        yield
    except OSError as exc:
        raise _error(exc, path) from None


def _pwrite_all(fd: int, data: memoryview, offset: int) -> int:
    """Write all of `data` at `offset` (pwrite may write less than asked)."""
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)
    return done


def _open_dir(name: str, dfd: int, path: str) -> int:
    """Open directory `name` under `dfd` without following a symlink. O_NOFOLLOW with
    O_DIRECTORY reports a symlink as ENOTDIR, so look before blaming the caller."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dfd)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            with suppress(OSError):
                if st.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
                    raise VfsError("escape", f"{path}: symlinks are not followed by posix://"
                                   ) from None
        raise _error(exc, path) from None


#: Buffers a handler keeps for reuse (a streaming loop alternates between two: the
#: slice of the previous read is still held while the next read runs).
_POOL = 3
#: sys.getrefcount of a pooled buffer that nothing else references: the pool list,
#: the loop variable, and getrefcount's own argument.
_UNREFERENCED = 3


class PosixHandle:
    """An open host file; reads fill buffers with preadv at our own position.

    Buffer reuse without breaking the slice rule: a slice (and any memoryview of
    it) holds a reference to its buffer, so a pooled buffer whose reference count
    shows that only the pool holds it cannot be observed by any live slice, and is
    refilled instead of allocating (and page-faulting) a fresh one. A buffer that
    some slice still holds is never touched: the slice stays valid until close.
    """

    __slots__ = ("_fd", "_path", "_pos", "_append", "_pool")

    def __init__(self, fd: int, path: str, append: bool) -> None:
        self._fd, self._path, self._pos, self._append = fd, path, 0, append
        self._pool: list[bytearray] = []

    def _buffer(self, size: int) -> bytearray:
        for b in self._pool:
            if len(b) == size and sys.getrefcount(b) == _UNREFERENCED:
                return b
        buf = bytearray(size)
        if len(self._pool) >= _POOL:
            self._pool.pop(0)
        self._pool.append(buf)
        return buf

    def read(self, size: int) -> Buffer:
        buf = self._buffer(size)
        with _oserrors(self._path):
            n = os.preadv(self._fd, [buf], self._pos)
        if n < size:
            del buf[n:]
        self._pos += n
        return buf

    def write(self, data: memoryview) -> int:
        with _oserrors(self._path):
            if self._append:
                self._pos = os.fstat(self._fd).st_size
            done = _pwrite_all(self._fd, data, self._pos)
        self._pos += done
        return done

    def seek(self, offset: int) -> None:
        self._pos = offset

    def sync(self) -> None:
        with _oserrors(self._path):
            os.fsync(self._fd)

    def close(self) -> None:
        self._pool.clear()
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with _oserrors(self._path):
                os.close(fd)


class PosixDriver:
    """The `posix://DIR` driver; DIR must be an existing directory."""

    scheme = "posix"

    def __init__(self, root: str) -> None:
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise VfsError("not_found", f"posix://{root}: not a directory")
        self.root = real

    @classmethod
    def from_uri(cls, uri: str) -> PosixDriver:
        """``posix:///abs/dir`` -> a driver confined to /abs/dir."""
        return cls(uri_directory(uri, "posix", "directory"))

    def capabilities(self) -> DriverCaps:
        return _CAPS

    # -- confined path walking -----------------------------------------------------

    @contextmanager
    def _at(self, path: str) -> Iterator[tuple[int, str]]:
        """(descriptor of the parent directory, last name) of `path`, walked without
        following any symlink; the descriptor is closed on exit. Root -> (root, ".")."""
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise VfsError("escape", f"path {path!r} is not normalised")
        with _oserrors(path):
            fd = os.open(self.root, _DIR_FLAGS)
        try:
            for part in parts[:-1]:
                nfd = _open_dir(part, fd, path)
                os.close(fd)
                fd = nfd
            yield fd, parts[-1] if parts else "."
        finally:
            os.close(fd)

    def _open_fd(self, path: str, flags: int, mode: int = 0o644) -> int:
        with self._at(path) as (dfd, name), _oserrors(path):
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)

    @staticmethod
    def _regular(fd: int, path: str) -> os.stat_result:
        """fstat `fd`, refusing directories and special files (the caller closes fd)."""
        s = os.fstat(fd)
        if st.S_ISDIR(s.st_mode):
            raise VfsError("is_dir", f"{path} is a directory")
        if not st.S_ISREG(s.st_mode):
            raise VfsError("unsupported", f"{path} is not a regular file")
        return s

    # -- Driver ----------------------------------------------------------------------

    def open(self, path: str, flags: OpenFlags) -> PosixHandle:
        if flags.read and flags.write:
            oflags = os.O_RDWR
        elif flags.write:
            oflags = os.O_WRONLY
        else:
            oflags = os.O_RDONLY
        if flags.create:
            oflags |= os.O_CREAT
        if flags.truncate:
            oflags |= os.O_TRUNC
        if flags.exclusive:
            oflags |= os.O_EXCL
        fd = self._open_fd(path, oflags | os.O_NONBLOCK)
        try:
            self._regular(fd, path)
        except VfsError:
            os.close(fd)
            raise
        return PosixHandle(fd, path, flags.append)

    def read(self, path: str, offset: int, size: int | None) -> Buffer:
        fd = self._open_fd(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            s = self._regular(fd, path)
            n = max(s.st_size - offset, 0) if size is None else size
            buf = bytearray(n)
            got = 0
            with _oserrors(path):
                while got < n:
                    k = os.preadv(fd, [memoryview(buf)[got:]], offset + got)
                    if k == 0:
                        break
                    got += k
            if got < n:
                del buf[got:]
            return buf
        finally:
            os.close(fd)

    def size(self, path: str) -> int:
        fd = self._open_fd(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            return self._regular(fd, path).st_size
        finally:
            os.close(fd)

    def write(self, path: str, offset: int | None, data: memoryview) -> int:
        if offset is not None:
            fd = self._open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK)
            try:
                self._regular(fd, path)
                with _oserrors(path):
                    return _pwrite_all(fd, data, offset)
            finally:
                os.close(fd)
        with self._at(path) as (dfd, name), _oserrors(path):
            if name == ".":
                raise VfsError("is_dir", f"{path} is a directory")
            mode = 0o644
            try:
                old = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if st.S_ISDIR(old.st_mode):
                    raise VfsError("is_dir", f"{path} is a directory")
                mode = st.S_IMODE(old.st_mode)
            except FileNotFoundError:
                pass
            tmp = f".{name[:200]}.vega-tmp-{secrets.token_hex(6)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         mode, dir_fd=dfd)
            try:
                done = 0
                while done < len(data):
                    done += os.write(fd, data[done:])
                os.close(fd)
                fd = -1
                os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                with suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                raise
            return len(data)

    def list(self, path: str) -> list[str]:
        with self._at(path) as (dfd, name):
            fd = _open_dir(name, dfd, path)
            try:
                with _oserrors(path):
                    return sorted(os.listdir(fd))
            finally:
                os.close(fd)

    def stat(self, path: str) -> StatInfo:
        with self._at(path) as (dfd, name), _oserrors(path):
            s = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if st.S_ISDIR(s.st_mode):
            kind = "dir"
        elif st.S_ISREG(s.st_mode):
            kind = "file"
        elif st.S_ISLNK(s.st_mode):
            kind = "symlink"
        else:
            kind = "other"
        return StatInfo(kind, s.st_size, s.st_mtime_ns, s.st_mode)

    def mkdir(self, path: str) -> None:
        with self._at(path) as (dfd, name), _oserrors(path):
            os.mkdir(name, 0o755, dir_fd=dfd)

    def rename(self, src: str, dst: str) -> None:
        with self._at(src) as (sfd, sname), self._at(dst) as (dfd, dname), _oserrors(src):
            if "." in (sname, dname):
                raise VfsError("busy", "the root of a mount cannot be renamed")
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)

    def remove(self, path: str) -> None:
        with self._at(path) as (dfd, name), _oserrors(path):
            if name == ".":
                raise VfsError("busy", "the root of a mount cannot be removed")
            s = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if st.S_ISDIR(s.st_mode):
                os.rmdir(name, dir_fd=dfd)
            else:
                os.unlink(name, dir_fd=dfd)

    @contextmanager
    def _meta_fd(self, path: str) -> Iterator[int]:
        """A descriptor for xattr calls on a file or directory (never a symlink)."""
        with self._at(path) as (dfd, name), _oserrors(path):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dfd)
        try:
            yield fd
        finally:
            os.close(fd)

    def meta_read(self, path: str) -> dict[str, bytes]:
        with self._meta_fd(path) as fd, _oserrors(path):
            return {k: os.getxattr(fd, k) for k in sorted(os.listxattr(fd))
                    if k.startswith(_CAPS.meta_namespaces)}

    def meta_commit(self, path: str, changes: dict[str, bytes | None]) -> None:
        for key in changes:
            check_meta_key(key, _CAPS.meta_namespaces)
        with self._meta_fd(path) as fd:
            before: dict[str, bytes | None] = {}
            try:
                for key, value in changes.items():
                    try:
                        before[key] = os.getxattr(fd, key)
                    except OSError as exc:
                        if exc.errno != errno.ENODATA:
                            raise
                        before[key] = None
                    if value is None:
                        if before[key] is not None:
                            os.removexattr(fd, key)
                    else:
                        os.setxattr(fd, key, value)
            except OSError as exc:
                self._restore(fd, before)
                raise _error(exc, path) from None

    @staticmethod
    def _restore(fd: int, before: dict[str, bytes | None]) -> None:
        """Best-effort undo of a partly applied commit (see the module essay)."""
        for key, old in before.items():
            try:
                if old is None:
                    os.removexattr(fd, key)
                else:
                    os.setxattr(fd, key, old)
            except OSError:
                continue

    def sync(self, path: str) -> None:
        with self._meta_fd(path) as fd, _oserrors(path):
            os.fsync(fd)

    def close(self) -> None:
        """Nothing held between calls: every operation opens and closes its descriptors."""

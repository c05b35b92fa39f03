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

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vegafs.drivers.fs import FsDriver
from vegafs.vm.vfs import OpenFlags, StatInfo, VfsError

if TYPE_CHECKING:
    from vegafs.hooks.fs import HookedFileSystem


def _suppressed(fs: HookedFileSystem, fn: Callable[[], Any]) -> Any:
    with fs.hooks.suppress():
        return fn()


class HookDriver(FsDriver):
    """The live filesystem as a hook sees it (the generic driver, on the
    filesystem's thread with hooks suppressed, plus ``revert``)."""

    def __init__(self, fs: HookedFileSystem, *, via_call: bool) -> None:
        # From a worker it is an after-hook's: it reads recorded versions, so
        # what it computes from a file is of a version in the log (a stamp
        # it commits is ordered after that version), never of a write another
        # handle has in progress (docs/hooks.md).
        super().__init__(
            fs, fs.call if via_call else functools.partial(_suppressed, fs), recorded=via_call
        )
        self._hfs = fs

    def lookup_path(self, path: str) -> int | None:
        return self._hfs.lookup_path(path)  # the mount's name cache

    def read_all(self, ino: int) -> bytes:
        if self._recorded:
            return super().read_all(ino)  # the recorded version: fires no hooks either
        return self._hfs.read_all(ino)  # below the hooks: reading does not fire them

    def revert(self, path: str) -> int:
        """Restore the previous version of ``path`` (vegafs extension: ``revert()``)."""
        return self._do(lambda: self._hfs.revert(self._ino(path)))


#: A staged effect: ("write", path, content) | ("meta", path, changes) |
#: ("mkdir", path) | ("rename", src, dst) | ("remove", path).
Effect = tuple[Any, ...]


def _within(path: str, top: str) -> bool:
    """``path`` is ``top`` or below it."""
    return path == top or path.startswith(top.rstrip("/") + "/")


@dataclass
class _Staged:
    """What a path is once this operation's staged effects are applied.

    ``kind``: ``file`` (staged ``content``), ``dir`` (a staged mkdir), ``gone``
    (removed, renamed away, or under a directory that did not exist) or
    ``live`` (the live tree's ``live`` path: itself, or where a staged rename
    took it from). ``meta``: staged metadata changes on it, oldest first.
    """

    kind: str
    content: bytes = b""
    live: str = ""
    meta: list[dict[str, bytes | None]] = field(default_factory=list)


class StagingDriver(HookDriver):
    """The driver of a *synchronous* hook: reads see the live tree as this
    operation's hooks' staged effects so far would leave it (contents,
    metadata, mkdirs, renames and removals); writes, metadata commits, mkdir,
    rename and remove are recorded in :attr:`effects` instead of applied.

    The filesystem applies the effects of every hook that allowed together
    with the operation itself, as one store record (HookedFileSystem's
    ``_guarded``); a denial, a trap or a budget stop discards them. ``revert``
    is the exception: it applies at once (undoing a bad save is the point of
    denying it).
    """

    def __init__(self, fs: HookedFileSystem, accepted: list[Effect]) -> None:
        super().__init__(fs, via_call=False)
        self._accepted = accepted
        self.effects: list[Effect] = []

    def _resolve(self, path: str) -> _Staged:
        """Walk the staged effects newest first, following renames back to
        where the path's content came from (see :class:`_Staged`)."""
        meta: list[dict[str, bytes | None]] = []
        for effect in reversed(self._accepted + self.effects):
            kind = effect[0]
            if kind == "write" and effect[1] == path:
                return _Staged("file", effect[2], meta=meta[::-1])
            if kind == "meta" and effect[1] == path:
                meta.append(effect[2])
            elif kind == "remove" and _within(path, effect[1]):
                return _Staged("gone")
            elif kind == "mkdir" and _within(path, effect[1]):
                return _Staged("dir", meta=meta[::-1]) if path == effect[1] else _Staged("gone")
            elif kind == "rename":
                src, dst = effect[1], effect[2]
                if _within(path, dst):
                    path = src + path[len(dst) :]
                elif _within(path, src):
                    return _Staged("gone")
        return _Staged("live", live=path, meta=meta[::-1])

    def _found(self, path: str) -> _Staged:
        """Like _resolve, but a path that does not exist raises not_found."""
        seen = self._resolve(path)
        if seen.kind == "gone" or (seen.kind == "live" and self.lookup_path(seen.live) is None):
            raise VfsError("not_found", f"{path} does not exist")
        return seen

    def _current(self, path: str) -> bytes | None:
        """The content of file ``path`` as staged so far (None: no such file)."""
        seen = self._resolve(path)
        if seen.kind == "file":
            return seen.content
        if seen.kind == "dir":
            raise VfsError("is_dir", f"{path} is a directory")
        if seen.kind == "gone":
            return None
        ino = self.lookup_path(seen.live)
        if ino is None:
            return None
        return self._do(lambda: self.read_all(ino))

    def open(self, path: str, flags: OpenFlags) -> Any:
        current = self._current(path)
        if current is None and not flags.create:
            raise VfsError("not_found", f"{path} does not exist")
        if current is not None and flags.exclusive:
            raise VfsError("exists", f"{path} exists")
        if current is None:
            self._check_parent(path)
        if not flags.write:
            return _StagedHandle(self, path, bytearray(current or b""), 0, writable=False)
        data = bytearray() if flags.truncate or current is None else bytearray(current)
        return _StagedHandle(self, path, data, len(data) if flags.append else 0, writable=True)

    def read(self, path: str, offset: int, size: int | None) -> bytes:
        seen = self._found(path)
        if seen.kind == "live":
            return super().read(seen.live, offset, size)
        if seen.kind == "dir":
            raise VfsError("is_dir", f"{path} is a directory")
        return seen.content[offset : len(seen.content) if size is None else offset + size]

    def size(self, path: str) -> int:
        seen = self._found(path)
        return super().size(seen.live) if seen.kind == "live" else len(seen.content)

    def stat(self, path: str) -> StatInfo:
        seen = self._found(path)
        if seen.kind == "live":
            return super().stat(seen.live)
        if seen.kind == "dir":
            return StatInfo("dir", 0, 0, 0o755)
        return StatInfo("file", len(seen.content), 0, 0o644)

    def list(self, path: str) -> list[str]:
        seen = self._found(path)
        if seen.kind == "file":
            raise VfsError("not_dir", f"{path} is not a directory")
        names = set(super().list(seen.live)) if seen.kind == "live" else set()
        base = path.rstrip("/") + "/"
        for effect in self._accepted + self.effects:
            for staged in effect[1:3] if effect[0] == "rename" else effect[1:2]:
                if isinstance(staged, str) and staged.startswith(base):
                    names.add(staged[len(base) :].split("/", 1)[0])
        return sorted(
            n for n in names if self._resolve(base + n).kind != "gone" and self._exists(base + n)
        )

    def _check_parent(self, path: str) -> None:
        """A new name needs its directory (live or staged), as the landing will."""
        parent = path.rstrip("/").rpartition("/")[0] or "/"
        if parent != "/" and self.stat(parent).kind != "dir":
            raise VfsError("not_dir", f"{parent} is not a directory")

    def _exists(self, path: str) -> bool:
        seen = self._resolve(path)
        return seen.kind in ("file", "dir") or (
            seen.kind == "live" and self.lookup_path(seen.live) is not None
        )

    def write(self, path: str, offset: int | None, data: memoryview) -> int:
        self._check_parent(path)
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
        seen = self._found(path)
        meta = super().meta_read(seen.live) if seen.kind == "live" else {}
        for changes in seen.meta:
            for key, value in changes.items():
                if value is None:
                    meta.pop(key, None)
                else:
                    meta[key] = value
        return meta

    def meta_commit(self, path: str, changes: dict[str, bytes | None]) -> None:
        self._found(path)
        self.effects.append(("meta", path, dict(changes)))

    def mkdir(self, path: str) -> None:
        if self._exists(path):
            raise VfsError("exists", f"{path} exists")
        self._check_parent(path)
        self.effects.append(("mkdir", path))

    def rename(self, src: str, dst: str) -> None:
        self._found(src)
        self._check_parent(dst)
        self.effects.append(("rename", src, dst))

    def remove(self, path: str) -> None:
        self._found(path)
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

    driver = HookDriver(fs, via_call=False)
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

"""``vegafs hooks test``: run a hook file against a store, read-only.

Why: a hook decides what users may do to their files; its author wants to see
what it would decide for a given event and path — and what a read transform
would show — before dropping it into a live hooks directory. The dry run
compiles the file exactly as the engine does, builds the event from the
store's head (or a snapshot, ``--at``), and runs every matching hook (``on``
and ``after``) against a read-only view of the tree: a hook that tries to
write gets a failed result, never a change.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vegafs.hooks.engine import HookEngine, source_hash
from vegafs.hooks.errnos import errno_name
from vegafs.hooks.events import HookEvent, PendingMeta
from vegafs.store import BLOCK_SIZE, ROOT_INO
from vegafs.vm.vfs import DriverCaps, OpenFlags, StatInfo, VfsError

_READ_ONLY = "dry run: the store is read-only"


@dataclass
class DryResult:
    """What one hook would do."""

    hook: str
    when: str
    decision: str  # allow, deny, transform, failed
    errno: str | None
    message: str
    status: str
    steps: int
    output: bytes | None


def content(view: Any, ino: int) -> bytes:
    """The bytes of file ``ino`` in ``view`` (holes read as zeros)."""
    inode = view.get_inode(ino)
    out = bytearray(inode.size)
    for index, chunk_hash in inode.blocks.items():
        start = index * BLOCK_SIZE
        if start >= inode.size:
            continue
        data = view.read_chunk(chunk_hash)[: inode.size - start]
        out[start : start + len(data)] = data
    return bytes(out)


def resolve(view: Any, path: str) -> int | None:
    ino = ROOT_INO
    for part in (p for p in path.split("/") if p):
        child = view.lookup(ino, os.fsencode(part))
        if child is None:
            return None
        ino = child
    return ino


class ViewDriver:
    """A read-only VFS driver over a store view (head or snapshot)."""

    scheme = "vegafs"

    def __init__(self, view: Any) -> None:
        self._view = view

    def _ino(self, path: str) -> int:
        ino = resolve(self._view, path)
        if ino is None:
            raise VfsError("not_found", f"{path} does not exist")
        return ino

    def capabilities(self) -> DriverCaps:
        return DriverCaps(write=False, atomic_write=False, rename=False, remove=False, sync=False)

    def open(self, path: str, flags: OpenFlags) -> _ViewHandle:
        if flags.write:
            raise VfsError("permission", _READ_ONLY)
        return _ViewHandle(content(self._view, self._ino(path)))

    def read(self, path: str, offset: int, size: int | None) -> bytes:
        data = content(self._view, self._ino(path))
        return data[offset : len(data) if size is None else offset + size]

    def size(self, path: str) -> int:
        return int(self._view.get_inode(self._ino(path)).size)

    def list(self, path: str) -> list[str]:
        return sorted(os.fsdecode(n) for n, _ in self._view.listdir(self._ino(path)))

    def stat(self, path: str) -> StatInfo:
        inode = self._view.get_inode(self._ino(path))
        kind = (
            "dir" if stat.S_ISDIR(inode.mode) else "file" if stat.S_ISREG(inode.mode) else "other"
        )
        return StatInfo(kind, inode.size, inode.mtime_ns, inode.mode & 0o7777)

    def meta_read(self, path: str) -> dict[str, bytes]:
        inode = self._view.get_inode(self._ino(path))
        return {os.fsdecode(k): v for k, v in inode.xattrs.items()}

    def write(self, path: str, offset: int | None, data: memoryview) -> int:
        raise VfsError("permission", _READ_ONLY)

    def mkdir(self, path: str) -> None:
        raise VfsError("permission", _READ_ONLY)

    def rename(self, src: str, dst: str) -> None:
        raise VfsError("permission", _READ_ONLY)

    def remove(self, path: str) -> None:
        raise VfsError("permission", _READ_ONLY)

    def meta_commit(self, path: str, changes: dict[str, bytes | None]) -> None:
        raise VfsError("permission", _READ_ONLY)

    def sync(self, path: str) -> None:
        """Nothing to make durable in a read-only view."""

    def revert(self, path: str) -> int:
        raise VfsError("permission", _READ_ONLY)

    def close(self) -> None:
        """The view belongs to the caller."""


class _ViewHandle:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, size: int) -> bytes:
        chunk = self._data[self._pos : self._pos + size]
        self._pos += len(chunk)
        return chunk

    def write(self, data: memoryview) -> int:
        raise VfsError("permission", _READ_ONLY)

    def seek(self, offset: int) -> None:
        self._pos = offset

    def sync(self) -> None:
        """Read-only: nothing to sync."""

    def close(self) -> None:
        """Nothing held."""


class _ViewHost:
    def __init__(self, view: Any) -> None:
        self._driver = ViewDriver(view)

    def driver(self, *, from_worker: bool) -> ViewDriver:
        return self._driver

    def call(self, fn: Any) -> Any:
        return fn()


def dry_run(
    hook_file: str | os.PathLike[str],
    view: Any,
    event: str,
    path: str,
    *,
    new_path: str | None = None,
    uid: int = 0,
    gid: int = 0,
) -> list[DryResult]:
    """Run every hook of ``hook_file`` that matches (``event``, ``path``) against
    ``view``; raises HookCompileError if the file does not compile."""
    source = Path(hook_file).read_bytes()
    engine = HookEngine(None)
    engine.host = _ViewHost(view)
    hooks = engine.compile(source, Path(hook_file).name, source_hash(source))
    ino = resolve(view, path)
    inode = view.get_inode(ino) if ino is not None else None
    is_file = inode is not None and stat.S_ISREG(inode.mode)
    size = int(inode.size) if inode is not None else 0
    results = []
    for hook in hooks:
        if hook.event != event or not hook.glob.matches(path):
            continue
        ev = HookEvent(
            event,
            path,
            uid=uid,
            gid=gid,
            size=size,
            file_size=size,
            old_path=path if event == "rename" else None,
            new_path=new_path if event == "rename" else None,
            # the default binds this file's ino; mypy cannot type a lambda with one
            load_data=(lambda i=ino: content(view, i)) if is_file else None,  # type: ignore[misc]
            meta=PendingMeta(path, {os.fsdecode(k): v for k, v in inode.xattrs.items()}, {})
            if inode is not None and event == "commit"
            else None,
        )
        run = engine.run_once(hook, ev)
        output = bytes(ev.output.buffer) if ev.output is not None and ev.output.written else None
        denied = run.decision is not None and not run.decision.allowed
        if run.failed:
            decision, code = (
                ("allow (failure open)", None)
                if hook.settings.failure_open
                else ("deny (failure closed)", errno_name(errno.EIO))
            )
        elif denied:
            assert run.decision is not None
            decision, code = "deny", errno_name(run.decision.errno)
        else:
            decision, code = ("transform" if output is not None else "allow"), None
        results.append(
            DryResult(
                hook.name, hook.when, decision, code, run.message, run.status, run.steps, output
            )
        )
    return results

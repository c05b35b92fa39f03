"""`mem://` — a scratch filesystem in memory, with xattr-like metadata.

A tree of nodes private to one driver instance (each `mount(.., "mem://")` gets
a fresh, empty one). Files are bytearrays; reads copy the requested range into a
fresh buffer that becomes the slice's memory (seed 000 §10.1: the driver never
touches a returned buffer again), so a later write cannot change bytes a program
already holds. An optional `capacity` makes "no space" a testable, ordinary
failure. Declared honestly: `sync` is a no-op (nothing is durable), and metadata
commits and whole-file writes are atomic (single-threaded, applied in one step).
"""

from __future__ import annotations

import time

from vegafs.vm.vfs import Buffer, DriverCaps, OpenFlags, StatInfo, VfsError, check_meta_key

_CAPS = DriverCaps(read=True, write=True, handlers=True, meta=True, atomic_meta_commit=True,
                   atomic_write=True, rename=True, remove=True, sync=False,
                   meta_namespaces=("user.",))


class _Node:
    __slots__ = ("is_dir", "data", "children", "meta", "mtime_ns")

    def __init__(self, is_dir: bool) -> None:
        self.is_dir = is_dir
        self.data = bytearray()
        self.children: dict[str, _Node] = {}
        self.meta: dict[str, bytes] = {}
        self.mtime_ns = time.time_ns()


def _parts(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise VfsError("escape", f"path {path!r} is not normalised")
    return parts


class MemHandle:
    """A position over one node; the node stays alive while the handle does."""

    __slots__ = ("_drv", "_node", "_flags", "_pos")

    def __init__(self, drv: MemDriver, node: _Node, flags: OpenFlags) -> None:
        self._drv, self._node, self._flags, self._pos = drv, node, flags, 0

    def read(self, size: int) -> Buffer:
        data = self._node.data
        out = bytes(data[self._pos : self._pos + size])
        self._pos += len(out)
        return out

    def write(self, data: memoryview) -> int:
        if self._flags.append:
            self._pos = len(self._node.data)
        n = self._drv._write_at(self._node, self._pos, data)
        self._pos += n
        return n

    def seek(self, offset: int) -> None:
        self._pos = offset

    def sync(self) -> None:
        """Nothing to make durable in memory."""

    def close(self) -> None:
        """Nothing to release: the node lives on while it is linked or referenced."""


class MemDriver:
    """The `mem://` driver. `capacity`: total file bytes allowed (None: unlimited)."""

    scheme = "mem"

    def __init__(self, capacity: int | None = None) -> None:
        self._root = _Node(True)
        self.capacity = capacity
        self._used = 0

    @classmethod
    def from_uri(cls, uri: str) -> MemDriver:
        """``mem://`` -> a fresh empty scratch tree (nothing after the scheme is allowed)."""
        if uri != "mem://":
            raise VfsError("invalid", f"mem:// takes no path, got {uri!r}")
        return cls()

    def capabilities(self) -> DriverCaps:
        return _CAPS

    # -- tree ------------------------------------------------------------------------

    def _node(self, path: str) -> _Node:
        node = self._root
        for part in _parts(path):
            if not node.is_dir:
                raise VfsError("not_dir", f"{path}: a component is not a directory")
            child = node.children.get(part)
            if child is None:
                raise VfsError("not_found", f"{path} does not exist")
            node = child
        return node

    def _parent(self, path: str) -> tuple[_Node, str]:
        parts = _parts(path)
        if not parts:
            raise VfsError("busy", "the root of a mount cannot be replaced")
        parent = self._node("/" + "/".join(parts[:-1]))
        if not parent.is_dir:
            raise VfsError("not_dir", f"{path}: the parent is not a directory")
        return parent, parts[-1]

    def _file(self, path: str, create: bool) -> _Node:
        parent, name = self._parent(path)
        node = parent.children.get(name)
        if node is None:
            if not create:
                raise VfsError("not_found", f"{path} does not exist")
            node = parent.children[name] = _Node(False)
        if node.is_dir:
            raise VfsError("is_dir", f"{path} is a directory")
        return node

    def _resize(self, node: _Node, new_len: int) -> None:
        grow = new_len - len(node.data)
        if self.capacity is not None and self._used + grow > self.capacity:
            raise VfsError("no_space", f"mem:// is full ({self._used} of {self.capacity} bytes)")
        self._used += grow

    def _write_at(self, node: _Node, offset: int, data: memoryview) -> int:
        end = offset + len(data)
        if end > len(node.data):
            self._resize(node, end)
            node.data.extend(bytes(end - len(node.data)))
        node.data[offset:end] = data
        node.mtime_ns = time.time_ns()
        return len(data)

    # -- Driver ----------------------------------------------------------------------

    def open(self, path: str, flags: OpenFlags) -> MemHandle:
        if flags.exclusive:
            parent, name = self._parent(path)
            if name in parent.children:
                raise VfsError("exists", f"{path} already exists")
        node = self._file(path, create=flags.create)
        if flags.truncate:
            self._resize(node, 0)
            node.data = bytearray()
        return MemHandle(self, node, flags)

    def read(self, path: str, offset: int, size: int | None) -> Buffer:
        data = self._file(path, create=False).data
        end = len(data) if size is None else offset + size
        return bytes(data[offset:end])

    def size(self, path: str) -> int:
        return len(self._file(path, create=False).data)

    def write(self, path: str, offset: int | None, data: memoryview) -> int:
        node = self._file(path, create=True)
        if offset is None:
            self._resize(node, len(data))
            node.data = bytearray(data)
            node.mtime_ns = time.time_ns()
            return len(data)
        return self._write_at(node, offset, data)

    def list(self, path: str) -> list[str]:
        node = self._node(path)
        if not node.is_dir:
            raise VfsError("not_dir", f"{path} is not a directory")
        return sorted(node.children)

    def stat(self, path: str) -> StatInfo:
        node = self._node(path)
        if node.is_dir:
            return StatInfo("dir", 0, node.mtime_ns, 0o40755)
        return StatInfo("file", len(node.data), node.mtime_ns, 0o100644)

    def mkdir(self, path: str) -> None:
        parent, name = self._parent(path)
        if name in parent.children:
            raise VfsError("exists", f"{path} already exists")
        parent.children[name] = _Node(True)

    def rename(self, src: str, dst: str) -> None:
        sparent, sname = self._parent(src)
        node = sparent.children.get(sname)
        if node is None:
            raise VfsError("not_found", f"{src} does not exist")
        if node.is_dir and (dst + "/").startswith(src.rstrip("/") + "/"):
            raise VfsError("invalid", f"cannot move {src} into itself")
        dparent, dname = self._parent(dst)
        old = dparent.children.get(dname)
        if old is not None and old is not node:
            if old.is_dir != node.is_dir:
                raise VfsError("is_dir" if old.is_dir else "not_dir", f"{dst}: kind differs")
            if old.is_dir and old.children:
                raise VfsError("not_empty", f"{dst} is not empty")
            self._used -= len(old.data)
        del sparent.children[sname]
        dparent.children[dname] = node

    def remove(self, path: str) -> None:
        parent, name = self._parent(path)
        node = parent.children.get(name)
        if node is None:
            raise VfsError("not_found", f"{path} does not exist")
        if node.is_dir and node.children:
            raise VfsError("not_empty", f"{path} is not empty")
        self._used -= len(node.data)
        del parent.children[name]

    def meta_read(self, path: str) -> dict[str, bytes]:
        return dict(self._node(path).meta)

    def meta_commit(self, path: str, changes: dict[str, bytes | None]) -> None:
        node = self._node(path)
        for key in changes:
            check_meta_key(key, _CAPS.meta_namespaces)
        for key, value in changes.items():  # validated first: all or nothing
            if value is None:
                node.meta.pop(key, None)
            else:
                node.meta[key] = bytes(value)

    def sync(self, path: str) -> None:
        self._node(path)  # nothing is durable; only the path must exist

    def close(self) -> None:
        self._root = _Node(True)
        self._used = 0

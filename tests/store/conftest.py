"""Shared helpers for the store tests: a fresh store, files made of chunks, a clean-fsck check."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from vegafs.store import BLOCK_SIZE, ROOT_INO, Store


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(store_path: Path) -> Iterator[Store]:
    s = Store.open(store_path, create=True)
    try:
        yield s
    finally:
        s.close()


def make_file(store: Store, name: bytes, data: bytes, parent: int = ROOT_INO) -> int:
    """Create a regular file holding ``data`` under ``parent``; return its inode number."""
    ino = store.alloc_ino()
    blocks = {
        i // BLOCK_SIZE: store.put_chunk(data[i : i + BLOCK_SIZE])
        for i in range(0, len(data), BLOCK_SIZE)
    }
    with store.transaction() as t:
        t.create_inode(ino, mode=stat.S_IFREG | 0o644, uid=0, gid=0, times_ns=1)
        t.update(ino, nlink=1)
        t.link(parent, name, ino)
        t.set_blocks(ino, blocks, len(data))
    return ino


def write_file(store: Store, ino: int, data: bytes) -> None:
    """Replace the content of ``ino`` with ``data`` (a new version)."""
    old = store.get_inode(ino)
    assert old is not None
    blocks: dict[int, bytes | None] = {
        i // BLOCK_SIZE: store.put_chunk(data[i : i + BLOCK_SIZE])
        for i in range(0, len(data), BLOCK_SIZE)
    }
    with store.transaction() as t:
        t.set_blocks(ino, blocks, len(data))


def read_file(view: object, ino: int) -> bytes:
    """The content of ``ino`` in a store or view (holes read as zeros)."""
    inode = view.get_inode(ino)  # type: ignore[attr-defined]
    assert inode is not None
    out = bytearray(inode.size)
    for index, h in inode.blocks.items():
        data = view.read_chunk(h)  # type: ignore[attr-defined]
        start = index * BLOCK_SIZE
        out[start : start + len(data)] = data[: max(0, inode.size - start)]
    return bytes(out)


def make_dir(store: Store, name: bytes, parent: int = ROOT_INO) -> int:
    ino = store.alloc_ino()
    with store.transaction() as t:
        t.create_inode(ino, mode=stat.S_IFDIR | 0o755, uid=0, gid=0, times_ns=1)
        t.update(ino, nlink=2)
        t.link(parent, name, ino)
    return ino


def assert_clean(store: Store) -> None:
    report = store.fsck()
    assert report.ok, report.describe()


def snapshot_state(store: object) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """A comparable copy of a store's (or view's) whole metadata state."""
    state = store._state  # type: ignore[attr-defined]
    return (
        {ino: i.copy().to_list() for ino, i in state.inodes.items()},
        {ino: dict(d) for ino, d in state.dirs.items()},
    )

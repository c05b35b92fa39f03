"""Fixtures: a real store and a HookedFileSystem over it, no FUSE mount."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vegafs.fs import Ctx
from vegafs.hooks.engine import HookEngine
from vegafs.hooks.fs import HookedFileSystem
from vegafs.hooks.trace import Tracer, trace_path
from vegafs.store import ROOT_INO, Store

EXAMPLES = Path(__file__).resolve().parents[2] / "hooks"
CTX = Ctx(uid=1000, gid=1000, pid=4242)


@dataclass
class Rig:
    """A store, an engine over a hooks directory, and the filesystem."""

    root: Path
    hooks_dir: Path
    store: Store
    engine: HookEngine
    fs: HookedFileSystem

    def hook(self, name: str, source: str) -> None:
        """Install (or replace) a hook file and make the engine see it now."""
        path = self.hooks_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(source)
        os.replace(tmp, path)
        self.engine.reload()

    def example(self, name: str) -> None:
        shutil.copy(EXAMPLES / name, self.hooks_dir / name)
        self.engine.reload()

    def mkdirs(self, path: str) -> int:
        ino = ROOT_INO
        for part in (p for p in path.split("/") if p):
            found = self.fs.store.lookup(ino, part.encode())
            ino = found if found is not None else self.fs.mkdir(ino, part.encode(), 0o755, CTX).ino
        return ino

    def write_file(self, path: str, data: bytes) -> int:
        """Create or replace ``path`` with ``data`` like ``open(path, "w")`` + close."""
        head, _, name = path.rpartition("/")
        parent = self.mkdirs(head)
        existing = self.fs.store.lookup(parent, name.encode())
        if existing is None:
            fh, attr = self.fs.create(parent, name.encode(), 0o644, os.O_RDWR, CTX)
            ino = attr.ino
        else:
            self.fs.lookup(parent, name.encode())
            fh, ino = self.fs.open(existing, os.O_RDWR | os.O_TRUNC, CTX), existing
        try:
            self.fs.write(fh, 0, data, CTX)
            self.fs.flush(fh)
        finally:
            self.fs.release(fh)
        return ino

    def read_file(self, path: str) -> bytes:
        ino = self.fs.lookup_path(path)
        assert ino is not None
        fh = self.fs.open(ino, os.O_RDONLY, CTX)
        try:
            return self.fs.read(fh, 0, 1 << 20)
        finally:
            self.fs.release(fh)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    hooks_dir = tmp_path / "hooks"
    hooks_dir.mkdir()
    store = Store.open(tmp_path / "store", create=True)
    engine = HookEngine(hooks_dir, store=store, tracer=Tracer(trace_path(tmp_path)))
    fs = HookedFileSystem(store, engine)
    try:
        yield Rig(tmp_path, hooks_dir, store, engine, fs)
    finally:
        engine.close()
        store.close()

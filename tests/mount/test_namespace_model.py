"""Random namespace operations on the mount, checked against the kernel's own filesystem.

The data model of ``test_fsx`` is easy to write by hand; the namespace one
is not: which errno a rename of a directory over a non-empty one returns,
what ``link`` does to a symlink, how link counts move. So the reference model
here is a plain local directory: the same seeded stream of create, write,
append, truncate, mkdir, rmdir, unlink, rename (plain, NOREPLACE, EXCHANGE),
link, symlink and chmod on a small pool of colliding names runs on the local
directory and on the mount. Every operation must have the same outcome (the
same errno, or success) on both, and every 50 operations — and after a
remount at the end — the two trees must have the same manifest (type, mode,
size, content, symlink target, link count and hard-link grouping).

Quick run: 1,500 operations (~15 s). Full run: ``VEGAFS_NS_OPS=10000`` (~6 min: the tree
grows, and every comparison hashes all of it). The seed is
printed; rerun with ``VEGAFS_NS_SEED=<seed>``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.mount.helpers import RENAME_EXCHANGE, RENAME_NOREPLACE, Mount, manifest, renameat2
from tests.mountutil import needs_fuse
from tests.stress.summary import campaign_summary

pytestmark = [pytest.mark.mount, needs_fuse]

NS_OPS = int(os.environ.get("VEGAFS_NS_OPS", "1500"))
NAMES = ("a", "b", "c", "d", "x", "y")


def _write(path: Path, data: bytes, flags: int) -> None:
    fd = os.open(path, flags, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class Ops:
    """A seeded stream of namespace operations, each applicable to any root directory.

    Paths are drawn half from what exists in the reference tree (so most
    operations act on something) and half from the name pool (so creations,
    collisions and errors happen too).
    """

    def __init__(self, rng: random.Random, reference: Path) -> None:
        self.rng = rng
        self.reference = reference
        self.existing: list[str] = []

    def _scan(self) -> None:
        self.existing = sorted(
            os.path.relpath(os.path.join(d, n), self.reference)
            for d, dirs, files in os.walk(self.reference)
            for n in dirs + files
        )

    def path(self) -> str:
        if self.existing and self.rng.random() < 0.5:
            base = self.rng.choice(self.existing)
            if self.rng.random() < 0.3:  # something inside it (a new name, or ENOTDIR)
                return f"{base}/{self.rng.choice(NAMES)}"
            return base
        return "/".join(self.rng.choice(NAMES) for _ in range(self.rng.choice((1, 1, 2, 2, 3))))

    def fresh(self) -> str:
        """Usually a new name in an existing directory (sometimes an existing path: a collision)."""
        if self.rng.random() < 0.25:
            return self.path()
        dirs = [p for p in self.existing if (self.reference / p).is_dir() and not (self.reference / p).is_symlink()]
        name = f"{self.rng.choice(NAMES)}{self.rng.randrange(10)}"
        return f"{self.rng.choice(dirs)}/{name}" if dirs and self.rng.random() < 0.6 else name

    def data(self) -> bytes:
        n = self.rng.choice((0, 1, 100, 5000, 140_000))
        return bytes([self.rng.randrange(256)]) * n

    def next(self) -> tuple[str, Callable[[Path], object]]:
        """One operation as (description, function of the root it runs in)."""
        self._scan()
        r = self.rng
        a, b = self.path(), self.fresh()
        kind = r.choices(
            ["create", "append", "truncate", "mkdir", "rmdir", "unlink", "rename", "noreplace",
             "exchange", "link", "symlink", "chmod"],
            [14, 6, 5, 12, 6, 8, 14, 4, 4, 6, 5, 4],
        )[0]
        if kind in ("create", "mkdir") and r.random() < 0.6:
            a = self.fresh()
        if kind == "create":
            data = self.data()
            return f"create {a} {len(data)}", lambda root: _write(
                root / a, data, os.O_CREAT | os.O_WRONLY | os.O_TRUNC
            )
        if kind == "append":
            data = self.data()
            return f"append {a} {len(data)}", lambda root: _write(root / a, data, os.O_WRONLY | os.O_APPEND)
        if kind == "truncate":
            size = r.choice((0, 10, 70_000, 300_000))
            return f"truncate {a} {size}", lambda root: os.truncate(root / a, size)
        if kind == "mkdir":
            return f"mkdir {a}", lambda root: os.mkdir(root / a)
        if kind == "rmdir":
            return f"rmdir {a}", lambda root: os.rmdir(root / a)
        if kind == "unlink":
            return f"unlink {a}", lambda root: os.unlink(root / a)
        if kind == "rename":
            return f"rename {a} {b}", lambda root: os.rename(root / a, root / b)
        if kind == "noreplace":
            return f"rename-noreplace {a} {b}", lambda root: renameat2(root / a, root / b, RENAME_NOREPLACE)
        if kind == "exchange":
            return f"rename-exchange {a} {b}", lambda root: renameat2(root / a, root / b, RENAME_EXCHANGE)
        if kind == "link":
            return f"link {a} {b}", lambda root: os.link(root / a, root / b, follow_symlinks=False)
        if kind == "symlink":
            target = r.choice(NAMES)  # relative, inside the same directory: never leaves the root
            return f"symlink {target} {b}", lambda root: os.symlink(target, root / b)
        mode = r.choice((0o644, 0o600, 0o755, 0o4755, 0o1777))
        return f"chmod {a} {oct(mode)}", lambda root: os.chmod(root / a, mode)


def outcome(fn: Callable[[Path], object], root: Path) -> str:
    try:
        fn(root)
    except OSError as exc:
        return f"errno {exc.errno} ({os.strerror(exc.errno or 0)})"
    return "ok"


def _compare(ref: Path, mnt: Path, when: str) -> None:
    want = manifest(ref, times=False)
    got = manifest(mnt, times=False)
    if got != want:
        diff = [
            f"  {k}: mount {got.get(k)} / reference {want.get(k)}"
            for k in sorted(set(got) | set(want))
            if got.get(k) != want.get(k)
        ]
        raise AssertionError(f"trees differ {when}:\n" + "\n".join(diff[:20]))
    for rel, entry in want.items():  # directory link counts, which manifest leaves out
        if entry[0] == 0o040000:
            assert os.lstat(mnt / rel).st_nlink == os.lstat(ref / rel).st_nlink, f"nlink of {rel} {when}"


@pytest.mark.timeout(max(300, NS_OPS // 20 + 120))
def test_namespace_operations_match_the_kernels_filesystem(vmount: Mount, tmp_path: Path) -> None:
    seed = int(os.environ.get("VEGAFS_NS_SEED", time.time_ns() % 1_000_000_007))
    print(f"namespace model: {NS_OPS} operations, seed {seed} (rerun with VEGAFS_NS_SEED={seed})")
    ref = tmp_path / "reference"
    ref.mkdir()
    mnt = vmount.mnt / "ns"
    mnt.mkdir()
    ops = Ops(random.Random(seed), ref)
    history: list[str] = []
    with campaign_summary("namespace model", seed) as summary:
        for n in range(NS_OPS):
            what, fn = ops.next()
            want, got = outcome(fn, ref), outcome(fn, mnt)
            history.append(f"{what}: {want}")
            if got != want:
                recent = "\n".join(history[-12:])
                raise AssertionError(
                    f"op {n} (seed {seed}) {what}: mount {got}, reference {want}\nlast ops:\n{recent}"
                )
            summary.ops += 1
            if n % 50 == 49:
                _compare(ref, mnt, f"after op {n} (seed {seed})")
        _compare(ref, mnt, f"at the end (seed {seed})")
        vmount.remount()
        _compare(ref, mnt, f"after a remount (seed {seed})")
        summary.rounds += 1

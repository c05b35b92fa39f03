"""fsx-style random operations on one file of a live mount, checked against a model.

Like Apple's/the Linux kernel's ``fsx``: a seeded stream of write, read,
truncate (up and down), append, reads through ``mmap``, writes through a
shared ``mmap`` + ``msync``, reads through a second long-lived read-only
descriptor, fsync and close/reopen runs on a file on the mount, while an in-memory model of what the file must contain is kept in
step. Offsets are mostly small but sometimes just below/above 4 GiB and far
out, so holes and large offsets are exercised; after every operation the size
is checked, and every read is compared with the model. At the end the mount
is remounted and the whole file re-verified (content, holes, size); then a
few more operations, an fsync and a kill -9 of the daemon, and the whole
file is verified once more. Both with and without ``--writeback-cache``.

Quick run: 2,000 operations. Full run: ``VEGAFS_FSX_OPS=100000``. The seed is
printed; rerun a failure with ``VEGAFS_FSX_SEED=<seed>``.
"""

from __future__ import annotations

import mmap
import os
import random
import time
from pathlib import Path

import pytest

from tests.mount.helpers import Mount
from tests.mountutil import needs_fuse
from tests.stress.summary import Summary, campaign_summary

pytestmark = [pytest.mark.mount, needs_fuse]

PAGE = 4096
MAX_IO = 256 * 1024


class SparseModel:
    """What the file must hold: a size and the non-zero-filled 4 KiB pages.

    A dict of pages instead of a bytearray, so a file of 5 GiB with a few
    written ranges costs a few pages of memory.
    """

    def __init__(self) -> None:
        self.size = 0
        self.pages: dict[int, bytearray] = {}

    def read(self, offset: int, length: int) -> bytes:
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        out = bytearray(end - offset)
        for index in range(offset // PAGE, (end - 1) // PAGE + 1):
            page = self.pages.get(index)
            if page is None:
                continue
            start = index * PAGE
            lo, hi = max(offset, start), min(end, start + PAGE)
            out[lo - offset : hi - offset] = page[lo - start : hi - start]
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        pos = offset
        while pos < offset + len(data):
            index, within = divmod(pos, PAGE)
            n = min(PAGE - within, offset + len(data) - pos)
            page = self.pages.setdefault(index, bytearray(PAGE))
            page[within : within + n] = data[pos - offset : pos - offset + n]
            pos += n
        self.size = max(self.size, offset + len(data))

    def truncate(self, size: int) -> None:
        if size < self.size:
            last = size // PAGE
            for index in [i for i in self.pages if i > last or (i == last and size % PAGE == 0)]:
                del self.pages[index]
            if size % PAGE and last in self.pages:
                page = self.pages[last]
                page[size % PAGE :] = bytes(PAGE - size % PAGE)
        self.size = size

    def extents(self) -> list[int]:
        """Page indexes that hold data, in order (what a final check must read)."""
        return sorted(self.pages)


class Fsx:
    """Runs the random operations on ``path`` and checks each against the model."""

    def __init__(self, path: Path, rng: random.Random) -> None:
        self.path = path
        self.rng = rng
        self.model = SparseModel()
        self.fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
        self.ro = os.open(path, os.O_RDONLY)  # a second, long-lived reader of the same file
        self.log: list[str] = []

    def open(self) -> None:
        """Open both descriptors again (after a remount)."""
        self.fd = os.open(self.path, os.O_RDWR)
        self.ro = os.open(self.path, os.O_RDONLY)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.ro)

    def _offset(self) -> int:
        """Mostly near the data; sometimes around 4 GiB or far beyond; sometimes at EOF."""
        r = self.rng.random()
        if r < 0.70:
            return self.rng.randrange(0, max(self.model.size, 1 << 20) + 65536)
        if r < 0.80:
            return (1 << 32) + self.rng.randrange(-300_000, 300_000)
        if r < 0.85:
            return self.rng.randrange(0, 6 << 30)
        return self.model.size

    def _data(self) -> bytes:
        n = self.rng.choice([1, 7, PAGE, 10_000, 65_536, 131_072, self.rng.randrange(1, MAX_IO)])
        stamp = len(self.log).to_bytes(4, "little")
        return (stamp * (n // 4 + 1))[:n]

    def _check_size(self) -> None:
        actual = os.fstat(self.fd).st_size
        assert actual == self.model.size, f"size {actual} != model {self.model.size}"

    def op_write(self) -> None:
        offset, data = self._offset(), self._data()
        self.log.append(f"write {offset} {len(data)}")
        assert os.pwrite(self.fd, data, offset) == len(data)
        self.model.write(offset, data)

    def op_append(self) -> None:
        data = self._data()
        self.log.append(f"append {len(data)} at {self.model.size}")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            assert os.write(fd, data) == len(data)
        finally:
            os.close(fd)
        self.model.write(self.model.size, data)

    def op_read(self) -> None:
        offset = self._offset() if self.rng.random() < 0.5 else self.rng.randrange(0, self.model.size + 1)
        length = self.rng.randrange(1, MAX_IO)
        self.log.append(f"read {offset} {length}")
        got = os.pread(self.fd, length, offset)
        want = self.model.read(offset, length)
        assert got == want, f"read {offset}+{length}: {_first_diff(got, want)}"

    def op_read_other_fd(self) -> None:
        """Read through the read-only descriptor, opened before the writes it must see."""
        offset = self.rng.randrange(0, self.model.size + 1)
        length = self.rng.randrange(1, MAX_IO)
        self.log.append(f"read ro-fd {offset} {length}")
        got = os.pread(self.ro, length, offset)
        want = self.model.read(offset, length)
        assert got == want, f"read (ro fd) {offset}+{length}: {_first_diff(got, want)}"

    def op_reopen_other_fd(self) -> None:
        self.log.append("reopen ro-fd")
        os.close(self.ro)
        self.ro = os.open(self.path, os.O_RDONLY)

    def op_truncate(self) -> None:
        r = self.rng.random()
        if r < 0.4:
            size = self.rng.randrange(0, self.model.size + 1)
        elif r < 0.8:
            size = self.model.size + self.rng.randrange(0, 1 << 20)
        else:
            size = self._offset()
        self.log.append(f"truncate {size}")
        os.ftruncate(self.fd, size)
        self.model.truncate(size)

    def _map_window(self) -> tuple[int, int] | None:
        """A page-aligned window inside the file, small enough to map cheaply."""
        if self.model.size == 0:
            return None
        start = self.rng.randrange(0, self.model.size) // mmap.ALLOCATIONGRANULARITY
        start *= mmap.ALLOCATIONGRANULARITY
        length = min(self.model.size - start, self.rng.randrange(1, MAX_IO))
        return start, length

    def op_mmap_read(self) -> None:
        window = self._map_window()
        if window is None:
            return
        start, length = window
        self.log.append(f"mmap read {start} {length}")
        with mmap.mmap(self.fd, length, prot=mmap.PROT_READ, offset=start) as m:
            got = m[:]
        want = self.model.read(start, length)
        assert got == want, f"mmap read {start}+{length}: {_first_diff(got, want)}"

    def op_mmap_write(self) -> None:
        window = self._map_window()
        if window is None:
            return
        start, length = window
        data = self._data()[: self.rng.randrange(1, length + 1)]
        at = self.rng.randrange(0, length - len(data) + 1)
        self.log.append(f"mmap write {start + at} {len(data)}")
        with mmap.mmap(self.fd, length, offset=start) as m:
            m[at : at + len(data)] = data
            m.flush()
        self.model.write(start + at, data)

    def op_fsync(self) -> None:
        self.log.append("fsync")
        os.fsync(self.fd)

    def op_reopen(self) -> None:
        self.log.append("close+reopen")
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDWR)

    OPS = (
        ("op_write", 30),
        ("op_read", 20),
        ("op_read_other_fd", 8),
        ("op_reopen_other_fd", 2),
        ("op_truncate", 10),
        ("op_append", 8),
        ("op_mmap_read", 8),
        ("op_mmap_write", 8),
        ("op_fsync", 3),
        ("op_reopen", 4),
    )

    def step(self) -> None:
        names, weights = zip(*self.OPS, strict=True)
        getattr(self, self.rng.choices(names, weights)[0])()
        self._check_size()

    def verify_whole_file(self, path: Path) -> None:
        """Re-read every data page and sample the holes of ``path`` against the model."""
        st = path.stat()
        assert st.st_size == self.model.size
        with open(path, "rb", buffering=0) as f:
            for index in self.model.extents():
                got = os.pread(f.fileno(), PAGE, index * PAGE)
                assert got == self.model.read(index * PAGE, PAGE), f"page {index} after remount"
            for _ in range(200):
                offset = self.rng.randrange(0, self.model.size + 1)
                assert os.pread(f.fileno(), 512, offset) == self.model.read(offset, 512)


def _first_diff(got: bytes, want: bytes) -> str:
    if len(got) != len(want):
        return f"length {len(got)} != {len(want)}"
    at = next(i for i in range(len(got)) if got[i] != want[i])
    return f"first difference at +{at}: got {got[at:at + 8]!r}, want {want[at:at + 8]!r}"


FSX_OPS = int(os.environ.get("VEGAFS_FSX_OPS", "2000"))


def _run(fsx: Fsx, ops: int, seed: int, summary: Summary) -> None:
    for n in range(ops):
        try:
            fsx.step()
            summary.ops += 1
        except AssertionError as exc:
            recent = "\n".join(fsx.log[-15:])
            raise AssertionError(f"op {n} (seed {seed}) failed: {exc}\nlast ops:\n{recent}") from exc


@pytest.mark.timeout(max(300, FSX_OPS // 10 + 120))
@pytest.mark.parametrize("vmount", [(), ("--writeback-cache",)], indirect=True, ids=["default", "writeback"])
def test_fsx_random_operations_against_a_model(vmount: Mount) -> None:
    seed = int(os.environ.get("VEGAFS_FSX_SEED", time.time_ns() % 1_000_000_007))
    print(f"fsx: {FSX_OPS} operations, seed {seed} (rerun with VEGAFS_FSX_SEED={seed})")
    path = vmount.mnt / "fsx.bin"
    fsx = Fsx(path, random.Random(seed))
    with campaign_summary("fsx", seed) as summary:
        try:
            _run(fsx, FSX_OPS, seed, summary)
        finally:
            fsx.close()
        # a clean unmount publishes the last version
        vmount.remount()
        fsx.verify_whole_file(path)
        summary.rounds += 1
        # and an fsync makes a version durable against a crash of the daemon
        fsx.open()
        try:
            _run(fsx, 200, seed, summary)
            os.fsync(fsx.fd)
        finally:
            fsx.close()
        vmount.kill9()
        vmount.stop()
        vmount.start()
        fsx.verify_whole_file(path)
        summary.rounds += 1

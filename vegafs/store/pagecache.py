"""Keep the active segment's page cache to a window behind its tail.

Why: an append-only store writes every byte to a new place, so a segment's
pages only ever pile up in the page cache — a second copy of data the
kernel already caches for the mounted file (and the fs layer for the last
blocks written). Besides the memory, new page-cache pages cost more than
reused ones: on the 2-core VM this project is measured on, writing a GiB
into memory the guest had never touched took ~2.0 s of CPU against ~0.2 s
into freed pages (``python`` writing three 1 GiB files in a row, then one
after deleting the first), which made vegafs's sequential write pay that
price on every GiB while a passthrough file system, overwriting its file,
did not.

So the local backend asks the kernel, as the tail moves on, to start
writing back what is more than ``WRITEBACK_LAG`` behind the tail and to drop
what is clean beyond ``KEEP`` (``POSIX_FADV_DONTNEED`` does both: it starts
writeback of dirty pages in the range and drops the clean ones). Dirty pages
are never dropped, so durability is unchanged: a publish still fsyncs. After
an fsync every page is clean and everything but the last ``KEEP`` bytes goes.
Early writeback also spreads the disk's work over the ingest instead of
leaving it all to the next fsync.
"""

from __future__ import annotations

import contextlib
import os

STEP = 8 << 20  # act once per this much appended: one syscall per 8 MiB
WRITEBACK_LAG = 8 << 20  # start writing back what is this far behind the tail
# What stays cached behind the tail: the freshest data is what is read back
# most (a read-modify-write of a block the fs cache no longer holds, a reader
# whose kernel cache was dropped); one segment's worth.
KEEP = 64 << 20


class TailCache:
    """The page-cache window of one segment being appended to through ``fd``."""

    def __init__(self, fd: int, end: int) -> None:
        self.fd = fd
        self.end = end  # bytes in the segment
        self.acted = end  # ``end`` when we last advised the kernel
        # Advised on the way (pages then still dirty or under writeback stay
        # cached), and advised after an fsync (every page dropped).
        self.passed = 0
        self.settled = 0

    def appended(self, n: int) -> None:
        self.end += n
        if self.end - self.acted >= STEP:
            self.acted = self.end
            _drop(self.fd, self.passed, self.end - WRITEBACK_LAG)
            self.passed = max(self.passed, self.end - KEEP)

    def synced(self) -> None:
        """After an fsync every page is clean: drop all but the last ``KEEP`` bytes."""
        upto = self.end - KEEP
        if upto > self.settled:
            _drop(self.fd, self.settled, upto)
            self.settled = upto
            self.passed = max(self.passed, upto)


def _drop(fd: int, start: int, end: int) -> None:
    """Start writeback of ``[start, end)`` and drop its clean pages."""
    if end > start:
        # Advisory: a kernel that declines changes nothing but memory use.
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, start, end - start, os.POSIX_FADV_DONTNEED)

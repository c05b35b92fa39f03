"""Per-file write buffers: uncommitted data, visible to every reader at once.

A file being written has one :class:`FileBuffer`. A block moves through three
states on its way into the store::

    dirty (bytearray, in memory) -> storing (immutable bytes, a ChunkJob being
    hashed and stored, maybe in a worker thread) -> stored (a chunk hash, or
    None for a hole, waiting for the next commit)

A commit records every stored block, the size and the attribute changes made
meanwhile as one new version of the file (one transaction), so a version in
the log is always a whole write history up to a flush — never torn. Readers look a block up in
the same order (dirty, storing, stored, then the committed inode), so what
a writer wrote is what any reader reads, before and after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class ChunkJob:
    """One block to hash and store: ``data`` is immutable, identity matters.

    :meth:`FileBuffer.finish` accepts the resulting hash only if the block was
    not written again meanwhile (the buffer still holds this very ``data``).
    """

    ino: int
    index: int
    data: bytes
    # The fs's chunk epoch when the job was made: a gc in between may have
    # dropped the chunk as unreferenced, so such a result is not trusted.
    epoch: int = 0


@dataclass(slots=True)
class FileBuffer:
    """Uncommitted changes of one regular file."""

    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int
    dirty: dict[int, bytearray] = field(default_factory=dict)
    storing: dict[int, bytes] = field(default_factory=dict)
    stored: dict[int, bytes | None] = field(default_factory=dict)
    # True once anything changed since the last commit (a write, a truncate).
    changed: bool = False
    # chmod/chown/atime changes made while the file has changes to commit:
    # carried by the commit's record, so ``tar``'s fchown/fchmod/futimens of
    # a file it just wrote cost no transaction of their own (mtime and ctime
    # live in the fields above).
    attrs: dict[str, int] = field(default_factory=dict)

    def take(self, index: int, epoch: int) -> ChunkJob:
        """Turn dirty block ``index`` into a job: it is frozen as bytes."""
        data = bytes(self.dirty.pop(index))
        self.storing[index] = data
        return ChunkJob(self.ino, index, data, epoch)

    def take_whole(self, index: int, data: bytes, epoch: int) -> ChunkJob:
        """A write covering all of block ``index``: straight to a job, no copy."""
        self.dirty.pop(index, None)
        self.stored.pop(index, None)
        self.storing[index] = data
        return ChunkJob(self.ino, index, data, epoch)

    def finish(self, job: ChunkJob, chunk_hash: bytes) -> None:
        """Record that ``job`` is stored; ignored if the block changed since."""
        if self.storing.get(job.index) is job.data:
            del self.storing[job.index]
            self.stored[job.index] = chunk_hash

    def drop_from(self, first: int) -> None:
        """Forget buffered blocks with index >= ``first`` (a truncate)."""
        for table in (self.dirty, self.storing, self.stored):
            for index in [i for i in table if i >= first]:
                del table[index]

    @property
    def settled(self) -> bool:
        """No block is waiting to be hashed: a commit can record everything."""
        return not self.dirty and not self.storing

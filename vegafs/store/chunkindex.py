"""The chunk index: chunk hash -> locator of its CHUNK record, about 45 bytes an entry.

A Python ``dict[bytes, int]`` costs about 150 bytes a chunk (the 32-byte hash
as a bytes object, the locator as an int, the hash table slot); a store with a
million small files holds a million chunks, and every rewritten block adds
one until gc. This index keeps its entries as fixed 40-byte records (the
hash, then the locator as 8 little-endian bytes) in 65,536 byte arrays, one
per 16-bit hash prefix. Hashes are BLAKE3 digests, so prefixes are uniform:
at a million chunks a shard holds about 15 records, a lookup is one
``bytearray.find`` over 600 bytes, an insert one append. Shards grow in place
and are small, so inserts never copy the whole index. Two designs measured
worse: one big sorted array merged now and then, and shards that split as the
index grows; both free and reallocate the whole index at intervals, which
left the allocator's heap fragmented (a store of 100,000 small files grew by
about 1,000 bytes of RSS a file instead of 270). The fixed table costs 512
KiB, and about 100 bytes a chunk while the index is small.

Threads: one writer (the store inserts under its append lock) and readers
without a lock. Records are only ever appended, never moved or removed (gc
builds a new index), and the GIL makes ``find`` and ``append`` on one shard
atomic with respect to each other, so a reader sees a record whole or not at
all.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

HASH = 32
ENTRY = HASH + 8
SHARDS = 1 << 16
_LOC = struct.Struct("<Q")


def _shard(h: bytes) -> int:
    return h[0] << 8 | h[1]


class ChunkIndex:
    """A compact map from chunk hash (32 bytes) to locator (int < 2**64); insert-only.

    Locators never move within a generation (gc builds a new index), so an
    entry is added once and never changed or removed.
    """

    __slots__ = ("_shards", "_len", "_dirty")

    def __init__(self, items: Iterable[tuple[bytes, int]] = ()) -> None:
        self._shards: list[bytearray | None] = [None] * SHARDS
        self._len = 0
        # Shards changed since the head index last saved them (None: all of
        # them, this index was never saved; see changes()).
        self._dirty: set[int] | None = None
        for h, loc in items:
            self[h] = loc

    # -- lookups -----------------------------------------------------------------

    def get(self, h: bytes, default: int | None = None) -> int | None:
        if len(h) != HASH:
            return default
        shard = self._shards[h[0] << 8 | h[1]]  # _shard(h), inlined: the hot path
        if shard is None:
            return default
        i = shard.find(h)
        while i >= 0 and i % ENTRY:  # a match across two records: keep looking
            i = shard.find(h, i + 1)
        if i < 0:
            return default
        return _LOC.unpack_from(shard, i + HASH)[0]

    def __getitem__(self, h: bytes) -> int:
        loc = self.get(h)
        if loc is None:
            raise KeyError(h)
        return loc

    def __contains__(self, h: object) -> bool:
        return self.get(h) is not None  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    # -- inserts -----------------------------------------------------------------

    def __setitem__(self, h: bytes, loc: int) -> None:
        if len(h) != HASH:
            raise ValueError(f"a chunk hash has {HASH} bytes, got {len(h)}")
        if self.get(h) is not None:
            raise ValueError(f"chunk {h.hex()} is indexed already (locators never move)")
        n = _shard(h)
        shard = self._shards[n]
        if shard is None:
            shard = self._shards[n] = bytearray()
        shard += h
        shard += _LOC.pack(loc)
        self._len += 1
        if self._dirty is not None:
            self._dirty.add(n)

    # -- walks and serialization ---------------------------------------------

    def items(self) -> Iterator[tuple[bytes, int]]:
        """Every (hash, locator), by shard, in insertion order within a shard."""
        for shard in self._shards:
            if shard:
                raw = bytes(shard)
                for i in range(0, len(raw), ENTRY):
                    yield raw[i : i + HASH], int.from_bytes(raw[i + HASH : i + ENTRY], "little")

    def keys(self) -> Iterator[bytes]:
        for h, _loc in self.items():
            yield h

    __iter__ = keys

    def changes(self, full: bool) -> tuple[bool, list[tuple[int, bytes]], list[int]]:
        """What the head index must write: (replace the whole table?, (shard, records)
        rows to put, keys to delete); only the shards changed since :meth:`saved`,
        unless ``full`` or this index was never saved (gc builds a new one)."""
        shards = self._shards
        if full or self._dirty is None:
            return True, [(n, bytes(s)) for n, s in enumerate(shards) if s], []
        return False, [(n, bytes(shards[n] or b"")) for n in sorted(self._dirty)], []

    def saved(self) -> None:
        """The head index holds every shard as it is now."""
        self._dirty = set()

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, bytes]]) -> ChunkIndex:
        """The index the head index saved, as (shard, records) rows (ValueError if malformed).

        The rows are checksummed, so records are not checked one by one.
        """
        index = cls()
        shards, total = index._shards, 0
        for n, records in rows:
            if not 0 <= n < SHARDS or len(records) % ENTRY:
                raise ValueError(f"chunk index: shard {n} is malformed")
            if records:
                shards[n] = bytearray(records)
                total += len(records) // ENTRY
        index._len = total
        index._dirty = set()
        return index

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChunkIndex | dict):
            return len(self) == len(other) and all(other.get(h) == loc for h, loc in self.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

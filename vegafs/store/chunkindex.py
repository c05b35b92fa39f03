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
from array import array
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

    __slots__ = ("_shards", "_len")

    def __init__(self, items: Iterable[tuple[bytes, int]] = ()) -> None:
        self._shards: list[bytearray | None] = [None] * SHARDS
        self._len = 0
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

    def to_bytes(self) -> tuple[bytes, bytes]:
        """(every record, shard by shard; the record count of each shard), for a checkpoint."""
        counts = array("I", (len(s) // ENTRY if s else 0 for s in self._shards))
        return b"".join(s for s in self._shards if s), counts.tobytes()

    @classmethod
    def from_bytes(cls, records: bytes, counts: bytes) -> ChunkIndex:
        """The index :meth:`to_bytes` saved (ValueError if the two parts do not fit).

        The checkpoint holding them is checksummed, so records are not checked one by one.
        """
        table = array("I")
        table.frombytes(counts)
        if len(table) != SHARDS or sum(table) * ENTRY != len(records):
            raise ValueError("chunk index: the shard table does not match the records")
        index = cls()
        shards, pos = index._shards, 0
        for n, count in enumerate(table):
            if count:
                shards[n] = bytearray(records[pos : pos + count * ENTRY])
                pos += count * ENTRY
        index._len = len(records) // ENTRY
        return index

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChunkIndex | dict):
            return len(self) == len(other) and all(other.get(h) == loc for h, loc in self.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

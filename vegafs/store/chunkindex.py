"""The chunk index: chunk hash -> locator of its CHUNK record, about 42 bytes an entry.

A Python ``dict[bytes, int]`` costs about 150 bytes a chunk (the 32-byte hash
as a bytes object, the locator as an int, the hash table slot); a store with a
million small files holds a million chunks, and every rewritten block adds
one until gc. This index keeps its entries as fixed 40-byte records (the
hash, then the locator as 8 little-endian bytes) in byte arrays, one per hash
prefix ("shard"). Hashes are BLAKE3 digests, so prefixes are uniform: with
the prefix length chosen so that a shard holds 16 to 32 records on average
(2**15 shards at a million chunks), a lookup is one ``bytearray.find`` over
about a kilobyte and an insert one append. When the average passes 32 the
prefix grows by a bit and every shard splits in two (a pass over the index,
once per doubling). Shards are small and grow in place, so inserts never copy
the whole index (one big sorted array, merged now and then, left the
allocator's heap fragmented: RSS grew twice as fast as the data).

Threads: one writer (the store inserts under its append lock) and readers
without a lock. Records are only ever appended, never moved or removed (gc
builds a new index); the GIL makes ``find`` and ``append`` on one shard
atomic with respect to each other, and a split publishes the new shard list
(with its prefix length, one tuple) only once it is complete: a reader sees
a record whole or not at all, in the old shards or the new ones.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Iterator

HASH = 32
ENTRY = HASH + 8
_LOC = struct.Struct("<Q")
_MIN_BITS = 8
_MAX_BITS = 24
_SPLIT_AT = 32  # records per shard, on average


def _prefix(h: bytes, bits: int) -> int:
    return int.from_bytes(h[:3], "big") >> (24 - bits)


class ChunkIndex:
    """A compact map from chunk hash (32 bytes) to locator (int < 2**64); insert-only.

    Locators never move within a generation (gc builds a new index), so an
    entry is added once and never changed or removed.
    """

    __slots__ = ("_table", "_len")

    def __init__(self, items: Iterable[tuple[bytes, int]] = ()) -> None:
        # (prefix bits, shards): replaced as a whole when the shards split.
        self._table: tuple[int, list[bytearray | None]] = (_MIN_BITS, [None] * (1 << _MIN_BITS))
        self._len = 0
        for h, loc in items:
            self[h] = loc

    # -- lookups -----------------------------------------------------------------

    def get(self, h: bytes, default: int | None = None) -> int | None:
        if len(h) != HASH:
            return default
        bits, shards = self._table
        shard = shards[int.from_bytes(h[:3], "big") >> (24 - bits)]  # _prefix(), inlined
        if shard is None:
            return default
        i = shard.find(h)
        while i >= 0 and i % ENTRY:  # a match across two records: keep looking
            i = shard.find(h, i + 1)
        if i < 0:
            return default
        return _LOC.unpack_from(shard, i + HASH)[0]  # type: ignore[no-any-return]

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
        bits, shards = self._table
        n = _prefix(h, bits)
        shard = shards[n]
        if shard is None:
            shard = shards[n] = bytearray()
        shard += h
        shard += _LOC.pack(loc)
        self._len += 1
        if self._len > _SPLIT_AT << bits and bits < _MAX_BITS:
            self._table = _split(bits, shards)

    # -- walks and serialization ---------------------------------------------

    def items(self) -> Iterator[tuple[bytes, int]]:
        """Every (hash, locator), by shard, in insertion order within a shard."""
        for shard in self._table[1]:
            if shard:
                raw = bytes(shard)
                for i in range(0, len(raw), ENTRY):
                    yield raw[i : i + HASH], _LOC.unpack_from(raw, i + HASH)[0]

    def keys(self) -> Iterator[bytes]:
        for h, _loc in self.items():
            yield h

    __iter__ = keys

    def to_bytes(self) -> tuple[bytes, bytes]:
        """(every record, shard by shard; the record count of each shard), for a checkpoint."""
        shards = self._table[1]
        counts = array("I", (len(s) // ENTRY if s else 0 for s in shards))
        return b"".join(s for s in shards if s), counts.tobytes()

    @classmethod
    def from_bytes(cls, records: bytes, counts: bytes) -> ChunkIndex:
        """The index :meth:`to_bytes` saved (ValueError if the two parts do not fit).

        The checkpoint holding them is checksummed, so records are not checked one by one.
        """
        table = array("I")
        table.frombytes(counts)
        bits = len(table).bit_length() - 1
        if (
            not _MIN_BITS <= bits <= _MAX_BITS
            or len(table) != 1 << bits
            or sum(table) * ENTRY != len(records)
        ):
            raise ValueError("chunk index: the shard table does not match the records")
        shards: list[bytearray | None] = [None] * len(table)
        pos = 0
        for n, count in enumerate(table):
            if count:
                shards[n] = bytearray(records[pos : pos + count * ENTRY])
                pos += count * ENTRY
        index = cls()
        index._table = (bits, shards)
        index._len = len(records) // ENTRY
        return index

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChunkIndex | dict):
            return len(self) == len(other) and all(other.get(h) == loc for h, loc in self.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def _split(bits: int, shards: list[bytearray | None]) -> tuple[int, list[bytearray | None]]:
    """The shards of a prefix one bit longer (a new list: the old one is left as it was)."""
    new: list[bytearray | None] = [None] * (2 << bits)
    shift = 23 - bits
    for n, shard in enumerate(shards):
        if not shard:
            continue
        halves = [bytearray(), bytearray()]
        for i in range(0, len(shard), ENTRY):
            half = (shard[i] << 16 | shard[i + 1] << 8 | shard[i + 2]) >> shift & 1
            halves[half] += shard[i : i + ENTRY]
        new[2 * n], new[2 * n + 1] = halves[0] or None, halves[1] or None
    return bits + 1, new

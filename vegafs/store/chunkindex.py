"""The chunk index: chunk hash -> locator of its CHUNK record.

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
left the allocator's heap fragmented.

Memory bounded by what changed, not by what exists: once the head index
(:mod:`vegafs.store.headindex`, table ``chunks``: one row per shard) holds
the shards (:meth:`ChunkIndex.saved`), memory keeps only the records added
since (the *delta*, written at the next flush) and an LRU of shards recently
found in (:data:`CACHE_BYTES`); a lookup that misses both reads one row, a few
microseconds. Kept whole in memory, the index grew the writer's RSS by ~45
bytes for every chunk ever written until gc (issue 5: flat RSS). A lookup
looks in the delta first, then the base: a flush commits the rows before it
empties the delta, so an entry is always in one of the two.

Threads: one writer (the store inserts and flushes under its lock) and
readers without the store's lock. Delta records are only ever appended, and
the GIL makes ``find`` and ``append`` on one shard atomic with respect to each
other, so a reader sees a record whole or not at all; the LRU and the base
are behind this index's own lock, which a flush also takes to drop cached
shards it rewrote (a reader could otherwise cache a row read before the
commit after the flush dropped it).
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vegafs.store.headindex import HeadIndex

HASH = 32
ENTRY = HASH + 8
SHARDS = 1 << 16
#: Bytes of base shards kept in the LRU (about 1,400 shards at a million chunks).
CACHE_BYTES = 1 << 20
#: What a cached row costs beyond its records: the bytes object, key and LRU node.
_ENTRY_COST = 160
#: From this many hashes on, :meth:`ChunkIndex.locate` walks the whole table
#: (a walk of 65,536 rows took ~0.24 s, about what 16,000 point reads take).
LOCATE_SCAN = 16384
TABLE = "chunks"
_LOC = struct.Struct("<Q")


def _shard(h: bytes) -> int:
    return h[0] << 8 | h[1]


def _find(records: bytes | bytearray, h: bytes) -> int | None:
    """The locator of ``h`` among ``records`` (40-byte entries), or None."""
    i = records.find(h)
    while i >= 0 and i % ENTRY:  # a match across two records: keep looking
        i = records.find(h, i + 1)
    if i < 0:
        return None
    return _LOC.unpack_from(records, i + HASH)[0]


class ChunkIndex:
    """A compact map from chunk hash (32 bytes) to locator (int < 2**64); insert-only.

    Locators never move within a generation (gc builds a new index), so an
    entry is added once and never changed or removed.
    """

    __slots__ = ("_shards", "_len", "_touched", "_base", "_cache", "_cached", "_lock")

    def __init__(self, items: Iterable[tuple[bytes, int]] = ()) -> None:
        # Records not in the base (every record without a base), by shard.
        self._shards: list[bytearray | None] = [None] * SHARDS
        self._len = 0
        # Shards with records in _shards (None: never saved, write them all).
        self._touched: set[int] | None = None
        self._base: HeadIndex | None = None
        self._cache: OrderedDict[int, bytes] = OrderedDict()  # base rows, LRU first
        self._cached = 0  # bytes in _cache
        self._lock = threading.Lock()
        for h, loc in items:
            self[h] = loc

    # -- lookups -----------------------------------------------------------------

    def get(self, h: bytes, default: int | None = None) -> int | None:
        if len(h) != HASH:
            return default
        n = h[0] << 8 | h[1]  # _shard(h), inlined: the hot path
        shard = self._shards[n]
        if shard is not None:
            loc = _find(shard, h)
            if loc is not None:
                return loc
        if self._base is None:
            return default
        loc = self._base_get(n, h)
        return default if loc is None else loc

    def _base_get(self, n: int, h: bytes) -> int | None:
        """The locator of ``h`` in the base's shard ``n`` (from the LRU, or read).

        Only a shard that holds the hash is cached: most misses are new
        chunks, whose shard is random, and would only push useful rows out."""
        with self._lock:
            cache = self._cache
            records = cache.get(n)
            if records is not None:
                cache.move_to_end(n)
                return _find(records, h)
            base = self._base
            if base is None:  # detached meanwhile: the delta holds everything
                return None
            records = base.get(TABLE, n) or b""
            loc = _find(records, h)
            if loc is not None:
                cache[n] = records
                self._cached += len(records) + _ENTRY_COST
                while self._cached > CACHE_BYTES:
                    _n, old = cache.popitem(last=False)
                    self._cached -= len(old) + _ENTRY_COST
            return loc

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
        if self._touched is not None:
            self._touched.add(n)

    # -- walks and serialization ---------------------------------------------

    def _rows(self) -> Iterator[tuple[int, bytes]]:
        """Every non-empty shard, whole (base records, then the delta's), in shard order."""
        base = iter(self._base.items(TABLE)) if self._base is not None else iter(())
        pending = next(base, None)
        for n, shard in enumerate(self._shards):
            records = b""
            if pending is not None and pending[0] == n:
                records = pending[1]
                pending = next(base, None)
            if shard:
                records += bytes(shard)
            if records:
                yield n, records

    def locate(self, hashes: Iterable[bytes]) -> dict[bytes, int]:
        """The locator of each of ``hashes`` that is indexed, for many hashes at once.

        Why: gc looks up every live chunk, and a lookup that misses memory is
        one point read of the head index (~15 µs): most of a large gc's time
        (3 lookups a chunk, 102,000 live chunks: ~4.5 s of the soak's 11.7 s
        gc). Past :data:`LOCATE_SCAN` hashes one sequential walk of the table
        (each shard read once) costs less than the point reads.
        """
        wanted = [h for h in hashes if len(h) == HASH]
        if len(wanted) < LOCATE_SCAN:
            return {h: loc for h in wanted if (loc := self.get(h)) is not None}
        by_shard: dict[int, list[bytes]] = {}
        for h in wanted:
            by_shard.setdefault(h[0] << 8 | h[1], []).append(h)
        found = {}
        for n, records in self._rows():
            for h in by_shard.get(n, ()):
                loc = _find(records, h)
                if loc is not None:
                    found[h] = loc
        return found

    def items(self) -> Iterator[tuple[bytes, int]]:
        """Every (hash, locator), by shard, in insertion order within a shard."""
        for _n, raw in self._rows():
            for i in range(0, len(raw), ENTRY):
                yield raw[i : i + HASH], int.from_bytes(raw[i + HASH : i + ENTRY], "little")

    def keys(self) -> Iterator[bytes]:
        for h, _loc in self.items():
            yield h

    __iter__ = keys

    def changes(self, full: bool) -> tuple[bool, list[tuple[int, bytes]], list[int]]:
        """What the head index must write: (replace the whole table?, (shard, records)
        rows to put, keys to delete); only the shards changed since :meth:`saved`,
        unless ``full`` or this index was never saved (gc builds a new one).

        A full write with a base reads the whole base (a new file is written:
        after a rollback or a replaced state), the one time the whole index is
        in memory at once."""
        if full or self._touched is None:
            return True, list(self._rows()), []
        base = self._base
        rows = []
        for n in sorted(self._touched):
            old = (base.get(TABLE, n) if base is not None else None) or b""
            rows.append((n, old + bytes(self._shards[n] or b"")))
        return False, rows, []

    def saved(self, base: HeadIndex) -> None:
        """``base`` now holds every shard as it is now: memory drops the delta.

        The base committed first, so a reader that misses the delta finds the
        record there; cached rows of rewritten shards go (they miss the delta)."""
        with self._lock:
            touched = range(SHARDS) if self._touched is None else self._touched
            if self._base is not base or self._touched is None:
                self._cache.clear()
                self._cached = 0
            else:
                for n in touched:
                    old = self._cache.pop(n, None)
                    if old is not None:
                        self._cached -= len(old) + _ENTRY_COST
            self._base = base
        shards = self._shards
        for n in touched:
            shards[n] = None
        self._touched = set()

    def detach(self) -> None:
        """Stop reading the base (it is being deleted): read every record into memory first."""
        if self._base is None:
            return
        rows = list(self._rows())
        with self._lock:
            self._base = None
            self._cache.clear()
            self._cached = 0
        for n, records in rows:
            self._shards[n] = bytearray(records)
        self._touched = None

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, bytes]]) -> ChunkIndex:
        """The index the head index saved, as (shard, records) rows, in memory
        (ValueError if malformed). The rows are checksummed, so records are not
        checked one by one."""
        index = cls()
        shards, total = index._shards, 0
        for n, records in rows:
            total += _check_row(n, records)
            if records:
                shards[n] = bytearray(records)
        index._len = total
        index._touched = set()
        return index

    @classmethod
    def from_base(cls, base: HeadIndex) -> ChunkIndex:
        """The index ``base`` saved, read from it on demand (ValueError if malformed).

        Every row is read once here (checksums are checked by the base, shapes
        here) and none is kept: damage is found at open, where the log can
        replace the index."""
        index = cls()
        total = 0
        for n, records in base.items(TABLE):
            total += _check_row(n, records)
        index._len = total
        index._touched = set()
        index._base = base
        return index

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChunkIndex | dict):
            return len(self) == len(other) and all(other.get(h) == loc for h, loc in self.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]


def _check_row(n: int, records: bytes) -> int:
    """The number of records of a saved shard row (ValueError if it is malformed)."""
    if not 0 <= n < SHARDS or len(records) % ENTRY:
        raise ValueError(f"chunk index: shard {n} is malformed")
    return len(records) // ENTRY

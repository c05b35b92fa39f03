"""The metadata state the log records: inodes, directory entries, and how TXN ops change them.

A :class:`State` is what replaying TXN records from an empty store (or from a
STATE record) produces. The head state lives in memory and is changed in
place by transactions; an operation applied by :meth:`State.apply` records
how to undo itself, so a transaction that fails half-way (a bad op, or an I/O
error while appending its record) leaves the state exactly as it was.

Ops are validated as they are applied, against the state as it is at that
point of the transaction, so "create, then link" in one transaction works and
a dangling reference is refused before it reaches the log.
"""

from __future__ import annotations

import stat
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, overload

import msgpack

if TYPE_CHECKING:
    from vegafs.store.headindex import HeadIndex

BLOCK_SIZE = 128 * 1024
ROOT_INO = 1

# TXN op codes (first element of each op list; docs/store-format.md §TXN).
OP_CREATE = 1  # [1, ino, mode, uid, gid, rdev, target|nil, times_ns]
OP_UPDATE = 2  # [2, ino, {field: value}]
OP_SET_BLOCKS = 3  # [3, ino, {index: hash|nil}, size]
OP_DELETE = 4  # [4, ino]
OP_LINK = 5  # [5, parent, name, ino]
OP_UNLINK = 6  # [6, parent, name]
OP_SET_XATTR = 7  # [7, ino, key, value]
OP_REMOVE_XATTR = 8  # [8, ino, key]
OP_ANNOTATE = 9  # [9, kind, payload]

V = TypeVar("V")
T = TypeVar("T", bound="PackedTable[Any]")

UPDATE_FIELDS = frozenset(
    {"mode", "uid", "gid", "size", "atime_ns", "mtime_ns", "ctime_ns", "nlink", "rdev"}
)


@dataclass(eq=True)
class Inode:
    """One inode of the head state (or of a view). Callers must treat it as read-only."""

    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    rdev: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    target: bytes | None
    blocks: dict[int, bytes] = field(default_factory=dict)
    version: int = 0
    xattrs: dict[bytes, bytes] = field(default_factory=dict)

    def to_list(self) -> list[object]:
        return [
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.rdev,
            self.size,
            self.atime_ns,
            self.mtime_ns,
            self.ctime_ns,
            self.target,
            self.blocks,
            self.version,
            self.xattrs,
        ]

    def copy(self) -> Inode:
        """An independent copy (its block map and xattrs are copied too)."""
        return replace(self, blocks=dict(self.blocks), xattrs=dict(self.xattrs))


#: Inodes kept decoded (as :class:`Inode` objects) by a table; the rest stay packed.
HOT_INODES = 8192
#: Directories kept decoded: at least HOT_DIRS_MIN (however large), then more
#: while their entries add up to at most HOT_DIR_ENTRIES.
HOT_DIRS_MIN = 8
HOT_DIR_ENTRIES = 8192


_GONE = object()


class PackedTable(Generic[V]):
    """key -> object, holding most values packed (msgpack bytes) and a bounded set decoded.

    Why: a decoded :class:`Inode` with its block map and xattr dicts costs
    about 700 bytes, a directory entry in a dict about 80; packed, an inode
    is one byte string of about 100 and an entry about 14. A store with a
    million files cannot keep them all decoded (the daemon's memory would
    grow without bound), so a table decodes a value when it is used and
    :meth:`trim` packs the least recently used ones again.

    Rules that keep the head objects "live" (docs/architecture.md):

    * :meth:`get` and ``[]`` decode a value and keep it decoded (hot): the
      object a caller got stays the one transactions change until it falls
      out of the hot set, which only :meth:`trim` does, at a record boundary
      (never inside a transaction, whose undo steps hold these objects);
    * a value changed in place must be fetched with :meth:`for_write` (or
      stored with ``[]=``): it is then re-packed when evicted, while one only
      read keeps the bytes it was decoded from, so evicting it costs nothing;
    * whole-table walks (:meth:`values`, :meth:`items`, :meth:`peek`) decode
      packed values into throwaway objects and keep nothing, so a gc, an fsck
      or ``stats()`` over a million inodes does not leave them all decoded.

    With a *base* (:meth:`attach`: a table of the on-disk head index,
    vegafs/store/headindex.py) the table holds only the hot values and what
    changed since the last flush; a value neither hot nor changed is read
    from the base when asked for, and a hot one that did not change is just
    dropped when it cools. :meth:`changes` says what a flush must write, and
    :meth:`attach` after the flush's commit drops what the base now holds.
    """

    __slots__ = ("_d", "_hot", "_cost", "hot_limit", "_base", "_table", "_dirty", "_deleted", "_n")

    #: Decoded values that stay decoded whatever they cost.
    MIN_HOT = 0

    def __init__(
        self,
        items: Iterable[tuple[int, bytes | V]] | dict[int, bytes] | None = None,
        hot_limit: int = HOT_INODES,
    ) -> None:
        self._d: dict[int, bytes | V] = dict(items or ())
        # Decoded keys, least recently used first -> the bytes they were
        # decoded from (None: changed since, or never packed).
        self._hot: OrderedDict[int, bytes | None] = OrderedDict(
            (k, None) for k, v in self._d.items() if type(v) is not bytes
        )
        # What the decoded values cost, in weight() units (see trim()).
        self._cost = sum(self.weight(cast(V, v)) for v in self._d.values() if type(v) is not bytes)
        self.hot_limit = hot_limit
        # The on-disk base (None: every value is in _d), which of its tables,
        # keys changed since the last flush, keys deleted since (maybe in the
        # base), and the number of keys (with a base; len(_d) otherwise).
        self._base: HeadIndex | None = None
        self._table = ""
        self._dirty: set[int] = set()
        self._deleted: set[int] = set()
        self._n = 0

    @staticmethod
    def decode(raw: bytes) -> V:
        raise NotImplementedError

    @staticmethod
    def encode(value: V) -> bytes:
        raise NotImplementedError

    @staticmethod
    def weight(value: V) -> int:
        """What keeping ``value`` decoded costs, in the unit of ``hot_limit``."""
        return 1

    # -- point access ---------------------------------------------------------

    def _cold(self, key: int) -> bytes | None:
        """The packed value of a key not in memory: from the base, unless deleted since."""
        if self._base is None or key in self._deleted:
            return None
        return self._base.get(self._table, key)

    @overload
    def get(self, key: int) -> V | None: ...
    @overload
    def get(self, key: int, default: V) -> V: ...
    def get(self, key: int, default: V | None = None) -> V | None:
        value = self._d.get(key)
        if value is None:
            value = self._cold(key)
            if value is None:
                return default
        if type(value) is bytes:
            obj = self.decode(value)
            self._d[key] = obj
            self._hot[key] = value
            self._cost += self.weight(obj)
            return obj
        self._hot.move_to_end(key)
        return value  # type: ignore[return-value]

    def __getitem__(self, key: int) -> V:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def for_write(self, key: int) -> V | None:
        """The live value, marked changed: it is packed again when it leaves the hot set."""
        value = self.get(key)
        if value is not None:
            self._hot[key] = None
            self._dirty.add(key)
        return value

    @overload
    def peek(self, key: int) -> V | None: ...
    @overload
    def peek(self, key: int, default: V) -> V: ...
    def peek(self, key: int, default: V | None = None) -> V | None:
        """The value, decoded without keeping it (read it, never change it)."""
        value = self._d.get(key)
        if value is None:
            value = self._cold(key)
            if value is None:
                return default
        return self.decode(value) if type(value) is bytes else value  # type: ignore[return-value]

    def __setitem__(self, key: int, value: V) -> None:
        old = self._d.get(key)
        if old is not None and key in self._hot:
            self._cost -= self.weight(old)  # type: ignore[arg-type]
        if self._base is not None and old is None and key not in self:
            self._n += 1
        self._d[key] = value
        self._hot[key] = None
        self._hot.move_to_end(key)
        self._cost += self.weight(value)
        self._dirty.add(key)
        self._deleted.discard(key)

    def __delitem__(self, key: int) -> None:
        value = self._d.pop(key, _GONE)
        if value is _GONE:
            if self._cold(key) is None:
                raise KeyError(key)
        elif self._hot.pop(key, _GONE) is not _GONE:
            self._cost -= self.weight(value)  # type: ignore[arg-type]
        if self._base is not None:
            self._n -= 1
            self._deleted.add(key)
        self._dirty.discard(key)

    def pop(self, key: int, *default: V | None) -> V | None:
        if key not in self:
            if default:
                return default[0]
            raise KeyError(key)
        value = self.peek(key)
        del self[key]
        return value

    def __contains__(self, key: object) -> bool:
        if key in self._d:
            return True
        if self._base is None or key in self._deleted or type(key) is not int:
            return False
        return self._base.has(self._table, key)

    def __len__(self) -> int:
        return len(self._d) if self._base is None else self._n

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.keys()))

    def keys(self) -> AbstractSet[int]:
        """Every key (a set built for the call when the table has a base)."""
        if self._base is None:
            return self._d.keys()
        found = {k for k, _raw in self._base.items(self._table) if k not in self._deleted}
        found.update(self._d)
        return found

    # -- walks ------------------------------------------------------------------

    def raw_items(self) -> Iterator[tuple[int, bytes | V]]:
        """Every (key, packed bytes or live object): the base's rows not shadowed, then memory."""
        if self._base is not None:
            d, deleted = self._d, self._deleted
            for key, raw in self._base.items(self._table):
                if key not in d and key not in deleted:
                    yield key, raw
        yield from list(self._d.items())

    def items(self) -> Iterator[tuple[int, V]]:
        """Every (key, value); packed ones are decoded for the walk only (do not change them)."""
        for key, value in self.raw_items():
            yield key, self.decode(value) if type(value) is bytes else value  # type: ignore[misc]

    def values(self) -> Iterator[V]:
        for _key, value in self.items():
            yield value

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PackedTable):
            return NotImplemented
        keys = self.keys()
        return keys == other.keys() and all(self.peek(k) == other.peek(k) for k in keys)

    __hash__ = None  # type: ignore[assignment]

    # -- packing ----------------------------------------------------------------

    def _recount(self) -> None:
        """Make ``_cost`` exact (a value's weight may change while it is decoded)."""

    def trim(self, slack: int = 1) -> None:
        """Pack the least recently used values until the hot set costs at most ``hot_limit``.

        Nothing happens until the cost exceeds ``slack * hot_limit`` (reads
        call it with 2: one trim per ``hot_limit`` reads, however many there
        are). Call only between records: an object held by a running
        transaction's undo steps must not be detached from the table. With a
        base, a value that did not change since the last flush is dropped
        (the base has it), not packed.
        """
        if self._cost <= slack * self.hot_limit or len(self._hot) <= self.MIN_HOT:
            return  # (with MIN_HOT or fewer decoded, there is nothing to drop: no recount)
        self._recount()
        hot, d = self._hot, self._d
        based, dirty = self._base is not None, self._dirty
        while self._cost > self.hot_limit and len(hot) > self.MIN_HOT:
            key, raw = hot.popitem(last=False)
            value = d.get(key)
            if value is not None and type(value) is not bytes:
                if based and key not in dirty:
                    del d[key]
                else:
                    d[key] = raw if raw is not None else self.encode(value)  # type: ignore[arg-type]
                self._cost -= self.weight(value)  # type: ignore[arg-type]

    def _packed_value(self, key: int, value: bytes | V) -> bytes:
        if type(value) is bytes:
            return value
        return self._hot.get(key) or self.encode(value)  # type: ignore[arg-type]

    def packed(self) -> dict[int, bytes]:
        """key -> packed value, re-using the bytes of values not changed since they were packed."""
        return {k: self._packed_value(k, v) for k, v in self.raw_items()}

    def copy(self: T) -> T:
        """An independent table (every value packed: nothing is shared with this one)."""
        return type(self)(self.packed(), self.hot_limit)

    # -- the on-disk base --------------------------------------------------------

    def unsaved(self) -> int:
        """Values changed or deleted since the last flush (all of them without a base)."""
        return len(self._dirty) + len(self._deleted) if self._base is not None else len(self._d)

    def changes(self) -> tuple[bool, list[tuple[int, bytes]], list[int]]:
        """What a flush writes: (replace the base's whole table?, rows to put, keys to delete)."""
        if self._base is None:
            return True, list(self.packed().items()), []
        d = self._d
        puts = [(k, self._packed_value(k, d[k])) for k in self._dirty if k in d]
        return False, puts, list(self._deleted)

    def attach(self, base: HeadIndex, table: str) -> None:
        """The base now holds this table's every value (a flush committed, or the
        index was loaded): keep only the hot values in memory."""
        self._base, self._table = base, table
        self._n = base.count(table)
        self._dirty.clear()
        self._deleted.clear()
        d = self._d
        for key in [k for k, v in d.items() if type(v) is bytes]:
            del d[key]

    def detach(self) -> None:
        """Read every value back from the base into memory (the base goes away)."""
        if self._base is not None:
            self._d = dict(self.raw_items())
            self._base = None
            self._dirty.clear()
            self._deleted.clear()


class InodeTable(PackedTable[Inode]):
    """ino -> :class:`Inode`."""

    __slots__ = ()

    @staticmethod
    def decode(raw: bytes) -> Inode:
        return Inode(*unpack(raw))

    @staticmethod
    def encode(value: Inode) -> bytes:
        return pack(value.to_list())


class DirTable(PackedTable[dict[bytes, int]]):
    """directory ino -> its entries ``{name: ino}`` (insertion order is listing order).

    The hot set is bounded by entries rather than directories: at least
    ``HOT_DIRS_MIN`` recent directories stay decoded however large they are
    (a rename between two big directories must not re-pack one each time),
    more while the decoded entries add up to at most ``HOT_DIR_ENTRIES``.
    """

    __slots__ = ()

    def __init__(
        self,
        items: Iterable[tuple[int, bytes | dict[bytes, int]]] | dict[int, bytes] | None = None,
        hot_limit: int = HOT_DIR_ENTRIES,
    ) -> None:
        super().__init__(items, hot_limit)

    @staticmethod
    def decode(raw: bytes) -> dict[bytes, int]:
        return unpack(raw)

    @staticmethod
    def encode(value: dict[bytes, int]) -> bytes:
        return pack(value)

    MIN_HOT = HOT_DIRS_MIN

    @staticmethod
    def weight(value: dict[bytes, int]) -> int:
        return len(value) + 1

    def for_write(self, key: int) -> dict[bytes, int] | None:
        """As for any table, and counts the entry a link may add (trim() recounts exactly)."""
        entries = super().for_write(key)
        self._cost += 1
        return entries

    def _recount(self) -> None:
        """Entries linked into a decoded directory were not counted when they came."""
        d = self._d
        self._cost = sum(len(d[k]) + 1 for k in self._hot)


class TxnError(ValueError):
    """A transaction op is invalid against the state (a caller bug, not an I/O problem)."""


Undo = list[Callable[[], object]]  # undo steps; what one returns is ignored


class State:
    """Inodes and directories; the part of the store that rollback rewinds."""

    __slots__ = ("inodes", "dirs")

    def __init__(self) -> None:
        self.inodes: InodeTable = InodeTable()
        self.dirs: DirTable = DirTable()

    def copy(self) -> State:
        s = State()
        s.inodes = self.inodes.copy()
        s.dirs = self.dirs.copy()
        return s

    # -- serialization (checkpoints and STATE records) -----------------------

    def to_obj(self) -> list[object]:
        """``[{ino: packed inode}, [[dir_ino, [[name, ino], ...]], ...]]`` (docs/store-format.md)."""
        return [
            self.inodes.packed(),
            [[ino, list(d.items())] for ino, d in self.dirs.items()],
        ]

    @classmethod
    def from_obj(cls, obj: list[Any]) -> State:
        s = cls()
        s.inodes = InodeTable(obj[0])
        s.dirs = DirTable((ino, pack(dict(items))) for ino, items in obj[1])
        return s

    @classmethod
    def from_tables(cls, inodes: dict[int, bytes], dirs: dict[int, bytes]) -> State:
        """A state from the packed rows of the head index (a read-only store's copy)."""
        s = cls()
        s.inodes = InodeTable(inodes)
        s.dirs = DirTable(dirs)
        return s

    def changes(self) -> dict[str, tuple[bool, list[tuple[int, bytes]], list[int]]]:
        """What a flush of the head index writes, per table (see PackedTable.changes):
        both tables incremental, or both whole (a new index file)."""
        if (self.inodes._base is None) != (self.dirs._base is None):
            self.inodes.detach()
            self.dirs.detach()
        return {"inodes": self.inodes.changes(), "dirs": self.dirs.changes()}

    def unsaved(self) -> int:
        """Inodes and directories memory holds for want of a flush."""
        return self.inodes.unsaved() + self.dirs.unsaved()

    def attach(self, base: HeadIndex) -> None:
        """The head index holds this state now (flushed or loaded): keep only hot values."""
        self.inodes.attach(base, "inodes")
        self.dirs.attach(base, "dirs")

    def trim(self, slack: int = 1) -> None:
        """Re-pack what the tables hold decoded beyond their limits (between records only)."""
        self.inodes.trim(slack)
        self.dirs.trim(slack)

    def chunk_refs(self) -> Iterable[bytes]:
        """Every chunk hash this state references (with repeats)."""
        for inode in self.inodes.values():
            yield from inode.blocks.values()

    # -- applying ops --------------------------------------------------------

    def apply(
        self,
        op: list[Any],
        undo: Undo | None,
        has_chunk: Callable[[bytes], bool] | None = None,
    ) -> None:
        """Apply one TXN op. With ``undo``, validate it and push how to reverse it.

        Without ``undo`` (replay of a verified log) the op is trusted.
        """
        code = op[0]
        check = undo is not None
        inodes, dirs = self.inodes, self.dirs
        if code == OP_CREATE:
            _, ino, mode, uid, gid, rdev, target, t = op
            if check and ino in inodes:
                raise TxnError(f"inode {ino} already exists")
            inodes[ino] = Inode(ino, mode, uid, gid, 0, rdev, len(target or b""), t, t, t, target)
            if stat.S_ISDIR(mode):
                dirs[ino] = {}
            if undo is not None:
                undo.append(lambda: (inodes.pop(ino), dirs.pop(ino, None)))
        elif code == OP_UPDATE:
            _, ino, changes = op
            inode = self._inode(ino, check)
            if undo is not None:
                bad = set(changes) - UPDATE_FIELDS
                if bad:
                    raise TxnError(f"cannot update {sorted(bad)} of inode {ino}")
                old_attrs = {k: getattr(inode, k) for k in changes}
                old_blocks = (
                    dict(inode.blocks) if changes.get("size", inode.size) < inode.size else None
                )

                def _undo_update() -> None:
                    for k, v in old_attrs.items():
                        setattr(inode, k, v)
                    if old_blocks is not None:
                        inode.blocks = old_blocks

                undo.append(_undo_update)
            old_size = inode.size
            for k, v in changes.items():
                setattr(inode, k, v)
            if inode.size < old_size:
                _drop_blocks_beyond(inode)
        elif code == OP_SET_BLOCKS:
            _, ino, delta, size = op
            inode = self._inode(ino, check)
            if undo is not None:
                if not stat.S_ISREG(inode.mode):
                    raise TxnError(f"inode {ino} is not a regular file")
                if has_chunk is not None:
                    for h in delta.values():
                        if h is not None and not has_chunk(h):
                            raise TxnError(f"chunk {h.hex()} is not in the store")
                saved = (dict(inode.blocks), inode.size, inode.version)

                def _undo_blocks() -> None:
                    inode.blocks, inode.size, inode.version = saved

                undo.append(_undo_blocks)
            blocks = inode.blocks
            for index, h in delta.items():
                if h is None:
                    blocks.pop(index, None)
                else:
                    blocks[index] = h
            shrink = size < inode.size
            inode.size = size
            inode.version += 1
            if shrink:
                _drop_blocks_beyond(inode)
        elif code == OP_DELETE:
            _, ino = op
            inode = self._inode(ino, check)
            d = dirs.get(ino)
            if undo is not None:
                if ino == ROOT_INO:
                    raise TxnError("the root inode cannot be deleted")
                if d:
                    raise TxnError(f"directory {ino} is not empty")
                undo.append(lambda: _restore(inodes, dirs, ino, inode, d))
            del inodes[ino]
            dirs.pop(ino, None)
        elif code == OP_LINK:
            _, parent, name, ino = op
            if undo is not None:
                if parent not in dirs:
                    raise TxnError(f"inode {parent} is not a directory")
                if ino not in inodes:
                    raise TxnError(f"inode {ino} does not exist")
                if not name or b"/" in name or name in (b".", b".."):
                    raise TxnError(f"bad directory entry name {name!r}")
            # checked just above; a trusted (replayed) op names an existing directory
            entries = cast(dict[bytes, int], dirs.for_write(parent))
            if undo is not None:
                old_ino = entries.get(name)
                undo.append(lambda: _set_or_pop(entries, name, old_ino))
            entries[name] = ino
        elif code == OP_UNLINK:
            _, parent, name = op
            # None only for a bad op: checked next, and a replayed op is trusted
            entries = cast(dict[bytes, int], dirs.for_write(parent))
            if undo is not None:
                if entries is None or name not in entries:
                    raise TxnError(f"no entry {name!r} in directory {parent}")
                was = entries[name]
                undo.append(lambda: entries.__setitem__(name, was))
            del entries[name]
        elif code == OP_SET_XATTR:
            _, ino, key, value = op
            xattrs = self._inode(ino, check).xattrs
            if undo is not None:
                old_value = xattrs.get(key)
                undo.append(lambda: _set_or_pop(xattrs, key, old_value))
            xattrs[key] = value
        elif code == OP_REMOVE_XATTR:
            _, ino, key = op
            xattrs = self._inode(ino, check).xattrs
            if undo is not None:
                if key not in xattrs:
                    raise TxnError(f"inode {ino} has no xattr {key!r}")
                removed = xattrs[key]
                undo.append(lambda: xattrs.__setitem__(key, removed))
            del xattrs[key]
        elif code == OP_ANNOTATE:
            pass  # annotations are log history, kept by the store outside the state
        elif check:
            raise TxnError(f"unknown op {code}")

    def _inode(self, ino: int, check: bool) -> Inode:
        """The inode an op changes (so the table knows to pack it again)."""
        inode = self.inodes.for_write(ino)
        if inode is None and check:
            raise TxnError(f"inode {ino} does not exist")
        return inode  # type: ignore[return-value]


def repair_state(state: State, has_chunk: Callable[[bytes], bool], now_ns: int) -> list[str]:
    """Make a salvaged state self-consistent in place; return what was changed, in words.

    Used by repair for states that cannot be fixed by logged transactions
    (snapshots, which are history): the result is written as a STATE record.
    """
    done: list[str] = []
    inodes, dirs = state.inodes, state.dirs
    root = inodes.get(ROOT_INO)
    if root is None or not stat.S_ISDIR(root.mode):
        inodes[ROOT_INO] = Inode(
            ROOT_INO, stat.S_IFDIR | 0o755, 0, 0, 2, 0, 0, now_ns, now_ns, now_ns, None
        )
        dirs[ROOT_INO] = {}
        done.append("the root directory was missing and was recreated (empty)")
    for ino in [d for d in dirs if d not in inodes or not stat.S_ISDIR(inodes[d].mode)]:
        del dirs[ino]
        done.append(f"entry table of non-directory {ino} dropped")
    for ino, inode in inodes.items():
        if stat.S_ISDIR(inode.mode) and ino not in dirs:
            dirs[ino] = {}
            done.append(f"directory {ino} had no entry table: now empty")
        lost = [i for i, h in inode.blocks.items() if not has_chunk(h)]
        for index in lost:
            del inodes.for_write(ino).blocks[index]  # type: ignore[union-attr]  # ino: in inodes
            done.append(f"block {index} of inode {ino} lost its data (reads as zeros)")
    refs: dict[int, int] = {}
    for parent, entries in dirs.items():
        for name in [n for n, i in entries.items() if i not in inodes]:
            done.append(f"dangling entry {name!r} removed from directory {parent}")
            del dirs.for_write(parent)[name]  # type: ignore[union-attr]  # parent: a key of dirs
        for ino in entries.values():
            refs[ino] = refs.get(ino, 0) + 1
    reachable, todo = {ROOT_INO}, [ROOT_INO]
    while todo:
        for ino in dirs.get(todo.pop(), {}).values():
            if ino not in reachable:
                reachable.add(ino)
                todo.append(ino)
    for ino in [i for i in inodes if i not in reachable]:
        if inodes[ino].nlink == 0:
            continue  # open and unlinked when the state was taken: legitimate
        dirs.for_write(ROOT_INO)[f"lost+found.{ino}".encode()] = ino  # type: ignore[index]  # the root exists
        refs[ino] = refs.get(ino, 0) + 1
        done.append(f"unreachable inode {ino} linked as /lost+found.{ino}")
    for ino, inode in inodes.items():
        if not stat.S_ISDIR(inode.mode) and inode.nlink != refs.get(ino, 0):
            done.append(f"nlink of inode {ino} set to {refs.get(ino, 0)}")
            inodes.for_write(ino).nlink = refs.get(ino, 0)  # type: ignore[union-attr]  # in inodes
    return done


def _drop_blocks_beyond(inode: Inode) -> None:
    """Blocks wholly past EOF do not exist: a file never references data it cannot show."""
    nblocks = -(-inode.size // BLOCK_SIZE)
    for index in [i for i in inode.blocks if i >= nblocks]:
        del inode.blocks[index]


def _set_or_pop(d: dict[Any, Any], key: object, value: object) -> None:
    if value is None:
        d.pop(key, None)
    else:
        d[key] = value


def _restore(
    inodes: InodeTable,
    dirs: DirTable,
    ino: int,
    inode: Inode,
    d: dict[bytes, int] | None,
) -> None:
    inodes[ino] = inode
    if d is not None:
        dirs[ino] = d


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(raw: bytes) -> Any:  # msgpack data: its shape is checked by the caller
    return msgpack.unpackb(raw, raw=False, strict_map_key=False, use_list=True)

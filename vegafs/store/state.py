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
from collections.abc import Callable, Iterable, Iterator, KeysView
from dataclasses import dataclass, field

import msgpack

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
        *attrs, blocks, version, xattrs = self.to_list()
        return Inode(*attrs, dict(blocks), version, dict(xattrs))  # type: ignore[arg-type]


#: Inodes kept decoded (as :class:`Inode` objects) by a table; the rest stay packed.
HOT_INODES = 8192


class InodeTable:
    """ino -> Inode, holding most inodes packed (msgpack bytes) and a bounded set decoded.

    Why: a decoded :class:`Inode` with its block map and xattr dicts costs
    about 700 bytes; packed, an inode is one byte string of about 100. A
    store with a million files cannot keep them all decoded (the daemon's
    memory would grow without bound), so the table decodes an inode when it
    is used and :meth:`trim` packs the least recently used ones again.

    Rules that keep the head objects "live" (docs/architecture.md):

    * :meth:`get` and ``[]`` decode an inode and keep it decoded (hot): the
      object a caller got stays the one transactions change until it falls
      out of the hot set, which only :meth:`trim` does, at a record boundary
      (never inside a transaction, whose undo steps hold inode objects);
    * an inode changed in place must be fetched with :meth:`for_write` (or
      stored with ``[]=``): it is then re-packed when evicted, while one only
      read keeps the bytes it was decoded from, so evicting it costs nothing;
    * whole-table walks (:meth:`values`, :meth:`items`, :meth:`peek`) decode
      packed inodes into throwaway objects and keep nothing, so a gc, an fsck
      or ``stats()`` over a million inodes does not leave them all decoded.
    """

    __slots__ = ("_d", "_hot", "hot_limit")

    def __init__(
        self,
        items: Iterable[tuple[int, bytes | Inode]] | dict[int, bytes] | None = None,
        hot_limit: int = HOT_INODES,
    ) -> None:
        self._d: dict[int, bytes | Inode] = dict(items or ())
        # Decoded inos, least recently used first -> the bytes they were
        # decoded from (None: changed since, or never packed).
        self._hot: OrderedDict[int, bytes | None] = OrderedDict(
            (ino, None) for ino, v in self._d.items() if type(v) is not bytes
        )
        self.hot_limit = hot_limit

    # -- point access ---------------------------------------------------------

    def get(self, ino: int, default: Inode | None = None) -> Inode | None:
        value = self._d.get(ino)
        if value is None:
            return default
        if type(value) is bytes:
            inode = Inode(*unpack(value))  # type: ignore[misc]
            self._d[ino] = inode
            self._hot[ino] = value
            return inode
        self._hot.move_to_end(ino)
        return value  # type: ignore[return-value]

    def __getitem__(self, ino: int) -> Inode:
        inode = self.get(ino)
        if inode is None:
            raise KeyError(ino)
        return inode

    def for_write(self, ino: int) -> Inode | None:
        """The live inode, marked changed: it is packed again when it leaves the hot set."""
        inode = self.get(ino)
        if inode is not None:
            self._hot[ino] = None
        return inode

    def peek(self, ino: int) -> Inode | None:
        """The inode, decoded without keeping it (read it, never change it)."""
        value = self._d.get(ino)
        return Inode(*unpack(value)) if type(value) is bytes else value  # type: ignore[misc,return-value]

    def __setitem__(self, ino: int, inode: Inode) -> None:
        self._d[ino] = inode
        self._hot[ino] = None
        self._hot.move_to_end(ino)

    def __delitem__(self, ino: int) -> None:
        del self._d[ino]
        self._hot.pop(ino, None)

    def pop(self, ino: int, *default: object) -> Inode:
        if ino not in self._d and default:
            return default[0]  # type: ignore[return-value]
        inode = self.peek(ino)
        del self[ino]
        return inode  # type: ignore[return-value]

    def __contains__(self, ino: object) -> bool:
        return ino in self._d

    def __len__(self) -> int:
        return len(self._d)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._d))

    def keys(self) -> KeysView[int]:
        return self._d.keys()

    # -- walks ------------------------------------------------------------------

    def items(self) -> Iterator[tuple[int, Inode]]:
        """Every (ino, inode); packed ones are decoded for the walk only (do not change them)."""
        for ino in list(self._d):
            inode = self.peek(ino)
            if inode is not None:
                yield ino, inode

    def values(self) -> Iterator[Inode]:
        for _ino, inode in self.items():
            yield inode

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InodeTable):
            return NotImplemented
        return self._d.keys() == other._d.keys() and all(
            self.peek(ino) == other.peek(ino) for ino in self._d
        )

    __hash__ = None  # type: ignore[assignment]

    # -- packing ----------------------------------------------------------------

    def trim(self) -> None:
        """Pack the least recently used inodes until at most ``hot_limit`` stay decoded.

        Call only between records: an inode object held by a running
        transaction's undo steps must not be detached from the table.
        """
        hot, d = self._hot, self._d
        while len(hot) > self.hot_limit:
            ino, raw = hot.popitem(last=False)
            inode = d.get(ino)
            if inode is not None and type(inode) is not bytes:
                d[ino] = raw if raw is not None else pack(inode.to_list())  # type: ignore[union-attr]

    def trim_reads(self) -> None:
        """:meth:`trim` once reads alone have doubled the hot set (amortized: a walk
        over a million inodes by lookups keeps memory bounded, at one trim per
        ``hot_limit`` reads)."""
        if len(self._hot) > 2 * self.hot_limit:
            self.trim()

    def packed(self) -> dict[int, bytes]:
        """ino -> packed inode, re-using the bytes of inodes not changed since they were packed."""
        hot = self._hot
        return {
            ino: v if type(v) is bytes else (hot.get(ino) or pack(v.to_list()))  # type: ignore[union-attr]
            for ino, v in self._d.items()
        }

    def copy(self) -> InodeTable:
        """An independent table (every inode packed: nothing is shared with this one)."""
        return InodeTable(self.packed(), self.hot_limit)


class TxnError(ValueError):
    """A transaction op is invalid against the state (a caller bug, not an I/O problem)."""


Undo = list[Callable[[], None]]


class State:
    """Inodes and directories; the part of the store that rollback rewinds."""

    __slots__ = ("inodes", "dirs")

    def __init__(self) -> None:
        self.inodes: InodeTable = InodeTable()
        self.dirs: dict[int, dict[bytes, int]] = {}

    def copy(self) -> State:
        s = State()
        s.inodes = self.inodes.copy()
        s.dirs = {ino: dict(d) for ino, d in self.dirs.items()}
        return s

    # -- serialization (checkpoints and STATE records) -----------------------

    def to_obj(self) -> list[object]:
        """``[{ino: packed inode}, [[dir_ino, [[name, ino], ...]], ...]]`` (docs/store-format.md)."""
        return [
            self.inodes.packed(),
            [[ino, list(d.items())] for ino, d in self.dirs.items()],
        ]

    @classmethod
    def from_obj(cls, obj: list) -> State:  # type: ignore[type-arg]
        s = cls()
        s.inodes = InodeTable(obj[0])
        s.dirs = {ino: dict(items) for ino, items in obj[1]}
        return s

    def chunk_refs(self) -> Iterable[bytes]:
        """Every chunk hash this state references (with repeats)."""
        for inode in self.inodes.values():
            yield from inode.blocks.values()

    # -- applying ops --------------------------------------------------------

    def apply(
        self,
        op: list,  # type: ignore[type-arg]
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
            if check:
                undo.append(lambda: (inodes.pop(ino), dirs.pop(ino, None)))
        elif code == OP_UPDATE:
            _, ino, changes = op
            inode = self._inode(ino, check)
            if check:
                bad = set(changes) - UPDATE_FIELDS
                if bad:
                    raise TxnError(f"cannot update {sorted(bad)} of inode {ino}")
                old = {k: getattr(inode, k) for k in changes}
                old_blocks = (
                    dict(inode.blocks) if changes.get("size", inode.size) < inode.size else None
                )

                def _undo_update() -> None:
                    for k, v in old.items():
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
            if check:
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
            if check:
                if ino == ROOT_INO:
                    raise TxnError("the root inode cannot be deleted")
                if d:
                    raise TxnError(f"directory {ino} is not empty")
                undo.append(lambda: _restore(inodes, dirs, ino, inode, d))
            del inodes[ino]
            dirs.pop(ino, None)
        elif code == OP_LINK:
            _, parent, name, ino = op
            if check:
                if parent not in dirs:
                    raise TxnError(f"inode {parent} is not a directory")
                if ino not in inodes:
                    raise TxnError(f"inode {ino} does not exist")
                if not name or b"/" in name or name in (b".", b".."):
                    raise TxnError(f"bad directory entry name {name!r}")
            entries = dirs[parent]
            if check:
                old = entries.get(name)
                undo.append(lambda: _set_or_pop(entries, name, old))
            entries[name] = ino
        elif code == OP_UNLINK:
            _, parent, name = op
            entries = dirs.get(parent)  # type: ignore[assignment]
            if check:
                if entries is None or name not in entries:
                    raise TxnError(f"no entry {name!r} in directory {parent}")
                old = entries[name]
                undo.append(lambda: entries.__setitem__(name, old))
            del entries[name]
        elif code == OP_SET_XATTR:
            _, ino, key, value = op
            xattrs = self._inode(ino, check).xattrs
            if check:
                old = xattrs.get(key)
                undo.append(lambda: _set_or_pop(xattrs, key, old))
            xattrs[key] = value
        elif code == OP_REMOVE_XATTR:
            _, ino, key = op
            xattrs = self._inode(ino, check).xattrs
            if check:
                if key not in xattrs:
                    raise TxnError(f"inode {ino} has no xattr {key!r}")
                old = xattrs[key]
                undo.append(lambda: xattrs.__setitem__(key, old))
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
            del inodes.for_write(ino).blocks[index]  # type: ignore[union-attr]
            done.append(f"block {index} of inode {ino} lost its data (reads as zeros)")
    refs: dict[int, int] = {}
    for parent, entries in dirs.items():
        for name in [n for n, i in entries.items() if i not in inodes]:
            done.append(f"dangling entry {name!r} removed from directory {parent}")
            del entries[name]
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
        dirs[ROOT_INO][f"lost+found.{ino}".encode()] = ino
        refs[ino] = refs.get(ino, 0) + 1
        done.append(f"unreachable inode {ino} linked as /lost+found.{ino}")
    for ino, inode in inodes.items():
        if not stat.S_ISDIR(inode.mode) and inode.nlink != refs.get(ino, 0):
            done.append(f"nlink of inode {ino} set to {refs.get(ino, 0)}")
            inodes.for_write(ino).nlink = refs.get(ino, 0)  # type: ignore[union-attr]
    return done


def _drop_blocks_beyond(inode: Inode) -> None:
    """Blocks wholly past EOF do not exist: a file never references data it cannot show."""
    nblocks = -(-inode.size // BLOCK_SIZE)
    for index in [i for i in inode.blocks if i >= nblocks]:
        del inode.blocks[index]


def _set_or_pop(d: dict, key: object, value: object) -> None:  # type: ignore[type-arg]
    if value is None:
        d.pop(key, None)
    else:
        d[key] = value


def _restore(
    inodes: dict[int, Inode],
    dirs: dict[int, dict[bytes, int]],
    ino: int,
    inode: Inode,
    d: dict[bytes, int] | None,
) -> None:
    inodes[ino] = inode
    if d is not None:
        dirs[ino] = d


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(raw: bytes) -> object:
    return msgpack.unpackb(raw, raw=False, strict_map_key=False, use_list=True)

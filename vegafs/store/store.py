"""The Store: log, chunks, publish, recovery, checkpoints, snapshots, rollback.

The log is the truth; everything in memory (head state, chunk index, record
locators, snapshots) is derived from it and is rebuilt by replay on open,
starting from the newest valid checkpoint if there is one.

Concurrency. ``_lock`` serializes appends (records must be written in logseq
order and chained). ``_publish_lock`` serializes publishes and the operations
that switch segments or generations (roll, checkpoint, gc), so that a publish
can fsync *outside* ``_lock``: transactions from the trio thread keep
appending while a worker thread waits for the disk. Readers of the head state
take no lock; the state is changed in place by one transaction at a time.

Locators. A record's place is one int: ``segment_index << 40 | offset``
(segment index within the current generation's segment list), which keeps the
chunk index (:mod:`vegafs.store.chunkindex`) at 40 bytes an entry, stored in a
checkpoint as one byte string.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast

import blake3
import zstandard

from vegafs.store import faultpoints, headindex
from vegafs.store.backend import FORMAT_KEY, Backend, LockHolder, open_backend
from vegafs.store.chunkindex import ChunkIndex
from vegafs.store.errors import (
    STORE_EXISTS,
    STORE_IO_ERROR,
    STORE_NOT_FOUND,
    StoreError,
)
from vegafs.store.headindex import INDEX_NAME, HeadIndex
from vegafs.store.locators import ViewLocators
from vegafs.store.records import (
    CHUNK,
    FLAG_MUST_UNDERSTAND,
    FLAG_ZSTD,
    FORMAT_MAGIC,
    FORMAT_VERSION,
    GENERATION,
    HASH_SIZE,
    PUBLISH,
    RECORD_HEADER,
    RECORD_MAGIC,
    RECORD_OVERHEAD,
    ROLLBACK,
    SEGMENT_HEADER,
    SNAPSHOT,
    SNAPSHOT_DELETE,
    STATE,
    TXN,
    TYPE_NAMES,
    ZERO_HASH,
    ScanEnd,
    SegmentHeader,
    encode_chunk,
    encode_record,
    parse_segment_name,
    scan_segment,
    segment_name,
    verify_framed,
)
from vegafs.store.state import (
    BLOCK_SIZE,
    OP_ANNOTATE,
    OP_CREATE,
    OP_DELETE,
    OP_LINK,
    OP_REMOVE_XATTR,
    OP_SET_BLOCKS,
    OP_SET_XATTR,
    OP_UNLINK,
    OP_UPDATE,
    ROOT_INO,
    UPDATE_FIELDS,
    Inode,
    State,
    TxnError,
    Undo,
    pack,
    unpack,
)

MANIFEST_KEY = "MANIFEST"
#: Where checkpoints were kept before the head index (layouts 1-2): deleted when seen.
CHECKPOINT_KEY = "index/checkpoint"
QUARANTINE_PREFIX = "quarantine/"

#: A segment is sealed at the first publish after it grows past this size.
SEGMENT_TARGET = 64 << 20
#: A checkpoint is written at a publish once this many records were replayable since the last.
CHECKPOINT_INTERVAL = 50_000
#: ... or once this many inodes and directories changed since (what memory holds
#: beyond the hot sets until the head index has them: ~200 bytes each).
FLUSH_CHANGED = 8192
#: How a checkpoint lays out memory (docs/store-format.md); another layout is ignored (rebuilt).
#: 3: the state's tables are rows of the head index (vegafs/store/headindex.py).
CHECKPOINT_LAYOUT = 3

_LOC_SHIFT = 40
_LOC_MASK = (1 << _LOC_SHIFT) - 1
_VIEW_CACHE = 8
#: Most chunk records one backend read gathers (3 buffers each, far below IOV_MAX).
_RUN_MAX = 64

Progress = Callable[[str, int, int], None]


def _loc(seg_idx: int, offset: int) -> int:
    return seg_idx << _LOC_SHIFT | offset


def _zero_after(view: memoryview, n: int) -> None:
    """Zero ``view`` past its first ``n`` bytes (a chunk shorter than the block it fills)."""
    if n < len(view):
        view[n:] = bytes(len(view) - n)


@dataclass(frozen=True)
class Snapshot:
    """A name for a published logseq."""

    name: str
    logseq: int
    created_ns: int


@dataclass(frozen=True)
class FileVersion:
    """One data version of a file, as recorded by a ``set_blocks`` op."""

    version: int
    logseq: int
    size: int
    blocks: dict[int, bytes]


@dataclass(frozen=True)
class RollbackInfo:
    """A ROLLBACK record: to undo it, ``rollback_to(pre_head)`` (until gc compacts history)."""

    logseq: int
    target: int
    name: str | None
    pre_head: int


@dataclass
class HeadChanges:
    """What following a writer changed, for the layers that cache the state (fs, kernel).

    ``inodes`` had their attributes, data or xattrs changed (or were created
    or deleted); ``entries`` are directory entries ``(parent, name)`` added,
    replaced or removed. ``everything``: the state was reloaded (a gc, a
    rollback) and any inode may have changed.
    """

    logseq: int
    inodes: set[int] = field(default_factory=set)
    entries: set[tuple[int, bytes]] = field(default_factory=set)
    snapshots: bool = False
    everything: bool = False

    def add_ops(self, ops: Iterable[list[Any]]) -> None:
        """Note what the TXN ops ``ops`` change: the inodes they touch, and the
        directory entries (and their directories) they link or unlink."""
        for op in ops:
            if op[0] in (OP_LINK, OP_UNLINK):
                self.entries.add((op[1], op[2]))
                self.inodes.update(op[1:2] + op[3:4])
            elif op[0] != OP_ANNOTATE:
                self.inodes.add(op[1])


@dataclass
class HeadUpdate:
    """What :meth:`Store.poll_head` found, for :meth:`Store.apply_head`: new published
    records to replay (read-only follower), or a freshly loaded memory (``fresh``)."""

    changes: HeadChanges
    base: tuple[int, int] = (0, 0)  # (generation, head logseq) the records continue
    entries: list[tuple[Any, ...]] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    tail: _Tail | None = None
    fresh: Store | None = None


def _check_snapshot_name(name: str) -> None:
    if (
        not isinstance(name, str)
        or not name
        or "/" in name
        or "\0" in name
        or name in (".", "..")
        or len(name.encode()) > 255
    ):
        raise ValueError(f"bad snapshot name {name!r} (1-255 bytes, no '/' or NUL)")


class Transaction:
    """Ops collected inside ``with store.transaction() as t:``; one TXN record on exit."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.ops: list[list[Any]] = []
        self.logseq: int | None = None

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.logseq = self._store._commit(self.ops)

    def create_inode(
        self,
        ino: int,
        *,
        mode: int,
        uid: int,
        gid: int,
        rdev: int = 0,
        target: bytes | None = None,
        times_ns: int,
    ) -> None:
        self.ops.append([OP_CREATE, ino, mode, uid, gid, rdev, target, times_ns])

    def update(self, ino: int, **changes: int) -> None:
        bad = set(changes) - UPDATE_FIELDS
        if bad:
            raise TypeError(f"update() got unknown fields {sorted(bad)}")
        if changes:
            self.ops.append([OP_UPDATE, ino, changes])

    def set_blocks(self, ino: int, blocks: dict[int, bytes | None], size: int) -> None:
        self.ops.append([OP_SET_BLOCKS, ino, dict(blocks), size])

    def delete_inode(self, ino: int) -> None:
        self.ops.append([OP_DELETE, ino])

    def link(self, parent: int, name: bytes, ino: int) -> None:
        self.ops.append([OP_LINK, parent, bytes(name), ino])

    def unlink(self, parent: int, name: bytes) -> None:
        self.ops.append([OP_UNLINK, parent, bytes(name)])

    def set_xattr(self, ino: int, key: bytes, value: bytes) -> None:
        self.ops.append([OP_SET_XATTR, ino, bytes(key), bytes(value)])

    def remove_xattr(self, ino: int, key: bytes) -> None:
        self.ops.append([OP_REMOVE_XATTR, ino, bytes(key)])

    def annotate(self, kind: str, payload: bytes) -> None:
        self.ops.append([OP_ANNOTATE, str(kind), bytes(payload)])


class _StateReads:
    """The read API a state answers, shared by the head (Store) and views."""

    _state: State

    _committing = False  # a transaction is being applied (its undo steps hold inodes)

    def get_inode(self, ino: int) -> Inode | None:
        inode = self._state.inodes.get(ino)
        self._trim_reads()
        return inode

    def lookup(self, parent_ino: int, name: bytes) -> int | None:
        d = self._state.dirs.get(parent_ino)
        self._trim_reads()
        return None if d is None else d.get(name)

    def listdir(self, parent_ino: int) -> list[tuple[bytes, int]]:
        entries = list(self._state.dirs.get(parent_ino, {}).items())
        self._trim_reads()
        return entries

    def _trim_reads(self) -> None:
        """Reads decode too: keep what they leave decoded bounded (never mid-transaction)."""
        if not self._committing:
            self._state.trim(2)


class StoreView(_StateReads):
    """A read-only state (a snapshot, or any published logseq) over the store's chunks."""

    def __init__(self, store: Store, state: State, logseq: int, name: str | None) -> None:
        self._store = store
        self._state = state
        self.logseq = logseq
        self.name = name

    def read_chunk(self, h: bytes) -> bytes:
        return self._store.read_chunk(h)


@dataclass
class _Tail:
    """Where the writer appends: the active segment and the chain head."""

    seg_idx: int
    end: int
    last_hash: bytes


class _WindowReader:
    """Reads records by locator through a 1 MiB window, for replays that walk the log forward.

    Metadata records sit close together between chunk records, so a replay of
    many TXN records costs a few large reads rather than one read per record.
    """

    WINDOW = 1 << 20

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seg = -1
        self.start = 0
        self.buf = b""

    def _span(self, seg: int, name: str, start: int, size: int) -> bytes:
        """Bytes [start, start + size) of a segment, through the window."""
        rel = start - self.start
        if seg != self.seg or rel < 0 or rel + size > len(self.buf):
            self.seg, self.start, rel = seg, start, 0
            self.buf = self.store.backend.read(name, start, max(self.WINDOW, size))
        if rel + size > len(self.buf):
            raise OSError(errno.EIO, f"segment {name}: record at offset {start + HASH_SIZE} "
                          "is cut short")
        return self.buf[rel : rel + size]

    def read(self, loc: int) -> tuple[int, Any]:
        """(type, decoded payload) of the record at ``loc``, its chain hash checked:
        a record damaged after it was written is an error, never wrong state."""
        seg, offset = loc >> _LOC_SHIFT, loc & _LOC_MASK
        name = self.store._segments[seg]
        start = offset - HASH_SIZE  # the previous hash sits right before every record
        try:
            head = self._span(seg, name, start, HASH_SIZE + RECORD_HEADER.size)
            magic, rtype, _flags, _logseq, length = RECORD_HEADER.unpack_from(head, HASH_SIZE)
            if magic != RECORD_MAGIC:
                raise OSError(errno.EIO, f"segment {name}: no record at offset {offset}")
            raw = self._span(seg, name, start, RECORD_OVERHEAD + length + HASH_SIZE)
        except OSError as e:
            raise StoreError(
                STORE_IO_ERROR, f"cannot read the log: {e.strerror or e}", e.errno
            ) from e
        damaged = f"segment {name}: the record at offset {offset} was damaged after it was " \
            "written; run `vegafs fsck`"
        if not verify_framed(raw):
            raise StoreError(STORE_IO_ERROR, damaged + " (checksum mismatch)", errno.EIO)
        try:
            return rtype, unpack(raw[HASH_SIZE + RECORD_HEADER.size : -HASH_SIZE])
        except Exception as e:  # a hash collision aside, unreachable: kept as a last guard
            raise StoreError(STORE_IO_ERROR, f"{damaged} ({e!r:.80})", errno.EIO) from e


@dataclass
class _Batch:
    """Ops and undo steps of the transactions of one ``Store.batch()`` block."""

    ops: list[list[Any]] = field(default_factory=list)
    undo: Undo = field(default_factory=list)


class Store(_StateReads):
    """An open store. See docs/architecture.md ("The store API") for the contract."""

    # ------------------------------------------------------------------ open

    def __init__(self, backend: Backend, read_only: bool) -> None:
        self.backend = backend
        self.read_only = read_only
        self.location = backend.location
        self._lock = threading.RLock()
        self._publish_lock = threading.RLock()
        self._ino_lock = threading.Lock()
        self._failed: str | None = None
        self._closed = False
        self._batch: _Batch | None = None  # see batch()
        self.taken_over_from: LockHolder | None = None
        self._compress = False
        self._zstd = threading.local()
        self.damage: list[str] | None = None
        self.damaged_regions: list[tuple[str, int, int | None]] = []
        self.quarantined: dict[str, str] = {}  # quarantine key -> what was copied
        self._pinned: str | None = None  # read-only at a snapshot (pin)
        # The head index a writer flushes to and its state's tables read
        # cold values from (opened at the first load or flush).
        self._index: HeadIndex | None = None
        self._reset_memory()

    def _reset_memory(self) -> None:
        self._state = State()
        self._next_ino = ROOT_INO + 1
        self._snapshots: dict[str, Snapshot] = {}
        self._annotations: dict[str, list[tuple[int, bytes]]] = {}
        self._rollbacks: list[RollbackInfo] = []
        self._chunks = ChunkIndex()
        self._chunk_bytes = 0
        self._segments: list[str] = []
        self._generation = 0
        self._gen_first_logseq = 1
        self._meta = ViewLocators()
        self._snapshot_states: dict[int, int] = {}
        self._head_base: tuple[int, int] | None = None
        self._head_logseq = 0
        self._published_logseq = 0
        self._tail = _Tail(0, SEGMENT_HEADER.size, ZERO_HASH)
        self._records = 0
        self._since_checkpoint = 0
        self._views: dict[int, State] = {}
        # Chunks put but not yet referenced by a committed set_blocks, with the
        # gc epoch of the put: the filesystem puts a block's chunk from a worker
        # thread and references it a moment later, and a gc in between must
        # not drop it. An entry survives one gc; a chunk nobody referenced by
        # the second gc after its put is garbage.
        self._pending: dict[bytes, int] = {}
        self._gc_epoch = 0

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | Backend,
        *,
        create: bool = False,
        read_only: bool = False,
        compression: str | None = None,
        repair: bool = False,
    ) -> Store:
        """Open (or with ``create=True`` create if absent) the store at ``path``.

        Write mode takes the one-writer lock; ``read_only`` takes no lock and
        shows the state at the last publish. ``compression`` ("zstd" or None)
        is chosen when the store is created and recorded in ``FORMAT``.
        ``repair`` (fsck --repair) opens a damaged log: damage is listed in
        ``store.damage`` instead of raised.
        """
        backend = path if isinstance(path, Backend) else open_backend(path)
        try:
            exists = backend.exists()
        except OSError as e:  # e.g. an object store that does not answer
            raise StoreError(
                STORE_IO_ERROR,
                f"cannot open the store at {backend.location}: {e.strerror or e}",
                e.errno,
            ) from e
        if not exists:
            if not create or read_only:
                raise StoreError(STORE_NOT_FOUND, f"no store at {backend.location}")
            if compression not in (None, "zstd"):
                raise ValueError(f"unknown compression {compression!r}")
            cls._create(backend, compression)
        store = cls(backend, read_only)
        if repair:
            store.damage = []
        try:
            store._open()
        except BaseException:
            backend.close()
            raise
        return store

    @classmethod
    def create(
        cls, path: str | os.PathLike[str] | Backend, compression: str | None = None
    ) -> Store:
        """Create a new store (``STORE_EXISTS`` if there is one) and open it for writing."""
        backend = path if isinstance(path, Backend) else open_backend(path)
        if backend.exists():
            raise StoreError(STORE_EXISTS, f"a store already exists at {backend.location}")
        return cls.open(backend, create=True, compression=compression)

    @staticmethod
    def _create(backend: Backend, compression: str | None) -> None:
        """Lay out an empty store: FORMAT, then the genesis segment, then MANIFEST."""
        try:
            backend.create(_format_bytes(compression))
            backend.acquire_lock()
            try:
                _write_genesis(backend)
            finally:
                backend.release_lock()
        except OSError as e:
            raise StoreError(
                STORE_IO_ERROR,
                f"cannot create store at {backend.location}: {e.strerror or e}",
                e.errno,
            ) from e

    def _finish_interrupted_create(self) -> bool:
        """A create that died between FORMAT and MANIFEST left no data: write the genesis again.

        Recognized strictly: no MANIFEST object and no segment other than the
        first one. Returns True if the store was completed.
        """
        if self.read_only or self.backend.get_object(MANIFEST_KEY) is not None:
            return False
        if set(self.backend.list_segments()) - {segment_name(0, 0)}:
            return False
        self.backend.delete_segment(segment_name(0, 0))
        _write_genesis(self.backend)
        return True

    def _open(self) -> None:
        fmt = self._io(self.backend.get_object, FORMAT_KEY)
        self._compress = _parse_format(fmt, self.location) == "zstd"
        if not self.read_only:
            self.taken_over_from = self.backend.acquire_lock()
            self._io(self._finish_interrupted_create)
        manifest = self._read_manifest()
        self._io(self._load, manifest)
        if not self.read_only and self._flush_due():
            self._write_checkpoint()

    def _read_manifest(self) -> dict[str, Any]:
        """MANIFEST, verified (its check value and segment names).

        In repair mode a damaged or absent MANIFEST is rebuilt from the
        segment files instead of refused.
        """
        raw = self._io(self.backend.get_object, MANIFEST_KEY)
        manifest = _parse_manifest(raw)
        if manifest is not None:
            return manifest
        what = "has no MANIFEST" if raw is None else "has a damaged MANIFEST"
        if self.damage is None:
            raise StoreError(
                STORE_IO_ERROR, f"store {self.location} {what} (run `vegafs fsck --repair`)"
            )
        return self._rebuild_manifest(what)

    def _rebuild_manifest(self, what: str) -> dict[str, Any]:
        """Repair: the oldest generation present is a complete log (gc deletes it only last)."""
        found: dict[int, list[tuple[int, str]]] = {}
        for name in self._io(self.backend.list_segments):
            parsed = parse_segment_name(name)
            if parsed is not None:
                found.setdefault(parsed[0], []).append((parsed[1], name))
        if not found:
            raise StoreError(STORE_IO_ERROR, f"store {self.location} {what} and no segments")
        gen = min(found)
        segments = [name for _seq, name in sorted(found[gen])]
        self._damage(
            f"store {what}; rebuilt it from the segment files (generation {gen}, "
            f"{len(segments)} segments)"
        )
        if not self.read_only:
            self._io(self.backend.put_object, MANIFEST_KEY, _manifest_bytes(gen, segments))
        return {"generation": gen, "segments": segments}

    def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a backend call, turning an OSError into STORE_IO_ERROR with its errno."""
        try:
            return fn(*args)
        except OSError as e:
            raise StoreError(
                STORE_IO_ERROR, f"store {self.location}: {e.strerror or e}", e.errno
            ) from e

    def _load(self, manifest: dict[str, Any]) -> None:
        """Rebuild memory from the checkpoint (if valid) and the log after it.

        Recovery rule: only records up to the LAST PUBLISH count. In write mode
        the unpublished tail of the active segment is truncated away. In repair
        mode (``self.damage`` is a list) damage is described there and skipped
        instead of raised, and the damaged byte ranges are kept in
        ``self.damaged_regions`` for quarantine.
        """
        salvage = self.damage
        self._reset_memory()
        gen = int(manifest["generation"])
        segments = [str(s) for s in manifest["segments"]]
        present = set(self._io(self.backend.list_segments))
        missing = [s for s in segments if s not in present]
        if missing:
            self._damage(f"segment(s) {', '.join(missing)} are missing from {self.location}")
        if not self.read_only and salvage is None:
            for name in sorted(present - set(segments)):
                if parse_segment_name(name) is not None:
                    self._io(self.backend.delete_segment, name)  # leftover of gc or a roll
        self._generation = gen
        self._segments = segments
        start_idx, start_off = 0, SEGMENT_HEADER.size
        chain: bytes | None = None
        cp = None if salvage is not None else self._load_checkpoint(gen, segments)
        last_pub: tuple[int, int, bytes] | None = None  # seg_idx, end, hash
        if cp is not None:
            start_idx, start_off, chain = cp
            last_pub = cp
        pending: list[tuple[Any, ...]] = []
        expect = self._head_logseq + 1
        last = len(segments) - 1
        torn_at: tuple[str, tuple[str, int, int | None]] | None = None
        for idx in range(start_idx, len(segments)):
            name = segments[idx]
            if name in missing:
                chain = None
                continue
            offset = start_off if idx == start_idx else SEGMENT_HEADER.size
            if idx != start_idx or cp is None:
                raw = self._io(self.backend.read, name, 0, SEGMENT_HEADER.size)
                header = SegmentHeader.decode(raw)
                if header is None:
                    self._damage(f"segment {name} has no valid segment header", (name, 0, None))
                    continue
                problem = header.problem(name, gen)
                if problem is None and chain is not None and header.prev_hash != chain:
                    problem = "does not continue the hash chain of the segment before it"
                elif problem is None and idx != 0 and header.first_logseq != expect:
                    problem = f"starts at logseq {header.first_logseq}, expected {expect}"
                if problem:
                    self._damage(f"segment {name} {problem}")
                chain = header.prev_hash
                if idx == 0 or problem:
                    expect = header.first_logseq
            else:
                # The index starts inside this segment: the chain comes from the
                # index, but the header's own fields are still checked.
                header = SegmentHeader.decode(self._io(self.backend.read, name, 0, SEGMENT_HEADER.size))
                problem = "has no valid segment header" if header is None else header.problem(name, gen)
                if problem:
                    self._damage(f"segment {name} {problem}")
            end = ScanEnd()
            assert chain is not None
            seg_base = idx << _LOC_SHIFT
            for rec in scan_segment(self.backend, name, offset, chain, end, resync=True):
                chain = rec.hash
                if rec.damaged:
                    message = (
                        f"segment {name} offset {rec.offset}: damaged "
                        f"{_type_name(rec.rtype)} record (logseq {rec.logseq})"
                    )
                    region = (name, rec.offset, rec.end)
                    expect = rec.logseq + 1
                    if idx != last:
                        self._damage(f"{message} in a sealed segment", region)
                    elif torn_at is None:
                        torn_at = (message, region)  # damage only if a PUBLISH follows
                    continue
                if rec.logseq != expect:
                    self._damage(
                        f"segment {name} offset {rec.offset}: logseq {rec.logseq}, expected {expect}"
                    )
                expect = rec.logseq + 1
                loc = seg_base | rec.offset
                if rec.rtype == PUBLISH:
                    if torn_at is not None:
                        self._damage(f"{torn_at[0]}, before a published record", torn_at[1])
                        torn_at = None
                    for item in pending:
                        self._replay(*item)
                    pending.clear()
                    self._replay(rec.rtype, rec.flags, rec.logseq, loc, rec.payload)
                    last_pub = (idx, rec.end, rec.hash)
                elif torn_at is not None and salvage is None:
                    continue
                else:
                    pending.append(rec.replay_entry(loc))
            if not end.clean and idx != last:
                self._damage(
                    f"segment {name} offset {end.offset}: {end.reason}",
                    (name, end.offset, None),
                )
        if last_pub is None:
            self._damage(f"store {self.location} holds no published record")
            last_pub = (last, SEGMENT_HEADER.size, chain or ZERO_HASH)
        if any(item[3] >> _LOC_SHIFT != last for item in pending):
            self._damage("unpublished records found in a sealed segment")
        pub_idx, pub_end, pub_hash = last_pub
        self._tail = _Tail(last, pub_end if pub_idx == last else SEGMENT_HEADER.size, pub_hash)
        if not self.read_only and segments[-1] not in missing:
            active = segments[-1]
            if self._io(self.backend.segment_size, active) != self._tail.end:
                faultpoints.hit("recovery.before_truncate")
                self._io(self.backend.truncate, active, self._tail.end)

    def _damage(self, message: str, region: tuple[str, int, int | None] | None = None) -> None:
        """Damage found while loading: raise, or in repair mode note it (and its bytes)."""
        if self.damage is None:
            raise StoreError(STORE_IO_ERROR, f"{message} (run `vegafs fsck --repair`)")
        self.damage.append(message)
        if region is not None:
            self.damaged_regions.append(region)
            if not self.read_only:
                self._quarantine(*region)

    def _quarantine(self, seg: str, start: int, end: int | None) -> None:
        """Copy damaged bytes to ``quarantine/`` now, before recovery may cut them off."""
        key = f"{QUARANTINE_PREFIX}{seg}.{start}.bin"
        try:
            size = self.backend.segment_size(seg)
            stop = size if end is None else min(end, size)
            data = self.backend.read(seg, start, max(0, stop - start))
            self.backend.put_object(key, data)
        except (StoreError, OSError) as e:
            self.quarantined[key] = f"could not copy damaged bytes of {seg} at {start}: {e}"
            return
        self.quarantined[key] = (
            f"{len(data)} damaged bytes of segment {seg} at offset {start} copied to {key}"
        )

    def _replay(
        self, rtype: int, flags: int, logseq: int, loc: int, payload: bytes, *extra: int
    ) -> None:
        """Apply one published record to memory (records are trusted: the chain verified them).

        A record that verifies but does not decode (written by a broken
        writer) is damage like any other, never a crash.
        """
        try:
            self._replay_record(rtype, flags, logseq, loc, payload, *extra)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            self._damage(f"logseq {logseq}: {_type_name(rtype)} record does not decode ({e})")

    def _replay_record(
        self, rtype: int, flags: int, logseq: int, loc: int, payload: bytes, *extra: int
    ) -> None:
        self._head_logseq = logseq
        self._records += 1
        self._since_checkpoint += 1
        if rtype == CHUNK:
            if payload not in self._chunks:
                self._chunks[payload] = loc
                self._chunk_bytes += extra[0] - HASH_SIZE
        elif rtype == TXN:
            ops = unpack(payload)
            if self.damage is None:
                self._apply_ops(ops, logseq, None)
            else:
                self._salvage_ops(ops, logseq)
            self._state.trim()
            self._meta.add(logseq, loc)
        elif rtype == PUBLISH:
            self._published_logseq = logseq
        elif rtype == SNAPSHOT:
            name, at, created = unpack(payload)
            self._snapshots[name] = Snapshot(name, at, created)
        elif rtype == SNAPSHOT_DELETE:
            (name,) = unpack(payload)
            self._snapshots.pop(name, None)
        elif rtype == ROLLBACK:
            target, name, pre_head = unpack(payload)
            self._meta.add(logseq, loc)
            self._state = self._state_at(target).copy()
            self._rollbacks.append(RollbackInfo(logseq, target, name, pre_head))
        elif rtype == STATE:
            self._replay_state(unpack(payload), logseq, loc)
        elif rtype == GENERATION:
            self._gen_first_logseq = logseq
        elif flags & FLAG_MUST_UNDERSTAND:
            raise StoreError(
                STORE_IO_ERROR,
                f"store {self.location}: record type {rtype} at logseq {logseq} needs a newer vegafs",
            )

    def _replay_state(self, obj: dict[str, Any], logseq: int, loc: int) -> None:
        if obj["role"] == "snapshot":
            self._snapshot_states[obj["at"]] = loc
            return
        self._state = State.from_obj(obj["state"])
        self._head_base = (logseq, loc)
        self._next_ino = max(self._next_ino, obj["next_ino"])
        self._snapshots = {s[0]: Snapshot(*s) for s in obj["snapshots"]}
        self._annotations = {k: [tuple(a) for a in v] for k, v in obj["annotations"].items()}

    def _salvage_ops(self, ops: list[list[Any]], logseq: int) -> None:
        """Repair-mode replay: apply what still makes sense, note what does not."""
        for op in ops:
            undo: Undo = []
            try:
                self._state.apply(op, undo, None)
            except (TxnError, KeyError, TypeError, ValueError) as e:
                for fn in reversed(undo):
                    fn()
                self.damage.append(f"logseq {logseq}: op {op[0]} cannot be applied ({e})")  # type: ignore[union-attr]
                continue
            if op[0] == OP_CREATE and op[1] >= self._next_ino:
                self._next_ino = op[1] + 1
            elif op[0] == OP_ANNOTATE:
                self._annotations.setdefault(op[1], []).append((logseq, op[2]))

    def _apply_ops(self, ops: list[list[Any]], logseq: int, undo: Undo | None) -> None:
        state = self._state
        has_chunk = self._chunks.__contains__
        for op in ops:
            state.apply(op, undo, has_chunk)
            if op[0] == OP_CREATE and op[1] >= self._next_ino:
                self._next_ino = op[1] + 1
            elif op[0] == OP_ANNOTATE and undo is None:
                self._annotations.setdefault(op[1], []).append((logseq, op[2]))

    # ------------------------------------------------------------ checkpoints

    def _load_checkpoint(self, gen: int, segments: list[str]) -> tuple[int, int, bytes] | None:
        """Restore memory from the head index if it matches the log; else None.

        A writer keeps the index open: its state's tables read cold values
        from it. A read-only store (a follower: the writer may commit to the
        index at any time) copies the rows into memory in one read transaction.
        """
        try:
            if self.read_only:
                index = HeadIndex.open(self.backend.index_dir(), read_only=True)
                if index is None:
                    return None
                try:
                    raw, tables = index.snapshot()
                finally:
                    index.close()
            else:
                index = self._writable_index()
                raw, tables = (None, {}) if index is None else (index.body(), {})
            if raw is None:
                return None
            if len(raw) < HASH_SIZE or blake3.blake3(raw[HASH_SIZE:]).digest() != raw[:HASH_SIZE]:
                return None
            cp = unpack(raw[HASH_SIZE:])
            if (
                cp["format"] != FORMAT_VERSION
                or cp.get("layout") != CHECKPOINT_LAYOUT
                or cp["generation"] != gen
            ):
                return None
            seg_idx, offset, chain = cp["seg_idx"], cp["offset"], cp["hash"]
            if cp["segments"] != segments[: seg_idx + 1]:
                return None
            name = segments[seg_idx]
            if self.backend.segment_size(name) < offset:
                return None
            if self.backend.read(name, offset - HASH_SIZE, HASH_SIZE) != chain:
                return None
            if self.read_only:
                chunks = ChunkIndex.from_rows(sorted(tables["chunks"].items()))
                meta = ViewLocators.from_rows(sorted(tables["meta"].items()))
            else:
                assert index is not None
                chunks = ChunkIndex.from_base(index)
                meta = ViewLocators.from_rows(index.items("meta"), index)
            self._restore_checkpoint(cp, chunks, meta)
            if self.read_only:
                self._state = State.from_tables(tables["inodes"], tables["dirs"])
            else:
                assert index is not None
                # Every row read once, checksums checked, nothing kept: damage to
                # this derived file is found here, where the log can stand in for
                # it (a replay), not at some later read in the middle of an
                # operation, where it could only fail that operation.
                for table in ("inodes", "dirs"):
                    for _row in index.items(table):
                        pass
                self._state.attach(index)
        except (StoreError, OSError, ValueError, KeyError, TypeError, IndexError):
            self._reset_memory()
            self._generation, self._segments = gen, segments
            return None
        return seg_idx, offset, chain

    def _flush_due(self) -> bool:
        """Whether a publish flushes the head index (a checkpoint) now."""
        return (
            self._since_checkpoint >= CHECKPOINT_INTERVAL
            or self._state.unsaved() >= FLUSH_CHANGED
        )

    def _writable_index(self) -> HeadIndex | None:
        """The writer's head index, opened (or created) once; None without a local index dir.

        A file SQLite cannot even open is deleted and a new one created: it is
        derived, and without an index the writer's memory would hold every value.
        """
        if self._index is None:
            directory = self.backend.index_dir()
            self._index = HeadIndex.open(directory, read_only=False)
            if self._index is None and directory is not None:
                with contextlib.suppress(OSError):
                    headindex.remove(directory)
                self._index = HeadIndex.open(directory, read_only=False)
        return self._index

    def _has_index(self) -> bool:
        """Whether a head index exists (fsck compares it with a replay of the log)."""
        directory = self.backend.index_dir()
        return directory is not None and (directory / INDEX_NAME).exists()

    def _drop_index(self) -> None:
        """Delete the head index (repair rebuilds it); memory stops reading from it first."""
        self._state.inodes.detach()
        self._state.dirs.detach()
        self._chunks.detach()
        self._meta.detach()
        if self._index is not None:
            self._index.close()
            self._index = None
        directory = self.backend.index_dir()
        if directory is not None:
            headindex.remove(directory)

    def _restore_checkpoint(
        self, cp: dict[str, Any], chunks: ChunkIndex, meta: ViewLocators
    ) -> None:
        self._next_ino = cp["next_ino"]
        self._snapshots = {s[0]: Snapshot(*s) for s in cp["snapshots"]}
        self._annotations = {k: [tuple(a) for a in v] for k, v in cp["annotations"].items()}
        self._rollbacks = [RollbackInfo(*r) for r in cp["rollbacks"]]
        self._chunks = chunks
        self._chunk_bytes = cp["chunk_bytes"]
        self._gen_first_logseq = cp["gen_first_logseq"]
        self._meta = meta
        self._snapshot_states = cp["snapshot_states"]
        self._head_base = tuple(cp["head_base"]) if cp["head_base"] else None
        self._head_logseq = self._published_logseq = cp["logseq"]
        self._records = cp["records"]
        self._since_checkpoint = 0

    def _write_checkpoint(self) -> None:
        """Flush the head index at the current (published) position.

        One SQLite transaction writes the state's rows changed since the last
        flush (all of them after a rollback or a fresh replay) and the rest of
        the checkpoint map with the log position, so the index never holds an
        unpublished state. Derived data: a failure here is not an error of
        the store, only a slower next open (memory keeps the changes and the
        next flush retries), so I/O errors are swallowed after the fault point.
        """
        with self._publish_lock, self._lock:
            if self.dirty or self._failed or self.read_only:
                return
            index = self._writable_index()
            if index is None:
                return
            faultpoints.hit("checkpoint.before_write")
            tail = self._tail
            cp = {
                "format": FORMAT_VERSION,
                "layout": CHECKPOINT_LAYOUT,
                "generation": self._generation,
                "segments": self._segments[: tail.seg_idx + 1],
                "seg_idx": tail.seg_idx,
                "offset": tail.end,
                "hash": tail.last_hash,
                "logseq": self._head_logseq,
                "records": self._records,
                "next_ino": self._next_ino,
                "snapshots": [[s.name, s.logseq, s.created_ns] for s in self._snapshots.values()],
                "annotations": self._annotations,
                "rollbacks": [[r.logseq, r.target, r.name, r.pre_head] for r in self._rollbacks],
                "chunk_bytes": self._chunk_bytes,
                "gen_first_logseq": self._gen_first_logseq,
                "snapshot_states": self._snapshot_states,
                "head_base": list(self._head_base) if self._head_base else None,
            }
            body = pack(cp)
            del cp
            changes = self._state.changes()
            whole = changes["inodes"][0]  # a whole new state: into a new file
            if whole:  # the old file goes: memory must stop reading it first
                self._chunks.detach()
                self._meta.detach()
            changes["chunks"] = self._chunks.changes(whole)
            changes["meta"] = self._meta.changes(whole)
            try:
                if whole:
                    self._index = None
                    self._index = index = index.recreate()
                index.write(changes, blake3.blake3(body).digest() + body)
            except OSError:
                pass
            else:
                self._state.attach(index)
                self._chunks.saved(index)
                self._meta.saved(index)
                self._since_checkpoint = 0
                if whole:  # a leftover of checkpoint layouts 1-2 goes
                    with contextlib.suppress(OSError):
                        self.backend.delete_object(CHECKPOINT_KEY)
            del body, changes
            release_free_memory()
            faultpoints.hit("checkpoint.after_write")

    # ----------------------------------------------------------------- state

    ROOT_INO = ROOT_INO

    def alloc_ino(self) -> int:
        self._check_writable()
        with self._ino_lock:
            ino = self._next_ino
            self._next_ino += 1
            return ino

    @property
    def head_logseq(self) -> int:
        return self._head_logseq

    @property
    def published_logseq(self) -> int:
        return self._published_logseq

    @property
    def dirty(self) -> bool:
        return self._head_logseq > self._published_logseq

    @property
    def compression(self) -> str | None:
        return "zstd" if self._compress else None

    # --------------------------------------------------------------- writing

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(
                STORE_IO_ERROR, f"store {self.location} is open read-only", errno.EROFS
            )
        if self._closed:
            raise StoreError(STORE_IO_ERROR, f"store {self.location} is closed")
        if self._failed:
            raise StoreError(STORE_IO_ERROR, self._failed)

    def _append(
        self,
        rtype: int,
        payload: bytes,
        flags: int = 0,
        chunk: tuple[bytes, bytes] | None = None,
    ) -> tuple[int, int]:
        """Append one record at the tail (caller holds ``_lock``); returns (logseq, locator).

        For a CHUNK, ``payload`` is the stored body and ``chunk`` is
        (content hash, BLAKE3 of the body), so the record is framed without
        hashing or copying the data again.
        """
        self._check_writable()
        tail = self._tail
        logseq = self._head_logseq + 1
        if chunk is not None:
            rec, digest = encode_chunk(flags, logseq, chunk[0], payload, chunk[1], tail.last_hash)
        else:
            rec, digest = encode_record(rtype, flags, logseq, payload, tail.last_hash)
        name = self._segments[tail.seg_idx]
        try:
            faultpoints.hit("append.before_write")
            self.backend.append(name, rec)
        except OSError as e:
            self._restore_tail(name, e)
            raise StoreError(
                STORE_IO_ERROR,
                f"cannot append to store {self.location}: {e.strerror or e}",
                e.errno,
            ) from e
        loc = _loc(tail.seg_idx, tail.end)
        tail.end += len(rec)
        tail.last_hash = digest
        self._head_logseq = logseq
        self._records += 1
        self._since_checkpoint += 1
        return logseq, loc

    def _fail_sticky(self, what: str, cause: OSError) -> str:
        """Stop accepting writes for good (the on-disk tail is no longer known to be
        consistent): every later write fails with this message until a reopen."""
        self._failed = (
            f"store {self.location} stopped accepting writes: {what} "
            f"({cause.strerror or cause}); reopen it to recover at the last publish"
        )
        return self._failed

    def _restore_tail(self, name: str, cause: OSError) -> None:
        """After a failed append, cut the segment back to the last good record or fail sticky."""
        try:
            self.backend.truncate(name, self._tail.end)
        except OSError as e:
            self._fail_sticky(
                f"a failed append ({cause.strerror or cause}) could not be undone", e
            )

    def transaction(self) -> Transaction:
        return Transaction(self)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Log every transaction of the block as ONE TXN record, when it exits.

        Why: an upper layer (the hooks) sometimes needs several transactions,
        each built by code that reads the head the previous one left, to be
        all-or-nothing after a crash. Inside the block each transaction is
        applied to the head at once, as usual, but appended only at the end,
        all ops in order in one record. An exception escaping the block, or a
        failed append, undoes every one of them. Transactions inside have
        ``logseq`` None. A nested batch joins the outer one.

        Holds ``_lock`` for the whole block, so no other thread appends (nor
        checkpoints a head that is ahead of the log) meanwhile: keep the block
        short, and never wait in it for another thread that writes.
        """
        if self._batch is not None:
            yield
            return
        self._check_writable()
        with self._lock:
            batch = self._batch = _Batch()
            # The batch's undo steps hold inodes until its record is logged:
            # nothing may be re-packed (detached) before then, not even by reads.
            self._committing = True
            try:
                try:
                    yield
                except BaseException:
                    self._undo(batch.undo)
                    raise
                if batch.ops:
                    try:
                        logseq, loc = self._append(TXN, pack(batch.ops))
                    except BaseException:
                        self._undo(batch.undo)
                        raise
            finally:
                self._batch = None
                self._committing = False
            if batch.ops:
                self._logged(logseq, loc, batch.ops)

    @staticmethod
    def _undo(undo: Undo) -> None:
        for fn in reversed(undo):
            fn()

    def _commit(self, ops: list[list[Any]]) -> int | None:
        """Apply ``ops`` to the head (validated, undoable), then append their TXN
        record (inside a batch: remember them for the batch's record; None)."""
        self._check_writable()
        if not ops:
            return self._head_logseq
        with self._lock:
            batch = self._batch  # set only by the thread holding _lock: this one
            undo: Undo = []
            committing, self._committing = self._committing, True
            try:
                self._apply_ops(ops, 0, undo)
                if batch is None:
                    logseq, loc = self._append(TXN, pack(ops))
            except BaseException:
                self._undo(undo)
                raise
            finally:
                self._committing = committing
            if batch is not None:
                batch.ops += ops
                batch.undo += undo
                return None
            self._logged(logseq, loc, ops)
            return logseq

    def _logged(self, logseq: int, loc: int, ops: list[list[Any]]) -> None:
        """Bookkeeping once a TXN record is in the log (caller holds ``_lock``).

        Also the point where the head re-packs what it decoded beyond its
        limits: no transaction's undo steps hold inodes any more.
        """
        self._meta.add(logseq, loc)
        self._state.trim()
        pending = self._pending
        for op in ops:
            if op[0] == OP_ANNOTATE:
                self._annotations.setdefault(op[1], []).append((logseq, op[2]))
            elif op[0] == OP_SET_BLOCKS and pending:
                for h in op[2].values():
                    if h is not None:
                        pending.pop(h, None)

    def _compressor(self) -> zstandard.ZstdCompressor:
        c = getattr(self._zstd, "c", None)
        if c is None:
            c = self._zstd.c = zstandard.ZstdCompressor(level=1)
        return c

    def put_chunk(self, data: bytes) -> bytes:
        """Store ``data`` (at most BLOCK_SIZE bytes) once; return its blake3 hash."""
        if len(data) > BLOCK_SIZE:
            raise ValueError(f"a chunk holds at most {BLOCK_SIZE} bytes, got {len(data)}")
        h = blake3.blake3(data, max_threads=_hash_threads(len(data))).digest()
        self._pending[h] = self._gc_epoch
        if h in self._chunks:
            return h
        body, flags, body_hash = data if type(data) is bytes else bytes(data), 0, h
        if self._compress:
            packed = self._compressor().compress(body)
            if len(packed) < len(body):
                body, flags = packed, FLAG_ZSTD
                body_hash = blake3.blake3(body).digest()
        with self._lock:
            if h in self._chunks:
                return h
            _logseq, loc = self._append(CHUNK, body, flags, chunk=(h, body_hash))
            self._chunks[h] = loc
            self._chunk_bytes += len(body)
        return h

    def has_chunk(self, h: bytes) -> bool:
        return h in self._chunks

    def read_chunk(self, h: bytes) -> bytes:
        """The data of chunk ``h``, verified against its hash."""
        for attempt in (0, 1):
            segments, chunks = self._segments, self._chunks
            loc = chunks.get(h)
            if loc is None:
                raise StoreError(
                    STORE_NOT_FOUND, f"chunk {h.hex()} is not in store {self.location}"
                )
            try:
                # IndexError: gc switched generations between our two reads
                # (the index, on disk, already names the new segments).
                name = segments[loc >> _LOC_SHIFT]
                flags, data = self._read_chunk_record(name, loc & _LOC_MASK, h)
                return self._chunk_data(h, flags, data, name)
            except (OSError, StoreError, IndexError) as e:
                # gc moved the chunk while we looked (it may even have closed
                # the segment between our two reads): read its new place. The
                # same failure with no gc in between is real damage.
                if attempt == 0 and segments is not self._segments:
                    continue
                if isinstance(e, IndexError):
                    raise StoreError(
                        STORE_IO_ERROR, f"chunk {h.hex()}: locator {loc:#x} names no segment"
                    ) from e
                if isinstance(e, StoreError):
                    raise
                raise StoreError(
                    STORE_IO_ERROR, f"cannot read chunk {h.hex()}: {e.strerror or e}", e.errno
                ) from e
        raise AssertionError("unreachable")

    def read_chunks_into(self, wanted: Sequence[tuple[bytes, memoryview]]) -> None:
        """Read chunk ``h`` into ``view`` for each pair of ``wanted``, verified.

        Each view is at least as long as its chunk (a whole block: callers pass
        ``BLOCK_SIZE`` bytes); it ends up holding the chunk's content, then
        zeros. Why: a cold sequential reader wants whole blocks in one reply
        buffer. Chunks that sit next to each other in a segment (a file written
        in order) are read with one backend call that scatters each record's
        data straight into its view and its framing into scratch, so the bytes
        move once (no bytes object per chunk, no join) and the disk sees one
        large read. Every chunk is still checked against its BLAKE3 hash; one
        whose framing is not where the neighbours' locators put it (compressed,
        moved by gc meanwhile, damaged) is read again alone by
        :meth:`read_chunk`, which reports real damage.
        """
        chunks, segments = self._chunks, self._segments
        run: list[tuple[bytes, memoryview, int]] = []
        first: dict[bytes, memoryview] = {}
        repeats: list[tuple[memoryview, memoryview]] = []  # a file of equal blocks: read once
        for h, view in wanted:
            if h in first:
                repeats.append((view, first[h]))
                continue
            first[h] = view
            loc = chunks.get(h)
            if loc is None:
                self._read_run(segments, run)
                run = []
                self._read_chunk_into(h, view)
                continue
            if run:
                prev_loc = run[-1][2]
                gap = loc - prev_loc - RECORD_OVERHEAD - HASH_SIZE
                if (
                    loc >> _LOC_SHIFT != prev_loc >> _LOC_SHIFT
                    or not 0 <= gap <= len(run[-1][1])
                    or len(run) >= _RUN_MAX
                ):
                    self._read_run(segments, run)
                    run = []
            run.append((h, view, loc))
        self._read_run(segments, run)
        for view, done in repeats:
            n = min(len(view), len(done))  # the rest of ``done`` is zeros
            view[:n] = done[:n]
            _zero_after(view, n)

    def _read_run(self, segments: list[str], run: list[tuple[bytes, memoryview, int]]) -> None:
        """One backend read for chunk records laid out back to back (see read_chunks_into)."""
        if not run:
            return
        heads = memoryview(bytearray(RECORD_OVERHEAD * len(run)))
        chain = memoryview(bytearray(HASH_SIZE))  # the chain hash after each record: skipped
        buffers: list[memoryview] = []
        sizes: list[int] = []
        for i, (_h, view, loc) in enumerate(run):
            buffers.append(heads[i * RECORD_OVERHEAD : (i + 1) * RECORD_OVERHEAD])
            size = run[i + 1][2] - loc - RECORD_OVERHEAD - HASH_SIZE if i + 1 < len(run) else len(view)
            buffers.append(view[:size])
            sizes.append(size)
            if i + 1 < len(run):
                buffers.append(chain)
        try:
            name = segments[run[0][2] >> _LOC_SHIFT]  # IndexError: see read_chunk
            got = self.backend.readinto(name, run[0][2] & _LOC_MASK, buffers)
        except (OSError, StoreError, IndexError):
            got = 0  # each chunk is read alone below, which tells gc from damage
        pos = 0
        for i, (h, view, _loc) in enumerate(run):
            head = heads[i * RECORD_OVERHEAD : (i + 1) * RECORD_OVERHEAD]
            last = i + 1 == len(run)
            pos += RECORD_OVERHEAD
            try:
                magic, rtype, flags, _logseq, length = RECORD_HEADER.unpack_from(head)
                stored = length - HASH_SIZE
                if (
                    magic != RECORD_MAGIC
                    or rtype != CHUNK
                    or head[RECORD_HEADER.size :] != h
                    or not 0 <= stored <= sizes[i]
                    or (stored != sizes[i] and not last)
                    or pos + stored > got
                ):
                    raise StoreError(STORE_IO_ERROR, "not where its neighbours put it")
                # any buffer does for blake3 and zstd; plain data stays a view of ``view``
                data = self._chunk_data(h, flags, cast(bytes, view[:stored]), name)
            except StoreError:
                self._read_chunk_into(h, view)
            else:
                if flags & FLAG_ZSTD:  # decompressed elsewhere; plain data is in place
                    view[: len(data)] = data
                _zero_after(view, len(data))
            pos += sizes[i] + (0 if last else HASH_SIZE)

    def _read_chunk_into(self, h: bytes, view: memoryview) -> None:
        data = self.read_chunk(h)
        view[: len(data)] = data
        _zero_after(view, len(data))

    def _read_chunk_record(self, name: str, offset: int, h: bytes) -> tuple[int, bytes]:
        """(flags, stored data) of the CHUNK record for ``h`` at ``offset``.

        Two reads, the header with the content hash and then exactly the
        stored data, so the data is the very bytes object the backend
        returned: a sequential reader of a cold file moves each byte once
        less than with one read and a slice (copies, not hashing, bound the
        mount's cold reads).
        """
        head = self.backend.read(name, offset, RECORD_HEADER.size + HASH_SIZE)
        if len(head) < RECORD_HEADER.size + HASH_SIZE:
            raise OSError(5, f"segment {name}: short read at offset {offset}")
        magic, rtype, flags, _logseq, length = RECORD_HEADER.unpack_from(head)
        if magic != RECORD_MAGIC:
            raise OSError(5, f"segment {name}: no record at offset {offset}")
        if rtype != CHUNK or length < HASH_SIZE or head[RECORD_HEADER.size :] != h:
            raise StoreError(
                STORE_IO_ERROR, f"chunk {h.hex()}: index points at another record ({name})"
            )
        size = length - HASH_SIZE
        data = self.backend.read(name, offset + len(head), size) if size else b""
        if len(data) < size:
            raise OSError(5, f"segment {name}: record at offset {offset} is cut short")
        return flags, data

    def _decode_chunk(self, h: bytes, rtype: int, flags: int, payload: bytes, where: str) -> bytes:
        if rtype != CHUNK or payload[:HASH_SIZE] != h:
            raise StoreError(
                STORE_IO_ERROR, f"chunk {h.hex()}: index points at another record ({where})"
            )
        return self._chunk_data(h, flags, payload[HASH_SIZE:], where)

    def _chunk_data(self, h: bytes, flags: int, data: bytes, where: str) -> bytes:
        """The content of a chunk record's stored ``data``: decompressed, hash-verified."""
        if flags & FLAG_ZSTD:
            try:
                data = zstandard.ZstdDecompressor().decompress(data, max_output_size=BLOCK_SIZE)
            except zstandard.ZstdError as e:
                raise StoreError(STORE_IO_ERROR, f"chunk {h.hex()} is damaged: {e}") from e
        if blake3.blake3(data).digest() != h:
            raise StoreError(
                STORE_IO_ERROR, f"chunk {h.hex()} is damaged (hash mismatch in {where})"
            )
        return data

    def publish(self) -> int:
        """Make every record appended so far durable; returns the published logseq.

        A read-only store has nothing to make durable (a read-only mount's
        sync and unmount call this too): it returns its published logseq.
        """
        if self.read_only and not self._closed:
            return self._published_logseq
        self._check_writable()
        with self._publish_lock:
            flush = self._flush_due()
            with self._lock:
                if not self.dirty:
                    return self._published_logseq
                faultpoints.hit("publish.before_write")
                logseq, _loc_ = self._append(PUBLISH, pack({"time_ns": self.backend.clock_ns()}))
                name = self._segments[self._tail.seg_idx]
                pub_end = self._tail.end
            # A due flush holds appends off across the fsync: the head index
            # takes only a published state, and under a steady stream of
            # writes the store was dirty again whenever the fsync returned, so
            # the flush was skipped publish after publish and memory held
            # every change since the last one (the soak's RSS climbed with the
            # files written). The flush's own SQLite commit holds them off anyway.
            with self._lock if flush else contextlib.nullcontext():
                faultpoints.hit("publish.before_sync")
                try:
                    self.backend.sync(name)
                except OSError as e:
                    raise StoreError(
                        STORE_IO_ERROR, self._fail_sticky("fsync failed", e), e.errno
                    ) from e
                faultpoints.hit("publish.after_sync")
                with self._lock:
                    self._published_logseq = max(self._published_logseq, logseq)
                    if self._tail.end == pub_end and pub_end >= SEGMENT_TARGET:
                        self._roll()
                if flush or self._flush_due():
                    self._write_checkpoint()
            return logseq

    def _roll(self) -> None:
        """Start the next segment, then seal the full one (which ends with a PUBLISH).

        Order: create the new segment, name it in MANIFEST, switch, seal the
        old one. A failure before the switch (ENOSPC...) changes nothing: the
        partial new segment is removed and the roll is retried at the next
        publish. Sealing comes last so that a sealed segment is never written
        again (an object store uploads it once, at seal).
        """
        tail = self._tail
        old = self._segments[tail.seg_idx]
        new = segment_name(self._generation, tail.seg_idx + 1)
        header = SegmentHeader(
            self._generation, tail.seg_idx + 1, self._head_logseq + 1, tail.last_hash
        )
        segments = [*self._segments, new]
        try:
            self.backend.delete_segment(new)
            self.backend.create_segment(new, header.encode())
            faultpoints.hit("segment.after_create")
            self.backend.put_object(MANIFEST_KEY, _manifest_bytes(self._generation, segments))
        except OSError:
            with contextlib.suppress(OSError):
                self.backend.delete_segment(new)
            return
        faultpoints.hit("segment.after_manifest")
        self._segments = segments
        self._tail = _Tail(tail.seg_idx + 1, SEGMENT_HEADER.size, tail.last_hash)
        faultpoints.hit("segment.before_seal")
        try:
            self.backend.seal(old)
        except OSError as e:
            raise StoreError(
                STORE_IO_ERROR, self._fail_sticky(f"sealing segment {old} failed", e), e.errno
            ) from e

    # ------------------------------------------------------- snapshots, views

    def create_snapshot(self, name: str) -> Snapshot:
        """Name the current published state; O(1): one SNAPSHOT record."""
        _check_snapshot_name(name)
        self._check_writable()
        with self._publish_lock:
            if name in self._snapshots:
                raise StoreError(STORE_EXISTS, f"snapshot {name!r} already exists")
            at = self.publish()
            faultpoints.hit("snapshot.before_record")
            snap = Snapshot(name, at, self.backend.clock_ns())
            with self._lock:
                self._append(SNAPSHOT, pack([snap.name, snap.logseq, snap.created_ns]))
                self._snapshots[name] = snap
            self.publish()
            faultpoints.hit("snapshot.after_publish")
            return snap

    def list_snapshots(self) -> list[Snapshot]:
        return sorted(self._snapshots.values(), key=lambda s: (s.logseq, s.name))

    def get_snapshot(self, name: str) -> Snapshot:
        snap = self._snapshots.get(name)
        if snap is None:
            raise StoreError(STORE_NOT_FOUND, f"no snapshot named {name!r}")
        return snap

    def delete_snapshot(self, name: str) -> None:
        self._check_writable()
        with self._publish_lock:
            self.get_snapshot(name)
            faultpoints.hit("snapshot_delete.before_record")
            with self._lock:
                self._append(SNAPSHOT_DELETE, pack([name]))
                del self._snapshots[name]
            self.publish()

    def rollback(self, name: str) -> int:
        """Make the head the state of snapshot ``name`` (one ROLLBACK record); returns its logseq."""
        snap = self.get_snapshot(name)
        return self._rollback(snap.logseq, name)

    def rollback_to(self, logseq: int) -> int:
        """Roll back (or forward) to any published logseq of this generation.

        This is how a rollback is undone: ``rollback_to(info.pre_head)`` with
        ``info`` from :meth:`rollbacks`.
        """
        return self._rollback(logseq, None)

    def _rollback(self, target: int, name: str | None) -> int:
        self._check_writable()
        with self._publish_lock:
            pre_head = self.publish()
            if target > pre_head:
                raise StoreError(
                    STORE_NOT_FOUND, f"logseq {target} is beyond the head ({pre_head})"
                )
            state = self._state_at(target).copy()
            faultpoints.hit("rollback.before_record")
            with self._lock:
                logseq, loc = self._append(ROLLBACK, pack([target, name, pre_head]))
                self._meta.add(logseq, loc)
                self._state = state
                self._rollbacks.append(RollbackInfo(logseq, target, name, pre_head))
            self.publish()
            faultpoints.hit("rollback.after_publish")
            return logseq

    def rollbacks(self) -> list[RollbackInfo]:
        return list(self._rollbacks)

    def view(self, name: str) -> StoreView:
        snap = self.get_snapshot(name)
        return StoreView(self, self._state_at(snap.logseq), snap.logseq, name)

    def view_at(self, logseq: int) -> StoreView:
        """A read-only view of the state at any published logseq still in the log."""
        return StoreView(self, self._state_at(logseq), logseq, None)

    def _state_at(self, logseq: int) -> State:
        """The state after every record up to ``logseq`` (shared: callers must not mutate it)."""
        cached = self._views.get(logseq)
        if cached is not None:
            return cached
        loc = self._snapshot_states.get(logseq)
        if loc is not None:
            state = State.from_obj(self._read_meta(loc)["state"])
        else:
            base_logseq = 0
            if self._head_base is not None:
                base_logseq, base_loc = self._head_base
            if logseq < max(base_logseq, self._gen_first_logseq):
                raise StoreError(
                    STORE_NOT_FOUND,
                    f"the state at logseq {logseq} is no longer in the log (gc compacted it)",
                )
            if logseq > self._head_logseq:
                raise StoreError(STORE_NOT_FOUND, f"logseq {logseq} is beyond the head")
            # Start from the nearest state already known: a cached view at or
            # before ``logseq`` (copied), else the generation's base.
            near = max((b for b in self._views if base_logseq <= b < logseq), default=None)
            if near is not None:
                state, base_logseq = self._views[near].copy(), near
            elif self._head_base is not None:
                state = State.from_obj(self._read_meta(base_loc)["state"])
            else:
                state = State()
            meta = self._meta
            reader = _WindowReader(self)
            for seq, loc in meta.entries(meta.bisect(base_logseq), meta.bisect(logseq)):
                rtype, obj = reader.read(loc)
                if rtype == TXN:
                    self._replay_ops_into(state, obj, seq)
                else:
                    state = self._state_at(obj[0]).copy()
        if len(self._views) >= _VIEW_CACHE:
            self._views.pop(next(iter(self._views)))
        self._views[logseq] = state
        return state

    def _replay_ops_into(self, state: State, ops: list[list[Any]], logseq: int) -> None:
        """Apply a logged TXN to a view's state; in repair mode skip what no longer applies."""
        for op in ops:
            try:
                if self.damage is None:
                    state.apply(op, None)
                else:
                    undo: Undo = []
                    try:
                        state.apply(op, undo, None)
                    except TxnError:
                        for fn in reversed(undo):
                            fn()
            except (KeyError, AttributeError, TypeError, ValueError, IndexError) as e:
                raise StoreError(
                    STORE_IO_ERROR,
                    f"store {self.location}: the log does not replay at logseq {logseq} ({e!r}); "
                    "run `vegafs fsck --repair`",
                ) from e
        state.trim()

    def _read_meta_typed(self, loc: int) -> tuple[int, Any]:
        return _WindowReader(self).read(loc)

    def _read_meta(self, loc: int) -> Any:
        return self._read_meta_typed(loc)[1]

    def iter_meta(self) -> Iterator[tuple[int, int, Any]]:
        """(logseq, type, decoded payload) of every TXN/ROLLBACK record of this generation."""
        reader = _WindowReader(self)
        for logseq, loc in self._meta.entries():
            rtype, obj = reader.read(loc)
            yield logseq, rtype, obj

    def file_versions(self, ino: int) -> list[FileVersion]:
        """Every data version of ``ino`` still in the log, newest first.

        Versions come from ``set_blocks`` ops (and the state at the start of
        this generation); a rollback can bring a version number back, so two
        entries may share a number: they differ by logseq.
        """
        versions: list[FileVersion] = []
        current: dict[int, bytes] | None = None
        size = 0
        version = 0
        if self._head_base is not None:
            base = State.from_obj(self._read_meta(self._head_base[1])["state"])
            inode = base.inodes.get(ino)
            if inode is not None and stat.S_ISREG(inode.mode):
                current, size, version = dict(inode.blocks), inode.size, inode.version
                versions.append(FileVersion(version, self._head_base[0], size, dict(current)))
        for logseq, rtype, obj in self.iter_meta():
            if rtype == ROLLBACK:
                inode = self._state_at(obj[0]).inodes.get(ino)
                if inode is None:
                    current = None
                else:
                    current, size, version = dict(inode.blocks), inode.size, inode.version
                continue
            for op in obj:
                if op[1] != ino:
                    continue
                code = op[0]
                if code == OP_CREATE:
                    current, size, version = {}, 0, 0
                elif code == OP_DELETE:
                    current = None
                elif code == OP_UPDATE and current is not None and "size" in op[2]:
                    size = op[2]["size"]
                    nblocks = -(-size // BLOCK_SIZE)
                    current = {i: h for i, h in current.items() if i < nblocks}
                elif code == OP_SET_BLOCKS and current is not None:
                    for index, h in op[2].items():
                        if h is None:
                            current.pop(index, None)
                        else:
                            current[index] = h
                    size = op[3]
                    nblocks = -(-size // BLOCK_SIZE)
                    current = {i: h for i, h in current.items() if i < nblocks}
                    version += 1
                    versions.append(FileVersion(version, logseq, size, dict(current)))
        versions.reverse()
        return versions

    def annotations(self, kind: str) -> list[tuple[int, bytes]]:
        return list(self._annotations.get(kind, ()))

    # ------------------------------------------------------------ gc, fsck

    def gc(self, progress: Progress | None = None) -> Any:
        from vegafs.store.gc import run_gc

        return run_gc(self, progress)

    def fsck(self, repair: bool = False, progress: Progress | None = None) -> Any:
        from vegafs.store.fsck import Fsck

        return self._io(Fsck(self, repair=repair, progress=progress).run)

    def stats(self) -> dict[str, Any]:
        state = self._state
        logical = sum(i.size for i in state.inodes.values() if stat.S_ISREG(i.mode))
        refs = sum(len(i.blocks) for i in state.inodes.values())
        sizes = []
        for name in self._segments:
            with contextlib.suppress(StoreError, OSError):
                sizes.append(self.backend.segment_size(name))
        return {
            "location": self.location,
            "format_version": FORMAT_VERSION,
            "generation": self._generation,
            "store_bytes": sum(sizes),
            "segments": len(self._segments),
            "records": self._records,
            "chunks": len(self._chunks),
            "chunk_bytes": self._chunk_bytes,
            "logical_bytes": logical,
            "block_refs": refs,
            "dedup_ratio": round(refs / len(self._chunks), 3) if self._chunks else 1.0,
            "inodes": len(state.inodes),
            "head_logseq": self._head_logseq,
            "published_logseq": self._published_logseq,
            "snapshots": len(self._snapshots),
            "compression": self.compression or "none",
            "host": self.backend.identity(),
            **self.backend.stats(),
        }

    # ------------------------------------------- following a writer (read-only)

    def pin(self, name: str) -> None:
        """Show snapshot ``name`` as this read-only store's head, for good (a mount at a
        snapshot): :meth:`poll_head` then only follows gc's new segment names."""
        if not self.read_only:
            raise StoreError(STORE_IO_ERROR, "only a read-only store shows a snapshot as its head")
        self._state = self._state_at(self.get_snapshot(name).logseq)
        self._pinned = name

    def poll_head(self) -> HeadUpdate | None:
        """The I/O half of following the writer: records published since this store looked.

        Read-only stores only; any thread, and the live memory is not touched
        (``apply_head`` does that, on the owner's thread). Reads ``MANIFEST``
        and the log after the last published record seen; None if nothing new
        was published. A new generation (gc), a ROLLBACK or STATE record, or
        anything that does not continue the log seen so far, is a full reload
        from the checkpoint, built here (a damaged log raises, as at open).
        """
        if not self.read_only:
            raise StoreError(STORE_IO_ERROR, "the writer of a store has no head to follow")
        manifest = self._read_manifest()
        segments = [str(s) for s in manifest["segments"]]
        if (
            int(manifest["generation"]) != self._generation
            or segments[: len(self._segments)] != self._segments
        ):
            return self._reload(manifest)
        if self._pinned is not None:
            return None
        tail = self._tail
        chain, expect = tail.last_hash, self._head_logseq + 1
        entries: list[tuple[Any, ...]] = []
        pending: list[tuple[Any, ...]] = []
        new_tail: _Tail | None = None
        try:
            for idx in range(tail.seg_idx, len(segments)):
                name, offset = segments[idx], tail.end
                if idx != tail.seg_idx:
                    header = SegmentHeader.decode(self.backend.read(name, 0, SEGMENT_HEADER.size))
                    if header is None or (header.prev_hash, header.first_logseq) != (chain, expect):
                        return self._reload(manifest)
                    offset = SEGMENT_HEADER.size
                end = ScanEnd()
                for rec in scan_segment(self.backend, name, offset, chain, end):
                    if rec.logseq != expect:
                        return self._reload(manifest)
                    chain, expect = rec.hash, expect + 1
                    pending.append(rec.replay_entry(_loc(idx, rec.offset)))
                    if rec.rtype == PUBLISH:
                        entries += pending
                        pending.clear()
                        new_tail = _Tail(idx, rec.end, rec.hash)
                if not end.clean and idx != len(segments) - 1:
                    return self._reload(manifest)
        except OSError as e:
            raise StoreError(
                STORE_IO_ERROR, f"store {self.location}: {e.strerror or e}", e.errno
            ) from e
        if new_tail is None:
            return None
        changes = HeadChanges(entries[-1][2])
        for rtype, _flags, _logseq, _at, payload, *_ in entries:
            if rtype in (ROLLBACK, STATE, GENERATION):
                return self._reload(manifest)  # the head jumps: replaying it needs I/O
            if rtype in (SNAPSHOT, SNAPSHOT_DELETE):
                changes.snapshots = True
            elif rtype == TXN:
                changes.add_ops(unpack(payload))
        base = (self._generation, self._head_logseq)
        return HeadUpdate(changes, base, entries, segments, new_tail)

    def _reload(self, manifest: dict[str, Any]) -> HeadUpdate:
        """A whole new memory for this read-only store, loaded beside the live one."""
        fresh = Store(self.backend, read_only=True)
        fresh._compress = self._compress
        fresh._load(manifest)
        if self._pinned is not None:
            fresh.pin(self._pinned)
        changes = HeadChanges(fresh._head_logseq, snapshots=True, everything=True)
        return HeadUpdate(changes, fresh=fresh)

    def apply_head(self, update: HeadUpdate) -> HeadChanges:
        """The memory half of following the writer (owner's thread, no I/O): the records
        ``poll_head`` found become the head. Returns what changed."""
        if update.fresh is not None:
            for attr in _memory_fields():
                setattr(self, attr, getattr(update.fresh, attr))
            return update.changes
        if update.base != (self._generation, self._head_logseq):
            raise ValueError("apply_head: the update does not continue this store's head")
        self._segments = update.segments
        for entry in update.entries:
            self._replay(*entry)
        assert update.tail is not None
        self._tail = update.tail
        return update.changes

    # ----------------------------------------------------------------- close

    def close(self) -> None:
        """Publish (write mode), save a checkpoint, release the lock. Idempotent."""
        if self._closed:
            return
        try:
            if not self.read_only and not self._failed:
                self.publish()
                if self._since_checkpoint:
                    self._write_checkpoint()
        finally:
            self._closed = True
            # The head index stays open as long as this object: the state's
            # tables read cold values from it, and a closed store may still be read.
            self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.cache
def _memory_fields() -> tuple[str, ...]:
    """The attributes ``Store._reset_memory`` sets: everything a store derives from its log."""
    probe = Store.__new__(Store)
    probe._reset_memory()
    return tuple(vars(probe))


def _load_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system.

    Why: a checkpoint or a gc of a large store builds a body of hundreds of
    MiB and frees it; glibc keeps freed heap pages (and the pages around
    long-lived objects allocated meanwhile) mapped, so the daemon's RSS would
    stay at that high-water mark. ``malloc_trim`` releases every free page,
    also in the middle of the heap; it costs a walk of the heap (milliseconds).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _hash_threads(size: int) -> int:
    """BLAKE3 of a full block is faster on two threads; small inputs are not worth it."""
    return blake3.blake3.AUTO if size >= BLOCK_SIZE // 2 else 1


def _type_name(rtype: int) -> str:
    return TYPE_NAMES.get(rtype, f"type-{rtype}")


def _format_bytes(compression: str | None) -> bytes:
    info = {
        "format_version": FORMAT_VERSION,
        "compression": compression or "none",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return FORMAT_MAGIC + json.dumps(info, sort_keys=True).encode() + b"\n"


def _parse_format(raw: bytes | None, location: str) -> str:
    if raw is None:
        raise StoreError(STORE_NOT_FOUND, f"no store at {location}")
    if not raw.startswith(FORMAT_MAGIC):
        raise StoreError(STORE_IO_ERROR, f"{location} is not a vegafs store (bad FORMAT)")
    try:
        info = json.loads(raw[len(FORMAT_MAGIC) :])
        version = int(info["format_version"])
    except (ValueError, KeyError, TypeError):
        raise StoreError(STORE_IO_ERROR, f"{location}: FORMAT is damaged") from None
    if version != FORMAT_VERSION:
        raise StoreError(
            STORE_IO_ERROR,
            f"{location} has store format {version}; this vegafs reads {FORMAT_VERSION}",
        )
    return str(info.get("compression", "none"))


def _write_genesis(backend: Backend) -> None:
    """The first segment (GENERATION, TXN creating the root, PUBLISH), then MANIFEST naming it."""
    name = segment_name(0, 0)
    now = backend.clock_ns()
    chain = ZERO_HASH
    parts = [SegmentHeader(0, 0, 1, ZERO_HASH).encode()]
    root = [
        [OP_CREATE, ROOT_INO, stat.S_IFDIR | 0o755, os.getuid(), os.getgid(), 0, None, now],
        [OP_UPDATE, ROOT_INO, {"nlink": 2}],
    ]
    for logseq, (rtype, payload) in enumerate(
        [
            (GENERATION, pack({"generation": 0, "prev_hash": None, "prev_logseq": 0})),
            (TXN, pack(root)),
            (PUBLISH, pack({"time_ns": now})),
        ],
        start=1,
    ):
        rec, chain = encode_record(rtype, 0, logseq, payload, chain)
        parts.append(rec)
    backend.create_segment(name, b"".join(parts))
    backend.put_object(MANIFEST_KEY, _manifest_bytes(0, [name]))


def _manifest_check(generation: int, segments: list[str]) -> str:
    return blake3.blake3(json.dumps([generation, segments]).encode()).hexdigest()[:16]


def _manifest_bytes(generation: int, segments: list[str]) -> bytes:
    body = {
        "generation": generation,
        "segments": segments,
        "check": _manifest_check(generation, segments),
    }
    return json.dumps(body).encode() + b"\n"


def _parse_manifest(raw: bytes | None) -> dict[str, Any] | None:
    """The MANIFEST if it is intact (check value, names of this generation), else None."""
    if raw is None:
        return None
    try:
        manifest = json.loads(raw)
        gen = manifest["generation"]
        segments = manifest["segments"]
        if not isinstance(gen, int) or not isinstance(segments, list) or not segments:
            return None
        if manifest.get("check") != _manifest_check(gen, segments):
            return None
        for seq, name in enumerate(segments):
            if not isinstance(name, str) or parse_segment_name(name) != (gen, seq):
                return None
    except (ValueError, KeyError, TypeError):
        return None
    return {"generation": gen, "segments": segments}

"""FileSystem: POSIX operations on inodes over a vegafs store (no FUSE here).

Every method is synchronous, runs on the caller's (one) thread, and raises
:class:`FsError`. The only methods safe to call from another thread are
:meth:`FileSystem.fetch_chunks`, :meth:`FileSystem.fill` and
:meth:`FileSystem.put_chunk`; that is how an async caller keeps blocking I/O
off its event loop:

* a read: ``plan_read(fh, off, size)`` resolves it here, ``fill(plan)``
  builds the reply in a thread when ``plan.io``;
* before ``write``: ``missing_chunks(fh, off, size)`` lists chunks not
  in the cache, ``fetch_chunks`` loads them in a thread;
* ``write_buffered`` returns :class:`ChunkJob`s for completed blocks; the
  caller stores them with ``put_chunk`` in a thread and reports back
  with ``chunk_stored``. ``write`` is the plain synchronous form.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import blake3

from vegafs.fs.buffers import ChunkJob, FileBuffer
from vegafs.fs.types import Attr, Ctx, DirEntry, FsError, StatFs
from vegafs.store import BLOCK_SIZE, ROOT_INO, Store, StoreError

NAME_MAX = 255
SNAPSHOT_DIR_NAME = b".snapshots"
# Inode numbers at and above SNAP_BASE are views into snapshots: the
# .snapshots directory itself is SNAP_BASE, and inode ``x`` of the snapshot in
# slot ``s`` (s >= 1) is SNAP_BASE + (s << SLOT_SHIFT) + x. The store's own
# inode numbers are allocated from 1 upward and stay far below.
SNAP_BASE = 1 << 62
SLOT_SHIFT = 40
# Memory bounds: dirty blocks kept before the oldest are stored early, and
# clean chunks kept in the read cache.
MAX_DIRTY_BLOCKS = 256  # 32 MiB
MAX_CACHED_CHUNKS = 128  # 16 MiB
XATTR_CREATE = 1
XATTR_REPLACE = 2
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
VEGA_PREFIX = b"vega."
ORPHAN_ANNOTATION = "fs.orphan"
ALLOWED_XATTR_PREFIXES = (b"user.", b"trusted.", b"security.")

log = logging.getLogger("vegafs.fs")


@dataclass(slots=True)
class ReadPlan:
    """A read resolved on the fs thread; :meth:`FileSystem.fill` carries it out anywhere.

    Offsets are into the reply. ``copies``: data already in memory (buffered
    writes, cached chunks); ``chunks``: part of a chunk not cached,
    ``(pos, hash, offset in the chunk, length)``; ``blocks``: whole blocks read
    straight from the store.
    """

    size: int
    copies: list[tuple[int, bytes | memoryview]] = field(default_factory=list)
    chunks: list[tuple[int, bytes, int, int]] = field(default_factory=list)
    blocks: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def io(self) -> bool:
        """Whether :meth:`FileSystem.fill` reads the store (worth a worker thread)."""
        return bool(self.chunks or self.blocks)


def now_ns() -> int:
    return time.time_ns()


@dataclass(slots=True)
class Handle:
    """An open file or directory."""

    ino: int
    flags: int
    writable: bool
    wrote: bool = False
    # Directory handles: the listing taken at opendir, so offsets stay stable.
    entries: list[tuple[bytes, int]] | None = None


class FileSystem:
    """The POSIX model of one mounted store: handles, buffers, snapshots.

    ``track_lookups`` is for FUSE: the kernel's lookup counts keep an
    unlinked inode alive until ``forget``. Without it, an unlinked inode is
    deleted as soon as no handle holds it open.
    """

    def __init__(self, store: Store, *, track_lookups: bool = False) -> None:
        self.store = store
        self.track_lookups = track_lookups
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1
        self._open_count: dict[int, int] = {}
        self._lookups: dict[int, int] = {}
        self._orphans: set[int] = set()
        self._buffers: dict[int, FileBuffer] = {}
        self._dirty_lru: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._chunks: OrderedDict[bytes, bytes] = OrderedDict()
        self._chunk_lock = threading.Lock()
        self._parents: dict[int, int] = {ROOT_INO: ROOT_INO}
        self._slots: dict[str, int] = {}
        self._slot_names: dict[int, str] = {}
        self._next_slot = 1
        self._views: dict[int, Any] = {}
        # Bumped after a gc: chunks stored before it but not yet referenced
        # by a version may be gone, so results of older jobs are not used.
        self._epoch = 0
        # Set once, at the first store write that fails (see _store_failed):
        # from then on the file system refuses every change with EROFS.
        self.read_only_reason: str | None = None
        self._read_only_lock = threading.Lock()

    # ------------------------------------------------------------------ helpers

    def _inode(self, ino: int) -> Any:
        """The live inode as a request must see it: with attribute changes
        still pending in its buffer (:meth:`_change_attrs`) applied."""
        inode = self.store.get_inode(ino)
        if inode is None:
            raise FsError(errno.ENOENT)
        return _with_pending(inode, self._buffers.get(ino))

    def _attr(self, inode: Any, base: int = 0) -> Attr:
        buf = self._buffers.get(inode.ino) if not base else None
        nblocks = len(inode.blocks)
        size, mtime, ctime = inode.size, inode.mtime_ns, inode.ctime_ns
        if buf is not None:
            size, mtime, ctime = buf.size, buf.mtime_ns, buf.ctime_ns
            nblocks += len(buf.dirty) + len(buf.storing)
            inode = _with_pending(inode, buf)
        if stat.S_ISLNK(inode.mode) and inode.target is not None:
            size = len(inode.target)
        return Attr(
            ino=inode.ino + base,
            mode=inode.mode,
            nlink=inode.nlink,
            uid=inode.uid,
            gid=inode.gid,
            rdev=inode.rdev,
            size=size,
            blocks=min(nblocks * (BLOCK_SIZE // 512), (size + 511) // 512),
            atime_ns=inode.atime_ns,
            mtime_ns=mtime,
            ctime_ns=ctime,
        )

    @staticmethod
    def _check_name(name: bytes) -> None:
        if len(name) > NAME_MAX:
            raise FsError(errno.ENAMETOOLONG)
        if not name or b"/" in name or name in (b".", b".."):
            raise FsError(errno.EINVAL)

    def _writable_dir(self, ino: int) -> Any:
        """The live directory ``ino`` for a namespace change (EROFS in snapshots)."""
        self._check_changeable(ino)
        inode = self._inode(ino)
        if not stat.S_ISDIR(inode.mode):
            raise FsError(errno.ENOTDIR)
        if inode.nlink == 0:
            raise FsError(errno.ENOENT)
        return inode

    def _check_changeable(self, ino: int) -> None:
        """EROFS for a change to ``ino``: a snapshot's inode, or any after the store failed."""
        if ino >= SNAP_BASE or self.read_only_reason is not None:
            raise FsError(errno.EROFS)

    def _store_failed(self, exc: StoreError) -> FsError:
        """A store write failed: the file system turns read-only; returns this request's error.

        Why stop every change rather than fail each request on its own: after
        a failed append or fsync the store may have stopped for good (its
        sticky failure), and on a full disk every later record fails as well,
        even an unlink's, since the log only appends. Refusing changes with
        EROFS from the first failure on keeps what is published intact and
        readable, and the reason is logged once. The request that met the
        failure gets the store's own errno (ENOSPC, EIO). Thread-safe: a
        worker thread storing a chunk may be the first to see it.
        """
        with self._read_only_lock:
            first = self.read_only_reason is None
            if first:
                self.read_only_reason = str(exc)
        if first:
            log.error("the store cannot write: %s; read-only until remounted", exc)
        return FsError(exc.errno or errno.EIO, str(exc))

    def _reserved(self, parent: int, name: bytes) -> bool:
        return parent == ROOT_INO and name == SNAPSHOT_DIR_NAME

    @staticmethod
    def _check_sticky(ctx: Ctx, parent: Any, victim: Any) -> None:
        """Sticky directories: only the owner of the entry or the dir may remove it."""
        if (
            parent.mode & stat.S_ISVTX
            and not ctx.is_root
            and ctx.uid not in (parent.uid, victim.uid)
        ):
            raise FsError(errno.EPERM)

    def _txn(self) -> Any:
        """A store transaction whose I/O failures surface as their errno (EROFS once read-only)."""
        self._check_changeable(ROOT_INO)  # every transaction changes the live tree
        return _Txn(self)

    # ------------------------------------------------------------ lookup counts

    def _remember(self, ino: int) -> None:
        if self.track_lookups:
            self._lookups[ino] = self._lookups.get(ino, 0) + 1

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped ``count`` references to ``ino``."""
        left = self._lookups.get(ino, 0) - count
        if left > 0:
            self._lookups[ino] = left
            return
        self._lookups.pop(ino, None)
        self._maybe_delete(ino)

    def lookup_count(self, ino: int) -> int:
        """How many references the kernel holds to ``ino`` (0 when untracked)."""
        return self._lookups.get(ino, 0)

    def _maybe_delete(self, ino: int) -> None:
        """Delete an unlinked inode once nothing references it any more.

        Read-only, it stays: the next mount's ``reclaim_orphans`` deletes it.
        """
        if ino not in self._orphans or self._open_count.get(ino) or self._lookups.get(ino):
            return
        if self.read_only_reason is not None:
            return
        self._orphans.discard(ino)
        self._discard_buffer(ino)
        self._parents.pop(ino, None)
        if self.store.get_inode(ino) is not None:
            with self._txn() as t:
                t.delete_inode(ino)

    def reclaim_orphans(self) -> int:
        """Delete inodes unlinked while open whose last close never came (a crash).

        Call once at mount, before serving: nothing can hold them open then.
        Returns how many were deleted.
        """
        stale = set()
        for _logseq, payload in self.store.annotations(ORPHAN_ANNOTATION):
            ino = int.from_bytes(payload, "little")
            inode = self.store.get_inode(ino)
            if inode is not None and inode.nlink == 0 and ino not in self._orphans:
                stale.add(ino)
        if stale:
            with self._txn() as t:
                for ino in sorted(stale):
                    t.delete_inode(ino)
        return len(stale)

    def _drop_link(self, t: Any, inode: Any, now: int) -> None:
        """One name of ``inode`` went away inside transaction ``t``."""
        nlink = 0 if stat.S_ISDIR(inode.mode) else inode.nlink - 1
        if nlink > 0:
            t.update(inode.ino, nlink=nlink, ctime_ns=now)
            return
        if self._open_count.get(inode.ino):
            t.update(inode.ino, nlink=0, ctime_ns=now)
            # Noted in the log so that a crash before the last close does not
            # leak it: the next mount reclaims it (reclaim_orphans).
            t.annotate(ORPHAN_ANNOTATION, inode.ino.to_bytes(8, "little"))
            self._orphans.add(inode.ino)
        elif stat.S_ISDIR(inode.mode) and self._lookups.get(inode.ino):
            # A removed directory the kernel still holds (a process's cwd):
            # stat must still work, so it lives on until forget. (A file
            # nobody has open is unreachable for the kernel: deleted now, one
            # transaction per unlink, nothing left behind by a crash.)
            t.update(inode.ino, nlink=0, ctime_ns=now)
            self._orphans.add(inode.ino)
        else:
            t.delete_inode(inode.ino)
            self._discard_buffer(inode.ino)
            self._parents.pop(inode.ino, None)

    # ---------------------------------------------------------------- snapshots

    def _slot(self, name: str) -> int:
        slot = self._slots.get(name)
        if slot is None:
            slot = self._next_slot
            self._next_slot += 1
            self._slots[name] = slot
            self._slot_names[slot] = name
        return slot

    def _view(self, slot: int) -> Any:
        view = self._views.get(slot)
        if view is None:
            name = self._slot_names.get(slot)
            if name is None:
                raise FsError(errno.ENOENT)
            try:
                view = self.store.view(name)
            except StoreError as exc:
                raise FsError(errno.ENOENT) from exc
            self._views[slot] = view
        return view

    def _split(self, ino: int) -> tuple[Any, int, int]:
        """(source, source inode, inode base) for any inode number we hand out."""
        if ino < SNAP_BASE:
            return self.store, ino, 0
        slot = (ino - SNAP_BASE) >> SLOT_SHIFT
        base = SNAP_BASE + (slot << SLOT_SHIFT)
        return self._view(slot), ino - base, base

    def _snapdir_attr(self) -> Attr:
        root = self._inode(ROOT_INO)
        return Attr(
            ino=SNAP_BASE,
            mode=stat.S_IFDIR | 0o555,
            nlink=2,
            uid=root.uid,
            gid=root.gid,
            rdev=0,
            size=0,
            blocks=0,
            atime_ns=root.ctime_ns,
            mtime_ns=root.ctime_ns,
            ctime_ns=root.ctime_ns,
        )

    def snapshots_changed(self) -> None:
        """Snapshots were created or deleted: drop the cached views.

        A deleted snapshot's slot is never reused, so a new snapshot of the
        same name gets new inode numbers and nothing the kernel cached for
        the old one can show through.
        """
        self._views.clear()
        live = {snap.name for snap in self.store.list_snapshots()}
        for name in [n for n in self._slots if n not in live]:
            del self._slot_names[self._slots.pop(name)]

    # ------------------------------------------------------------------ reading

    def getattr(self, ino: int) -> Attr:
        if ino == SNAP_BASE:
            return self._snapdir_attr()
        source, sino, base = self._split(ino)
        inode = source.get_inode(sino)
        if inode is None:
            raise FsError(errno.ENOENT)
        return self._attr(inode, base)

    def lookup(self, parent: int, name: bytes) -> Attr:
        """Find ``name`` in directory ``parent``; counts a kernel reference."""
        if len(name) > NAME_MAX:
            raise FsError(errno.ENAMETOOLONG)
        if name == b".":
            attr = self.getattr(parent)
        elif name == b"..":
            attr = self.getattr(self._parent_of(parent))
        elif self._reserved(parent, name):
            attr = self._snapdir_attr()
        elif parent == SNAP_BASE:
            names = {s.name.encode(): s for s in self.store.list_snapshots()}
            if name not in names:
                raise FsError(errno.ENOENT)
            slot = self._slot(name.decode())
            attr = self.getattr(SNAP_BASE + (slot << SLOT_SHIFT) + ROOT_INO)
        else:
            source, sparent, base = self._split(parent)
            pinode = source.get_inode(sparent)
            if pinode is None:
                raise FsError(errno.ENOENT)
            if not stat.S_ISDIR(pinode.mode):
                raise FsError(errno.ENOTDIR)
            child = source.lookup(sparent, name)
            if child is None:
                raise FsError(errno.ENOENT)
            inode = source.get_inode(child)
            if inode is None:
                raise FsError(errno.ENOENT)
            attr = self._attr(inode, base)
            if stat.S_ISDIR(inode.mode):
                self._parents[attr.ino] = parent
        self._remember(attr.ino)
        return attr

    def _parent_of(self, ino: int) -> int:
        if ino == SNAP_BASE:
            return ROOT_INO
        if ino > SNAP_BASE and (ino - SNAP_BASE) & ((1 << SLOT_SHIFT) - 1) == ROOT_INO:
            return SNAP_BASE
        return self._parents.get(ino, ROOT_INO)

    def readlink(self, ino: int) -> bytes:
        source, sino, _ = self._split(ino)
        inode = source.get_inode(sino)
        if inode is None:
            raise FsError(errno.ENOENT)
        if not stat.S_ISLNK(inode.mode) or inode.target is None:
            raise FsError(errno.EINVAL)
        return inode.target

    def statfs(self) -> StatFs:
        """Space of the file system holding the store; inodes are not limited."""
        files = 1 << 32
        try:
            st = os.statvfs(self.store.location)
        except (OSError, AttributeError):
            return StatFs(BLOCK_SIZE, 4096, 0, 0, 0, files, files, files, NAME_MAX)
        return StatFs(
            bsize=BLOCK_SIZE,
            frsize=st.f_frsize,
            blocks=st.f_blocks,
            bfree=st.f_bfree,
            bavail=st.f_bavail,
            files=files,
            ffree=files,
            favail=files,
            namemax=NAME_MAX,
        )

    # -------------------------------------------------------------- directories

    def opendir(self, ino: int) -> int:
        """Open a directory. The listing is taken by the first readdir (offset
        0) and kept for the handle, so offsets stay stable."""
        if not stat.S_ISDIR(self.getattr(ino).mode):
            raise FsError(errno.ENOTDIR)
        return self._new_handle(Handle(ino, os.O_RDONLY, False, entries=[]))

    def _listing(self, ino: int) -> list[tuple[bytes, int]]:
        if ino == SNAP_BASE:
            entries = []
            for snap in self.store.list_snapshots():
                slot = self._slot(snap.name)
                entries.append((snap.name.encode(), SNAP_BASE + (slot << SLOT_SHIFT) + ROOT_INO))
        else:
            source, sino, base = self._split(ino)
            inode = source.get_inode(sino)
            if inode is None:
                raise FsError(errno.ENOENT)
            if not stat.S_ISDIR(inode.mode):
                raise FsError(errno.ENOTDIR)
            entries = [(name, child + base) for name, child in source.listdir(sino)]
        return entries

    def readdir(self, fh: int, off: int) -> Iterator[DirEntry]:
        """Entries after offset ``off``: 1 is ``.``, 2 is ``..``, 3+i entry i.

        An entry removed since the listing was taken is skipped; one added
        since shows up after a rewind (offset 0), as POSIX allows. The
        caller must call :meth:`lookup_done` for each entry it hands to the
        kernel with attributes (readdirplus), except ``.`` and ``..``.
        """
        handle = self._handle(fh)
        if handle.entries is None:
            raise FsError(errno.ENOTDIR)
        ino = handle.ino
        if off == 0:  # a new listing or rewinddir(): show the current state
            handle.entries = self._listing(ino)
        if off < 1:
            yield DirEntry(b".", self.getattr(ino), 1)
        if off < 2:
            yield DirEntry(b"..", self.getattr(self._parent_of(ino)), 2)
        for index in range(max(off - 2, 0), len(handle.entries)):
            name, child = handle.entries[index]
            try:
                attr = self.getattr(child)
            except FsError:
                continue  # removed since opendir
            if attr.nlink == 0:
                continue
            if stat.S_ISDIR(attr.mode):
                self._parents[child] = ino
            yield DirEntry(name, attr, index + 3)

    def lookup_done(self, ino: int) -> None:
        """The kernel now holds a reference to ``ino`` (a readdirplus entry)."""
        self._remember(ino)

    def releasedir(self, fh: int) -> None:
        self._handles.pop(fh, None)

    def mkdir(self, parent: int, name: bytes, mode: int, ctx: Ctx) -> Attr:
        return self._make(parent, name, stat.S_IFDIR | (mode & 0o7777), ctx)

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int, ctx: Ctx) -> Attr:
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind not in (stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK):
            raise FsError(errno.EINVAL)
        return self._make(parent, name, kind | (mode & 0o7777), ctx, rdev=rdev)

    def symlink(self, parent: int, name: bytes, target: bytes, ctx: Ctx) -> Attr:
        if len(target) > 4096:
            raise FsError(errno.ENAMETOOLONG)
        return self._make(parent, name, stat.S_IFLNK | 0o777, ctx, target=target)

    def _make(
        self,
        parent: int,
        name: bytes,
        mode: int,
        ctx: Ctx,
        *,
        rdev: int = 0,
        target: bytes | None = None,
    ) -> Attr:
        """Create one inode and its directory entry in one transaction."""
        self._check_name(name)
        pinode = self._writable_dir(parent)
        if self._reserved(parent, name) or self.store.lookup(parent, name) is not None:
            raise FsError(errno.EEXIST)
        gid = ctx.gid
        if pinode.mode & stat.S_ISGID:
            gid = pinode.gid
            if stat.S_ISDIR(mode):
                mode |= stat.S_ISGID
        if (
            mode & stat.S_ISGID
            and not stat.S_ISDIR(mode)
            and not ctx.is_root
            and gid != ctx.gid
        ):
            mode &= ~stat.S_ISGID
        now = now_ns()
        ino = self.store.alloc_ino()
        is_dir = stat.S_ISDIR(mode)
        with self._txn() as t:
            t.create_inode(ino, mode=mode, uid=ctx.uid, gid=gid, rdev=rdev, target=target, times_ns=now)
            t.update(ino, nlink=2 if is_dir else 1)
            t.link(parent, name, ino)
            if is_dir:
                t.update(parent, nlink=pinode.nlink + 1, mtime_ns=now, ctime_ns=now)
            else:
                t.update(parent, mtime_ns=now, ctime_ns=now)
        if is_dir:
            self._parents[ino] = parent
        attr = self._attr(self._inode(ino))
        self._remember(ino)
        return attr

    def unlink(self, parent: int, name: bytes, ctx: Ctx) -> None:
        pinode = self._writable_dir(parent)
        if self._reserved(parent, name):
            raise FsError(errno.EROFS)
        child = self.store.lookup(parent, name)
        if child is None:
            raise FsError(errno.ENOENT)
        inode = self._inode(child)
        if stat.S_ISDIR(inode.mode):
            raise FsError(errno.EISDIR)
        self._check_sticky(ctx, pinode, inode)
        now = now_ns()
        with self._txn() as t:
            t.unlink(parent, name)
            t.update(parent, mtime_ns=now, ctime_ns=now)
            self._drop_link(t, inode, now)

    def rmdir(self, parent: int, name: bytes, ctx: Ctx) -> None:
        pinode = self._writable_dir(parent)
        if name == b".":
            raise FsError(errno.EINVAL)
        if name == b"..":
            raise FsError(errno.ENOTEMPTY)
        if self._reserved(parent, name):
            raise FsError(errno.EROFS)
        child = self.store.lookup(parent, name)
        if child is None:
            raise FsError(errno.ENOENT)
        inode = self._inode(child)
        if not stat.S_ISDIR(inode.mode):
            raise FsError(errno.ENOTDIR)
        if self.store.listdir(child):
            raise FsError(errno.ENOTEMPTY)
        self._check_sticky(ctx, pinode, inode)
        now = now_ns()
        with self._txn() as t:
            t.unlink(parent, name)
            t.update(parent, nlink=pinode.nlink - 1, mtime_ns=now, ctime_ns=now)
            self._drop_link(t, inode, now)

    def link(self, ino: int, parent: int, name: bytes, ctx: Ctx) -> Attr:
        self._check_name(name)
        if ino >= SNAP_BASE:
            raise FsError(errno.EXDEV)
        self._writable_dir(parent)
        inode = self._inode(ino)
        if stat.S_ISDIR(inode.mode):
            raise FsError(errno.EPERM)
        if inode.nlink == 0:
            raise FsError(errno.ENOENT)
        if self._reserved(parent, name) or self.store.lookup(parent, name) is not None:
            raise FsError(errno.EEXIST)
        now = now_ns()
        with self._txn() as t:
            t.link(parent, name, ino)
            t.update(ino, nlink=inode.nlink + 1, ctime_ns=now)
            t.update(parent, mtime_ns=now, ctime_ns=now)
        attr = self._attr(self._inode(ino))
        self._remember(ino)
        return attr

    def rename(
        self, old_parent: int, old: bytes, new_parent: int, new: bytes, flags: int, ctx: Ctx
    ) -> None:
        """rename(2)/renameat2(2): replacing, RENAME_NOREPLACE, RENAME_EXCHANGE."""
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == (
            RENAME_NOREPLACE | RENAME_EXCHANGE
        ):
            raise FsError(errno.EINVAL)
        self._check_name(new)
        p_old = self._writable_dir(old_parent)
        p_new = self._writable_dir(new_parent)
        if self._reserved(old_parent, old) or self._reserved(new_parent, new):
            raise FsError(errno.EROFS)
        src_ino = self.store.lookup(old_parent, old)
        if src_ino is None:
            raise FsError(errno.ENOENT)
        src = self._inode(src_ino)
        dst_ino = self.store.lookup(new_parent, new)
        dst = self._inode(dst_ino) if dst_ino is not None else None
        self._check_sticky(ctx, p_old, src)
        if dst is not None:
            self._check_sticky(ctx, p_new, dst)
        if flags & RENAME_NOREPLACE and dst is not None:
            raise FsError(errno.EEXIST)
        if flags & RENAME_EXCHANGE:
            if dst is None:
                raise FsError(errno.ENOENT)
            self._exchange(p_old, old, src, p_new, new, dst)
            return
        if dst is not None and dst.ino == src.ino:
            return  # two names of one inode: POSIX says do nothing
        src_dir = stat.S_ISDIR(src.mode)
        if dst is not None:
            if src_dir and not stat.S_ISDIR(dst.mode):
                raise FsError(errno.ENOTDIR)
            if not src_dir and stat.S_ISDIR(dst.mode):
                raise FsError(errno.EISDIR)
            if stat.S_ISDIR(dst.mode) and self.store.listdir(dst.ino):
                raise FsError(errno.ENOTEMPTY)
        if src_dir and self._is_ancestor(src.ino, new_parent):
            raise FsError(errno.EINVAL)
        nlink = {old_parent: p_old.nlink, new_parent: p_new.nlink}
        if src_dir and old_parent != new_parent:
            nlink[old_parent] -= 1
            nlink[new_parent] += 1
        if dst is not None and stat.S_ISDIR(dst.mode):
            nlink[new_parent] -= 1
        now = now_ns()
        with self._txn() as t:
            t.unlink(old_parent, old)
            t.link(new_parent, new, src.ino)
            if dst is not None:
                self._drop_link(t, dst, now)
            for parent, count in nlink.items():
                t.update(parent, nlink=count, mtime_ns=now, ctime_ns=now)
            t.update(src.ino, ctime_ns=now)
        if src_dir:
            self._parents[src.ino] = new_parent

    def _exchange(
        self, p_old: Any, old: bytes, src: Any, p_new: Any, new: bytes, dst: Any
    ) -> None:
        """RENAME_EXCHANGE: swap two entries atomically."""
        src_dir, dst_dir = stat.S_ISDIR(src.mode), stat.S_ISDIR(dst.mode)
        if src_dir and self._is_ancestor(src.ino, p_new.ino):
            raise FsError(errno.EINVAL)
        if dst_dir and self._is_ancestor(dst.ino, p_old.ino):
            raise FsError(errno.EINVAL)
        nlink = {p_old.ino: p_old.nlink, p_new.ino: p_new.nlink}
        if p_old.ino != p_new.ino:
            nlink[p_old.ino] += int(dst_dir) - int(src_dir)
            nlink[p_new.ino] += int(src_dir) - int(dst_dir)
        now = now_ns()
        with self._txn() as t:
            t.link(p_old.ino, old, dst.ino)
            t.link(p_new.ino, new, src.ino)
            for parent, count in nlink.items():
                t.update(parent, nlink=count, mtime_ns=now, ctime_ns=now)
            t.update(src.ino, ctime_ns=now)
            t.update(dst.ino, ctime_ns=now)
        if src_dir:
            self._parents[src.ino] = p_new.ino
        if dst_dir:
            self._parents[dst.ino] = p_old.ino

    def _is_ancestor(self, ino: int, of: int) -> bool:
        """Whether directory ``ino`` is ``of`` or one of its ancestors (as far as known)."""
        seen = 0
        while seen < 4096:
            if of == ino:
                return True
            if of == ROOT_INO or of not in self._parents:
                return False
            of = self._parents[of]
            seen += 1
        return False

    # -------------------------------------------------------------- attributes

    def setattr(
        self,
        ino: int,
        ctx: Ctx,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
        ctime_ns: int | None = None,
    ) -> Attr:
        """chmod/chown/truncate/utimens. A size change is buffered like a write."""
        self._check_changeable(ino)
        inode = self._inode(ino)
        now = now_ns()
        changes: dict[str, int] = {}
        if mode is not None:
            new_mode = stat.S_IFMT(inode.mode) | (mode & 0o7777)
            # Anyone may drop set-ID bits: that is how the kernel clears them
            # on a write by another user (a setattr in the writer's name).
            setid = stat.S_ISUID | stat.S_ISGID
            drops_priv = (new_mode & ~setid) == (inode.mode & ~setid) and not (
                new_mode & setid & ~inode.mode
            )
            if not ctx.is_root and ctx.uid != inode.uid and not drops_priv:
                raise FsError(errno.EPERM)
            changes["mode"] = new_mode
        if uid is not None or gid is not None:
            new_uid = inode.uid if uid is None or uid == -1 else uid
            new_gid = inode.gid if gid is None or gid == -1 else gid
            if not ctx.is_root and (new_uid != inode.uid or ctx.uid != inode.uid):
                raise FsError(errno.EPERM)
            changes["uid"], changes["gid"] = new_uid, new_gid
            if not ctx.is_root and not stat.S_ISDIR(inode.mode):
                changes["mode"] = _kill_priv(changes.get("mode", inode.mode))
        if atime_ns is not None:
            changes["atime_ns"] = atime_ns
        if mtime_ns is not None:
            changes["mtime_ns"] = mtime_ns
        if size is not None:
            self._truncate(inode, size, now)
        if changes:
            changes["ctime_ns"] = ctime_ns if ctime_ns is not None else now
            self._change_attrs(ino, changes)
        if size is not None and not self._open_count.get(ino):
            self.commit(ino)  # truncate(2) of a file nobody has open
        return self.getattr(ino)

    def _change_attrs(self, ino: int, changes: dict[str, int]) -> None:
        """Apply attribute ``changes`` (with ``ctime_ns``) to ``ino``.

        A file with buffered changes to commit keeps them pending in its
        buffer, and the commit's record carries them with the new content:
        ``tar`` fchowns, fchmods and futimens every file it has just written,
        which would otherwise be three transactions (~15-20 µs each) per
        file. That is as consistent and as durable as the writes they follow:
        every request sees them at once (:meth:`_inode`, :meth:`_attr`),
        close/fsync/sync/unmount record them, and a crash loses them only
        together with the unrecorded writes — never half of them. Anything
        else is recorded now, in its own transaction.
        """
        buf = self._buffers.get(ino)
        if buf is not None:
            buf.ctime_ns = changes["ctime_ns"]
            buf.mtime_ns = changes.get("mtime_ns", buf.mtime_ns)
            if buf.changed:
                buf.attrs.update(
                    (key, value)
                    for key, value in changes.items()
                    if key not in ("mtime_ns", "ctime_ns")
                )
                return
        with self._txn() as t:
            t.update(ino, **changes)

    def _truncate(self, inode: Any, size: int, now: int) -> None:
        if stat.S_ISDIR(inode.mode):
            raise FsError(errno.EISDIR)
        if not stat.S_ISREG(inode.mode):
            raise FsError(errno.EINVAL)
        if size < 0:
            raise FsError(errno.EINVAL)
        buf = self._buffer(inode)
        if size < buf.size:
            first = -(-size // BLOCK_SIZE)
            buf.drop_from(first)
            for index in inode.blocks:
                if index >= first:
                    buf.stored[index] = None
            tail = size % BLOCK_SIZE
            if tail:
                index = size // BLOCK_SIZE
                block = self._dirty_block(buf, inode, index)
                del block[tail:]
        buf.size = size
        buf.mtime_ns = buf.ctime_ns = now
        buf.changed = True

    # -------------------------------------------------------------------- xattrs

    def getxattr(self, ino: int, name: bytes) -> bytes:
        if ino == SNAP_BASE:
            raise FsError(errno.ENODATA)
        source, sino, _ = self._split(ino)
        inode = source.get_inode(sino)
        if inode is None:
            raise FsError(errno.ENOENT)
        if name.startswith(VEGA_PREFIX):
            return self._vega_fact(source, inode, name[len(VEGA_PREFIX) :])
        value = inode.xattrs.get(name)
        if value is None:
            raise FsError(errno.ENODATA)
        return value

    def _vega_fact(self, source: Any, inode: Any, key: bytes) -> bytes:
        """Read-only facts of the committed version (vega.hash/version/logseq)."""
        if key == b"version":
            return str(inode.version).encode()
        if key == b"hash":
            digest = blake3.blake3(inode.size.to_bytes(8, "little"))
            for index in sorted(inode.blocks):
                digest.update(index.to_bytes(8, "little") + inode.blocks[index])
            return digest.hexdigest().encode()
        if key == b"logseq" and source is self.store:
            versions = self.store.file_versions(inode.ino)
            return str(versions[0].logseq if versions else 0).encode()
        raise FsError(errno.ENODATA)

    def listxattr(self, ino: int) -> list[bytes]:
        """User-visible xattrs; the vega.* facts are readable but not listed."""
        if ino == SNAP_BASE:
            return []
        source, sino, _ = self._split(ino)
        inode = source.get_inode(sino)
        if inode is None:
            raise FsError(errno.ENOENT)
        return list(inode.xattrs)

    def setxattr(self, ino: int, name: bytes, value: bytes, flags: int, ctx: Ctx) -> None:
        self._check_changeable(ino)
        if name.startswith(VEGA_PREFIX):
            raise FsError(errno.EPERM)
        if not name.startswith(ALLOWED_XATTR_PREFIXES):
            raise FsError(errno.ENOTSUP)
        if len(name) > 255:
            raise FsError(errno.ERANGE)
        if len(value) > 65536:
            raise FsError(errno.E2BIG)
        inode = self._inode(ino)
        exists = name in inode.xattrs
        if flags & XATTR_CREATE and exists:
            raise FsError(errno.EEXIST)
        if flags & XATTR_REPLACE and not exists:
            raise FsError(errno.ENODATA)
        with self._txn() as t:
            t.set_xattr(ino, name, value)
            t.update(ino, ctime_ns=now_ns())

    def removexattr(self, ino: int, name: bytes, ctx: Ctx) -> None:
        self._check_changeable(ino)
        if name.startswith(VEGA_PREFIX):
            raise FsError(errno.EPERM)
        inode = self._inode(ino)
        if name not in inode.xattrs:
            raise FsError(errno.ENODATA)
        with self._txn() as t:
            t.remove_xattr(ino, name)
            t.update(ino, ctime_ns=now_ns())

    # -------------------------------------------------------------------- files

    def _new_handle(self, handle: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return fh

    def _handle(self, fh: int) -> Handle:
        handle = self._handles.get(fh)
        if handle is None:
            raise FsError(errno.EBADF)
        return handle

    def open(self, ino: int, flags: int, ctx: Ctx) -> int:
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        if writable or flags & os.O_TRUNC:
            self._check_changeable(ino)
        if ino >= SNAP_BASE:
            self.getattr(ino)
            return self._new_handle(Handle(ino, flags, False))
        inode = self._inode(ino)
        if stat.S_ISDIR(inode.mode):
            raise FsError(errno.EISDIR)
        if writable and flags & os.O_TRUNC and self._size(inode) != 0:
            self.setattr(ino, ctx, size=0)
        self._open_count[ino] = self._open_count.get(ino, 0) + 1
        return self._new_handle(Handle(ino, flags, writable))

    def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Ctx) -> tuple[int, Attr]:
        attr = self.mknod(parent, name, stat.S_IFREG | (mode & 0o7777), 0, ctx)
        writable = (flags & os.O_ACCMODE) != os.O_RDONLY
        self._open_count[attr.ino] = self._open_count.get(attr.ino, 0) + 1
        return self._new_handle(Handle(attr.ino, flags, writable)), attr

    def handle_ino(self, fh: int) -> int:
        return self._handle(fh).ino

    def _size(self, inode: Any) -> int:
        buf = self._buffers.get(inode.ino)
        return buf.size if buf is not None else inode.size

    def _buffer(self, inode: Any) -> FileBuffer:
        buf = self._buffers.get(inode.ino)
        if buf is None:
            buf = FileBuffer(inode.ino, inode.size, inode.mtime_ns, inode.ctime_ns)
            self._buffers[inode.ino] = buf
        return buf

    def _discard_buffer(self, ino: int) -> None:
        buf = self._buffers.pop(ino, None)
        if buf is not None:
            for index in buf.dirty:
                self._dirty_lru.pop((ino, index), None)

    # Chunk cache: the only state shared with worker threads (under a lock).

    def _cached_chunk(self, chunk_hash: bytes) -> bytes | None:
        with self._chunk_lock:
            data = self._chunks.get(chunk_hash)
            if data is not None:
                self._chunks.move_to_end(chunk_hash)
            return data

    def _cache_chunk(self, chunk_hash: bytes, data: bytes) -> None:
        with self._chunk_lock:
            self._chunks[chunk_hash] = data
            self._chunks.move_to_end(chunk_hash)
            while len(self._chunks) > MAX_CACHED_CHUNKS:
                self._chunks.popitem(last=False)

    def _chunk(self, chunk_hash: bytes) -> bytes:
        data = self._cached_chunk(chunk_hash)
        if data is None:
            data = self._read_chunk(chunk_hash)
            self._cache_chunk(chunk_hash, data)
        return data

    def _read_chunk(self, chunk_hash: bytes) -> bytes:
        try:
            return self.store.read_chunk(chunk_hash)
        except StoreError as exc:
            raise FsError(exc.errno or errno.EIO, str(exc)) from exc

    def fetch_chunks(self, hashes: list[bytes]) -> None:
        """Load ``hashes`` into the cache. Thread-safe: call it from a worker."""
        for chunk_hash in hashes:
            if self._cached_chunk(chunk_hash) is None:
                self._cache_chunk(chunk_hash, self._read_chunk(chunk_hash))

    def _block_hash(self, buf: FileBuffer | None, inode: Any, index: int) -> bytes | None:
        if buf is not None and index in buf.stored:
            return buf.stored[index]
        return inode.blocks.get(index)

    def missing_chunks(self, fh: int, off: int, size: int) -> list[bytes]:
        """Chunks a read or write of this range needs that are not cached."""
        handle = self._handle(fh)
        source, sino, base = self._split(handle.ino)
        inode = source.get_inode(sino)
        if inode is None:
            return []
        buf = self._buffers.get(inode.ino) if not base else None
        end = min(off + size, buf.size if buf is not None else inode.size)
        missing = []
        for index in range(off // BLOCK_SIZE, -(-end // BLOCK_SIZE)):
            if buf is not None and (index in buf.dirty or index in buf.storing):
                continue
            chunk_hash = self._block_hash(buf, inode, index)
            if chunk_hash is not None and self._cached_chunk(chunk_hash) is None:
                missing.append(chunk_hash)
        return missing

    def missing_for_write(self, fh: int, off: int, size: int) -> list[bytes]:
        """Chunks a write must read first: only partially overwritten blocks."""
        head = self.missing_chunks(fh, off, 1) if off % BLOCK_SIZE else []
        end = off + size
        if end % BLOCK_SIZE and end // BLOCK_SIZE != off // BLOCK_SIZE:
            head += self.missing_chunks(fh, end - 1, 1)
        elif end % BLOCK_SIZE and not head:
            head = self.missing_chunks(fh, off, 1)
        return head

    def read(self, fh: int, off: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``off`` (short at the end of the file)."""
        return bytes(self.fill(self._plan_read(fh, off, size)))

    def plan_read(self, fh: int, off: int, size: int) -> ReadPlan | None:
        """A read as a :class:`ReadPlan` for :meth:`fill`, or None when only
        :meth:`read` may serve it (a subclass that transforms reads says so)."""
        return self._plan_read(fh, off, size)

    def _plan_read(self, fh: int, off: int, size: int) -> ReadPlan:
        """Resolve a read on this thread into a :class:`ReadPlan` that :meth:`fill`
        carries out on any thread (the split keeps store I/O off an event loop).

        Buffered (not yet stored) data is copied now, since writes change it;
        chunks are immutable, so only their hashes are taken.
        """
        inode, base = self._recorded(self._handle(fh).ino)
        return self._plan(inode, self._buffers.get(inode.ino) if not base else None, off, size)

    def _recorded(self, ino: int) -> tuple[Any, int]:
        """The inode as last recorded in the store (or a snapshot), and its view base."""
        source, sino, base = self._split(ino)
        inode = source.get_inode(sino)
        if inode is None:
            raise FsError(errno.ENOENT)
        return inode, base

    def read_recorded(self, ino: int, off: int = 0, size: int | None = None) -> bytes:
        """``size`` bytes at ``off`` (default: to the end) of ``ino``'s last
        recorded version: what its last close (or fsync) made visible, without
        the writes open handles still buffer. After-hooks read this way
        (docs/hooks.md): their input is a version in the log, never a write in
        progress."""
        inode, _ = self._recorded(ino)
        want = inode.size - off if size is None else size
        return bytes(self.fill(self._plan(inode, None, off, want)))

    def recorded_size(self, ino: int) -> int:
        """The size of ``ino``'s last recorded version (see :meth:`read_recorded`)."""
        return int(self._recorded(ino)[0].size)

    def _plan(self, inode: Any, buf: FileBuffer | None, off: int, size: int) -> ReadPlan:
        """The plan of a read of ``inode`` overlaid with ``buf`` (None: as recorded)."""
        file_size = buf.size if buf is not None else inode.size
        end = min(off + size, file_size)
        plan = ReadPlan(max(0, end - off))
        pos = off
        while pos < end:
            index, inner = divmod(pos, BLOCK_SIZE)
            n = min(BLOCK_SIZE - inner, end - pos)
            dirty = buf.dirty.get(index) if buf is not None else None
            if dirty is not None:
                plan.copies.append((pos - off, bytes(memoryview(dirty)[inner : inner + n])))
            elif buf is not None and (storing := buf.storing.get(index)) is not None:
                plan.copies.append((pos - off, memoryview(storing)[inner : inner + n]))
            elif (chunk_hash := self._block_hash(buf, inode, index)) is not None:
                cached = self._cached_chunk(chunk_hash)
                if cached is not None:
                    plan.copies.append((pos - off, memoryview(cached)[inner : inner + n]))
                elif n == BLOCK_SIZE:
                    plan.blocks.append((pos - off, chunk_hash))
                else:
                    plan.chunks.append((pos - off, chunk_hash, inner, n))
            pos += n
        return plan

    def fill(self, plan: ReadPlan) -> bytearray:
        """The bytes a :meth:`plan_read` plan describes. Thread-safe: call it from a worker.

        Whole blocks are read straight into the result (one store call for a
        run of them, no copy through the chunk cache: the kernel's page cache
        keeps what a reader may want again); partial blocks go through the
        cache, since a chunk is verified whole. Holes stay zero.
        """
        out = bytearray(plan.size)
        view = memoryview(out)
        for pos, data in plan.copies:
            view[pos : pos + len(data)] = data
        for pos, chunk_hash, inner, n in plan.chunks:
            data = self._chunk(chunk_hash)[inner : inner + n]
            view[pos : pos + len(data)] = data
        if plan.blocks:
            try:
                self.store.read_chunks_into(
                    [(h, view[pos : pos + BLOCK_SIZE]) for pos, h in plan.blocks]
                )
            except StoreError as exc:
                raise FsError(exc.errno or errno.EIO, str(exc)) from exc
        return out

    def _block_data(self, buf: FileBuffer | None, inode: Any, index: int) -> bytes | bytearray:
        """Current content of block ``index`` (may be shorter than a block: zeros follow)."""
        if buf is not None:
            block = buf.dirty.get(index)
            if block is not None:
                return block
            data = buf.storing.get(index)
            if data is not None:
                return data
        chunk_hash = self._block_hash(buf, inode, index)
        if chunk_hash is None:
            return b""
        return self._chunk(chunk_hash)

    def _dirty_block(self, buf: FileBuffer, inode: Any, index: int) -> bytearray:
        """Block ``index`` as a dirty bytearray (loaded from its chunk if needed)."""
        block = buf.dirty.get(index)
        if block is None:
            valid = max(0, min(BLOCK_SIZE, buf.size - index * BLOCK_SIZE))
            block = bytearray(self._block_data(buf, inode, index)[:valid])
            buf.storing.pop(index, None)
            buf.stored.pop(index, None)
            buf.dirty[index] = block
        self._dirty_lru[(buf.ino, index)] = None
        self._dirty_lru.move_to_end((buf.ino, index))
        return block

    def write_buffered(
        self, fh: int, off: int, data: bytes | memoryview, ctx: Ctx | None = None
    ) -> list[ChunkJob]:
        """Write into the buffer; return the blocks now ready to be stored.

        Completed blocks (a write that reaches a block's end with the block
        full) and, over the memory bound, the oldest dirty blocks become
        jobs. The caller stores each (``put_chunk``, any thread) and
        reports the hash with :meth:`chunk_stored` on this thread.

        ``off`` is absolute even for O_APPEND handles: the kernel computes
        append offsets, and with the writeback cache it writes pages back
        through whichever handle it likes.
        """
        handle = self._handle(fh)
        if not handle.writable:
            raise FsError(errno.EBADF)
        ino = handle.ino
        self._check_changeable(ino)
        inode = self._inode(ino)
        if off < 0:
            raise FsError(errno.EINVAL)
        buf = self._buffer(inode)
        view = memoryview(data)
        end = off + len(view)
        jobs: list[ChunkJob] = []
        pos = off
        while pos < end:
            index, inner = divmod(pos, BLOCK_SIZE)
            n = min(BLOCK_SIZE - inner, end - pos)
            src = view[pos - off : pos - off + n]
            if n == BLOCK_SIZE:
                self._dirty_lru.pop((ino, index), None)
                jobs.append(buf.take_whole(index, bytes(src), self._epoch))
                pos += n
                continue
            block = self._dirty_block(buf, inode, index)
            if len(block) < inner:
                block.extend(bytes(inner - len(block)))
            block[inner : inner + n] = src
            if inner + n == BLOCK_SIZE:
                self._dirty_lru.pop((ino, index), None)
                jobs.append(buf.take(index, self._epoch))
            pos += n
        if end > buf.size:
            buf.size = end
        now = now_ns()
        buf.mtime_ns = buf.ctime_ns = now
        buf.changed = True
        handle.wrote = True
        if ctx is not None and not ctx.is_root and inode.mode & (stat.S_ISUID | stat.S_ISGID):
            self._change_attrs(ino, {"mode": _kill_priv(inode.mode), "ctime_ns": now})
        while len(self._dirty_lru) > MAX_DIRTY_BLOCKS:
            (old_ino, old_index), _ = self._dirty_lru.popitem(last=False)
            old_buf = self._buffers.get(old_ino)
            if old_buf is not None and old_index in old_buf.dirty:
                jobs.append(old_buf.take(old_index, self._epoch))
        return jobs

    def chunk_stored(self, job: ChunkJob, chunk_hash: bytes) -> None:
        """``job`` was stored as ``chunk_hash`` (call on the owner thread).

        A job from before the last gc stays in ``storing``: the commit stores
        its data again rather than trust a chunk the gc may have dropped.
        """
        self._cache_chunk(chunk_hash, job.data)
        buf = self._buffers.get(job.ino)
        if buf is not None and job.epoch == self._epoch:
            buf.finish(job, chunk_hash)

    def gc_done(self) -> None:
        """A store gc ran: chunks no version referenced may be gone.

        The caller committed every buffer right before the gc (so no
        ``stored`` hash was unreferenced then) and ran it with no request in
        between; jobs still in flight are distrusted from now on.
        """
        self._epoch += 1

    def store_jobs(self, jobs: list[ChunkJob]) -> None:
        """Store ``jobs`` right here (the synchronous path)."""
        for job in jobs:
            self.chunk_stored(job, self.put_chunk(job.data))

    def put_chunk(self, data: bytes) -> bytes:
        """``store.put_chunk`` with a failure turning the fs read-only. Thread-safe."""
        try:
            return self.store.put_chunk(data)
        except StoreError as exc:
            raise self._store_failed(exc) from exc

    def write(self, fh: int, off: int, data: bytes, ctx: Ctx | None = None) -> int:
        """pwrite(2): buffered; completed blocks are stored before returning."""
        self.store_jobs(self.write_buffered(fh, off, data, ctx))
        return len(data)

    def pending_jobs(self, ino: int) -> list[ChunkJob]:
        """Every dirty block of ``ino`` as a job: the expensive half of a commit."""
        buf = self._buffers.get(ino)
        if buf is None:
            return []
        self._refuse_unsaved(ino, buf)
        jobs = []
        for index in list(buf.dirty):
            self._dirty_lru.pop((ino, index), None)
            jobs.append(buf.take(index, self._epoch))
        return jobs

    def needs_commit(self, ino: int) -> bool:
        buf = self._buffers.get(ino)
        return buf is not None and buf.changed

    def dirty_inodes(self) -> list[int]:
        """Files with changes to commit (none once read-only: they can only fail)."""
        if self.read_only_reason is not None:
            return []
        return [ino for ino, buf in self._buffers.items() if buf.changed]

    def commit(self, ino: int) -> int | None:
        """Record the buffered changes of ``ino`` as one new version.

        Blocks still dirty are stored here first (inline). Returns the logseq
        of the new version, or None if nothing changed. The record is
        ordered in the log at once; durability comes with the next publish.
        """
        buf = self._buffers.get(ino)
        if buf is None:
            return None
        if not buf.changed:
            if buf.settled:
                del self._buffers[ino]
            return None
        self._refuse_unsaved(ino, buf)
        self.store_jobs(self.pending_jobs(ino))
        # A job taken earlier may still be in flight in a worker thread: its
        # data is immutable, so storing it again here gives the same hash.
        for index, data in list(buf.storing.items()):
            self.chunk_stored(ChunkJob(ino, index, data, self._epoch), self.put_chunk(data))
        if self.store.get_inode(ino) is None:
            del self._buffers[ino]
            return None
        with self._txn() as t:
            t.set_blocks(ino, dict(buf.stored), buf.size)
            t.update(ino, mtime_ns=buf.mtime_ns, ctime_ns=buf.ctime_ns, **buf.attrs)
        del self._buffers[ino]
        return t.logseq

    def _refuse_unsaved(self, ino: int, buf: FileBuffer) -> None:
        """Read-only now: drop ``ino``'s unsaved changes and fail the request that wanted them kept.

        The changes can never be stored, so the file's next flush, fsync or
        close reports it (EROFS) once — like a lost write-back — and later
        reads show the last recorded version.
        """
        if self.read_only_reason is not None and buf.changed:
            self._discard_buffer(ino)
            raise FsError(errno.EROFS)

    def commit_all(self) -> None:
        """Commit every buffered file (before a publish for sync/unmount).

        Read-only, nothing: each file's own flush/fsync/close reports its loss.
        """
        if self.read_only_reason is not None:
            return
        for ino in list(self._buffers):
            self.commit(ino)

    def flush(self, fh: int) -> None:
        """close(2) of one descriptor: the new version is recorded now."""
        handle = self._handle(fh)
        if handle.ino < SNAP_BASE:
            self.commit(handle.ino)

    def fsync(self, fh: int | None, ino: int) -> None:
        """fsync(2): the file's version and everything before it are durable."""
        if ino < SNAP_BASE:
            self.commit(ino)
        self.publish()

    def publish(self) -> None:
        """Make everything recorded durable. Read-only, it still tries when the
        store holds unpublished records (space may have been freed since)."""
        if self.read_only_reason is not None and not self.store.dirty:
            return
        try:
            self.store.publish()
        except StoreError as exc:
            raise self._store_failed(exc) from exc

    def release(self, fh: int) -> None:
        """Last close of a descriptor: commit, drop the handle, maybe delete."""
        handle = self._handles.pop(fh, None)
        if handle is None or handle.ino >= SNAP_BASE:
            return
        ino = handle.ino
        self.commit(ino)
        left = self._open_count.get(ino, 0) - 1
        if left > 0:
            self._open_count[ino] = left
        else:
            self._open_count.pop(ino, None)
            self._maybe_delete(ino)

    def sync(self) -> None:
        """syncfs: commit every buffered file, then publish."""
        self.commit_all()
        self.publish()

    def close(self) -> None:
        """Unmount: commit buffers, delete orphans, publish."""
        self._handles.clear()
        self._open_count.clear()
        self._lookups.clear()
        if self.read_only_reason is not None:
            return  # nothing more can be recorded; the store's close publishes what it can
        self.commit_all()
        for ino in list(self._orphans):
            self._maybe_delete(ino)
        self.publish()

    # ------------------------------------------------------------------ rollback

    def after_rollback(self) -> None:
        """The store's head jumped: drop every in-memory view of the old head.

        The caller committed all buffers before the rollback, so nothing is
        lost here; handles to inodes that no longer exist fail with ENOENT.
        """
        for ino in list(self._buffers):
            self._discard_buffer(ino)
        self._orphans = {ino for ino in self._orphans if self.store.get_inode(ino) is not None}
        self._parents = {ROOT_INO: ROOT_INO}
        self.snapshots_changed()

    def head_moved(self, changes: Any) -> None:
        """A read-only mount's store took the writer's new publishes (``Store.apply_head``):
        drop what this layer derived from the old head. ``changes`` is its ``HeadChanges``."""
        if changes.everything:
            self.after_rollback()
            return
        for ino in changes.inodes - {ROOT_INO}:
            self._parents.pop(ino, None)  # a moved directory's '..' is looked up again
        if changes.snapshots:
            self.snapshots_changed()

    def known_inodes(self) -> list[int]:
        """Inodes the kernel holds references to (for cache invalidation)."""
        return list(self._lookups)

    def kernel_knows(self, ino: int) -> bool:
        """Whether the kernel may cache ``ino`` (the root, or an inode it looked up)."""
        return ino == ROOT_INO or ino in self._lookups


class _Txn:
    """``store.transaction()`` with a StoreError turned into FsError(errno) (and read-only)."""

    def __init__(self, fs: FileSystem) -> None:
        self._fs = fs
        self._cm = fs.store.transaction()

    def __enter__(self) -> Any:
        try:
            return self._cm.__enter__()
        except StoreError as exc:
            raise self._fs._store_failed(exc) from exc

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._cm.__exit__(*exc_info)  # a store transaction never swallows an exception
        except StoreError as exc:
            raise self._fs._store_failed(exc) from exc


def _with_pending(inode: Any, buf: FileBuffer | None) -> Any:
    """``inode`` with the attribute changes pending in ``buf`` applied (a copy).

    A shallow copy of the instance dict, not ``dataclasses.replace`` (~5 µs:
    it re-runs ``__init__`` and ``__post_init__``): this is on the getattr path
    of every file being written.
    """
    if buf is None or not buf.attrs:
        return inode
    clone = object.__new__(type(inode))
    vars(clone).update(vars(inode), **buf.attrs)
    return clone


def _kill_priv(mode: int) -> int:
    """Clear set-user-ID, and set-group-ID when group-executable (POSIX)."""
    mode &= ~stat.S_ISUID
    if mode & stat.S_IXGRP:
        mode &= ~stat.S_ISGID
    return mode

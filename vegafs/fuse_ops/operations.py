"""VegaOperations: pyfuse3 requests -> FileSystem calls, failures -> errno.

Each handler is a few lines: translate arguments, call the fs, translate the
result. Blocking work (reading and storing chunks, publishing) goes to a
worker thread so the trio thread keeps serving other requests; everything
else is in-memory work on the trio thread.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pyfuse3
import trio

from vegafs.fs import SNAP_BASE, Attr, Ctx, FileSystem, FsError
from vegafs.fs.buffers import ChunkJob
from vegafs.store import BLOCK_SIZE

log = logging.getLogger("vegafs.fuse")

# How long the kernel may trust what we told it. Every change goes through the
# kernel except a rollback and hook transformations, and those invalidate the
# kernel's caches explicitly, so long timeouts are safe (docs/consistency.md).
ENTRY_TIMEOUT = 300.0
ATTR_TIMEOUT = 300.0
# Buffered data up to this size is hashed and stored on the trio thread at
# close: cheaper than a worker-thread trip (~100 µs) for small files.
INLINE_STORE_MAX = 64 * 1024

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def errno_guard(handler: F) -> F:
    """Turn every failure of ``handler`` into a FUSEError: the daemon never dies.

    FsError and OSError keep their errno; anything else is a bug, logged with
    its traceback and answered with EIO. trio's Cancelled (a BaseException)
    passes through, as it must.
    """

    @functools.wraps(handler)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except FsError as exc:
            raise pyfuse3.FUSEError(exc.errno) from None
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("internal error in %s", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return guarded  # type: ignore[return-value]


def _ctx(ctx: Any) -> Ctx:
    return Ctx(uid=ctx.uid, gid=ctx.gid, pid=ctx.pid)


class VegaOperations(pyfuse3.Operations):
    """The pyfuse3 face of a :class:`FileSystem`."""

    supports_dot_lookup = True
    # Off by default: streaming 1 MiB writes measured 300-370 MB/s with it
    # and 435-520 MB/s without (the kernel throttles FUSE dirty pages with a
    # strict limit), and without it the daemon sees every write at once.
    enable_writeback_cache = False

    def __init__(self, fs: FileSystem, *, writeback_cache: bool = False) -> None:
        super().__init__()
        self.fs = fs
        self.enable_writeback_cache = writeback_cache
        # Data version each inode had when the kernel last cached its pages:
        # an open keeps the page cache only if nothing else changed the file.
        self._cached_version: dict[int, int] = {}
        # Chunks being fetched by a worker thread, and the event set when done.
        self._fetching: dict[bytes, trio.Event] = {}

    # ---------------------------------------------------------------- helpers

    def entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = attr.ino
        e.generation = 0
        e.entry_timeout = ENTRY_TIMEOUT
        e.attr_timeout = ATTR_TIMEOUT
        e.st_mode = attr.mode
        e.st_nlink = attr.nlink
        e.st_uid = attr.uid
        e.st_gid = attr.gid
        e.st_rdev = attr.rdev
        e.st_size = attr.size
        e.st_blksize = BLOCK_SIZE
        e.st_blocks = attr.blocks
        e.st_atime_ns = attr.atime_ns
        e.st_mtime_ns = attr.mtime_ns
        e.st_ctime_ns = attr.ctime_ns
        return e

    async def store_jobs(self, jobs: list[ChunkJob]) -> None:
        """Hash and store ``jobs`` in a worker thread, then record the hashes."""
        if not jobs:
            return
        put = self.fs.put_chunk  # a store failure turns the fs read-only
        hashes = await trio.to_thread.run_sync(lambda: [put(job.data) for job in jobs])
        for job, chunk_hash in zip(jobs, hashes, strict=True):
            self.fs.chunk_stored(job, chunk_hash)

    async def commit(self, ino: int) -> None:
        """Record ``ino``'s buffered changes as one version, hashing off-thread."""
        if ino >= SNAP_BASE or not self.fs.needs_commit(ino):
            return
        jobs = self.fs.pending_jobs(ino)
        if sum(len(job.data) for job in jobs) > INLINE_STORE_MAX:
            await self.store_jobs(jobs)
        else:
            # A small file: hashing a few KiB costs less than the thread trip.
            self.fs.store_jobs(jobs)
        self.fs.commit(ino)
        inode = self.fs.store.get_inode(ino)
        if inode is not None:
            self._cached_version[ino] = inode.version

    async def commit_all(self) -> None:
        for ino in self.fs.dirty_inodes():
            await self.commit(ino)

    async def publish(self) -> None:
        """Make everything so far durable (the store's publish, off-thread)."""
        await trio.to_thread.run_sync(self.fs.publish)

    async def sync(self) -> None:
        """syncfs: commit every buffered file and publish."""
        await self.commit_all()
        await self.publish()

    def forget_cached_versions(self) -> None:
        """After a rollback no page cache content may be trusted."""
        self._cached_version.clear()

    # -------------------------------------------------------------- namespace

    @errno_guard
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> Any:
        return self.entry(self.fs.lookup(parent_inode, name))

    @errno_guard
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for ino, count in inode_list:
            self.fs.forget(ino, count)
            if not self.fs.lookup_count(ino):
                # The kernel evicted the inode and its pages with it.
                self._cached_version.pop(ino, None)

    @errno_guard
    async def getattr(self, inode: int, ctx: Any = None) -> Any:
        return self.entry(self.fs.getattr(inode))

    @errno_guard
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> Any:
        result = self.fs.setattr(
            inode,
            _ctx(ctx),
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            ctime_ns=attr.st_ctime_ns if fields.update_ctime else None,
        )
        if fields.update_size and fh is None:
            # truncate(2) by path is finished when it returns: record it now, like a
            # rename, even if another handle (a reader, a hook) keeps the file open, so
            # a later fsync covers it (ftruncate stays in its writer's session).
            await self.commit(inode)
        return self.entry(result)

    @errno_guard
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return self.fs.readlink(inode)

    @errno_guard
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: Any) -> Any:
        return self.entry(self.fs.mknod(parent_inode, name, mode, rdev, _ctx(ctx)))

    @errno_guard
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> Any:
        return self.entry(self.fs.mkdir(parent_inode, name, mode, _ctx(ctx)))

    @errno_guard
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self.fs.unlink(parent_inode, name, _ctx(ctx))

    @errno_guard
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self.fs.rmdir(parent_inode, name, _ctx(ctx))

    @errno_guard
    async def symlink(self, parent_inode: int, name: bytes, target: bytes, ctx: Any) -> Any:
        return self.entry(self.fs.symlink(parent_inode, name, target, _ctx(ctx)))

    @errno_guard
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> None:
        self.fs.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags, _ctx(ctx))

    @errno_guard
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> Any:
        return self.entry(self.fs.link(inode, new_parent_inode, new_name, _ctx(ctx)))

    # ------------------------------------------------------------ directories

    @errno_guard
    async def opendir(self, inode: int, ctx: Any) -> int:
        return self.fs.opendir(inode)

    @errno_guard
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        for entry in self.fs.readdir(fh, start_id):
            if not pyfuse3.readdir_reply(token, entry.name, self.entry(entry.attr), entry.next_off):
                break
            if entry.name not in (b".", b".."):
                self.fs.lookup_done(entry.attr.ino)

    @errno_guard
    async def releasedir(self, fh: int) -> None:
        self.fs.releasedir(fh)

    @errno_guard
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        await self.sync()

    @errno_guard
    async def statfs(self, ctx: Any) -> Any:
        st = self.fs.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = st.bsize
        out.f_frsize = st.frsize
        out.f_blocks = st.blocks
        out.f_bfree = st.bfree
        out.f_bavail = st.bavail
        out.f_files = st.files
        out.f_ffree = st.ffree
        out.f_favail = st.favail
        out.f_namemax = st.namemax
        return out

    # ------------------------------------------------------------------ files

    def _file_info(self, fh: int, ino: int, flags: int) -> pyfuse3.FileInfo:
        """keep_cache only when the file did not change behind the kernel's back."""
        version = None
        if ino < SNAP_BASE:
            inode = self.fs.store.get_inode(ino)
            version = inode.version if inode is not None else None
        keep = ino >= SNAP_BASE or (
            version is not None and self._cached_version.get(ino) == version
        )
        if version is not None:
            self._cached_version[ino] = version
        # hooks seam (docs/hooks.md, "Hooks and the page cache"): "direct" for a
        # read transform (readers must see its output, never cached stored
        # bytes), "fresh" for other read hooks (cache dropped at each open).
        hooked = getattr(self.fs, "hooked_io", None)
        io = hooked(ino, self.enable_writeback_cache) if hooked is not None else None
        if io == "direct":
            return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=True)
        keep = keep and io is None
        return pyfuse3.FileInfo(fh=fh, keep_cache=keep, direct_io=bool(flags & os.O_DIRECT))

    @errno_guard
    async def open(self, inode: int, flags: int, ctx: Any) -> Any:
        fh = self.fs.open(inode, flags, _ctx(ctx))
        return self._file_info(fh, inode, flags)

    @errno_guard
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: Any) -> Any:
        fh, attr = self.fs.create(parent_inode, name, mode, flags, _ctx(ctx))
        return self._file_info(fh, attr.ino, flags), self.entry(attr)

    @errno_guard
    async def read(self, fh: int, off: int, size: int) -> bytes | bytearray:  # type: ignore[override]
        """One worker-thread trip per request that needs the store, none otherwise.

        The reply is assembled in the worker (chunks read straight into it), so
        the trio thread only hands it to the kernel: with the mount's wide
        readahead window the kernel keeps a few 1 MiB requests in flight, and
        their store reads overlap in workers. A read hook serves its reads
        itself (``plan_read`` gives None): its chunks are fetched first.
        pyfuse3 replies with any contiguous buffer (its stub says bytes), so the
        bytearray ``fill`` built goes to the kernel without another copy.
        """
        plan = self.fs.plan_read(fh, off, size)
        if plan is None:
            needed = self.fs.missing_chunks(fh, off, size)
            if needed:
                await self.fetch(needed)
            return self.fs.read(fh, off, size)
        if plan.io:
            return await trio.to_thread.run_sync(self.fs.fill, plan)
        return self.fs.fill(plan)

    async def fetch(self, hashes: list[bytes]) -> None:
        """Load chunks into the fs cache in a worker thread, each at most once.

        The kernel sends readahead requests concurrently; a chunk another
        request is already fetching is waited for, not fetched again. A
        failed fetch is not raised here: the read then fails inline with
        the store's errno.
        """
        mine = [h for h in dict.fromkeys(hashes) if h not in self._fetching]
        others = {id(e): e for h in hashes if (e := self._fetching.get(h)) is not None}
        if mine:
            done = trio.Event()
            for h in mine:
                self._fetching[h] = done
            try:
                await trio.to_thread.run_sync(self.fs.fetch_chunks, mine)
            except FsError:
                pass
            finally:
                for h in mine:
                    del self._fetching[h]
                done.set()
        for event in others.values():
            await event.wait()

    @errno_guard
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        missing = self.fs.missing_for_write(fh, off, len(buf))
        if missing:
            await self.fetch(missing)
        await self.store_jobs(self.fs.write_buffered(fh, off, buf))
        return len(buf)

    @errno_guard
    async def flush(self, fh: int) -> None:
        await self.commit(self.fs.handle_ino(fh))
        self.fs.flush(fh)  # hooks seam: close hooks run here, their errno reaches close()

    @errno_guard
    async def release(self, fh: int) -> None:
        try:
            await self.commit(self.fs.handle_ino(fh))
        finally:
            self.fs.release(fh)

    @errno_guard
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.commit(self.fs.handle_ino(fh))
        await self.publish()

    # ----------------------------------------------------------------- xattrs

    @errno_guard
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        return self.fs.getxattr(inode, name)

    @errno_guard
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        # pyfuse3 checks XATTR_CREATE/XATTR_REPLACE itself through getxattr.
        self.fs.setxattr(inode, name, value, 0, _ctx(ctx))

    @errno_guard
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return self.fs.listxattr(inode)

    @errno_guard
    async def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        self.fs.removexattr(inode, name, _ctx(ctx))

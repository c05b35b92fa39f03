"""The seam between the filesystem and the hooks: :class:`HookedFileSystem`.

Why a subclass: vegafs.fs must not import the hooks (layering), and its
methods are the exact operation points hooks attach to. ``HookedFileSystem``
overrides those methods, asks the :class:`~vegafs.hooks.engine.HookEngine`
for matching hooks, runs the synchronous ones before the operation (a denial
raises ``FsError(errno)``, which the FUSE layer returns to the caller), lets
the operation happen through ``super()``, and publishes the event to
after-hooks once it succeeded. With no hooks loaded each override costs one
method call and a dict lookup before deferring to ``super()``.

Event points (docs/hooks.md): ``read`` (``read``), ``write``
(``write_buffered``, which ``write`` uses), ``truncate`` (``setattr`` with a
size, also ``open`` with O_TRUNC), ``close`` (``flush``/``release`` of a
handle that wrote, after the new version is recorded: a denial is the
``close()`` errno), ``commit`` (``setxattr``/``removexattr``: the pending
change, amendable), ``create``/``mkdir`` (``_make``), ``unlink``, ``rmdir``,
``rename``. Snapshot views (read-only) never run hooks.

Paths: the filesystem works on inodes; hooks see paths relative to the mount
root. The kernel always looks a name up before using its inode, so each
lookup/create/rename records the inode's (parent, name); a path is rebuilt by
walking those up to the root (hard links: the name last looked up).

Read transforms: a read hook that writes ``ev.output`` replaces what readers
see. The result is cached per (inode, file version, versions of the matching
hooks), so a transform runs once per file version and hook version, and
``getattr``/``lookup`` report the transformed size (``cat``, ``cp``, ``less``
see consistent data). A file with uncommitted buffered writes is not cached.

Threads: every method runs on the filesystem's thread (the trio thread of
the daemon). After-hooks run on the engine's worker thread and reach the
filesystem through :meth:`call`, which carries the call to the trio thread
(``trio.from_thread.run_sync``) or, outside trio, serialises on a lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import blake3

from vegafs.fs import ROOT_CTX, SNAP_BASE, Attr, Ctx, FileSystem, FsError, ReadPlan
from vegafs.hooks.driver import Effect, HookDriver, StagingDriver, land
from vegafs.hooks.engine import HookEngine, LoadedHook, OpSpan, Verdict
from vegafs.hooks.events import HookEvent, PendingMeta
from vegafs.store import ROOT_INO, HeadChanges, Store, StoreError

log = logging.getLogger(__name__)

#: Bytes of transformed content kept in memory (LRU over whole files).
XFORM_CACHE_BYTES = 64 << 20
XFORM_CACHE_ENTRIES = 100_000  # also bounds the "no transform" answers, which weigh nothing
#: Transforms up to this size are also kept in the store (one chunk each).
XFORM_STORE_MAX = 16 << 20
XFORM_KIND = "hooks.xform"
#: Largest file whose whole content a read or close hook gets as ``ev.data``.
MAX_EVENT_DATA = 256 << 20
_MAX_DEPTH = 4096
_PATHS_MAX = 65536
#: The event fields an after-hook gets (plain data: it runs later, maybe after a remount).
_AFTER_FIELDS = frozenset({"offset", "size", "file_size", "old_path", "new_path"})
T = TypeVar("T")
_SEARCH_LIMIT = 200_000


class HookedFileSystem(FileSystem):
    """A :class:`FileSystem` that runs hooks at its operation points."""

    def __init__(self, store: Store, engine: HookEngine, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self.hooks = engine
        self._names: dict[int, tuple[int, bytes]] = {}
        self._paths: dict[int, str] = {}  # ino -> path (see path_of)
        self._fh_ctx: dict[int, Ctx] = {}
        self._xform: OrderedDict[tuple[Any, ...], bytes | None] = OrderedDict()
        self._xform_bytes = 0
        self._amend: dict[bytes, bytes | None] | None = None
        self._accepted: dict[int, tuple[int, dict[int, bytes]]] = {}  # see revert()
        self._stored_xforms: dict[str, bytes] = {}  # see _store_xform()
        for _, payload in store.annotations(XFORM_KIND):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                record = json.loads(payload)
                self._stored_xforms[record["key"]] = bytes.fromhex(record["chunk"])
        # What hooks' own VFS calls changed: the kernel did not see those
        # changes go by, so its caches of them must be dropped (_tell_kernel).
        self._behind_kernel = HeadChanges(0)
        #: Called on the filesystem's thread with those changes when the hooked
        #: operation (or the after-hook's call) ends; the daemon invalidates
        #: the kernel's caches with it. None: nobody caches (tests, tools).
        self.kernel_notify: Callable[[HeadChanges], None] | None = None
        self._lock = threading.RLock()
        self._trio_token: Any = None
        self._bind_tried = False
        self._owner: threading.Thread | None = None
        engine.attach(self)

    # ------------------------------------------------------------------ host side

    def bind_trio(self) -> None:
        """Remember the trio loop this filesystem runs on (call from the trio
        thread); after-hooks then reach the filesystem through it."""
        import trio

        self._trio_token = trio.lowlevel.current_trio_token()
        self._owner = threading.current_thread()

    def _maybe_bind(self) -> None:
        if self._trio_token is None and not self._bind_tried:
            self._bind_tried = True
            with contextlib.suppress(RuntimeError):  # not inside trio: tests and tools
                self.bind_trio()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the filesystem's thread with hooks suppressed."""

        def run() -> Any:
            with self.hooks.suppress():
                try:
                    return fn()
                finally:
                    self._tell_kernel()

        if self._trio_token is not None and threading.current_thread() is not self._owner:
            import trio

            return trio.from_thread.run_sync(run, trio_token=self._trio_token)
        with self._lock:
            return run()

    def driver(self, *, from_worker: bool) -> Any:
        return HookDriver(self, via_call=from_worker)

    def staging_driver(self, accepted: list[Effect]) -> StagingDriver:
        """A synchronous hook's driver: its effects are staged (see land)."""
        return StagingDriver(self, accepted)

    # ------------------------------------------------------------------ paths

    def _note(self, parent: int, name: bytes, ino: int) -> None:
        if ino < SNAP_BASE and parent < SNAP_BASE and name not in (b".", b".."):
            entry = (parent, name)
            old = self._names.get(ino)
            if old != entry:
                if old is not None and self._paths:
                    self._paths.clear()  # a rename: cached paths below it may be stale
                self._names[ino] = entry

    def _forget_path(self, ino: int, is_dir: bool) -> None:
        """``ino`` lost the name its cached path was built from. For a directory,
        every cached path below it is stale too, whether or not its own was cached
        (paths are cached per inode, not per directory on the way)."""
        self._paths.pop(ino, None)
        if is_dir:
            self._paths.clear()

    def _is_dir(self, ino: int) -> bool:
        inode = self.store.get_inode(ino)
        return inode is not None and stat.S_ISDIR(inode.mode)

    def forget(self, ino: int, count: int) -> None:
        """The kernel dropped references to ``ino``: once it holds none, its name
        is dropped too, so ``_names`` is bounded by what the kernel caches, not by
        the files ever written. Ancestors of anything the kernel holds are held
        too (a dentry pins its parent), so chains stay whole; a name needed later
        (an after-hook) is searched again (``_search``)."""
        super().forget(ino, count)
        if not self.lookup_count(ino) and self._names.pop(ino, None) is not None:
            self._paths.pop(ino, None)

    def path_of(self, ino: int) -> str | None:
        """The path of ``ino`` relative to the mount root, or None if unreachable.
        Cached per inode (every hooked operation asks) until a rename or removal."""
        path = self._paths.get(ino)
        if path is not None:
            return path
        parts: list[bytes] = []
        current = ino
        for _ in range(_MAX_DEPTH):
            if current == ROOT_INO:
                path = "/" + "/".join(os.fsdecode(p) for p in reversed(parts))
                break
            entry = self._names.get(current)
            if entry is None:
                base = self._search(current)
                if base is None:
                    return None
                path = base + "".join("/" + os.fsdecode(p) for p in reversed(parts))
                break
            parts.append(entry[1])
            current = entry[0]
        else:
            return None
        if len(self._paths) >= _PATHS_MAX:
            self._paths.clear()
        self._paths[ino] = path
        return path

    def _search(self, target: int) -> str | None:
        """The path of ``target``, found by walking the tree from the root; only
        needed for an inode whose name the kernel never looked up in this mount
        (or has forgotten), e.g. an after-hook journaled by the previous one.
        The names seen are not kept: ``_names`` holds only what the kernel holds."""
        queue: deque[int] = deque([ROOT_INO])
        seen: dict[int, tuple[int, bytes]] = {}
        while queue and len(seen) < _SEARCH_LIMIT:
            parent = queue.popleft()
            for name, child in self.store.listdir(parent):
                seen.setdefault(child, (parent, name))
                if child == target:
                    parts: list[bytes] = []
                    while child != ROOT_INO:
                        parent, name = seen[child]
                        parts.append(name)
                        child = parent
                    return "/" + "/".join(os.fsdecode(p) for p in reversed(parts))
                inode = self.store.get_inode(child)
                if inode is not None and stat.S_ISDIR(inode.mode):
                    queue.append(child)
        return None

    def _child_path(self, parent: int, name: bytes, event: str | None = None) -> str | None:
        """The path of ``name`` in directory ``parent``. With ``event``: only
        if a hook of that event may watch it — None (nothing to run)
        otherwise, decided before the path is built."""
        base = self.path_of(parent)
        if base is None or (event is not None and not self.hooks.watches_inside(event, base)):
            return None
        return (base if parent != ROOT_INO else "") + "/" + os.fsdecode(name)

    def _watched_child(self, event: str, parent: int, name: bytes) -> str | None:
        """The path of ``name`` in ``parent`` if a hook of ``event`` may watch it."""
        return self._child_path(parent, name, event) if self.hooks.wants(event) else None

    def lookup_path(self, path: str) -> int | None:
        """Inode of ``path`` (relative to the mount root) in the live tree."""
        ino = ROOT_INO
        for part in (p for p in path.split("/") if p):
            child = self.store.lookup(ino, os.fsencode(part))
            if child is None:
                return None
            self._note(ino, os.fsencode(part), child)
            ino = child
        return ino

    # ------------------------------------------------------------------ dispatch

    def _guarded(
        self,
        event: str,
        path: str | None,
        ctx: Ctx | None,
        op: Callable[[Verdict | None], T],
        *,
        matched: tuple[Sequence[LoadedHook], Sequence[LoadedHook]] | None = None,
        nbytes: int = 0,
        **fields: Any,
    ) -> T:
        """One operation under its hooks: run the synchronous hooks of ``event``
        on ``path`` (a denial raises FsError before anything happens), then
        ``op(verdict)``, the hooks' staged effects and the after-hook journal as
        ONE store record (a store batch), then queue the after-hooks. The
        operation is one span, the parent of its hook runs' spans. With no hook
        matching (``matched``: the engine's answer, if the caller has it) this
        is just ``op(None)``."""
        if path is None:
            return op(None)
        on, after = self.hooks.match_all(event, path) if matched is None else matched
        if not on and not after:
            return op(None)
        if self._trio_token is None:
            self._maybe_bind()
        ctx = ctx or ROOT_CTX
        span = OpSpan(event)
        failed: FsError | None = None
        jobs: list[Any] = []
        try:
            verdict = None
            if on:
                ev = HookEvent(event, path, uid=ctx.uid, gid=ctx.gid, pid=ctx.pid, **fields)
                verdict = self.hooks.run_on(on, ev, span.trace_id, span.span_id)
                if not verdict.allowed:
                    span.denied = True
                    raise FsError(verdict.errno, verdict.message)
            if not after and (verdict is None or not verdict.effects):
                return op(verdict)
            with self.store.batch():
                result = op(verdict)
                if verdict is not None and verdict.effects:
                    with self.hooks.suppress():
                        land(self, verdict.effects)
                if after:
                    plain = {k: v for k, v in fields.items() if k in _AFTER_FIELDS}
                    jobs = self.hooks.publish_after(
                        after,
                        {
                            "event": event,
                            "path": path,
                            "uid": ctx.uid,
                            "gid": ctx.gid,
                            "pid": ctx.pid,
                            **plain,
                        },
                        span,
                    )
        except FsError as exc:
            failed = exc
            raise
        except StoreError as exc:  # the batch's record could not be appended
            failed = FsError(exc.errno or errno.EIO, str(exc))
            raise failed from exc
        finally:
            self._tell_kernel()  # staged effects landed, or a revert applied at once
            self.hooks.op_span(
                span,
                path,
                failed.errno if failed is not None else 0,
                str(failed) if failed is not None else "",
                nbytes,
            )
        self.hooks.submit(jobs)
        return result

    # ------------------------------------------------------------------ namespace

    def lookup(self, parent: int, name: bytes) -> Attr:
        attr = super().lookup(parent, name)
        self._note(parent, name, attr.ino)
        self._transformed_attr(attr)
        return attr

    def getattr(self, ino: int) -> Attr:
        attr = super().getattr(ino)
        self._transformed_attr(attr)
        return attr

    def link(self, ino: int, parent: int, name: bytes, ctx: Ctx) -> Attr:
        attr = super().link(ino, parent, name, ctx)
        self._note(parent, name, attr.ino)
        return attr

    def _make(self, parent: int, name: bytes, mode: int, ctx: Ctx, **kwargs: Any) -> Attr:
        event = "mkdir" if stat.S_ISDIR(mode) else "create"

        def make(_: Verdict | None) -> Attr:
            return super(HookedFileSystem, self)._make(parent, name, mode, ctx, **kwargs)

        attr = self._guarded(event, self._watched_child(event, parent, name), ctx, make)
        self._note(parent, name, attr.ino)
        return attr

    def _remove(
        self, event: str, parent: int, name: bytes, ctx: Ctx, remove: Callable[[], None]
    ) -> None:
        ino = self.store.lookup(parent, name)
        self._guarded(event, self._watched_child(event, parent, name), ctx, lambda _: remove())
        if ino is not None:
            if self._names.get(ino) == (parent, name):
                del self._names[ino]
            self._forget_path(ino, event == "rmdir")
        if ino is not None and self.store.get_inode(ino) is None:
            self._accepted.pop(ino, None)

    def unlink(self, parent: int, name: bytes, ctx: Ctx) -> None:
        self._remove(
            "unlink",
            parent,
            name,
            ctx,
            lambda: super(HookedFileSystem, self).unlink(parent, name, ctx),
        )

    def rmdir(self, parent: int, name: bytes, ctx: Ctx) -> None:
        self._remove(
            "rmdir",
            parent,
            name,
            ctx,
            lambda: super(HookedFileSystem, self).rmdir(parent, name, ctx),
        )

    def rename(
        self, old_parent: int, old: bytes, new_parent: int, new: bytes, flags: int, ctx: Ctx
    ) -> None:
        src = self.store.lookup(old_parent, old)
        dst = self.store.lookup(new_parent, new)

        def move(_: Verdict | None) -> None:
            super(HookedFileSystem, self).rename(old_parent, old, new_parent, new, flags, ctx)

        old_path = self._watched_child("rename", old_parent, old)
        if old_path is None:
            move(None)
        else:
            new_path = self._child_path(new_parent, new)
            self._guarded("rename", old_path, ctx, move, old_path=old_path, new_path=new_path)
        if src is not None:
            self._forget_path(src, self._is_dir(src))
            self._note(new_parent, new, src)
        if dst is not None and dst != src:
            self._forget_path(dst, self._is_dir(dst))
            if flags & 2:  # RENAME_EXCHANGE
                self._note(old_parent, old, dst)
            elif self._names.get(dst) == (new_parent, new):
                del self._names[dst]  # replaced: it lost that name

    # ------------------------------------------------------------------ data

    def open(self, ino: int, flags: int, ctx: Ctx) -> int:
        fh = super().open(ino, flags, ctx)
        self._fh_ctx[fh] = ctx
        return fh

    def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Ctx) -> tuple[int, Attr]:
        fh, attr = super().create(parent, name, mode, flags, ctx)
        self._fh_ctx[fh] = ctx
        return fh, attr

    def _file_size(self, ino: int) -> int:
        """Size including buffered writes (what readers see, before transforms)."""
        return self._size(self._inode(ino))

    def write_buffered(
        self, fh: int, off: int, data: bytes | memoryview, ctx: Ctx | None = None
    ) -> list[Any]:
        handle = self._handles.get(fh)
        if handle is None or handle.ino >= SNAP_BASE or not self.hooks.wants("write"):
            return super().write_buffered(fh, off, data, ctx)
        file_size = self._file_size(handle.ino)
        ctx = ctx or self._fh_ctx.get(fh)
        return self._guarded(
            "write",
            self.path_of(handle.ino),
            ctx,
            lambda _: super(HookedFileSystem, self).write_buffered(fh, off, data, ctx),
            nbytes=len(data),
            offset=file_size if handle.flags & os.O_APPEND else off,
            size=len(data),
            data=data,
            file_size=file_size,
        )

    def setattr(self, ino: int, ctx: Ctx, **changes: Any) -> Attr:
        size = changes.get("size")
        if size is None or ino >= SNAP_BASE or not self.hooks.wants("truncate"):
            return super().setattr(ino, ctx, **changes)
        return self._guarded(
            "truncate",
            self.path_of(ino),
            ctx,
            lambda _: super(HookedFileSystem, self).setattr(ino, ctx, **changes),
            offset=size,
            size=size,
            file_size=self._file_size(ino),
        )

    def flush(self, fh: int) -> None:
        handle = self._handles.get(fh)
        super().flush(fh)
        if handle is not None and handle.wrote and handle.ino < SNAP_BASE:
            handle.wrote = False
            self._closed(handle.ino, self._fh_ctx.get(fh), report=True)

    def release(self, fh: int) -> None:
        handle = self._handles.get(fh)
        ctx = self._fh_ctx.pop(fh, None)
        super().release(fh)
        if handle is not None and handle.wrote and handle.ino < SNAP_BASE:
            handle.wrote = False
            self._closed(handle.ino, ctx, report=False)

    def _closed(self, ino: int, ctx: Ctx | None, *, report: bool) -> None:
        """A handle that wrote was closed: run ``close`` hooks on the new version
        (already recorded: the hooks judge it; their effects are one record)."""
        if not self.hooks.wants("close"):
            return
        path = self.path_of(ino)
        if path is None or self.store.get_inode(ino) is None:
            return
        size = self._file_size(ino)

        def accept(verdict: Verdict | None) -> None:
            if verdict is not None:  # the close hooks allowed this content: see revert()
                inode = self._inode(ino)
                self._accepted[ino] = (inode.size, dict(inode.blocks))

        try:
            self._guarded(
                "close",
                path,
                ctx,
                accept,
                size=size,
                file_size=size,
                load_data=lambda: self._event_data(ino, size),
            )
        except FsError:
            if report:
                raise
            # release has no caller to tell; the span recorded the denial

    def _event_data(self, ino: int, size: int) -> bytes | None:
        """``ev.data`` of a read/close event: the whole file, or nil past the cap
        (a hook must not make the daemon load a huge file into memory)."""
        if size > MAX_EVENT_DATA:
            return None
        return self.read_all(ino)

    def read_all(self, ino: int) -> bytes:
        """The current content of file ``ino`` (committed or buffered)."""
        fh = super().open(ino, os.O_RDONLY, ROOT_CTX)
        try:
            return super().read(fh, 0, self._file_size(ino))
        finally:
            self._handles.pop(fh, None)
            left = self._open_count.get(ino, 0) - 1
            if left > 0:
                self._open_count[ino] = left
            else:
                self._open_count.pop(ino, None)

    # ------------------------------------------------------------------ read transforms

    def hooked_io(self, ino: int, writeback_cache: bool = False) -> str | None:
        """How the kernel should cache ``ino`` at this open, given its hooks.

        ``"direct"`` (direct I/O: every read and write reaches the daemon, no
        mmap) when a read hook that may *transform* matches (readers must see
        its output, not cached stored bytes, and the size differs), or, with
        the kernel's writeback cache on, when a write hook matches (it would
        otherwise run at writeback, after write() returned).
        ``"fresh"`` (page cache kept while the file is open, dropped at this
        open) when other read hooks match: each open's reads reach them again,
        mmap works. None: no hook cares; the usual caching. Write hooks need
        nothing without the writeback cache: every write() is sent to the
        daemon before it returns, and a refused write leaves no cached page
        marked valid (the kernel clears them on a failed write).
        """
        if ino >= SNAP_BASE:
            return None
        reads, writes = self.hooks.wants("read"), writeback_cache and self.hooks.wants("write")
        if not reads and not writes:
            return None
        path = self.path_of(ino)
        if path is None:
            return None
        mode = None
        if reads:
            on, after = self.hooks.match_all("read", path)
            if self.hooks.transforms(on):
                return "direct"
            if on or after:
                mode = "fresh"
        if writes and any(self.hooks.match_all("write", path)):
            return "direct"
        return mode

    def _xform_key(self, ino: int, hooks: Sequence[LoadedHook]) -> tuple[Any, ...] | None:
        if ino in self._buffers:
            return None  # uncommitted writes: no stable version to cache against
        inode = self.store.get_inode(ino)
        if inode is None:
            return None
        # LoadedHook objects hash by identity, and a reload makes new ones: the
        # tuple names the hook versions exactly, and hashes fast.
        return (ino, inode.version, inode.size, tuple(hooks))

    def _content_id(self, ino: int) -> str:
        """A name for the committed content of ``ino`` (its size and block hashes)."""
        inode = self._inode(ino)
        digest = blake3.blake3(inode.size.to_bytes(8, "little"))
        for index in sorted(inode.blocks):
            digest.update(index.to_bytes(8, "little") + inode.blocks[index])
        return digest.hexdigest()

    @staticmethod
    def _stored_key(path: str, content_id: str, hooks: Sequence[LoadedHook]) -> str:
        return "\0".join([path, content_id, *(f"{h.key}@{h.version}" for h in hooks)])

    def _lookup_xform(
        self, ino: int, path: str, hooks: Sequence[LoadedHook], key: tuple[Any, ...] | None
    ) -> bytes | None:
        """A cached transform: from memory, else from the store (a transform
        computed by an earlier mount for the same path, content and hooks)."""
        if key is None:
            return None
        cached = self._xform.get(key)
        if cached is not None or key in self._xform or not self._stored_xforms:
            return cached
        chunk = self._stored_xforms.get(self._stored_key(path, self._content_id(ino), hooks))
        if chunk is None:
            return None
        try:
            output = self.store.read_chunk(chunk)
        except StoreError:
            return None
        self._remember_xform(key, output)
        return output

    def _store_xform(self, ino: int, path: str, hooks: Sequence[LoadedHook], output: bytes) -> None:
        """Keep a transform in the store: one chunk, one ``hooks.xform`` record."""
        if len(output) > XFORM_STORE_MAX:
            return
        stored_key = self._stored_key(path, self._content_id(ino), hooks)
        if stored_key in self._stored_xforms:
            return
        try:
            chunk = self.store.put_chunk(output)
            record = json.dumps({"key": stored_key, "chunk": chunk.hex()}).encode()
            with super()._txn() as t:
                t.annotate(XFORM_KIND, record)
        except (StoreError, FsError):
            log.warning("hooks: could not keep the transform of %s in the store", path)
            return
        self._stored_xforms[stored_key] = chunk

    def _remember_xform(self, key: tuple[Any, ...] | None, output: bytes | None) -> None:
        if key is None or (output is None and key in self._xform and self._xform[key] is None):
            return
        old = self._xform.pop(key, None)
        if old is not None:
            self._xform_bytes -= len(old)
        self._xform[key] = output
        if output is not None:
            self._xform_bytes += len(output)
        while self._xform and (
            self._xform_bytes > XFORM_CACHE_BYTES or len(self._xform) > XFORM_CACHE_ENTRIES
        ):
            _, dropped = self._xform.popitem(last=False)
            if dropped is not None:
                self._xform_bytes -= len(dropped)

    def _transformed_attr(self, attr: Attr) -> None:
        """Report the transformed size of a file that a read hook transforms."""
        if attr.ino >= SNAP_BASE or not stat.S_ISREG(attr.mode) or not self.hooks.wants("read"):
            return
        path = self.path_of(attr.ino)
        if path is None:
            return
        on = self.hooks.match("read", path)
        if not self.hooks.transforms(on):
            return  # no transform: the stored size is what readers see
        key = self._xform_key(attr.ino, on)
        output = self._lookup_xform(attr.ino, path, on, key)
        if output is None and (key is None or key not in self._xform):
            try:
                output = self._guarded(
                    "read",
                    path,
                    None,
                    lambda verdict: self._transformed(attr.ino, path, on, key, verdict),
                    matched=(on, ()),
                    offset=0,
                    size=0,
                    file_size=attr.size,
                    load_data=lambda: self._event_data(attr.ino, attr.size),
                )
            except FsError:
                return  # a denial is for readers, not for stat
        if output is not None:
            attr.size = len(output)
            attr.blocks = (len(output) + 511) // 512

    def _transformed(
        self,
        ino: int,
        path: str,
        hooks: Sequence[LoadedHook],
        key: tuple[Any, ...] | None,
        verdict: Verdict | None,
    ) -> bytes | None:
        """The read hooks ran: remember (and keep in the store) their output."""
        output = verdict.output if verdict is not None else None
        self._remember_xform(key, output)
        if key is not None and output is not None:
            self._store_xform(ino, path, hooks, output)
        return output

    def _read_hooks(
        self, fh: int
    ) -> tuple[int, str, tuple[Sequence[LoadedHook], Sequence[LoadedHook]]] | None:
        """(inode, path, matched hooks) when read hooks see a read of ``fh``; else None."""
        handle = self._handles.get(fh)
        if handle is None or handle.ino >= SNAP_BASE or not self.hooks.wants("read"):
            return None
        path = self.path_of(handle.ino)
        if path is None:
            return None
        matched = self.hooks.match_all("read", path)
        if not matched[0] and not matched[1]:
            return None
        return handle.ino, path, matched

    def plan_read(self, fh: int, off: int, size: int) -> ReadPlan | None:
        """None when read hooks see this read: :meth:`read` serves it."""
        return None if self._read_hooks(fh) is not None else super().plan_read(fh, off, size)

    def read(self, fh: int, off: int, size: int) -> bytes:
        hooked = self._read_hooks(fh)
        if hooked is None:
            return super().read(fh, off, size)
        ino, path, matched = hooked
        on = matched[0]
        key = None
        if self.hooks.transforms(on):
            key = self._xform_key(ino, on)
            cached = self._lookup_xform(ino, path, on, key)
            if cached is not None:
                return cached[off : off + size]

        def serve(verdict: Verdict | None) -> bytes:
            output = self._transformed(ino, path, on, key, verdict) if key else None
            if output is None and verdict is not None:
                output = verdict.output  # not cacheable (buffered writes): still served
            if output is not None:
                return output[off : off + size]
            return super(HookedFileSystem, self).read(fh, off, size)

        file_size = self._file_size(ino)
        return self._guarded(
            "read",
            path,
            self._fh_ctx.get(fh),
            serve,
            matched=matched,
            nbytes=size,
            offset=off,
            size=size,
            file_size=file_size,
            load_data=lambda: self._event_data(ino, file_size),
        )

    # ------------------------------------------------------------------ commit (xattrs)

    def setxattr(self, ino: int, name: bytes, value: bytes, flags: int, ctx: Ctx) -> None:
        self._commit(
            ino,
            name,
            value,
            ctx,
            lambda: super(HookedFileSystem, self).setxattr(ino, name, value, flags, ctx),
        )

    def removexattr(self, ino: int, name: bytes, ctx: Ctx) -> None:
        self._commit(
            ino, name, None, ctx, lambda: super(HookedFileSystem, self).removexattr(ino, name, ctx)
        )

    def _commit(
        self, ino: int, name: bytes, value: bytes | None, ctx: Ctx, apply: Callable[[], None]
    ) -> None:
        if ino >= SNAP_BASE or not self.hooks.wants("commit"):
            apply()
            return
        path = self.path_of(ino)
        inode = self.store.get_inode(ino)
        if path is None or inode is None:
            apply()
            return
        key = os.fsdecode(name)
        meta = PendingMeta(path, {os.fsdecode(k): v for k, v in inode.xattrs.items()}, {key: value})

        def amended(_: Verdict | None) -> None:
            """Apply the change with the hooks' amendments in the same transaction."""
            extra = {
                os.fsencode(k): v
                for k, v in meta.staged.items()
                if not (k == key and v == value)
                and not (v is None and k != key and os.fsencode(k) not in inode.xattrs)
            }
            for extra_name in extra:
                if extra_name.startswith(b"vega.") or not extra_name.startswith(
                    (b"user.", b"trusted.", b"security.")
                ):
                    raise FsError(errno.EPERM, f"a commit hook may not set {extra_name!r}")
            self._amend = extra or None
            try:
                apply()
            finally:
                self._amend = None

        self._guarded("commit", path, ctx, amended, meta=meta)

    def _txn(self) -> Any:
        txn = super()._txn()
        if self._amend is not None:
            txn = _AmendingTxn(txn, self._amend)
        return self._noted(txn)

    def _noted(self, txn: Any) -> Any:
        """``txn``, noting what it changes if a hook's own VFS call makes it
        (hooks suppressed): the kernel never saw that change (_tell_kernel)."""
        return _NotingTxn(txn, self._behind_kernel) if self.hooks.suppressed else txn

    def _tell_kernel(self) -> None:
        """Hand what hooks changed behind the kernel's back to ``kernel_notify``.

        Why: the kernel caches attributes, entries and pages for minutes
        (docs/consistency.md) because every other change passes through it;
        a hook's write to another file, its rename or its ``revert()`` does
        not, and without this a ``cat`` right after would show the old size.
        """
        changes = self._behind_kernel
        if changes.inodes or changes.entries:
            self._behind_kernel = HeadChanges(0)
            if self.kernel_notify is not None:
                self.kernel_notify(changes)

    def after_rollback(self) -> None:
        """The head jumped: names, transforms and accepted contents may all be stale."""
        super().after_rollback()
        self._names.clear()
        self._paths.clear()
        self._xform.clear()
        self._xform_bytes = 0
        self._accepted.clear()

    # ------------------------------------------------------------------ revert

    def revert(self, ino: int) -> int:
        """Restore the last accepted content of ``ino`` as a new version (history
        is kept); returns the version number that was current before.

        "Last accepted" is the content the last ``close`` hook run on this file
        allowed, in this mount. That is what a save that a hook rejects must go
        back to: an ``open(O_TRUNC)`` + write records an empty version first,
        so "the previous version" would often be empty. With no accepted save
        known (first save, or after a remount) it is the previous version in
        the store.
        """
        self.commit(ino)
        inode = self._inode(ino)
        accepted = self._accepted.get(ino)
        if accepted is not None:
            size, blocks = accepted
        else:
            versions = self.store.file_versions(ino)
            if len(versions) < 2:
                raise FsError(errno.ENOENT, "no earlier version to revert to")
            size, blocks = versions[1].size, versions[1].blocks
        delta: dict[int, bytes | None] = {i: None for i in inode.blocks if i not in blocks}
        delta.update(blocks)
        with self._noted(super()._txn()) as t:  # never amended by a commit hook
            t.set_blocks(ino, delta, size)
        return inode.version


class _AmendingTxn:
    """A transaction context that adds a commit hook's extra keys to the same
    log record as the xattr change that triggered it (one atomic commit)."""

    def __init__(self, inner: Any, amend: dict[bytes, bytes | None]) -> None:
        self._inner = inner
        self._amend = amend
        self._ino: int | None = None
        self._t: Any = None

    def __enter__(self) -> Any:
        self._t = self._inner.__enter__()
        return _Recorder(self._t, self)

    def __exit__(self, *exc_info: Any) -> bool:
        if exc_info[0] is None and self._ino is not None:
            for name, value in self._amend.items():
                if value is None:
                    self._t.remove_xattr(self._ino, name)
                else:
                    self._t.set_xattr(self._ino, name, value)
        return bool(self._inner.__exit__(*exc_info))

    @property
    def logseq(self) -> int | None:
        return self._inner.logseq


class _NotingTxn:
    """A transaction context that adds its ops to ``changes`` once it committed."""

    def __init__(self, inner: Any, changes: HeadChanges) -> None:
        self._inner = inner
        self._changes = changes
        self._t: Any = None

    def __enter__(self) -> Any:
        self._t = self._inner.__enter__()
        return self._t

    def __exit__(self, *exc_info: Any) -> bool:
        result = bool(self._inner.__exit__(*exc_info))
        if exc_info[0] is None:
            self._changes.add_ops(self._t.ops)
        return result

    @property
    def logseq(self) -> int | None:
        return self._inner.logseq


class _Recorder:
    """Forwards to the store transaction and notes which inode the xattr op is on."""

    def __init__(self, t: Any, owner: _AmendingTxn) -> None:
        self._t = t
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._t, name)
        if name in ("set_xattr", "remove_xattr"):

            def record(ino: int, *args: Any) -> Any:
                self._owner._ino = ino
                return attr(ino, *args)

            return record
        return attr

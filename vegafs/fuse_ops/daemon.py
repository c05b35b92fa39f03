"""The mount daemon: one store, one mount point, one trio thread serving FUSE.

Lifecycle: :meth:`Daemon.mount` mounts (the kernel queues requests until the
loop runs), :meth:`Daemon.run` serves until the file system is unmounted —
by ``fusermount3 -u``/``vegafs umount``, or by SIGTERM/SIGINT, which unmount
the same clean way — and :meth:`Daemon.close` commits every buffer,
publishes and releases the store. A background task publishes at most
``commit_interval`` seconds after any change (group commit).

A daemon on a read-only store mounts read-only (the kernel answers every
change with EROFS) and, with ``follow_interval``, follows the writer of the
store: it polls the store (``Store.poll_head``, off the trio thread), replays
what was published (``apply_head``, on it), and makes the kernel forget the
entries and inodes that changed (docs/s3.md, "Many readers").

Control operations (``handle``) come from the CLI through the control
socket; the socket server itself is handed in by the caller, so this layer
does not depend on the CLI.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

import pyfuse3
import trio

from vegafs.fs import SNAP_BASE
from vegafs.fuse_ops import session
from vegafs.fuse_ops.operations import VegaOperations
from vegafs.hooks import HookedFileSystem, open_engine
from vegafs.store import ROOT_INO, HeadChanges, HeadUpdate, Store, StoreError

log = logging.getLogger("vegafs.daemon")

ServeTask = Callable[..., Awaitable[None]]


def jsonable(value: Any) -> Any:
    """Dataclasses, bytes and containers as JSON-able values (bytes as hex)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    return value


def escape_option(value: str) -> str:
    """Escape a value for a FUSE ``-o`` list (commas and backslashes)."""
    return value.replace("\\", "\\\\").replace(",", "\\,")


def set_read_ahead(mountpoint: str, kb: int) -> None:
    """Widen the kernel's readahead window of a FUSE mount (its bdi's read_ahead_kb).

    Why: with the default 128 KiB, a sequential reader costs one request round
    trip through the daemon per 128 KiB; a wider window lets the kernel ask for
    more ahead while the daemon serves, which doubled cold sequential reads
    here. Needs root (sysfs); otherwise the kernel default stays, logged once.
    """
    try:
        with open("/proc/self/mountinfo") as f:
            devs = [line.split()[2] for line in f if line.split()[4] == mountpoint]
        if not devs:
            raise OSError(f"{mountpoint} is not in /proc/self/mountinfo")
        with open(f"/sys/class/bdi/{devs[-1]}/read_ahead_kb", "w") as f:
            f.write(str(kb))
    except OSError as exc:
        log.info("kept the kernel's readahead window (%s)", exc)


class Daemon:
    """Serves one store at one mount point."""

    def __init__(
        self,
        store: Store,
        mountpoint: str,
        *,
        store_dir: str,
        fuse_options: list[str] | None = None,
        commit_interval: float = 1.0,
        writeback_cache: bool = False,
        read_ahead_kb: int = 0,
        hooks_dir: str | None = None,
        follow_interval: float = 0.0,
    ) -> None:
        self.store = store
        self.follow_interval = follow_interval
        self.mountpoint = mountpoint
        self.store_dir = store_dir
        self.commit_interval = commit_interval
        self.hooks_dir = hooks_dir
        self.read_ahead_kb = read_ahead_kb
        self.hooks = open_engine(store, store_dir, hooks_dir)  # hooks seam (H7)
        self.fs = HookedFileSystem(store, self.hooks, track_lookups=True)
        # hooks seam: with the kernel's writeback cache the kernel keeps its own
        # file sizes, so stat could not report a read transform's size.
        writeback_cache = writeback_cache and not self.hooks.wants("read")
        self.ops = VegaOperations(self.fs, writeback_cache=writeback_cache)
        self.fuse_options = {
            *pyfuse3.default_options,
            f"fsname={escape_option(store_dir)}",
            "subtype=vegafs",
            *(["ro"] if store.read_only else []),
            *(fuse_options or []),
        }
        self._mounted = False
        self._unmounted_by_kernel = False
        self._terminated = False

    def mount(self) -> None:
        # A reader must not write: the writer reclaims its own orphans.
        reclaimed = 0 if self.store.read_only else self.fs.reclaim_orphans()
        if reclaimed:
            log.info("deleted %d file(s) unlinked while open before a crash", reclaimed)
        session.install()  # pyfuse3's loop polls before it waits (session.py)
        pyfuse3.init(self.ops, self.mountpoint, self.fuse_options)
        self._mounted = True
        log.info("mounted %s on %s (pid %d)", self.store_dir, self.mountpoint, os.getpid())

    async def run(self, serve_control: ServeTask | None, ready: Callable[[], None]) -> None:
        """Serve until unmounted; ``ready()`` is called once requests can flow."""
        async with trio.open_nursery() as nursery:
            if serve_control is not None:
                await nursery.start(serve_control, self.store_dir, self.handle)
            nursery.start_soon(self._group_commit)
            # Started (its receiver open) before ready(): a SIGTERM right after
            # `vegafs mount` returns must unmount cleanly, not kill the daemon.
            await nursery.start(self._signals)
            later, changes = trio.open_memory_channel[HeadChanges](math.inf)
            self.fs.kernel_notify = functools.partial(self._hooks_changed, later)
            nursery.start_soon(self._invalidate_later, changes)
            if self.store.read_only and self.follow_interval > 0:
                nursery.start_soon(self._follow)
            self.fs.bind_trio()  # hooks seam: after-hooks reach the fs through this loop
            self.hooks.replay_journal()
            if self.read_ahead_kb:
                nursery.start_soon(self._tune_read_ahead)
            ready()
            await pyfuse3.main()
            # main() returns when the kernel unmounted us, or after terminate()
            # (a busy mount point at SIGTERM): then close() detaches it lazily.
            self._unmounted_by_kernel = not self._terminated
            nursery.cancel_scope.cancel()

    def close(self) -> None:
        """Commit, publish, unmount if still mounted, release the store."""
        try:
            self.fs.close()
        finally:
            self.hooks.close()  # hooks seam: unfinished after-hooks stay journaled
            if self._mounted:
                pyfuse3.close(unmount=not self._unmounted_by_kernel)
                self._mounted = False
            try:
                self.store.close()
            except StoreError as exc:
                if self.fs.read_only_reason is None:
                    raise
                # Read-only after a store failure: the unmount itself is clean;
                # what was not published is lost, which the log says.
                log.error("unpublished changes are lost (%s); the store reopens at its last publish", exc)
            log.info("closed %s", self.store_dir)

    async def _tune_read_ahead(self) -> None:
        """Set the readahead window once the kernel's INIT is done: the INIT
        reply caps the window at what the kernel proposed, so earlier is lost.
        A stat of the mount point from a worker returns after INIT."""
        await trio.to_thread.run_sync(os.stat, self.mountpoint)
        set_read_ahead(self.mountpoint, self.read_ahead_kb)

    async def _group_commit(self) -> None:
        """Publish within ``commit_interval`` of any change (closes, metadata)."""
        while True:
            await trio.sleep(self.commit_interval)
            if self.store.dirty and self.fs.read_only_reason is None:
                try:
                    await self.ops.publish()
                except Exception:
                    log.exception("group commit failed; retrying next window")

    async def _follow(self) -> None:
        """Take the writer's new publishes every ``follow_interval`` seconds.

        A failed poll (endpoint down, a damaged log) keeps the state shown so
        far and is retried at the next interval; the same failure is logged once.
        """
        failing = ""
        while True:
            await trio.sleep(self.follow_interval)
            try:
                update = await trio.to_thread.run_sync(self.store.poll_head)
                if update is not None:
                    await self._take_head(update)
            except Exception as exc:
                if str(exc) != failing:
                    log.warning("following the writer failed (retrying): %s", exc)
                failing = str(exc)
                continue
            if failing:
                log.info("following the writer again")
                failing = ""

    async def _take_head(self, update: HeadUpdate) -> None:
        """Apply a poll's update and invalidate exactly what it changed in the kernel."""
        if update.fresh is not None:  # reloaded (the writer's gc or rollback)
            await self._jump(lambda: self.store.apply_head(update))
            return
        snapshots = {s.name for s in self.store.list_snapshots()}
        changes = self.store.apply_head(update)
        self.fs.head_moved(changes)
        entries, inodes = self._cached(changes)
        if changes.snapshots:  # /.snapshots/NAME of a snapshot created or deleted
            snapshots ^= {s.name for s in self.store.list_snapshots()}
            entries += [(SNAP_BASE, name.encode()) for name in sorted(snapshots)]
        await trio.to_thread.run_sync(_invalidate, entries, inodes)

    def _cached(self, changes: HeadChanges) -> tuple[list[tuple[int, bytes]], list[int]]:
        """The entries and inodes of ``changes`` the kernel may hold in its caches."""
        knows = self.fs.kernel_knows
        entries = [(parent, name) for parent, name in changes.entries if knows(parent)]
        return entries, sorted(ino for ino in changes.inodes if knows(ino))

    def _hooks_changed(self, later: trio.MemorySendChannel[HeadChanges], changes: HeadChanges) -> None:
        """Hooks changed files behind the kernel's back (``HookedFileSystem.kernel_notify``).

        Attributes are dropped at once, before the hooked request answers, so
        the caller's next ``stat``/``open`` sees the new size (attribute-only
        invalidation takes no lock a request holds). Dropping pages and
        entries can wait for locks the hooked request's caller holds (its
        directory, the pages of the file it writes): that runs after the
        answer, in a thread (``_invalidate_later``).
        """
        for ino in changes.inodes:
            if self.fs.kernel_knows(ino):
                with contextlib.suppress(OSError):  # already forgotten by the kernel
                    pyfuse3.invalidate_inode(ino, attr_only=True)
        later.send_nowait(changes)

    async def _invalidate_later(self, changes: trio.MemoryReceiveChannel[HeadChanges]) -> None:
        async for change in changes:
            entries, inodes = self._cached(change)
            await trio.to_thread.run_sync(_invalidate, entries, inodes, abandon_on_cancel=True)

    async def _signals(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """SIGTERM/SIGINT/SIGHUP: the same clean unmount as ``vegafs umount``."""
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            task_status.started()
            async for signum in sigs:
                log.info("signal %d: unmounting", signum)
                if self.fs.read_only_reason is None:  # read-only: nothing can be flushed
                    await self.ops.sync()
                done = await trio.to_thread.run_sync(self._unmount)
                if not done:
                    log.warning("unmount refused (busy?); stopping the loop, lazy unmount")
                    self._terminated = True
                    pyfuse3.terminate()

    def _unmount(self) -> bool:
        """Unmount like ``fusermount3 -u`` (the kernel writes back dirty pages)."""
        result = subprocess.run(
            ["fusermount3", "-u", self.mountpoint],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            log.warning("fusermount3 -u: %s", result.stderr.strip())
        return result.returncode == 0

    # ---------------------------------------------------------------- control

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "mountpoint": self.mountpoint,
            "store": self.store_dir,
            "hooks": self.hooks_dir,
            "published_logseq": self.store.published_logseq,
            "head_logseq": self.store.head_logseq,
            # null, or why nothing can be changed (mounted --read-only, or the store stopped taking writes)
            "read_only": self.fs.read_only_reason
            or ("mounted read-only" if self.store.read_only else None),
        }

    async def handle(self, op: str, args: dict[str, Any]) -> Any:
        """Serve one control request (see vegafs/cli/control.py)."""
        store = self.store
        if op == "status":
            return self.status()
        if op == "hooks_list":
            return self.hooks.listing()
        if op == "shutdown" and self.fs.read_only_reason is not None:
            return self.status()  # nothing can be flushed; close() still publishes what it can
        if op in ("sync", "shutdown"):
            await self.ops.sync()
            await trio.to_thread.run_sync(store.backend.drain)  # an s3:// store: until uploaded
            return self.status()
        if op == "snapshot_create":
            await self.ops.commit_all()
            snap = await trio.to_thread.run_sync(store.create_snapshot, str(args["name"]))
            self.fs.snapshots_changed()
            return jsonable(snap)
        if op == "snapshot_list":
            return jsonable(store.list_snapshots())
        if op == "snapshot_delete":
            name = str(args["name"])
            store.delete_snapshot(name)
            self.fs.snapshots_changed()
            await trio.to_thread.run_sync(_invalidate, [(SNAP_BASE, name.encode())], [])
            return None
        if op == "rollback":
            return await self._rollback(str(args["name"]))
        if op == "stats":
            # On the trio thread: stats walks the head state, which requests
            # mutate (a worker thread could see a dict change size mid-walk).
            stats = store.stats()
            return jsonable({**stats, "mount": self.status()})
        if op == "gc":
            # On the trio thread, right after committing everything: no
            # request may store a chunk the gc would see as unreferenced (the
            # store blocks writers during a gc anyway). Jobs in flight are
            # distrusted afterwards (fs.gc_done).
            await self.ops.sync()
            self.fs.commit_all()  # no await from here to the gc: nothing slips in
            try:
                report = store.gc()
            finally:
                self.fs.gc_done()
            return jsonable(report)
        if op == "fsck":
            await self.ops.sync()
            return jsonable(await trio.to_thread.run_sync(store.fsck))
        raise ValueError(f"unknown control operation {op!r}")

    async def _rollback(self, name: str) -> Any:
        """Roll the live tree back and make the kernel forget what it cached."""
        await self.ops.commit_all()
        logseq = await self._jump(lambda: self.store.rollback(name))
        log.info("rolled back to %s (logseq %s)", name, logseq)
        return {"logseq": logseq}

    async def _jump(self, move: Callable[[], Any]) -> Any:
        """Let ``move`` make the head jump (a rollback, a follower's reload), then make
        the kernel forget every entry that changed and every inode it holds.

        ``move`` runs on the trio thread, so no request can slip in between
        the listing taken before and the head jumping.
        """
        known = {ROOT_INO, *(i for i in self.fs.known_inodes() if i < SNAP_BASE)}
        before = {ino: dict(self.store.listdir(ino)) for ino in known if _is_dir(self.store, ino)}
        result = move()
        self.fs.after_rollback()
        self.ops.forget_cached_versions()
        entries = []
        for ino, names in before.items():
            after = dict(self.store.listdir(ino)) if _is_dir(self.store, ino) else {}
            entries += [(ino, n) for n in names.keys() | after.keys() if names.get(n) != after.get(n)]
        await trio.to_thread.run_sync(_invalidate, entries, sorted(known))
        return result


def _is_dir(store: Store, ino: int) -> bool:
    inode = store.get_inode(ino)
    return inode is not None and (inode.mode & 0o170000) == 0o040000


def _invalidate(entries: list[tuple[int, bytes]], inodes: list[int]) -> None:
    """Drop kernel cache entries (in a worker thread: these calls may block)."""
    for ino in inodes:
        with contextlib.suppress(OSError):  # unknown to the kernel: nothing to drop
            pyfuse3.invalidate_inode(ino)
    for parent, name in entries:
        with contextlib.suppress(OSError):
            pyfuse3.invalidate_entry(parent, name)

"""ASL-HOST: the host interface of the store (seed 004 §3-8) and the local-directory backend.

The store never touches a file itself: every byte it reads or writes goes
through a :class:`Backend`. That is what lets tests wrap a backend to inject
EIO, ENOSPC or torn writes at any call, and what lets a later object-store
backend slot in. The interface is therefore shaped by what an object store can
do cheaply:

* **Segments** are append-only byte streams. At most one segment (the
  *active* one) is appended to at a time; :meth:`Backend.seal` ends its life
  (an object store uploads it as one object then). Sealed segments are never
  modified again. :meth:`Backend.truncate` exists only to cut an unpublished
  tail off the active segment (recovery, failed append).
* **Small objects** (``FORMAT``, ``MANIFEST``, checkpoints, quarantined
  bytes) are replaced atomically: a reader sees the old or the new content,
  never a mix (local: tmp + fsync + rename + fsync dir; object store: a PUT,
  with a conditional write on ``MANIFEST`` guarded by the writer's lock).
* **The one-writer lock** names its holder so that a second opener can be
  told who holds the store; a lock left by a dead process is taken over.

Backends raise :class:`OSError` for I/O failures (the store turns them into
``STORE_IO_ERROR`` with the errno) and :class:`StoreError` for the ASL-HOST
conditions (exists, not found, concurrent modification).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vegafs.store.errors import (
    STORE_CONCURRENT_MODIFICATION,
    STORE_EXISTS,
    STORE_NOT_FOUND,
    StoreError,
)
from vegafs.store.pagecache import TailCache

SEGMENTS_DIR = "segments"
LOCK_NAME = "lock"
# Small-object keys are paths relative to the store root, '/'-separated.
FORMAT_KEY = "FORMAT"


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or last held) the one-writer lock."""

    pid: int
    host: str
    since_ns: int

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since_ns / 1e9))
        return f"pid {self.pid} on {self.host} since {since}"


class Backend(ABC):
    """The host side of a store: segments, small objects, lock, clock and identity."""

    #: Human-readable location (a path or URI), used in messages.
    location: str

    # -- store lifecycle (ASL-HOST §3) ---------------------------------------

    @abstractmethod
    def exists(self) -> bool:
        """True if a store has been created here (its ``FORMAT`` object exists)."""

    @abstractmethod
    def create(self, format_bytes: bytes) -> None:
        """Create an empty store whose ``FORMAT`` object holds ``format_bytes``.

        Crash-consistent: ``FORMAT`` is written last, so a half-created store
        does not count as existing. Raises ``STORE_EXISTS`` if one exists.
        """

    @abstractmethod
    def close(self) -> None:
        """Release every host resource (open files, the lock if held)."""

    # -- one-writer lock -----------------------------------------------------

    @abstractmethod
    def acquire_lock(self) -> LockHolder | None:
        """Become the one writer, or raise ``STORE_CONCURRENT_MODIFICATION`` naming the holder.

        Returns the previous holder when a stale lock (left by a process that
        died) was taken over, else None.
        """

    @abstractmethod
    def release_lock(self) -> None:
        """Give the writer lock up (no-op if not held)."""

    @abstractmethod
    def lock_holder(self) -> LockHolder | None:
        """The live holder of the writer lock, or None if nobody holds it."""

    # -- segments (ASL-HOST §4: atomic append) ---------------------------------

    @abstractmethod
    def list_segments(self) -> list[str]:
        """Names of every segment present, sorted by name."""

    @abstractmethod
    def segment_size(self, name: str) -> int:
        """Current length of a segment in bytes (``STORE_NOT_FOUND`` if absent)."""

    @abstractmethod
    def create_segment(self, name: str, initial: bytes) -> None:
        """Create a new segment holding ``initial``, durably (data and its name).

        Raises ``STORE_EXISTS`` if the segment exists.
        """

    @abstractmethod
    def append(self, name: str, data: bytes) -> None:
        """Append ``data`` to the active segment (ordered, not yet durable).

        On failure part of ``data`` may have been written; the caller restores
        the tail with :meth:`truncate`.
        """

    @abstractmethod
    def sync(self, name: str) -> None:
        """Make every byte appended to ``name`` so far durable."""

    @abstractmethod
    def truncate(self, name: str, size: int) -> None:
        """Cut the active segment back to ``size`` bytes, durably."""

    @abstractmethod
    def seal(self, name: str) -> None:
        """The segment is complete: make it durable; it is never written again."""

    @abstractmethod
    def read(self, name: str, offset: int, length: int) -> bytes:
        """Read up to ``length`` bytes at ``offset`` (short only at the end)."""

    def readinto(self, name: str, offset: int, buffers: Sequence[memoryview]) -> int:
        """Fill ``buffers`` in turn from the bytes at ``offset``; returns the count read
        (short only at the end of the segment).

        Why: a reader that wants several adjacent records scatters them with one
        call straight into their final places (a local segment: one ``preadv``,
        no intermediate bytes object). This default serves any backend through
        :meth:`read`.
        """
        data = self.read(name, offset, sum(len(b) for b in buffers))
        pos = 0
        for buf in buffers:
            n = min(len(buf), len(data) - pos)
            buf[:n] = data[pos : pos + n]
            pos += n
        return pos

    @abstractmethod
    def delete_segment(self, name: str) -> None:
        """Remove a segment durably (no error if it is already gone)."""

    # -- small objects -------------------------------------------------------

    @abstractmethod
    def put_object(self, key: str, data: bytes) -> None:
        """Replace the object ``key`` atomically and durably."""

    def index_dir(self) -> Path | None:
        """A local directory for derived indexes of this store (the head index,
        vegafs/store/headindex.py), or None: the store then replays its log at open."""
        return None

    @abstractmethod
    def get_object(self, key: str) -> bytes | None:
        """The content of ``key``, or None if it does not exist."""

    @abstractmethod
    def delete_object(self, key: str) -> None:
        """Remove ``key`` durably (no error if it is already gone)."""

    @abstractmethod
    def list_objects(self, prefix: str) -> list[str]:
        """Keys that start with ``prefix`` (e.g. ``"index/"``), sorted."""

    # -- remote durability ---------------------------------------------------

    def drain(self, timeout: float | None = None) -> None:
        """Wait until everything written so far is in the backend's final home.

        A local backend is durable at :meth:`sync` already (no-op). A backend
        that publishes into a local journal first (S3) waits for its uploads:
        this is ``vegafs sync``; raises OSError(EIO) after ``timeout``.
        """
        return None

    # -- host facts (ASL-HOST §7) --------------------------------------------

    def clock_ns(self) -> int:
        """HostClock: wall-clock nanoseconds, used for timestamps in records."""
        return time.time_ns()

    def identity(self) -> str:
        """HostIdentity: which machine writes; recorded in the lock and in stats."""
        return socket.gethostname()

    def stats(self) -> dict[str, int]:
        """What this backend adds to ``Store.stats()`` (an S3 store: its local cache)."""
        return {}


class LocalBackend(Backend):
    """A store in a local directory: one file per segment, small objects as files.

    Layout (see docs/store-format.md): ``FORMAT``, ``lock``, ``MANIFEST``,
    ``segments/``, ``index/``, ``quarantine/``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.root = Path(path)
        self.location = str(self.root)
        self._lock_fd: int | None = None
        self._read_fds: dict[str, int] = {}
        self._fd_lock = threading.Lock()
        # The active segment's name and its append fd with that fd's page-cache window.
        self._append: tuple[str, TailCache] | None = None

    # -- helpers -------------------------------------------------------------

    def _seg_path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise ValueError(f"bad segment name {name!r}")
        return self.root / SEGMENTS_DIR / name

    def _obj_path(self, key: str) -> Path:
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"bad object key {key!r}")
        return self.root.joinpath(*parts)

    @staticmethod
    def _fsync_dir(path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def _appender(self, name: str) -> TailCache:
        """The append fd of segment ``name`` (in ``.fd``), opened if another one was."""
        if self._append is not None and self._append[0] == name:
            return self._append[1]
        self._close_append()
        try:
            fd = os.open(self._seg_path(name), os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            raise StoreError(
                STORE_NOT_FOUND, f"segment {name} is missing from {self.location}"
            ) from None
        return self._set_append(name, fd, os.fstat(fd).st_size)

    def _set_append(self, name: str, fd: int, size: int) -> TailCache:
        tail = TailCache(fd, size)
        self._append = (name, tail)
        return tail

    def _close_append(self) -> None:
        if self._append is not None:
            os.close(self._append[1].fd)
            self._append = None

    def _get_read_fd(self, name: str) -> int:
        fd = self._read_fds.get(name)
        if fd is None:
            try:
                fd = os.open(self._seg_path(name), os.O_RDONLY)
            except FileNotFoundError:
                raise StoreError(
                    STORE_NOT_FOUND, f"segment {name} is missing from {self.location}"
                ) from None
            with self._fd_lock:  # readers run on several threads: keep one fd per segment
                kept = self._read_fds.setdefault(name, fd)
            if kept != fd:
                os.close(fd)
            fd = kept
        return fd

    def _forget_fds(self, name: str) -> None:
        with self._fd_lock:
            fd = self._read_fds.pop(name, None)
        if fd is not None:
            os.close(fd)
        if self._append is not None and self._append[0] == name:
            self._close_append()

    # -- lifecycle -----------------------------------------------------------

    def exists(self) -> bool:
        return (self.root / FORMAT_KEY).is_file()

    def create(self, format_bytes: bytes) -> None:
        if self.exists():
            raise StoreError(STORE_EXISTS, f"a store already exists at {self.location}")
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in (SEGMENTS_DIR, "index", "quarantine"):
            (self.root / sub).mkdir(exist_ok=True)
            self._fsync_dir(self.root / sub)
        self._fsync_dir(self.root)
        self.put_object(FORMAT_KEY, format_bytes)
        with contextlib.suppress(OSError):
            self._fsync_dir(self.root.parent)

    def close(self) -> None:
        for name in list(self._read_fds):
            self._forget_fds(name)
        self._close_append()
        self.release_lock()

    # -- lock ----------------------------------------------------------------

    def _read_holder(self, fd: int) -> LockHolder | None:
        raw = os.pread(fd, 4096, 0)
        try:
            info = json.loads(raw)
            return LockHolder(int(info["pid"]), str(info["host"]), int(info["since_ns"]))
        except (ValueError, KeyError, TypeError):
            return None

    def acquire_lock(self) -> LockHolder | None:
        if self._lock_fd is not None:
            raise StoreError(
                STORE_CONCURRENT_MODIFICATION, f"store {self.location} is already open for writing"
            )
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read_holder(fd)
                who = holder.describe() if holder else "another process"
                raise StoreError(
                    STORE_CONCURRENT_MODIFICATION,
                    f"store {self.location} is in use by {who}",
                ) from None
            # The kernel drops a flock when its holder dies, so holding it now
            # means any holder recorded in the file is gone: a stale lock.
            previous = self._read_holder(fd)
            me = LockHolder(os.getpid(), self.identity(), self.clock_ns())
            os.ftruncate(fd, 0)
            self._write_all(
                fd,
                json.dumps({"pid": me.pid, "host": me.host, "since_ns": me.since_ns}).encode(),
            )
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._lock_fd = fd
        return previous

    def release_lock(self) -> None:
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing drops the flock

    def lock_holder(self) -> LockHolder | None:
        try:
            fd = os.open(self.root / LOCK_NAME, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return self._read_holder(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    # -- segments ------------------------------------------------------------

    def list_segments(self) -> list[str]:
        try:
            names = os.listdir(self.root / SEGMENTS_DIR)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if not n.startswith("."))

    def segment_size(self, name: str) -> int:
        try:
            return os.stat(self._seg_path(name)).st_size
        except FileNotFoundError:
            raise StoreError(
                STORE_NOT_FOUND, f"segment {name} is missing from {self.location}"
            ) from None

    def create_segment(self, name: str, initial: bytes) -> None:
        path = self._seg_path(name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        except FileExistsError:
            raise StoreError(STORE_EXISTS, f"segment {name} already exists") from None
        try:
            self._write_all(fd, initial)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        self._close_append()
        self._set_append(name, fd, len(initial))
        self._fsync_dir(path.parent)

    def append(self, name: str, data: bytes) -> None:
        tail = self._appender(name)
        self._write_all(tail.fd, data)
        tail.appended(len(data))

    def sync(self, name: str) -> None:
        tail = self._appender(name)
        os.fsync(tail.fd)
        tail.synced()

    def truncate(self, name: str, size: int) -> None:
        fd = self._appender(name).fd
        os.ftruncate(fd, size)
        os.fsync(fd)
        self._set_append(name, fd, size)

    def seal(self, name: str) -> None:
        self.sync(name)
        self._close_append()

    def read(self, name: str, offset: int, length: int) -> bytes:
        return os.pread(self._get_read_fd(name), length, offset)

    def readinto(self, name: str, offset: int, buffers: Sequence[memoryview]) -> int:
        return os.preadv(self._get_read_fd(name), buffers, offset)

    def delete_segment(self, name: str) -> None:
        self._forget_fds(name)
        path = self._seg_path(name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        self._fsync_dir(path.parent)

    # -- small objects -------------------------------------------------------

    def put_object(self, key: str, data: bytes) -> None:
        path = self._obj_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)
        self._fsync_dir(path.parent)

    def index_dir(self) -> Path | None:
        return self.root / "index"

    def get_object(self, key: str) -> bytes | None:
        try:
            return self._obj_path(key).read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise OSError(errno.EISDIR, f"object {key} is a directory") from None

    def delete_object(self, key: str) -> None:
        path = self._obj_path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        self._fsync_dir(path.parent)

    def list_objects(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for dirpath, _dirs, files in os.walk(self.root):
            rel = Path(dirpath).relative_to(self.root)
            if rel.parts[:1] == (SEGMENTS_DIR,):
                continue
            for name in files:
                if name.startswith(".") or (not rel.parts and name == LOCK_NAME):
                    continue
                key = "/".join((*rel.parts, name))
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)


def open_backend(location: str | os.PathLike[str]) -> Backend:
    """The backend for a store location: ``s3://BUCKET/PREFIX`` or a local directory.

    The S3 endpoint, region and credentials come from boto3's standard chain
    (``AWS_ENDPOINT_URL_S3``, ``AWS_PROFILE``, ...); the cache directory and
    its size from ``VEGAFS_S3_CACHE`` and ``VEGAFS_S3_CACHE_SIZE`` (docs/s3.md).
    boto3 is imported only for an s3:// location: local stores do not pay for it.
    """
    text = os.fspath(location)
    if not text.startswith("s3://"):
        return LocalBackend(text)
    from vegafs.store.s3backend import DEFAULT_CACHE_SIZE, S3Backend

    return S3Backend(
        text, cache_size=int(os.environ.get("VEGAFS_S3_CACHE_SIZE") or DEFAULT_CACHE_SIZE)
    )


def default_store_path(name: str = "default") -> Path:
    """Where the embedded store called ``name`` lives.

    ``$VEGAFS_HOME/<name>`` if set, else ``$XDG_DATA_HOME/vegafs/<name>``, else
    ``~/.local/share/vegafs/<name>``.
    """
    home = os.environ.get("VEGAFS_HOME")
    if home:
        return Path(home) / name
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "vegafs" / name

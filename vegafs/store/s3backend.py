"""The S3-compatible object-store backend of ASL-HOST (seed 004 §10: location = bucket/prefix).

Why it is shaped this way: an object store has no append, no rename and no
locks, but it has atomic whole-object PUTs and (since 2024, in AWS, MinIO and
moto) conditional writes (``If-None-Match: *``, ``If-Match: <etag>``). So:

* a **sealed segment** is one immutable object ``PREFIX/segments/NAME``
  (boto3's managed transfer turns a large one into a multipart upload);
* the **active segment** is appended to a local file in the cache directory
  and its published bytes are uploaded as *pieces*
  ``PREFIX/open/NAME/<offset>`` (each piece is a range of the segment, never
  rewritten) so that a publish costs one small PUT, not a re-upload of the
  whole segment; sealing uploads the whole segment and drops the pieces;
* **small objects** (``FORMAT``, ``MANIFEST``, checkpoints) are single PUTs;
  ``MANIFEST`` is written with ``If-Match`` on the ETag this writer last saw,
  so a writer whose lease was taken over can never overwrite the head: it gets
  ``STORE_CONCURRENT_MODIFICATION`` and nothing is corrupted;
* the **one-writer lock** is a lease object ``PREFIX/lock`` (holder and
  expiry), created with ``If-None-Match: *``, renewed with ``If-Match`` by a
  background thread, taken over only once expired (or at once when its holder
  is a dead process on this very host).

Durability has two levels (docs/s3.md). Every write of the writer goes first
to a local **journal** in the cache directory (the segment bytes are the
local segment file itself, fsynced at publish; every other operation is a
small fsynced file). One uploader thread replays the journal to the object
store *in order*, so the bucket always holds a state the writer really had
(a prefix of its history), retrying with exponential backoff and jitter while
the endpoint is down. ``drain()`` (``vegafs sync``, unmount, close, giving the
lease up) waits, bounded, until the journal is empty.

This module must never: let a reader see a segment named in ``MANIFEST`` that
is not uploaded (ordering), hang without bound on a dead endpoint (every wait
has a deadline and ends in ``OSError(EIO)``), or hold more than
``cache_size`` bytes of *evictable* data in the cache (the journal and the
active segment are not evictable: they are the local durability level).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from vegafs.store.backend import FORMAT_KEY, Backend, LockHolder
from vegafs.store.errors import (
    STORE_CONCURRENT_MODIFICATION,
    STORE_EXISTS,
    STORE_NOT_FOUND,
    StoreError,
)

LOCK_KEY = "lock"
MANIFEST_KEY = "MANIFEST"
SEGMENTS = "segments/"
PIECES = "open/"
#: ``open/NAME/sealed``: the segment was sealed as its pieces (they are final).
SEALED_MARK = "sealed"
#: Reads of data not in the cache are cut into blocks of this size, cached LRU.
CACHE_BLOCK = 1 << 20
DEFAULT_CACHE_SIZE = 1 << 30
DEFAULT_LEASE_SECONDS = 30.0
#: How long one S3 call may take (connect + read), and the attempts of boto3's
#: own retry (standard mode: exponential backoff with jitter) before a read
#: fails with EIO.
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 20.0
CLIENT_ATTEMPTS = 3
#: The first request of an open (is there a store?) has tighter bounds: a
#: command aimed at a dead or hung endpoint fails within ~12 s with a clear
#: message instead of the ~80 s that the data path's bounds add up to.
PROBE_READ_TIMEOUT = 5.0
PROBE_ATTEMPTS = 2
_MAX_PIECE = 32 << 20  # the most bytes one merged piece PUT carries
_MIN_PART = 5 << 20  # S3's smallest multipart part (but the last)
#: botocore's flexible checksums (a CRC over every PUT body, since botocore
#: 1.36) only when the API requires one: every vegafs record already carries
#: a BLAKE3 hash chain that reads verify end to end, so the CRC re-checks
#: what is checked anyway and costs the ingest path CPU on both ends
#: (measured: bytes in the bucket 0.47x -> 0.55x of the local store's rate).
CHECKSUMS = {
    "request_checksum_calculation": "when_required",
    "response_checksum_validation": "when_required",
}
_MULTIPART = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20)
_S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?$")


def parse_s3_location(location: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` -> (bucket, prefix without trailing '/'); ValueError if malformed."""
    m = _S3_URI.match(location)
    if m is None:
        raise ValueError(f"not an s3://BUCKET/PREFIX location: {location!r}")
    return m.group(1), (m.group(2) or "").strip("/")


def default_cache_dir(location: str) -> Path:
    """The local cache (and journal) directory of an s3:// store on this machine.

    ``$VEGAFS_S3_CACHE`` if set, else ``$XDG_CACHE_HOME/vegafs/s3/BUCKET/PREFIX``
    (``~/.cache/...``). A mount keeps its log and control socket here too: it
    is the store's local state directory.
    """
    env = os.environ.get("VEGAFS_S3_CACHE")
    if env:
        return Path(env)
    bucket, prefix = parse_s3_location(location)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "vegafs", "s3", bucket, prefix.replace("/", "%"))


def _check_key(key: str) -> None:
    if any(p in ("", ".", "..") for p in key.split("/")):
        raise ValueError(f"bad object key {key!r}")


def _check_segment(name: str) -> None:
    if "/" in name or name.startswith(".") or not name:
        raise ValueError(f"bad segment name {name!r}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class _Fatal(Exception):
    """An upload that retrying cannot fix (precondition failed, access denied)."""


class _Pieces:
    """The pieces of one segment in the bucket, and whether they are its sealed form."""

    def __init__(self, listing: list[tuple[str, int]]) -> None:
        self.final = False
        self.pieces: list[tuple[int, int, str]] = []  # (start, size, relative key), by start
        for rel, size in listing:
            tail = rel.rsplit("/", 1)[1]
            if tail == SEALED_MARK:
                self.final = True
            else:
                self.pieces.append((int(tail), size, rel))
        self.pieces.sort()

    @property
    def end(self) -> int:
        return max((start + size for start, size, _rel in self.pieces), default=0)


class S3Backend(Backend):
    """A store in an S3-compatible bucket, with a local journal and a bounded LRU cache.

    ``cache_dir`` holds the journal, the active segment and cached read
    blocks; one writer per cache directory. A read-only opener (no
    ``acquire_lock``) never replays or writes the journal.
    """

    def __init__(
        self,
        location: str,
        *,
        endpoint_url: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        drain_timeout: float = float(os.environ.get("VEGAFS_S3_DRAIN_TIMEOUT") or 120),
    ) -> None:
        self.bucket, self.prefix = parse_s3_location(location)
        self.location = location
        self.endpoint_url = endpoint_url
        self.cache_size = cache_size
        self.lease_seconds = lease_seconds
        self.drain_timeout = drain_timeout
        self.cache = Path(cache_dir) if cache_dir is not None else default_cache_dir(location)
        self.client = self._new_client(READ_TIMEOUT, CLIENT_ATTEMPTS)
        # Writer state: the lease (acquire_lock) and the journal (first write).
        self._leased = False
        self._writer = False  # the journal is open: local files are the truth
        self._me: LockHolder | None = None
        self._lease_etag: str | None = None
        self._manifest_etag: str | None = None
        self._cv = threading.Condition()
        self._seq = 0
        self._queue: list[tuple[int, dict[str, Any]]] = []  # journal, in order
        self._seal_queue: list[tuple[int, dict[str, Any]]] = []  # seals being made
        self._sealing: dict[str, int] = {}  # segment -> journal seq of its seal
        self._pending_obj: dict[str, tuple[int, bytes | None]] = {}
        self._pending_seg_delete: dict[str, int] = {}
        self._queued_end: dict[str, int] = {}
        self._fatal: StoreError | None = None
        self._last_error = ""
        self._failing = False  # the last upload attempt failed (endpoint down)
        self._pending_piece_bytes = 0  # segment bytes published locally, not yet uploaded
        self._stop = False
        self._threads: list[threading.Thread] = []
        self._append_files: dict[str, Any] = {}
        # Read cache: (segment, block index) -> size, in LRU order.
        self._lru: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._lru_bytes = 0
        self._lru_lock = threading.Lock()
        self._piece_lists: dict[str, _Pieces] = {}  # reader's listing of pieces
        self._sealed: set[str] = set()  # segments read from their sealed object
        self._index_blocks()
        self.counters = {"puts": 0, "gets": 0, "retries": 0, "cache_hits": 0, "copied_parts": 0}

    # -- paths and S3 calls ----------------------------------------------------

    def _new_client(self, read_timeout: float, attempts: int) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            config=Config(
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=read_timeout,
                retries={"max_attempts": attempts, "mode": "standard"},
                **CHECKSUMS,
            ),
        )

    def _key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _seg_file(self, name: str) -> Path:
        _check_segment(name)
        return self.cache / "segments" / name

    def _s3(self, op: str, **kw: Any) -> Any:
        """One S3 call; network faults become OSError(EIO) after boto3's bounded retries."""
        try:
            return getattr(self.client, op)(Bucket=self.bucket, **kw)
        except ClientError:
            raise
        except BotoCoreError as e:
            raise OSError(errno.EIO, f"object store {self.client.meta.endpoint_url}: {e}") from e

    @staticmethod
    def _code(e: ClientError) -> str:
        return str(e.response.get("Error", {}).get("Code", ""))

    @staticmethod
    def _status(e: ClientError) -> int:
        return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))

    def _missing(self, e: ClientError) -> bool:
        return self._status(e) == 404 or self._code(e) in ("NoSuchKey", "404", "NotFound")

    def _get(self, rel: str, range_: str | None = None) -> tuple[bytes, str] | None:
        kw: dict[str, Any] = {"Key": self._key(rel)}
        if range_:
            kw["Range"] = range_
        try:
            r = self._s3("get_object", **kw)
            data = r["Body"].read()
        except ClientError as e:
            if self._missing(e) or self._code(e) == "InvalidRange":
                return None
            raise OSError(errno.EIO, f"get {rel}: {e}") from e
        except BotoCoreError as e:  # the body read itself timed out
            raise OSError(errno.EIO, f"get {rel}: {e}") from e
        self.counters["gets"] += 1
        return data, r.get("ETag", "")

    def _head(self, rel: str) -> dict[str, Any] | None:
        try:
            return self._s3("head_object", Key=self._key(rel))
        except ClientError as e:
            if self._missing(e):
                return None
            raise OSError(errno.EIO, f"head {rel}: {e}") from e

    def _list(self, rel_prefix: str) -> list[tuple[str, int]]:
        """(relative key, size) of every object under ``rel_prefix``, sorted."""
        out: list[tuple[str, int]] = []
        full = self._key(rel_prefix)
        strip = len(self._key(""))
        token: str | None = None
        while True:
            kw: dict[str, Any] = {"Prefix": full}
            if token:
                kw["ContinuationToken"] = token
            try:
                r = self._s3("list_objects_v2", **kw)
            except ClientError as e:
                raise OSError(errno.EIO, f"list {rel_prefix}: {e}") from e
            out += [(o["Key"][strip:], int(o["Size"])) for o in r.get("Contents", [])]
            if not r.get("IsTruncated"):
                return sorted(out)
            token = r["NextContinuationToken"]

    def _put(self, rel: str, data: bytes, **cond: str) -> str:
        """PUT; a failed precondition raises _Fatal, other errors OSError. Returns the ETag."""
        try:
            r = self._s3("put_object", Key=self._key(rel), Body=data, **cond)
        except ClientError as e:
            if self._status(e) in (409, 412) or self._code(e) == "PreconditionFailed":
                raise _Fatal(rel) from e
            if self._status(e) in (401, 403):
                raise _Fatal(f"access denied writing {rel}") from e
            raise OSError(errno.EIO, f"put {rel}: {e}") from e
        self.counters["puts"] += 1
        return str(r.get("ETag", ""))

    def _delete(self, rel: str) -> None:
        try:
            self._s3("delete_object", Key=self._key(rel))
        except ClientError as e:
            if not self._missing(e):
                raise OSError(errno.EIO, f"delete {rel}: {e}") from e

    # -- lifecycle -------------------------------------------------------------

    def exists(self) -> bool:
        """Whether ``FORMAT`` is in the bucket: the first request of every open, so it
        says plainly when the endpoint does not answer, within the probe's bounds."""
        probe = self._new_client(PROBE_READ_TIMEOUT, PROBE_ATTEMPTS)
        url = probe.meta.endpoint_url
        try:
            probe.head_object(Bucket=self.bucket, Key=self._key(FORMAT_KEY))
        except ClientError as e:
            if self._missing(e):
                return False
            raise OSError(errno.EIO, f"object store {url}: {e}") from e
        except BotoCoreError as e:
            raise OSError(
                errno.EIO,
                f"object store {url} does not answer ({e}); is the endpoint right "
                "(--s3-endpoint, AWS_ENDPOINT_URL_S3) and the server up?",
            ) from e
        return True

    def create(self, format_bytes: bytes) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if not self._missing(e):
                raise OSError(errno.EIO, f"bucket {self.bucket}: {e}") from e
            self._s3("create_bucket")
        except BotoCoreError as e:
            raise OSError(errno.EIO, f"object store {self.client.meta.endpoint_url}: {e}") from e
        # FORMAT last and only if absent: two creators cannot both succeed.
        try:
            self._put(FORMAT_KEY, format_bytes, IfNoneMatch="*")
        except _Fatal:
            raise StoreError(STORE_EXISTS, f"a store already exists at {self.location}") from None

    def stats(self) -> dict[str, int]:
        """The local cache: its bound (``--cache-size``), what the evictable part
        holds now, and the published bytes still waiting for upload."""
        with self._lru_lock:
            cached = self._lru_bytes
        return {
            "cache_size_bytes": self.cache_size,
            "cache_bytes": cached,
            "upload_pending_bytes": self._pending_piece_bytes,
        }

    def close(self) -> None:
        try:
            if self._leased:
                self.release_lock()
            else:
                self.drain()
        finally:
            self._writer = False
            self._stop_threads()
            for f in self._append_files.values():
                f.close()
            self._append_files.clear()

    def _stop_threads(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        for t in self._threads:
            t.join()
        self._threads = []
        self._stop = False
        self._writer = False  # the journal is reloaded from disk at the next write

    # -- lease -----------------------------------------------------------------

    def _read_lease(self) -> tuple[LockHolder, float, str] | None:
        got = self._get(LOCK_KEY)
        if got is None:
            return None
        raw, etag = got
        try:
            info = json.loads(raw)
            holder = LockHolder(int(info["pid"]), str(info["host"]), int(info["since_ns"]))
            return holder, float(info["expires"]), etag
        except (ValueError, KeyError, TypeError):
            return LockHolder(0, "?", 0), 0.0, etag  # unreadable: treat as expired

    def _lease_body(self) -> bytes:
        assert self._me is not None
        me = self._me
        expires = time.time() + self.lease_seconds
        return json.dumps(
            {"pid": me.pid, "host": me.host, "since_ns": me.since_ns, "expires": expires}
        ).encode()

    def _is_live(self, holder: LockHolder, expires: float) -> bool:
        if expires <= time.time():
            return False
        return not (holder.host == self.identity() and not _pid_alive(holder.pid))

    def acquire_lock(self) -> LockHolder | None:
        if self._leased:
            raise StoreError(
                STORE_CONCURRENT_MODIFICATION, f"store {self.location} is already open for writing"
            )
        self._me = LockHolder(os.getpid(), self.identity(), self.clock_ns())
        current = self._read_lease()
        previous: LockHolder | None = None
        try:
            if current is None:
                self._lease_etag = self._put(LOCK_KEY, self._lease_body(), IfNoneMatch="*")
            else:
                holder, expires, etag = current
                if self._is_live(holder, expires):
                    raise StoreError(
                        STORE_CONCURRENT_MODIFICATION,
                        f"store {self.location} is in use by {holder.describe()} "
                        f"(lease valid for {expires - time.time():.0f} s more)",
                    )
                self._lease_etag = self._put(LOCK_KEY, self._lease_body(), IfMatch=etag)
                previous = holder
        except _Fatal:
            got = self._read_lease()
            who = got[0].describe() if got else "another writer"
            raise StoreError(
                STORE_CONCURRENT_MODIFICATION,
                f"store {self.location}: {who} took the lock at the same moment",
            ) from None
        self._leased = True
        self._open_journal()
        renew = threading.Thread(target=self._renew_loop, name="s3-lease", daemon=True)
        renew.start()
        self._threads.append(renew)
        return previous

    def release_lock(self) -> None:
        if not self._leased:
            return
        self.drain()  # give the lease up only once the bucket has everything
        self._stop_threads()
        self._leased = False
        # A failed If-Match means it was taken over meanwhile: no longer ours to delete.
        with contextlib.suppress(OSError, ClientError):
            if self._lease_etag:
                self._s3("delete_object", Key=self._key(LOCK_KEY), IfMatch=self._lease_etag)
        self._lease_etag = None

    def lock_holder(self) -> LockHolder | None:
        current = self._read_lease()
        if current is None or not self._is_live(current[0], current[1]):
            return None
        return current[0]

    def _renew_loop(self) -> None:
        period = self.lease_seconds / 3
        while True:
            with self._cv:
                if self._cv.wait_for(lambda: self._stop, timeout=period):
                    return
            try:
                self._lease_etag = self._put(
                    LOCK_KEY, self._lease_body(), IfMatch=self._lease_etag or "*"
                )
            except _Fatal:
                self._fail(f"store {self.location}: the writer lease was taken over by another writer")
                return
            except OSError:
                self.counters["retries"] += 1  # endpoint down: try again next period

    # -- journal (local durability) and the uploader ------------------------

    def _open_journal(self) -> None:
        """Load the journal a previous run of this cache directory left, to resume it first.

        Called at the first write (or at acquire_lock); starts the uploader.
        """
        if self._writer:
            return
        for sub in ("journal", "segments", "blocks"):
            (self.cache / sub).mkdir(parents=True, exist_ok=True)
        ops = []
        for p in (self.cache / "journal").glob("*.json"):
            ops.append((int(p.stem), json.loads(p.read_bytes())))
        ops.sort(key=lambda o: o[0])
        self._queued_end.clear()
        self._seal_queue.clear()
        self._sealing.clear()
        self._pending_piece_bytes = 0
        self._pending_obj.clear()
        self._pending_seg_delete.clear()
        self._queue = ops
        self._seq = ops[-1][0] if ops else 0
        for seq, op in ops:
            self._note_pending(seq, op)
        self._reconcile(journal_empty=not ops)
        # A journal left by a crash continues from the MANIFEST this writer last
        # wrote, not from whatever is there now: if another writer changed it
        # meanwhile, the replay is fenced off instead of overwriting its head.
        saved = self.cache / "manifest.etag"
        if ops and saved.exists():
            self._manifest_etag = saved.read_text() or None
        else:
            head = self._head(MANIFEST_KEY)
            self._manifest_etag = head["ETag"] if head else None
        self._writer = True
        for loop in (self._upload_loop, self._seal_loop):
            t = threading.Thread(target=loop, name=f"s3{loop.__name__}", daemon=True)
            t.start()
            self._threads.append(t)

    def _note_pending(self, seq: int, op: dict[str, Any]) -> None:
        kind = op["op"]
        if kind == "put":
            data = (self.cache / "journal" / f"{seq:012d}.bin").read_bytes()
            self._pending_obj[op["key"]] = (seq, data)
        elif kind == "del":
            self._pending_obj[op["key"]] = (seq, None)
        elif kind == "delseg":
            self._pending_seg_delete[op["seg"]] = seq
        elif kind in ("piece", "truncate"):
            self._queued_end[op["seg"]] = op["end"]
            if kind == "piece":
                self._pending_piece_bytes += op["end"] - op["start"]

    def _remote_sizes(self) -> dict[str, int]:
        """Size in the bucket of every segment (sealed object, or the end of its pieces)."""
        sizes = {r[len(SEGMENTS) :]: n for r, n in self._list(SEGMENTS)}
        ends: dict[str, int] = {}
        for rel, size in self._list(PIECES):
            name, start = rel[len(PIECES) :].split("/", 1)
            if start != SEALED_MARK:
                ends[name] = max(ends.get(name, 0), int(start) + size)
        return {**ends, **sizes}

    def _reconcile(self, journal_empty: bool) -> None:
        """Learn how much of each local segment the bucket covers; drop stale copies.

        With nothing left to upload the bucket is the truth: a local copy of
        another size is stale (another machine wrote the store since this
        cache was last used) and is dropped, to be fetched again if needed.
        """
        remote = self._remote_sizes()
        for path in (self.cache / "segments").iterdir():
            name = path.name
            if name.startswith("."):
                continue
            if journal_empty and remote.get(name) != path.stat().st_size:
                path.unlink()
            elif name not in self._queued_end:
                self._queued_end[name] = remote.get(name, 0)

    def _enqueue(self, op: dict[str, Any], payload: bytes | None = None) -> None:
        self._open_journal()
        self._check_fatal()
        with self._cv:
            self._seq += 1
            seq = self._seq
            jdir = self.cache / "journal"
            if payload is not None:
                with open(jdir / f"{seq:012d}.bin", "wb") as f:
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
            _write_durably(jdir / f"{seq:012d}.json", json.dumps(op).encode())
            self._queue.append((seq, op))
            self._note_pending(seq, op)
            self._cv.notify_all()

    def _fail(self, message: str) -> None:
        with self._cv:
            self._fatal = StoreError(STORE_CONCURRENT_MODIFICATION, message)
            self._cv.notify_all()

    def _check_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    def _run_op(self, seq: int, op: dict[str, Any]) -> bool:
        """Apply one journal operation, retrying transient faults with backoff and full jitter.

        False if it was not done: the backend is stopping, or another writer
        fenced this one off (then every later operation stays in the journal).
        """
        delay = 0.05
        while True:
            if self._stop or self._fatal is not None:
                return False
            try:
                self._apply(seq, op)
            except _Fatal as e:
                self._fail(
                    f"store {self.location}: another writer changed the store "
                    f"({e}); this writer's unsynced changes stay in {self.cache / 'journal'}"
                )
                return False
            except (OSError, ClientError) as e:
                with self._cv:
                    self._failing = True
                    self._last_error = str(e)
                    self.counters["retries"] += 1
                    self._cv.notify_all()
                    self._cv.wait_for(lambda: self._stop, timeout=random.uniform(0, delay))
                delay = min(delay * 2, 5.0)
                continue
            with self._cv:
                self._failing = False
            return True

    def _upload_loop(self) -> None:
        """Replay the journal in order; seals go to the sealer thread (see _seal_loop)."""
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stop or (self._queue and not self._fatal))
                if self._stop:
                    return
                seq, op = self._queue[0]
                if op["op"] == "seal":
                    self._queue.pop(0)
                    self._sealing[op["seg"]] = seq
                    self._seal_queue.append((seq, op))
                    self._cv.notify_all()
                    continue
                seg = op.get("seg")
                if seg in self._sealing:
                    # Nothing may touch a segment while its sealed object is being made.
                    # the default binds the loop's seg (B023); mypy cannot type such a lambda
                    self._cv.wait_for(
                        lambda seg=seg: seg not in self._sealing or self._stop or self._fatal  # type: ignore[misc]
                    )
                    continue
                batch = self._batch()
                if len(batch) > 1:  # consecutive publishes of one segment: one PUT
                    op = {**op, "end": batch[-1][1]["end"]}
            if not self._run_op(seq, op):
                continue
            with self._cv:
                for done_seq, done_op in batch:
                    self._queue.pop(0)
                    self._retire(done_seq, done_op)
                self._cv.notify_all()

    def _batch(self) -> list[tuple[int, dict[str, Any]]]:
        """The head of the journal, with the contiguous pieces of its segment that follow it.

        A mount publishes on every fsync and group commit: thousands of small
        pieces. Sent one by one they would leave the bucket far behind; merged,
        the bucket gets the same bytes in fewer objects (readers and recovery
        accept pieces that overlap, see _read_remote and _put_fenced).
        """
        batch = [self._queue[0]]
        if batch[0][1]["op"] != "piece":
            return batch
        seg, end = batch[0][1]["seg"], batch[0][1]["end"]
        for seq, op in self._queue[1:]:
            if op["op"] != "piece" or op["seg"] != seg or op["start"] != end:
                break
            if op["end"] - batch[0][1]["start"] > _MAX_PIECE:
                break
            batch.append((seq, op))
            end = op["end"]
        return batch

    def _seal_loop(self) -> None:
        """Make sealed objects beside the ordered replay.

        A seal only replaces a segment's pieces by one object with the same
        bytes — a reader sees the same segment either way — so it need not
        hold up the pieces and MANIFEST writes behind it (the next segment's
        publishes): the sealing of a full segment overlaps the ingest.
        """
        while True:
            with self._cv:
                self._cv.wait_for(lambda: self._stop or (self._seal_queue and not self._fatal))
                if self._stop:
                    return
                seq, op = self._seal_queue[0]
            if not self._run_op(seq, op):
                continue
            with self._cv:
                self._seal_queue.pop(0)
                del self._sealing[op["seg"]]
                self._retire(seq, op)
                self._cv.notify_all()

    def _retire(self, seq: int, op: dict[str, Any]) -> None:
        kind = op["op"]
        if kind == "piece":
            self._pending_piece_bytes -= op["end"] - op["start"]
        if kind in ("put", "del") and self._pending_obj.get(op["key"], (None,))[0] == seq:
            del self._pending_obj[op["key"]]
        if kind == "delseg" and self._pending_seg_delete.get(op["seg"]) == seq:
            del self._pending_seg_delete[op["seg"]]
        for suffix in (".json", ".bin"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.cache / "journal" / f"{seq:012d}{suffix}")

    def _apply(self, seq: int, op: dict[str, Any]) -> None:
        """Perform one journal operation on the bucket (idempotent: it may be replayed)."""
        kind = op["op"]
        if kind == "put":
            data = (self.cache / "journal" / f"{seq:012d}.bin").read_bytes()
            if op["key"] == MANIFEST_KEY:
                cond = (
                    {"IfMatch": self._manifest_etag} if self._manifest_etag else {"IfNoneMatch": "*"}
                )
                self._manifest_etag = self._put_fenced(MANIFEST_KEY, data, cond)
                _write_durably(self.cache / "manifest.etag", self._manifest_etag.encode())
            else:
                self._put(op["key"], data)
        elif kind == "del":
            self._delete(op["key"])
        elif kind == "piece":
            if not self._seg_file(op["seg"]).exists():
                return  # deleted since: a later delseg removes what was uploaded
            with open(self._seg_file(op["seg"]), "rb") as f:
                f.seek(op["start"])
                data = f.read(op["end"] - op["start"])
            # A piece is written once: if one is there, another writer appended here.
            key = f"{PIECES}{op['seg']}/{op['start']:016d}"
            self._put_fenced(key, data, {"IfNoneMatch": "*"}, merged_ok=True)
        elif kind == "truncate":
            self._cut_pieces(op["seg"], op["end"])
        elif kind == "seal":
            path = self._seg_file(op["seg"])
            if not path.exists():
                return
            listing = self._pieces(op["seg"])
            total = os.stat(path).st_size
            if listing.final or (
                listing.end == total
                and sum(size for _s, size, _r in listing.pieces) == total
                and len(listing.pieces) <= max(1, total // CACHE_BLOCK)
            ):
                # Pieces of a read block or more on average: a reader needs no
                # more requests than for one object, so they stay the sealed
                # form (no copy on the server, no second crossing).
                self._put(f"{PIECES}{op['seg']}/{SEALED_MARK}", b"")
            else:
                try:
                    self._assemble(op["seg"], path, listing)
                except BotoCoreError as e:
                    raise OSError(errno.EIO, f"upload {op['seg']}: {e}") from e
                for _start, _size, rel in listing.pieces:
                    self._delete(rel)
            self.counters["puts"] += 1
            self._admit_sealed(op["seg"])
        elif kind == "delseg":
            self._delete(SEGMENTS + op["seg"])
            for rel, _size in self._list(f"{PIECES}{op['seg']}/"):
                self._delete(rel)

    def _pieces(self, name: str) -> _Pieces:
        return _Pieces(self._list(f"{PIECES}{name}/"))

    def _assemble(self, name: str, path: Path, listing: _Pieces) -> None:
        """Make the sealed object from the pieces already in the bucket, where it can.

        The pieces hold every byte already (a reader needed them), so a
        multipart upload copies the large ones server-side (UploadPartCopy)
        and sends only runs of small pieces (parts must be >= 5 MiB but the
        last) from the local copy: the segment's bytes cross the network about
        once, not twice. Without large pieces, a plain (multipart) upload.
        """
        key = self._key(SEGMENTS + name)
        pieces = listing.pieces
        total = os.stat(path).st_size
        covered = sum(size for _start, size, _rel in pieces)
        if covered != total or not any(size >= _MIN_PART for _s, size, _r in pieces):
            self.client.upload_file(str(path), self.bucket, key, Config=_MULTIPART)
            return
        upload = self._s3("create_multipart_upload", Key=key)["UploadId"]
        parts: list[dict[str, Any]] = []
        try:
            run: tuple[int, int] | None = None  # a run of small pieces, sent from the local copy

            def send_run() -> None:
                nonlocal run
                if run is None:
                    return
                with open(path, "rb") as f:
                    f.seek(run[0])
                    body = f.read(run[1] - run[0])
                r = self._s3(
                    "upload_part", Key=key, UploadId=upload, PartNumber=len(parts) + 1, Body=body
                )
                parts.append({"PartNumber": len(parts) + 1, "ETag": r["ETag"]})
                run = None

            for start, size, rel in sorted(pieces):
                skip = 0  # bytes of this piece sent with the run before it
                if run is not None and run[1] - run[0] < _MIN_PART:
                    # The run is too small to stand alone: top it up from this piece.
                    skip = min(size, _MIN_PART - (run[1] - run[0]))
                    if size - skip < _MIN_PART:
                        skip = size
                    run = (run[0], start + skip)
                    if skip == size:
                        continue
                elif size < _MIN_PART:
                    send_run()
                    run = (start, start + size)
                    continue
                send_run()
                r = self._s3(
                    "upload_part_copy",
                    Key=key,
                    UploadId=upload,
                    PartNumber=len(parts) + 1,
                    CopySource={"Bucket": self.bucket, "Key": self._key(rel)},
                    CopySourceRange=f"bytes={skip}-{size - 1}",
                )
                etag = r["CopyPartResult"]["ETag"]
                parts.append({"PartNumber": len(parts) + 1, "ETag": etag, "copied": True})
            send_run()
            self.counters["copied_parts"] += sum(1 for p in parts if p.get("copied"))
            for p in parts:
                p.pop("copied", None)
            self._s3(
                "complete_multipart_upload",
                Key=key,
                UploadId=upload,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(OSError, ClientError):
                self._s3("abort_multipart_upload", Key=key, UploadId=upload)
            raise

    def _put_fenced(
        self, rel: str, data: bytes, cond: dict[str, str], merged_ok: bool = False
    ) -> str:
        """A conditional PUT; a replayed PUT that already landed matches itself (not a conflict).

        With ``merged_ok`` (pieces) an object that starts with ``data`` also
        matches: a merged PUT of this piece and the next ones landed before a
        crash kept their journal entries.
        """
        try:
            return self._put(rel, data, **cond)
        except _Fatal:
            got = self._get(rel)
            if got is None or not (got[0] == data or (merged_ok and got[0].startswith(data))):
                raise
            return got[1]

    def _cut_pieces(self, seg: str, end: int) -> None:
        for start, size, rel in self._pieces(seg).pieces:
            if start >= end:
                self._delete(rel)
            elif start + size > end:
                got = self._get(rel)
                if got is not None:
                    self._put(rel, got[0][: end - start])

    def drain(self, timeout: float | None = None) -> None:
        """Wait until the bucket holds everything written so far (``vegafs sync``).

        Raises OSError(EIO) if the endpoint stays unreachable for ``timeout``
        seconds (nothing is lost: the journal keeps it and uploading goes on),
        and STORE_CONCURRENT_MODIFICATION if another writer took the store.
        """
        if not self._writer:
            return
        limit = self.drain_timeout if timeout is None else timeout
        with self._cv:
            self._cv.notify_all()
            done = self._cv.wait_for(
                lambda: not (self._queue or self._seal_queue) or self._fatal, timeout=limit
            )
        self._check_fatal()
        if not done:
            raise OSError(
                errno.EIO,
                f"object store {self.client.meta.endpoint_url} unreachable for {limit:.0f} s: "
                f"{len(self._queue) + len(self._seal_queue)} uploads wait in {self.cache / 'journal'} "
                f"(last error: {self._last_error})",
            )

    def pending_uploads(self) -> int:
        """Journal operations not yet in the bucket."""
        with self._cv:
            return len(self._queue) + len(self._seal_queue)

    # -- segments --------------------------------------------------------------

    def list_segments(self) -> list[str]:
        names = {rel[len(SEGMENTS) :] for rel, _ in self._list(SEGMENTS)}
        names |= {rel[len(PIECES) :].split("/", 1)[0] for rel, _ in self._list(PIECES)}
        if self._writer:
            names |= {p.name for p in (self.cache / "segments").iterdir() if p.name[0] != "."}
            names -= set(self._pending_seg_delete)
        return sorted(names)

    def _remote_size(self, name: str) -> int | None:
        head = self._head(SEGMENTS + name)
        if head is not None:
            return int(head["ContentLength"])
        listing = self._pieces(name)
        return listing.end if listing.pieces else None

    def _not_found(self, name: str) -> StoreError:
        return StoreError(STORE_NOT_FOUND, f"segment {name} is missing from {self.location}")

    def segment_size(self, name: str) -> int:
        if self._writer:
            if name in self._pending_seg_delete:
                raise self._not_found(name)
            with contextlib.suppress(FileNotFoundError):
                return os.stat(self._seg_file(name)).st_size
        size = self._remote_size(name)
        if size is None:
            raise self._not_found(name)
        return size

    def create_segment(self, name: str, initial: bytes) -> None:
        self._open_journal()
        path = self._seg_file(name)
        if path.exists() or (name not in self._pending_seg_delete and self._remote_size(name)):
            raise StoreError(STORE_EXISTS, f"segment {name} already exists")
        _write_durably(path, initial)
        self._queued_end[name] = 0
        self._pending_seg_delete.pop(name, None)
        self._enqueue({"op": "piece", "seg": name, "start": 0, "end": len(initial)})

    def _local(self, name: str) -> Path:
        """The writer's local copy of ``name``, fetched from the bucket if only there."""
        path = self._seg_file(name)
        if not path.exists():
            size = self._remote_size(name)
            if size is None:
                raise self._not_found(name)
            _write_durably(path, self._read_remote(name, 0, size))
            self._queued_end[name] = size
        return path

    def _append_file(self, name: str) -> Any:
        self._open_journal()
        f = self._append_files.get(name)
        if f is None:
            for other in self._append_files.values():
                other.close()
            self._append_files.clear()
            f = self._append_files[name] = open(self._local(name), "ab")  # noqa: SIM115
        return f

    def append(self, name: str, data: bytes) -> None:
        """Append to the local segment; bounded by ``cache_size`` of bytes not yet uploaded.

        Over the bound, wait for the uploader while it makes progress
        (backpressure); with the endpoint down, fail at once with ENOSPC, which
        the store turns into a clean STORE_IO_ERROR (the transaction is not
        applied; writes succeed again once uploads catch up).
        """
        self._check_fatal()
        f = self._append_file(name)
        unsynced = f.tell() - self._covered(name)
        with self._cv:
            self._cv.wait_for(
                lambda: self._pending_piece_bytes + unsynced + len(data) <= self.cache_size
                or self._pending_piece_bytes == 0
                or self._failing
                or self._fatal is not None,
                timeout=self.drain_timeout,
            )
            over = self._pending_piece_bytes + unsynced + len(data) > self.cache_size
        self._check_fatal()
        if over:
            raise OSError(
                errno.ENOSPC,
                f"the local cache of {self.location} holds {self.cache_size} bytes not yet "
                f"uploaded (its bound) and the object store is not taking more "
                f"({self._last_error or 'no progress'})",
            )
        f.write(data)

    def sync(self, name: str) -> None:
        """Local durability now (fsync); the new bytes go to the bucket as one piece, later."""
        self._check_fatal()
        f = self._append_file(name)
        f.flush()
        os.fsync(f.fileno())
        end = os.fstat(f.fileno()).st_size
        start = self._covered(name)
        if end > start:
            self._enqueue({"op": "piece", "seg": name, "start": start, "end": end})

    def _covered(self, name: str) -> int:
        """How much of ``name`` is in the bucket or queued for it (pieces start there)."""
        if name not in self._queued_end:
            self._queued_end[name] = self._remote_size(name) or 0
        return self._queued_end[name]

    def truncate(self, name: str, size: int) -> None:
        f = self._append_file(name)
        f.flush()
        os.ftruncate(f.fileno(), size)
        os.fsync(f.fileno())
        if self._covered(name) > size:
            self._enqueue({"op": "truncate", "seg": name, "end": size})

    def seal(self, name: str) -> None:
        self.sync(name)
        f = self._append_files.pop(name, None)
        if f is not None:
            f.close()
        self._enqueue({"op": "seal", "seg": name, "end": self._covered(name)})

    def _admit_sealed(self, name: str) -> None:
        """A sealed, uploaded segment's local copy becomes evictable cache."""
        with contextlib.suppress(FileNotFoundError):
            size = os.stat(self._seg_file(name)).st_size
            with self._lru_lock:
                self._lru[(name, -1)] = size
                self._lru_bytes += size
            self._evict()

    def read(self, name: str, offset: int, length: int) -> bytes:
        if name in self._pending_seg_delete:
            raise self._not_found(name)
        if self._writer:
            try:
                fd = os.open(self._seg_file(name), os.O_RDONLY)
            except FileNotFoundError:
                pass
            else:
                try:
                    f = self._append_files.get(name)
                    if f is not None:
                        f.flush()
                    with self._lru_lock:
                        if (name, -1) in self._lru:
                            self._lru.move_to_end((name, -1))
                    return os.pread(fd, length, offset)
                finally:
                    os.close(fd)
        return self._read_cached(name, offset, length)

    def _read_cached(self, name: str, offset: int, length: int) -> bytes:
        """Read through the LRU block cache; only full blocks are cached (they never change)."""
        out = bytearray()
        pos = offset
        end = offset + length
        while pos < end:
            index = pos // CACHE_BLOCK
            block = self._cached_block(name, index)
            if block is None:
                block = self._read_remote(name, index * CACHE_BLOCK, CACHE_BLOCK)
                # Only a sealed object's blocks are final: the pieces of an open
                # segment may hold an unpublished tail that a crashed writer's
                # successor cuts and writes again (a follower must not keep it).
                if len(block) == CACHE_BLOCK and name in self._sealed:
                    self._store_block(name, index, block)
            piece = block[pos - index * CACHE_BLOCK : end - index * CACHE_BLOCK]
            if not piece:
                break
            out += piece
            pos += len(piece)
            if len(block) < CACHE_BLOCK:
                break
        return bytes(out)

    def _index_blocks(self) -> None:
        """Blocks cached by an earlier run count against the bound, oldest first."""
        with contextlib.suppress(FileNotFoundError):
            found = [(p.stat().st_mtime, p) for p in (self.cache / "blocks").iterdir()]
            for _mtime, p in sorted(found):
                name, _, index = p.name.rpartition(".")
                if not p.name.startswith(".") and index.isdigit():
                    self._lru[(name, int(index))] = p.stat().st_size
                    self._lru_bytes += p.stat().st_size

    def _block_path(self, name: str, index: int) -> Path:
        return self.cache / "blocks" / f"{name}.{index}"

    def _cached_block(self, name: str, index: int) -> bytes | None:
        with self._lru_lock:
            if (name, index) not in self._lru:
                return None
            self._lru.move_to_end((name, index))
        try:
            data = self._block_path(name, index).read_bytes()
        except FileNotFoundError:
            return None
        self.counters["cache_hits"] += 1
        return data

    def _store_block(self, name: str, index: int, data: bytes) -> None:
        path = self._block_path(name, index)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            return  # a cache that cannot be written is only slower
        with self._lru_lock:
            if (name, index) not in self._lru:
                self._lru[(name, index)] = len(data)
                self._lru_bytes += len(data)
        self._evict()

    def _evict(self) -> None:
        while True:
            with self._lru_lock:
                if self._lru_bytes <= self.cache_size or not self._lru:
                    return
                (name, index), size = self._lru.popitem(last=False)
                self._lru_bytes -= size
            path = self._seg_file(name) if index < 0 else self._block_path(name, index)
            if index >= 0 or name not in self._append_files:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    def _read_remote(self, name: str, offset: int, length: int, retry: bool = True) -> bytes:
        """Read from the sealed object, or else from the pieces (listed once, relisted when short).

        Pieces marked final (sealed as pieces) never change: no sealed object
        is asked for, and their blocks may be cached.
        """
        if length <= 0:
            return b""
        listing = self._piece_lists.get(name)
        if listing is None or not listing.final:
            got = self._get(SEGMENTS + name, f"bytes={offset}-{offset + length - 1}")
            if got is not None:
                self._sealed.add(name)
                return got[0]
        end = offset + length
        if listing is None or (not listing.final and listing.end < end):
            listing = self._piece_lists[name] = self._pieces(name)
            if listing.final:
                self._sealed.add(name)
        if not listing.pieces:
            if self._head(SEGMENTS + name) is not None:
                return b""  # offset past the end
            raise self._not_found(name)
        out = bytearray()
        for start, size, rel in listing.pieces:
            pos = offset + len(out)
            if start + size <= pos or start >= end or start > pos:
                continue  # already read (pieces may overlap), or not reached
            got = self._get(rel, f"bytes={pos - start}-{min(size, end - start) - 1}")
            if got is None:  # sealed, cut or deleted meanwhile: list again, once
                self._piece_lists.pop(name, None)
                if retry:
                    return bytes(out) + self._read_remote(name, pos, end - pos, retry=False)
                break
            out += got[0]
        return bytes(out)

    def delete_segment(self, name: str) -> None:
        f = self._append_files.pop(name, None)
        if f is not None:
            f.close()
        with self._lru_lock:
            for key in [k for k in self._lru if k[0] == name]:
                self._lru_bytes -= self._lru.pop(key)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._seg_file(name))
        for p in (self.cache / "blocks").glob(f"{name}.*"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        self._queued_end.pop(name, None)
        self._enqueue({"op": "delseg", "seg": name})

    # -- small objects ---------------------------------------------------------

    def put_object(self, key: str, data: bytes) -> None:
        _check_key(key)
        self._enqueue({"op": "put", "key": key}, data)

    def index_dir(self) -> Path | None:
        """The cache directory's: the head index is derived, rebuilt where it is missing."""
        return self.cache / "index"

    def get_object(self, key: str) -> bytes | None:
        _check_key(key)
        if self._writer:
            with self._cv:
                pending = self._pending_obj.get(key)
            if pending is not None:
                return pending[1]
        got = self._get(key)
        return None if got is None else got[0]

    def delete_object(self, key: str) -> None:
        _check_key(key)
        self._enqueue({"op": "del", "key": key})

    def list_objects(self, prefix: str) -> list[str]:
        keys = {
            rel
            for rel, _ in self._list(prefix)
            if not rel.startswith((SEGMENTS, PIECES)) and rel != LOCK_KEY
        }
        if self._writer:
            with self._cv:
                for key, (_seq, data) in self._pending_obj.items():
                    if key.startswith(prefix):
                        (keys.add if data is not None else keys.discard)(key)
        return sorted(keys)

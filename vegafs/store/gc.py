"""Garbage collection: rewrite what is reachable into a new generation, switch, delete the old.

Protocol (docs/store-format.md §gc), each step a fault point:

1. publish the head (``gc.start`` before it);
2. write generation G+1: a GENERATION record carrying the hash and logseq of
   the last record of generation G (the chain goes on across the switch),
   every chunk reachable from the head or a snapshot, one STATE record per
   snapshot, one STATE record for the head, a PUBLISH; sync every segment
   (``gc.after_copy``, ``gc.after_publish``);
3. replace ``MANIFEST`` atomically so it names generation G+1
   (``gc.after_manifest``);
4. delete the segments of generation G (``gc.before_delete``, ``gc.after_delete``).

A crash before 3 leaves G+1 segments that no MANIFEST names: open deletes
them. A crash after 3 leaves G segments that no MANIFEST names: open deletes
them too. Either way everything reachable is in the generation the MANIFEST
names. gc holds the writer locks throughout: writes wait while it runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vegafs.store import faultpoints
from vegafs.store.backend import Backend
from vegafs.store.chunkindex import ChunkIndex
from vegafs.store.errors import STORE_IO_ERROR, StoreError
from vegafs.store.locators import ViewLocators
from vegafs.store.records import (
    CHUNK,
    GENERATION,
    PUBLISH,
    SEGMENT_HEADER,
    STATE,
    RecordWindow,
    SegmentHeader,
    encode_record,
    segment_name,
)
from vegafs.store.state import State, pack, repair_state

if TYPE_CHECKING:
    from vegafs.store.store import Store

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class GcReport:
    """What a gc did, in numbers."""

    generation: int
    chunks_kept: int
    chunks_dropped: int
    bytes_before: int
    bytes_after: int
    segments_deleted: int
    seconds: float

    def describe(self) -> str:
        return (
            f"gc: generation {self.generation}: kept {self.chunks_kept} chunks, "
            f"dropped {self.chunks_dropped}; {self.bytes_before} -> {self.bytes_after} bytes "
            f"({self.segments_deleted} old segments deleted) in {self.seconds:.2f}s"
        )


class GenerationWriter:
    """Appends records to the segments of a new generation, rolling at the target size."""

    def __init__(
        self, backend: Backend, generation: int, first_logseq: int, prev_hash: bytes, target: int
    ) -> None:
        self.backend = backend
        self.generation = generation
        self.logseq = first_logseq - 1
        self.last_hash = prev_hash
        self.target = target
        self.segments: list[str] = []
        self.end = 0
        self._open_segment()

    def _open_segment(self) -> None:
        seq = len(self.segments)
        name = segment_name(self.generation, seq)
        header = SegmentHeader(self.generation, seq, self.logseq + 1, self.last_hash)
        self.backend.delete_segment(name)
        self.backend.create_segment(name, header.encode())
        self.segments.append(name)
        self.end = SEGMENT_HEADER.size

    def append(self, rtype: int, payload: bytes, flags: int = 0) -> int:
        """Append a record; returns its locator in the new generation."""
        if self.end >= self.target:
            self.backend.seal(self.segments[-1])
            self._open_segment()
        self.logseq += 1
        rec, self.last_hash = encode_record(rtype, flags, self.logseq, payload, self.last_hash)
        self.backend.append(self.segments[-1], rec)
        loc = (len(self.segments) - 1) << 40 | self.end
        self.end += len(rec)
        return loc

    def finish(self) -> None:
        """Make the whole generation durable (the last segment stays active)."""
        self.backend.sync(self.segments[-1])


def run_gc(
    store: Store, progress: Progress | None = None, salvage: list[str] | None = None
) -> GcReport:
    """Compact ``store`` into a new generation holding only what is reachable.

    ``salvage`` (fsck --repair of a damaged log): references to chunks that
    are gone are dropped from snapshot states and listed there, instead of
    refusing to run.
    """
    store._check_writable()
    started = time.monotonic()
    with store._publish_lock:
        faultpoints.hit("gc.start")
        store.publish()
        with store._lock:
            try:
                report = _gc_locked(store, progress, started, salvage)
            except OSError as e:
                raise StoreError(
                    STORE_IO_ERROR, f"gc of {store.location} failed: {e.strerror or e}", e.errno
                ) from e
    from vegafs.store.store import release_free_memory

    release_free_memory()  # the live set and the states gc walked are garbage now
    return report


def _size(backend: Backend, name: str) -> int:
    """A segment's size; 0 for a missing one (repair rewrites a store that lost one)."""
    try:
        return backend.segment_size(name)
    except StoreError:
        return 0


def reachable_states(store: Store) -> dict[int, State]:
    """The state of every snapshot, by logseq (several names may share one)."""
    return {s.logseq: store._state_at(s.logseq) for s in store.list_snapshots()}


def _gc_locked(
    store: Store, progress: Progress | None, started: float, salvage: list[str] | None
) -> GcReport:
    from vegafs.store.store import SEGMENT_TARGET, _Tail

    backend = store.backend
    old_segments = list(store._segments)
    old_gen = store._generation
    bytes_before = sum(_size(backend, n) for n in old_segments)
    head = store._state
    snaps = reachable_states(store)
    live: set[bytes] = set(head.chunk_refs())
    for st in snaps.values():
        live.update(st.chunk_refs())
    # Chunks put but not referenced yet (a write in flight) survive this gc
    # unless they already survived the previous one.
    epoch = store._gc_epoch
    for h in [h for h, e in store._pending.items() if e < epoch]:
        store._pending.pop(h, None)
    pending = list(store._pending)
    # Every lookup once (each may be a head-index read): the states' references
    # and the pending chunks, which survive only if they were stored.
    locs = store._chunks.locate(live.union(pending))
    live.update(h for h in pending if h in locs)
    missing = [h for h in live if h not in locs]
    if salvage is not None:
        now = backend.clock_ns()
        salvage.extend(f"head: {m}" for m in repair_state(head, locs.__contains__, now))
        for at in list(snaps):
            snaps[at] = snaps[at].copy()
            changes = repair_state(snaps[at], locs.__contains__, now)
            salvage.extend(f"snapshot at logseq {at}: {m}" for m in changes)
        live = {h for st in (head, *snaps.values()) for h in st.chunk_refs()}
    if missing and salvage is None:
        raise StoreError(
            STORE_IO_ERROR,
            f"gc refused: {len(missing)} referenced chunk(s) are missing (run `vegafs fsck --repair`)",
        )
    order = sorted(live, key=locs.__getitem__)
    gen = old_gen + 1
    writer = GenerationWriter(
        backend, gen, store._head_logseq + 1, store._tail.last_hash, SEGMENT_TARGET
    )
    writer.append(
        GENERATION,
        pack(
            {
                "generation": gen,
                "prev_hash": store._tail.last_hash,
                "prev_logseq": store._head_logseq,
            }
        ),
    )
    gen_first = writer.logseq
    chunks = ChunkIndex()
    chunk_bytes = 0
    window = RecordWindow(backend)
    for i, h in enumerate(order):
        loc = locs[h]
        name = old_segments[loc >> 40]
        rtype, flags, _logseq, payload = window.read(name, loc & ((1 << 40) - 1))
        store._decode_chunk(h, rtype, flags, payload, name)  # never copy damage forward
        chunks[h] = writer.append(CHUNK, payload, flags)
        chunk_bytes += len(payload) - len(h)
        if progress:
            progress("copy", i + 1, len(order))
    faultpoints.hit("gc.after_copy")
    snapshot_states = {
        at: writer.append(STATE, pack({"role": "snapshot", "at": at, "state": st.to_obj()}))
        for at, st in snaps.items()
    }
    head_obj = {
        "role": "head",
        "at": store._head_logseq,
        "state": head.to_obj(),
        "next_ino": store._next_ino,
        "snapshots": [[s.name, s.logseq, s.created_ns] for s in store.list_snapshots()],
        "annotations": store._annotations,
    }
    head_loc = writer.append(STATE, pack(head_obj))
    head_state_logseq = writer.logseq
    writer.append(PUBLISH, pack({"time_ns": backend.clock_ns()}))
    writer.finish()
    faultpoints.hit("gc.after_publish")
    from vegafs.store.store import MANIFEST_KEY, _manifest_bytes

    backend.put_object(MANIFEST_KEY, _manifest_bytes(gen, writer.segments))
    faultpoints.hit("gc.after_manifest")
    store._gc_epoch = epoch + 1
    # The new generation is the store now: switch memory over to it.
    chunks_before = len(store._chunks)
    store._generation = gen
    store._chunks = chunks
    store._segments = list(writer.segments)
    store._chunk_bytes = chunk_bytes
    store._gen_first_logseq = gen_first
    store._meta = ViewLocators()
    store._snapshot_states = snapshot_states
    store._head_base = (head_state_logseq, head_loc)
    store._head_logseq = store._published_logseq = writer.logseq
    store._tail = _Tail(len(writer.segments) - 1, writer.end, writer.last_hash)
    store._rollbacks = []
    store._views = {}
    store._records = writer.logseq - gen_first + 1
    faultpoints.hit("gc.before_delete")
    for i, name in enumerate(old_segments):
        backend.delete_segment(name)
        if progress:
            progress("delete", i + 1, len(old_segments))
    faultpoints.hit("gc.after_delete")
    store._since_checkpoint = 1
    store._write_checkpoint()
    return GcReport(
        generation=gen,
        chunks_kept=len(chunks),
        chunks_dropped=chunks_before - len(chunks),
        bytes_before=bytes_before,
        bytes_after=sum(_size(backend, n) for n in writer.segments),
        segments_deleted=len(old_segments),
        seconds=time.monotonic() - started,
    )

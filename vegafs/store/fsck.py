"""fsck: one ``check_<invariant>()`` per invariant of the store, a report in plain words.

Checks (each appends plain-language problems to the report):

* ``check_log`` — every segment header, record hash, the hash chain across
  segments, logseq contiguity, nothing after the tail; every CHUNK record's
  data matches its hash.
* ``check_chunk_index`` — the chunk index and the CHUNK records agree both ways.
* ``check_derived_state`` — a replay of the whole log from its first record
  (and a load of the checkpoint) gives exactly the in-memory state.
* ``check_references`` — for the head and every snapshot: dirents name
  existing inodes, blocks name existing chunks, a file's nlink equals the
  entries naming it, a directory is named by at most one entry,
  every inode is reachable from the root (an unreachable inode with nlink 0 is
  an open-unlinked file left by a crash: a note, not a problem).
* ``check_snapshots`` — every snapshot names a logseq whose state is still in the log.

``repair=True`` fixes what can be fixed without losing anything silently:
damage found while opening (``Store.open(repair=True)``) is quarantined
byte-for-byte and the store is rewritten into a clean generation; dangling
references are removed by logged transactions (each listed in the report);
derived state is rebuilt from the log.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import blake3
import zstandard

from vegafs.store.errors import StoreError
from vegafs.store.records import (
    CHUNK,
    FLAG_ZSTD,
    HASH_SIZE,
    PUBLISH,
    SEGMENT_HEADER,
    TYPE_NAMES,
    ScanEnd,
    SegmentHeader,
    scan_segment,
)
from vegafs.store.state import BLOCK_SIZE, ROOT_INO, State

if TYPE_CHECKING:
    from vegafs.store.store import Store

Progress = Callable[[str, int, int], None]


@dataclass
class FsckReport:
    """The outcome: ``ok`` is True when no problem is left."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        lines = [f"fsck: {'clean' if self.ok else f'{len(self.problems)} problem(s)'}"]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  repaired: {r}" for r in self.repaired]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("  " + ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items())))
        return "\n".join(lines)


class Fsck:
    """Runs every check on an open store; see the module docstring."""

    def __init__(
        self, store: Store, repair: bool = False, progress: Progress | None = None
    ) -> None:
        self.store = store
        self.repair = repair and not store.read_only
        self.progress = progress
        self.report = FsckReport()
        self._log_chunks: dict[bytes, int] = {}
        self._fixes: list[tuple[str, list[Any]]] = []
        self._log_damaged = False
        self._replica: Store | None = None
        self._tail = (0, 0)
        self._segments: list[str] = []

    def log_problem(self, text: str) -> None:
        """A problem of the log itself: repair must reload the store in salvage mode."""
        self._log_damaged = True
        self.problem(text)

    def problem(self, text: str, fix: list[Any] | None = None) -> None:
        self.report.problems.append(text)
        if fix is not None:
            self._fixes.append((text, fix))

    def run(self) -> FsckReport:
        store = self.store
        if not store.read_only:
            store.publish()
        for msg in store.damage or ():
            self.problem(f"log damage: {msg}")
        # The log is checked up to the tail as it is now; writers may go on
        # appending meanwhile (a mounted store), and the in-memory checks below
        # hold the append lock so that they see no half-applied transaction.
        with store._lock:
            self._tail = (store._tail.seg_idx, store._tail.end)
            self._segments = list(store._segments)
        self.check_log()
        with store._lock:
            self.check_chunk_index()
            self.check_derived_state()
            self.check_references()
            self.check_snapshots()
        if self.repair:
            self._repair()
        return self.report

    # -- checks ------------------------------------------------------------

    def check_log(self) -> None:
        """Headers, record hashes, chain and logseq order; chunk data vs its hash."""
        from vegafs.store.store import Store

        store = self.store
        counts = self.report.counts
        segments = self._segments
        tail_idx, tail_end = self._tail
        replica = self._replica = Store(store.backend, read_only=True)
        replica._generation, replica._segments = store._generation, segments
        pending: list[tuple[Any, ...]] = []
        chain = None
        expect = None
        total = sum(self._size(n) for n in segments) or 1
        done = 0
        for idx, name in enumerate(segments):
            size = self._size(name)
            if size < 0:
                self.log_problem(f"segment {name} is missing")
                chain = None
                continue
            header = SegmentHeader.decode(store.backend.read(name, 0, SEGMENT_HEADER.size))
            if header is None:
                self.log_problem(f"segment {name} has no valid header")
                continue
            problem = header.problem(name, store._generation)
            if problem is not None:
                self.log_problem(f"segment {name} {problem}")
            if chain is not None and header.prev_hash != chain:
                self.log_problem(f"segment {name} does not continue the hash chain")
            if expect is not None and header.first_logseq != expect:
                self.log_problem(
                    f"segment {name} starts at logseq {header.first_logseq}, expected {expect}"
                )
            chain, expect = header.prev_hash, header.first_logseq
            end = ScanEnd()
            for rec in scan_segment(
                store.backend, name, SEGMENT_HEADER.size, chain, end, resync=True
            ):
                if idx == tail_idx and rec.offset >= tail_end:
                    self.report.notes.append(
                        "records appended while checking were not checked (a writer is active)"
                    )
                    end.offset = tail_end
                    break
                kind = TYPE_NAMES.get(rec.rtype, f"type-{rec.rtype}")
                counts[f"records.{kind}"] = counts.get(f"records.{kind}", 0) + 1
                if rec.damaged:
                    self.log_problem(
                        f"segment {name} offset {rec.offset}: {kind} record fails its hash"
                    )
                if rec.logseq != expect:
                    self.log_problem(
                        f"segment {name} offset {rec.offset}: logseq {rec.logseq}, expected {expect}"
                    )
                chain, expect = rec.hash, rec.logseq + 1
                if rec.damaged:
                    continue
                loc = idx << 40 | rec.offset
                if rec.rtype == CHUNK:
                    self._check_chunk_data(name, rec.offset, rec.flags, rec.payload, rec.body_hash)
                    self._log_chunks.setdefault(rec.payload[:HASH_SIZE], loc)
                pending.append(rec.replay_entry(loc))
                if rec.rtype == PUBLISH:
                    self._feed_replica(pending)
                if self.progress:
                    self.progress("log", min(done + rec.end, total), total)
            if not end.clean:
                self.log_problem(f"segment {name} offset {end.offset}: {end.reason}")
            if idx == tail_idx and end.offset != tail_end and store.damage is None:
                self.log_problem(
                    f"segment {name} ends at {end.offset}, but the store's tail is at {tail_end}"
                )
            done += size
        if pending:
            self.report.notes.append(
                f"{len(pending)} records after the last publish were not compared (a writer is active)"
            )
        counts["segments"] = len(segments)

    def _feed_replica(self, pending: list[tuple[Any, ...]]) -> None:
        """Apply published records to the replica that check_derived_state compares with memory."""
        if self._replica is None:
            return
        try:
            for item in pending:
                self._replica._replay(*item)
        except (StoreError, OSError) as e:
            self.log_problem(f"a replay of the log fails: {e}")
            self._replica = None
        pending.clear()

    def _size(self, name: str) -> int:
        try:
            return self.store.backend.segment_size(name)
        except (StoreError, OSError):
            return -1

    def _check_chunk_data(
        self, seg: str, offset: int, flags: int, payload: bytes, body_hash: bytes | None
    ) -> None:
        h, data = payload[:HASH_SIZE], payload[HASH_SIZE:]
        try:
            if flags & FLAG_ZSTD:
                data = zstandard.ZstdDecompressor().decompress(data, max_output_size=BLOCK_SIZE)
                good = blake3.blake3(data).digest() == h
            else:  # the scan hashed the stored data already
                good = (body_hash or blake3.blake3(data).digest()) == h
        except zstandard.ZstdError:
            good = False
        if not good:
            self.log_problem(
                f"segment {seg} offset {offset}: chunk {h.hex()[:16]} does not match its hash"
            )

    def check_chunk_index(self) -> None:
        """Every index entry is a CHUNK record of that hash, and every CHUNK record is indexed."""
        index = self.store._chunks
        tail_idx, tail_end = self._tail
        for h, loc in index.items():
            seg, offset = loc >> 40, loc & ((1 << 40) - 1)
            if seg > tail_idx or (seg == tail_idx and offset >= tail_end):
                continue  # appended while checking
            if self._log_chunks.get(h) != loc:
                self.problem(f"chunk index entry {h.hex()[:16]} does not point at its CHUNK record")
        for h in [h for h in self._log_chunks if h not in index]:
            self.problem(f"chunk {h.hex()[:16]} is in the log but not in the index")
        self.report.counts["chunks"] = len(index)

    def check_derived_state(self) -> None:
        """A replay from the first record, and the checkpoint, both equal memory."""
        from vegafs.store.store import Store

        store = self.store
        replayed = self._replica
        if store.damage is not None or self._log_damaged or replayed is None:
            return  # the log itself is damaged: memory is a salvage, not a replay
        if replayed.head_logseq != store.head_logseq:
            self.report.notes.append(
                f"the store moved on while checking (log checked to {replayed.head_logseq}, "
                f"memory at {store.head_logseq}); derived state not compared"
            )
            return
        manifest: dict[str, Any] = {"generation": store._generation, "segments": self._segments}
        self._compare("a replay of the log", replayed, rebuild=True)
        if store._has_index():
            from_cp = Store(store.backend, read_only=True)
            if from_cp._load_checkpoint(manifest["generation"], manifest["segments"]) is None:
                self.report.notes.append("the checkpoint does not match the log and is ignored")
            else:
                try:
                    from_cp._load(manifest)
                except (StoreError, OSError) as e:
                    self.problem(f"the checkpoint plus replay fails: {e}", ["rebuild"])
                    return
                self._compare("the checkpoint plus replay", from_cp, rebuild=True)

    def _compare(self, what: str, other: Store, rebuild: bool) -> None:
        store = self.store
        fix = ["rebuild"] if rebuild else None
        a, b = store._state, other._state
        for ino in a.inodes.keys() | b.inodes.keys():
            if a.inodes.peek(ino) != b.inodes.peek(ino):
                self.problem(f"inode {ino} in memory differs from {what}", fix)
        for ino in a.dirs.keys() | b.dirs.keys():
            if a.dirs.peek(ino) != b.dirs.peek(ino):
                self.problem(f"directory {ino} in memory differs from {what}", fix)
        if store._chunks != other._chunks:
            self.problem(f"the chunk index differs from {what}", fix)
        if store._snapshots != other._snapshots:
            self.problem(f"the snapshot list differs from {what}", fix)
        if store._annotations != other._annotations:
            self.problem(f"the annotations differ from {what}", fix)
        if other._next_ino > store._next_ino:
            self.problem(f"inode allocation is behind {what} (inode numbers could be reused)", fix)

    def check_references(self) -> None:
        """Head and every snapshot: dirents, blocks, nlink, reachability."""
        store = self.store
        self._check_state(store._state, "", fixable=True)
        for snap in store.list_snapshots():
            try:
                state = store._state_at(snap.logseq)
            except StoreError:
                continue  # check_snapshots reports it
            self._check_state(state, f" in snapshot {snap.name!r}", fixable=False)
        self.report.counts["inodes"] = len(store._state.inodes)

    def _check_state(self, state: State, where: str, fixable: bool) -> None:
        chunks = self.store._chunks

        def fix(op: list[Any]) -> list[Any] | None:
            return op if fixable else None

        refs: dict[int, int] = {}
        for parent, entries in state.dirs.items():
            if parent not in state.inodes:
                self.problem(f"directory {parent}{where} has entries but no inode")
                continue
            for name, ino in entries.items():
                if ino not in state.inodes:
                    self.problem(
                        f"entry {name!r} of directory {parent}{where} names missing inode {ino}",
                        fix(["unlink", parent, name]),
                    )
                    continue
                refs[ino] = refs.get(ino, 0) + 1
        if ROOT_INO not in state.inodes or ROOT_INO not in state.dirs:
            self.problem(f"the root directory is missing{where}", fix(["root"]))
        reachable = {ROOT_INO}
        todo = [ROOT_INO]
        while todo:
            for _name, ino in state.dirs.peek(todo.pop(), {}).items():
                if ino not in reachable and ino in state.inodes:
                    reachable.add(ino)
                    todo.append(ino)
        for ino, inode in state.inodes.items():
            is_dir = stat.S_ISDIR(inode.mode)
            if is_dir and ino not in state.dirs:
                self.problem(f"directory inode {ino}{where} has no entry table")
            if is_dir and refs.get(ino, 0) > 1:
                self.problem(f"directory {ino}{where} has {refs[ino]} entries naming it")
            if stat.S_ISLNK(inode.mode) and inode.target is None:
                self.problem(f"symlink {ino}{where} has no target")
            nblocks = -(-inode.size // BLOCK_SIZE)
            for index, h in inode.blocks.items():
                if h not in chunks:
                    self.problem(
                        f"block {index} of inode {ino}{where} names missing chunk {h.hex()[:16]}",
                        fix(["hole", ino, index]),
                    )
                if index >= nblocks:
                    self.problem(
                        f"block {index} of inode {ino}{where} lies beyond its size {inode.size}"
                    )
            if ino not in reachable:
                if inode.nlink == 0:
                    self.report.notes.append(
                        f"inode {ino}{where} has no entry and nlink 0 (open and unlinked when the "
                        "store was last closed)"
                    )
                    if fixable:
                        self._fixes.append(
                            (f"inode {ino} deleted (orphan, nlink 0)", ["delete", ino])
                        )
                else:
                    self.problem(
                        f"inode {ino}{where} is not reachable from the root (nlink {inode.nlink})",
                        fix(["lost+found", ino]),
                    )
                continue
            # Directory link counts are the filesystem's convention (2 + subdirectories
            # on most systems); the store checks the count it can prove: entries per file.
            if not is_dir and inode.nlink != refs.get(ino, 0):
                self.problem(
                    f"inode {ino}{where} has nlink {inode.nlink}, but {refs.get(ino, 0)} "
                    "directory entries name it",
                    fix(["nlink", ino, refs.get(ino, 0)]),
                )

    def check_snapshots(self) -> None:
        store = self.store
        for snap in store.list_snapshots():
            if snap.logseq > store.head_logseq:
                self.problem(f"snapshot {snap.name!r} names logseq {snap.logseq}, beyond the head")
                continue
            try:
                store._state_at(snap.logseq)
            except StoreError as e:
                self.problem(f"snapshot {snap.name!r} cannot be read: {e}")
        self.report.counts["snapshots"] = len(store.list_snapshots())

    # -- repair ------------------------------------------------------------

    def _repair(self) -> None:
        from vegafs.store.gc import run_gc

        store = self.store
        rep = self.report
        if self._log_damaged and store.damage is None:
            # Opened normally (the checkpoint hid the damage): reload as a salvage
            # and check again, so the fixes below are computed against it.
            store.damage = []
            store._load(store._read_manifest())
            again = Fsck(store, repair=False)
            again.run()
            self._fixes = again._fixes
            if not store.damage:
                store.damage = ["the log failed its checks"]
        rep.repaired.extend(store.quarantined.values())
        ops = [fix for _text, fix in self._fixes if fix[0] != "rebuild"]
        if ops:
            self._apply_fixes(ops)
        if store.damage:
            report = run_gc(store, self.progress, salvage=rep.repaired)
            rep.repaired.append(
                f"the log was rewritten into a clean generation {report.generation}"
            )
            store.damage = None
        if any(fix[0] == "rebuild" for _t, fix in self._fixes):
            store._drop_index()
            store._load(store._read_manifest())
            rep.repaired.append("in-memory state and checkpoint rebuilt from the log")
        store._since_checkpoint = max(store._since_checkpoint, 1)
        store._write_checkpoint()
        # What is left after repair is what a fresh check finds.
        after = Fsck(store, repair=False, progress=None).run()
        rep.problems = after.problems
        rep.notes = after.notes + [n for n in rep.notes if n not in after.notes]

    def _apply_fixes(self, fixes: list[list[Any]]) -> None:
        """One logged transaction per fix; a fix that no longer applies is reported, not forced."""
        store = self.store
        rep = self.report
        fixes = sorted(fixes, key=lambda f: f[0] != "root")  # the root first: others link into it
        for fix in fixes:
            try:
                with store.transaction() as t:
                    rep.repaired.append(self._fix(t, fix))
            except ValueError as e:
                rep.notes.append(f"could not repair ({fix[0]} {fix[1:]}): {e}")

    def _fix(self, t: Any, fix: list[Any]) -> str:
        store = self.store
        kind = fix[0]
        if kind == "root":
            now = store.backend.clock_ns()
            if store.get_inode(ROOT_INO) is not None:
                t.delete_inode(ROOT_INO)
            t.create_inode(ROOT_INO, mode=stat.S_IFDIR | 0o755, uid=0, gid=0, times_ns=now)
            t.update(ROOT_INO, nlink=2)
            return "the root directory was missing and was recreated (empty)"
        if kind == "unlink":
            t.unlink(fix[1], fix[2])
            return f"dangling entry {fix[2]!r} removed from directory {fix[1]}"
        if kind == "hole":
            inode = store.get_inode(fix[1])
            t.set_blocks(fix[1], {fix[2]: None}, inode.size if inode else 0)
            return (
                f"block {fix[2]} of inode {fix[1]} lost its data (chunk damaged or missing): "
                "it now reads as zeros; earlier versions may still hold it"
            )
        if kind == "nlink":
            t.update(fix[1], nlink=fix[2])
            return f"nlink of inode {fix[1]} set to {fix[2]}"
        if kind == "delete":
            t.delete_inode(fix[1])
            return f"orphan inode {fix[1]} (nlink 0) deleted"
        if kind == "lost+found":
            t.link(self._lost_found(), str(fix[1]).encode(), fix[1])
            return f"unreachable inode {fix[1]} linked as /lost+found/{fix[1]}"
        raise ValueError(f"unknown fix {kind}")

    def _lost_found(self) -> int:
        """The /lost+found directory, created (in its own transaction) if absent."""
        store = self.store
        ino = store.lookup(ROOT_INO, b"lost+found")
        if ino is not None:
            return ino
        ino = store.alloc_ino()
        now = store.backend.clock_ns()
        with store.transaction() as t:
            t.create_inode(ino, mode=stat.S_IFDIR | 0o700, uid=0, gid=0, times_ns=now)
            t.update(ino, nlink=2)
            t.link(ROOT_INO, b"lost+found", ino)
            root = store.get_inode(ROOT_INO)
            if root is not None:
                t.update(ROOT_INO, nlink=root.nlink + 1)
        return ino

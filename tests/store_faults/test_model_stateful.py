"""Hypothesis drives the store and a plain model through the same random history.

Rules are the store's whole mutating surface as the filesystem uses it:
transactions (create file/dir/symlink, write blocks with put_chunk including
shared data for dedup, punch holes, truncate, hard-link, rename, unlink with
delete on last link, xattrs, attribute updates, a transaction that raises and
must leave no trace), publish, snapshots (create, delete, inspect through
``view``), rollback and its undo, gc, file versions, fsck at any point, close
+ reopen, and a crash (drop the store without closing) + reopen. After every step the store must equal the model exactly
(every inode field, every block's bytes, every directory); at the end fsck is
clean.

A crash may lose exactly the work since the last publish — so the model keeps
the state at the last publish and a crash restores it (inode numbers handed out
but never published may be handed out again; published ones never). Closing
publishes, so close + reopen loses nothing; so do snapshot create/delete,
rollback and gc.

The CI profile is fixed (derandomize, modest example count); set
``VEGAFS_HYPOTHESIS_EXAMPLES`` for a longer run.
"""

from __future__ import annotations

import os
import random
import shutil
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.store_faults import model
from tests.store_faults.conftest import ram_dir
from tests.store_faults.model import (
    S_IFDIR,
    S_IFLNK,
    S_IFREG,
    MState,
    Op,
    assert_matches,
    root_state,
    run_txn,
)
from tests.stress.summary import module_summary
from vegafs.store import BLOCK_SIZE, Store
from vegafs.store.backend import LocalBackend

SHARED = [bytes([n]) * 3000 + b"shared" for n in range(3)]  # equal data in many files: dedup
NAMES = st.sampled_from([b"a", b"b", b"c", b"d", b"e"])
# Block contents are drawn as small specs (kept readable in a failure report) and
# turned into bytes: one of the shared blocks, fresh seeded bytes, or a hole.
BLOCK_SPEC = st.one_of(
    st.tuples(st.just("shared"), st.integers(0, len(SHARED) - 1)),
    st.tuples(st.just("fresh"), st.integers(0, 2**32), st.integers(1, 5000)),
    st.none(),
)


def block_bytes(spec: tuple[object, ...] | None) -> bytes | None:
    if spec is None:
        return None
    if spec[0] == "shared":
        return SHARED[spec[1]]  # type: ignore[index]
    return random.Random(spec[1]).randbytes(spec[2])  # type: ignore[arg-type]


def test_model_uses_the_stores_block_size() -> None:
    assert model.BLOCK_SIZE == BLOCK_SIZE


class Aborted(Exception):
    """Raised inside a transaction to check that it leaves no trace."""


class StoreVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = ram_dir("vegafs-model-")
        self.path = self.dir / "store"
        self.store = self._open(create=True)
        self.state: MState = root_state(self.store)
        self.snapshots: dict[str, MState] = {}
        self.allocated: set[int] = set()
        self.undo: list[tuple[int, MState]] = []  # (pre-rollback head logseq, its state)
        self.rolled_back = False  # file_versions' order after a rollback is not pinned here
        self.published = (self.state.clone(), dict(self.snapshots), set(self.allocated))
        self.snap_counter = 0

    # -- helpers ---------------------------------------------------------------

    def _open(self, create: bool = False) -> Store:
        """Open through a backend this test holds, so that it can "crash" the store."""
        self.backend = LocalBackend(self.path)
        return Store.open(self.backend, create=create)

    def txn(self, ops: list[Op]) -> None:
        run_txn(self.store, ops)
        for op in ops:
            self.state.apply(op)

    def entries(self) -> list[tuple[int, bytes, int]]:
        return [(p, n, i) for p, ents in sorted(self.state.dirs.items())
                for n, i in sorted(ents.items())]

    def files(self) -> list[int]:
        return sorted(i for i, n in self.state.inodes.items() if n.mode & 0o170000 == S_IFREG)

    def dirs(self) -> list[int]:
        return sorted(self.state.dirs)

    def mark_published(self) -> None:
        """What a crash from now on must show: the head and the snapshot names, as of now."""
        self.published = (self.state.clone(), dict(self.snapshots), set(self.allocated))

    # -- transactions ----------------------------------------------------------

    @rule(data=st.data(), kind=st.sampled_from(["file", "dir", "symlink"]), name=NAMES,
          uid=st.integers(0, 2**32 - 1), t=st.integers(0, 2**62))
    def create(self, data: st.DataObject, kind: str, name: bytes, uid: int, t: int) -> None:
        parent = data.draw(st.sampled_from(self.dirs()), label="parent")
        if name in self.state.dirs[parent]:
            return
        ino = self.store.alloc_ino()
        assert ino not in self.allocated and ino > 1, f"alloc_ino reused {ino}"
        self.allocated.add(ino)
        mode = {"file": S_IFREG | 0o644, "dir": S_IFDIR | 0o755, "symlink": S_IFLNK | 0o777}[kind]
        target = data.draw(st.binary(min_size=1, max_size=50), label="target") \
            if kind == "symlink" else None
        self.txn([
            ("create_inode", ino, {"mode": mode, "uid": uid, "gid": 7, "rdev": 0,
                                   "target": target, "times_ns": t}),
            ("link", parent, name, ino),
            ("update", ino, {"nlink": 2 if kind == "dir" else 1}),
        ])

    @precondition(lambda self: self.files())
    @rule(data=st.data(), specs=st.dictionaries(st.integers(0, 7), BLOCK_SPEC, min_size=1,
                                                max_size=3),
          shrink=st.integers(0, BLOCK_SIZE * 9))
    def write(self, data: st.DataObject, specs: dict[int, tuple[object, ...] | None],
              shrink: int) -> None:
        ino = data.draw(st.sampled_from(self.files()), label="file")
        blocks = {i: block_bytes(spec) for i, spec in specs.items()}
        node = self.state.inodes[ino]
        indices = [i for i, d in blocks.items() if d is not None] + list(node.blocks)
        size = max([node.size] + [(i + 1) * BLOCK_SIZE for i in indices])
        if data.draw(st.booleans(), label="truncate"):
            size = min(size, shrink)
            keep = -(-size // BLOCK_SIZE)
            blocks = {i: (None if i >= keep else d) for i, d in blocks.items()}
            blocks.update({i: None for i in node.blocks if i >= keep})
        self.txn([("set_blocks", ino, blocks, size)])

    @precondition(lambda self: self.files())
    @rule(data=st.data(), name=NAMES)
    def hard_link(self, data: st.DataObject, name: bytes) -> None:
        ino = data.draw(st.sampled_from(self.files()), label="file")
        parent = data.draw(st.sampled_from(self.dirs()), label="parent")
        if name in self.state.dirs[parent]:
            return
        self.txn([("link", parent, name, ino),
                  ("update", ino, {"nlink": self.state.inodes[ino].nlink + 1})])

    def _drop_link(self, parent: int, name: bytes) -> list[Op]:
        """Ops that remove ``parent/name`` and delete its inode when that was the last link."""
        ino = self.state.dirs[parent][name]
        node = self.state.inodes[ino]
        if ino in self.state.dirs or node.nlink <= 1:
            return [("unlink", parent, name), ("delete_inode", ino)]
        return [("unlink", parent, name), ("update", ino, {"nlink": node.nlink - 1})]

    def _removable(self) -> list[tuple[int, bytes, int]]:
        return [(p, n, i) for p, n, i in self.entries()
                if i not in self.state.dirs or not self.state.dirs[i]]

    @precondition(lambda self: self._removable())
    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        parent, name, _ = data.draw(st.sampled_from(self._removable()), label="entry")
        self.txn(self._drop_link(parent, name))

    @precondition(lambda self: self.entries())
    @rule(data=st.data(), new=NAMES)
    def rename(self, data: st.DataObject, new: bytes) -> None:
        """Rename within the tree, replacing a non-directory target (one transaction)."""
        parent, name, ino = data.draw(st.sampled_from(self.entries()), label="entry")
        if ino in self.state.dirs:
            return  # moving directories needs cycle checks: the filesystem's job, not the store's
        dest = data.draw(st.sampled_from(self.dirs()), label="dest")
        if (dest, new) == (parent, name):
            return
        old = self.state.dirs[dest].get(new)
        if old is not None and old in self.state.dirs:
            return
        ops: list[Op] = []
        if old is not None:
            ops += self._drop_link(dest, new)
            if old == ino:  # renaming onto another link of itself: just drop the source
                ops = self._drop_link(parent, name)
                self.txn(ops)
                return
        ops += [("link", dest, new, ino), ("unlink", parent, name)]
        self.txn(ops)

    @rule(data=st.data(), key=st.sampled_from([b"user.a", b"user.b", b"trusted.c"]),
          value=st.binary(max_size=100))
    def set_xattr(self, data: st.DataObject, key: bytes, value: bytes) -> None:
        ino = data.draw(st.sampled_from(sorted(self.state.inodes)), label="inode")
        self.txn([("set_xattr", ino, key, value)])

    @precondition(lambda self: any(n.xattrs for n in self.state.inodes.values()))
    @rule(data=st.data())
    def remove_xattr(self, data: st.DataObject) -> None:
        pairs = [(i, k) for i, n in sorted(self.state.inodes.items()) for k in sorted(n.xattrs)]
        ino, key = data.draw(st.sampled_from(pairs), label="xattr")
        self.txn([("remove_xattr", ino, key)])

    @rule(data=st.data(), mode=st.integers(0, 0o7777), gid=st.integers(0, 2**32 - 1),
          mtime=st.integers(0, 2**63 - 1))
    def update_attrs(self, data: st.DataObject, mode: int, gid: int, mtime: int) -> None:
        ino = data.draw(st.sampled_from(sorted(self.state.inodes)), label="inode")
        kind = self.state.inodes[ino].mode & 0o170000
        self.txn([("update", ino, {"mode": kind | mode, "gid": gid, "mtime_ns": mtime,
                                   "ctime_ns": mtime // 2})])

    @rule(data=st.data(), name=NAMES)
    def aborted_transaction(self, data: st.DataObject, name: bytes) -> None:
        """An exception inside the block discards the whole transaction."""
        ino = data.draw(st.sampled_from(sorted(self.state.inodes)), label="inode")
        before = self.store.head_logseq
        try:
            with self.store.transaction() as t:
                t.set_xattr(ino, b"user.aborted", b"x")
                t.update(ino, gid=12345)
                raise Aborted
        except Aborted:
            pass
        assert self.store.head_logseq == before, "an aborted transaction appended a record"

    # -- publish, snapshots, rollback, gc, reopen -----------------------------

    @rule()
    def publish(self) -> None:
        seq = self.store.publish()
        assert seq == self.store.published_logseq
        assert not self.store.dirty
        self.mark_published()

    @rule()
    def snapshot(self) -> None:
        self.snap_counter += 1
        name = f"snap{self.snap_counter}"
        snap = self.store.create_snapshot(name)
        assert snap.name == name and snap.logseq <= self.store.published_logseq
        self.snapshots[name] = self.state.clone()
        self.mark_published()

    @precondition(lambda self: self.snapshots)
    @rule(data=st.data())
    def delete_snapshot(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.snapshots)), label="snapshot")
        self.store.delete_snapshot(name)
        del self.snapshots[name]
        self.mark_published()  # the delete is published before it returns

    @precondition(lambda self: self.snapshots)
    @rule(data=st.data())
    def rollback(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.snapshots)), label="snapshot")
        pre = self.state.clone()
        self.rolled_back = True
        self.store.rollback(name)
        self.undo.append((self.store.rollbacks()[-1].pre_head, pre))
        self.state = self.snapshots[name].clone()
        self.mark_published()  # rollback publishes (fault point rollback.after_publish)

    @precondition(lambda self: self.undo)
    @rule()
    def undo_rollback(self) -> None:
        """Roll forward to the head a rollback left (recorded in its ROLLBACK record)."""
        pre_head, pre = self.undo.pop()
        self.store.rollback_to(pre_head)
        self.undo.append((self.store.rollbacks()[-1].pre_head, self.state.clone()))
        self.state = pre
        self.mark_published()

    @precondition(lambda self: self.snapshots)
    @rule(data=st.data())
    def inspect_snapshot(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.snapshots)), label="snapshot")
        assert_matches(self.store.view(name), self.snapshots[name], set(self.allocated),
                       what=f"in snapshot {name}")

    @precondition(lambda self: self.files())
    @rule(data=st.data())
    def inspect_versions(self, data: st.DataObject) -> None:
        """Versions are listed newest first and every one of them is still readable; until
        a rollback rewinds history, the newest one is the head's."""
        ino = data.draw(st.sampled_from(self.files()), label="file")
        head = self.store.get_inode(ino)
        versions = self.store.file_versions(ino)
        if self.state.inodes[ino].version and not self.rolled_back:
            assert versions, f"file {ino} (version {head.version}) lists no versions"
            newest = versions[0]
            assert (newest.version, newest.size, newest.blocks) == \
                (head.version, head.size, head.blocks), f"newest version of {ino} is not the head"
        assert [v.logseq for v in versions] == sorted((v.logseq for v in versions), reverse=True)
        for v in versions:  # addressable until gc: every block of every version reads back
            for h in v.blocks.values():
                self.store.read_chunk(h)

    @rule()
    def fsck_is_clean(self) -> None:
        report = self.store.fsck()
        assert report.ok, "fsck:\n  " + "\n  ".join(report.problems)
        self.mark_published()  # fsck of a writable store publishes first, then checks

    @rule()
    def gc(self) -> None:
        self.store.gc()
        self.undo.clear()  # gc keeps the head and the snapshots, not every past head
        self.mark_published()

    @rule()
    def close_and_reopen(self) -> None:
        self.store.close()
        self.store = self._open()
        self.mark_published()

    @rule()
    def crash_and_reopen(self) -> None:
        """Drop the store without closing: what was not published vanishes, nothing else."""
        self.backend.close()  # the process "dies": fds and lock go, nothing more is written
        self.store = self._open()
        state, snapshots, allocated = self.published
        self.state, self.snapshots = state.clone(), dict(snapshots)
        # an inode number handed out but never published may be handed out again
        self.allocated = set(allocated)

    # -- checks ----------------------------------------------------------------

    @invariant()
    def head_equals_model(self) -> None:
        TALLY["steps"] += 1
        assert_matches(self.store, self.state, set(self.allocated))
        listed = {s.name for s in self.store.list_snapshots()}
        assert listed == set(self.snapshots), f"snapshots {sorted(listed)} vs {sorted(self.snapshots)}"

    def teardown(self) -> None:
        TALLY["examples"] += 1
        try:
            report = self.store.fsck()
            assert report.ok, "fsck at the end:\n  " + "\n  ".join(report.problems)
            self.store.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


EXAMPLES = int(os.environ.get("VEGAFS_HYPOTHESIS_EXAMPLES", "100"))
# ~0.15 s an example alone, several times that on a shared machine: the full
# run (2,000) was cut by the default 300 s timeout at 1,977 examples.
pytestmark = pytest.mark.timeout(max(300, EXAMPLES))
StoreVsModel.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestStoreVsModel = StoreVsModel.TestCase
TALLY: Counter[str] = Counter()  # examples run and steps checked, for the summary line


@pytest.fixture(scope="module", autouse=True)
def _summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """The campaign's summary line (derandomized: hypothesis's seed is fixed per test)."""
    with module_summary(request, "store vs model (hypothesis)", "derandomized") as summary:
        yield
        summary.rounds, summary.ops = TALLY["examples"], TALLY["steps"]

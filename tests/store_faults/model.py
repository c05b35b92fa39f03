"""A plain in-memory model of the store's head state, and a workload language over it.

The store is tested by doing the same thing to the store and to this model and
comparing the two. The model is deliberately dumb — dictionaries, no log, no
chunks, no hashing — so that when they disagree, the model is believed.

An *operation* (``Op``) is one call of the documented transaction API
(docs/architecture.md: ``create_inode``, ``update``, ``set_blocks``,
``delete_inode``, ``link``, ``unlink``, ``set_xattr``, ``remove_xattr``),
written as data so the same list can be applied to a store transaction, to the
model, printed in a failure message, or generated deterministically from a seed
in another process (the kill -9 test). ``set_blocks`` carries the block *bytes*;
``run_txn`` stores them with ``put_chunk`` first and hands the hashes to the
transaction, the model keeps the bytes, and the comparison reads every block
back with ``read_chunk`` — so chunk storage, dedup and the chunk map are all
checked against plain bytes.

Workloads keep ``nlink`` explicit (an ``update(nlink=...)`` in the same
transaction as the link change) so that the model does not depend on whether
the store maintains link counts itself.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Protocol

ROOT_INO = 1
S_IFREG = 0o100000
S_IFDIR = 0o040000
S_IFLNK = 0o120000

Op = tuple[Any, ...]
BLOCK_SIZE = 128 * 1024  # the store's block size (checked against vegafs.store by the tests)


@dataclass
class MInode:
    """What the model knows about one inode (the fields the store must keep exactly)."""

    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    rdev: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    target: bytes | None
    blocks: dict[int, bytes] = field(default_factory=dict)  # block index -> block bytes
    version: int = 0  # +1 per set_blocks (a new file version)
    xattrs: dict[bytes, bytes] = field(default_factory=dict)


@dataclass
class MState:
    """The head state: inodes and directory entries (parent -> name -> ino)."""

    inodes: dict[int, MInode] = field(default_factory=dict)
    dirs: dict[int, dict[bytes, int]] = field(default_factory=dict)

    def clone(self) -> MState:
        """A copy that shares nothing mutable (block bytes are immutable and shared)."""
        out = MState()
        for ino, node in self.inodes.items():
            twin = copy.copy(node)
            twin.blocks, twin.xattrs = dict(node.blocks), dict(node.xattrs)
            out.inodes[ino] = twin
        out.dirs = {ino: dict(entries) for ino, entries in self.dirs.items()}
        return out

    def apply(self, op: Op) -> None:
        """Apply one operation, with the semantics the architecture doc states."""
        kind = op[0]
        if kind == "create_inode":
            _, ino, kw = op
            t = kw.get("times_ns", 0)
            self.inodes[ino] = MInode(
                ino=ino, mode=kw["mode"], uid=kw.get("uid", 0), gid=kw.get("gid", 0),
                nlink=0, rdev=kw.get("rdev", 0), size=len(kw.get("target") or b""), atime_ns=t, mtime_ns=t, ctime_ns=t,
                target=kw.get("target"),
            )
            if kw["mode"] & 0o170000 == S_IFDIR:
                self.dirs[ino] = {}
        elif kind == "update":
            _, ino, kw = op
            node = self.inodes[ino]
            old_size = node.size
            for key, value in kw.items():
                setattr(node, key, value)
            if node.size < old_size:
                _drop_blocks_beyond(node)
        elif kind == "set_blocks":
            _, ino, blocks, size = op
            node = self.inodes[ino]
            for index, data in blocks.items():
                if data is None:
                    node.blocks.pop(index, None)
                else:
                    node.blocks[index] = data
            shrink = size < node.size
            node.size = size
            node.version += 1
            if shrink:
                _drop_blocks_beyond(node)
        elif kind == "delete_inode":
            self.inodes.pop(op[1])
            self.dirs.pop(op[1], None)
        elif kind == "link":
            _, parent, name, ino = op
            self.dirs[parent][name] = ino
        elif kind == "unlink":
            _, parent, name = op
            del self.dirs[parent][name]
        elif kind == "set_xattr":
            _, ino, key, value = op
            self.inodes[ino].xattrs[key] = value
        elif kind == "remove_xattr":
            _, ino, key = op
            del self.inodes[ino].xattrs[key]
        else:
            raise ValueError(f"unknown op {kind!r}")


def _drop_blocks_beyond(node: MInode) -> None:
    """A file that shrinks loses the blocks wholly past its new end (block size = BLOCK_SIZE)."""
    keep = -(-node.size // BLOCK_SIZE)
    for index in [i for i in node.blocks if i >= keep]:
        del node.blocks[index]


class _Txn(Protocol):
    def create_inode(self, ino: int, **kw: Any) -> None: ...
    def update(self, ino: int, **kw: Any) -> None: ...
    def set_blocks(self, ino: int, blocks: dict[int, bytes | None], size: int) -> None: ...
    def delete_inode(self, ino: int) -> None: ...
    def link(self, parent: int, name: bytes, ino: int) -> None: ...
    def unlink(self, parent: int, name: bytes) -> None: ...
    def set_xattr(self, ino: int, key: bytes, value: bytes) -> None: ...
    def remove_xattr(self, ino: int, key: bytes) -> None: ...


def apply_to_txn(store: Any, t: _Txn, op: Op) -> None:
    """Issue one operation on a store transaction (block bytes go through ``put_chunk``)."""
    kind = op[0]
    if kind in ("create_inode", "update"):
        getattr(t, kind)(op[1], **op[2])
    elif kind == "set_blocks":
        _, ino, blocks, size = op
        hashes = {i: (None if d is None else store.put_chunk(d)) for i, d in blocks.items()}
        t.set_blocks(ino, hashes, size)
    else:
        getattr(t, kind)(*op[1:])


def run_txn(store: Any, ops: list[Op]) -> int:
    """Apply ``ops`` as one store transaction; return its logseq."""
    with store.transaction() as t:
        for op in ops:
            apply_to_txn(store, t, op)
    return t.logseq


def root_state(store: Any) -> MState:
    """The model of a fresh store: the root directory exactly as the store made it."""
    root = store.get_inode(ROOT_INO)
    assert root is not None, "a fresh store has no root inode"
    state = MState()
    state.inodes[ROOT_INO] = MInode(
        ino=ROOT_INO, mode=root.mode, uid=root.uid, gid=root.gid, nlink=root.nlink,
        rdev=root.rdev, size=root.size, atime_ns=root.atime_ns, mtime_ns=root.mtime_ns,
        ctime_ns=root.ctime_ns, target=root.target, version=root.version,
        xattrs=dict(root.xattrs),
    )
    state.dirs[ROOT_INO] = {}
    return state


_FIELDS = ("mode", "uid", "gid", "nlink", "rdev", "size", "atime_ns", "mtime_ns", "ctime_ns",
           "target", "version")


def differences(view: Any, state: MState, gone: AbstractSet[int] = frozenset()) -> list[str]:
    """Every way ``view`` (a Store or StoreView) differs from ``state``, in plain words.

    ``gone`` lists inode numbers that must *not* exist in the view (deleted, or
    allocated only after the state was taken). An empty list means equal.
    """
    problems: list[str] = []
    for ino, want in sorted(state.inodes.items()):
        got = view.get_inode(ino)
        if got is None:
            problems.append(f"inode {ino} missing")
            continue
        for name in _FIELDS:
            if getattr(got, name) != getattr(want, name):
                problems.append(f"inode {ino} {name}: store {getattr(got, name)!r} "
                                f"model {getattr(want, name)!r}")
        if dict(got.xattrs) != want.xattrs:
            problems.append(f"inode {ino} xattrs: store {dict(got.xattrs)!r} model {want.xattrs!r}")
        if set(got.blocks) != set(want.blocks):
            problems.append(f"inode {ino} block map: store {sorted(got.blocks)} "
                            f"model {sorted(want.blocks)}")
        for index in sorted(set(got.blocks) & set(want.blocks)):
            data = view.read_chunk(got.blocks[index])
            if data != want.blocks[index]:
                problems.append(f"inode {ino} block {index}: {len(data)} bytes differ from the "
                                f"model's {len(want.blocks[index])}")
    for parent, entries in sorted(state.dirs.items()):
        if parent not in state.inodes:
            continue
        listed = dict(view.listdir(parent))
        if listed != entries:
            problems.append(f"directory {parent}: store {sorted(listed.items())} "
                            f"model {sorted(entries.items())}")
        for name, ino in entries.items():
            if view.lookup(parent, name) != ino:
                problems.append(f"lookup({parent}, {name!r}) = {view.lookup(parent, name)} "
                                f"not {ino}")
    for ino in sorted(gone - set(state.inodes)):
        if view.get_inode(ino) is not None:
            problems.append(f"inode {ino} exists but the model deleted it (or never had it)")
    return problems


def assert_matches(view: Any, state: MState, gone: AbstractSet[int] = frozenset(),
                   what: str = "") -> None:
    problems = differences(view, state, gone)
    assert not problems, f"store differs from the model{' ' + what if what else ''}:\n  " + \
        "\n  ".join(problems[:20])


class Workload:
    """A deterministic stream of valid transactions, a pure function of the seed.

    The same seed yields the same transactions in any process, so a child that
    is killed and a parent that checks what survived agree without talking. The
    workload keeps its own model (``state``) and hands out one transaction
    (a list of ops) per ``next_txn()``: create a file in a directory, write or
    rewrite blocks (random and repeated data: dedup), punch a hole, truncate,
    hard-link, unlink (deleting the inode on its last link), make directories
    and symlinks, set and remove xattrs, chmod/utime.
    """

    def __init__(self, seed: int, block_size: int, data_size: int = 4096,
                 first_ino: int = 2) -> None:
        self.rng = random.Random(seed)
        self.next_ino = first_ino
        self.block_size = block_size  # the store's BLOCK_SIZE: what sizes are measured in
        self.data_size = data_size  # block contents stay small so workloads run fast
        self.state = MState()
        # the root's attributes are the store's choice; with_root() fills them in
        self.state.inodes[ROOT_INO] = MInode(ROOT_INO, S_IFDIR | 0o755, 0, 0, 2, 0, 0, 0, 0, 0, None)
        self.state.dirs[ROOT_INO] = {}
        self.files: list[int] = []
        self.dirs: list[int] = [ROOT_INO]
        self.shared = [self.rng.randbytes(data_size) for _ in range(4)]  # dedup fodder
        self.count = 0

    def _names(self) -> list[tuple[int, bytes, int]]:
        return [(p, n, i) for p, ents in self.state.dirs.items() for n, i in ents.items()]

    def _data(self) -> bytes:
        r = self.rng.random()
        if r < 0.3:
            return self.rng.choice(self.shared)
        size = self.data_size if r < 0.8 else self.rng.randrange(1, self.data_size)
        return self.rng.randbytes(size)

    def _new_name(self, parent: int) -> bytes:
        while True:
            name = f"n{self.rng.randrange(10_000)}".encode()
            if name not in self.state.dirs[parent]:
                return name

    def _create(self, mode: int, target: bytes | None = None) -> list[Op]:
        ino = self.next_ino
        self.next_ino += 1
        parent = self.rng.choice(self.dirs)
        name = self._new_name(parent)
        t = 1_700_000_000_000_000_000 + self.count
        ops: list[Op] = [
            ("create_inode", ino, {"mode": mode, "uid": self.rng.randrange(3),
                                   "gid": self.rng.randrange(3), "rdev": 0, "target": target,
                                   "times_ns": t}),
            ("link", parent, name, ino),
            ("update", ino, {"nlink": 2 if mode & 0o170000 == S_IFDIR else 1}),
        ]
        if mode & 0o170000 == S_IFDIR:
            self.dirs.append(ino)
        elif mode & 0o170000 == S_IFREG:
            self.files.append(ino)
        return ops

    def _write(self, ino: int) -> list[Op]:
        node = self.state.inodes[ino]
        blocks: dict[int, bytes | None] = {}
        for _ in range(self.rng.randrange(1, 4)):
            index = self.rng.randrange(6)
            blocks[index] = self._data()
        if node.blocks and self.rng.random() < 0.2:
            blocks[self.rng.choice(sorted(node.blocks))] = None  # punch a hole
        top = max([i for i, d in blocks.items() if d is not None] + list(node.blocks), default=-1)
        size = max(node.size, top * self.block_size + self.data_size)
        if self.rng.random() < 0.2:
            size = self.rng.randrange(0, size + 1)  # a truncation in the same version
            keep = (size + self.block_size - 1) // self.block_size
            for index in set(node.blocks) | set(blocks):
                if index >= keep:
                    blocks[index] = None
        return [("set_blocks", ino, blocks, size)]

    def _unlink(self) -> list[Op]:
        candidates = [(p, n, i) for p, n, i in self._names()
                      if i in self.files or (i in self.dirs and not self.state.dirs[i])]
        if not candidates:
            return []
        parent, name, ino = self.rng.choice(candidates)
        ops: list[Op] = [("unlink", parent, name)]
        node = self.state.inodes[ino]
        is_dir = ino in self.dirs
        if is_dir or node.nlink <= 1:
            ops.append(("delete_inode", ino))
            (self.dirs if is_dir else self.files).remove(ino)
        else:
            ops.append(("update", ino, {"nlink": node.nlink - 1}))
        return ops

    def next_txn(self) -> list[Op]:
        """The next transaction (already applied to ``self.state``)."""
        while True:
            ops = self._pick()
            if ops:
                break
        for op in ops:
            self.state.apply(op)
        self.count += 1
        return ops

    def _pick(self) -> list[Op]:
        r = self.rng.random()
        if r < 0.25 or not self.files:
            return self._create(S_IFREG | 0o644)
        if r < 0.55:
            return self._write(self.rng.choice(self.files))
        if r < 0.62:
            return self._create(S_IFDIR | 0o755)
        if r < 0.66:
            return self._create(S_IFLNK | 0o777, target=self.rng.randbytes(12).hex().encode())
        if r < 0.72:
            ino = self.rng.choice(self.files)
            parent = self.rng.choice(self.dirs)
            return [("link", parent, self._new_name(parent), ino),
                    ("update", ino, {"nlink": self.state.inodes[ino].nlink + 1})]
        if r < 0.82:
            return self._unlink()
        if r < 0.92:
            ino = self.rng.choice(self.files + self.dirs)
            xattrs = self.state.inodes[ino].xattrs
            if xattrs and self.rng.random() < 0.3:
                return [("remove_xattr", ino, self.rng.choice(sorted(xattrs)))]
            return [("set_xattr", ino, f"user.k{self.rng.randrange(4)}".encode(),
                     self.rng.randbytes(self.rng.randrange(0, 40)))]
        ino = self.rng.choice(self.files)
        return [("update", ino, {"mode": S_IFREG | self.rng.choice([0o600, 0o644, 0o755]),
                                 "mtime_ns": 1_800_000_000_000_000_000 + self.count})]


Step = tuple[Any, ...]
DURABLE = {"publish", "snapshot", "rollback", "delete_snapshot", "gc"}


@dataclass
class Durable:
    """What must survive if the store crashes after a durable step returned."""

    head: MState
    snapshots: dict[str, MState]
    pre: MState | None = None  # the head just before the step, if the step changes it (rollback)


@dataclass
class Scenario:
    """A deterministic script of store steps, with the model state after every durable step.

    Steps are ``("txn", ops)``, ``("publish",)``, ``("snapshot", name)``,
    ``("rollback", name)``, ``("delete_snapshot", name)`` and ``("gc",)``; every
    step but ``txn`` is *durable*: the runner publishes right after it, so when
    it returns, what the store shows is ``durable[k]`` for step index ``k``. A
    crash while step ``k`` runs may only leave the state of the last durable
    step before ``k`` or that of the first durable step at or after ``k``
    (publishing is atomic; nothing in between exists).
    """

    steps: list[Step]
    durable: dict[int, Durable]
    max_ino: int

    @classmethod
    def generate(cls, seed: int, n_steps: int, block_size: int, *, publish_every: int = 4,
                 admin: bool = True, admin_weight: float = 1.0,
                 data_size: int = 4096) -> Scenario:
        """``admin`` mixes in snapshots, rollbacks, snapshot deletes and gc.

        ``admin_weight`` scales how often (1.0: about one step in eight);
        ``data_size`` is the size of most written blocks.
        """
        w = Workload(seed, block_size=block_size, data_size=data_size)
        rng = random.Random(seed ^ 0x5EED)
        snapshots: dict[str, tuple[MState, list[int], list[int]]] = {}
        steps: list[Step] = []
        durable: dict[int, Durable] = {-1: Durable(w.state.clone(), {})}  # the fresh store
        since_publish = 0
        pre: MState | None = None
        while len(steps) < n_steps:
            step: Step
            r = rng.random() / admin_weight
            if since_publish >= publish_every:
                step = ("publish",)
            elif admin and r < 0.06:
                name = f"s{len(steps)}"
                snapshots[name] = (w.state.clone(), list(w.files), list(w.dirs))
                step = ("snapshot", name)
            elif admin and r < 0.09 and snapshots:
                name = rng.choice(sorted(snapshots))
                pre = w.state.clone()
                state, files, dirs = snapshots[name]
                w.state, w.files, w.dirs = state.clone(), list(files), list(dirs)
                step = ("rollback", name)
            elif admin and r < 0.11 and snapshots:
                name = rng.choice(sorted(snapshots))
                del snapshots[name]
                step = ("delete_snapshot", name)
            elif admin and r < 0.13:
                step = ("gc",)
            else:
                step = ("txn", w.next_txn())
                since_publish += 1
            if step[0] in DURABLE:
                since_publish = 0
                durable[len(steps)] = Durable(
                    w.state.clone(), {n: s.clone() for n, (s, _, _) in snapshots.items()},
                    pre if step[0] == "rollback" else None)
            steps.append(step)
        return cls(steps, durable, w.next_ino)

    def allowed(self, last_done: int) -> list[int]:
        """Durable step indices the store may show after a crash following ``last_done``.

        ``last_done`` is the last durable step the runner saw return (-1: none;
        step -1 is the fresh store).
        """
        before = [k for k in self.durable if k <= last_done]
        after = [k for k in self.durable if k > last_done]
        return ([max(before)] if before else []) + ([min(after)] if after else [])


def run_step(store: Any, step: Step) -> None:
    """Execute one scenario step on a store (durable steps publish before returning)."""
    kind = step[0]
    if kind == "txn":
        run_txn(store, step[1])
        return
    if kind == "snapshot":
        store.create_snapshot(step[1])
    elif kind == "rollback":
        store.rollback(step[1])
    elif kind == "delete_snapshot":
        store.delete_snapshot(step[1])
    elif kind == "gc":
        store.gc()
    store.publish()


def match_durable(store: Any, scenario: Scenario, last_done: int, base: MState) -> int:
    """Check a recovered store against the scenario; return the durable step its head matched.

    ``base`` is the model of the fresh store (its root). The head must equal
    the head of one of ``scenario.allowed(last_done)`` exactly (or, when the
    step in flight is a rollback, the head just before it: rollback publishes
    first); the set of
    snapshots must be the set of one of them (not necessarily the same one: a
    snapshot publishes the head before it records its name, so a crash in
    between shows the new head without the new snapshot); every listed
    snapshot must equal the model's snapshot of that name.
    """
    allowed = scenario.allowed(last_done)
    assert allowed, "the scenario has no durable step to compare with"
    gone = set(range(2, scenario.max_ino))
    heads = [(k, scenario.durable[k].head) for k in allowed]
    pre = scenario.durable[allowed[-1]].pre
    if pre is not None:  # a rollback publishes the head before it rewinds it
        heads.insert(-1, (allowed[-1], pre))
    tried: list[str] = []
    matched = None
    for k, head in heads:
        problems = differences(store, with_root(head, base), gone)
        if not problems:
            matched = k
            break
        tried.append(f"step {k}: " + "; ".join(problems[:6]))
    if matched is None:
        raise AssertionError(f"recovered head matches no allowed durable step after step "
                             f"{last_done} (allowed {allowed}):\n  " + "\n  ".join(tried))
    listed = {s.name for s in store.list_snapshots()}
    choices = [set(scenario.durable[k].snapshots) for k in allowed]
    assert listed in choices, f"snapshots after recovery: store {sorted(listed)}, " \
                              f"model {[sorted(c) for c in choices]}"
    models = {n: m for k in allowed for n, m in scenario.durable[k].snapshots.items()}
    for name in sorted(listed):
        assert_matches(store.view(name), with_root(models[name], base),
                       what=f"in snapshot {name}")
    return matched


def with_root(state: MState, base: MState) -> MState:
    """``state`` with the fresh store's root attributes merged in (xattrs from the model)."""
    out = state.clone()
    root = copy.deepcopy(base.inodes[ROOT_INO])
    root.xattrs = dict(state.inodes[ROOT_INO].xattrs) if ROOT_INO in state.inodes else {}
    out.inodes[ROOT_INO] = root
    return out


def model_of(view: Any) -> MState:
    """The model of what a store (or view) shows: every inode reachable from the root.

    Used to say "this store equals that one" by ``differences(other, model_of(one))``.
    """
    state = MState()
    todo = [ROOT_INO]
    while todo:
        ino = todo.pop()
        if ino in state.inodes:
            continue
        got = view.get_inode(ino)
        assert got is not None, f"a directory entry names missing inode {ino}"
        node = MInode(ino=ino, **{f: getattr(got, f) for f in _FIELDS},
                      blocks={i: view.read_chunk(h) for i, h in got.blocks.items()},
                      xattrs=dict(got.xattrs))
        state.inodes[ino] = node
        if node.mode & 0o170000 == S_IFDIR:
            state.dirs[ino] = dict(view.listdir(ino))
            todo.extend(state.dirs[ino].values())
    return state

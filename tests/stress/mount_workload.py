"""The mount crash campaign's workload and its model (CrashMonkey-style).

The workload runs in its own process on a live vegafs mount, with the example
hooks ``approvals.vega`` (a commit hook under ``/docs``) and
``line_count.vega`` (an after-hook under ``/notes``) active. It draws seeded
random operations — creates (with or without fsync), overwrites at random
offsets (holes included), appends, truncates, renames (replacing files, across
directories), unlinks, mkdir/rmdir, setxattr/removexattr, fsync of files and
of directories, ``vegafs sync`` and ``vegafs snapshot create`` — in the round's
three directories ``docs/rN``, ``notes/rN`` and ``data/rN``.

Why a model in the workload itself: each operation's *expected* outcome
(including the approvals hook's denial and its ``user.checked`` stamp) is
known before it runs, so the op log needs only the operation, not its data
(written bytes are regenerated from ``(seed, op number)``), and the checker
can replay the log into the exact sequence of states the store may recover.

The op log (a file on the host disk) gets one JSON line ``intent`` before an
operation and one ``done`` line after it returned, each flushed at once: the
parent kills only the daemon, so what the workload wrote to the host's page
cache survives. An operation that fails in a way the model did not predict
(the daemon died under it: ``ENOTCONN``...) ends the workload with an
``error`` line.

``replay()`` turns a log into micro-states: an operation that the store
records in more than one log record (a create: the empty file, then its
content at close) contributes one state per record, so "the recovered tree is
a prefix of the operations" can be checked exactly.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROUND_DIRS = ("docs", "notes", "data")
NAMES = tuple(f"f{i}" for i in range(6))
IGNORED_XATTRS = frozenset({"user.lines"})  # written by the line_count after-hook, asynchronously
XATTR_KEYS = ("user.tag", "user.status", "user.reviewer")
XATTR_VALUES = {
    "user.tag": (b"red", b"green", b""),
    "user.status": (b"approved", b"draft"),
    "user.reviewer": (b"ann", b"bob"),
}
DURABLE_OPS = frozenset({"fsync", "fsyncdir", "sync", "snapshot"})
CHUNK = 50_000  # create writes in pieces: several write() calls make one version

# What a state is: relative path -> ("d",) or ("f", sha256 hex, sorted xattr items).
State = dict[str, tuple[Any, ...]]


def payload(seed: int, op_no: int, size: int) -> bytes:
    """The bytes op ``op_no`` writes: distinct per op, so a mixed or torn file cannot pass."""
    return random.Random(seed * 1_000_003 + op_no).randbytes(size)


def digest(data: bytes) -> str:
    """The content hash states compare by."""
    return hashlib.sha256(data).hexdigest()


@dataclass
class FileEntry:
    """A file in the model: content, its hash, and its user xattrs."""

    content: bytes
    sha: str
    xattrs: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Model:
    """What the round's directories hold, as the workload believes it (and the checker replays)."""

    round_no: int
    seed: int
    files: dict[str, FileEntry] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.dirs.update(self.roots())

    def roots(self) -> list[str]:
        """The round's three top directories (made durable by the parent before the workload)."""
        return [f"{d}/r{self.round_no}" for d in ROUND_DIRS]

    def state(self) -> State:
        """The comparable state now."""
        out: State = {d: ("d",) for d in self.dirs}
        for path, f in self.files.items():
            out[path] = ("f", f.sha, tuple(sorted(f.xattrs.items())))
        return out

    def _set(self, path: str, content: bytes, xattrs: dict[str, bytes] | None = None) -> None:
        old = self.files.get(path)
        keep = dict(old.xattrs) if old else {}
        self.files[path] = FileEntry(content, digest(content), keep if xattrs is None else xattrs)

    # ------------------------------------------------------------ choosing

    def choose(self, rng: random.Random, op_no: int) -> dict[str, Any]:
        """Draw the next operation (always one that makes sense for the current state)."""
        files = sorted(self.files)
        subdirs = sorted(d for d in self.dirs if d.endswith("/sub"))
        roll = rng.random()
        if not files or roll < 0.22:
            parent = rng.choice(sorted(self.dirs))
            name = rng.choice(NAMES) + (".md" if parent.startswith("notes/") else "")
            path = f"{parent}/{name}"
            if path not in self.files and path not in self.dirs:
                size = rng.choice([0, rng.randrange(1, 3000), rng.randrange(100_000, 300_000)])
                return {"op": "create", "path": path, "size": size, "fsync": rng.random() < 0.1}
            roll = 0.3
        path = rng.choice(files) if files else ""
        if roll < 0.36:
            size = len(self.files[path].content)
            off = rng.randrange(0, size + 20_000)
            return {"op": "pwrite", "path": path, "offset": off, "size": rng.randrange(1, 70_000)}
        if roll < 0.46:
            return {"op": "append", "path": path, "size": rng.randrange(1, 40_000)}
        if roll < 0.53:
            size = len(self.files[path].content)
            return {"op": "truncate", "path": path, "size": rng.randrange(0, size * 3 // 2 + 200)}
        if roll < 0.62:
            parent = rng.choice(sorted(self.dirs))
            name = rng.choice(NAMES) + (".md" if parent.startswith("notes/") else "")
            dst = f"{parent}/{name}"
            if dst not in self.dirs:
                return {"op": "rename", "path": path, "dst": dst}
            return {"op": "fsync", "path": path}
        if roll < 0.68:
            return {"op": "unlink", "path": path}
        if roll < 0.80:
            xattrs = self.files[path].xattrs
            removable = sorted(k for k in xattrs if k in XATTR_KEYS)
            if removable and rng.random() < 0.25:
                return {"op": "removexattr", "path": path, "key": rng.choice(removable)}
            key = rng.choice(XATTR_KEYS)
            return {"op": "setxattr", "path": path, "key": key,
                    "value": rng.choice(XATTR_VALUES[key]).decode()}
        if roll < 0.85:
            root = rng.choice(self.roots())
            sub = f"{root}/sub"
            if sub in subdirs:
                if not any(p.startswith(sub + "/") for p in self.files):
                    return {"op": "rmdir", "path": sub}
                return {"op": "fsyncdir", "path": sub}
            return {"op": "mkdir", "path": sub}
        if roll < 0.90:
            return {"op": "fsync", "path": path}
        if roll < 0.93:
            return {"op": "fsyncdir", "path": rng.choice(sorted(self.dirs))}
        if roll < 0.95:
            return {"op": "sync"}
        if roll < 0.985:
            return {"op": "pwrite", "path": path, "offset": 0, "size": rng.randrange(1, 200)}
        return {"op": "snapshot", "name": f"r{self.round_no}-s{op_no}"}

    # ------------------------------------------------------------ the model

    def expect(self, op: dict[str, Any]) -> str:
        """The result the op must have: "ok", or the errno name a hook or POSIX gives."""
        if op["op"] in ("setxattr", "removexattr") and op["path"].startswith("docs/"):
            after = self._xattrs_after(op)
            if after.get("user.status") == b"approved" and "user.reviewer" not in after:
                return "EPERM"  # approvals.vega: an approval names its reviewer
        return "ok"

    def _xattrs_after(self, op: dict[str, Any]) -> dict[str, bytes]:
        after = dict(self.files[op["path"]].xattrs)
        if op["op"] == "setxattr":
            after[op["key"]] = op["value"].encode()
        else:
            after.pop(op["key"], None)
        return after

    def apply(self, op_no: int, op: dict[str, Any], result: str) -> Iterator[State]:
        """Apply an op with its result; yield the state after each log record it makes."""
        kind, path = op["op"], op.get("path", "")
        if result != "ok":
            return
        if kind == "create":
            self._set(path, b"", {})
            yield self.state()
            if op["size"]:
                self._set(path, payload(self.seed, op_no, op["size"]))
                yield self.state()
        elif kind == "pwrite":
            old = self.files[path].content
            data, off = payload(self.seed, op_no, op["size"]), op["offset"]
            new = old[:off].ljust(off, b"\0") + data + old[off + len(data):]
            self._set(path, new)
            yield self.state()
        elif kind == "append":
            self._set(path, self.files[path].content + payload(self.seed, op_no, op["size"]))
            yield self.state()
        elif kind == "truncate":
            self._set(path, self.files[path].content[: op["size"]].ljust(op["size"], b"\0"))
            yield self.state()
        elif kind == "rename":
            if path != op["dst"]:
                self.files[op["dst"]] = self.files.pop(path)
            yield self.state()
        elif kind == "unlink":
            del self.files[path]
            yield self.state()
        elif kind in ("setxattr", "removexattr"):
            after = self._xattrs_after(op)
            if path.startswith("docs/"):
                after["user.checked"] = b"yes"  # approvals.vega amends every accepted commit
            self.files[path].xattrs = after
            yield self.state()
        elif kind == "mkdir":
            self.dirs.add(path)
            yield self.state()
        elif kind == "rmdir":
            self.dirs.discard(path)
            yield self.state()
        else:  # fsync, fsyncdir, sync, snapshot: no change of the tree
            yield self.state()


# ------------------------------------------------------------------ running


def _perform(mnt: Path, store: Path, seed: int, op_no: int, op: dict[str, Any]) -> None:
    """Do one operation on the mount; raise OSError (or CalledProcessError) as it fails."""
    kind = op["op"]
    target = mnt / op.get("path", "")
    if kind == "create":
        fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            data = payload(seed, op_no, op["size"])
            for off in range(0, len(data), CHUNK):
                os.write(fd, data[off:off + CHUNK])
            if op["fsync"]:
                os.fsync(fd)
        finally:
            os.close(fd)
    elif kind in ("pwrite", "append"):
        flags = os.O_WRONLY | (os.O_APPEND if kind == "append" else 0)
        fd = os.open(target, flags)
        data = payload(seed, op_no, op["size"])
        try:
            if kind == "pwrite":
                os.pwrite(fd, data, op["offset"])
            else:
                os.write(fd, data)
        finally:
            os.close(fd)
    elif kind == "truncate":
        os.truncate(target, op["size"])
    elif kind == "rename":
        os.rename(target, mnt / op["dst"])
    elif kind == "unlink":
        os.unlink(target)
    elif kind == "setxattr":
        os.setxattr(target, op["key"], op["value"].encode())
    elif kind == "removexattr":
        os.removexattr(target, op["key"])
    elif kind == "mkdir":
        os.mkdir(target)
    elif kind == "rmdir":
        os.rmdir(target)
    elif kind in ("fsync", "fsyncdir"):
        fd = os.open(target, os.O_RDONLY | (os.O_DIRECTORY if kind == "fsyncdir" else 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    elif kind == "sync":
        _vegafs("sync", str(mnt))
    elif kind == "snapshot":
        _vegafs("snapshot", "create", op["name"], "--store", str(store))
    else:
        raise ValueError(f"unknown op {kind}")


def _vegafs(*args: str) -> None:
    """Run the real `vegafs` command (through the daemon's control socket)."""
    proc = subprocess.run([sys.executable, "-m", "vegafs", *args], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise OSError(errno.EIO, f"vegafs {' '.join(args)}: {proc.stderr.strip()}")


def run_workload(mnt: Path, store: Path, round_no: int, seed: int, log_path: Path) -> int:
    """Run operations until one fails unexpectedly (the daemon was killed); return 2 then."""
    rng = random.Random(seed)
    model = Model(round_no, seed)
    with open(log_path, "a", buffering=1) as log:
        def write(record: dict[str, Any]) -> None:
            log.write(json.dumps(record) + "\n")
            log.flush()

        op_no = 0
        while True:
            op = model.choose(rng, op_no)
            expected = model.expect(op)
            write({"i": op_no, "phase": "intent", **op})
            try:
                _perform(mnt, store, seed, op_no, op)
                result = "ok"
            except OSError as exc:
                result = errno.errorcode.get(exc.errno or 0, str(exc))
            if result != expected:
                write({"i": op_no, "phase": "error", "result": result, "expected": expected})
                return 2
            write({"i": op_no, "phase": "done", "result": result})
            for _ in model.apply(op_no, op, result):
                pass
            op_no += 1


@dataclass
class Replay:
    """What a log allows the recovered tree to be."""

    states: list[State]  # micro-states in order; states[0] is the round's empty roots
    durable: int  # index in states of the last state a durable op covered before the kill
    contents: set[str]  # every content hash the workload ever wrote
    line_counts: set[int]  # newlines in those versions (after-hooks read recorded versions)
    snapshots: dict[str, tuple[int, bool]]  # name -> (state index, returned before the kill)
    ops_done: int  # ops that returned before the kill
    denials: int
    early_errors: list[str]  # unexpected results logged before the kill: always a failure


def replay(log_path: Path, round_no: int, seed: int, cut: int) -> Replay:
    """Rebuild the allowed states from an op log; ``cut`` is its size in bytes at the kill.

    Only a ``done`` line wholly before ``cut`` proves that an op returned
    before the daemon died; those are the durable points. An op that ended
    after the cut (or never) may be applied or not, so it only adds states:
    for instance a ``vegafs snapshot create`` racing the kill finds no daemon
    and snapshots the store's last publish directly, as documented.
    """
    model = Model(round_no, seed)
    states = [model.state()]
    contents = {digest(b"")}
    line_counts = {0}
    snapshots: dict[str, tuple[int, bool]] = {}
    durable = ops_done = denials = 0
    intents: dict[int, dict[str, Any]] = {}
    done: dict[int, tuple[str, bool]] = {}
    early_errors: list[str] = []
    end = 0
    for raw in log_path.read_bytes().splitlines(keepends=True):
        end += len(raw)
        if not raw.endswith(b"\n"):
            continue  # a line cut short by the workload's own death
        rec = json.loads(raw)
        if rec["phase"] == "intent":
            intents[rec["i"]] = {k: v for k, v in rec.items() if k not in ("i", "phase")}
        elif rec["phase"] == "done":
            done[rec["i"]] = (rec["result"], end <= cut)
        elif rec["phase"] == "error" and end <= cut:
            early_errors.append(f"op {rec['i']} {intents[rec['i']]}: {rec['result']}, "
                                f"expected {rec['expected']}")
    for op_no in sorted(intents):
        op = intents[op_no]
        result, before_kill = done.get(op_no, (model.expect(op), False))
        for st in model.apply(op_no, op, result):
            states.append(st)
        for f in model.files.values():
            if f.sha not in contents:
                contents.add(f.sha)
                line_counts.add(f.content.count(b"\n"))
        if op["op"] == "snapshot":
            snapshots[op["name"]] = (len(states) - 1, before_kill)
        if before_kill:
            ops_done += 1
            denials += result != "ok"
            if op["op"] in DURABLE_OPS:
                durable = len(states) - 1
    return Replay(states, durable, contents, line_counts, snapshots, ops_done, denials,
                  early_errors)


def read_tree(base: Path, roots: list[str]) -> State:
    """The comparable state of the round's directories under ``base`` (mount or snapshot)."""
    out: State = {}
    for root in roots:
        top = base / root
        if not top.is_dir():
            continue
        out[root] = ("d",)
        for dirpath, dirnames, filenames in os.walk(top):
            rel_dir = os.path.relpath(dirpath, base)
            for d in dirnames:
                out[f"{rel_dir}/{d}"] = ("d",)
            for name in filenames:
                full = os.path.join(dirpath, name)
                with open(full, "rb") as f:
                    sha = digest(f.read())
                xattrs = {k: os.getxattr(full, k) for k in os.listxattr(full)
                          if k.startswith("user.") and k not in IGNORED_XATTRS}
                out[f"{rel_dir}/{name}"] = ("f", sha, tuple(sorted(xattrs.items())))
    return out


if __name__ == "__main__":
    sys.exit(run_workload(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                          Path(sys.argv[5])))

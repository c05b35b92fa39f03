"""What survives an unmount, and what survives a kill -9 of the daemon.

* Remount: everything ordinary tools made (modes, owners, ns times, hard
  links, symlinks, FIFOs, xattrs, sparse and > 4 GiB files) reads back the
  same from a fresh daemon.
* kill -9 during a write loop: every file whose fsync returned is intact to
  the byte; every other file is absent or one whole version of itself (never
  a torn or mixed one); the next mount comes up with no manual fsck (and the
  fixture's fsck after the test is clean).
* The other publish points of docs/consistency.md (fsync of a directory,
  ``vegafs sync``) hold across kill -9; an open-unlinked file leaves no trace.
* Real clients across kill -9: SQLite keeps every COMMIT that returned (WAL
  and DELETE journals) and checks clean; git commits in flight leave a
  repository that fscks clean (recovery is a prefix of the operations).

Seeds are printed; rerun one with ``VEGAFS_KILL_SEED=<seed>``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mount.helpers import (
    GIT_ENV,
    Mount,
    git,
    make_sample_tree,
    manifest,
    needs_root,
    opened,
    run,
    sha256_file,
)
from tests.mountutil import needs_fuse, run_vegafs

pytestmark = [pytest.mark.mount, needs_fuse]

GiB = 1 << 30


@needs_root
@pytest.mark.timeout(180)
def test_remount_preserves_everything(vmount: Mount, tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", with_fifo=True, with_xattrs=True)
    tree = vmount.mnt / "tree"
    run(["rsync", "-aHAX", f"{src}/", f"{tree}/"])
    os.chown(tree / "small.txt", 4321, 8765)
    os.chmod(tree / "block-exact", 0o2755)
    for i in range(500):
        (tree / "empty-dir" / f"e{i}").write_bytes(i.to_bytes(4, "little") * i)
    sparse = vmount.mnt / "sparse"
    sparse.mkdir()
    payload = os.urandom(300_000)
    with opened(sparse / "beyond-4g", os.O_CREAT | os.O_WRONLY) as fd:
        os.pwrite(fd, payload, 5 * GiB)
    with opened(sparse / "huge", os.O_CREAT | os.O_WRONLY) as fd:
        os.write(fd, b"x")
        os.ftruncate(fd, 999_999_999_999_999)
    # unflushed-by-fsync data: a clean unmount must publish it too
    (vmount.mnt / "last-write").write_bytes(b"written just before unmount")
    before = manifest(tree, xattrs=True)

    vmount.remount()

    assert manifest(tree, xattrs=True) == before
    assert (vmount.mnt / "last-write").read_bytes() == b"written just before unmount"
    st = (sparse / "beyond-4g").stat()
    assert st.st_size == 5 * GiB + len(payload)
    with opened(sparse / "beyond-4g", os.O_RDONLY) as fd:
        assert os.pread(fd, len(payload), 5 * GiB) == payload
        assert os.pread(fd, 4096, 3 * GiB) == bytes(4096)
    assert (sparse / "huge").stat().st_size == 999_999_999_999_999
    with opened(sparse / "huge", os.O_RDONLY) as fd:
        assert os.pread(fd, 2, 0) == b"x\0"


@pytest.mark.timeout(120)
def test_directory_fsync_and_vegafs_sync_publish_before_they_return(vmount: Mount) -> None:
    """docs/consistency.md: fsync of a directory, and `vegafs sync MNT`, publish everything so far."""
    d = vmount.mnt / "d"
    d.mkdir()
    (d / "a").write_bytes(b"closed, then the directory fsynced")
    (d / "b").write_bytes(b"to be renamed")
    os.rename(d / "b", d / "b2")
    with opened(d, os.O_RDONLY | os.O_DIRECTORY) as fd:
        os.fsync(fd)
    vmount.kill9()
    vmount.stop()
    vmount.start()
    assert sorted(os.listdir(d)) == ["a", "b2"]
    assert (d / "a").read_bytes() == b"closed, then the directory fsynced"
    (d / "c").write_bytes(b"closed, then vegafs sync")
    os.unlink(d / "a")
    result = run_vegafs("sync", vmount.mnt, timeout=60)
    assert result.returncode == 0, result.stderr
    vmount.kill9()
    vmount.stop()
    vmount.start()
    assert sorted(os.listdir(d)) == ["b2", "c"]
    assert (d / "c").read_bytes() == b"closed, then vegafs sync"


@pytest.mark.timeout(180)
def test_large_file_content_survives_remount(vmount: Mount) -> None:
    """256 MiB of distinct data: every byte back, before and after a remount."""
    path = vmount.mnt / "large.bin"
    block = bytearray(os.urandom(1 << 20))
    digest = hashlib.sha256()
    with opened(path, os.O_CREAT | os.O_WRONLY) as fd:
        for i in range(256):
            block[:8] = i.to_bytes(8, "little")  # no two MiB alike: dedup cannot hide a mix-up
            digest.update(block)
            assert os.write(fd, block) == len(block)
    assert sha256_file(path) == digest.hexdigest()
    vmount.remount()
    assert path.stat().st_size == 256 << 20
    assert sha256_file(path) == digest.hexdigest()


@pytest.mark.timeout(60)
def test_open_unlinked_file_across_kill9(vmount: Mount) -> None:
    """An orphan (open, unlinked, fsynced) at a crash: gone after remount, store fsck-clean."""
    path = vmount.mnt / "orphan"
    keep = vmount.mnt / "keep"
    keep.write_bytes(b"kept")
    fd = os.open(path, os.O_CREAT | os.O_RDWR)
    try:
        os.write(fd, b"x" * 300_000)
        os.unlink(path)
        os.fsync(fd)
        assert os.pread(fd, 3, 0) == b"xxx"
        vmount.kill9()
    finally:
        with contextlib.suppress(OSError):  # ENOTCONN: the daemon is gone
            os.close(fd)
    vmount.stop()
    vmount.start()
    assert sorted(os.listdir(vmount.mnt)) == ["keep"]
    # (the fixture's fsck after the test proves the orphan left no dangling inode)


# The writer runs in its own process, so the test can kill the daemon under it.
# For each i it writes file i in several pieces, fsyncs it and only then prints
# i: a printed i is a promise that file i is durable. Every iteration it also
# rewrites "rolling" in place and replaces "atomic" by rename, without fsync:
# those may be lost, but never torn.
WRITER = r"""
import os, sys
root = sys.argv[1]

def content(i):
    size = (i * 7919) % 400_000 + 1
    head = b"%d:%d:" % (i, size)
    body = (b"%08d" % i) * (size // 8 + 1)
    return (head + body)[:max(size, len(head))]

i = 0
while True:
    data = content(i)
    fd = os.open(os.path.join(root, "f%05d" % i), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    for off in range(0, len(data), 50_000):
        os.write(fd, data[off:off + 50_000])
    os.fsync(fd)
    os.close(fd)
    print(i, flush=True)
    fd = os.open(os.path.join(root, "rolling"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    for off in range(0, len(data), 30_000):
        os.write(fd, data[off:off + 30_000])
    os.close(fd)
    tmp = os.path.join(root, "atomic.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(root, "atomic"))
    i += 1
"""


def _content(i: int) -> bytes:
    """The writer's content for file i (kept in step with WRITER above)."""
    size = (i * 7919) % 400_000 + 1
    head = b"%d:%d:" % (i, size)
    body = (b"%08d" % i) * (size // 8 + 1)
    return (head + body)[: max(size, len(head))]


def _whole_version(data: bytes) -> bool:
    """True if ``data`` is exactly one complete version the writer wrote."""
    try:
        i = int(data.split(b":", 1)[0])
    except ValueError:
        return False
    return data == _content(i)


def _kill_after_acks(m: Mount, argv: list[str], acks_wanted: int, what: str) -> int:
    """Run a client that prints one index per durable step (an fsync, a COMMIT
    that returned); SIGKILL the daemon after ``acks_wanted`` of them.

    Returns the last index the client reported, counting acks it printed
    after our last read but before the kill.
    """
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    last = -1
    try:
        assert client.stdout is not None
        for line in client.stdout:
            last = int(line)
            if last + 1 >= acks_wanted:
                break
        assert last + 1 >= acks_wanted, f"client stopped after {last + 1} {what}"
        m.kill9()
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait()
        if client.stdout is not None:
            for line in client.stdout.read().split():
                last = int(line)
            client.stdout.close()
    return last


def _kill_during_writes(m: Mount, root: Path, acks_before_kill: int) -> int:
    """Run the writer in ``root``, SIGKILL the daemon after ``acks_before_kill`` fsyncs.

    Returns the last file index whose fsync the writer reported.
    """
    root.mkdir()
    return _kill_after_acks(m, [sys.executable, "-c", WRITER, str(root)], acks_before_kill,
                            "fsyncs")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("vmount", [(), ("--writeback-cache",)], indirect=True, ids=["default", "writeback"])
def test_kill9_during_write_loop_keeps_every_fsynced_file(vmount: Mount) -> None:
    seed = int(os.environ.get("VEGAFS_KILL_SEED", time.time_ns() % 1_000_000))
    print(f"kill -9 test seed: {seed} (rerun with VEGAFS_KILL_SEED={seed})")
    rng = random.Random(seed)
    rounds: list[tuple[str, int]] = []
    for n in range(2):
        name = f"w{n}"
        rounds.append((name, _kill_during_writes(vmount, vmount.mnt / name, rng.randrange(5, 40))))
        vmount.stop()
        vmount.start()  # the next mount comes up on the last publish, no manual fsck
        for done, last_ack in rounds:  # this round's files, and every earlier round's still
            _verify_after_crash(vmount.mnt / done, last_ack, seed)


def _verify_after_crash(root: Path, last_ack: int, seed: int) -> None:
    """Every acknowledged file exact; anything else absent or one whole version."""
    names = set(os.listdir(root))
    for i in range(last_ack + 1):
        data = (root / f"f{i:05d}").read_bytes()
        assert data == _content(i), f"fsynced file {i} in {root.name} differs (seed {seed})"
    extra = sorted(n for n in names if n.startswith("f") and int(n[1:]) > last_ack)
    assert len(extra) <= 1, f"files beyond the last fsync: {extra} (seed {seed})"
    for name in extra:
        data = (root / name).read_bytes()
        assert data in (b"", _content(int(name[1:]))), f"torn {name} (seed {seed})"
    for name in ("rolling", "atomic"):
        if name in names:
            data = (root / name).read_bytes()
            assert data == b"" or _whole_version(data), f"torn {name}: {data[:40]!r} (seed {seed})"
    allowed = {f"f{i:05d}" for i in range(last_ack + 2)} | {"rolling", "atomic", "atomic.tmp"}
    assert names <= allowed, f"unexpected names {sorted(names - allowed)} (seed {seed})"


# A database client in its own process: each committed row is printed only
# after COMMIT returned. synchronous=EXTRA, because in DELETE mode the commit
# point is the unlink of the journal, which FULL does not sync (SQLite
# documents that FULL may lose the last commit on power loss; EXTRA fsyncs
# the directory after the unlink). In WAL mode FULL already syncs the WAL.
SQLITE_CLIENT = r"""
import sqlite3, sys
db, mode = sys.argv[1], sys.argv[2]
con = sqlite3.connect(db, isolation_level=None)
con.execute(f"PRAGMA journal_mode={mode}")
con.execute("PRAGMA synchronous=EXTRA")
con.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
i = 0
while True:
    con.execute("BEGIN")
    con.execute("INSERT INTO t VALUES (?, ?)", (i, bytes([i % 251]) * (100 + i % 5000)))
    con.execute("UPDATE t SET v = ? WHERE id = ?", (bytes([i % 13]) * 50, i // 2))
    con.execute("COMMIT")
    print(i, flush=True)
    i += 1
"""


def _row(i: int, last: int) -> bytes:
    """Row i's value after transactions 0..last (kept in step with SQLITE_CLIENT)."""
    value = bytes([i % 251]) * (100 + i % 5000)
    for j in range(2 * i, min(2 * i + 1, last) + 1):  # transaction j updates row j // 2
        if j >= i:
            value = bytes([j % 13]) * 50
    return value


@pytest.mark.timeout(180)
@pytest.mark.parametrize("journal_mode", ["WAL", "DELETE"])
def test_sqlite_survives_kill9_of_the_daemon(vmount: Mount, journal_mode: str) -> None:
    """Every transaction whose COMMIT returned is in the database after a crash, which checks clean."""
    seed = int(os.environ.get("VEGAFS_KILL_SEED", time.time_ns() % 1_000_000))
    acks_wanted = random.Random(seed).randrange(50, 300)
    print(f"sqlite kill -9 after {acks_wanted} commits (seed {seed})")
    db = vmount.mnt / "crash.db"
    last = _kill_after_acks(
        vmount, [sys.executable, "-c", SQLITE_CLIENT, str(db), journal_mode], acks_wanted,
        "commits",
    )
    vmount.stop()
    vmount.start()
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows = dict(con.execute("SELECT id, v FROM t"))
    finally:
        con.close()
    committed = max(rows) if rows else -1
    assert committed >= last, f"commit {last} returned but the database ends at {committed} (seed {seed})"
    assert committed <= last + 1
    assert sorted(rows) == list(range(committed + 1))
    for i, value in rows.items():
        assert value == _row(i, committed), f"row {i} wrong after recovery (seed {seed})"


GIT_LOOP = r"""
i=0
while :; do
    i=$((i + 1))
    echo "change $i" > "f$((i % 7))"
    seq 1 $((i * 13 % 4000)) > big
    git add -A && git commit -q -m "commit $i" || exit 1
    echo "$i"
done
"""


@pytest.mark.timeout(180)
def test_git_repository_is_consistent_after_kill9(vmount: Mount) -> None:
    """Commits in flight when the daemon dies: the log's prefix order keeps the repository valid.

    git does not fsync loose objects and refs here, so what survives is up to
    the filesystem; because vegafs recovers a prefix of the operations in
    order, a ref can never point to an object whose write was lost.
    """
    seed = int(os.environ.get("VEGAFS_KILL_SEED", time.time_ns() % 1_000_000))
    commits_wanted = random.Random(seed).randrange(3, 25)
    print(f"git kill -9 after {commits_wanted} commits (seed {seed})")
    repo = vmount.mnt / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("start\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "root")
    result = run_vegafs("sync", vmount.mnt, timeout=60)
    assert result.returncode == 0, result.stderr
    env = {**os.environ, **GIT_ENV, "HOME": str(vmount.mnt)}
    loop = subprocess.Popen(
        ["sh", "-c", GIT_LOOP], cwd=repo, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    done = 0
    try:
        assert loop.stdout is not None
        for line in loop.stdout:
            done = int(line)
            if done >= commits_wanted:
                break
        assert done >= commits_wanted, f"the git loop stopped after {done} commits"
        vmount.kill9()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(loop.pid, signal.SIGKILL)
        loop.wait()
        if loop.stdout is not None:
            loop.stdout.close()
    vmount.stop()
    vmount.start()
    git(repo, "fsck", "--full", "--no-dangling")
    count = int(git(repo, "rev-list", "--count", "HEAD"))
    assert 1 <= count <= done + 2
    git(repo, "status", "--porcelain")  # the index reads back too

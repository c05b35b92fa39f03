"""FileSystem over a real store, without a kernel: POSIX semantics, one at a time.

Every test ends with a clean ``store.fsck()`` (the ``fs`` fixture checks it),
the habit S3QL's tests follow: whatever the fs did, the store stays sound.
"""

from __future__ import annotations

import errno
import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from vegafs.fs import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    ROOT_CTX,
    SNAP_BASE,
    XATTR_CREATE,
    XATTR_REPLACE,
    Ctx,
    FileSystem,
    FsError,
)
from vegafs.fs import filesystem as fsmod
from vegafs.store import BLOCK_SIZE, ROOT_INO, Store

ROOT = ROOT_INO
USER = Ctx(uid=1000, gid=1000)
OTHER = Ctx(uid=1001, gid=1001)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def fs(store_dir: Path) -> Iterator[FileSystem]:
    store = Store.open(store_dir, create=True)
    filesystem = FileSystem(store)
    yield filesystem
    filesystem.close()
    report = store.fsck()
    store.close()
    assert report.ok, report.problems


def errno_of(fn, *args, **kwargs) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(FsError) as info:
        fn(*args, **kwargs)
    return info.value.errno


def make_file(fs: FileSystem, name: bytes, data: bytes = b"", parent: int = ROOT, ctx: Ctx = ROOT_CTX) -> int:
    fh, attr = fs.create(parent, name, 0o644, os.O_RDWR, ctx)
    if data:
        fs.write(fh, 0, data)
    fs.release(fh)
    return attr.ino


def read_all(fs: FileSystem, ino: int) -> bytes:
    fh = fs.open(ino, os.O_RDONLY, ROOT_CTX)
    try:
        return fs.read(fh, 0, fs.getattr(ino).size)
    finally:
        fs.release(fh)


# ------------------------------------------------------------------ data


def test_write_read_and_reopen(fs: FileSystem, store_dir: Path) -> None:
    data = os.urandom(3 * BLOCK_SIZE + 1234)
    ino = make_file(fs, b"f", data)
    assert read_all(fs, ino) == data
    assert fs.getattr(ino).size == len(data)
    fs.sync()
    reopened = Store.open(store_dir, read_only=True)
    try:
        inode = reopened.get_inode(reopened.lookup(ROOT, b"f"))
        assert inode.size == len(data)
        assert inode.version == 1
    finally:
        reopened.close()


def test_readers_see_buffered_writes_before_commit(fs: FileSystem) -> None:
    fh, attr = fs.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
    fs.write(fh, 0, b"hello")
    other = fs.open(attr.ino, os.O_RDONLY, ROOT_CTX)  # same file open twice, ro and rw
    assert fs.read(other, 0, 100) == b"hello"
    assert fs.getattr(attr.ino).size == 5
    assert fs.store.get_inode(attr.ino).size == 0  # not committed yet
    fs.flush(fh)
    assert fs.store.get_inode(attr.ino).size == 5
    fs.release(other)
    fs.release(fh)


def test_read_plan_is_filled_off_thread_as_of_planning(
    fs: FileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan_read on the fs thread, fill anywhere: stored blocks are read straight
    from the store, buffered data is taken at planning time, partial blocks go
    through the chunk cache, holes are zeros."""
    monkeypatch.setattr(fsmod, "MAX_CACHED_CHUNKS", 1)  # the writes leave one chunk cached
    data = bytearray(os.urandom(4 * BLOCK_SIZE + 100))
    ino = make_file(fs, b"f", bytes(data))
    fh = fs.open(ino, os.O_RDWR, ROOT_CTX)
    fs.write(fh, BLOCK_SIZE + 10, b"x" * 50)  # block 1 is now a dirty buffer
    data[BLOCK_SIZE + 10 : BLOCK_SIZE + 60] = b"x" * 50
    fs.setattr(ino, ROOT_CTX, size=6 * BLOCK_SIZE)  # a hole up to the new end
    data += bytes(6 * BLOCK_SIZE - len(data))
    plan = fs.plan_read(fh, 0, 8 * BLOCK_SIZE)
    assert plan is not None and plan.io
    # block 4's chunk holds 100 bytes: read whole, zeros after it
    assert [pos for pos, _ in plan.blocks] == [0, 2 * BLOCK_SIZE, 3 * BLOCK_SIZE, 4 * BLOCK_SIZE]
    fs.write(fh, BLOCK_SIZE + 10, b"y")  # after planning: not in this reply
    assert fs.fill(plan) == data
    data[BLOCK_SIZE + 10] = ord("y")
    partial = fs.plan_read(fh, 3 * BLOCK_SIZE + 5, BLOCK_SIZE)  # ends in block 4
    assert partial is not None and partial.chunks
    assert fs.fill(partial) == data[3 * BLOCK_SIZE + 5 : 4 * BLOCK_SIZE + 5]
    again = fs.plan_read(fh, 4 * BLOCK_SIZE + 1, 50)
    assert again is not None and not again.io  # the last chunk fill read is cached
    assert fs.read(fh, 0, 8 * BLOCK_SIZE) == data
    fs.release(fh)


def test_write_past_eof_zero_fills_the_gap(fs: FileSystem) -> None:
    fh, attr = fs.create(ROOT, b"gap", 0o644, os.O_RDWR, ROOT_CTX)
    fs.write(fh, 0, b"a")
    fs.write(fh, 3 * BLOCK_SIZE + 7, b"z")
    fs.release(fh)
    data = read_all(fs, attr.ino)
    assert data == b"a" + bytes(3 * BLOCK_SIZE + 6) + b"z"


def test_huge_sparse_truncate_allocates_nothing(fs: FileSystem) -> None:
    ino = make_file(fs, b"sparse", b"head")
    size = 999_999_999_999_999
    fs.setattr(ino, ROOT_CTX, size=size)
    attr = fs.getattr(ino)
    assert attr.size == size
    assert len(fs.store.get_inode(ino).blocks) == 1
    fh = fs.open(ino, os.O_RDONLY, ROOT_CTX)
    assert fs.read(fh, size - 10, 100) == bytes(10)
    assert fs.read(fh, 0, 4) == b"head"
    assert fs.read(fh, size, 10) == b""
    fs.release(fh)


def test_file_larger_than_4_gib(fs: FileSystem) -> None:
    fh, attr = fs.create(ROOT, b"big", 0o644, os.O_RDWR, ROOT_CTX)
    off = 5 * 1024**3 + 17
    fs.write(fh, off, b"tail")
    fs.release(fh)
    assert fs.getattr(attr.ino).size == off + 4
    fh = fs.open(attr.ino, os.O_RDONLY, ROOT_CTX)
    assert fs.read(fh, off - 2, 10) == b"\0\0tail"
    fs.release(fh)


def test_truncate_down_then_up_reads_zeros(fs: FileSystem) -> None:
    ino = make_file(fs, b"t", b"x" * (2 * BLOCK_SIZE + 10))
    fs.setattr(ino, ROOT_CTX, size=BLOCK_SIZE + 5)
    fs.setattr(ino, ROOT_CTX, size=3 * BLOCK_SIZE)
    data = read_all(fs, ino)
    assert data == b"x" * (BLOCK_SIZE + 5) + bytes(2 * BLOCK_SIZE - 5)


def test_random_writes_match_a_model(fs: FileSystem) -> None:
    rng = random.Random(7)
    model = bytearray()
    fh, attr = fs.create(ROOT, b"m", 0o644, os.O_RDWR, ROOT_CTX)
    for step in range(300):
        op = rng.random()
        if op < 0.6:
            off = rng.randrange(0, 4 * BLOCK_SIZE)
            data = rng.randbytes(rng.choice([1, 100, 4096, BLOCK_SIZE, BLOCK_SIZE + 3]))
            fs.write(fh, off, data)
            if len(model) < off:
                model.extend(bytes(off - len(model)))
            model[off : off + len(data)] = data
        elif op < 0.75:
            size = rng.randrange(0, 5 * BLOCK_SIZE)
            fs.setattr(attr.ino, ROOT_CTX, size=size)
            del model[size:]
            model.extend(bytes(size - len(model)))
        elif op < 0.85:
            fs.flush(fh)
        else:
            off = rng.randrange(0, 5 * BLOCK_SIZE)
            n = rng.randrange(0, 2 * BLOCK_SIZE)
            assert fs.read(fh, off, n) == bytes(model[off : off + n]), step
    fs.release(fh)
    assert read_all(fs, attr.ino) == bytes(model)


def test_dirty_memory_stays_bounded(fs: FileSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fsmod, "MAX_DIRTY_BLOCKS", 4)
    fh, attr = fs.create(ROOT, b"b", 0o644, os.O_RDWR, ROOT_CTX)
    for index in range(20):  # partial blocks never complete on their own
        fs.write(fh, index * BLOCK_SIZE, b"p")
        assert len(fs._dirty_lru) <= 4
    fs.release(fh)
    data = read_all(fs, attr.ino)
    assert all(data[i * BLOCK_SIZE] == ord("p") for i in range(20))


def test_open_with_o_trunc_and_o_direct(fs: FileSystem) -> None:
    ino = make_file(fs, b"f", b"content")
    fh = fs.open(ino, os.O_RDWR | os.O_TRUNC | os.O_DIRECT, ROOT_CTX)
    assert fs.getattr(ino).size == 0
    fs.release(fh)


def test_versions_are_recorded_per_close(fs: FileSystem) -> None:
    ino = make_file(fs, b"v", b"1")
    fh = fs.open(ino, os.O_RDWR, ROOT_CTX)
    fs.write(fh, 0, b"2")
    fs.release(fh)
    versions = fs.store.file_versions(ino)
    assert [v.version for v in versions] == [2, 1]


# ------------------------------------------------------------- namespace


def test_mkdir_rmdir_link_counts_and_parent_times(fs: FileSystem) -> None:
    before = fs.getattr(ROOT)
    d = fs.mkdir(ROOT, b"d", 0o755, ROOT_CTX)
    assert d.nlink == 2 and stat.S_ISDIR(d.mode)
    root = fs.getattr(ROOT)
    assert root.nlink == before.nlink + 1
    assert root.mtime_ns >= before.mtime_ns and root.ctime_ns >= before.ctime_ns
    fs.mkdir(d.ino, b"sub", 0o700, ROOT_CTX)
    assert fs.getattr(d.ino).nlink == 3
    assert errno_of(fs.rmdir, ROOT, b"d", ROOT_CTX) == errno.ENOTEMPTY
    fs.rmdir(d.ino, b"sub", ROOT_CTX)
    fs.rmdir(ROOT, b"d", ROOT_CTX)
    assert fs.getattr(ROOT).nlink == before.nlink
    assert errno_of(fs.lookup, ROOT, b"d") == errno.ENOENT


def test_errors_of_namespace_operations(fs: FileSystem) -> None:
    make_file(fs, b"f")
    assert errno_of(fs.mkdir, ROOT, b"f", 0o755, ROOT_CTX) == errno.EEXIST
    assert errno_of(fs.mkdir, ROOT, b"x" * 256, 0o755, ROOT_CTX) == errno.ENAMETOOLONG
    assert errno_of(fs.rmdir, ROOT, b"f", ROOT_CTX) == errno.ENOTDIR
    assert errno_of(fs.unlink, ROOT, b"missing", ROOT_CTX) == errno.ENOENT
    d = fs.mkdir(ROOT, b"d", 0o755, ROOT_CTX)
    assert errno_of(fs.unlink, ROOT, b"d", ROOT_CTX) == errno.EISDIR
    assert errno_of(fs.link, d.ino, ROOT, b"dl", ROOT_CTX) == errno.EPERM


def test_readdir_dot_entries_and_stable_offsets(fs: FileSystem) -> None:
    d = fs.mkdir(ROOT, b"d", 0o755, ROOT_CTX)
    names = [f"n{i:03d}".encode() for i in range(50)]
    for name in names:
        make_file(fs, name, parent=d.ino)
    fh = fs.opendir(d.ino)
    first = []
    for entry in fs.readdir(fh, 0):
        first.append(entry)
        if len(first) == 12:
            break
    assert [e.name for e in first[:2]] == [b".", b".."]
    assert first[1].attr.ino == ROOT
    # Concurrent changes: remove an entry not yet listed, add a new one.
    fs.unlink(d.ino, names[30], ROOT_CTX)
    make_file(fs, b"new", parent=d.ino)
    rest = [e.name for e in fs.readdir(fh, first[-1].next_off)]
    fs.releasedir(fh)
    seen = [e.name for e in first[2:]] + rest
    assert len(seen) == len(set(seen))  # nothing twice
    assert set(seen) == set(names) - {names[30]}  # nothing skipped


def test_rename_replace_across_dirs_and_flags(fs: FileSystem) -> None:
    a = fs.mkdir(ROOT, b"a", 0o755, ROOT_CTX)
    b = fs.mkdir(ROOT, b"b", 0o755, ROOT_CTX)
    src = make_file(fs, b"src", b"new", parent=a.ino)
    dst = make_file(fs, b"dst", b"old", parent=b.ino)
    assert errno_of(fs.rename, a.ino, b"src", b.ino, b"dst", RENAME_NOREPLACE, ROOT_CTX) == errno.EEXIST
    fs.rename(a.ino, b"src", b.ino, b"dst", 0, ROOT_CTX)
    assert fs.lookup(b.ino, b"dst").ino == src
    assert fs.store.get_inode(dst) is None  # replaced and not open: deleted
    # A directory moves across parents: link counts follow.
    sub = fs.mkdir(a.ino, b"sub", 0o755, ROOT_CTX)
    fs.rename(a.ino, b"sub", b.ino, b"sub", 0, ROOT_CTX)
    assert fs.getattr(a.ino).nlink == 2 and fs.getattr(b.ino).nlink == 3
    assert errno_of(fs.rename, b.ino, b"sub", b.ino, b"dst", 0, ROOT_CTX) == errno.ENOTDIR
    assert errno_of(fs.rename, b.ino, b"dst", b.ino, b"sub", 0, ROOT_CTX) == errno.EISDIR
    assert errno_of(fs.rename, b.ino, b"sub", sub.ino, b"inside", 0, ROOT_CTX) == errno.EINVAL
    # Exchange a file and a directory across parents.
    fs.rename(b.ino, b"dst", a.ino, b"x", 0, ROOT_CTX)
    fs.rename(a.ino, b"x", b.ino, b"sub", RENAME_EXCHANGE, ROOT_CTX)
    assert fs.lookup(a.ino, b"x").ino == sub.ino
    assert fs.lookup(b.ino, b"sub").ino == src
    assert fs.getattr(a.ino).nlink == 3 and fs.getattr(b.ino).nlink == 2
    assert errno_of(fs.rename, a.ino, b"x", b.ino, b"nope", RENAME_EXCHANGE, ROOT_CTX) == errno.ENOENT


def test_rename_over_nonempty_dir_fails(fs: FileSystem) -> None:
    fs.mkdir(ROOT, b"a", 0o755, ROOT_CTX)
    b = fs.mkdir(ROOT, b"b", 0o755, ROOT_CTX)
    make_file(fs, b"f", parent=b.ino)
    assert errno_of(fs.rename, ROOT, b"a", ROOT, b"b", 0, ROOT_CTX) == errno.ENOTEMPTY


def test_hard_links_and_unlink_of_open_file(fs: FileSystem) -> None:
    ino = make_file(fs, b"f", b"data")
    attr = fs.link(ino, ROOT, b"g", ROOT_CTX)
    assert attr.nlink == 2
    fs.unlink(ROOT, b"f", ROOT_CTX)
    assert fs.getattr(ino).nlink == 1
    fh = fs.open(ino, os.O_RDONLY, ROOT_CTX)
    fs.unlink(ROOT, b"g", ROOT_CTX)
    assert fs.read(fh, 0, 10) == b"data"  # still readable until closed
    assert errno_of(fs.link, ino, ROOT, b"again", ROOT_CTX) == errno.ENOENT
    fs.release(fh)
    assert fs.store.get_inode(ino) is None


def test_rename_onto_another_name_of_the_same_inode_is_a_no_op(fs: FileSystem) -> None:
    ino = make_file(fs, b"f", b"x")
    fs.link(ino, ROOT, b"g", ROOT_CTX)
    fs.rename(ROOT, b"f", ROOT, b"g", 0, ROOT_CTX)
    assert fs.lookup(ROOT, b"f").ino == ino and fs.lookup(ROOT, b"g").ino == ino


def test_symlink_and_fifo(fs: FileSystem) -> None:
    link = fs.symlink(ROOT, b"l", b"target/path", ROOT_CTX)
    assert stat.S_ISLNK(link.mode) and link.size == len(b"target/path")
    assert fs.readlink(link.ino) == b"target/path"
    fifo = fs.mknod(ROOT, b"p", stat.S_IFIFO | 0o640, 0, ROOT_CTX)
    assert stat.S_ISFIFO(fifo.mode) and stat.S_IMODE(fifo.mode) == 0o640
    assert errno_of(fs.readlink, fifo.ino) == errno.EINVAL


def test_timestamps_in_nanoseconds(fs: FileSystem) -> None:
    ino = make_file(fs, b"f")
    fs.setattr(ino, ROOT_CTX, atime_ns=1_234_567_891_123_456_789, mtime_ns=987_654_321_987_654_321)
    attr = fs.getattr(ino)
    assert attr.atime_ns == 1_234_567_891_123_456_789
    assert attr.mtime_ns == 987_654_321_987_654_321


def test_utimens_while_writing_survives_the_close(fs: FileSystem) -> None:
    fh, attr = fs.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
    fs.write(fh, 0, b"data")
    fs.setattr(attr.ino, ROOT_CTX, mtime_ns=10**18)  # what tar/cp -a do before close
    fs.release(fh)
    assert fs.getattr(attr.ino).mtime_ns == 10**18


def test_attributes_set_while_writing_ride_on_the_close(fs: FileSystem, store_dir: Path) -> None:
    """tar's fchown/fchmod/futimens of a file it just wrote: seen at once, recorded
    by the close's transaction with the content, never before it (no torn state)."""
    fs.setattr(ROOT, ROOT_CTX, mode=0o777)
    fh, attr = fs.create(ROOT, b"f", 0o600, os.O_RDWR, ROOT_CTX)
    fs.write(fh, 0, b"data")
    before = fs.store.head_logseq
    fs.setattr(attr.ino, ROOT_CTX, uid=1000, gid=1000)
    fs.setattr(attr.ino, USER, mode=0o640)  # allowed only as the pending owner
    fs.setattr(attr.ino, USER, atime_ns=5, mtime_ns=10**18)
    assert fs.store.head_logseq == before  # nothing recorded yet
    seen = fs.getattr(attr.ino)
    assert (seen.uid, seen.gid, stat.S_IMODE(seen.mode)) == (1000, 1000, 0o640)
    assert (seen.atime_ns, seen.mtime_ns) == (5, 10**18)
    assert errno_of(fs.setattr, attr.ino, OTHER, mode=0o777) == errno.EPERM
    fs.store.publish()
    crashed = Store.open(store_dir, read_only=True)  # a crash now: the file as created
    try:
        old = crashed.get_inode(attr.ino)
        assert (old.uid, stat.S_IMODE(old.mode), old.size) == (0, 0o600, 0)
    finally:
        crashed.close()
    fs.release(fh)
    # The version's record is the last one: it carries content and attributes.
    assert fs.store.file_versions(attr.ino)[0].logseq == fs.store.head_logseq
    inode = fs.store.get_inode(attr.ino)
    assert (inode.uid, inode.gid, stat.S_IMODE(inode.mode), inode.size) == (1000, 1000, 0o640, 4)
    assert (inode.atime_ns, inode.mtime_ns) == (5, 10**18)
    before = fs.store.head_logseq
    fs.setattr(attr.ino, USER, mode=0o600)  # no buffer now: its own transaction
    assert fs.store.head_logseq == before + 1


# ------------------------------------------------------------ permissions


def test_new_inodes_take_mode_and_caller_ids(fs: FileSystem) -> None:
    fs.setattr(ROOT, ROOT_CTX, mode=0o777)
    f = make_file(fs, b"f", ctx=USER)
    attr = fs.getattr(f)
    assert (attr.uid, attr.gid, stat.S_IMODE(attr.mode)) == (1000, 1000, 0o644)


def test_setgid_directory_is_inherited(fs: FileSystem) -> None:
    d = fs.mkdir(ROOT, b"d", 0o2777, ROOT_CTX)
    fs.setattr(d.ino, ROOT_CTX, gid=50)
    f = make_file(fs, b"f", parent=d.ino, ctx=USER)
    sub = fs.mkdir(d.ino, b"sub", 0o755, USER)
    assert fs.getattr(f).gid == 50
    assert sub.gid == 50 and sub.mode & stat.S_ISGID


def test_sticky_directory_protects_other_users_entries(fs: FileSystem) -> None:
    tmp = fs.mkdir(ROOT, b"tmp", 0o1777, ROOT_CTX)
    make_file(fs, b"mine", parent=tmp.ino, ctx=USER)
    assert errno_of(fs.unlink, tmp.ino, b"mine", OTHER) == errno.EPERM
    assert errno_of(fs.rename, tmp.ino, b"mine", tmp.ino, b"x", 0, OTHER) == errno.EPERM
    fs.unlink(tmp.ino, b"mine", USER)


def test_chown_and_write_by_non_root_clear_setuid(fs: FileSystem) -> None:
    fs.setattr(ROOT, ROOT_CTX, mode=0o777)
    ino = make_file(fs, b"f", b"x", ctx=USER)
    fs.setattr(ino, USER, mode=0o6755)
    assert errno_of(fs.setattr, ino, USER, uid=0) == errno.EPERM
    assert errno_of(fs.setattr, ino, OTHER, mode=0o777) == errno.EPERM
    fs.setattr(ino, USER, gid=1000)
    assert fs.getattr(ino).mode & (stat.S_ISUID | stat.S_ISGID) == 0
    fs.setattr(ino, USER, mode=0o4755)
    fh = fs.open(ino, os.O_WRONLY, USER)
    fs.write(fh, 0, b"y", USER)
    fs.release(fh)
    assert fs.getattr(ino).mode & stat.S_ISUID == 0


# ------------------------------------------------------------------ xattrs


def test_user_xattrs_with_create_and_replace(fs: FileSystem) -> None:
    ino = make_file(fs, b"f")
    assert errno_of(fs.getxattr, ino, b"user.k") == errno.ENODATA
    assert errno_of(fs.setxattr, ino, b"user.k", b"v", XATTR_REPLACE, ROOT_CTX) == errno.ENODATA
    fs.setxattr(ino, b"user.k", b"v1", XATTR_CREATE, ROOT_CTX)
    assert errno_of(fs.setxattr, ino, b"user.k", b"v", XATTR_CREATE, ROOT_CTX) == errno.EEXIST
    fs.setxattr(ino, b"user.k", b"v2", XATTR_REPLACE, ROOT_CTX)
    assert fs.getxattr(ino, b"user.k") == b"v2"
    assert fs.listxattr(ino) == [b"user.k"]
    fs.removexattr(ino, b"user.k", ROOT_CTX)
    assert fs.listxattr(ino) == []
    assert errno_of(fs.removexattr, ino, b"user.k", ROOT_CTX) == errno.ENODATA
    assert errno_of(fs.setxattr, ino, b"system.x", b"v", 0, ROOT_CTX) == errno.ENOTSUP


def test_vega_xattrs_are_read_only_facts(fs: FileSystem) -> None:
    ino = make_file(fs, b"f", b"abc")
    assert fs.getxattr(ino, b"vega.version") == b"1"
    digest = fs.getxattr(ino, b"vega.hash")
    assert len(digest) == 64
    assert int(fs.getxattr(ino, b"vega.logseq")) > 0
    assert errno_of(fs.setxattr, ino, b"vega.hash", b"x", 0, ROOT_CTX) == errno.EPERM
    assert errno_of(fs.removexattr, ino, b"vega.hash", ROOT_CTX) == errno.EPERM
    assert b"vega.hash" not in fs.listxattr(ino)
    other = make_file(fs, b"g", b"abc")
    assert fs.getxattr(other, b"vega.hash") == digest  # same content, same hash


# -------------------------------------------------------------- snapshots


def test_snapshot_tree_is_browsable_and_read_only(fs: FileSystem) -> None:
    ino = make_file(fs, b"f", b"before")
    fs.store.create_snapshot("s1")
    fh = fs.open(ino, os.O_WRONLY | os.O_TRUNC, ROOT_CTX)
    fs.write(fh, 0, b"after")
    fs.release(fh)
    snapdir = fs.lookup(ROOT, b".snapshots")
    assert snapdir.ino == SNAP_BASE
    dh = fs.opendir(SNAP_BASE)
    assert [e.name for e in fs.readdir(dh, 0)] == [b".", b"..", b"s1"]
    fs.releasedir(dh)
    s1 = fs.lookup(SNAP_BASE, b"s1")
    old = fs.lookup(s1.ino, b"f")
    assert old.ino >= SNAP_BASE
    fh = fs.open(old.ino, os.O_RDONLY, ROOT_CTX)
    assert fs.read(fh, 0, 100) == b"before"
    fs.release(fh)
    assert read_all(fs, ino) == b"after"
    assert errno_of(fs.open, old.ino, os.O_RDWR, ROOT_CTX) == errno.EROFS
    assert errno_of(fs.mkdir, s1.ino, b"x", 0o755, ROOT_CTX) == errno.EROFS
    assert errno_of(fs.unlink, s1.ino, b"f", ROOT_CTX) == errno.EROFS
    assert errno_of(fs.setattr, old.ino, ROOT_CTX, mode=0o600) == errno.EROFS
    assert errno_of(fs.setxattr, old.ino, b"user.x", b"1", 0, ROOT_CTX) == errno.EROFS
    assert errno_of(fs.mkdir, ROOT, b".snapshots", 0o755, ROOT_CTX) == errno.EEXIST
    # Hidden from the root listing so cp -a / rsync / find do not walk it.
    dh = fs.opendir(ROOT)
    assert b".snapshots" not in [e.name for e in fs.readdir(dh, 0)]
    fs.releasedir(dh)


def test_rollback_then_after_rollback(fs: FileSystem) -> None:
    ino = make_file(fs, b"f", b"v1")
    fs.store.create_snapshot("good")
    fh = fs.open(ino, os.O_WRONLY | os.O_TRUNC, ROOT_CTX)
    fs.write(fh, 0, b"bad")
    fs.release(fh)
    make_file(fs, b"extra")
    fs.commit_all()
    fs.store.rollback("good")
    fs.after_rollback()
    assert read_all(fs, ino) == b"v1"
    assert errno_of(fs.lookup, ROOT, b"extra") == errno.ENOENT


def test_statfs_reports_name_limit(fs: FileSystem) -> None:
    st = fs.statfs()
    assert st.namemax == 255
    assert st.blocks > 0


def test_chunk_results_from_before_a_gc_are_not_trusted(fs: FileSystem) -> None:
    fh, attr = fs.create(ROOT, b"f", 0o644, os.O_RDWR, ROOT_CTX)
    data = os.urandom(BLOCK_SIZE)
    (job,) = fs.write_buffered(fh, 0, data)
    chunk_hash = fs.store.put_chunk(job.data)  # stored, referenced by no version yet
    fs.store.gc()  # drops it: nothing references it
    fs.gc_done()
    fs.chunk_stored(job, chunk_hash)  # the in-flight job reports after the gc
    fs.release(fh)
    assert read_all(fs, attr.ino) == data
    assert fs.store.fsck().ok


def test_an_inode_unlinked_while_open_is_reclaimed_after_a_crash(store_dir: Path) -> None:
    store = Store.open(store_dir, create=True)
    fs = FileSystem(store)
    fh, attr = fs.create(ROOT, b"tmp", 0o600, os.O_RDWR, ROOT_CTX)
    fs.write(fh, 0, b"scratch")
    fs.flush(fh)
    fs.unlink(ROOT, b"tmp", ROOT_CTX)
    store.publish()
    store.close()  # the daemon died with the file still open: no release
    store = Store.open(store_dir)
    try:
        assert store.get_inode(attr.ino).nlink == 0
        fs = FileSystem(store)
        assert fs.reclaim_orphans() == 1
        assert store.get_inode(attr.ino) is None
        assert fs.reclaim_orphans() == 0
        assert store.fsck().ok
    finally:
        store.close()


def test_rewinddir_shows_the_current_state(fs: FileSystem) -> None:
    make_file(fs, b"a")
    fh = fs.opendir(ROOT)
    assert [e.name for e in fs.readdir(fh, 0)][2:] == [b"a"]
    make_file(fs, b"b")
    assert [e.name for e in fs.readdir(fh, 3)] == []  # same listing: stable offsets
    assert [e.name for e in fs.readdir(fh, 0)][2:] == [b"a", b"b"]  # rewound
    fs.releasedir(fh)
    assert errno_of(fs.opendir, fs.lookup(ROOT, b"a").ino) == errno.ENOTDIR


def test_anyone_may_drop_setid_bits_as_the_kernel_does_on_write(fs: FileSystem) -> None:
    ino = make_file(fs, b"prog", b"x")
    fs.setattr(ino, ROOT_CTX, mode=0o6777)
    fs.setattr(ino, OTHER, mode=0o0777)  # the kernel's kill-priv setattr after a write
    assert stat.S_IMODE(fs.getattr(ino).mode) == 0o777
    assert errno_of(fs.setattr, ino, OTHER, mode=0o4777) == errno.EPERM
    assert errno_of(fs.setattr, ino, OTHER, mode=0o700) == errno.EPERM


def test_a_directory_of_100000_entries(fs: FileSystem) -> None:
    d = fs.mkdir(ROOT, b"big", 0o755, ROOT_CTX)
    for i in range(100_000):
        fs.mknod(d.ino, b"f%06d" % i, stat.S_IFREG | 0o644, 0, ROOT_CTX)
    assert fs.lookup(d.ino, b"f099999").nlink == 1
    fh = fs.opendir(d.ino)
    names, off = [], 0
    while True:  # in getdents-sized pieces, resuming from each offset
        page = []
        for entry in fs.readdir(fh, off):
            page.append(entry)
            if len(page) == 1000:
                break
        if not page:
            break
        names += [e.name for e in page]
        off = page[-1].next_off
    fs.releasedir(fh)
    assert len(names) == 100_002 and len(set(names)) == 100_002


def test_a_recreated_snapshot_gets_new_inode_numbers(fs: FileSystem) -> None:
    make_file(fs, b"f", b"one")
    fs.store.create_snapshot("s")
    old = fs.lookup(fs.lookup(SNAP_BASE, b"s").ino, b"f")
    fs.store.delete_snapshot("s")
    fs.snapshots_changed()
    assert errno_of(fs.getattr, old.ino) == errno.ENOENT
    fs.store.create_snapshot("s")
    fs.snapshots_changed()
    new = fs.lookup(fs.lookup(SNAP_BASE, b"s").ino, b"f")
    assert new.ino != old.ino


def test_only_open_files_are_kept_after_their_last_unlink(store_dir: Path) -> None:
    store = Store.open(store_dir, create=True)
    fs = FileSystem(store, track_lookups=True)  # as under FUSE
    try:
        gone = make_file(fs, b"gone", b"1")
        kept = make_file(fs, b"kept", b"2")
        fh = fs.open(kept, os.O_RDONLY, ROOT_CTX)
        d = fs.mkdir(ROOT, b"cwd", 0o755, ROOT_CTX)
        fs.unlink(ROOT, b"gone", ROOT_CTX)
        fs.unlink(ROOT, b"kept", ROOT_CTX)
        fs.rmdir(ROOT, b"cwd", ROOT_CTX)
        assert store.get_inode(gone) is None  # nobody can reach it: deleted at once
        assert fs.read(fh, 0, 10) == b"2"  # open: kept until the last close
        assert fs.getattr(d.ino).nlink == 0  # a directory the kernel holds: until forget
        assert len(store.annotations("fs.orphan")) == 1  # only the open file is noted
        fs.release(fh)
        fs.forget(kept, 1)  # the kernel lets go of both
        fs.forget(d.ino, 1)
        assert store.get_inode(kept) is None and store.get_inode(d.ino) is None
        assert store.fsck().ok
    finally:
        store.close()

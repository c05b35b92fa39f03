"""POSIX details, one per test, through the Python os module on a real mount.

These are the cases pyfuse3's examples die of (O_DIRECT, a truncate to
~1 PB, a write past EOF, one file open read-only and read-write at once) and
the ones conformance suites check (modes, link counts, parent times, `.` and
`..`, name limits, ns timestamps). Every test ends with the daemon still
serving: the ``workdir`` fixture's next user would find it dead otherwise, and
``test_daemon_survived`` at the end of the module checks it explicitly.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import time
from pathlib import Path

import pytest

from tests.mount.helpers import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    needs_root,
    opened,
    renameat2,
    run,
)
from tests.mountutil import needs_fuse

pytestmark = [pytest.mark.mount, needs_fuse]

GiB = 1 << 30
HUGE = 999_999_999_999_999


def _read_all(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    parts = []
    while chunk := os.read(fd, 1 << 20):
        parts.append(chunk)
    return b"".join(parts)


@pytest.mark.timeout(60)
def test_o_append_writes_at_the_end(workdir: Path) -> None:
    path = workdir / "log"
    path.write_bytes(b"first\n")
    with opened(path, os.O_WRONLY | os.O_APPEND) as fd:
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"second\n")
        os.pwrite(fd, b"third\n", 0)  # Linux: pwrite on O_APPEND appends too
    assert path.read_bytes() == b"first\nsecond\nthird\n"


@pytest.mark.timeout(60)
def test_o_excl_and_o_trunc(workdir: Path) -> None:
    path = workdir / "f"
    with opened(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640) as fd:
        os.write(fd, b"0123456789")
    with pytest.raises(FileExistsError):
        os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    with opened(path, os.O_WRONLY | os.O_TRUNC) as fd:
        assert os.fstat(fd).st_size == 0
        os.write(fd, b"ab")
    assert path.read_bytes() == b"ab"


@pytest.mark.timeout(60)
def test_write_past_eof_zero_fills_the_gap(workdir: Path) -> None:
    path = workdir / "gap"
    with opened(path, os.O_CREAT | os.O_RDWR) as fd:
        os.write(fd, b"head")
        os.lseek(fd, 300_000, os.SEEK_SET)
        os.write(fd, b"tail")
        assert os.fstat(fd).st_size == 300_004
        assert os.pread(fd, 300_004, 0) == b"head" + bytes(300_000 - 4) + b"tail"
    data = path.read_bytes()
    assert data == b"head" + bytes(300_000 - 4) + b"tail"


@pytest.mark.timeout(60)
def test_truncate_up_and_down(workdir: Path) -> None:
    path = workdir / "t"
    payload = bytes(range(256)) * 1024  # 256 KiB: two store blocks
    path.write_bytes(payload)
    os.truncate(path, 200_000)
    assert path.read_bytes() == payload[:200_000]
    os.truncate(path, 500_000)
    assert path.read_bytes() == payload[:200_000] + bytes(300_000)
    with opened(path, os.O_RDWR) as fd:
        os.ftruncate(fd, 10)
        assert os.pread(fd, 100, 0) == payload[:10]
        os.ftruncate(fd, 0)
        assert os.fstat(fd).st_size == 0
        os.write(fd, b"again")
    assert path.read_bytes() == b"again"


@pytest.mark.timeout(60)
def test_rename_over_an_open_file(workdir: Path) -> None:
    old, new = workdir / "old", workdir / "new"
    old.write_bytes(b"old content")
    new.write_bytes(b"new content")
    with opened(old, os.O_RDONLY) as fd:
        os.rename(new, old)
        assert os.pread(fd, 100, 0) == b"old content"
        assert old.read_bytes() == b"new content"
        assert not new.exists()
    assert sorted(os.listdir(workdir)) == ["old"]


@pytest.mark.timeout(60)
def test_unlinked_open_file_stays_readable_until_close(workdir: Path) -> None:
    path = workdir / "doomed"
    path.write_bytes(b"still here")
    with opened(path, os.O_RDWR) as fd:
        os.unlink(path)
        assert not path.exists()
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 100, 0) == b"still here"
        os.pwrite(fd, b"STILL", 0)
        assert os.pread(fd, 100, 0) == b"STILL here"
        path.write_bytes(b"a new file under the old name")
        assert os.pread(fd, 100, 0) == b"STILL here"
    assert path.read_bytes() == b"a new file under the old name"


@pytest.mark.timeout(60)
def test_o_direct_open_read_write(workdir: Path) -> None:
    path = workdir / "direct"
    buf = mmap.mmap(-1, 8192)  # page-aligned, as O_DIRECT wants
    buf.write(b"D" * 8192)
    with opened(path, os.O_CREAT | os.O_RDWR | os.O_DIRECT) as fd:
        assert os.writev(fd, [buf]) == 8192
        out = mmap.mmap(-1, 8192)
        assert os.preadv(fd, [out], 0) == 8192
        assert out[:] == b"D" * 8192
    assert path.read_bytes() == b"D" * 8192


@pytest.mark.timeout(60)
def test_truncate_to_almost_a_petabyte_is_sparse(workdir: Path) -> None:
    path = workdir / "huge"
    path.write_bytes(b"start")
    os.truncate(path, HUGE)
    st = path.stat()
    assert st.st_size == HUGE
    assert st.st_blocks * 512 < 16 << 20, f"truncate allocated {st.st_blocks * 512} bytes"
    with opened(path, os.O_RDWR) as fd:
        assert os.pread(fd, 5, 0) == b"start"
        assert os.pread(fd, 4096, HUGE - 1000) == bytes(1000)
        assert os.pread(fd, 4096, HUGE) == b""
        os.pwrite(fd, b"end", HUGE - 3)
        assert os.pread(fd, 10, HUGE - 3) == b"end"
        assert os.fstat(fd).st_size == HUGE
    os.statvfs(workdir)  # still serving
    os.truncate(path, 3)
    assert path.read_bytes() == b"sta"


@pytest.mark.timeout(60)
def test_same_file_open_read_only_and_read_write(workdir: Path) -> None:
    path = workdir / "shared"
    path.write_bytes(b"version one")
    with opened(path, os.O_RDONLY) as ro, opened(path, os.O_RDWR) as rw:
        assert os.pread(ro, 100, 0) == b"version one"
        os.pwrite(rw, b"VERSION", 0)
        assert os.pread(ro, 100, 0) == b"VERSION one"
        os.ftruncate(rw, 7)
        assert os.pread(ro, 100, 0) == b"VERSION"
        with opened(path, os.O_RDONLY) as ro2:
            assert os.pread(ro2, 100, 0) == b"VERSION"
    assert path.read_bytes() == b"VERSION"


@pytest.mark.timeout(60)
def test_hard_link_counts(workdir: Path) -> None:
    a, b, c = workdir / "a", workdir / "b", workdir / "sub" / "c"
    c.parent.mkdir()
    a.write_bytes(b"linked")
    os.link(a, b)
    os.link(a, c)
    assert a.stat().st_nlink == 3
    assert a.stat().st_ino == b.stat().st_ino == c.stat().st_ino
    with open(b, "ab") as f:
        f.write(b" data")
    assert c.read_bytes() == b"linked data"
    os.unlink(a)
    assert b.stat().st_nlink == 2
    os.rename(c, workdir / "c2")
    assert b.stat().st_nlink == 2
    os.unlink(b)
    assert (workdir / "c2").stat().st_nlink == 1
    assert (workdir / "c2").read_bytes() == b"linked data"


@pytest.mark.timeout(60)
def test_directory_link_counts(workdir: Path) -> None:
    d = workdir / "d"
    d.mkdir()
    assert d.stat().st_nlink == 2
    (d / "x").mkdir()
    (d / "y").mkdir()
    (d / "file").write_bytes(b"")
    assert d.stat().st_nlink == 4
    os.rename(d / "y", workdir / "y-moved")
    assert d.stat().st_nlink == 3
    os.rmdir(d / "x")
    assert d.stat().st_nlink == 2
    with pytest.raises(OSError) as exc:
        os.rmdir(d)
    assert exc.value.errno == errno.ENOTEMPTY


@pytest.mark.timeout(60)
def test_parent_times_change_on_namespace_operations(workdir: Path) -> None:
    d = workdir / "p"
    d.mkdir()
    past = 1_000_000_000_000_000_000

    def changed(op: object) -> None:
        os.utime(d, ns=(past, past))
        before = d.stat()
        assert callable(op)
        op()
        after = d.stat()
        assert after.st_mtime_ns > before.st_mtime_ns, op
        assert after.st_ctime_ns >= before.st_ctime_ns, op

    changed(lambda: (d / "f").write_bytes(b""))
    changed(lambda: os.link(d / "f", d / "g"))
    changed(lambda: os.rename(d / "g", d / "h"))
    changed(lambda: os.unlink(d / "h"))
    changed(lambda: os.mkdir(d / "sub"))
    changed(lambda: os.rmdir(d / "sub"))
    changed(lambda: os.symlink("f", d / "s"))


@pytest.mark.timeout(60)
def test_new_nodes_take_requested_mode_and_callers_ids(workdir: Path) -> None:
    old = os.umask(0o022)
    try:
        with opened(workdir / "f", os.O_CREAT | os.O_WRONLY, 0o777):
            pass
        os.mkdir(workdir / "d", 0o777)
        os.mkfifo(workdir / "p", 0o666)
    finally:
        os.umask(old)
    assert stat.S_IMODE((workdir / "f").stat().st_mode) == 0o755
    assert stat.S_IMODE((workdir / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((workdir / "p").stat().st_mode) == 0o644
    for name in ("f", "d", "p"):
        st = (workdir / name).stat()
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


@pytest.mark.timeout(60)
def test_mkfifo_passes_data(workdir: Path) -> None:
    fifo = workdir / "pipe"
    os.mkfifo(fifo, 0o600)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        with opened(fifo, os.O_WRONLY) as writer:
            os.write(writer, b"through the fifo")
        assert os.read(reader, 100) == b"through the fifo"
    finally:
        os.close(reader)


@needs_root
@pytest.mark.timeout(60)
def test_chmod_chown_utime_with_nanoseconds(workdir: Path) -> None:
    path = workdir / "meta"
    path.write_bytes(b"x")
    os.chown(path, 1234, 5678)
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.chmod(path, 0o4751)
    assert stat.S_IMODE(path.stat().st_mode) == 0o4751
    atime, mtime = 1_234_567_890_123_456_789, 1_500_000_000_000_000_001
    os.utime(path, ns=(atime, mtime))
    st = path.stat()
    assert (st.st_atime_ns, st.st_mtime_ns) == (atime, mtime)
    before = time.time_ns()
    os.utime(path)
    assert path.stat().st_mtime_ns >= before - 1_000_000_000
    link = workdir / "link"
    os.symlink("meta", link)
    os.utime(link, ns=(atime, mtime), follow_symlinks=False)
    assert link.lstat().st_mtime_ns == mtime
    assert path.stat().st_mtime_ns != mtime


@pytest.mark.timeout(60)
def test_statfs_and_name_limits(workdir: Path) -> None:
    sv = os.statvfs(workdir)
    assert sv.f_namemax == 255
    assert sv.f_bsize > 0 and sv.f_blocks > 0
    longest = workdir / ("n" * 255)
    longest.write_bytes(b"ok")
    assert longest.read_bytes() == b"ok"
    with pytest.raises(OSError) as exc:
        (workdir / ("n" * 256)).write_bytes(b"no")
    assert exc.value.errno == errno.ENAMETOOLONG


@pytest.mark.timeout(60)
def test_readdir_has_dot_and_dotdot(workdir: Path) -> None:
    (workdir / "a").write_bytes(b"")
    (workdir / "b").mkdir()
    names = run(["ls", "-a", "-1", "-f", str(workdir)]).split("\n")
    assert sorted(n for n in names if n) == [".", "..", "a", "b"]
    assert sorted(os.listdir(workdir)) == ["a", "b"]


def _many_entries(workdir: Path, count: int) -> None:
    d = workdir / "many"
    d.mkdir()
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(count):
            os.close(os.open(f"entry-{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        names = os.listdir(d)
        assert len(names) == count
        assert set(names) == {f"entry-{i:06d}" for i in range(count)}
        for i in range(0, count, max(1, count // 100)):
            assert os.stat(f"entry-{i:06d}", dir_fd=fd).st_size == 0
        assert d.stat().st_nlink == 2
        for i in range(count):
            os.unlink(f"entry-{i:06d}", dir_fd=fd)
        assert os.listdir(d) == []
    finally:
        os.close(fd)
    d.rmdir()


@pytest.mark.timeout(120)
def test_ten_thousand_entries_in_one_directory(workdir: Path) -> None:
    _many_entries(workdir, 10_000)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_hundred_thousand_entries_in_one_directory(workdir: Path) -> None:
    _many_entries(workdir, 100_000)


@pytest.mark.timeout(120)
def test_sparse_file_beyond_4_gib(workdir: Path) -> None:
    path = workdir / "big"
    payload = os.urandom(1 << 20)
    with opened(path, os.O_CREAT | os.O_RDWR) as fd:
        os.pwrite(fd, payload, 5 * GiB)
        os.fsync(fd)
    st = path.stat()
    assert st.st_size == 5 * GiB + len(payload)
    assert st.st_blocks * 512 < 64 << 20, f"{st.st_blocks * 512} bytes allocated for 1 MiB"
    with opened(path, os.O_RDONLY) as fd:
        assert os.pread(fd, len(payload), 5 * GiB) == payload
        assert os.pread(fd, 1 << 16, 4 * GiB - 100) == bytes(1 << 16)
        assert os.pread(fd, 100, 5 * GiB - 50) == bytes(50) + payload[:50]


@pytest.mark.timeout(60)
def test_xattrs_with_setfattr_getfattr(workdir: Path) -> None:
    path = workdir / "x"
    path.write_bytes(b"attrs")
    run(["setfattr", "-n", "user.comment", "-v", "hello world", str(path)])
    run(["setfattr", "-n", "user.empty", str(path)])
    run(["setfattr", "-n", "user.hex", "-v", "0x00ff10", str(path)])
    out = run(["getfattr", "-d", "-e", "hex", str(path)])
    assert 'user.comment=0x68656c6c6f20776f726c64' in out
    assert "user.hex=0x00ff10" in out
    assert "user.empty" in out
    run(["setfattr", "-x", "user.comment", str(path)])
    out = run(["getfattr", "-d", str(path)])
    assert "user.comment" not in out and "user.hex" in out
    # a directory and a symlink-free tree copy keep them too
    run(["setfattr", "-n", "user.dir", "-v", "on a dir", str(workdir)])
    assert os.getxattr(workdir, "user.dir") == b"on a dir"


@pytest.mark.timeout(60)
def test_xattr_create_replace_semantics(workdir: Path) -> None:
    path = workdir / "x"
    path.write_bytes(b"")
    with pytest.raises(OSError) as exc:
        os.setxattr(path, "user.k", b"v", os.XATTR_REPLACE)
    assert exc.value.errno == errno.ENODATA
    os.setxattr(path, "user.k", b"v1", os.XATTR_CREATE)
    with pytest.raises(OSError) as exc:
        os.setxattr(path, "user.k", b"v2", os.XATTR_CREATE)
    assert exc.value.errno == errno.EEXIST
    os.setxattr(path, "user.k", b"v3", os.XATTR_REPLACE)
    assert os.getxattr(path, "user.k") == b"v3"
    with pytest.raises(OSError) as exc:
        os.getxattr(path, "user.missing")
    assert exc.value.errno == errno.ENODATA
    with pytest.raises(OSError) as exc:
        os.removexattr(path, "user.missing")
    assert exc.value.errno == errno.ENODATA
    big = os.urandom(60_000)
    os.setxattr(path, "user.big", big)
    assert os.getxattr(path, "user.big") == big
    user = sorted(n for n in os.listxattr(path) if n.startswith("user."))
    assert user == ["user.big", "user.k"]


@pytest.mark.timeout(60)
def test_python_xattr_module(workdir: Path) -> None:
    import xattr

    path = workdir / "x"
    path.write_bytes(b"")
    attrs = xattr.xattr(str(path))
    attrs["user.one"] = b"1"
    attrs.set("user.two", b"2", xattr.XATTR_CREATE)
    with pytest.raises(OSError) as exc:
        attrs.set("user.two", b"again", xattr.XATTR_CREATE)
    assert exc.value.errno == errno.EEXIST
    assert attrs["user.one"] == b"1"
    assert {k for k in attrs if k.startswith("user.")} == {"user.one", "user.two"}
    del attrs["user.one"]
    assert "user.one" not in attrs


@pytest.mark.timeout(60)
def test_rename_noreplace_and_exchange(workdir: Path) -> None:
    a, b = workdir / "a", workdir / "b"
    a.write_bytes(b"A")
    b.write_bytes(b"B")
    with pytest.raises(FileExistsError):
        renameat2(a, b, RENAME_NOREPLACE)
    renameat2(a, b, RENAME_EXCHANGE)
    assert (a.read_bytes(), b.read_bytes()) == (b"B", b"A")
    d = workdir / "d"
    (d / "inner").mkdir(parents=True)
    renameat2(a, d, RENAME_EXCHANGE)  # a file and a directory trade places
    assert (workdir / "a" / "inner").is_dir() and d.read_bytes() == b"B"
    renameat2(b, workdir / "c", RENAME_NOREPLACE)
    assert sorted(os.listdir(workdir)) == ["a", "c", "d"]
    with pytest.raises(FileNotFoundError):
        renameat2(workdir / "missing", workdir / "x", RENAME_EXCHANGE)


@pytest.mark.timeout(60)
def test_rename_errors_and_corner_cases(workdir: Path) -> None:
    (workdir / "dir" / "sub").mkdir(parents=True)
    (workdir / "full" / "x").mkdir(parents=True)
    (workdir / "empty").mkdir()
    (workdir / "file").write_bytes(b"f")
    os.link(workdir / "file", workdir / "alias")

    def fails(src: str, dst: str, code: int) -> None:
        with pytest.raises(OSError) as exc:
            os.rename(workdir / src, workdir / dst)
        assert exc.value.errno == code, (src, dst, exc.value)

    fails("dir", "dir/sub/inside", errno.EINVAL)  # into its own subtree
    fails("dir", "full", errno.ENOTEMPTY)
    fails("file", "empty", errno.EISDIR)
    fails("dir", "file", errno.ENOTDIR)
    fails("nothing", "x", errno.ENOENT)
    # rename onto another name of the same inode: a no-op, both names stay
    os.rename(workdir / "file", workdir / "alias")
    assert (workdir / "file").exists() and (workdir / "alias").stat().st_nlink == 2
    # a directory replaces an empty one, and the parent's link count follows
    before = workdir.stat().st_nlink
    os.rename(workdir / "dir", workdir / "empty")
    assert workdir.stat().st_nlink == before - 1
    assert (workdir / "empty" / "sub").is_dir()
    assert (workdir / "empty" / "sub" / "..").resolve() == (workdir / "empty").resolve()


@pytest.mark.timeout(60)
def test_readdir_while_the_directory_changes(workdir: Path) -> None:
    """Entries present for the whole listing are returned exactly once (offsets stay valid).

    POSIX leaves open whether entries added or removed during the listing show
    up, so only the entries that stayed put are checked.
    """
    d = workdir / "churn"
    d.mkdir()
    total = 3000
    for i in range(total):
        (d / f"old{i:05d}").write_bytes(b"")
    seen: list[str] = []
    removed: set[str] = set()
    with os.scandir(d) as it:
        for n, entry in enumerate(it):
            seen.append(entry.name)
            if n % 10 == 0:
                victim = f"old{(n * 7919) % total:05d}"
                if victim not in seen and victim not in removed:
                    os.unlink(d / victim)
                    removed.add(victim)
                (d / f"new{n:05d}").write_bytes(b"")
    assert len(seen) == len(set(seen)), "readdir returned an entry twice"
    stable = {f"old{i:05d}" for i in range(total)} - removed
    assert stable <= set(seen), f"missed {len(stable - set(seen))} entries"


# Read-only facts the filesystem exposes. They are readable by name but not
# listed, so that `rsync -X` / `cp --preserve=xattr` off the mount do not try
# to copy them (and fail on the way back in).
VEGA_FACTS = ("vega.hash", "vega.version", "vega.logseq")
READ_ONLY_ERRNOS = (errno.EPERM, errno.ENOTSUP, errno.EACCES)


@pytest.mark.timeout(60)
def test_vega_xattrs_are_read_only_facts(workdir: Path) -> None:
    path = workdir / "facts"
    path.write_bytes(b"first content")
    before = {n: os.getxattr(path, n) for n in VEGA_FACTS}
    assert all(before.values()), before
    assert not [n for n in os.listxattr(path) if n.startswith("vega.")]
    for name in (*VEGA_FACTS, "vega.invented"):
        with pytest.raises(OSError) as exc:
            os.setxattr(path, name, b"forged")
        assert exc.value.errno in READ_ONLY_ERRNOS, name
        with pytest.raises(OSError) as exc:
            os.removexattr(path, name)
        assert exc.value.errno in READ_ONLY_ERRNOS + (errno.ENODATA,), name
    assert {n: os.getxattr(path, n) for n in VEGA_FACTS} == before
    path.write_bytes(b"second content")
    after = {n: os.getxattr(path, n) for n in VEGA_FACTS}
    assert after["vega.hash"] != before["vega.hash"]
    assert int(after["vega.version"]) > int(before["vega.version"])
    assert int(after["vega.logseq"]) >= int(before["vega.logseq"])
    (workdir / "same").write_bytes(b"second content")
    assert os.getxattr(workdir / "same", "vega.hash") == after["vega.hash"]
    out = run(["getfattr", "--only-values", "-n", "vega.hash", str(path)])
    assert out.encode() == after["vega.hash"]

"""Ordinary tools on a real vegafs mount: cp -a, tar, rsync -aHAX, git, sqlite3.

Each test copies a tree onto the mount and back off it and compares full
manifests (type, mode, owner, size, mtime in ns, sha256, symlink target,
hard-link grouping, and for rsync -X the user xattrs), so a tool "working"
means it reproduced everything it promises, not merely that it exited 0.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tests.mount.helpers import Mount, git, make_sample_tree, manifest, run
from tests.mountutil import needs_fuse

pytestmark = [pytest.mark.mount, needs_fuse]


@pytest.mark.timeout(120)
def test_cp_a_round_trip(workdir: Path, tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src")
    run(["cp", "-a", str(src), str(workdir / "copy")])
    run(["diff", "-r", "--no-dereference", str(src), str(workdir / "copy")])
    assert manifest(workdir / "copy") == manifest(src)
    back = tmp_path / "back"
    run(["cp", "-a", str(workdir / "copy"), str(back)])
    assert manifest(back) == manifest(src)
    # checksums through a second tool, independent of our manifest code
    listing = run(["sh", "-c", "find . -type f -print0 | sort -z | xargs -0 sha256sum"], cwd=src)
    assert run(["sh", "-c", "find . -type f -print0 | sort -z | xargs -0 sha256sum"],
               cwd=workdir / "copy") == listing


@pytest.mark.timeout(120)
def test_tar_round_trip(workdir: Path, tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", with_fifo=True)
    archive = tmp_path / "in.tar"
    # POSIX (pax) format: it keeps nanosecond mtimes, which the old formats round to seconds
    run(["tar", "--format=posix", "-C", str(src), "-cf", str(archive), "."])
    dest = workdir / "x"
    dest.mkdir()
    run(["tar", "-C", str(dest), "-xpf", str(archive)])
    assert manifest(dest) == manifest(src)
    # and back: an archive made on the mount extracts to the same tree elsewhere
    out_archive = workdir / "out.tar"
    run(["tar", "--format=posix", "-C", str(dest), "-cf", str(out_archive), "."])
    back = tmp_path / "back"
    back.mkdir()
    run(["tar", "-C", str(back), "-xpf", str(out_archive)])
    assert manifest(back) == manifest(src)
    run(["tar", "-C", str(dest), "--compare", "-f", str(archive)])


@pytest.mark.timeout(120)
def test_rsync_ahax_round_trip(workdir: Path, tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", with_fifo=True, with_xattrs=True)
    dest = workdir / "r"
    run(["rsync", "-aHAX", f"{src}/", f"{dest}/"])
    assert manifest(dest, xattrs=True) == manifest(src, xattrs=True)
    # a second run finds nothing to do: sizes, ns-mtimes, modes and xattrs all stuck
    changes = run(["rsync", "-aHAX", "--itemize-changes", f"{src}/", f"{dest}/"])
    assert changes.strip() == ""
    back = tmp_path / "back"
    run(["rsync", "-aHAX", f"{dest}/", f"{back}/"])
    assert manifest(back, xattrs=True) == manifest(src, xattrs=True)
    # an in-place update of one file and a deletion propagate
    (src / "small.txt").write_bytes(b"changed\n")
    os.utime(src / "small.txt", ns=(1_700_000_000_000_000_001, 1_700_000_000_000_000_001))
    os.unlink(src / "sub/deeper/lines.txt")
    os.utime(src / "sub/deeper", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    run(["rsync", "-aHAX", "--delete", f"{src}/", f"{dest}/"])
    assert manifest(dest, xattrs=True) == manifest(src, xattrs=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_tree_usr_include(vmount: Mount, tmp_path: Path) -> None:
    """A real tree (/usr/include: ~9k entries, ~120 MiB) by tar onto the mount, back, and after a remount."""
    archive = tmp_path / "include.tar"
    run(["tar", "--format=posix", "-C", "/usr", "-cf", str(archive), "include"])
    run(["tar", "-C", str(vmount.mnt), "-xpf", str(archive)])
    want = manifest("/usr/include")
    assert manifest(vmount.mnt / "include") == want
    run(["diff", "-r", "--no-dereference", "/usr/include", str(vmount.mnt / "include")])
    vmount.remount()
    assert manifest(vmount.mnt / "include") == want


def _worktree(root: Path) -> dict[str, tuple[object, ...]]:
    """A checkout's files, without .git (whose layout differs between a repo and its clone)."""
    return {
        k: v
        for k, v in manifest(root, owners=False, times=False).items()
        if k != ".git" and not k.startswith(".git/")
    }


@pytest.mark.timeout(180)
def test_git_repository_lifecycle(workdir: Path, tmp_path: Path) -> None:
    repo = workdir / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for n in range(12):
        pkg = repo / f"pkg{n % 3}"
        pkg.mkdir(exist_ok=True)
        (pkg / f"mod{n}.py").write_text("".join(f"def f{n}_{i}():\n    return {i}\n" for i in range(200)))
        (repo / "CHANGELOG").write_text("".join(f"change {i}\n" for i in range(n + 1)))
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"commit {n}")
    git(repo, "mv", "pkg0", "renamed")
    git(repo, "commit", "-q", "-m", "rename a package")
    git(repo, "checkout", "-q", "-b", "side", "HEAD~3")
    (repo / "side.txt").write_text("side branch\n")
    git(repo, "add", "side.txt")
    git(repo, "commit", "-q", "-m", "side work")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-edit", "side")
    log = git(repo, "log", "--oneline").splitlines()
    assert len(log) == 15, log
    assert "Merge branch 'side'" in log[0]
    git(repo, "gc", "-q", "--aggressive", "--prune=now")
    git(repo, "fsck", "--full", "--strict")
    assert git(repo, "status", "--porcelain") == ""
    assert list((repo / ".git" / "objects" / "pack").glob("*.pack")), "gc wrote no pack"
    # a clone off the mount has the same history and the same files
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)])
    assert git(clone, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")
    assert _worktree(clone) == _worktree(repo)


def _sqlite_workload(db: Path, journal_mode: str, transactions: int) -> None:
    con = sqlite3.connect(db, isolation_level=None)
    try:
        assert con.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0] == journal_mode.lower()
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v BLOB)")
        for i in range(transactions):
            con.execute("BEGIN")
            con.execute("INSERT INTO t (k, v) VALUES (?, ?)", (f"key{i}", os.urandom(64 + i % 700)))
            if i % 7 == 0 and i:
                con.execute("DELETE FROM t WHERE id = ?", (i // 2,))
            if i % 11 == 0:
                con.execute("UPDATE t SET v = zeroblob(3000) WHERE id = ?", (i // 3 + 1,))
            con.execute("COMMIT")
        if journal_mode == "WAL":
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def _sqlite_check(db: Path, expected_rows: int) -> None:
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("SELECT count(*) FROM t").fetchone()[0] == expected_rows
    finally:
        con.close()


@pytest.mark.timeout(240)
@pytest.mark.parametrize("journal_mode", ["WAL", "DELETE"])
def test_sqlite_thousands_of_transactions(workdir: Path, journal_mode: str) -> None:
    transactions = 2000
    db = workdir / f"{journal_mode}.db"
    _sqlite_workload(db, journal_mode, transactions)
    deleted = len({i // 2 for i in range(7, transactions, 7)})
    _sqlite_check(db, transactions - deleted)
    # the sqlite3 command-line tool agrees
    out = run(["sqlite3", str(db), "PRAGMA integrity_check; SELECT count(*) FROM t;"])
    assert out.split() == ["ok", str(transactions - deleted)]

"""Snapshots and rollback on a live mount, seen through ordinary tools.

A tree and a git repository are put on the mount, a snapshot is taken with
the CLI while mounted, the live tree is then changed. ``/.snapshots/NAME``
must show the tree exactly as it was (full manifest, ``diff -r``, ``git
fsck``), refuse every change with EROFS, and ``vegafs rollback`` must bring
the old tree back to the very next ``ls``/``cat``, without a remount — and
keep it across one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.mount.helpers import Mount, git, make_sample_tree, manifest, run
from tests.mountutil import needs_fuse, run_vegafs

pytestmark = [pytest.mark.mount, needs_fuse]


def vegafs_ok(*args: str | os.PathLike[str]) -> str:
    result = run_vegafs(*args, timeout=120)
    assert result.returncode == 0, f"vegafs {' '.join(map(str, args))}: {result.stderr}"
    return result.stdout


@pytest.mark.timeout(180)
def test_snapshot_browse_refuse_writes_and_rollback(vmount: Mount, tmp_path: Path) -> None:
    src = make_sample_tree(tmp_path / "src", with_xattrs=True)  # no FIFO: diff -r cannot compare one
    tree = vmount.mnt / "tree"
    run(["rsync", "-aHAX", f"{src}/", f"{tree}/"])
    repo = vmount.mnt / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("first\n")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "first")
    head = git(repo, "rev-parse", "HEAD")
    snapshot_state = manifest(tree, xattrs=True)

    vegafs_ok("snapshot", "create", "s1", "--store", vmount.store)
    listed = json.loads(vegafs_ok("snapshot", "list", "--json", "--store", vmount.store))
    assert "s1" in json.dumps(listed)

    # change the live tree and repository in every way a user would
    shutil.rmtree(tree / "sub")
    (tree / "small.txt").write_bytes(b"overwritten\n")
    os.rename(tree / "block-exact", tree / "renamed")
    os.setxattr(tree / "empty", "user.new", b"1")
    (tree / "brand-new").write_bytes(b"new")
    (repo / "a.txt").write_text("second\n")
    git(repo, "commit", "-q", "-am", "second")

    snap = vmount.mnt / ".snapshots" / "s1"
    assert ".snapshots" not in os.listdir(vmount.mnt)
    assert manifest(snap / "tree", xattrs=True) == snapshot_state
    run(["diff", "-r", "--no-dereference", str(src), str(snap / "tree")])
    assert git(snap / "repo", "rev-parse", "HEAD") == head
    git(snap / "repo", "fsck", "--full")

    for attempt in (
        lambda: (snap / "tree" / "small.txt").write_bytes(b"x"),
        lambda: (snap / "tree" / "new-file").write_bytes(b"x"),
        lambda: os.mkdir(snap / "tree" / "new-dir"),
        lambda: os.unlink(snap / "tree" / "empty"),
        lambda: os.rename(snap / "tree" / "empty", snap / "tree" / "e2"),
        lambda: os.chmod(snap / "tree" / "empty", 0o600),
        lambda: os.truncate(snap / "tree" / "small.txt", 0),
        lambda: os.setxattr(snap / "tree" / "empty", "user.x", b"1"),
        lambda: os.rename(tree / "brand-new", snap / "tree" / "moved-in"),
    ):
        with pytest.raises(OSError) as exc:
            attempt()
        assert exc.value.errno in (errno.EROFS, errno.EXDEV), exc.value
    assert manifest(snap / "tree", xattrs=True) == snapshot_state

    vegafs_ok("rollback", "s1", "--store", vmount.store)
    assert manifest(tree, xattrs=True) == snapshot_state  # the next walk, no remount
    assert (tree / "small.txt").read_bytes() == b"hello vegafs\n"
    assert git(repo, "rev-parse", "HEAD") == head
    git(repo, "fsck", "--full")

    vmount.remount()
    assert manifest(tree, xattrs=True) == snapshot_state
    assert git(repo, "log", "--oneline").count("\n") == 1


"""Many readers: a writer mount and read-only mounts of the same store, two daemons each.

The reader (``--read-only``) follows the writer's publishes within its poll
interval — new files, content changes of files the kernel has cached,
renames, deletes — while every change on it fails with EROFS; a reader at a
snapshot (``--snapshot``) does not move. On s3:// (one moto server: the
bucket is all the two daemons share) and on a local store (same code path).
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.mountutil import mounted, needs_fuse, run_vegafs, vegafs_cmd
from vegafs.store import Store

pytestmark = [pytest.mark.mount, needs_fuse]

INTERVAL = 0.3
#: The documented bound is the poll interval plus one poll; the rest is slack for a loaded VM.
DEADLINE = 20.0


def _until(what: str, check: Callable[[], bool]) -> float:
    """Poll ``check`` until true; return how long it took (fails after DEADLINE)."""
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() - start > DEADLINE:
            raise AssertionError(f"the reader did not see {what} within {DEADLINE} s")
        time.sleep(0.05)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _sync(mnt: Path) -> None:
    done = subprocess.run(vegafs_cmd("sync", mnt), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def location(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # readers' state dirs
    if request.param == "s3":
        return str(request.getfixturevalue("s3_env"))
    return str(tmp_path / "store")


@pytest.mark.parametrize("location", ["s3", "local"], indirect=True)
def test_reader_mount_follows_writer_mount(location: str, tmp_path: Path) -> None:
    wmnt, rmnt, smnt = tmp_path / "w", tmp_path / "r", tmp_path / "s"
    follow = ("--read-only", "--follow-interval", str(INTERVAL))
    with mounted(location, wmnt):
        (wmnt / "a.txt").write_text("one\n")
        (wmnt / "d").mkdir()
        (wmnt / "d" / "b.txt").write_text("bee\n")
        _sync(wmnt)
        snap = run_vegafs("snapshot", "create", "s1", "--store", location)
        assert snap.returncode == 0, snap.stderr
        with mounted(location, rmnt, *follow), mounted(location, smnt, "--snapshot", "s1"):
            assert (rmnt / "a.txt").read_text() == "one\n"
            assert (rmnt / "d" / "b.txt").read_text() == "bee\n"  # both now in the kernel's cache
            with pytest.raises(OSError) as e:
                (rmnt / "new").write_text("x")
            assert e.value.errno == errno.EROFS
            for change in (lambda: (rmnt / "a.txt").unlink(), lambda: (rmnt / "d2").mkdir()):
                with pytest.raises(OSError) as e:
                    change()
                assert e.value.errno == errno.EROFS

            delays = []
            (wmnt / "c.txt").write_text("new file\n")
            _sync(wmnt)
            delays.append(_until("a new file", lambda: _read(rmnt / "c.txt") == "new file\n"))
            (wmnt / "a.txt").write_text("two, longer\n")
            _sync(wmnt)
            delays.append(_until("new content", lambda: _read(rmnt / "a.txt") == "two, longer\n"))
            os.rename(wmnt / "d" / "b.txt", wmnt / "b-moved.txt")
            _sync(wmnt)
            delays.append(_until("a rename", lambda: _read(rmnt / "b-moved.txt") == "bee\n"))
            assert not (rmnt / "d" / "b.txt").exists()
            (wmnt / "c.txt").unlink()
            _sync(wmnt)
            delays.append(_until("a delete", lambda: not (rmnt / "c.txt").exists()))
            assert sorted(os.listdir(rmnt)) == sorted(os.listdir(wmnt))

            # The reader at the snapshot did not move.
            assert (smnt / "a.txt").read_text() == "one\n"
            assert (smnt / "d" / "b.txt").read_text() == "bee\n"
            assert sorted(os.listdir(smnt)) == ["a.txt", "d"]
            print(f"follow delays (s): {[round(d, 2) for d in delays]}")


def test_read_only_mount_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No store, no such snapshot: refused before anything is mounted, in one line."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "mnt").mkdir()
    missing = run_vegafs("mount", tmp_path / "mnt", "--store", tmp_path / "none", "--read-only")
    assert missing.returncode != 0 and missing.stderr.startswith("vegafs: no store at ")
    Store.open(tmp_path / "store", create=True).close()
    nosnap = run_vegafs("mount", tmp_path / "mnt", "--store", tmp_path / "store", "--snapshot", "nope")
    assert nosnap.returncode != 0 and "nope" in nosnap.stderr and len(nosnap.stderr.splitlines()) == 1
    assert not os.path.ismount(tmp_path / "mnt")

"""The store commands against a mounted store: they act through the mount daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.mountutil import mounted, needs_fuse, run_vegafs

pytestmark = [pytest.mark.mount, needs_fuse]


def test_commands_go_through_the_daemon(tmp_path: Path) -> None:
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt):
        (mnt / "a").write_bytes(b"first")
        r = run_vegafs("snapshot", "create", "one", "--store", store)
        assert r.returncode == 0, r.stderr
        (mnt / "a").write_bytes(b"second")
        (mnt / "b").write_bytes(b"new")
        r = run_vegafs("snapshot", "list", "--store", store, "--json")
        assert r.returncode == 0 and [s["name"] for s in json.loads(r.stdout)] == ["one"], r.stderr
        r = run_vegafs("fsck", "--store", store)  # read-only, straight from the log
        assert r.returncode == 0 and "fsck: clean" in r.stdout, r.stdout + r.stderr
        r = run_vegafs("fsck", "--repair", "--store", store)
        assert r.returncode != 0 and "unmount it" in r.stderr
        r = run_vegafs("rollback", "one", "--store", store)
        assert r.returncode == 0, r.stderr
        assert (mnt / "a").read_bytes() == b"first"
        assert not (mnt / "b").exists()
        r = run_vegafs("gc", "--store", store)
        assert r.returncode == 0, r.stderr
        r = run_vegafs("stats", "--store", store, "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["snapshots"] == 1, r.stderr
        assert (mnt / "a").read_bytes() == b"first"
    r = run_vegafs("fsck", "--store", store)
    assert r.returncode == 0 and "fsck: clean" in r.stdout, r.stdout + r.stderr

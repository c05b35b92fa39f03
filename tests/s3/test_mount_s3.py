"""`vegafs mount --store s3://...` end to end: real tools on a real mount, then a second machine.

The daemon inherits the loopback endpoint and a cache directory from the
environment (``s3_env``); unmounting drains the journal, so a reader with an
empty cache of its own (another machine) sees every byte afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.mountutil import mounted, needs_fuse, run_vegafs, vegafs_cmd
from vegafs.store import Store
from vegafs.store.s3backend import S3Backend

from .conftest import MotoServer

pytestmark = [pytest.mark.mount, needs_fuse]


def _sh(cmd: str, cwd: Path) -> str:
    return subprocess.run(
        ["sh", "-c", cmd], cwd=cwd, capture_output=True, text=True, check=True, timeout=120
    ).stdout


def test_mount_on_s3_with_real_tools_then_read_elsewhere(
    s3_env: str, s3_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = os.urandom(5 << 20)
    (tmp_path / "src.bin").write_bytes(payload)
    mnt = tmp_path / "mnt"
    with mounted(s3_env, mnt, "--cache-size", "64MiB"):
        _sh(f"cp {tmp_path / 'src.bin'} big.bin && mkdir -p d/e && echo hello > d/e/f.txt", mnt)
        _sh("dd if=/dev/zero of=zeros bs=64k count=16 status=none && mv zeros d/zeros", mnt)
        _sh("ln -s d/e/f.txt link && touch gone && rm gone", mnt)
        assert _sh("sha256sum big.bin", mnt).split()[0] == hashlib.sha256(payload).hexdigest()
        assert _sh("cat link", mnt) == "hello\n"
        assert sorted(os.listdir(mnt)) == ["big.bin", "d", "link"]
        subprocess.run(vegafs_cmd("sync", mnt), check=True, timeout=120)
        # `vegafs sync` waited for the bucket: another machine sees the file now.
        other = S3Backend(s3_env, endpoint_url=s3_server.url, cache_dir=tmp_path / "peek")
        with Store.open(other, read_only=True) as peek:
            assert peek.lookup(1, b"big.bin") is not None
        # Store commands on the mounted s3:// store go through its daemon.
        snap = run_vegafs("snapshot", "create", "one", "--store", s3_env)
        assert snap.returncode == 0, snap.stderr
        assert (mnt / ".snapshots" / "one" / "big.bin").read_bytes() == payload
        stats = run_vegafs("stats", "--store", s3_env, "--json")  # served by the daemon
        assert stats.returncode == 0, stats.stderr
        assert json.loads(stats.stdout)["cache_size_bytes"] == 64 << 20  # --cache-size reached it
    # Another machine: its own empty cache, only the bucket in common.
    other = S3Backend(s3_env, endpoint_url=s3_server.url, cache_dir=tmp_path / "elsewhere")
    with Store.open(other, read_only=True) as r:
        big = r.lookup(1, b"big.bin")
        assert big is not None
        inode = r.get_inode(big)
        got = b"".join(r.read_chunk(inode.blocks[i]) for i in sorted(inode.blocks))
        assert got[: inode.size] == payload
        report = r.fsck()
        assert report.ok, report.describe()
    # ... and mounts it too (the writer is gone: the lease was given up at unmount).
    monkeypatch.setenv("VEGAFS_S3_CACHE", str(tmp_path / "elsewhere-mount"))
    with mounted(s3_env, tmp_path / "mnt2") as _proc:
        assert (tmp_path / "mnt2" / "big.bin").read_bytes() == payload
        assert (tmp_path / "mnt2" / "d" / "e" / "f.txt").read_text() == "hello\n"
        assert (tmp_path / "mnt2" / "d" / "zeros").stat().st_size == 1 << 20

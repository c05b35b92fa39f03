"""The real-tools tests of the mount (tests/mount/test_tools.py) on an s3:// store.

Imported, not copied: the module's own ``workdir`` fixture hands out a
directory on one mount of an ``s3://`` store served by the loopback server.
After the last test the store is unmounted (which drains the journal) and
fsck'ed from another cache directory, i.e. as another machine sees it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mount import test_tools as _tools
from tests.mount.helpers import Mount
from tests.mountutil import needs_fuse
from vegafs.store import Store
from vegafs.store.s3backend import S3Backend

from .conftest import MotoServer

pytestmark = [pytest.mark.mount, needs_fuse]

test_cp_a_round_trip = _tools.test_cp_a_round_trip
test_tar_round_trip = _tools.test_tar_round_trip
test_rsync_ahax_round_trip = _tools.test_rsync_ahax_round_trip
test_git_repository_lifecycle = _tools.test_git_repository_lifecycle
test_sqlite_thousands_of_transactions = _tools.test_sqlite_thousands_of_transactions


@pytest.fixture(scope="module")
def s3_mount(s3_server: MotoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    base = tmp_path_factory.mktemp("s3mount")
    location = f"s3://vegafs-test/tools{os.getpid()}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL_S3", "VEGAFS_S3_CACHE")}
    os.environ["AWS_ENDPOINT_URL_S3"] = s3_server.url
    os.environ["VEGAFS_S3_CACHE"] = str(base / "cache")
    m = Mount(store=location, mnt=base / "mnt")  # type: ignore[arg-type]
    try:
        m.start()
        try:
            yield m
        finally:
            m.stop()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    elsewhere = S3Backend(location, endpoint_url=s3_server.url, cache_dir=base / "elsewhere")
    with Store.open(elsewhere, read_only=True) as r:
        report = r.fsck()
        assert report.ok, report.describe()


@pytest.fixture
def workdir(s3_mount: Mount, request: pytest.FixtureRequest) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:200]
    path = s3_mount.mnt / name
    path.mkdir()
    return path

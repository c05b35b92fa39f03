"""Fixtures shared by the runtime tests: a Runtime with one driver attached at /d,
parametrised over every driver so the VFS contract suite runs against each."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm_runtime.helpers import make_rt
from vegafs.drivers.mem import MemDriver
from vegafs.drivers.posix import PosixDriver
from vegafs.drivers.store import StoreDriver
from vegafs.store import Store
from vegafs.vm.runtime import Runtime
from vegafs.vm.vfs import Driver


def _xattrs_work(path: Path) -> bool:
    try:
        os.setxattr(path, "user.probe", b"1")
    except OSError:
        return False
    return True


@pytest.fixture(params=["mem", "posix", "store"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Driver]:
    if request.param == "mem":
        yield MemDriver()
        return
    if request.param == "store":
        drv = StoreDriver.from_uri(f"store://{tmp_path / 'store'}")
        yield drv
        drv.close()
        with Store.open(tmp_path / "store", read_only=True) as store:
            report = store.fsck()
        assert report.ok, report.problems
        return
    root = tmp_path / "root"
    root.mkdir()
    if not _xattrs_work(root):
        pytest.skip("the temporary directory's filesystem has no user xattrs")
    yield PosixDriver(str(root))


@pytest.fixture
def rt(driver: Driver) -> Iterator[Runtime]:
    r = make_rt(driver)
    yield r
    r.finish()



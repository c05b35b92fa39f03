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
from vegafs.vm.runtime import Runtime
from vegafs.vm.vfs import Driver


def _xattrs_work(path: Path) -> bool:
    try:
        os.setxattr(path, "user.probe", b"1")
    except OSError:
        return False
    return True


@pytest.fixture(params=["mem", "posix"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Driver:
    if request.param == "mem":
        return MemDriver()
    root = tmp_path / "root"
    root.mkdir()
    if not _xattrs_work(root):
        pytest.skip("the temporary directory's filesystem has no user xattrs")
    return PosixDriver(str(root))


@pytest.fixture
def rt(driver: Driver) -> Iterator[Runtime]:
    r = make_rt(driver)
    yield r
    r.finish()



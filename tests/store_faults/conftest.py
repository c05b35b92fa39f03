"""Fixtures shared by the store fault tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def ram_dir(prefix: str) -> Path:
    """A fresh directory in RAM (/dev/shm) when there is one, else in the temp dir.

    These tests simulate process crashes and injected errors, not power cuts:
    the page cache survives them either way, so fsync buys nothing here and
    on a busy disk it makes hundreds of runs slow.
    """
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


@pytest.fixture
def shm_path() -> Iterator[Path]:
    path = ram_dir("vegafs-faults-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

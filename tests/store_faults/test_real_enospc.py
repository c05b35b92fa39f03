"""A real full disk (not an injected one): a store on a tiny tmpfs runs out of space.

The store lives on a 3 MiB tmpfs that also holds a ballast file. A scenario
writes until the disk is full. Then:

* the failure surfaced as ``StoreError(STORE_IO_ERROR)`` with errno ENOSPC,
  from the step that could not be written;
* the store is dropped on the spot (nothing more written), the ballast is
  deleted (the administrator frees space), and the store reopens: fsck clean,
  exactly the last publish that returned (or the one in flight);
* it takes writes again: the rest of the scenario's next steps publish and
  survive a reopen.

Needs root (to mount a tmpfs); skipped otherwise. The tmpfs is always
unmounted, even on failure.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store_faults.faulty_backend import FaultPlan, FaultyBackend
from tests.store_faults.harness import new_store, recover_and_check
from tests.store_faults.model import DURABLE, Scenario, run_step
from vegafs.store import BLOCK_SIZE, Store, StoreError
from vegafs.store.backend import LocalBackend
from vegafs.store.errors import STORE_IO_ERROR

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mnt)],
                   check=True, capture_output=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def test_store_fills_a_real_disk_and_recovers(tiny_fs: Path) -> None:
    path = tiny_fs / "store"
    base = new_store(path)
    ballast = tiny_fs / "ballast"
    ballast.write_bytes(bytes(512 * 1024))
    scenario = Scenario.generate(31, 600, BLOCK_SIZE, publish_every=4, admin=False,
                                 data_size=32 * 1024)
    backend = FaultyBackend(LocalBackend(path), FaultPlan(None))  # only for abandon()
    store = Store.open(backend)
    last_done, failed_at, error = -1, None, None
    try:
        for index, step in enumerate(scenario.steps):
            failed_at = index
            run_step(store, step)
            if step[0] in DURABLE:
                last_done = index
        failed_at = None
    except StoreError as exc:
        error = exc
    finally:
        backend.abandon()
    assert error is not None, "the disk never filled: the scenario is too small"
    assert error.code == STORE_IO_ERROR and error.errno == errno.ENOSPC, repr(error)
    assert last_done > 0, "nothing was published before the disk filled"
    ballast.unlink()
    what = f"disk full at step {failed_at} ({error})"
    matched = recover_and_check(path, scenario, last_done, base, what)
    # The store takes writes again: play the next steps up to the next publish, reopen.
    store = Store.open(path)
    try:
        next_pub = min(k for k in scenario.durable if k > matched)
        for step in scenario.steps[matched + 1:next_pub + 1]:
            run_step(store, step)
    finally:
        store.close()
    recover_and_check(path, scenario, next_pub, base, what + ", then writing again")

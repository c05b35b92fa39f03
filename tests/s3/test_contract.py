"""The ASL-HOST backend contract suite (tests/store/test_backend.py) run against S3Backend.

The suite's test functions are imported, not copied: this module only
provides its own ``make`` fixture. The stale-lock test of the suite starts a
LocalBackend child, so the S3 variant of that check (a lease left by a dead
process) is written here.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from vegafs.store import STORE_CONCURRENT_MODIFICATION, Backend, StoreError

_path = Path(__file__).resolve().parents[1] / "store" / "test_backend.py"
_spec = importlib.util.spec_from_file_location("_store_backend_contract", _path)
assert _spec is not None and _spec.loader is not None
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)

for _name in dir(_suite):
    if _name.startswith("test_") and _name != "test_stale_lock_of_a_dead_process_is_taken_over":
        globals()[_name] = getattr(_suite, _name)


@pytest.fixture
def make(new_backend: Callable[..., Backend]) -> Callable[[], Backend]:
    return new_backend


def test_stale_lease_of_a_dead_process_is_taken_over(new_backend, s3_server) -> None:  # type: ignore[no-untyped-def]
    a = new_backend()
    a.create(b"f")
    code = (
        "import sys, os; from vegafs.store.s3backend import S3Backend; "
        "b = S3Backend(sys.argv[1], endpoint_url=sys.argv[2], cache_dir=sys.argv[3]); "
        "b.acquire_lock(); print(os.getpid()); os._exit(0)"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, a.location, s3_server.url, str(a.cache) + "-child"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    dead_pid = int(child.stdout)
    previous = a.acquire_lock()
    assert previous is not None and previous.pid == dead_pid


def test_live_lease_is_refused_until_it_expires(new_backend) -> None:  # type: ignore[no-untyped-def]
    a, b = new_backend(lease_seconds=1.0), new_backend()
    a.create(b"f")
    a.acquire_lock()
    a._stop_threads()  # a hangs: it stops renewing its lease
    with pytest.raises(StoreError) as e:
        b.acquire_lock()
    assert e.value.code == STORE_CONCURRENT_MODIFICATION and "in use by" in str(e.value)
    deadline = time.monotonic() + 10
    while b.lock_holder() is not None:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert b.acquire_lock() is not None

"""One writer: a second opener is refused with the holder's name; a dead holder's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.store.conftest import assert_clean, make_file
from vegafs.store import ROOT_INO, STORE_CONCURRENT_MODIFICATION, Store, StoreError

HOLDER = """
import sys
from vegafs.store import Store
s = Store.open(sys.argv[1])
print("ready", flush=True)
sys.stdin.read()
"""


def _spawn_holder(path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        proc.communicate()
        pytest.fail(f"holder did not start: {line!r}")
    return proc


def test_second_opener_in_same_process_is_refused(store_path: Path) -> None:
    with Store.open(store_path, create=True):
        with pytest.raises(StoreError) as e:
            Store.open(store_path)
        assert e.value.code == STORE_CONCURRENT_MODIFICATION
        assert f"pid {os.getpid()}" in str(e.value)
    Store.open(store_path).close()  # released on close


def test_second_opener_names_the_holder_and_stale_lock_is_taken_over(store_path: Path) -> None:
    with Store.open(store_path, create=True) as s:
        make_file(s, b"a", b"1")
    proc = _spawn_holder(store_path)
    try:
        with pytest.raises(StoreError) as e:
            Store.open(store_path)
        assert e.value.code == STORE_CONCURRENT_MODIFICATION
        assert f"in use by pid {proc.pid} on " in str(e.value)
        # A read-only opener needs no lock.
        with Store.open(store_path, read_only=True) as ro:
            assert ro.lookup(ROOT_INO, b"a") is not None
            holder = ro.backend.lock_holder()
        assert holder is not None and holder.pid == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdin.close()  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr]
    with Store.open(store_path) as s:
        assert s.taken_over_from is not None and s.taken_over_from.pid == proc.pid
        assert s.lookup(ROOT_INO, b"a") is not None
        assert_clean(s)

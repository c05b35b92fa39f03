"""The ASL-HOST backend contract, as one suite that every backend must pass.

Add a backend to BACKENDS (an object-store backend later) and it gets the same
checks: lifecycle, the one-writer lock, append-only segments, atomic small
objects, host facts, and the error codes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vegafs.store import (
    STORE_CONCURRENT_MODIFICATION,
    STORE_EXISTS,
    STORE_NOT_FOUND,
    Backend,
    LocalBackend,
    StoreError,
)

BACKENDS: dict[str, Callable[[Path], Backend]] = {"local": LocalBackend}


@pytest.fixture(params=sorted(BACKENDS))
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Backend]]:
    opened: list[Backend] = []

    def factory() -> Backend:
        b = BACKENDS[request.param](tmp_path / "store")
        opened.append(b)
        return b

    yield factory
    for b in opened:
        b.close()


def test_create_exists_and_refuses_twice(make: Callable[[], Backend]) -> None:
    b = make()
    assert not b.exists()
    b.create(b"format")
    assert b.exists() and b.get_object("FORMAT") == b"format"
    with pytest.raises(StoreError) as e:
        make().create(b"again")
    assert e.value.code == STORE_EXISTS


def test_lock_names_holder_and_is_released(make: Callable[[], Backend]) -> None:
    a, b = make(), make()
    a.create(b"f")
    assert a.acquire_lock() is None
    with pytest.raises(StoreError) as e:
        b.acquire_lock()
    assert e.value.code == STORE_CONCURRENT_MODIFICATION and f"pid {os.getpid()}" in str(e.value)
    holder = b.lock_holder()
    assert holder is not None and holder.pid == os.getpid() and holder.host == a.identity()
    a.release_lock()
    assert b.lock_holder() is None
    assert b.acquire_lock() is None


def test_stale_lock_of_a_dead_process_is_taken_over(make: Callable[[], Backend]) -> None:
    a = make()
    a.create(b"f")
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from vegafs.store import LocalBackend; "
            "b = LocalBackend(sys.argv[1]); b.acquire_lock(); print(__import__('os').getpid())",
            a.location,
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    dead_pid = int(child.stdout)
    previous = a.acquire_lock()  # the child exited holding it: a stale lock
    assert previous is not None and previous.pid == dead_pid


def test_segments_are_append_only_streams(make: Callable[[], Backend]) -> None:
    b = make()
    b.create(b"f")
    b.create_segment("000000-00000000.seg", b"head")
    with pytest.raises(StoreError) as e:
        b.create_segment("000000-00000000.seg", b"x")
    assert e.value.code == STORE_EXISTS
    b.append("000000-00000000.seg", b"123")
    b.append("000000-00000000.seg", b"456")
    b.sync("000000-00000000.seg")
    assert b.segment_size("000000-00000000.seg") == 10
    assert b.read("000000-00000000.seg", 2, 5) == b"ad123"
    assert b.read("000000-00000000.seg", 8, 100) == b"56"  # short only at the end
    for readinto in (b.readinto, lambda *a: Backend.readinto(b, *a)):  # its own, the default
        bufs = [memoryview(bytearray(n)) for n in (3, 2, 9)]
        assert readinto("000000-00000000.seg", 1, bufs) == 9  # short only at the end
        assert [bytes(v) for v in bufs] == [b"ead", b"12", b"3456\0\0\0\0\0"]
    b.truncate("000000-00000000.seg", 7)
    assert b.read("000000-00000000.seg", 0, 100) == b"head123"
    b.seal("000000-00000000.seg")
    b.create_segment("000000-00000001.seg", b"")
    assert b.list_segments() == ["000000-00000000.seg", "000000-00000001.seg"]
    b.delete_segment("000000-00000000.seg")
    b.delete_segment("000000-00000000.seg")  # already gone: no error
    with pytest.raises(StoreError) as e:
        b.read("000000-00000000.seg", 0, 1)
    assert e.value.code == STORE_NOT_FOUND
    with pytest.raises(StoreError) as e:
        b.segment_size("000000-00000000.seg")
    assert e.value.code == STORE_NOT_FOUND


def test_small_objects_replace_atomically(make: Callable[[], Backend]) -> None:
    b = make()
    b.create(b"f")
    assert b.get_object("MANIFEST") is None
    b.put_object("MANIFEST", b"one")
    b.put_object("MANIFEST", b"two")
    b.put_object("index/checkpoint", b"cp")
    b.put_object("quarantine/x.bin", b"q")
    assert b.get_object("MANIFEST") == b"two"
    assert b.list_objects("index/") == ["index/checkpoint"]
    assert "quarantine/x.bin" in b.list_objects("")
    b.delete_object("index/checkpoint")
    b.delete_object("index/checkpoint")
    assert b.get_object("index/checkpoint") is None
    with pytest.raises(ValueError):
        b.put_object("../escape", b"x")


def test_host_facts(make: Callable[[], Backend]) -> None:
    b = make()
    first = b.clock_ns()
    assert b.clock_ns() >= first > 0
    assert b.identity()

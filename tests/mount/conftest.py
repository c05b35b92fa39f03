"""Fixtures for the real-mount tests: a mount per test or per module, always torn down.

Two fixtures hand out a live mount:

* ``vmount`` — a fresh store mounted for one test (tests that remount, crash
  the daemon, need an empty filesystem, or need mount options).
* ``workdir`` — a fresh directory on a mount shared by the module (most
  tests: a mount costs a daemon start-up). If an earlier test killed or wedged
  the shared daemon, the next ``workdir`` remounts the same store first, so one
  failure does not cascade into the rest of the module.

Both arm a ``Watchdog`` from the test's ``timeout`` marker: a wedged request
is turned into a failed test (the daemon is killed, the mount detached), never
a hung run. Every store is fsck'ed after its last unmount: a test passes only
if it also left the store consistent.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mount.helpers import Mount, Watchdog
from vegafs.store import Store

DEFAULT_TIMEOUT = 300.0


def _watchdog_seconds(request: pytest.FixtureRequest) -> float:
    """Fire well before pytest-timeout would, so the watchdog is what reports a wedge."""
    marker = request.node.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker and marker.args else DEFAULT_TIMEOUT
    return max(limit * 0.85, limit - 15.0)


def assert_store_clean(store: Path) -> None:
    """The store, unmounted, passes fsck: whatever the test did left it consistent."""
    s = Store.open(store)
    try:
        report = s.fsck()
    finally:
        s.close()
    assert report.ok, f"fsck of {store} found problems: {report.problems}"


def _fail_if_wedged(dog: Watchdog, mounts: list[Mount]) -> None:
    if dog.fired:
        logs = "\n".join(m.log()[-3000:] for m in mounts)
        pytest.fail(f"test wedged the mount; daemon killed by the watchdog. Daemon log tail:\n{logs}")


@pytest.fixture
def vmount(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mount]:
    """A new store mounted for this test only; unmounted and fsck'ed afterwards.

    Extra ``vegafs mount`` arguments come by indirect parametrization:
    ``@pytest.mark.parametrize("vmount", [("-o", "allow_other")], indirect=True)``.
    """
    extra = tuple(getattr(request, "param", ()))
    m = Mount(store=tmp_path / "store", mnt=tmp_path / "mnt", extra_args=extra)
    m.start()
    try:
        with Watchdog([m], _watchdog_seconds(request)) as dog:
            yield m
    finally:
        m.stop()
    _fail_if_wedged(dog, [m])
    assert_store_clean(m.store)


@pytest.fixture(scope="module")
def shared_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    """One mount for a whole module (see ``workdir``).

    At the end of the module it also checks that no test killed the daemon
    (``workdir`` counts the restarts): the daemon never dies of a request.
    """
    base = tmp_path_factory.mktemp("shared")
    m = Mount(store=base / "store", mnt=base / "mnt")
    m.start()
    try:
        yield m
        assert m.restarts == 0, f"the daemon died {m.restarts} time(s) during this module:\n{m.log()[-3000:]}"
    finally:
        m.stop()
    assert_store_clean(m.store)


@pytest.fixture
def workdir(shared_mount: Mount, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A new, empty directory on the module's mount, named after the test."""
    if not shared_mount.alive():
        shared_mount.restarts += 1
        shared_mount.stop()
        shared_mount.start()
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:200]
    path = shared_mount.mnt / name
    path.mkdir()
    with Watchdog([shared_mount], _watchdog_seconds(request)) as dog:
        yield path
    _fail_if_wedged(dog, [shared_mount])

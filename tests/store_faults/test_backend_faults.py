"""Fail the Nth host call, for every N of a workload; the store must stay whole.

For each fault class (a write failing with EIO or ENOSPC, a torn write, a
failing fsync, a failing atomic put — before or after its rename —, a failing
read, a failing delete), a dry run counts how many such calls a small workload
makes (open; transactions with chunks; publishes; snapshots; a rollback;
snapshot deletes; gc; with tiny segments and checkpoint interval so that
segments are sealed and checkpoints written too). Then for every N in 1..count the workload runs again
with the Nth call failing, and:

* the failure surfaces as a ``StoreError`` (code ``STORE_IO_ERROR`` with the
  injected errno and a one-line message), or the store absorbs it (a derived
  index or a clean-up step may fail without harm) — never as another exception;
* the process "dies" right there (the backend is dropped, nothing is closed);
* the store reopens with the real backend, fsck is clean, and it shows exactly
  the last durable step that returned or the one in flight — nothing that was
  published before the fault is lost.

Quick run: every N up to 40, then a stride that keeps each class to about 60
runs. ``VEGAFS_FAULTS_ALL=1`` runs every N.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.store_faults.faulty_backend import FaultPlan, FaultyBackend
from tests.store_faults.harness import new_store, recover_and_check
from tests.store_faults.model import DURABLE, MState, Scenario, run_step
from vegafs.store import BLOCK_SIZE, Store, StoreError
from vegafs.store import store as store_module
from vegafs.store.backend import LocalBackend
from vegafs.store.errors import STORE_IO_ERROR

SEED = 20261123
SCENARIO = Scenario.generate(SEED, 36, BLOCK_SIZE, publish_every=3, admin_weight=3.0)
CASES = [
    ("write", "error", errno.EIO),
    ("write", "error", errno.ENOSPC),
    ("write", "torn", errno.ENOSPC),
    ("sync", "error", errno.EIO),
    ("sync", "after", errno.EIO),
    ("put", "error", errno.ENOSPC),
    ("put", "after", errno.EIO),
    ("read", "error", errno.EIO),
    ("delete", "error", errno.EIO),
]


def _play(path: Path, plan: FaultPlan) -> tuple[FaultyBackend, int, StoreError | None]:
    """Run the scenario through a faulty backend until it ends or fails; then "die".

    Returns the backend, the last durable step that returned, and the error.
    """
    backend = FaultyBackend(LocalBackend(path), plan)
    last_done = -1
    error = None
    try:
        store = Store.open(backend)
        for index, step in enumerate(SCENARIO.steps):
            run_step(store, step)
            if step[0] in DURABLE:
                last_done = index
    except StoreError as exc:
        error = exc
    finally:
        backend.abandon()
    return backend, last_done, error


def test_scenario_covers_every_kind_of_step() -> None:
    kinds = {step[0] for step in SCENARIO.steps}
    assert kinds >= {"txn", "publish", "snapshot", "rollback", "delete_snapshot", "gc"}, kinds


@pytest.fixture(autouse=True)
def small_segments_and_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the store's tunables so the workload also seals segments and writes checkpoints."""
    monkeypatch.setattr(store_module, "SEGMENT_TARGET", 48 * 1024)
    monkeypatch.setattr(store_module, "CHECKPOINT_INTERVAL", 20)


def _counts(tmp_path: Path) -> Counter[str]:
    path = tmp_path / "dry"
    base = new_store(path)
    backend, last_done, error = _play(path, FaultPlan(None))
    assert error is None, f"the workload fails without any fault: {error}"
    recover_and_check(path, SCENARIO, last_done, base, "dry run")
    shutil.rmtree(path)
    return backend.counts


def _which(count: int) -> list[int]:
    if os.environ.get("VEGAFS_FAULTS_ALL") or count <= 60:
        return list(range(1, count + 1))
    stride = max(1, (count - 40) // 20)
    return list(range(1, 41)) + list(range(41, count + 1, stride))


@pytest.mark.parametrize(("kind", "mode", "err"), CASES,
                         ids=[f"{k}-{m}-{errno.errorcode[e]}" for k, m, e in CASES])
def test_nth_call_fails(tmp_path: Path, kind: str, mode: str, err: int) -> None:
    count = _counts(tmp_path)[kind]
    assert count > 0, f"the workload makes no {kind} call: the test would prove nothing"
    surfaced = absorbed = 0
    for nth in _which(count):
        plan = FaultPlan(kind, nth, err, mode)
        path = tmp_path / f"n{nth}"
        base: MState = new_store(path)
        backend, last_done, error = _play(path, plan)
        what = f"{plan.describe()} ({backend.fired})"
        assert backend.fired, f"{what}: the fault never fired (count was {count})"
        if error is None:
            absorbed += 1
        else:
            surfaced += 1
            assert error.code == STORE_IO_ERROR, f"{what}: surfaced as {error.code}: {error}"
            if kind != "read":
                assert error.errno == err, f"{what}: errno {error.errno}, not {err}: {error}"
            message = str(error)
            assert message and "\n" not in message, f"{what}: unclear message {message!r}"
        recover_and_check(path, SCENARIO, last_done, base, what)
        shutil.rmtree(path)
    print(f"faults {kind}/{mode}/{errno.errorcode[err]}: calls={count} "
          f"surfaced={surfaced} absorbed={absorbed}")

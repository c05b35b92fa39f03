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

Quick run: a 36-step workload, every N up to 40, then a stride that keeps
each class to about 60 runs. ``VEGAFS_FAULTS_ALL=1`` runs every N;
``VEGAFS_FAULTS_STEPS`` makes the workload longer.
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
from tests.store_faults.model import (
    DURABLE,
    MState,
    Scenario,
    assert_matches,
    differences,
    run_step,
    with_root,
)
from tests.stress.summary import campaign_summary
from vegafs.store import BLOCK_SIZE, Store, StoreError
from vegafs.store import store as store_module
from vegafs.store.backend import LocalBackend
from vegafs.store.errors import STORE_IO_ERROR

SEED = 20261123
STEPS = int(os.environ.get("VEGAFS_FAULTS_STEPS", "36"))
SCENARIO = Scenario.generate(SEED, STEPS, BLOCK_SIZE, publish_every=3, admin_weight=3.0)
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


class Run:
    """What one faulty run of the scenario did (see ``_play``)."""

    def __init__(self, backend: FaultyBackend) -> None:
        self.backend = backend
        self.store: Store | None = None
        self.last_done = -1  # last durable step that returned
        self.failed_at: int | None = None  # the step that raised, if any
        self.error: StoreError | None = None


def _play(path: Path, plan: FaultPlan) -> Run:
    """Run the scenario through a faulty backend until it ends or a step raises StoreError."""
    run = Run(FaultyBackend(LocalBackend(path), plan))
    try:
        run.store = Store.open(run.backend)
        for index, step in enumerate(SCENARIO.steps):
            run.failed_at = index
            run_step(run.store, step)
            if step[0] in DURABLE:
                run.last_done = index
        run.failed_at = None
    except StoreError as exc:
        run.error = exc
    except BaseException:
        run.backend.abandon()
        raise
    return run


def _check_error(run: Run, plan: FaultPlan, what: str) -> None:
    """A fault that surfaced must be STORE_IO_ERROR, with the injected errno, in one line."""
    error = run.error
    assert error is not None
    assert error.code == STORE_IO_ERROR, f"{what}: surfaced as {error.code}: {error}"
    if plan.kind != "read":
        assert error.errno == plan.errno, f"{what}: errno {error.errno}, not {plan.errno}: {error}"
    message = str(error)
    assert message and "\n" not in message, f"{what}: unclear message {message!r}"


def test_scenario_covers_every_kind_of_step() -> None:
    kinds = {step[0] for step in SCENARIO.steps}
    assert kinds >= {"txn", "publish", "snapshot", "rollback", "delete_snapshot", "gc"}, kinds


@pytest.fixture(autouse=True)
def small_segments_and_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the store's tunables so the workload also seals segments and writes checkpoints."""
    monkeypatch.setattr(store_module, "SEGMENT_TARGET", 48 * 1024)
    monkeypatch.setattr(store_module, "CHECKPOINT_INTERVAL", 20)


def _counts(where: Path) -> Counter[str]:
    path = where / "dry"
    base = new_store(path)
    run = _play(path, FaultPlan(None))
    run.backend.abandon()
    assert run.error is None, f"the workload fails without any fault: {run.error}"
    recover_and_check(path, SCENARIO, run.last_done, base, "dry run")
    shutil.rmtree(path)
    return run.backend.counts


def _which(count: int) -> list[int]:
    if os.environ.get("VEGAFS_FAULTS_ALL") or count <= 60:
        return list(range(1, count + 1))
    stride = max(1, (count - 40) // 20)
    return list(range(1, 41)) + list(range(41, count + 1, stride))


IDS = [f"{k}-{m}-{errno.errorcode[e]}" for k, m, e in CASES]


@pytest.mark.parametrize(("kind", "mode", "err"), CASES, ids=IDS)
def test_nth_call_fails(shm_path: Path, kind: str, mode: str, err: int) -> None:
    """The Nth call fails, the process dies on the spot; reopen and compare."""
    count = _counts(shm_path)[kind]
    assert count > 0, f"the workload makes no {kind} call: the test would prove nothing"
    name = f"faults {kind}/{mode}/{errno.errorcode[err]} (the process dies)"
    with campaign_summary(name, SEED) as summary:
        surfaced = absorbed = 0
        for nth in _which(count):
            plan = FaultPlan(kind, nth, err, mode)
            path = shm_path / f"n{nth}"
            base: MState = new_store(path)
            run = _play(path, plan)
            run.backend.abandon()
            what = f"{plan.describe()} ({run.backend.fired})"
            assert run.backend.fired, f"{what}: the fault never fired (count was {count})"
            if run.error is None:
                absorbed += 1
            else:
                surfaced += 1
                _check_error(run, plan, what)
            recover_and_check(path, SCENARIO, run.last_done, base, what)
            shutil.rmtree(path)
            summary.rounds += 1
            summary.ops += max(run.last_done + 1, 0)
        summary.extra.update(calls=count, surfaced=surfaced, absorbed=absorbed)


def _state_before(step: int) -> MState:
    """The head the store holds just before ``step`` runs: last durable state + txns since."""
    last = max(k for k in SCENARIO.durable if k < step)
    state = SCENARIO.durable[last].head.clone()
    for txn in SCENARIO.steps[last + 1:step]:
        assert txn[0] == "txn"
        for op in txn[1]:
            state.apply(op)
    return state


@pytest.mark.parametrize(("kind", "mode", "err"), CASES, ids=IDS)
def test_store_survives_a_failed_call(shm_path: Path, kind: str, mode: str, err: int) -> None:
    """The Nth call fails and the process carries on: the failed step left no trace.

    After the error the head must be exactly the state before the failed step
    (or after it, for a step whose record was written before the failure). Then
    ``publish``: either the store refuses further writes with a clear error
    (sticky failure, e.g. after a failed fsync), or it publishes — and then a
    reopen must show exactly that head.
    """
    count = _counts(shm_path)[kind]
    gone = set(range(2, SCENARIO.max_ino))
    name = f"faults {kind}/{mode}/{errno.errorcode[err]} (the process carries on)"
    with campaign_summary(name, SEED) as summary:
        carried_on = sticky = 0
        for nth in _which(count)[::3]:
            plan = FaultPlan(kind, nth, err, mode)
            path = shm_path / f"c{nth}"
            base = new_store(path)
            run = _play(path, plan)
            summary.rounds += 1
            summary.ops += max(run.last_done + 1, 0)
            what = f"{plan.describe()} ({run.backend.fired}), then carry on"
            if run.error is None or run.store is None or run.failed_at is None:
                run.backend.abandon()  # absorbed, or the open itself failed: nothing to carry on
                recover_and_check(path, SCENARIO, run.last_done, base, what)
                shutil.rmtree(path)
                continue
            _check_error(run, plan, what)
            step = SCENARIO.steps[run.failed_at]
            candidates = [_state_before(run.failed_at)]
            if step[0] in DURABLE:
                candidates.append(SCENARIO.durable[run.failed_at].head)
            heads = [with_root(c, base) for c in candidates]
            found = [differences(run.store, head, gone) for head in heads]
            assert [] in found, (f"{what}: after the failed {step[0]} step {run.failed_at} the head "
                                 f"is neither before nor after it: {found[0][:5]}")
            head = heads[found.index([])]
            try:
                run.store.publish()
            except StoreError as exc:
                sticky += 1
                assert exc.code == STORE_IO_ERROR and "\n" not in str(exc), f"{what}: {exc!r}"
                run.backend.abandon()
                recover_and_check(path, SCENARIO, run.last_done, base, what)
            else:
                carried_on += 1
                run.backend.abandon()
                store = Store.open(path)
                try:
                    assert store.fsck().ok, f"{what}: fsck after publishing past a fault"
                    assert_matches(store, head, gone, what=f"after {what}, publish and reopen")
                finally:
                    store.close()
            shutil.rmtree(path)
        summary.extra.update(calls=count, published=carried_on, sticky=sticky)

"""Die at every single host call of a workload, before and after it; recovery must hold.

The kill -9 campaign kills at random moments, and most land inside an fsync;
this test is its exhaustive, deterministic twin (in the spirit of
CrashMonkey): a dry run counts every backend call the scenario makes (open,
appends, syncs, seals, manifest and checkpoint puts, reads, deletes — with
tiny segments and a short checkpoint interval so that all of them occur,
and gc to a new generation), then for every N the process "dies" right before
the Nth call, and again right after it (``Crash``, a BaseException the store
cannot swallow; the backend is then dropped without another byte written —
what SIGKILL at that instant leaves, since the page cache survives a killed
process). After each death: reopen, fsck clean, and exactly the last durable
step or the one in flight.

Quick run: one scenario. ``VEGAFS_CRASH_SEEDS=n`` plays n scenarios.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.store_faults.faulty_backend import Crash, FaultPlan, FaultyBackend
from tests.store_faults.harness import new_store, recover_and_check
from tests.store_faults.model import DURABLE, Scenario, run_step
from tests.stress.summary import campaign_summary
from vegafs.store import BLOCK_SIZE, Store
from vegafs.store import store as store_module
from vegafs.store.backend import LocalBackend

SEEDS = [7001 + n for n in range(int(os.environ.get("VEGAFS_CRASH_SEEDS", "1")))]


@pytest.fixture(autouse=True)
def small_segments_and_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "SEGMENT_TARGET", 24 * 1024)
    monkeypatch.setattr(store_module, "CHECKPOINT_INTERVAL", 15)


def _run(path: Path, scenario: Scenario, plan: FaultPlan) -> tuple[FaultyBackend, int]:
    """Play until the planned crash (or the end); return the backend and the last durable step."""
    backend = FaultyBackend(LocalBackend(path), plan)
    last_done = -1
    try:
        store = Store.open(backend)
        for index, step in enumerate(scenario.steps):
            run_step(store, step)
            if step[0] in DURABLE:
                last_done = index
    except Crash:
        pass
    finally:
        backend.abandon()
    return backend, last_done


@pytest.mark.parametrize("seed", SEEDS)
def test_crash_at_every_call(shm_path: Path, seed: int) -> None:
    scenario = Scenario.generate(seed, 30, BLOCK_SIZE, publish_every=3, admin_weight=3.0)
    dry = shm_path / "dry"
    new_store(dry)
    backend, _ = _run(dry, scenario, FaultPlan(None))
    total = backend.counts["any"]
    kinds = {k for k, v in backend.counts.items() if v and k != "any"}
    want = {"write", "sync", "put", "read", "delete"} if seed == SEEDS[0] else {"write", "sync"}
    assert kinds >= want, f"the workload misses some kinds of call: {backend.counts}"
    shutil.rmtree(dry)
    with campaign_summary("crash at every call", seed) as summary:
        summary.extra["calls"] = total
        for nth in range(1, total + 1):
            for mode in ("crash", "crash_after"):
                plan = FaultPlan("any", nth, mode=mode)
                path = shm_path / f"{mode}{nth}"
                base = new_store(path)
                backend, last_done = _run(path, scenario, plan)
                assert backend.fired, f"{plan.describe()} never fired"
                recover_and_check(path, scenario, last_done, base,
                                  f"seed {seed}: {plan.describe()} ({backend.fired})")
                shutil.rmtree(path)
                summary.rounds += 1
                summary.ops += max(last_done + 1, 0)

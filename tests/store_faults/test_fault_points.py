"""Crash the writing process at every named fault point; recovery must lose nothing reachable.

For each name in ``vegafs.store.faultpoints.NAMES`` the writer child plays a
scenario with snapshots, rollbacks, snapshot deletes and gc (with a small
segment size and checkpoint interval, so that sealing and checkpoints happen
too) and SIGKILLs itself the 1st, and again in another run the 3rd, time the
store reaches that step. The parent reopens: fsck clean, the head and every
snapshot exactly at the last durable step reported or the one in flight.
``recovery.before_truncate`` is reached by crashing once with an unpublished
tail, then crashing the *recovery* of that store, then recovering for real.

A fault point the workload never reaches fails the test: an untested step is
not a passed one.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store_faults.harness import Child, new_store, recover_and_check
from tests.store_faults.model import Scenario
from tests.stress.summary import Summary, module_summary
from vegafs.store import BLOCK_SIZE, faultpoints

SEED = 4242
STEPS = 200
ADMIN_WEIGHT = 2.0
CHILD_ARGS = ["--steps", str(STEPS), "--publish-every", "3", "--admin-weight", str(ADMIN_WEIGHT),
              "--checkpoint-every", "25", "--segment-size", str(16 * 1024)]


def _scenario(seed: int) -> Scenario:
    """The scenario the child plays with CHILD_ARGS and ``seed``."""
    return Scenario.generate(seed, STEPS, BLOCK_SIZE, publish_every=3, admin_weight=ADMIN_WEIGHT)
RECOVERY = "recovery.before_truncate"


def _crash(path: Path, seed: int, point: str, nth: int) -> Child:
    with Child(path, seed, *CHILD_ARGS, "--crash-at", point, "--crash-nth", str(nth)) as child:
        child.pump()
        assert child.ready, f"child did not open the store:\n{child.stderr()}"
        if child.ended:
            pytest.fail(f"fault point {point} (hit #{nth}) was never reached by the workload")
        assert child.proc.returncode == -signal.SIGKILL, \
            f"child ended with {child.proc.returncode} at {point}:\n{child.stderr()}"
    return child


@pytest.fixture(scope="module")
def summary(request: pytest.FixtureRequest) -> Iterator[Summary]:
    """One summary line for the whole module: rounds = crashes checked."""
    with module_summary(request, "crash at fault points", SEED) as s:
        yield s


@pytest.mark.parametrize("nth", [1, 3])
@pytest.mark.parametrize("point", [n for n in faultpoints.NAMES if n != RECOVERY])
def test_crash_at_fault_point(shm_path: Path, point: str, nth: int, summary: Summary) -> None:
    path = shm_path / "store"
    base = new_store(path)
    child = _crash(path, SEED + nth, point, nth)
    scenario = _scenario(SEED + nth)
    recover_and_check(path, scenario, child.last_done, base, f"crash at {point} #{nth}",
                      dead_writer=child.proc.pid)
    summary.rounds += 1
    summary.ops += max(child.last_done + 1, 0)


def test_crash_during_recovery(shm_path: Path, summary: Summary) -> None:
    path = shm_path / "store"
    base = new_store(path)
    first = _crash(path, SEED, "publish.before_write", 4)  # leaves an unpublished tail
    with Child(path, SEED, *CHILD_ARGS, "--open-only", "--crash-at", RECOVERY) as child:
        child.pump()
        assert child.proc.returncode == -signal.SIGKILL, \
            f"recovery never reached {RECOVERY} (exit {child.proc.returncode}):\n{child.stderr()}"
    scenario = _scenario(SEED)
    recover_and_check(path, scenario, first.last_done, base, "crash inside recovery",
                      dead_writer=child.proc.pid)
    summary.rounds += 1
    summary.ops += max(first.last_done + 1, 0)

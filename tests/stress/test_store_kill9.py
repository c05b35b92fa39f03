"""kill -9 campaign on the store: a writer is SIGKILLed at random moments; recovery must hold.

Each round creates a store, starts ``tests.store_faults.writer_child`` on a
fresh seeded scenario (transactions, publishes every 1..8 transactions, and
in half the rounds snapshots, rollbacks, snapshot deletes and gc; segment size
and checkpoint interval drawn small or default, so that segments are sealed
and checkpoints written while the killer waits), waits until
the child has reported a random number of durable steps, lets it run a random
few more milliseconds, and SIGKILLs it. Then the store is reopened and must be
exactly at a durable step: the last one the child reported, or the one it was
in the middle of — every publish that returned is there, nothing after the
last publish is half-applied, fsck is clean, and a second open agrees.

Quick run: 10 rounds. Full run: ``VEGAFS_STRESS_ROUNDS=200`` (or the slow
test, 200 rounds). The master seed is printed and can be forced with
``VEGAFS_STRESS_SEED`` to replay a failure.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import pytest

from tests.store_faults.harness import Child, new_store, recover_and_check
from tests.store_faults.model import Scenario
from tests.stress.summary import campaign_summary
from vegafs.store import BLOCK_SIZE

STEPS = 400


def _campaign(tmp_path: Path, rounds: int) -> None:
    master = int(os.environ.get("VEGAFS_STRESS_SEED", random.SystemRandom().getrandbits(32)))
    print(f"store kill -9 campaign: seed={master} rounds={rounds}")
    rng = random.Random(master)
    with campaign_summary("store kill -9 campaign", master) as summary:
        summary.extra.update(durable_steps_reported=0, recovered_in_flight_publish=0)
        for round_no in range(rounds):
            seed = rng.getrandbits(32)
            every = rng.randint(1, 8)
            admin = rng.random() < 0.5
            reports = rng.randint(1, 25)
            delay = rng.uniform(0.0, 0.02)
            segment = rng.choice([16 << 10, 256 << 10, 64 << 20])  # tiny ones: sealing under fire
            checkpoint = rng.choice([20, 50_000])
            what = (f"round {round_no} (master seed {master}: seed={seed} publish_every={every} "
                    f"admin={admin} segment={segment} checkpoint={checkpoint} "
                    f"kill after {reports} reports + {delay * 1000:.1f} ms)")
            path = tmp_path / f"round{round_no}"
            base = new_store(path)
            extra = ["--steps", str(STEPS), "--publish-every", str(every),
                     "--segment-size", str(segment), "--checkpoint-every", str(checkpoint)]
            if not admin:
                extra.append("--no-admin")
            with Child(path, seed, *extra) as child:
                if child.pump(until_done=reports):
                    time.sleep(delay)  # the random moment is the point of the test: not a wait
                child.kill()
                assert child.ready, f"{what}: the child died before opening the store:\n" \
                                    f"{child.stderr()}"
            scenario = Scenario.generate(seed, STEPS, BLOCK_SIZE, publish_every=every, admin=admin)
            matched = recover_and_check(path, scenario, child.last_done, base, what,
                                        dead_writer=child.proc.pid)
            summary.rounds += 1
            summary.ops += max(child.last_done + 1, 0)  # scenario steps proven done
            summary.extra["durable_steps_reported"] += child.reported
            summary.extra["recovered_in_flight_publish"] += matched > child.last_done
            shutil.rmtree(path)


ROUNDS = int(os.environ.get("VEGAFS_STRESS_ROUNDS", "10"))


@pytest.mark.timeout(max(300, ROUNDS * 6))  # a round takes ~1 s, several on a busy machine
def test_kill9_rounds(tmp_path: Path) -> None:
    _campaign(tmp_path, ROUNDS)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill9_full_campaign(tmp_path: Path) -> None:
    _campaign(tmp_path, 200)

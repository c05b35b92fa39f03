"""The writing process of the crash tests: play a scenario, report durable steps, get killed.

Run as ``python -m tests.store_faults.writer_child --store DIR --seed S ...``
from the repository root. It opens the store for writing, plays
``Scenario.generate(seed, ...)`` step by step, and after every *durable* step
(publish, snapshot, rollback, snapshot delete, gc — each followed by a
publish) has returned it prints ``done <step index>`` and flushes, so the
parent knows, for each line it read, that the store promised that state.

Two ways to die:

* the parent SIGKILLs it at a moment of its choosing (the kill -9 test);
* ``--crash-at NAME [--crash-nth M]`` installs a fault-point handler that
  SIGKILLs the process itself the M-th time the store reaches step ``NAME``
  (the crash-at-every-fault-point test). ``--open-only`` just opens the store
  (to crash inside recovery) and exits.

It prints ``ready`` once the store is open and ``end`` if it played the whole
scenario. Nothing else goes to stdout.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from tests.store_faults.model import DURABLE, Scenario, run_step
from vegafs.store import BLOCK_SIZE, Store, faultpoints
from vegafs.store import store as store_module


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _crash_handler(target: str, nth: int) -> faultpoints.Handler:
    seen = 0

    def handler(name: str) -> None:
        nonlocal seen
        if name != target:
            return
        seen += 1
        if seen == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    return handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--publish-every", type=int, default=4)
    ap.add_argument("--no-admin", action="store_true", help="only transactions and publishes")
    ap.add_argument("--admin-weight", type=float, default=1.0)
    ap.add_argument("--crash-at", help="fault point name to die at")
    ap.add_argument("--crash-nth", type=int, default=1)
    ap.add_argument("--open-only", action="store_true")
    ap.add_argument("--checkpoint-every", type=int, default=None)
    ap.add_argument("--segment-size", type=int, default=None)
    args = ap.parse_args(argv)

    if args.crash_at:
        faultpoints.set_handler(_crash_handler(args.crash_at, args.crash_nth))
    # The store's tunables are module constants; shrinking them here (in this
    # throwaway process only) makes segment sealing and checkpoints happen
    # within a short workload, so their fault points are reached.
    if args.checkpoint_every is not None:
        store_module.CHECKPOINT_INTERVAL = args.checkpoint_every
    if args.segment_size is not None:
        store_module.SEGMENT_TARGET = args.segment_size
    store = Store.open(args.store)
    _say("ready")
    if args.open_only:
        store.close()
        return 0
    scenario = Scenario.generate(args.seed, args.steps, BLOCK_SIZE,
                                 publish_every=args.publish_every, admin=not args.no_admin,
                                 admin_weight=args.admin_weight)
    for index, step in enumerate(scenario.steps):
        run_step(store, step)
        if step[0] in DURABLE:
            _say(f"done {index}")
    _say("end")
    # No close(): the scenario ends on whatever it ends on, and the parent
    # checks the last durable step, exactly as if the process had died here.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())

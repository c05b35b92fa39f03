"""Budgets of one run: steps, wall time, memory (seed 001 "budgets as primitives").

The VM calls `Meter.step()` at every back-edge and every call, so a hot loop pays
one attribute decrement and one comparison; the wall clock is read only every
`CLOCK_EVERY` steps (and by blocking builtins through `check_time()`), so a
runaway loop is stopped within that many steps of its time limit.

Memory is an *allocation* budget: the VM charges the bytes of every string,
list, map and `text()` copy it creates (estimated by `estimate_size`), and
never credits them back. That makes the charge deterministic (the same program
traps at the same place on every run, independent of the garbage collector),
and a huge allocation is refused *before* it happens (`charge_memory` raises
before the caller allocates). Slices do not count: they borrow memory owned by
handlers, which the VFS bounds per read instead (see vfs.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from vegafs.vm.values import Trap

#: Steps between two reads of the wall clock (the time slack is this many steps).
CLOCK_EVERY = 4096


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits of one run. None means unlimited (only hosts may choose that)."""

    steps: int | None = 100_000_000
    time_s: float | None = 30.0
    memory_bytes: int | None = 256 << 20

    def describe(self) -> str:
        return (f"steps={self.steps}, time={self.time_s}s, memory={self.memory_bytes} bytes")


#: The defaults a `vegafs run` gets without --max-* options.
DEFAULT_BUDGET = Budget()


class Meter:
    """Counts what a run uses against its Budget and traps when a limit is passed."""

    __slots__ = ("budget", "_clock", "_started", "_deadline", "_steps_limit", "tick",
                 "_check_at", "memory_used")

    def __init__(self, budget: Budget = DEFAULT_BUDGET,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self._clock = clock
        self._started = clock()
        self._deadline = None if budget.time_s is None else self._started + budget.time_s
        # An unlimited step budget still needs the periodic clock check.
        self._steps_limit = budget.steps if budget.steps is not None else 1 << 62
        # steps_left == _check_at + tick; `tick` counts down to the next slow check, so
        # the hot path is one decrement and one compare with 0 (the fast tier inlines it).
        self._check_at = max(self._steps_limit - CLOCK_EVERY, 0)
        self.tick = self._steps_limit - self._check_at
        self.memory_used = 0

    # -- steps and time --------------------------------------------------------------

    def step(self, n: int = 1) -> None:
        """Account `n` steps; the fast path is a decrement and a comparison."""
        self.tick -= n
        if self.tick < 0:
            self._slow_step()

    @property
    def steps_left(self) -> int:
        return self._check_at + self.tick

    def _slow_step(self) -> None:
        """`tick` went negative: trap if the steps are spent, else read the clock and
        start counting down to the next check."""
        if self.steps_left < 0:
            self._check_at, self.tick = 0, -1  # stay exhausted even if a host swallows it
            raise Trap("budget_steps", f"step budget exhausted: the run took more than "
                       f"{self.budget.steps} steps (--max-steps)")
        self.check_time()
        # At 0 the next check is the step that goes negative, i.e. the one that traps.
        left = self.steps_left
        self._check_at = max(left - CLOCK_EVERY, 0)
        self.tick = left - self._check_at

    def check_time(self) -> None:
        """Trap if the wall-time budget is over; blocking builtins call this too."""
        if self._deadline is not None and self._clock() > self._deadline:
            raise Trap("budget_time", f"time budget exhausted: the run took more than "
                       f"{self.budget.time_s:g}s (--max-time)")

    def now(self) -> float:
        """A reading of this meter's clock (for `exclude`)."""
        return self._clock()

    def exclude(self, since: float) -> None:
        """Leave host work that began at `since` (a `now()` reading) out of the run's
        wall time: compiling a program to the fast tier is the host's cost, paid
        once per program, and must not eat a hook's 50 ms the first time it runs."""
        spent = self._clock() - since
        self._started += spent
        if self._deadline is not None:
            self._deadline += spent

    @property
    def steps_used(self) -> int:
        return self._steps_limit - self.steps_left

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._started

    # -- memory ----------------------------------------------------------------------

    def charge_memory(self, nbytes: int) -> None:
        """Charge an allocation of `nbytes` *before* making it; trap if over the limit."""
        limit = self.budget.memory_bytes
        if limit is not None and self.memory_used + nbytes > limit:
            raise Trap("budget_memory", f"memory budget exhausted: allocating {nbytes} bytes "
                       f"would use {self.memory_used + nbytes} of {limit} bytes (--max-memory)")
        self.memory_used += nbytes

    def memory_headroom(self) -> int | None:
        """Bytes that may still be charged (None: unlimited)."""
        limit = self.budget.memory_bytes
        return None if limit is None else max(limit - self.memory_used, 0)

    # -- reporting -------------------------------------------------------------------

    def remaining(self) -> dict[str, float | int | None]:
        """What is left of each limit (None where unlimited): `budget::remaining()`."""
        time_left = (None if self._deadline is None
                     else max(self._deadline - self._clock(), 0.0))
        return {
            "steps": None if self.budget.steps is None else max(self.steps_left, 0),
            "time_s": time_left,
            "memory_bytes": self.memory_headroom(),
        }

    def used(self) -> dict[str, float | int]:
        return {"steps": self.steps_used, "time_s": self.elapsed_s,
                "memory_bytes": self.memory_used}

    def limit(self) -> dict[str, float | int | None]:
        return {"steps": self.budget.steps, "time_s": self.budget.time_s,
                "memory_bytes": self.budget.memory_bytes}


#: Rough per-object overheads used by `estimate_size` (CPython 3.11, 64-bit).
_STR_BASE = 49
_LIST_BASE = 56
_LIST_SLOT = 8
_DICT_BASE = 64
_DICT_ENTRY = 32
_INT = 28


def estimate_size(value: object) -> int:
    """Bytes a *new* container/string costs, shallow (its elements were charged when
    they were made). Deterministic, so traps land at the same place every run."""
    if isinstance(value, str):
        return _STR_BASE + len(value)
    if isinstance(value, bytes | bytearray):
        return 33 + len(value)
    if isinstance(value, list):
        return _LIST_BASE + _LIST_SLOT * len(value)
    if isinstance(value, dict):
        return _DICT_BASE + _DICT_ENTRY * len(value)
    if isinstance(value, int):
        return _INT + value.bit_length() // 8
    return 32

"""Supervision of after-hooks: a bounded queue, a worker thread, retries, breakers.

After-hooks (``hook NAME after EVENT "GLOB"``) run off the request path: the
filesystem operation publishes a :class:`Job` and returns. One worker thread
runs jobs in due order (seed 001 supervision, simplified to one process per
mount):

- **Bounded queue, backpressure**: at most ``capacity`` jobs wait; a publisher
  finding the queue full waits up to ``backpressure_s`` for room (slowing the
  writer that produces the events), then gives up on the in-memory copy. The
  event is already journaled in the store, so it runs on the next mount
  (at-least-once, see docs/hooks.md).
- **Retries with exponential backoff**: a failed attempt whose failure kind
  the hook's ``retry { on [...] }`` accepts is rescheduled after
  ``RetryPolicy.delay(attempt)``; the worker never sleeps holding a job, so
  one hook's backoff does not delay another hook's events.
- **Circuit breaker per hook**: ``threshold`` consecutive final failures open
  the circuit; while open, the hook's jobs fail fast (status
  ``circuit_open``); after ``reset_after`` one trial run is let through
  (half-open) and its outcome closes or re-opens the circuit.
- **restart / stop / escalate**: what a final failure does to the hook is the
  engine's decision (:class:`AfterQueue` reports it through ``on_final``).

Invariants: a job is reported to ``on_finished`` exactly once per mount, after
its last attempt (success, final failure, or circuit-open), which is when the
engine marks it done in the journal; the worker thread never raises out of its
loop; ``close`` returns with no thread left behind.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vegafs.hooks.settings import BreakerPolicy, RetryPolicy

log = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> half-open after
    ``reset_after_s`` -> closed on a success, open again on a failure."""

    __slots__ = ("policy", "failures", "opened_at", "_clock", "_trial")

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.failures = 0
        self.opened_at: float | None = None
        self._clock = clock
        self._trial = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        if self.opened_at is None:
            return "closed"
        if self._clock() - self.opened_at >= self.policy.reset_after_s:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """May a run go ahead now? In half-open, exactly one trial run is allowed."""
        if self.opened_at is None:  # the hot path: closed
            return True
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self._trial = False

    def failure(self) -> None:
        self.failures += 1
        if self._trial or self.failures >= self.policy.threshold:
            self.opened_at = self._clock()
        self._trial = False


@dataclass
class Job:
    """One after-hook run to do: which hook, for which event, which attempt."""

    job_id: str
    hook: Any  # vegafs.hooks.engine.LoadedHook (kept opaque here)
    event: dict[str, Any]
    retry: RetryPolicy
    attempt: int = 0
    trace_id: int = 0
    parent_id: int | None = None  # span of the operation that published the event
    last_error: str = ""


@dataclass(frozen=True)
class Attempt:
    """What running a job once produced."""

    ok: bool
    kind: str = ""  # failure kind: a trap kind, "deny" or "error"
    message: str = ""


@dataclass(order=True)
class _Entry:
    due: float
    seq: int
    job: Job = field(compare=False)


class AfterQueue:
    """The worker thread and its bounded, due-ordered queue (see module docstring)."""

    def __init__(
        self,
        run: Callable[[Job], Attempt],
        on_finished: Callable[[Job, str], None],
        breaker_for: Callable[[Job], CircuitBreaker],
        *,
        capacity: int = 1024,
        backpressure_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = run
        self._on_finished = on_finished
        self._breaker_for = breaker_for
        self.capacity = capacity
        self.backpressure_s = backpressure_s
        self._clock = clock
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._running = 0
        self._stopping = False
        self.shed = 0  # jobs that found the queue full past the backpressure wait
        self._thread = threading.Thread(target=self._loop, name="vegafs-after-hooks", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap) + self._running

    def submit(self, job: Job) -> bool:
        """Queue ``job``; waits for room up to ``backpressure_s``; False if shed."""
        deadline = self._clock() + self.backpressure_s
        with self._cond:
            while len(self._heap) >= self.capacity and not self._stopping:
                left = deadline - self._clock()
                if left <= 0:
                    self.shed += 1
                    return False
                self._cond.wait(left)
            if self._stopping:
                return False
            heapq.heappush(self._heap, _Entry(self._clock(), next(self._seq), job))
            self._cond.notify_all()
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Block until no job waits or runs (tests, unmount); False on timeout."""
        deadline = self._clock() + timeout
        with self._cond:
            while self._heap or self._running:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def close(self) -> None:
        """Stop the worker after its current attempt; waiting jobs stay journaled."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    now = self._clock()
                    if self._heap and self._heap[0].due <= now:
                        entry = heapq.heappop(self._heap)
                        self._running += 1
                        self._cond.notify_all()  # room for a waiting publisher
                        break
                    timeout = (self._heap[0].due - now) if self._heap else None
                    self._cond.wait(timeout)
            try:
                self._attempt(entry.job)
            except Exception:  # the worker must survive anything a job does
                log.exception("after-hook worker: unexpected error")
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def _attempt(self, job: Job) -> None:
        breaker = self._breaker_for(job)
        if not breaker.allow():
            self._on_finished(job, "circuit_open")
            return
        job.attempt += 1
        outcome = self._run(job)
        if outcome.ok:
            breaker.success()
            self._on_finished(job, "ok")
            return
        job.last_error = outcome.message
        if job.attempt < job.retry.max_attempts and job.retry.retries(outcome.kind):
            due = self._clock() + job.retry.delay(job.attempt)
            with self._cond:
                heapq.heappush(self._heap, _Entry(due, next(self._seq), job))
            return
        breaker.failure()
        self._on_finished(job, "failed")

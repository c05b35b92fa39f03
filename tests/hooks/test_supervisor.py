"""The after-hook queue: retries with backoff, circuit breaker, backpressure."""

from __future__ import annotations

import threading

from vegafs.hooks.settings import BreakerPolicy, RetryPolicy
from vegafs.hooks.supervisor import AfterQueue, Attempt, CircuitBreaker, Job


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerPolicy(threshold=2, reset_after_s=10), clock)
    breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.now = 10.0
    assert breaker.state == "half-open"
    assert breaker.allow()
    assert not breaker.allow()  # one trial only
    breaker.failure()
    assert breaker.state == "open"
    clock.now = 25.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed"


def test_retry_delays_are_exponential_and_capped() -> None:
    policy = RetryPolicy(max_attempts=5, base_s=0.01, factor=2.0, max_s=0.05)
    assert [policy.delay(n) for n in range(1, 5)] == [0.01, 0.02, 0.04, 0.05]
    assert RetryPolicy(on=frozenset({"io"})).retries("io")
    assert not RetryPolicy(on=frozenset({"io"})).retries("deny")


def _queue(run, **kwargs):  # type: ignore[no-untyped-def]
    finished: list[tuple[str, str, int]] = []
    breakers: dict[str, CircuitBreaker] = {}

    def on_finished(job: Job, status: str) -> None:
        finished.append((job.job_id, status, job.attempt))

    def breaker_for(job: Job) -> CircuitBreaker:
        return breakers.setdefault(
            job.hook, CircuitBreaker(BreakerPolicy(threshold=2, reset_after_s=60))
        )

    return AfterQueue(run, on_finished, breaker_for, **kwargs), finished, breakers


def test_failed_job_is_retried_until_success() -> None:
    calls: list[int] = []

    def run(job: Job) -> Attempt:
        calls.append(job.attempt)
        return Attempt(job.attempt >= 3, "trap", "boom")

    queue, finished, _ = _queue(run)
    try:
        retry = RetryPolicy(max_attempts=3, base_s=0.001, factor=2.0, max_s=0.01)
        assert queue.submit(Job("j1", "h", {}, retry))
        assert queue.wait_idle(10)
    finally:
        queue.close()
    assert calls == [1, 2, 3]
    assert finished == [("j1", "ok", 3)]


def test_exhausted_retries_open_the_circuit_and_later_jobs_fail_fast() -> None:
    runs: list[str] = []

    def run(job: Job) -> Attempt:
        runs.append(job.job_id)
        return Attempt(False, "trap", "always")

    queue, finished, breakers = _queue(run)
    try:
        once = RetryPolicy(max_attempts=1)
        for n in range(4):
            assert queue.submit(Job(f"j{n}", "h", {}, once))
            assert queue.wait_idle(10)
    finally:
        queue.close()
    assert runs == ["j0", "j1"]
    assert [status for _, status, _ in finished] == [
        "failed",
        "failed",
        "circuit_open",
        "circuit_open",
    ]
    assert breakers["h"].state == "open"


def test_retry_on_filters_failure_kinds() -> None:
    queue, finished, _ = _queue(lambda job: Attempt(False, "deny", "no"))
    try:
        retry = RetryPolicy(max_attempts=5, base_s=0.001, on=frozenset({"budget_time"}))
        queue.submit(Job("j", "h", {}, retry))
        assert queue.wait_idle(10)
    finally:
        queue.close()
    assert finished == [("j", "failed", 1)]


def test_full_queue_applies_backpressure_then_sheds() -> None:
    gate = threading.Event()

    def run(job: Job) -> Attempt:
        gate.wait(10)
        return Attempt(True)

    queue, finished, _ = _queue(run, capacity=1, backpressure_s=0.05)
    try:
        retry = RetryPolicy()
        assert queue.submit(Job("a", "h", {}, retry))  # taken by the worker
        assert _wait(lambda: len(queue._heap) == 0)
        assert queue.submit(Job("b", "h", {}, retry))  # waits in the queue
        assert not queue.submit(Job("c", "h", {}, retry))  # full: shed after 50 ms
        assert queue.shed == 1
        gate.set()
        assert queue.wait_idle(10)
    finally:
        gate.set()
        queue.close()
    assert [job for job, _, _ in finished] == ["a", "b"]


def _wait(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.001)
    return False

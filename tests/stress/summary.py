"""The one-line summary every campaign prints, whether it passes or fails.

Why one helper: the issue asks each campaign for a summary line with its
rounds, operations, failures and seed, so a run's figures can be read (and
compared) the same way for all of them. Printing it in a ``finally`` means a
failing run still reports how far it got and with which seed, and its
``failures`` is then 1 (the campaigns stop at their first failure) — a count
that is never simply written down as 0.

Use::

    with campaign_summary("store kill -9", seed) as s:
        for ...:
            s.rounds += 1
            s.ops += n
        s.extra["recovered_in_flight"] = k

which prints ``store kill -9 summary: {"rounds": ..., "ops": ..., ...,
"failures": 0, "seed": ..., "seconds": ...}`` (run pytest with ``-s`` to see it).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Summary:
    """Counters a campaign fills in while it runs."""

    name: str
    seed: int | str | None
    rounds: int = 0
    ops: int = 0
    failures: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self, seconds: float) -> str:
        data = {
            "rounds": self.rounds,
            "ops": self.ops,
            **self.extra,
            "failures": self.failures,
            "seed": self.seed,
            "seconds": round(seconds, 1),
        }
        return f"{self.name} summary: {json.dumps(data)}"


@contextlib.contextmanager
def campaign_summary(name: str, seed: int | str | None) -> Iterator[Summary]:
    """Yield the campaign's :class:`Summary`; print its line at the end, also on failure."""
    summary = Summary(name, seed)
    started = time.monotonic()
    try:
        yield summary
    except BaseException:
        summary.failures = max(summary.failures, 1)
        raise
    finally:
        print(summary.line(time.monotonic() - started), flush=True)


@contextlib.contextmanager
def module_summary(request: Any, name: str, seed: int | str | None) -> Iterator[Summary]:
    """:func:`campaign_summary` for a campaign made of many tests (a module-scoped fixture).

    Its tests fill in the counters; ``failures`` is how many of them failed
    (pytest's session count, taken before and after).
    """
    before = request.session.testsfailed
    with campaign_summary(name, seed) as summary:
        yield summary
        summary.failures = request.session.testsfailed - before

"""The per-run context every builtin receives: `Runtime`.

One Runtime per run of a program. It bundles what a host grants (capabilities,
mounted drivers, budget) with where output goes (stdout/stderr writers, a trace
sink). Builtins are ``fn(rt, *args)`` and reach the world only through `rt`; the
interpreter and the fast tier call `rt.meter.step()` and, on a trap, `rt.abort()`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from vegafs.vm.budget import DEFAULT_BUDGET, Budget, Meter
from vegafs.vm.caps import Capabilities
from vegafs.vm.values import TraceSink
from vegafs.vm.vfs import Namespace, Opener

Writer = Callable[[str], Any]


def _discard(event: dict[str, Any]) -> None:
    """The default trace sink: a run without a host tracer records nothing."""


class Runtime:
    """Meter + capabilities + namespace + output of one run."""

    __slots__ = ("meter", "caps", "namespace", "trace", "stdout", "stderr", "args", "spans", "_ended")

    def __init__(self, budget: Budget = DEFAULT_BUDGET, caps: Capabilities | None = None, *,
                 opener: Opener | None = None, trace: TraceSink | None = None,
                 stdout: Writer | None = None, stderr: Writer | None = None,
                 args: list[str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.meter = Meter(budget, clock)
        self.caps = caps if caps is not None else Capabilities()
        self.namespace = Namespace(self.caps, self.meter, opener)
        self.trace: TraceSink = trace or _discard
        self.stdout: Writer = stdout or sys.stdout.write
        self.stderr: Writer = stderr or sys.stderr.write
        self.args = list(args or [])
        self.spans: list[Any] = []  # open trace::span objects, innermost last
        self._ended = False

    def emit(self, event: str, **attrs: Any) -> None:
        """Send one trace event (`trace::event`, spans) to the host's sink."""
        self.trace({"event": event, "ts_ns": time.time_ns(), **attrs})

    def abort(self, reason: str = "the run aborted on a trap") -> None:
        """Hard error: invalidate every slice and close every handler (seed 000 §3.4)."""
        self.namespace.close_all(reason)
        self._ended = True

    def finish(self) -> None:
        """Normal end of the run: close what the program left open."""
        if not self._ended:
            self.namespace.close_all("closed at the end of the run")
            self._ended = True

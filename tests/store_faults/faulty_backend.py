"""A Backend wrapper that fails on purpose, like SQLite's test VFS.

``FaultyBackend(inner, plan)`` forwards every call to a real backend and counts
the calls of each *class* — ``write`` (``append``, ``create_segment``),
``sync`` (``sync``, ``seal``, ``truncate``), ``put`` (``put_object``: the
tmp + fsync + rename of small objects), ``read`` (``read``, ``get_object``)
and ``delete`` (``delete_segment``, ``delete_object``). When the count of the
planned class reaches ``plan.nth``, that call fails the planned way:

* ``error``: raise ``OSError(plan.errno)`` before doing anything;
* ``torn``: write only a prefix of the data (half of it, at least one byte
  short of all), then raise — what a full disk or a crash in the middle of a
  ``write(2)`` leaves behind;
* ``after``: do the call for real, then raise — the rename happened but the
  directory fsync reported EIO; the caller cannot know which;
* ``crash`` / ``crash_after``: raise :class:`Crash` before / after doing the
  call: the process dies right there (class ``any`` counts every call, so a
  test can crash at every single I/O of a workload, CrashMonkey-style).

Only the one planned call fails (a transient fault); everything before and
after goes through untouched. ``counts`` records every call, so a dry run with
``FaultPlan(None)`` tells a test how many injection points a workload has.

``abandon()`` drops the wrapped backend's files and lock without letting the
store write anything more: the test's stand-in for the process dying right
after it saw the error.
"""

from __future__ import annotations

import errno as errno_mod
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from vegafs.store.backend import Backend, LockHolder

T = TypeVar("T")

KINDS = ("write", "sync", "put", "read", "delete", "any")
MODES = ("error", "torn", "after", "crash", "crash_after")


class Crash(BaseException):
    """The process dies at this call (raised through the store: no handler may catch it).

    A BaseException, like KeyboardInterrupt, so ``except Exception``/``OSError``
    in the store does not swallow it; the test then abandons the backend, which
    leaves the files exactly as a SIGKILL at that call would.
    """


@dataclass(frozen=True)
class FaultPlan:
    """Fail the ``nth`` (1-based) call of class ``kind`` with ``errno``, the ``mode`` way."""

    kind: str | None
    nth: int = 0
    errno: int = errno_mod.EIO
    mode: str = "error"

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"unknown fault class {self.kind!r}")
        if self.mode not in MODES:
            raise ValueError(f"unknown fault mode {self.mode!r}")

    def describe(self) -> str:
        if self.kind is None:
            return "no fault"
        if self.mode.startswith("crash"):
            return f"{self.mode} at {self.kind} call #{self.nth}"
        return f"{self.mode} {errno_mod.errorcode[self.errno]} at {self.kind} call #{self.nth}"


class FaultyBackend(Backend):
    """Forward to ``inner``; fail the one call that ``plan`` names."""

    def __init__(self, inner: Backend, plan: FaultPlan) -> None:
        self.inner = inner
        self.plan = plan
        self.location = inner.location
        self.counts: Counter[str] = Counter()
        self.fired: str | None = None  # description of the call that failed, once it has

    def _due(self, kind: str, call: str) -> bool:
        """Count a call of class ``kind`` (and of "any"); True if this is the one to fail."""
        self.counts[kind] += 1
        self.counts["any"] += 1
        planned = self.plan.kind
        if planned in (kind, "any") and self.counts[planned] == self.plan.nth and not self.fired:
            self.fired = f"{call}: {self.plan.describe()}"
            return True
        return False

    def _error(self, what: str) -> BaseException:
        if self.plan.mode.startswith("crash"):
            return Crash(what)
        return OSError(self.plan.errno, f"{os.strerror(self.plan.errno)} (injected: {what})")

    def _data_call(
        self, kind: str, call: str, forward: Callable[[str, bytes], None], name: str, data: bytes
    ) -> None:
        """The shared shape of every call that writes ``data`` under ``name``."""
        if not self._due(kind, f"{call}({name})"):
            forward(name, data)
            return
        if self.plan.mode == "torn" and len(data) > 1:
            forward(name, data[: len(data) // 2])
        elif self.plan.mode in ("after", "crash_after"):
            forward(name, data)
        raise self._error(f"{call} {name}")

    def _plain_call(self, kind: str, call: str, forward: Callable[..., T], *args: object) -> T:
        """The shared shape of every call that carries no data (sync, read, delete)."""
        if not self._due(kind, f"{call}{args}"):
            return forward(*args)
        if self.plan.mode in ("after", "crash_after"):
            forward(*args)
        raise self._error(f"{call} {args[0]}")

    def index_dir(self) -> Path | None:
        return self.inner.index_dir()  # derived, local: not faulted (it is never trusted)

    def abandon(self) -> None:
        """Die like a killed process: close the real backend's fds and lock, write nothing."""
        self.inner.close()

    # -- lifecycle and lock: never faulted (a store that cannot take its lock is not a fault) --

    def exists(self) -> bool:
        return self.inner.exists()

    def create(self, format_bytes: bytes) -> None:
        self.inner.create(format_bytes)

    def close(self) -> None:
        self.inner.close()

    def acquire_lock(self) -> LockHolder | None:
        return self.inner.acquire_lock()

    def release_lock(self) -> None:
        self.inner.release_lock()

    def lock_holder(self) -> LockHolder | None:
        return self.inner.lock_holder()

    def clock_ns(self) -> int:
        return self.inner.clock_ns()

    def identity(self) -> str:
        return self.inner.identity()

    # -- segments ------------------------------------------------------------

    def list_segments(self) -> list[str]:
        return self.inner.list_segments()

    def segment_size(self, name: str) -> int:
        return self.inner.segment_size(name)

    def create_segment(self, name: str, initial: bytes) -> None:
        self._data_call("write", "create_segment", self.inner.create_segment, name, initial)

    def append(self, name: str, data: bytes) -> None:
        self._data_call("write", "append", self.inner.append, name, data)

    def sync(self, name: str) -> None:
        self._plain_call("sync", "sync", self.inner.sync, name)

    def truncate(self, name: str, size: int) -> None:
        self._plain_call("sync", "truncate", self.inner.truncate, name, size)

    def seal(self, name: str) -> None:
        self._plain_call("sync", "seal", self.inner.seal, name)

    def read(self, name: str, offset: int, length: int) -> bytes:
        return self._plain_call("read", "read", self.inner.read, name, offset, length)

    def delete_segment(self, name: str) -> None:
        self._plain_call("delete", "delete_segment", self.inner.delete_segment, name)

    # -- small objects -------------------------------------------------------

    def put_object(self, key: str, data: bytes) -> None:
        # put_object is atomic by contract, so a "torn" put leaves the old object
        # (the tmp file never got renamed): it fails before doing anything.
        if self._due("put", f"put_object({key})"):
            if self.plan.mode in ("after", "crash_after"):
                self.inner.put_object(key, data)
            raise self._error(f"put_object {key}")
        self.inner.put_object(key, data)

    def get_object(self, key: str) -> bytes | None:
        return self._plain_call("read", "get_object", self.inner.get_object, key)

    def delete_object(self, key: str) -> None:
        self._plain_call("delete", "delete_object", self.inner.delete_object, key)

    def list_objects(self, prefix: str) -> list[str]:
        return self.inner.list_objects(prefix)


class ArmedBackend(FaultyBackend):
    """A FaultyBackend whose plan counts calls only from the moment it is armed.

    Why: a mount daemon makes a varying number of backend calls while it
    starts (recovery, checkpoint, group commits), so a plan counted from the
    first call could not name "the first fsync after the test's data was
    published"; arming at that moment can. ``arm()`` arms it in-process; in
    a daemon the test arms it from outside by creating the file ``arm_path``
    (checked on each call until then).
    """

    def __init__(self, inner: Backend, plan: FaultPlan, arm_path: str | None = None) -> None:
        super().__init__(inner, plan)
        self.arm_path = arm_path
        self.armed = False

    def arm(self) -> None:
        self.armed = True
        self.counts.clear()

    def _due(self, kind: str, call: str) -> bool:
        if not self.armed:
            if self.arm_path is None or not os.path.exists(self.arm_path):
                return False
            self.arm()
        return super()._due(kind, call)

"""Parent side of the crash tests: start the writer child, read its reports, recover, check.

Shared by the kill -9 campaign (tests/stress/test_store_kill9.py) and the
crash-at-every-fault-point test, so both check recovery the same way:

1. open the crashed store for writing (recovery runs and cuts the torn or
   unpublished tail);
2. fsck must be clean;
3. the head and snapshots must equal exactly the model at the last durable
   step the child reported, or at the one it was in the middle of;
4. close, reopen read-only, and see the very same state again (recovery is
   deterministic and repeatable).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.store_faults.model import MState, Scenario, match_durable, root_state
from vegafs.store import Store, StoreError

REPO = Path(__file__).resolve().parents[2]


def new_store(path: Path) -> MState:
    """Create an empty store at ``path``; return the model of its fresh state."""
    store = Store.open(path, create=True)
    try:
        return root_state(store)
    finally:
        store.close()


def fsck_problems(store: Any) -> list[str]:
    report = store.fsck()
    return [] if report.ok else list(report.problems)


class Child:
    """The writer child process, its reports, and a guaranteed kill on exit."""

    def __init__(self, store: Path, seed: int, *extra: str) -> None:
        cmd = [sys.executable, "-m", "tests.store_faults.writer_child",
               "--store", str(store), "--seed", str(seed), *extra]
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, bufsize=0)
        self.last_done = -1
        self.reported = 0  # durable steps reported
        self.ready = False
        self.ended = False
        self._buf = b""

    def _lines(self, timeout: float) -> list[str]:
        """Lines that arrived within ``timeout`` seconds ([] on timeout; EOF -> ['<eof>'])."""
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not readable:
            return []
        chunk = os.read(self.proc.stdout.fileno(), 65536)
        if not chunk:
            return ["<eof>"]
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        return [line.decode() for line in lines]

    def pump(self, until_done: int | None = None, deadline_s: float = 60.0) -> bool:
        """Read reports until ``until_done`` more durable steps were reported, or the child ends.

        Every line of a read is taken into account (a read may bring several).
        Returns True if the child is still running.
        """
        deadline = time.monotonic() + deadline_s
        target = None if until_done is None else self.reported + until_done
        while time.monotonic() < deadline:
            if not self._take(self._lines(max(0.0, deadline - time.monotonic()))):
                self.proc.wait(timeout=30)
                return False
            if target is not None and self.reported >= target:
                return True
        raise AssertionError(f"writer child made no progress for {deadline_s} s: {self.cmd}")

    def _take(self, lines: list[str]) -> bool:
        """Record what the lines report; False at end of output."""
        for line in lines:
            if line == "<eof>":
                return False
            if line == "ready":
                self.ready = True
            elif line == "end":
                self.ended = True
            elif line.startswith("done "):
                self.last_done = int(line.split()[1])
                self.reported += 1
        return True

    def kill(self) -> None:
        """SIGKILL the child, then take the reports it managed to flush before dying."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.drain()

    def drain(self) -> None:
        """Take every report still in the pipe (the child is dead: read to end of output)."""
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and self._take(self._lines(1.0)):
            pass

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")[-3000:]

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def recover_and_check(path: Path, scenario: Scenario, last_done: int, base: MState,
                      what: str, dead_writer: int | None = None) -> int:
    """Reopen a crashed store and check it (module docstring); return the matched step.

    ``dead_writer``: the pid of the killed process that held the writer lock;
    the reopen must report that it took the stale lock over from it.
    """
    store = _reopen(path, what)
    try:
        if dead_writer is not None:
            holder = store.taken_over_from
            assert holder is not None and holder.pid == dead_writer, \
                f"{what}: the stale lock of pid {dead_writer} was not taken over ({holder})"
        try:
            problems = fsck_problems(store)
        except StoreError as exc:
            raise AssertionError(f"{what}: fsck raised instead of reporting: {exc}") from exc
        assert not problems, f"{what}: fsck after recovery:\n  " + "\n  ".join(problems)
        matched = _matched(store, scenario, last_done, base, what)
        published = store.published_logseq
    finally:
        store.close()
    again = _reopen(path, what + " (second open, read-only)", read_only=True)
    try:
        assert _matched(again, scenario, last_done, base, what + " (second open)") == matched, \
            f"{what}: a second open shows another state"
        assert again.published_logseq >= published
    finally:
        again.close()
    return matched


def _reopen(path: Path, what: str, read_only: bool = False) -> Store:
    try:
        return Store.open(path, read_only=read_only)
    except StoreError as exc:
        raise AssertionError(f"{what}: the store does not reopen: {exc.code}: {exc}") from exc


def _matched(store: Any, scenario: Scenario, last_done: int, base: MState, what: str) -> int:
    try:
        return match_durable(store, scenario, last_done, base)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None

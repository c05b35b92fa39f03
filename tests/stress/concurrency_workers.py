"""The processes of the mount concurrency campaign (tests/stress/test_mount_concurrency.py).

Run as ``python -m tests.stress.concurrency_workers KIND ROOT SECONDS SEED OUT``;
each kind works under ``ROOT`` (a directory on the mount) until ``SECONDS``
have passed, then writes a JSON report to ``OUT``:

* ``git`` — a repository on the mount: edit files, ``git add -A``, ``git
  commit``, ``status``, ``log``, branch and switch back; ``git fsck --full
  --strict`` at the end and every commit in ``git log``;
* ``tar`` — extract an archive of a sample tree (modes, hard links,
  symlinks, a 1 MiB file) onto the mount, compare it with the source, tar it
  back off the mount, compare again, delete it;
* ``rename`` — a rename storm: several of these share one directory of
  ``NAMES``; each renames a random name over another, or writes a fresh
  file under a temporary name and renames it over a shared one (the atomic
  replace editors and package managers do). Every file holds one token
  (``writer:n``), so the parent can check no rename ever copied, lost half
  of, or mixed a file;
* ``reader`` — lists the storm directory and reads every name, again and again.

Every operation is timed: one that takes longer than ``OP_LIMIT`` seconds is a
failure (the issue's 10 s watchdog; an operation that never returns is caught
by the parent, which names it from the ``OUT.op`` file each worker keeps
current). An error is a failure unless POSIX allows it for that race — only
ENOENT, for a name another process renamed away in between.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.mount.helpers import GIT_ENV, make_sample_tree, manifest

OP_LIMIT = 10.0
NAMES = [f"n{i:02d}" for i in range(12)]
TOKEN = re.compile(rb"^(init|\d+):\d+\n$")

T = TypeVar("T")


class Worker:
    """Times and counts operations, keeps the failures and the POSIX-allowed errors."""

    def __init__(self, out: Path, deadline: float) -> None:
        self.out = out
        self.deadline = deadline
        self.ops = 0
        self.rounds = 0
        self.failures: list[str] = []
        self.allowed: Counter[str] = Counter()
        self.slowest = (0.0, "")
        self.extra: dict[str, Any] = {}
        self._op_fd = os.open(f"{out}.op", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def running(self) -> bool:
        return not self.failures and time.monotonic() < self.deadline

    def op(self, what: str, fn: Callable[[], T], allowed: tuple[int, ...] = ()) -> T | None:
        """Run one operation; None if it failed the way POSIX allows (``allowed`` errnos)."""
        os.pwrite(self._op_fd, what.encode().ljust(200)[:200], 0)
        start = time.monotonic()
        try:
            return fn()
        except OSError as exc:
            if exc.errno in allowed:
                self.allowed[errno.errorcode.get(exc.errno or 0, "?")] += 1
                return None
            self.failures.append(f"{what}: {exc!r}")
            return None
        except (AssertionError, subprocess.SubprocessError) as exc:
            self.failures.append(f"{what}: {exc}")
            return None
        finally:
            took = time.monotonic() - start
            self.ops += 1
            if took > self.slowest[0]:
                self.slowest = (took, what)
            if took > OP_LIMIT:
                self.failures.append(f"{what} took {took:.1f} s (limit {OP_LIMIT} s)")

    def report(self) -> None:
        data = {
            "ops": self.ops,
            "rounds": self.rounds,
            "failures": self.failures,
            "allowed": dict(self.allowed),
            "slowest": [round(self.slowest[0], 3), self.slowest[1]],
            **self.extra,
        }
        self.out.write_text(json.dumps(data))
        os.close(self._op_fd)


def tool(*cmd: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """A command that must succeed (killed past the op limit, so a wedge cannot hold the worker)."""
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=OP_LIMIT * 3
    )
    if proc.returncode != 0:
        raise AssertionError(f"exited {proc.returncode}: {proc.stderr.strip()[-1000:]}")
    return proc.stdout


def run_git(w: Worker, root: Path, rng: random.Random) -> None:
    repo = root / "repo"
    env = {**os.environ, **GIT_ENV, "HOME": str(root)}

    def git(*args: str) -> str | None:
        return w.op(f"git {args[0]}", lambda: tool("git", "-C", str(repo), *args, env=env))

    repo.mkdir()
    git("init", "-q", "-b", "main")
    commits = 0
    while w.running():
        for _ in range(rng.randint(1, 4)):
            path = repo / f"d{rng.randrange(4)}" / f"f{rng.randrange(20)}.txt"
            text = "".join(f"commit {commits} line {i}\n" for i in range(rng.randrange(1, 400)))
            w.op("write", lambda p=path, t=text: (p.parent.mkdir(exist_ok=True), p.write_text(t)))
        git("add", "-A")
        if git("commit", "-q", "--allow-empty", "-m", f"commit {commits}") is not None:
            commits += 1
        if commits % 3 == 0:
            git("status", "--porcelain")
            git("log", "--oneline", "-n", "5")
        if commits % 7 == 0:
            git("checkout", "-q", "-b", f"b{commits}")
            git("checkout", "-q", "main")
        w.rounds += 1
    git("fsck", "--full", "--strict")
    log = git("log", "--oneline")
    if log is not None and len(log.splitlines()) != commits:
        w.failures.append(f"git log shows {len(log.splitlines())} commits, {commits} were made")
    w.extra["git_commits"] = commits


def run_tar(w: Worker, root: Path, host: Path) -> None:
    src = make_sample_tree(host / "src")
    archive, back, copy = host / "src.tar", host / "back.tar", host / "back"
    tool("tar", "-C", str(src), "--format=posix", "-cf", str(archive), ".")
    want = manifest(src, times=False)
    while w.running():
        dst = root / f"x{w.rounds}"
        dst.mkdir()
        w.op("tar -x onto the mount", lambda d=dst: tool("tar", "-C", str(d), "-xpf", str(archive)))
        w.op("compare", lambda d=dst: _same(manifest(d, times=False), want, "extracted"))
        w.op("tar -c off the mount", lambda d=dst: tool("tar", "-C", str(d), "-cf", str(back), "."))
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir()
        tool("tar", "-C", str(copy), "-xpf", str(back))
        w.op("compare", lambda: _same(manifest(copy, times=False), want, "archived back"))
        w.op("rm -r", lambda d=dst: tool("rm", "-rf", str(d)))
        w.rounds += 1


def _same(got: dict[str, Any], want: dict[str, Any], what: str) -> None:
    if got != want:
        diff = sorted(k for k in got.keys() | want.keys() if got.get(k) != want.get(k))
        raise AssertionError(f"{what} tree differs from the source at {diff[:5]}")


def run_rename(w: Worker, root: Path, rng: random.Random, me: int) -> None:
    storm = root / "storm"
    made = 0

    def replace() -> None:
        tmp = storm / f".tmp-{me}"
        with open(tmp, "wb") as f:
            f.write(b"%d:%d\n" % (me, made))
            if rng.random() < 0.1:
                os.fsync(f.fileno())
        os.replace(tmp, storm / rng.choice(NAMES))

    while w.running():
        if rng.random() < 0.25:
            w.op("write + rename over", replace)
            made += 1  # the tmp name is ours alone: the token is out even if the rename failed
        else:
            a, b = rng.sample(NAMES, 2)
            w.op(
                f"rename {a} {b}",
                lambda a=a, b=b: os.rename(storm / a, storm / b),
                allowed=(errno.ENOENT,),
            )
        w.rounds += 1
    w.extra["tokens_made"] = made


def run_reader(w: Worker, root: Path) -> None:
    storm = root / "storm"

    def read(name: str) -> None:
        data = (storm / name).read_bytes()
        if not TOKEN.match(data):
            raise AssertionError(f"{name} holds {data[:60]!r}, not one whole token")

    while w.running():
        names = w.op("listdir", lambda: os.listdir(storm)) or []
        if len(set(names)) != len(names):
            w.failures.append(f"a listing repeats a name: {sorted(names)}")
        for name in names:
            if name in NAMES:
                w.op(f"read {name}", lambda n=name: read(n), allowed=(errno.ENOENT,))
            elif not name.startswith(".tmp-"):  # a renamer's file being written
                w.failures.append(f"a name nobody made: {name!r}")
        w.rounds += 1


def main(argv: list[str]) -> int:
    kind, root, seconds, seed, out = argv
    w = Worker(Path(out), time.monotonic() + float(seconds))
    rng = random.Random(f"{seed}/{kind}")
    try:
        if kind == "git":
            run_git(w, Path(root), rng)
        elif kind == "tar":
            run_tar(w, Path(root), Path(f"{out}.host"))
        elif kind.startswith("rename"):
            run_rename(w, Path(root), rng, int(kind.removeprefix("rename")))
        elif kind == "reader":
            run_reader(w, Path(root))
        else:
            raise SystemExit(f"unknown worker kind {kind!r}")
    finally:
        w.report()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

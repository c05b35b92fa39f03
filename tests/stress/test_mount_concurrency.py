"""Concurrency campaign: git, tar and a rename storm side by side on one mount.

For a bounded time, at once on one live mount (processes from
``tests/stress/concurrency_workers.py``): a ``git`` worker committing,
branching and reading its log; a ``tar`` worker extracting a sample tree onto
the mount, comparing it, archiving it back and deleting it; three renamers
storming one directory of shared names (rename one name over another, or
write a temporary file and rename it over a shared name); and a reader
listing and reading that directory throughout.

Checked: no operation fails except the way POSIX allows for these races (a
rename or open of a name another process renamed away: ENOENT); no operation
takes longer than 10 s, and none hangs (the parent names the operation a
worker is stuck in); afterwards every storm file holds exactly one whole
token, no token twice (a rename moves, it never copies) and only tokens that
were written; ``git fsck --full --strict`` is clean; the store is fsck-clean
after a clean umount, and after a remount the storm directory and the
repository are unchanged.

Quick run: 10 s of load. Full run: ``VEGAFS_CONCURRENCY_SECONDS=600 .venv/bin/python
-m pytest -m slow tests/stress/test_mount_concurrency.py -s`` (default 300 s).
``VEGAFS_CONCURRENCY_SEED`` replays the workers' random choices (the
interleaving is timing).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mount.helpers import GIT_ENV, Mount, Watchdog
from tests.mountutil import needs_fuse, run_vegafs
from tests.stress.concurrency_workers import NAMES, OP_LIMIT, TOKEN
from tests.stress.summary import Summary, campaign_summary

pytestmark = [pytest.mark.mount, needs_fuse]

REPO = Path(__file__).resolve().parents[2]
KINDS = ("git", "tar", "rename0", "rename1", "rename2", "reader")
# Past the run time, a worker may finish its last operations (each killed at
# 3 x OP_LIMIT) and git's final fsck; later than this it is stuck.
GRACE = 4 * OP_LIMIT + 30


def _storm_files(storm: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(storm.iterdir())}


def _check_storm(files: dict[str, bytes], made: dict[int, int]) -> None:
    """One whole token per file, no token twice, every token one somebody wrote."""
    assert set(files) <= set(NAMES), f"names nobody should leave behind: {set(files) - set(NAMES)}"
    tokens = list(files.values())
    assert all(TOKEN.match(t) for t in tokens), f"torn or mixed storm files: {files}"
    assert len(set(tokens)) == len(tokens), f"a rename copied a file: {files}"
    for token in tokens:
        who, n = token.strip().split(b":")
        limit = len(NAMES) if who == b"init" else made[int(who)]
        assert int(n) < limit, f"{token!r} was never written"


def _git_log(repo: Path) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.parent)}
    for args in (("fsck", "--full", "--strict"), ("log", "--oneline")):
        proc = subprocess.run(
            ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"git {args[0]} after remount: {proc.stderr[-2000:]}"
    return proc.stdout


def _start(kind: str, root: Path, work: Path, seconds: float, seed: int) -> subprocess.Popen[bytes]:
    """One worker process; its stderr goes to ``work/KIND.err``."""
    argv = [sys.executable, "-m", "tests.stress.concurrency_workers", kind, str(root)]
    with open(work / f"{kind}.err", "wb") as err:
        return subprocess.Popen(
            [*argv, str(seconds), str(seed), str(work / kind)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _run_workers(root: Path, work: Path, seconds: float, seed: int) -> dict[str, dict]:
    """Start every worker, wait for all (failing on one stuck), return their reports."""
    procs = {kind: _start(kind, root, work, seconds, seed) for kind in KINDS}
    deadline = time.monotonic() + seconds + GRACE
    try:
        while any(p.poll() is None for p in procs.values()):
            if time.monotonic() > deadline:
                stuck = {
                    k: (work / f"{k}.op").read_text().strip()
                    for k, p in procs.items()
                    if p.poll() is None
                }
                raise AssertionError(f"workers stuck (deadlock?) in: {stuck}")
            time.sleep(0.2)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
    reports = {}
    for kind, p in procs.items():
        out = work / kind
        err = (work / f"{kind}.err").read_text(errors="replace")
        assert p.returncode == 0 and out.exists(), (
            f"worker {kind} exited {p.returncode}: {err[-3000:]}"
        )
        reports[kind] = json.loads(out.read_text())
    return reports


def _campaign(tmp_path: Path, seconds: float) -> None:
    seed = int(os.environ.get("VEGAFS_CONCURRENCY_SEED", random.SystemRandom().getrandbits(32)))
    print(f"mount concurrency campaign: seed {seed}, {seconds:g} s", flush=True)
    work = tmp_path / "work"
    work.mkdir()
    m = Mount(store=tmp_path / "store", mnt=tmp_path / "mnt")
    m.start()
    reports: dict[str, dict] = {}
    with campaign_summary("mount concurrency campaign", seed) as summary:
        try:
            with Watchdog([m], seconds + GRACE + 120):
                root = m.mnt / "c"
                (root / "storm").mkdir(parents=True)
                for i, name in enumerate(NAMES):
                    (root / "storm" / name).write_bytes(b"init:%d\n" % i)
                reports = _run_workers(root, work, seconds, seed)
                _tally(summary, reports)
                failures = [f"{k}: {f}" for k, r in reports.items() for f in r["failures"]]
                summary.failures = len(failures)
                assert not failures, "\n".join(failures[:20])
                made = {
                    int(k.removeprefix("rename")): r["tokens_made"]
                    for k, r in reports.items()
                    if k.startswith("rename")
                }
                storm = _storm_files(root / "storm")
                _check_storm(storm, made)
                log = _git_log(root / "repo")
                m.stop()
                fsck = run_vegafs("fsck", "--store", m.store)
                assert fsck.returncode == 0, f"fsck after the campaign: {fsck.stdout}{fsck.stderr}"
                m.start()
                assert _storm_files(root / "storm") == storm, (
                    "the storm directory changed at remount"
                )
                assert _git_log(root / "repo") == log, "the repository changed at remount"
        finally:
            m.stop()


def _tally(summary: Summary, reports: dict[str, dict]) -> None:
    """The workers' counts in the campaign's summary."""
    allowed: dict[str, int] = {}
    for r in reports.values():
        for name, n in r["allowed"].items():
            allowed[name] = allowed.get(name, 0) + n
    summary.rounds = sum(r["rounds"] for r in reports.values())
    summary.ops = sum(r["ops"] for r in reports.values())
    summary.extra.update(
        git_commits=reports["git"].get("git_commits", 0),
        tar_rounds=reports["tar"]["rounds"],
        renames=sum(r["rounds"] for k, r in reports.items() if k.startswith("rename")),
        allowed_errors=allowed,
        slowest_op=max(r["slowest"] for r in reports.values()),
    )


@pytest.mark.timeout(300)
def test_mount_concurrency_quick(tmp_path: Path) -> None:
    """CI: 10 s of git + tar + rename storm + reader at once."""
    _campaign(tmp_path, 10.0)


@pytest.mark.slow
@pytest.mark.timeout(0)
def test_mount_concurrency_full(tmp_path: Path) -> None:
    """The full run: VEGAFS_CONCURRENCY_SECONDS (default 300)."""
    _campaign(tmp_path, float(os.environ.get("VEGAFS_CONCURRENCY_SECONDS", 300)))

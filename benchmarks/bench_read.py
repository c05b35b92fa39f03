"""Interleaved A/B of a cold sequential read: vegafs source trees side by side, plus baselines.

Run:  .venv/bin/python benchmarks/bench_read.py [--size 1GiB] [--rounds 5] \
          [--tree base=/path/to/other/checkout] [--tree this=.] [--no-baselines]

``bench_mount.py`` compares one vegafs with pyfuse3's ``passthroughfs.py`` and a
local directory across every workload; this script answers a narrower
question, "did this change make cold reads faster?", on a shared machine
where wall-clock figures swing by 2-3x from one minute to the next. Each
``--tree NAME=DIR`` is a vegafs source tree (a git worktree of main, say)
mounted with this virtualenv's Python and ``PYTHONPATH=DIR``; every round
reads the same file cold (remount, ``drop_caches``) on every target in turn,
so a noisy minute hurts all alike. Besides MiB/s it prints the daemon's CPU
seconds per read (user + system, from ``/proc``), which other helpers' load
changes far less than wall time: compare those first. Extra mount options
for a tree follow its directory, e.g. ``--tree "ra4m=. --read-ahead 4096"``.
Needs root (``drop_caches``, FUSE mounts); always unmounts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_mount import Target, fetch_passthroughfs, read_file, write_file
from common import MiB, parse_size


def vegafs_target(base: Path, name: str, spec: str) -> Target:
    """A vegafs mount of source tree ``spec`` ("DIR [mount options...]")."""
    tree, *options = spec.split()
    env = ["env", f"PYTHONPATH={Path(tree).resolve()}", sys.executable, "-m", "vegafs"]
    mnt = base / f"{name}-mnt"
    return Target(
        name,
        mnt,
        argv=[*env, "mount", str(mnt), "--store", str(base / f"{name}-store"), "--foreground", *options],
        umount_argv=[*env, "umount", str(mnt)],
        log=base / f"{name}.log",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=1024 * MiB, help="file size (default 1GiB)")
    parser.add_argument("--rounds", type=int, default=5, help="cold reads of each target (default 5)")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=DIR[ OPTS]",
                        help="a vegafs source tree to mount (repeatable; default: this one)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the local dir and passthroughfs.py")
    parser.add_argument("--dir", type=Path, default=None, help="where to work (default: a temp dir)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_read: needs root (drop_caches, FUSE mounts)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="vegafs-bench-read-", dir=args.dir))
    targets: list[Target] = []
    try:
        if not args.no_baselines:
            script = fetch_passthroughfs(base / "pyfuse3-sdist")
            (base / "pt-src").mkdir()
            targets += [
                Target("local dir", base / "local"),
                Target("passthroughfs.py", base / "pt-mnt",
                       argv=[sys.executable, str(script), str(base / "pt-src"), str(base / "pt-mnt")],
                       log=base / "passthroughfs.log"),
            ]
        here = str(Path(__file__).resolve().parent.parent)
        for spec in args.tree or [f"vegafs={here}"]:
            name, _, rest = spec.partition("=")
            targets.append(vegafs_target(base, name, rest))
        for t in targets:
            t.start()
            write_file(t.root / "seq.bin", args.size, seed=1)
        rates: dict[str, list[float]] = {t.name: [] for t in targets}
        cpu: dict[str, list[float]] = {t.name: [] for t in targets}
        for n in range(args.rounds):
            for t in targets:
                t.cold()
                before = t.cpu_seconds()
                start = time.perf_counter()
                got = read_file(t.root / "seq.bin")
                seconds = time.perf_counter() - start
                assert got == args.size, f"{t.name}: read {got} of {args.size} bytes"
                rates[t.name].append(args.size / MiB / seconds)
                cpu[t.name].append(t.cpu_seconds() - before)
                print(f"round {n + 1}  {t.name:<18} {rates[t.name][-1]:>8,.0f} MiB/s  "
                      f"daemon CPU {cpu[t.name][-1]:.2f} s  load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"\n== cold sequential read of {args.size // MiB} MiB, medians of {args.rounds} interleaved rounds")
        for t in targets:
            print(f"{t.name:<18} {statistics.median(rates[t.name]):>8,.0f} MiB/s  "
                  f"(min {min(rates[t.name]):,.0f}, max {max(rates[t.name]):,.0f})  "
                  f"daemon CPU {statistics.median(cpu[t.name]):.2f} s")
    finally:
        for t in targets:
            t.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

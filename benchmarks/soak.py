"""Soak a vegafs mount: ingest many small files and many GiB, watch the daemon's memory, then gc.

Run:  .venv/bin/python benchmarks/soak.py [--files 1000000] [--bytes 10GiB] [--json]

What it does, on a fresh store in a temp dir (``--dir`` to choose the disk):

1. mounts the store (``vegafs mount --foreground``, default caches) and starts
   a sampler that reads the daemon's ``VmRSS`` from ``/proc/PID/status`` every
   ``--sample`` seconds;
2. writes ``--files`` small files (``--file-size`` bytes each, all distinct)
   through the mount, 1,000 per directory, and notes the RSS after each
   quarter of them (memory must not grow with the number of files written:
   the summary gives the slope in bytes per file from the first quarter on).
   Before each of these samples it asks the kernel to drop its dentry and
   inode caches (``echo 2 > /proc/sys/vm/drop_caches``, root only; off with
   ``--no-drop-caches``): the daemon holds per-inode state for what the kernel
   holds, which otherwise is every file written (the kernel keeps inodes
   until memory pressure), so without it the sample measures the kernel's
   cache, not the daemon's own growth;
3. deletes and rewrites the second half of the small files ``--churn`` times
   (the live tree keeps its size, so RSS must not climb: no leak per file);
4. writes ``--bytes`` of large files (``--big-file-size``, 1 GiB each, every 128 KiB block
   distinct, so dedup cannot shrink the test), capped by what ``df`` allows
   (keeping ``--reserve`` free);
5. ``vegafs sync``; measures the store's bytes on disk; deletes the large
   files but one and 90% of the small-file directories; ``vegafs sync``;
   ``vegafs gc`` through the daemon; measures the store again;
6. prints the RSS samples as a table and a one-line summary (``--json``: the
   summary as JSON, for ``tests/stress/test_soak.py``).

``--time-limit`` stops the ingest phases early (what was done is reported).
The mount is always unmounted, also on error or Ctrl-C (``tests.mountutil.mounted``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from common import GiB, MiB, parse_size

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.mountutil import mounted, run_vegafs  # noqa: E402 — the repository's own mount helper

BLOCK = 128 * 1024  # the store's block size: stamping each block defeats dedup
PER_DIR = 1000


def rss_bytes(pid: int) -> int:
    """The resident set of a process (``VmRSS`` in ``/proc/PID/status``), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def tree_bytes(path: Path) -> int:
    """Bytes a directory tree occupies on disk (allocated blocks, so holes do not count)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # a segment removed while we walked
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


@dataclass
class Progress:
    """What the ingest has done so far; the sampler reads it from its thread."""

    phase: str = "start"
    files: int = 0
    bytes: int = 0


@dataclass
class Sample:
    """One RSS sample."""

    seconds: float
    phase: str
    files: int
    bytes: int
    rss: int


@dataclass
class Sampler:
    """Samples a daemon's RSS every ``interval`` seconds in a thread, until stopped."""

    pid: int
    progress: Progress
    interval: float
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _start: float = field(default_factory=time.monotonic)

    def take(self) -> Sample:
        """Record one sample now (also called at the checkpoints)."""
        p = self.progress
        s = Sample(
            round(time.monotonic() - self._start, 1), p.phase, p.files, p.bytes, rss_bytes(self.pid)
        )
        self.samples.append(s)
        return s

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.take()

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def small_content(i: int, size: int) -> bytes:
    """File i's content: distinct per file, ``size`` bytes."""
    head = b"small file %d\n" % i
    return (head * (size // len(head) + 1))[:size]


def write_small_files(
    root: Path, start: int, stop: int, size: int, progress: Progress, deadline: float
) -> int:
    """Write files ``start..stop-1`` (1,000 per directory); returns how many were written."""
    for i in range(start, stop):
        if time.monotonic() > deadline:
            return i - start
        d = root / f"d{i // PER_DIR:05d}"
        if i % PER_DIR == 0 or not d.exists():
            d.mkdir(exist_ok=True)
        fd = os.open(d / f"f{i:07d}", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        try:
            os.write(fd, small_content(i, size))
        finally:
            os.close(fd)
        progress.files += 1
        progress.bytes += size
    return stop - start


def write_big_files(
    root: Path, total: int, file_size: int, progress: Progress, deadline: float
) -> int:
    """Write ``total`` bytes as ``file_size`` files of distinct blocks; returns the bytes written."""
    block = bytearray(os.urandom(BLOCK))
    written = 0
    n = 0
    while written < total and time.monotonic() < deadline:
        size = min(file_size, total - written)
        with open(root / f"big{n:04d}", "wb", buffering=0) as f:
            for off in range(0, size, MiB):
                piece = bytearray()
                for b in range(0, min(MiB, size - off), BLOCK):
                    block[:16] = (written + off + b).to_bytes(16, "little")
                    piece += block
                f.write(piece[: min(MiB, size - off)])
                progress.bytes += min(MiB, size - off)
                if time.monotonic() > deadline:
                    size = off + MiB
                    break
        written += size
        n += 1
    return written


def drop_kernel_caches(enabled: bool) -> bool:
    """Make the kernel evict its (clean) dentries and inodes, so it FORGETs them.

    Dentries and inodes only (``2``), not the page cache: other processes on
    the machine lose nothing but cached lookups. False if not allowed (not root).
    """
    if not enabled:
        return False
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
    except OSError:
        return False
    return True


def settled_rss(sampler: Sampler, drop_caches: bool) -> int:
    """The daemon's RSS once it has handled the FORGETs a cache drop sends.

    The kernel sends them asynchronously, so poll (with a deadline) until two
    samples half a second apart agree within 1 MiB.
    """
    if not drop_kernel_caches(drop_caches):
        return sampler.take().rss
    last = sampler.take().rss
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sampler.take().rss
        if abs(now - last) < MiB:
            return now
        last = now
    return last


def churn(
    root: Path,
    half: int,
    args: argparse.Namespace,
    progress: Progress,
    sampler: Sampler,
    deadline: float,
) -> list[int]:
    """Delete the second half of the small files and write it again, ``--churn`` times.

    The live tree is the same size after each round, so the daemon's RSS must
    come back to the same level: a leak per file written shows as a climb.
    Returns the RSS after each round.
    """
    progress.phase = "churn"
    out = []
    for _ in range(args.churn):
        if time.monotonic() > deadline:
            break
        for d in sorted(root.iterdir()):
            if int(d.name[1:]) * PER_DIR >= half:
                shutil.rmtree(d)
        write_small_files(root, half, args.files, args.file_size, progress, deadline)
        out.append(settled_rss(sampler, args.drop_caches))
    return out


def vegafs(*args: str) -> str:
    """Run a vegafs command and return its stdout; raise with its stderr if it failed."""
    result = run_vegafs(*args, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"vegafs {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def soak(base: Path, args: argparse.Namespace) -> dict[str, object]:
    """The whole soak on a fresh store under ``base``; returns the summary."""
    store, mnt = base / "store", base / "mnt"
    deadline = time.monotonic() + args.time_limit
    free = shutil.disk_usage(base).free
    big_total = max(0, min(args.bytes, free - args.reserve - 2 * args.files * 4096))
    progress = Progress()
    summary: dict[str, object] = {
        "files_wanted": args.files,
        "bytes_wanted": args.bytes,
        "bytes_allowed_by_df": big_total,
    }
    with mounted(store, mnt) as proc, Sampler(proc.pid, progress, args.sample) as sampler:
        summary["rss_at_mount"] = sampler.take().rss
        root = mnt / "small"
        root.mkdir()
        half = args.files // 2
        progress.phase = "small files"
        summary["kernel_caches_dropped"] = drop_kernel_caches(args.drop_caches)
        started = time.monotonic()
        done, quarters, written = 0, [], []
        for q in range(1, 5):
            done += write_small_files(
                root, done, args.files * q // 4, args.file_size, progress, deadline
            )
            quarters.append(settled_rss(sampler, args.drop_caches))
            written.append(done)
        small_seconds = time.monotonic() - started
        summary["files_at_quarters"] = written
        summary["rss_at_quarters"] = quarters
        summary["rss_slope_bytes_per_file"] = round(
            (quarters[-1] - quarters[0]) / max(written[-1] - written[0], 1), 1
        )
        summary["rss_after_half_files"] = quarters[1]
        summary["rss_after_all_files"] = quarters[-1]
        summary["files_written"] = done
        summary["files_per_second"] = round(done / small_seconds, 1)
        summary["rss_churn"] = churn(root, half, args, progress, sampler, deadline)
        progress.phase = "large files"
        (mnt / "big").mkdir()
        started = time.monotonic()
        big = write_big_files(mnt / "big", big_total, args.big_file_size, progress, deadline)
        summary["big_bytes_written"] = big
        summary["big_mib_per_second"] = round(big / MiB / max(time.monotonic() - started, 1e-9), 1)
        summary["rss_after_big"] = sampler.take().rss
        progress.phase = "sync"
        vegafs("sync", str(mnt))
        summary["store_bytes_full"] = tree_bytes(store)
        progress.phase = "delete"
        bigs = sorted((mnt / "big").iterdir())
        for path in bigs[1:]:
            path.unlink()
        dirs = sorted(root.iterdir())
        for d in dirs[: len(dirs) * 9 // 10]:
            shutil.rmtree(d)
        vegafs("sync", str(mnt))
        summary["store_bytes_after_delete"] = tree_bytes(store)
        progress.phase = "gc"
        started = time.monotonic()
        gc = json.loads(vegafs("gc", "--store", str(store), "--json"))
        summary["gc_seconds"] = round(time.monotonic() - started, 1)
        summary["gc_report"] = gc
        summary["store_bytes_after_gc"] = tree_bytes(store)
        summary["rss_after_gc"] = sampler.take().rss
    summary["rss_peak"] = max(s.rss for s in sampler.samples)
    summary["samples"] = [asdict(s) for s in sampler.samples]
    return summary


def print_report(summary: dict[str, object]) -> None:
    """The RSS table and the summary lines, in MiB."""

    def mib(key: str) -> str:
        return f"{int(summary[key]) / MiB:,.1f} MiB"  # type: ignore[call-overload]

    print(f"{'seconds':>8}  {'phase':<12} {'files':>9} {'written':>12} {'daemon RSS':>12}")
    for s in summary["samples"]:  # type: ignore[attr-defined]
        print(
            f"{s['seconds']:>8.1f}  {s['phase']:<12} {s['files']:>9,} "
            f"{s['bytes'] / MiB:>8,.0f} MiB {s['rss'] / MiB:>8,.1f} MiB"
        )
    print(
        f"files written: {summary['files_written']:,} ({summary['files_per_second']} files/s); "
        f"large data: {int(summary['big_bytes_written']) / GiB:.2f} GiB "  # type: ignore[call-overload]
        f"({summary['big_mib_per_second']} MiB/s; df allowed {mib('bytes_allowed_by_df')})"
    )
    quarters = ", ".join(
        f"{f:,}: {r / MiB:,.1f} MiB"
        for f, r in zip(summary["files_at_quarters"], summary["rss_at_quarters"], strict=True)
    )  # type: ignore[call-overload]
    print(
        f"daemon RSS by files written: {quarters}; slope {summary['rss_slope_bytes_per_file']} "
        f"bytes/file (kernel dentry/inode caches dropped first: {summary['kernel_caches_dropped']})"
    )
    print(
        f"daemon RSS: at mount {mib('rss_at_mount')}, after half the files "
        f"{mib('rss_after_half_files')}, after all {mib('rss_after_all_files')}, after the large "
        f"data {mib('rss_after_big')}, after gc {mib('rss_after_gc')}; peak {mib('rss_peak')}"
    )
    churn = ", ".join(f"{r / MiB:,.1f}" for r in summary["rss_churn"])  # type: ignore[attr-defined]
    print(
        f"daemon RSS after each churn round (delete and rewrite half the small files): {churn} MiB"
    )
    print(
        f"store on disk: {mib('store_bytes_full')} full, {mib('store_bytes_after_delete')} after "
        f"deleting, {mib('store_bytes_after_gc')} after gc ({summary['gc_seconds']} s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--files", type=int, default=1_000_000, help="small files to write")
    parser.add_argument("--file-size", type=parse_size, default=1024, help="bytes per small file")
    parser.add_argument("--bytes", type=parse_size, default=10 * GiB, help="large data to write")
    parser.add_argument(
        "--big-file-size", type=parse_size, default=GiB, help="size of each large file"
    )
    parser.add_argument(
        "--churn", type=int, default=2, help="rounds of deleting and rewriting half the small files"
    )
    parser.add_argument("--reserve", type=parse_size, default=4 * GiB, help="disk left free")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=6 * 3600.0,
        help="stop the ingest phases after this many seconds",
    )
    parser.add_argument(
        "--no-drop-caches",
        dest="drop_caches",
        action="store_false",
        help="do not drop the kernel's dentry/inode caches before RSS checkpoints",
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the temp store goes")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vegafs-soak-", dir=args.dir) as tmp:
        summary = soak(Path(tmp), args)
    if args.json:
        print(json.dumps(summary))
    else:
        print_report(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

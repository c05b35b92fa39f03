"""Benchmark a vegafs mount against pyfuse3's passthroughfs.py and a plain local directory.

Run:  .venv/bin/python benchmarks/bench_mount.py [--quick]

Three targets are measured in the same run, on the same disk, workload by
workload (interleaved, so a noisy minute hurts all three alike):

* ``local dir``        — a directory on the disk under the temp dir;
* ``passthroughfs.py`` — pyfuse3's own example (the issue's baseline), fetched
  from the sdist of the installed pyfuse3 with ``pip download`` into a temp
  dir (never committed), mounted over a local directory with its default
  options;
* ``vegafs``           — ``vegafs mount --foreground`` on a fresh store.

"cold" means: FUSE targets remounted (their daemons' caches gone) and the
kernel's caches dropped (``echo 3 > /proc/sys/vm/drop_caches``, needs root).
Both mounts are always unmounted, also on error or Ctrl-C. A workload that
fails on a target prints FAIL in its cell and the error below the table.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from common import MiB, Row, Timer, parse_size, timed

MOUNT_TIMEOUT = 60.0


def fetch_passthroughfs(dest: Path) -> Path:
    """``examples/passthroughfs.py`` from the installed pyfuse3's sdist, kept in a cache.

    ``pip download`` of the sdist prepares its metadata, which builds Cython
    from source (minutes on 2 cores), so the extracted script is kept in
    ``$XDG_CACHE_HOME/vegafs-bench`` by version and reused by later runs.
    """
    pyfuse3_version = version("pyfuse3")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vegafs-bench"
    cached = cache / f"passthroughfs-{pyfuse3_version}.py"
    if not cached.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             f"pyfuse3=={pyfuse3_version}", "-d", str(dest)],
            check=True,
        )
        (sdist,) = dest.glob("pyfuse3-*.tar.gz")
        member = f"pyfuse3-{pyfuse3_version}/examples/passthroughfs.py"
        with tarfile.open(sdist) as tar:
            source = tar.extractfile(member)
            assert source is not None, f"{member} missing from {sdist.name}"
            cache.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(".part")
            partial.write_bytes(source.read())
            partial.rename(cached)
    dest.mkdir(parents=True, exist_ok=True)
    script = dest / "passthroughfs.py"
    shutil.copyfile(cached, script)
    return script


def drop_caches() -> None:
    """Flush dirty data and drop the kernel's page, dentry and inode caches."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


@dataclass
class Target:
    """One place to run workloads in: a local directory, or a FUSE daemon's mountpoint."""

    name: str
    root: Path
    argv: list[str] | None = None  # foreground daemon command; None for the local dir
    umount_argv: list[str] | None = None  # a clean unmount command to try first
    log: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    last_cpu: float | None = field(default=None, repr=False)  # daemon CPU s of the last timed()

    @property
    def is_fuse(self) -> bool:
        return self.argv is not None

    def start(self) -> None:
        if not self.is_fuse:
            self.root.mkdir(parents=True, exist_ok=True)
            return
        assert self.argv is not None and self.log is not None
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not os.path.ismount(self.root):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not mounted after {MOUNT_TIMEOUT} s; see {self.log}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Unmount cleanly if possible, by force otherwise; always reap the daemon."""
        if not self.is_fuse or self.proc is None:
            return
        proc, self.proc = self.proc, None
        if self.umount_argv and proc.poll() is None and os.path.ismount(self.root):
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(self.umount_argv, capture_output=True, timeout=120)
        if os.path.ismount(self.root):
            subprocess.run(["fusermount3", "-u", str(self.root)], capture_output=True)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        subprocess.run(["fusermount3", "-u", "-z", str(self.root)], capture_output=True)

    def cold(self) -> None:
        """Forget everything cached: remount the daemon, drop the kernel caches."""
        if self.is_fuse:
            self.stop()
            self.start()
        drop_caches()

    def ensure_alive(self) -> None:
        """Restart a daemon an earlier workload killed, so one failure does not sink the rest."""
        if self.is_fuse and (self.proc is None or self.proc.poll() is not None):
            self.stop()
            self.start()

    def cpu_seconds(self) -> float:
        """CPU time the daemon's threads used so far (0 for the local dir or a dead daemon).

        From ``/proc/PID/task/*/schedstat`` (nanoseconds, every thread: worker
        threads hash and store too), not the 10 ms ticks of ``/proc/PID/stat``.
        """
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                total += int((task / "schedstat").read_text().split()[0])
        return total / 1e9

    @contextlib.contextmanager
    def timed(self) -> Iterator[Timer]:
        """``common.timed`` that also records the daemon's CPU time in ``last_cpu``.

        Why: on a shared machine wall-clock ratios are noisy; the daemon's CPU
        per workload is the steadier figure for comparing two versions.
        """
        before = self.cpu_seconds()
        with timed() as tm:
            yield tm
        self.last_cpu = self.cpu_seconds() - before if self.is_fuse else None

    def memory_kib(self) -> tuple[int, int] | None:
        """The daemon's (VmRSS, VmHWM) in KiB."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.split()[0] if value.split() else "0"
        return int(fields["VmRSS"]), int(fields["VmHWM"])


def unique_mib(buf: bytearray, i: int) -> bytearray:
    """Make MiB number ``i`` distinct from every other (stamps every 64 KiB), so dedup cannot help."""
    stamp = i.to_bytes(8, "little")
    for off in range(0, len(buf), 65536):
        buf[off : off + 8] = stamp
    return buf


def write_file(path: Path, size: int, seed: int) -> None:
    """Write ``size`` bytes of incompressible, non-repeating data, then fsync."""
    buf = bytearray(random.Random(seed).randbytes(MiB))
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        for i in range(size // MiB):
            os.write(fd, unique_mib(buf, i))
        os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    total = 0
    try:
        while n := len(os.read(fd, MiB)):
            total += n
    finally:
        os.close(fd)
    return total


def random_reads(path: Path, size: int, seconds: float) -> float:
    """4 KiB preads at random aligned offsets for ``seconds``; returns IOPS."""
    rng = random.Random(7)
    pages = size // 4096
    fd = os.open(path, os.O_RDONLY)
    ops = 0
    try:
        start = time.perf_counter()
        while True:
            for _ in range(1000):
                os.pread(fd, 4096, rng.randrange(pages) * 4096)
            ops += 1000
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return ops / elapsed
    finally:
        os.close(fd)


@contextlib.contextmanager
def dir_fd(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


@dataclass
class Result:
    """A table row: one value per target (None = failed), and how to read them."""

    name: str
    unit: str
    target: str
    lower_is_better: bool = False
    compare: bool = True  # False: a figure to report, where a ratio means nothing (RSS)
    values: dict[str, float | None] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # daemon CPU seconds, FUSE targets
    errors: list[str] = field(default_factory=list)

    def row(self, baseline: str = "passthroughfs.py") -> Row | None:
        """vegafs against ``baseline`` (a target name), as the shared Row computes ratios."""
        base, vf = self.values.get(baseline), self.values.get("vegafs")
        if vf is None or not self.compare:
            return None
        return Row(self.name, base, vf, self.unit, self.target, self.lower_is_better)


class Bench:
    """Runs each workload on every target in turn and collects the results."""

    def __init__(
        self,
        targets: list[Target],
        base: Path,
        quick: bool,
        seq_size: int,
        files: int,
        round_no: int,
        only: re.Pattern[str] | None = None,
    ) -> None:
        self.targets = targets
        self.only = only  # run just the workloads whose name this matches (``--only``)
        # The sequential file differs from round to round: the same bytes again
        # would be deduplicated by vegafs's store (every chunk already there), so
        # rounds after the first measured writes that never reach the disk.
        self.round_no = round_no
        self.base = base
        self.quick = quick
        self.seq_size = seq_size
        self.files = files
        self.results: list[Result] = []

    def each(self, result: Result, measure: Callable[[Target], float], fuse_only: bool = False) -> None:
        if self.only is not None and not self.only.search(result.name):
            return
        self.results.append(result)
        for t in self.targets:
            if fuse_only and not t.is_fuse:
                continue
            try:
                t.ensure_alive()
                t.last_cpu = None
                result.values[t.name] = measure(t)
                if t.last_cpu is not None:
                    result.cpu[t.name] = t.last_cpu
            except Exception as exc:  # a failed workload is reported, the run goes on
                result.values[t.name] = None
                result.errors.append(f"{t.name}: {type(exc).__name__}: {exc}")
            shown = result.values[t.name]
            cpu = f"  (daemon CPU {result.cpu[t.name]:.2f} s)" if t.name in result.cpu else ""
            print(f"  {result.name:<34} {t.name:<18} {'FAIL' if shown is None else f'{shown:,.2f}'} "
                  f"{result.unit}{cpu}", flush=True)

    def run(self) -> None:
        size = self.seq_size

        def seq_write(t: Target) -> float:
            with t.timed() as tm:
                write_file(t.root / "seq.bin", size, seed=1 + 1000 * self.round_no)
            return size / MiB / tm.seconds

        def seq_read(t: Target) -> float:
            t.cold()
            with t.timed() as tm:
                n = read_file(t.root / "seq.bin")
            assert n == size, f"read {n} of {size} bytes"
            return size / MiB / tm.seconds

        label = f"{size // MiB} MiB"
        self.each(Result(f"seq write {label} + fsync", "MiB/s", ">= 0.8x py"), seq_write)
        self.each(Result(f"seq read {label}, cold", "MiB/s", ">= 1.5x py"), seq_read)

        rand_size = 64 * MiB
        seconds = 1.0 if self.quick else 3.0

        def rand_read(t: Target) -> float:
            write_file(t.root / "rand.bin", rand_size, seed=2)
            read_file(t.root / "rand.bin")  # warm: the data is in the page cache now
            return random_reads(t.root / "rand.bin", rand_size, seconds)

        self.each(Result("4 KiB random reads, buffered", "IOPS", ">= 25x py"), rand_read)

        names = [f"f{i:06d}" for i in range(self.files)]

        def create(t: Target) -> float:
            d = t.root / "many"
            shutil.rmtree(d, ignore_errors=True)  # left by an earlier round that failed
            d.mkdir()
            with dir_fd(d) as fd, t.timed() as tm:
                for name in names:
                    os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
            return len(names) / tm.seconds

        def stat_cold(t: Target) -> float:
            t.cold()
            with dir_fd(t.root / "many") as fd, t.timed() as tm:
                for name in names:
                    os.stat(name, dir_fd=fd)
            return len(names) / tm.seconds

        def unlink(t: Target) -> float:
            with dir_fd(t.root / "many") as fd, t.timed() as tm:
                for name in names:
                    os.unlink(name, dir_fd=fd)
            os.rmdir(t.root / "many")
            return len(names) / tm.seconds

        n = f"{self.files:,}"
        self.each(Result(f"create {n} files", "ops/s", ">= 2.7x py"), create)
        self.each(Result(f"stat {n} files, cold", "ops/s", ">= 3x py"), stat_cold)
        self.each(Result(f"unlink {n} files", "ops/s", ">= 1.6x py"), unlink)

        archive = self.base / "usr-include.tar"
        if not archive.exists():  # made once, reused by every round
            subprocess.run(["tar", "-C", "/usr", "-cf", str(archive), "include"], check=True)
        with tarfile.open(archive) as tar:
            entries = sum(1 for _ in tar)

        def extract(t: Target) -> float:
            shutil.rmtree(t.root / "tarx", ignore_errors=True)  # left by an earlier round that failed
            (t.root / "tarx").mkdir()
            with t.timed() as tm:
                subprocess.run(["tar", "-C", str(t.root / "tarx"), "-xf", str(archive)], check=True)
            return tm.seconds

        def find(t: Target) -> float:
            t.cold()
            with t.timed() as tm:
                out = subprocess.run(["find", str(t.root / "tarx")], check=True, capture_output=True)
            found = out.stdout.count(b"\n") - 1
            assert found == entries, f"find saw {found} of {entries} entries"
            return tm.seconds

        def rm_rf(t: Target) -> float:
            with t.timed() as tm:
                subprocess.run(["rm", "-rf", str(t.root / "tarx")], check=True)
            return tm.seconds

        mib = archive.stat().st_size / MiB
        self.each(Result(f"tar -x /usr/include ({entries:,}, {mib:.0f} MiB)", "s", ">= 2.4x py", True),
                  extract)
        self.each(Result("find of that tree, cold", "s", ">= 1.7x py", True), find)
        self.each(Result("rm -rf of that tree", "s", ">= 1.3x py", True), rm_rf)

        calls = 20_000 if self.quick else 200_000

        def stat_cached(t: Target) -> float:
            path = str(t.root / "seq.bin")
            os.stat(path)
            with t.timed() as tm:
                for _ in range(calls):
                    os.stat(path)
            return tm.seconds / calls * 1e6

        self.each(Result("os.stat of a cached file", "µs", "<= 2.5 µs", True), stat_cached)

        def rss(t: Target) -> float:
            mem = t.memory_kib()
            if mem is None:
                raise RuntimeError("daemon gone")
            print(f"    {t.name}: VmRSS {mem[0] / 1024:.1f} MiB, peak VmHWM {mem[1] / 1024:.1f} MiB")
            return mem[0] / 1024

        self.each(Result("daemon RSS at the end", "MiB", "report", compare=False), rss, fuse_only=True)


def median_results(rounds: list[list[Result]]) -> list[Result]:
    """One Result per workload: the median of each target's successful rounds (None if all failed)."""
    merged = []
    for same in zip(*rounds, strict=True):
        first = same[0]
        out = Result(first.name, first.unit, first.target, first.lower_is_better, first.compare)
        for name in first.values:
            ok: list[float] = [v for r in same if (v := r.values.get(name)) is not None]
            out.values[name] = statistics.median(ok) if ok else None
            cpus = [r.cpu[name] for r in same if name in r.cpu]
            if cpus:
                out.cpu[name] = statistics.median(cpus)
        out.errors = [e for r in same for e in r.errors]
        merged.append(out)
    return merged


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "FAIL"
    if unit == "µs":
        return f"{value:.2f} µs"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.2f} {unit}"


def print_results(results: list[Result], rounds: int) -> None:
    """workload | local dir | passthroughfs.py | vegafs | vegafs/passthrough | vegafs/local | issue target."""
    header = ("workload", "local dir", "passthroughfs.py", "vegafs", "vegafs/passthrough", "vegafs/local",
              "issue target")
    lines = [header]
    for r in results:
        ratios = []
        for baseline in ("passthroughfs.py", "local dir"):
            row = r.row(baseline)
            ratio = row.ratio if row is not None else None
            ratios.append("-" if ratio is None else f"{ratio:.2f}x")
        local = fmt(r.values["local dir"], r.unit) if "local dir" in r.values else "-"
        lines.append((
            r.name,
            local,
            fmt(r.values.get("passthroughfs.py"), r.unit),
            fmt(r.values.get("vegafs"), r.unit),
            *ratios,
            r.target,
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    medians = f", medians of {rounds} rounds" if rounds > 1 else ""
    print(f"\n== vegafs mount benchmark (ratio > 1: vegafs better than the baseline{medians})")
    for n, line in enumerate(lines):
        print(" | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip())
        if n == 0:
            print("-+-".join("-" * w for w in widths))
    print("\ndaemon CPU per workload, all threads (s; the steadier figure on a shared machine):")
    for r in results:
        if r.cpu:
            cells = "   ".join(f"{name} {r.cpu[name]:.2f}" for name in ("passthroughfs.py", "vegafs") if name in r.cpu)
            print(f"  {r.name:<36} {cells}")
    for r in results:
        for err in r.errors:
            print(f"error in '{r.name}': {err}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB sequential size, shorter loops")
    parser.add_argument("--size", type=parse_size, help="sequential file size (default 1GiB; quick 256MiB)")
    parser.add_argument("--files", type=int, default=10_000, help="files for create/stat/unlink")
    parser.add_argument("--dir", type=Path, default=None, help="where to work (default: a temp dir)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every workload; the table shows medians")
    parser.add_argument("--only", type=re.compile, default=None,
                        help="run only the workloads whose name matches this regex (e.g. 'seq write|tar')")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_mount: needs root (drop_caches, and FUSE mounts as in the tests)", file=sys.stderr)
        return 2
    seq_size = args.size or (256 * MiB if args.quick else 1024 * MiB)
    base = Path(tempfile.mkdtemp(prefix="vegafs-bench-", dir=args.dir))
    targets: list[Target] = []
    try:
        script = fetch_passthroughfs(base / "pyfuse3-sdist")
        (base / "pt-src").mkdir()
        vegafs = [sys.executable, "-m", "vegafs"]
        targets = [
            Target("local dir", base / "local"),
            Target("passthroughfs.py", base / "pt-mnt",
                   argv=[sys.executable, str(script), str(base / "pt-src"), str(base / "pt-mnt")],
                   log=base / "passthroughfs.log"),
            Target("vegafs", base / "vegafs-mnt",
                   argv=[*vegafs, "mount", str(base / "vegafs-mnt"), "--store", str(base / "vegafs-store"),
                         "--foreground"],
                   umount_argv=[*vegafs, "umount", str(base / "vegafs-mnt")],
                   log=base / "vegafs.log"),
        ]
        for t in targets:
            t.start()
        print(f"pyfuse3 {version('pyfuse3')}, {os.cpu_count()} CPUs, work dir {base}", flush=True)
        rounds = []
        for n in range(args.repeat):
            print(f"round {n + 1} of {args.repeat}", flush=True)
            bench = Bench(targets, base, args.quick, seq_size, args.files, n, args.only)
            bench.run()
            rounds.append(bench.results)
        print_results(median_results(rounds), args.repeat)
    finally:
        for t in targets:
            t.stop()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

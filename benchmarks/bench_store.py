"""Store benchmark: ingest, dedup, compression, open, fsck and gc, as ratios to a baseline.

Run from the repository root:

    .venv/bin/python benchmarks/bench_store.py               # ~20 s (64 MiB, 1,000,000 records)
    .venv/bin/python benchmarks/bench_store.py --size 1GiB   # the issue's figure

Every figure is measured in this run, on this disk (a temporary directory
under ``--dir``), next to its baseline:

* **fresh ingest**: ``put_chunk`` of 128 KiB blocks of never-seen data +
  ``set_blocks`` every 8 MiB + ``publish``, against the raw baseline: the same
  bytes written sequentially into one file + ``fsync`` (and a second baseline
  that also fsyncs every segment size, as the store does). Target >= 0.5x.
* **dedup re-ingest**: the same bytes again into another file; every chunk is
  already stored. Baseline: the fresh-ingest rate. Target >= 2x.
* **zstd**: a store with compression on vs off, ingesting compressible
  (text-like) data: throughput ratio, and stored bytes (the space ratio).
* **open**: a store with ``--records`` log records (``--inodes`` files
  created, then small metadata transactions) opened after a clean close (a
  checkpoint): target < 1 s; then with ``index/`` deleted (rebuilt from the
  log) — the time a lost index costs.
* **fsck** and **gc** of the ingest store (``gc`` after overwriting half the
  file and deleting the dedup copy, so there is garbage to reclaim; the store
  size before and after is printed).

Data is generated before any clock starts: each block is a counter followed
by a slice of a pool (random, or log-like text for the zstd rows), so every
block is distinct. fsck is compared with reading + blake3-hashing the store's
bytes (the least a verifier must do), gc with copying the live bytes + fsync.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import blake3  # noqa: E402
from common import MiB, Row, parse_size, print_table, timed  # noqa: E402

from vegafs.store import BLOCK_SIZE, Store  # noqa: E402
from vegafs.store import store as store_module  # noqa: E402

BATCH = 64  # blocks per set_blocks transaction (8 MiB)


def _blocks(total: int, pool: bytes) -> list[bytes]:
    """``total`` bytes of 128 KiB blocks, each a counter and a slice of ``pool``: all distinct.

    Materialized before any timing starts, so generating data costs neither
    the baseline nor the store anything.
    """
    body = BLOCK_SIZE - 8
    return [n.to_bytes(8, "little") + pool[(n * 7919) % (len(pool) - body):][:body]
            for n in range(total // BLOCK_SIZE)]


def fresh_blocks(total: int, seed: int) -> list[bytes]:
    """Incompressible data (a random pool)."""
    return _blocks(total, random.Random(seed).randbytes(4 * MiB))


def text_blocks(total: int, seed: int) -> list[bytes]:
    """Compressible, log-like data (lines of numbers and words; zstd gets about 2-3x)."""
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9)))
             for _ in range(500)]
    lines = [b"%d %s %s %s\n" % (rng.randrange(10**6), rng.choice(words), rng.choice(words),
                                  rng.choice(words)) for _ in range(200_000)]
    return _blocks(total, b"".join(lines))


def raw_write(path: Path, blocks: list[bytes], sync_every: int = 0) -> tuple[float, int]:
    """Baseline: sequential write of the blocks into one file, then fsync. (seconds, bytes)

    ``sync_every`` > 0 also fsyncs after every that many bytes — what the store
    does when it seals a segment, which lets the disk work while data is still
    being written (one fsync of a whole GiB at the end cannot).
    """
    written = 0
    with timed() as t:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for block in blocks:
                os.write(fd, block)
                written += len(block)
                if sync_every and written % sync_every == 0:
                    os.fsync(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
    return t.seconds, written


def ingest(store: Store, name: bytes, blocks: list[bytes]) -> tuple[float, int, int]:
    """Write ``blocks`` as a new file ``name`` in the root; publish. (seconds, bytes, ino)"""
    written = 0
    with timed() as t:
        ino = store.alloc_ino()
        with store.transaction() as txn:
            txn.create_inode(ino, mode=0o100644, uid=0, gid=0, rdev=0, target=None,
                             times_ns=0)
            txn.link(1, name, ino)
            txn.update(ino, nlink=1)
        pending: dict[int, bytes | None] = {}
        for index, block in enumerate(blocks):
            pending[index] = store.put_chunk(block)
            written += len(block)
            if len(pending) == BATCH:
                with store.transaction() as txn:
                    txn.set_blocks(ino, pending, written)
                pending = {}
        if pending:
            with store.transaction() as txn:
                txn.set_blocks(ino, pending, written)
        store.publish()
    return t.seconds, written, ino


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


def read_and_hash(path: Path) -> float:
    """Baseline for fsck: read every byte of the store and blake3 it (all cores).

    That is the least any verifier of a content-addressed store must do. An
    untimed first pass warms the page cache, as it is for the fsck that follows.
    """
    for file in _files(path):
        with open(file, "rb") as f:
            while f.read(8 * MiB):
                pass
    with timed() as t:
        for file in _files(path):
            digest = blake3.blake3(max_threads=blake3.blake3.AUTO)
            with open(file, "rb") as f:
                while block := f.read(8 * MiB):
                    digest.update(block)
    return t.seconds


def copy_live(src: Path, dst: Path, nbytes: int) -> float:
    """Baseline for gc: copy ``nbytes`` (the live data) of the store into one file + fsync."""
    with timed() as t:
        left = nbytes
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for file in _files(src):
                with open(file, "rb") as f:
                    while left > 0 and (block := f.read(min(8 * MiB, left))):
                        os.write(fd, block)
                        left -= len(block)
            os.fsync(fd)
        finally:
            os.close(fd)
    dst.unlink()
    return t.seconds


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def rate(nbytes: int, seconds: float) -> float:
    return nbytes / MiB / seconds if seconds > 0 else float("inf")


def bench_ingest(work: Path, size: int, repeat: int) -> list[Row]:
    data = fresh_blocks(size, 1)
    raw_runs, chunked_runs, fresh_runs = [], [], []
    store = None
    for _run in range(repeat):  # alternate baselines and store; report medians
        os.sync()  # nobody pays for the previous run's dirty pages
        raw_s, raw_n = raw_write(work / "raw.bin", data)
        raw_runs.append(raw_s)
        (work / "raw.bin").unlink()
        os.sync()
        chunked_runs.append(raw_write(work / "raw.bin", data, store_module.SEGMENT_TARGET)[0])
        (work / "raw.bin").unlink()
        if store is not None:
            store.close()
            shutil.rmtree(work / "ingest")
        os.sync()
        store = Store.open(work / "ingest", create=True)
        fresh_s, n, ino = ingest(store, b"fresh", data)
        fresh_runs.append(fresh_s)
    assert store is not None
    raw_s, fresh_s = statistics.median(raw_runs), statistics.median(fresh_runs)
    chunked_s = statistics.median(chunked_runs)
    try:
        os.sync()
        dedup_s, _, _ = ingest(store, b"again", data)
        rows = [
            Row("fresh ingest", rate(raw_n, raw_s), rate(n, fresh_s), "MiB/s", ">= 0.50x"),
            Row(f"fresh ingest (vs fsync every {store_module.SEGMENT_TARGET // MiB} MiB)",
                rate(raw_n, chunked_s), rate(n, fresh_s), "MiB/s", "(measure)"),
            Row("dedup re-ingest (vs fresh)", rate(n, fresh_s), rate(n, dedup_s), "MiB/s",
                ">= 2.00x"),
        ]
        # garbage for gc: overwrite the first half of "fresh" with new data, drop "again"
        half = (size // 2) // BLOCK_SIZE * BLOCK_SIZE
        again = _ino(store, b"again")
        with store.transaction() as txn:
            txn.unlink(1, b"again")
            txn.delete_inode(again)
        pending = {i: store.put_chunk(b) for i, b in enumerate(fresh_blocks(half, 2))}
        with store.transaction() as txn:
            txn.set_blocks(ino, pending, n)
        store.publish()
        before = dir_bytes(work / "ingest")
        hash_s = read_and_hash(work / "ingest")
        with timed() as t_fsck:
            report = store.fsck()
        assert report.ok, report.problems
        copy_s = copy_live(work / "ingest", work / "copy.bin", n)
        with timed() as t_gc:
            store.gc()
        after = dir_bytes(work / "ingest")
        rows += [
            Row(f"fsck ({before / MiB:.0f} MiB store)", hash_s, t_fsck.seconds, "s",
                "(vs read+blake3)", lower_is_better=True),
            Row(f"gc ({before / MiB:.0f} -> {after / MiB:.0f} MiB)", copy_s, t_gc.seconds,
                "s", "(vs copy live+fsync)", lower_is_better=True),
        ]
    finally:
        store.close()
    return rows


def _ino(store: Store, name: bytes) -> int:
    ino = store.lookup(1, name)
    assert ino is not None
    return ino


def bench_compression(work: Path, size: int, repeat: int) -> list[Row]:
    data = text_blocks(size, 3)
    rates: dict[str, list[float]] = {"off": [], "zstd": []}
    stored: dict[str, int] = {}
    for _run in range(repeat):  # alternate off and on; report medians
        for label, options in (("off", {}), ("zstd", {"compression": "zstd"})):
            path = work / f"comp-{label}"
            os.sync()
            store = Store.open(path, create=True, **options)
            try:
                seconds, n, _ = ingest(store, b"text", data)
            finally:
                store.close()
            rates[label].append(rate(n, seconds))
            stored[label] = dir_bytes(path)
            shutil.rmtree(path)
    return [
        Row("zstd ingest, text (vs off)", statistics.median(rates["off"]),
            statistics.median(rates["zstd"]), "MiB/s", "(measure)"),
        Row("zstd stored bytes (vs off)", stored["off"] / MiB, stored["zstd"] / MiB, "MiB",
            "(measure)", lower_is_better=True),
    ]


def _median_open(path: Path, read_only: bool, repeat: int) -> float:
    """Median wall time of open + (untimed) close over ``repeat`` runs."""
    runs = []
    for _ in range(repeat):
        with timed() as t:
            store = Store.open(path, read_only=read_only)
        store.close()
        runs.append(t.seconds)
    return statistics.median(runs)


def bench_open(work: Path, records: int, inodes: int, repeat: int) -> list[Row]:
    """A history of ``records`` records over a state of ``inodes`` files.

    The files are created 100 per transaction; the rest of the records are
    one-field updates (mtime), the commonest metadata record there is.
    """
    path = work / "records"
    store = Store.open(path, create=True)
    inos: list[int] = []
    written = 0
    with timed() as t_write:
        while len(inos) < inodes:
            with store.transaction() as txn:
                for _ in range(min(100, inodes - len(inos))):
                    ino = store.alloc_ino()
                    txn.create_inode(ino, mode=0o100644, uid=0, gid=0, rdev=0, target=None,
                                     times_ns=0)
                    txn.link(1, b"f%d" % ino, ino)
                    txn.update(ino, nlink=1)
                    inos.append(ino)
            written += 1
        for n in range(records - written):
            with store.transaction() as txn:
                txn.update(inos[n % len(inos)], mtime_ns=n)
    store.close()
    t_open = _median_open(path, read_only=False, repeat=repeat)
    shutil.rmtree(path / "index")
    with timed() as t_rebuild:
        store = Store.open(path)
    store.close()
    t_again = _median_open(path, read_only=True, repeat=repeat)
    return [
        Row(f"write {records:,} records", None, records / t_write.seconds, "rec/s", ""),
        Row(f"open, {records:,} rec/{inodes:,} files, checkpoint", None, t_open, "s",
            "< 1 s"),
        Row("open, index deleted (rebuild)", None, t_rebuild.seconds, "s", "(measure)"),
        Row("open read-only after the rebuild", None, t_again, "s", "< 1 s"),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="vegafs store benchmark (ratios to a baseline)")
    ap.add_argument("--size", default="64MiB", help="bytes to ingest (e.g. 1GiB); default 64MiB")
    ap.add_argument("--records", type=int, default=1_000_000,
                    help="log records for the open benchmark (default 1,000,000)")
    ap.add_argument("--inodes", type=int, default=100_000,
                    help="files in the state of the open benchmark (default 100,000)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of raw write vs fresh ingest (alternated) and of each open; "
                         "the table shows medians (default 3)")
    ap.add_argument("--dir", default=None, help="where to work (default: the system temp dir)")
    args = ap.parse_args(argv)
    size = parse_size(args.size) // BLOCK_SIZE * BLOCK_SIZE
    work = Path(tempfile.mkdtemp(prefix="vegafs-bench-store-", dir=args.dir))
    try:
        print(f"store benchmark: size={size / MiB:.0f} MiB records={args.records:,} dir={work}",
              flush=True)
        rows = bench_ingest(work, size, args.repeat)
        rows += bench_compression(work, min(size, 256 * MiB), args.repeat)
        rows += bench_open(work, args.records, args.inodes, args.repeat)
        print_table("vegafs store", rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the S3 backend: sequential ingest on s3:// against the local backend.

Run:  .venv/bin/python benchmarks/bench_s3.py [--size 256] [--file-mib 16] [--repeat 3]

A moto standalone server is started on loopback (and always stopped). The
workload goes through the store API exactly as the filesystem drives it:
files of ``--file-mib`` MiB of random (incompressible, never deduplicated)
data, 128 KiB blocks put with ``put_chunk``, one transaction per file and a
``publish`` after each, ``--size`` MiB in all. Three times are reported:

* ``local``: the local backend, through the last publish and close;
* ``s3 ingest``: s3:// through the last publish (durable in the local journal,
  the first durability level; uploads run in the background meanwhile);
* ``s3 +sync``: s3:// until the bucket has everything (``drain``, the level
  ``vegafs sync`` waits for) and close.

The drain time after the last publish shows how much upload was left when
the ingest ended (uploads run during the ingest, not after it). Target
(issue 6): ``s3 +sync`` >= 0.5x of local throughput with the server on loopback.
Medians over ``--repeat`` rounds (the shared VM is noisy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vegafs.store import BLOCK_SIZE, ROOT_INO, Store  # noqa: E402
from vegafs.store.s3backend import S3Backend  # noqa: E402


def _ingest(store: Store, total: int, file_size: int) -> None:
    for n in range(total // file_size):
        data = os.urandom(file_size)
        blocks = {
            i // BLOCK_SIZE: store.put_chunk(data[i : i + BLOCK_SIZE])
            for i in range(0, file_size, BLOCK_SIZE)
        }
        ino = store.alloc_ino()
        with store.transaction() as t:
            t.create_inode(ino, mode=stat.S_IFREG | 0o644, uid=0, gid=0, times_ns=1)
            t.update(ino, nlink=1)
            t.link(ROOT_INO, f"f{n}".encode(), ino)
            t.set_blocks(ino, blocks, file_size)
        store.publish()


def _server() -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
            return proc, url
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="MiB ingested per round")
    ap.add_argument("--file-mib", type=int, default=16, help="MiB per file (one publish each)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for var, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ.setdefault(var, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    total, file_size = args.size << 20, args.file_mib << 20
    proc, url = _server()
    work = Path(tempfile.mkdtemp(prefix="bench_s3."))
    local_t: list[float] = []
    ingest_t: list[float] = []
    sync_t: list[float] = []
    try:
        for r in range(args.repeat):
            t0 = time.perf_counter()
            with Store.open(work / f"local{r}", create=True) as s:
                _ingest(s, total, file_size)
            local_t.append(time.perf_counter() - t0)

            backend = S3Backend(f"s3://bench/r{r}", endpoint_url=url, cache_dir=work / f"cache{r}")
            t0 = time.perf_counter()
            s = Store.open(backend, create=True)
            _ingest(s, total, file_size)
            ingest_t.append(time.perf_counter() - t0)
            s.close()  # publishes, drains (the bucket has everything), gives the lease up
            sync_t.append(time.perf_counter() - t0)
            shutil.rmtree(work / f"local{r}")
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    mib = total / (1 << 20)
    local, ingest, synced = (statistics.median(x) for x in (local_t, ingest_t, sync_t))
    print(f"sequential ingest, {mib:.0f} MiB in {args.file_mib} MiB files, median of {args.repeat}")
    print(f"  local          {local:7.2f} s  {mib / local:8.1f} MiB/s")
    print(f"  s3 ingest      {ingest:7.2f} s  {mib / ingest:8.1f} MiB/s  ratio {local / ingest:.2f}x")
    print(f"  s3 +sync       {synced:7.2f} s  {mib / synced:8.1f} MiB/s  ratio {local / synced:.2f}x")
    print(f"  drain after the last publish: {synced - ingest:.2f} s (uploads overlap the ingest)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

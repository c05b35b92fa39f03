"""Benchmark the S3 backend: sequential ingest and a source tarball on s3:// against local.

Run:  .venv/bin/python benchmarks/bench_s3.py [--size 256] [--file-mib 16] [--repeat 3]
                                              [--tar-src /usr/include | --tar-src ""]

A moto standalone server is started on loopback (and always stopped). Every
round runs each workload on both backends, interleaved (the shared VM is
noisy; medians are reported):

* **sequential ingest** through the store API exactly as the filesystem
  drives it: files of ``--file-mib`` MiB of random (incompressible, never
  deduplicated) data, 128 KiB blocks put with ``put_chunk``, one transaction
  per file and a ``publish`` after each, ``--size`` MiB in all. ``local``
  runs through the last publish and close; ``s3 ingest`` through the last
  publish (durable in the local journal, the first durability level; uploads
  run in the background meanwhile); ``s3 +sync`` until the bucket has
  everything (``drain``, what ``vegafs sync`` waits for) and close.
* **source tarball**: a tar of ``--tar-src`` (default /usr/include, made once
  in the temp dir) extracted with ``tar -xf`` onto a real ``vegafs mount`` of
  a fresh store, local and s3://; ``extract`` is until tar exits, ``+sync``
  until ``vegafs sync`` returns (s3: the bucket has everything).
* **moto's ceiling**: plain boto3 ``put_object`` of ``--size`` MiB in
  ``--file-mib`` MiB objects to the same server: no s3:// number that waits
  for the bucket can beat it, so compare ``s3 +sync`` with it too.

The drain time after the last publish shows how much upload was left when
the ingest ended (uploads run during the ingest, not after it). Target
(issue 6): >= 0.5x of local throughput with the server on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vegafs.store import BLOCK_SIZE, ROOT_INO, Store  # noqa: E402
from vegafs.store.s3backend import CHECKSUMS, S3Backend  # noqa: E402


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


def _ceiling(url: str, total: int, file_size: int) -> float:
    """Seconds for plain boto3 PUTs of ``total`` bytes in ``file_size`` objects (moto's ceiling)."""
    client = boto3.client("s3", endpoint_url=url, config=Config(**CHECKSUMS))
    bucket = "ceiling"
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
    t0 = time.perf_counter()
    for n in range(total // file_size):
        client.put_object(Bucket=bucket, Key=f"k{n}", Body=os.urandom(file_size))
    took = time.perf_counter() - t0
    for n in range(total // file_size):
        client.delete_object(Bucket=bucket, Key=f"k{n}")
    return took


def _vegafs(*args: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        [sys.executable, "-m", "vegafs", *map(str, args)],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=600,
    )


@contextlib.contextmanager
def _mounted(location: str | Path, mnt: Path, env: dict[str, str]) -> Iterator[None]:
    """``vegafs mount`` (daemonized: returns once mounted); always unmounted again."""
    mnt.mkdir()
    _vegafs("mount", mnt, "--store", location, env=env)
    try:
        yield
    finally:
        try:
            _vegafs("umount", mnt, env=env)
        except subprocess.SubprocessError:
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
            raise


def _tar(location: str | Path, mnt: Path, tarball: Path, env: dict[str, str]) -> tuple[float, float]:
    """(seconds until ``tar -xf`` exits, until ``vegafs sync`` returns) on a fresh mount."""
    with _mounted(location, mnt, env):
        t0 = time.perf_counter()
        subprocess.run(["tar", "-xf", str(tarball), "-C", str(mnt)], check=True, timeout=600)
        extracted = time.perf_counter() - t0
        _vegafs("sync", mnt, env=env)
        return extracted, time.perf_counter() - t0


def _line(label: str, seconds: float, mib: float, base: float | None, note: str = "") -> str:
    ratio = f"  ratio {base / seconds:.2f}x" if base is not None else ""
    return f"  {label:<15}{seconds:7.2f} s  {mib / seconds:8.1f} MiB/s{ratio}{note}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="MiB ingested per round")
    ap.add_argument("--file-mib", type=int, default=16, help="MiB per file (one publish each)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--tar-src", default="/usr/include", help="tree for the source-tarball workload ('' skips it)"
    )
    args = ap.parse_args()
    for var, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench")):
        os.environ.setdefault(var, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    total, file_size = args.size << 20, args.file_mib << 20
    proc, url = _server()
    work = Path(tempfile.mkdtemp(prefix="bench_s3."))
    times: dict[str, list[float]] = {}

    def note(key: str, seconds: float) -> None:
        times.setdefault(key, []).append(seconds)

    tarball = work / "src.tar"
    tar_mib = 0.0
    if args.tar_src:
        subprocess.run(["tar", "-cf", str(tarball), "-C", args.tar_src, "."], check=True)
        tar_mib = tarball.stat().st_size / (1 << 20)
    try:
        for r in range(args.repeat):
            t0 = time.perf_counter()
            with Store.open(work / f"local{r}", create=True) as s:
                _ingest(s, total, file_size)
            note("local", time.perf_counter() - t0)
            shutil.rmtree(work / f"local{r}")

            backend = S3Backend(f"s3://bench/r{r}", endpoint_url=url, cache_dir=work / f"cache{r}")
            t0 = time.perf_counter()
            s = Store.open(backend, create=True)
            _ingest(s, total, file_size)
            note("ingest", time.perf_counter() - t0)
            s.close()  # publishes, drains (the bucket has everything), gives the lease up
            note("sync", time.perf_counter() - t0)
            shutil.rmtree(work / f"cache{r}")

            note("ceiling", _ceiling(url, total, file_size))

            if args.tar_src:
                env = {**os.environ, "XDG_CACHE_HOME": str(work / "xdg")}
                extract, synced = _tar(work / f"tarlocal{r}", work / f"mnt-l{r}", tarball, env)
                note("tar local", extract)
                note("tar local sync", synced)
                env.update(AWS_ENDPOINT_URL_S3=url, VEGAFS_S3_CACHE=str(work / f"tarcache{r}"))
                extract, synced = _tar(f"s3://bench/tar{r}", work / f"mnt-s{r}", tarball, env)
                note("tar s3", extract)
                note("tar s3 sync", synced)
                for d in (f"tarlocal{r}", f"tarcache{r}"):
                    shutil.rmtree(work / d, ignore_errors=True)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    mib = total / (1 << 20)
    local = med["local"]
    print(f"sequential ingest, {mib:.0f} MiB in {args.file_mib} MiB files, median of {args.repeat}")
    print(_line("local", local, mib, None))
    print(_line("s3 ingest", med["ingest"], mib, local, "   (published = in the local journal)"))
    print(_line("s3 +sync", med["sync"], mib, local, "   (everything in the bucket)"))
    print(f"  drain after the last publish: {med['sync'] - med['ingest']:.2f} s")
    print(_line("moto PUT", med["ceiling"], mib, local, "   (plain boto3 put_object: the ceiling)"))
    print(f"  s3 +sync reaches {med['ceiling'] / med['sync']:.2f}x of moto's plain PUT throughput")
    if args.tar_src:
        print(f"source tarball: tar -xf of {args.tar_src} ({tar_mib:.0f} MiB) onto a mount, "
              f"median of {args.repeat}")
        print(_line("local extract", med["tar local"], tar_mib, None))
        print(_line("local +sync", med["tar local sync"], tar_mib, None))
        print(_line("s3 extract", med["tar s3"], tar_mib, med["tar local"]))
        print(_line("s3 +sync", med["tar s3 sync"], tar_mib, med["tar local sync"],
                    "   (ratio against local +sync)"))
    for key, values in times.items():
        print(f"  # {key}: " + " ".join(f"{v:.2f}" for v in values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Several processes on one mount at once: the single-threaded daemon must keep them apart.

The daemon serves every request on one trio thread and hands hashing and
chunk writes to worker threads, so interleaved requests from different
processes are where buffers could mix. Each worker process writes its own
files in odd-sized pieces while others append records to one shared
O_APPEND log and a reader re-reads finished files; afterwards every file and
every log record must be exactly what its writer wrote — before and after a
remount.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.mount.helpers import Mount, sha256_file
from tests.mountutil import needs_fuse

pytestmark = [pytest.mark.mount, needs_fuse]

WORKERS = 4
FILES_PER_WORKER = 12
RECORD = 64

# argv: root worker-number files-per-worker. Prints "name sha256" per file it finished.
WORKER = r"""
import hashlib, os, random, sys
root, w, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(w)
log = os.open(os.path.join(root, "shared.log"), os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
for n in range(count):
    size = rng.choice([1, 4095, 131072, 131073, rng.randrange(1, 700_000)])
    data = hashlib.sha256(b"%d/%d" % (w, n)).digest() * (size // 32 + 1)
    data = data[:size]
    name = "w%d-%03d" % (w, n)
    fd = os.open(os.path.join(root, name), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    pos = 0
    while pos < size:
        step = rng.randrange(1, 200_000)
        os.write(fd, data[pos:pos + step])
        pos += step
    os.close(fd)
    record = (b"worker %d file %d " % (w, n)).ljust(63, b".") + b"\n"
    assert os.write(log, record) == len(record)
    print(name, hashlib.sha256(data).hexdigest(), flush=True)
os.close(log)
"""

# argv: root. Reads every finished file named on stdin and prints its sha256.
READER = r"""
import hashlib, os, sys
root = sys.argv[1]
for line in sys.stdin:
    name = line.split()[0]
    with open(os.path.join(root, name), "rb") as f:
        print(name, hashlib.sha256(f.read()).hexdigest(), flush=True)
"""


@pytest.mark.timeout(180)
def test_parallel_writers_appenders_and_a_reader(vmount: Mount) -> None:
    root = vmount.mnt / "par"
    root.mkdir()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(root), str(w), str(FILES_PER_WORKER)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(WORKERS)
    ]
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    expected: dict[str, str] = {}
    try:
        assert reader.stdin is not None
        for proc in workers:  # the reader re-reads each file as soon as it is finished
            assert proc.stdout is not None
            for line in proc.stdout:
                name, digest = line.split()
                expected[name] = digest
                reader.stdin.write(line)
                reader.stdin.flush()
        reader.stdin.close()
        read_back = dict(line.split() for line in reader.stdout or [])
        assert [proc.wait(timeout=60) for proc in workers] == [0] * WORKERS
        assert reader.wait(timeout=60) == 0
    finally:
        for proc in [*workers, reader]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
    assert len(expected) == WORKERS * FILES_PER_WORKER
    assert read_back == expected, "a concurrent reader saw different bytes than were written"
    _check(root, expected)
    vmount.remount()
    _check(root, expected)


def _check(root: Path, expected: dict[str, str]) -> None:
    for name, digest in expected.items():
        assert sha256_file(root / name) == digest, name
    log = (root / "shared.log").read_bytes()
    assert len(log) == RECORD * WORKERS * FILES_PER_WORKER, "O_APPEND records lost or overlapped"
    records = [log[i : i + RECORD] for i in range(0, len(log), RECORD)]
    want = {
        (b"worker %d file %d " % (w, n)).ljust(63, b".") + b"\n"
        for w in range(WORKERS)
        for n in range(FILES_PER_WORKER)
    }
    assert set(records) == want, "an O_APPEND record was torn or interleaved"

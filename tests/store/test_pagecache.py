"""The local backend keeps only a window behind the tail of a segment in the page cache.

Measured with util-linux's ``fincore`` (what the kernel really holds), on a
real file: without the window every appended byte stays cached.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vegafs.store import LocalBackend
from vegafs.store.pagecache import KEEP, STEP

MiB = 1 << 20


def resident(path: Path) -> int:
    """Bytes of ``path`` in the page cache."""
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.split()[0])


@pytest.mark.parametrize("finish", ["sync", "seal"])
def test_a_synced_segment_keeps_only_its_tail_cached(tmp_path: Path, finish: str) -> None:
    fs_type = subprocess.run(
        ["stat", "-f", "-c", "%T", str(tmp_path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    if fs_type == "tmpfs":
        pytest.skip("tmpfs pages cannot be dropped: they are the file")
    backend = LocalBackend(tmp_path / "store")
    backend.create(b"format")
    backend.create_segment("seg-0", b"header")
    blocks = [os.urandom(MiB) for _ in range(4)]
    total = KEEP + 4 * STEP
    for i in range(total // MiB):
        backend.append("seg-0", blocks[i % 4])
    getattr(backend, finish)("seg-0")
    path = tmp_path / "store" / "segments" / "seg-0"
    assert resident(path) <= KEEP + 4096
    # Nothing is lost by dropping pages: every byte reads back.
    for i in range(total // MiB):
        assert backend.read("seg-0", len(b"header") + i * MiB, MiB) == blocks[i % 4]
    backend.close()

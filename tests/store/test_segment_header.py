"""A segment header's fields outside the hash chain are checked against its name.

Bytes 10-19 of a header (reserved u16, generation u32, seq u32) are not
covered by any hash: ``prev_hash`` is checked against the segment before and
the records against the chain, but a flipped bit in these went unnoticed by
open and fsck (hostile-input case 392). They must equal 0 and what the
segment's name says.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vegafs.store import Store, StoreError
from vegafs.store.records import SEGMENT_HEADER

ROOT = 1
FILE = 0o100644


def _store_with_files(path: Path) -> Path:
    """A closed store with a few published files (and a head index); its last segment."""
    with Store.open(path, create=True) as store:
        for i in range(5):
            h = store.put_chunk(b"data %d" % i)
            ino = store.alloc_ino()
            with store.transaction() as t:
                t.create_inode(ino, mode=FILE, uid=0, gid=0, times_ns=i)
                t.link(ROOT, b"f%d" % i, ino)
                t.update(ino, nlink=1)
                t.set_blocks(ino, {0: h}, 6)
            store.publish()
    return sorted((path / "segments").iterdir())[-1]


@pytest.mark.parametrize("offset", range(10, 20))
@pytest.mark.parametrize("with_index", [True, False])
def test_a_flipped_header_byte_is_damage(tmp_path: Path, offset: int, with_index: bool) -> None:
    assert SEGMENT_HEADER.size > 19
    segment = _store_with_files(tmp_path / "s")
    if not with_index:  # the whole log is replayed: the header is read for its chain
        for f in (tmp_path / "s" / "index").iterdir():
            f.unlink()
    raw = bytearray(segment.read_bytes())
    raw[offset] ^= 0x10
    segment.write_bytes(raw)
    with pytest.raises(StoreError, match=f"segment {segment.name} .*(reserved|generation)"):
        Store.open(tmp_path / "s")
    with Store.open(tmp_path / "s", read_only=True, repair=True) as store:  # as `vegafs fsck`
        report = store.fsck()
    assert not report.ok
    assert any(segment.name in p and ("reserved" in p or "generation" in p) for p in report.problems)

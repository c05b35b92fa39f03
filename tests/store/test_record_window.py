"""gc reads the records it copies through one window: the same records as one read each."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from vegafs.store import Store
from vegafs.store.records import RecordWindow, read_record_at


@pytest.mark.parametrize("window", [4096, 1 << 20])
def test_a_window_reads_what_a_read_per_record_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    monkeypatch.setattr(RecordWindow, "WINDOW", window)
    rng = random.Random(5)
    store = Store.open(tmp_path / "s", create=True)
    # Sizes around the window: tiny, crossing its end, larger than it.
    for size in [
        1,
        100,
        4000,
        4096,
        5000,
        9000,
        131072,
        *(rng.randrange(1, 131073) for _ in range(60)),
    ]:
        store.put_chunk(rng.randbytes(size))
    store.publish()
    locs = sorted(loc for _h, loc in store._chunks.items())
    segments = store._segments
    reader = RecordWindow(store.backend)
    for loc in locs:
        name, offset = segments[loc >> 40], loc & ((1 << 40) - 1)
        assert reader.read(name, offset) == read_record_at(store.backend, name, offset, 1 << 18)
    # A locator past the end of the segment is an I/O error, as with one read each.
    with pytest.raises(OSError, match="short read"):
        reader.read(segments[-1], store.backend.segment_size(segments[-1]) + 10)
    store.close()

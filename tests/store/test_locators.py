"""View locators: saved pieces leave memory, reads cross them as if they were there."""

from __future__ import annotations

import bisect
import random
from pathlib import Path

from vegafs.store.headindex import HeadIndex
from vegafs.store.locators import PIECE, ViewLocators


def _fill(meta: ViewLocators, model: list[tuple[int, int]], n: int, rng: random.Random) -> None:
    seq = model[-1][0] if model else 0
    for _ in range(n):
        seq += rng.randrange(1, 4)
        loc = rng.randrange(1 << 50)
        meta.add(seq, loc)
        model.append((seq, loc))


def _agrees(meta: ViewLocators, model: list[tuple[int, int]], rng: random.Random) -> None:
    seqs = [s for s, _ in model]
    assert len(meta) == len(model) and list(meta.entries()) == model
    for probe in [0, seqs[-1], seqs[-1] + 5, *rng.sample(range(seqs[-1]), 200)]:
        assert meta.bisect(probe) == bisect.bisect_right(seqs, probe)
    for _ in range(20):
        lo = rng.randrange(len(model))
        hi = rng.randrange(lo, len(model) + 1)
        assert list(meta.entries(lo, hi)) == model[lo:hi]


def test_saved_pieces_leave_memory_and_are_read_back(tmp_path: Path) -> None:
    rng = random.Random(5)
    meta, model = ViewLocators(), []
    base = HeadIndex(tmp_path / "head.sqlite", read_only=False)
    _fill(meta, model, 2 * PIECE + 123, rng)
    base.write({"meta": meta.changes(False)}, b"")  # never saved: every piece
    meta.saved(base)
    offset, logseqs, _ = meta._mem
    assert offset == 2 * PIECE and len(logseqs) == 123  # only the partial piece stays
    _agrees(meta, model, rng)
    _fill(meta, model, PIECE, rng)  # the partial piece fills and a new one starts
    whole, rows, _ = meta.changes(False)
    assert not whole and [k for k, _ in rows] == [2, 3]
    base.write({"meta": (whole, rows, [])}, b"")
    meta.saved(base)
    assert meta._mem[0] == 3 * PIECE
    _agrees(meta, model, rng)
    again = ViewLocators.from_rows(base.items("meta"), base)  # a writer's open
    assert again._mem[0] == 3 * PIECE
    _agrees(again, model, rng)
    in_memory = ViewLocators.from_rows(base.items("meta"))  # a follower's copy
    assert in_memory._mem[0] == 0
    _agrees(in_memory, model, rng)
    again.detach()  # a whole new index is written: every entry back in memory
    assert again._mem[0] == 0 and again.changes(False)[0]
    base.close()
    _agrees(again, model, rng)

"""Locators of the records view replay needs (TXN, ROLLBACK), in logseq order.

A view (a snapshot, ``view_at``) is the generation's base state plus the
TXN and ROLLBACK records up to its logseq, so the store keeps each such
record's (logseq, locator): 16 bytes a record, two or three records a small
file written, until gc. Kept whole in memory that grew the writer's RSS by
~35 bytes for every file ever written (issue 5: flat RSS).

So once the head index (:mod:`vegafs.store.headindex`, table ``meta``) holds
them, in pieces of :data:`PIECE` entries (the piece's logseqs, then its
locators, native u64), memory keeps only the entries of the last, partial
piece and what was added since (at most ``PIECE`` plus a flush's worth),
the first logseq of every saved piece (8 bytes a piece, for the search),
and :data:`CACHED_PIECES` pieces read back. Views are rare; they read the
pieces they cross.

Threads: the writer appends under the store's lock; readers (views, from
any thread) take a snapshot of ``_mem`` (offset, logseqs, locators), which a
flush replaces in one assignment, and read saved pieces under this object's
lock.
"""

from __future__ import annotations

import bisect
import threading
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vegafs.store.headindex import HeadIndex

#: Entries per row of the head index's ``meta`` table.
PIECE = 1 << 16
#: Saved pieces kept decoded (1 MiB each).
CACHED_PIECES = 2
TABLE = "meta"


def _decode(raw: bytes) -> tuple[array, array]:
    half = len(raw) // 2
    if len(raw) % 16:
        raise ValueError("head index: a piece of view locators is malformed")
    return array("Q", raw[:half]), array("Q", raw[half:])


class ViewLocators:
    """(logseq, locator) of every TXN/ROLLBACK record of the generation, append-only."""

    def __init__(self) -> None:
        # (index of the first entry in memory, their logseqs, their locators):
        # entries before the offset are in the base, in whole pieces.
        self._mem: tuple[int, array, array] = (0, array("Q"), array("Q"))
        self._firsts = array("Q")  # first logseq of each piece no longer in memory
        #: Entries the head index holds (-1: none, these arrays were never saved).
        self.saved_len = -1
        self._base: HeadIndex | None = None
        self._pieces: OrderedDict[int, tuple[array, array]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        offset, logseqs, _locs = self._mem
        return offset + len(logseqs)

    def add(self, logseq: int, loc: int) -> None:
        _offset, logseqs, locs = self._mem
        locs.append(loc)  # first: a reader sizes by the logseqs
        logseqs.append(logseq)

    # -- reads -------------------------------------------------------------------

    def _piece(self, k: int) -> tuple[array, array]:
        """Saved piece ``k``, decoded (from the small cache, or read)."""
        with self._lock:
            piece = self._pieces.get(k)
            if piece is not None:
                self._pieces.move_to_end(k)
                return piece
            raw = self._base.get(TABLE, k) if self._base is not None else None
            if raw is None:
                raise ValueError(f"head index: piece {k} of the view locators is missing")
            piece = _decode(raw)
            self._pieces[k] = piece
            while len(self._pieces) > CACHED_PIECES:
                self._pieces.popitem(last=False)
            return piece

    def bisect(self, logseq: int) -> int:
        """The index of the first entry with a logseq above ``logseq`` (bisect_right)."""
        offset, logseqs, _locs = self._mem
        if not offset or (logseqs and logseqs[0] <= logseq):
            return offset + bisect.bisect_right(logseqs, logseq)
        k = bisect.bisect_right(self._firsts, logseq) - 1
        if k < 0:
            return 0
        return k * PIECE + bisect.bisect_right(self._piece(k)[0], logseq)

    def entries(self, lo: int = 0, hi: int | None = None) -> Iterator[tuple[int, int]]:
        """(logseq, locator) of entries ``lo`` to ``hi`` (default: all), in order."""
        offset, logseqs, locs = self._mem
        end = offset + min(len(logseqs), len(locs))
        hi = end if hi is None else min(hi, end)
        i = lo
        while i < min(hi, offset):
            k = i // PIECE
            seqs, places = self._piece(k)
            stop = min(hi, (k + 1) * PIECE, offset)
            for j in range(i - k * PIECE, stop - k * PIECE):
                yield seqs[j], places[j]
            i = stop
        for j in range(max(i, offset) - offset, hi - offset):
            yield logseqs[j], locs[j]

    # -- the head index ------------------------------------------------------

    def changes(self, full: bool) -> tuple[bool, list[tuple[int, bytes]], list[int]]:
        """Rows for the head index: piece k holds entries ``[k * PIECE, (k + 1) * PIECE)``,
        their logseqs then their locators (native u64); only the pieces that grew
        since :meth:`saved`, unless ``full`` or never saved (gc starts anew). A full
        write needs every entry in memory (see :meth:`detach`)."""
        offset, logseqs, locs = self._mem
        whole = full or self.saved_len < 0
        if whole and offset:
            raise RuntimeError("view locators: a whole write needs every entry in memory")
        first = 0 if whole else self.saved_len // PIECE
        rows = []
        for k in range(first, -(-(offset + len(logseqs)) // PIECE)):
            a, b = k * PIECE - offset, (k + 1) * PIECE - offset
            rows.append((k, logseqs[a:b].tobytes() + locs[a:b].tobytes()))
        return whole, rows, []

    def saved(self, base: HeadIndex) -> None:
        """``base`` holds every entry now: memory keeps only the last, partial piece."""
        offset, logseqs, locs = self._mem
        total = offset + len(logseqs)
        keep = total // PIECE * PIECE
        firsts = array("Q", self._firsts)
        for k in range(offset // PIECE, keep // PIECE):
            firsts.append(logseqs[k * PIECE - offset])
        with self._lock:
            if self._base is not base:
                self._pieces.clear()
            self._base = base
        self._firsts = firsts
        self._mem = (keep, logseqs[keep - offset :], locs[keep - offset :])
        self.saved_len = total

    def detach(self) -> None:
        """Stop reading the base (it is being replaced): every entry back in memory."""
        offset, _logseqs, _locs = self._mem
        if offset:
            logseqs, locs = array("Q"), array("Q")
            for seq, loc in self.entries():
                logseqs.append(seq)
                locs.append(loc)
            self._mem = (0, logseqs, locs)
            self._firsts = array("Q")
        with self._lock:
            self._base = None
            self._pieces.clear()
        self.saved_len = -1

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[int, bytes]], base: HeadIndex | None = None) -> ViewLocators:
        """The entries the head index saved, as (piece, raw) rows (ValueError if the
        pieces do not fit together). With ``base``, only the last piece stays in
        memory; the others are read from ``base`` when a view needs them."""
        meta = cls()
        logseqs, locs, firsts = array("Q"), array("Q"), array("Q")
        offset = 0
        for expect, (k, raw) in enumerate(rows):
            if k != expect or offset + len(logseqs) != k * PIECE:
                raise ValueError("head index: the view locators are not contiguous")
            seqs, places = _decode(raw)
            if base is not None and logseqs:  # the previous piece was whole: leave it there
                firsts.append(logseqs[0])
                offset += len(logseqs)
                logseqs, locs = array("Q"), array("Q")
            logseqs.extend(seqs)
            locs.extend(places)
        meta._mem = (offset, logseqs, locs)
        meta._firsts = firsts
        meta._base = base
        meta.saved_len = offset + len(logseqs)
        if base is not None and len(logseqs) == PIECE:  # the last piece is whole too
            meta.saved(base)
        return meta

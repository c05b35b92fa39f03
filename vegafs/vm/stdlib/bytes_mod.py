"""`bytes::` — scanning borrowed bytes without copying them.

Every function takes a slice (or a str literal, a static slice) and works on the
underlying buffer window with C-speed methods (``buf.count(needle, start,
end)``, ``buf.find``), so a 1 MiB slice is scanned at memory speed and never
copied. Functions returning parts of a slice return *sub-slices of the same
owner*: they go stale together with it. `lines` and `split` are lazy iterators
(a list cannot hold slices), walked by ``for``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from vegafs.vm.stdlib.registry import (
    builtin,
    want_bytes_window,
    want_int,
    want_needle,
    want_slice,
)
from vegafs.vm.values import Slice, Trap, VegaIterable

if TYPE_CHECKING:
    from vegafs.vm.runtime import Runtime

_WS = b" \t\r\n\x0b\x0c"


def _find(buf: Any, needle: bytes, start: int, end: int) -> int:
    """buf.find on a window; a memoryview buffer (no .find) falls back to a copy-free
    bytes(...) only of the window — drivers return bytes/bytearray, so this is rare."""
    try:
        return buf.find(needle, start, end)
    except AttributeError:
        i = bytes(buf[start:end]).find(needle)
        return i if i < 0 else start + i


def _count(buf: Any, needle: bytes, start: int, end: int) -> int:
    try:
        return buf.count(needle, start, end)
    except AttributeError:
        return bytes(buf[start:end]).count(needle)


@builtin("bytes::len", 1, methods=("slice",))
def len_(rt: Runtime, s: Any) -> int:
    """Length in bytes."""
    _, start, end = want_bytes_window(s, "bytes::len's argument")
    return end - start


@builtin("bytes::count", 2, methods=("slice",))
def count(rt: Runtime, s: Any, needle: Any) -> int:
    """Non-overlapping occurrences of `needle` (C speed, no copy)."""
    buf, start, end = want_bytes_window(s, "bytes::count's slice")
    pat = want_needle(needle, "bytes::count's needle")
    if not pat:
        raise Trap("value", "bytes::count needs a non-empty needle")
    rt.meter.step(max(1, (end - start) >> 20))  # scanning costs a step per MiB
    return _count(buf, pat, start, end)


@builtin("bytes::find", 2, 3, methods=("slice",))
def find(rt: Runtime, s: Any, needle: Any, offset: Any = 0) -> int:
    """Offset of the first `needle` at or after `offset`, or -1."""
    buf, start, end = want_bytes_window(s, "bytes::find's slice")
    pat = want_needle(needle, "bytes::find's needle")
    off = want_int(offset, "bytes::find's offset")
    if off < 0:
        raise Trap("value", "bytes::find offset must not be negative")
    i = _find(buf, pat, min(start + off, end), end)
    return i if i < 0 else i - start


@builtin("bytes::contains", 2, methods=("slice",))
def contains(rt: Runtime, s: Any, needle: Any) -> bool:
    """True if `needle` occurs in the slice."""
    buf, start, end = want_bytes_window(s, "bytes::contains's slice")
    return _find(buf, want_needle(needle, "bytes::contains's needle"), start, end) >= 0


@builtin("bytes::starts_with", 2, methods=("slice",))
def starts_with(rt: Runtime, s: Any, prefix: Any) -> bool:
    """True if the slice begins with `prefix`."""
    buf, start, end = want_bytes_window(s, "bytes::starts_with's slice")
    pat = want_needle(prefix, "bytes::starts_with's prefix")
    return end - start >= len(pat) and memoryview(buf)[start : start + len(pat)] == pat


@builtin("bytes::ends_with", 2, methods=("slice",))
def ends_with(rt: Runtime, s: Any, suffix: Any) -> bool:
    """True if the slice ends with `suffix`."""
    buf, start, end = want_bytes_window(s, "bytes::ends_with's slice")
    pat = want_needle(suffix, "bytes::ends_with's suffix")
    return end - start >= len(pat) and memoryview(buf)[end - len(pat) : end] == pat


@builtin("bytes::equal", 2, methods=("slice",))
def equal(rt: Runtime, a: Any, b: Any) -> bool:
    """Byte-wise equality of two slices (or a slice and a str)."""
    ba, sa, ea = want_bytes_window(a, "bytes::equal's first argument")
    bb, sb, eb = want_bytes_window(b, "bytes::equal's second argument")
    return ea - sa == eb - sb and memoryview(ba)[sa:ea] == memoryview(bb)[sb:eb]


@builtin("bytes::slice", 2, 3, methods=("slice",))
def slice_(rt: Runtime, s: Any, start: Any, end: Any = None) -> Slice:
    """The sub-slice [start, end) (negative offsets count from the end); same owner."""
    base = want_slice(rt, s, "bytes::slice's slice")
    lo = want_int(start, "bytes::slice's start")
    hi = len(base) if end is None else want_int(end, "bytes::slice's end")
    return base.sub(lo, hi)


@builtin("bytes::trim", 1, methods=("slice",))
def trim(rt: Runtime, s: Any) -> Slice:
    """The sub-slice without leading/trailing ASCII whitespace."""
    base = want_slice(rt, s, "bytes::trim's slice")
    buf, start, end = base.window()
    mv = memoryview(buf)
    lo, hi = start, end
    while lo < hi and mv[lo] in _WS:
        lo += 1
    while hi > lo and mv[hi - 1] in _WS:
        hi -= 1
    return base.sub(lo - start, hi - start)


@builtin("bytes::byte", 2, methods=("slice",))
def byte(rt: Runtime, s: Any, index: Any) -> int:
    """The byte (0..255) at `index`."""
    buf, start, end = want_bytes_window(s, "bytes::byte's slice")
    i = want_int(index, "bytes::byte's index")
    if not 0 <= i < end - start:
        raise Trap("index", f"byte index {i} out of range for a slice of {end - start} bytes")
    return memoryview(buf)[start + i]


class SliceSplit(VegaIterable):
    """Lazily yields sub-slices of `base` cut at separators (`bytes::lines`,
    `bytes::split`); each step re-checks the base, so closing the handler mid-loop
    traps at the next item.

    lines (``keep_sep``): each line *with* its "\\n", like a text file's lines, so
    writing every line back reproduces the data exactly; the last line may lack
    it, and empty data has no lines. split: the parts *between* separators, so
    "a,b," gives "a", "b", "" (the empty last part included)."""

    __slots__ = ("rt", "base", "sep", "keep_sep")
    type_name = "iterator"

    def __init__(self, rt: Runtime, base: Slice, sep: bytes, keep_sep: bool) -> None:
        self.rt = rt
        self.base = base
        self.sep = sep
        self.keep_sep = keep_sep

    def __iter__(self) -> Iterator[Slice]:
        base, sep, step, keep = self.base, self.sep, self.rt.meter.step, self.keep_sep
        buf, start, end = base.window()
        pos = start
        while True:
            base.check()
            step()
            i = _find(buf, sep, pos, end)
            if i < 0:
                if pos < end or (not keep and pos == end):
                    yield base.sub(pos - start, end - start)
                return
            cut = i + len(sep)
            yield base.sub(pos - start, (cut if keep else i) - start)
            pos = cut


@builtin("bytes::lines", 1, methods=("slice",))
def lines(rt: Runtime, s: Any) -> SliceSplit:
    """Iterate the lines, each with its "\\n" (the last may lack it), as sub-slices."""
    return SliceSplit(rt, want_slice(rt, s, "bytes::lines's slice"), b"\n", True)


@builtin("bytes::split", 2, methods=("slice",))
def split(rt: Runtime, s: Any, sep: Any) -> SliceSplit:
    """Iterate the parts between separators as sub-slices of the same owner."""
    pat = want_needle(sep, "bytes::split's separator")
    if not pat:
        raise Trap("value", "bytes::split needs a non-empty separator")
    return SliceSplit(rt, want_slice(rt, s, "bytes::split's slice"), pat, False)

"""`text::` — owned strings. Arguments may be str or slices (decoded as UTF-8 and
charged, like `text(s)`); every new string or list is charged to the memory budget
*before* it is built when its size is known up front (`repeat`, `join`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vegafs.vm.budget import estimate_size
from vegafs.vm.stdlib.registry import builtin, charge, want_int, want_str, want_text
from vegafs.vm.values import Trap, type_name, unwrap

if TYPE_CHECKING:
    from vegafs.vm.runtime import Runtime

_S = ("str",)


def _t(rt: Runtime, v: Any, fn: str) -> str:
    return want_text(rt, v, f"the argument of text::{fn}")


def _charge_list(rt: Runtime, parts: list[str]) -> list[str]:
    rt.meter.charge_memory(estimate_size(parts) + 49 * len(parts) + sum(map(len, parts)))
    return parts


@builtin("text::len", 1, methods=_S)
def len_(rt: Runtime, s: Any) -> int:
    """Number of characters."""
    return len(_t(rt, s, "len"))


@builtin("text::lines", 1, methods=_S)
def lines(rt: Runtime, s: Any) -> list[str]:
    """The lines (without line endings) as a list of str."""
    return _charge_list(rt, _t(rt, s, "lines").splitlines())


@builtin("text::split", 1, 2, methods=_S)
def split(rt: Runtime, s: Any, sep: Any = None) -> list[str]:
    """Split on `sep` (default: runs of whitespace)."""
    text = _t(rt, s, "split")
    if sep is None:
        return _charge_list(rt, text.split())
    sep = _t(rt, sep, "split")
    if not sep:
        raise Trap("value", "text::split needs a non-empty separator")
    return _charge_list(rt, text.split(sep))


@builtin("text::trim", 1, methods=_S)
def trim(rt: Runtime, s: Any) -> str:
    """Without leading and trailing whitespace."""
    return charge(rt, _t(rt, s, "trim").strip())


@builtin("text::upper", 1, methods=_S)
def upper(rt: Runtime, s: Any) -> str:
    """Upper-cased."""
    return charge(rt, _t(rt, s, "upper").upper())


@builtin("text::lower", 1, methods=_S)
def lower(rt: Runtime, s: Any) -> str:
    """Lower-cased."""
    return charge(rt, _t(rt, s, "lower").lower())


@builtin("text::contains", 2, methods=_S)
def contains(rt: Runtime, s: Any, sub: Any) -> bool:
    """True if `sub` occurs in `s`."""
    return _t(rt, sub, "contains") in _t(rt, s, "contains")


@builtin("text::find", 2, methods=_S)
def find(rt: Runtime, s: Any, sub: Any) -> int:
    """Index of the first `sub`, or -1."""
    return _t(rt, s, "find").find(_t(rt, sub, "find"))


@builtin("text::starts_with", 2, methods=_S)
def starts_with(rt: Runtime, s: Any, prefix: Any) -> bool:
    """True if `s` begins with `prefix`."""
    return _t(rt, s, "starts_with").startswith(_t(rt, prefix, "starts_with"))


@builtin("text::ends_with", 2, methods=_S)
def ends_with(rt: Runtime, s: Any, suffix: Any) -> bool:
    """True if `s` ends with `suffix`."""
    return _t(rt, s, "ends_with").endswith(_t(rt, suffix, "ends_with"))


@builtin("text::replace", 3, methods=_S)
def replace(rt: Runtime, s: Any, old: Any, new: Any) -> str:
    """Every `old` replaced by `new` (size charged before building)."""
    text, o, n = _t(rt, s, "replace"), _t(rt, old, "replace"), _t(rt, new, "replace")
    if not o:
        raise Trap("value", "text::replace needs a non-empty pattern")
    hits = text.count(o)
    rt.meter.charge_memory(49 + len(text) + hits * max(len(n) - len(o), 0))
    return text.replace(o, n)


@builtin("text::join", 2, methods=("list",))
def join(rt: Runtime, parts: Any, sep: Any) -> str:
    """The items of a list of str joined with `sep` (``text::join(xs, ", ")``)."""
    parts = unwrap(parts)
    if type(parts) is not list:
        raise Trap("type", f"text::join needs a list, got {type_name(parts)}")
    sep = _t(rt, sep, "join")
    # all str (the usual case): no per-item conversion, the join runs at C speed
    items = parts if set(map(type, parts)) <= {str} else [_t(rt, p, "join") for p in parts]
    rt.meter.charge_memory(49 + sum(map(len, items)) + len(sep) * max(len(items) - 1, 0))
    return sep.join(items)


@builtin("text::repeat", 2, methods=_S)
def repeat(rt: Runtime, s: Any, n: Any) -> str:
    """`s` repeated `n` times; a huge result traps before it is allocated."""
    text, k = _t(rt, s, "repeat"), want_int(n, "text::repeat's count")
    k = max(k, 0)
    rt.meter.charge_memory(49 + len(text) * k)
    return text * k


@builtin("text::slice", 2, 3, methods=_S)
def slice_(rt: Runtime, s: Any, start: Any, end: Any = None) -> str:
    """Characters [start, end) (negative counts from the end)."""
    text = _t(rt, s, "slice")
    lo = want_int(start, "text::slice's start")
    hi = len(text) if end is None else want_int(end, "text::slice's end")
    return charge(rt, text[lo:hi])


@builtin("text::chr", 1)
def chr_(rt: Runtime, code: Any) -> str:
    """The character with a Unicode code point."""
    c = want_int(code, "text::chr's code point")
    if not 0 <= c <= 0x10FFFF:
        raise Trap("value", f"text::chr of {c}: not a code point")
    return chr(c)


@builtin("text::ord", 1)
def ord_(rt: Runtime, s: Any) -> int:
    """The code point of a one-character str."""
    text = want_str(s, "text::ord's argument")
    if len(text) != 1:
        raise Trap("value", f"text::ord needs one character, got {len(text)}")
    return ord(text)

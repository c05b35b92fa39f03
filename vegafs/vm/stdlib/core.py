"""Global builtins: conversions, printing, ranges, containers, and the VFS API (seed 000 §7).

The VFS functions are thin: argument checks here, everything else (capabilities,
paths, concurrency, Results) in `vegafs.vm.vfs.Namespace`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from vegafs.vm.stdlib.registry import (
    builtin,
    charge,
    slice_text,
    want_int,
    want_str,
)
from vegafs.vm.values import (
    Duration,
    Money,
    Result,
    Slice,
    Trap,
    VegaObject,
    check_storable,
    type_name,
    unwrap,
)

if TYPE_CHECKING:
    from vegafs.vm.runtime import Runtime

#: Deepest nesting `format_value` renders (a 10,000-deep list must not exhaust the C stack).
_MAX_DEPTH = 64


def format_value(rt: Runtime | None, value: Any, quote: bool = False) -> str:
    """How Vega prints a value: nil/true/false, lists ``[1, "a"]``, maps ``{"k": 1}``;
    a slice prints its bytes decoded as text; strings are quoted only inside containers.
    A container inside itself prints as ``[...]``/``{...}`` (no unbounded recursion)."""
    return _format(rt, value, quote, set())


def _format(rt: Runtime | None, value: Any, quote: bool, active: set[int]) -> str:
    if value is None:
        return "nil"
    if value is True:
        return "true"
    if value is False:
        return "false"
    t = type(value)
    if t is str:
        return _quote(value) if quote else value
    if t is int or t is float:
        return repr(value)
    if t is Slice:
        text = slice_text(rt, value) if rt is not None else value.to_bytes().decode(
            "utf-8", "surrogateescape")
        return _quote(text) if quote else text
    if t is list or t is dict:
        if id(value) in active or len(active) >= _MAX_DEPTH:
            return "[...]" if t is list else "{...}"
        active.add(id(value))
        try:
            if t is list:
                return "[" + ", ".join(_format(rt, v, True, active) for v in value) + "]"
            return "{" + ", ".join(f"{_format(rt, k, True, active)}: "
                                   f"{_format(rt, v, True, active)}"
                                   for k, v in value.items()) + "}"
        finally:
            active.discard(id(value))
    if t is range:
        return f"range({value.start}, {value.stop}" + (
            f", {value.step})" if value.step != 1 else ")")
    if t is Duration or t is Money:
        return str(value)
    if t is Result:
        if value.success:
            inner = "" if value.value is None else _format(rt, value.value, True, active)
            return f"ok({inner})"
        return f"failed({_quote(value.error or '')})"
    if isinstance(value, VegaObject):
        return f"<{value.type_name}>"
    return f"<{type_name(value)}>"


def _quote(s: str) -> str:
    out = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{out}"'


# --------------------------------------------------------------------------- conversions


@builtin("len", 1, methods=("str", "list", "map", "slice"))
def len_(rt: Runtime, value: Any) -> int:
    """Number of items: characters of a str, bytes of a slice, items of a list/map/range."""
    value = unwrap(value)
    if type(value) is range:  # len(range) overflows past sys.maxsize; count instead
        return max(0, (value.stop - value.start + value.step - (1 if value.step > 0 else -1))
                   // value.step)
    if type(value) in (str, list, dict, Slice):
        return len(value)
    raise Trap("type", f"len() of a {type_name(value)}")


@builtin("str", 1)
def str_(rt: Runtime, value: Any) -> str:
    """Any value rendered as text (what print shows)."""
    return charge(rt, format_value(rt, value))


@builtin("text", 1)
def text(rt: Runtime, value: Any) -> str:
    """A slice copied into an owned str (UTF-8), charged to the memory budget."""
    value = unwrap(value)
    if type(value) is Slice:
        return slice_text(rt, value)
    if type(value) is str:
        return value
    raise Trap("type", f"text() needs a slice or str, got {type_name(value)}")


@builtin("int", 1)
def int_(rt: Runtime, value: Any) -> int:
    """An int from an int, a float (truncated), a bool, or decimal text."""
    value = unwrap(value)
    t = type(value)
    if t is int:
        return value
    if t is bool:
        return int(value)
    if t is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise Trap("value", f"int() of {value!r}")
        return int(value)
    if t is Slice:
        value = slice_text(rt, value)
        t = str
    if t is str:
        s = value.strip().replace("_", "")
        if len(s) > 4300:
            raise Trap("value", "int() of a string longer than 4300 digits")
        try:
            return int(s, 10)
        except ValueError:
            raise Trap("value", f"int() of {_quote(value[:40])}: not a whole number") from None
    raise Trap("type", f"int() of a {type_name(value)}")


@builtin("float", 1)
def float_(rt: Runtime, value: Any) -> float:
    """A float from a number or decimal text."""
    value = unwrap(value)
    t = type(value)
    if t in (int, float, bool):
        try:
            return float(value)
        except OverflowError:
            raise Trap("value", "float() of an int too large for a float") from None
    if t is Slice:
        value = slice_text(rt, value)
        t = str
    if t is str:
        try:
            return float(value.strip())
        except ValueError:
            raise Trap("value", f"float() of {_quote(value[:40])}: not a number") from None
    if t is Money:
        return float(value.amount)
    raise Trap("type", f"float() of a {type_name(value)}")


@builtin("type", 1)
def type_(rt: Runtime, value: Any) -> str:
    """The type name of a value ("int", "slice", "result", ...)."""
    return type_name(value)


@builtin("print", 0, None)
def print_(rt: Runtime, *values: Any) -> None:
    """Write the values, separated by spaces, and a newline to stdout."""
    rt.stdout(" ".join(format_value(rt, v) for v in values) + "\n")


@builtin("eprint", 0, None)
def eprint(rt: Runtime, *values: Any) -> None:
    """Like print, to stderr."""
    rt.stderr(" ".join(format_value(rt, v) for v in values) + "\n")


@builtin("range", 1, 3)
def range_(rt: Runtime, *args: Any) -> range:
    """range(stop), range(start, stop), range(start, stop, step): lazy, no allocation."""
    nums = [want_int(a, "a range bound") for a in args]
    if len(nums) == 3 and nums[2] == 0:
        raise Trap("value", "range() step must not be zero")
    return range(*nums)


@builtin("args", 0)
def args_(rt: Runtime) -> list[str]:
    """The command-line arguments after the script name."""
    return charge(rt, list(rt.args))


@builtin("money", 1)
def money(rt: Runtime, value: Any) -> Money:
    """A money amount from a number or text ("0.50")."""
    value = unwrap(value)
    if type(value) in (int, str):
        try:
            return Money(Decimal(str(value)))
        except ArithmeticError:
            pass
    raise Trap("value", f"money() of {format_value(rt, value, True)}")


# --------------------------------------------------------------------------- containers


def _push(rt: Runtime, xs: Any, item: Any) -> None:
    """Append an item to a list (a borrowed slice traps: it cannot outlive its owner)."""
    xs = _want_list(xs)
    check_storable(item, "a list")
    rt.meter.charge_memory(8)
    xs.append(item)


def _want_list(value: Any) -> list[Any]:
    value = unwrap(value)
    if type(value) is not list:
        raise Trap("type", f"expected a list, got {type_name(value)}")
    return value


def _want_map(value: Any) -> dict[Any, Any]:
    value = unwrap(value)
    if type(value) is not dict:
        raise Trap("type", f"expected a map, got {type_name(value)}")
    return value


def map_key(value: Any) -> Any:
    """Check a map key: str, int, bool or nil (immutable and comparable)."""
    if type(value) in (str, int, bool) or value is None:
        return value
    raise Trap("type", f"a map key must be a str, int, bool or nil, got {type_name(value)}")


builtin("push", 2, methods=("list",), top_level=False)(_push)


@builtin("pop", 1, 2, methods=("list",), top_level=False)
def pop(rt: Runtime, xs: Any, index: Any = None) -> Any:
    """Remove and return the last item (or the item at `index`)."""
    xs = _want_list(xs)
    if not xs:
        raise Trap("index", "pop() from an empty list")
    i = -1 if index is None else want_int(index, "pop index")
    if not -len(xs) <= i < len(xs):
        raise Trap("index", f"pop index {i} out of range for a list of {len(xs)}")
    return xs.pop(i)


@builtin("insert", 3, methods=("list",), top_level=False)
def insert(rt: Runtime, xs: Any, index: Any, item: Any) -> None:
    """Insert an item before `index`."""
    xs = _want_list(xs)
    check_storable(item, "a list")
    rt.meter.charge_memory(8)
    xs.insert(want_int(index, "insert index"), item)


@builtin("contains", 2, methods=("list", "map"), top_level=False)
def contains(rt: Runtime, container: Any, item: Any) -> bool:
    """True if a list holds the item or a map has the key."""
    container = unwrap(container)
    if type(container) is list:
        return any(_same(x, item) for x in container)
    if type(container) is dict:
        return map_key(item) in container
    raise Trap("type", f"contains() on a {type_name(container)}")


def _same(a: Any, b: Any) -> bool:
    """Vega equality: no int/bool/float confusion (1 != true)."""
    return type(a) is type(b) and a == b


@builtin("keys", 1, methods=("map",), top_level=False)
def keys(rt: Runtime, m: Any) -> list[Any]:
    """The keys of a map, in insertion order."""
    return charge(rt, list(_want_map(m)))


@builtin("values", 1, methods=("map",), top_level=False)
def values(rt: Runtime, m: Any) -> list[Any]:
    """The values of a map, in insertion order."""
    return charge(rt, list(_want_map(m).values()))


@builtin("get", 2, 3, methods=("map",), top_level=False)
def get(rt: Runtime, m: Any, key: Any, default: Any = None) -> Any:
    """m[key] if present, else `default` (nil)."""
    return _want_map(m).get(map_key(key), default)


@builtin("delete", 2, methods=("map",), top_level=False)
def delete(rt: Runtime, m: Any, key: Any) -> bool:
    """Remove a key; true if it was there."""
    return _want_map(m).pop(map_key(key), _MISSING) is not _MISSING


_MISSING = object()


@builtin("sort", 1, methods=("list",), top_level=False)
def sort(rt: Runtime, xs: Any) -> list[Any]:
    """A sorted copy of a list of ints/floats or of strs (mixing them traps)."""
    xs = _want_list(xs)
    kinds = {type(x) for x in xs}
    if not (kinds <= {int, float} or kinds <= {str}):
        raise Trap("type", "sort() needs a list of numbers or of strs")
    return charge(rt, sorted(xs))


# --------------------------------------------------------------------------- VFS (seed 000 §7)


def _path(value: Any, op: str) -> str:
    return want_str(value, f"the path of {op}()")


@builtin("mount", 2, cap="vfs::mount")
def mount(rt: Runtime, path: Any, uri: Any) -> Result:
    """Mount a driver URI (mem://, posix://DIR, store://DIR) at a path of this run."""
    return rt.namespace.mount(_path(path, "mount"), want_str(uri, "the uri of mount()"))


@builtin("umount", 1, cap="vfs::mount")
def umount(rt: Runtime, path: Any) -> Result:
    """Unmount: closes its handlers and invalidates their slices."""
    return rt.namespace.umount(_path(path, "umount"))


@builtin("close", 1)
def close(rt: Runtime, path: Any) -> Result:
    """Force-close every handler of a path; every slice read from it goes stale."""
    return rt.namespace.close(_path(path, "close"))


@builtin("sync", 1, cap="fs::write")
def sync(rt: Runtime, path: Any) -> Result:
    """Make written data of a path durable (where the driver can)."""
    return rt.namespace.sync(_path(path, "sync"))


@builtin("read", 1, 3, cap="fs::read")
def read(rt: Runtime, path: Any, offset: Any = 0, size: Any = None) -> Result:
    """Atomic read -> result whose value is a slice (whole file by default)."""
    off = want_int(offset, "the offset of read()")
    n = None if unwrap(size) is None else want_int(size, "the size of read()")
    if off < 0 or (n is not None and n < 0):
        raise Trap("value", "read() offset and size must not be negative")
    return rt.namespace.read(_path(path, "read"), off, n)


@builtin("write", 2, 3, cap="fs::write")
def write(rt: Runtime, path: Any, *rest: Any) -> Result:
    """write(path, data) replaces the file atomically; write(path, offset, data)
    writes at an offset. Result value: bytes written."""
    offset = None
    if len(rest) == 2:
        offset = want_int(rest[0], "the offset of write()")
        if offset < 0:
            raise Trap("value", "write() offset must not be negative")
    return rt.namespace.write(_path(path, "write"), rest[-1], offset)


@builtin("list", 1, cap="fs::read")
def list_(rt: Runtime, path: Any) -> Result:
    """Names in a directory (sorted) -> result whose value is a list of str."""
    return rt.namespace.list(_path(path, "list"))


@builtin("stat", 1, cap="fs::read")
def stat(rt: Runtime, path: Any) -> Result:
    """-> result whose value has .kind ("file"/"dir"/...), .size, .mtime_ns, .mode."""
    return rt.namespace.stat(_path(path, "stat"))


@builtin("exists", 1, cap="fs::read")
def exists(rt: Runtime, path: Any) -> bool:
    """True if the path exists (a stat that succeeds)."""
    return rt.namespace.stat(_path(path, "exists")).success


@builtin("mkdir", 1, cap="fs::write")
def mkdir(rt: Runtime, path: Any) -> Result:
    """Create a directory (its parent must exist)."""
    return rt.namespace.mkdir(_path(path, "mkdir"))


@builtin("rename", 2, cap="fs::write")
def rename(rt: Runtime, src: Any, dst: Any) -> Result:
    """Rename within one mount (not atomic across drivers; seed 000 §8.2)."""
    return rt.namespace.rename(_path(src, "rename"), _path(dst, "rename"))


@builtin("remove", 1, cap="fs::write")
def remove(rt: Runtime, path: Any) -> Result:
    """Remove a file or an empty directory."""
    return rt.namespace.remove(_path(path, "remove"))


@builtin("open", 1, 2, cap="fs::read")
def open_(rt: Runtime, path: Any, mode: Any = "r") -> Result:
    """open(path, "r"|"w"|"a"|"r+"|"w+"|"a+"|"x") -> result whose value is a handle."""
    return rt.namespace.open(_path(path, "open"), unwrap(mode))


@builtin("lookup", 1, cap="meta::read")
def lookup(rt: Runtime, path: Any) -> Result:
    """A metadata transaction on a path -> result whose value is a meta."""
    return rt.namespace.lookup(_path(path, "lookup"))

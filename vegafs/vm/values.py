"""Run-time values of Vega that are not plain Python scalars, and the trap.

Owned by H6 (runtime). H5's interpreter and H6's fast tier both use this module;
see /work/notes/vm_shared.md for the agreed interface.

Value representation (the whole list; nothing else may reach a program):

    Vega type   Python representation
    ---------   ---------------------------------------------------------------
    nil         None
    bool        bool
    int         int (arbitrary size)
    float       float
    str         str (owned text; string literals are str, see below)
    list        list
    map         dict (keys: str, int, bool, nil)
    size        int (bytes: ``64kb`` == 65536; a size literal is just an int)
    duration    Duration (integer nanoseconds)
    money       Money (decimal amount of dollars)
    slice       Slice (borrowed bytes: owner + generation + window)
    result      Result (.success, .error, .value)
    handle      vfs.Handle;  meta: vfs.MetaTxn  (both VegaObject subclasses)

String literals are static: they are `str` values that never go stale, and every
builtin that takes a slice also accepts a `str` (encoded as UTF-8, cached per
literal by the caller if it wants). So a literal *is* usable as a static slice
(seed 000 §4) and storing one in a list is fine: only slices whose owner can be
invalidated are borrowed memory, and only those are subject to the escape rule.

Invariants:
- A `Slice` never copies: it is (owner, generation, buffer, start, end). Every
  access goes through `view()`/`window()`, which traps "stale_slice" once the
  owner's generation moved on (handler close, meta commit/abort, close(path),
  hard error).
- Nothing here exposes a Python attribute to a program: objects a program can
  touch implement `VegaObject.get_attr`/`call_method` with an explicit whitelist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from vegafs.vm.runtime import Runtime

#: The kinds a Trap may carry; `internal` wraps an unexpected Python exception.
TRAP_KINDS = frozenset(
    {
        "stale_slice",
        "slice_escape",
        "type",
        "capability",
        "budget_steps",
        "budget_time",
        "budget_memory",
        "index",
        "key",
        "name",
        "arity",
        "zero_division",
        "recursion",
        "handle",
        "result",
        "value",
        "internal",
    }
)


class Trap(Exception):
    """A hard abort of the run (seed 002: structural misuse). Cannot be caught by Vega.

    The interpreter fills `position` (a ``file:line:col`` source position object of
    H5's choosing) and `stack` before reporting; the runtime never knows positions.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        if kind not in TRAP_KINDS:
            raise ValueError(f"unknown trap kind {kind!r}")
        self.kind = kind
        self.message = message
        self.position: Any = None
        self.stack: list[Any] = []

    def __str__(self) -> str:
        return f"{self.kind.replace('_', ' ')}: {self.message}"


class Condition(Exception):
    """A named, catchable orchestration condition (seed 001 try/catch).

    Only these are catchable: BudgetExceeded, Timeout, AgentFailed. `payload` is a
    Vega value bound by ``catch Name(x)``.
    """

    NAMES: ClassVar[frozenset[str]] = frozenset({"BudgetExceeded", "Timeout", "AgentFailed"})

    def __init__(self, name: str, payload: Any = None) -> None:
        if name not in self.NAMES:
            raise ValueError(f"unknown condition {name!r}")
        super().__init__(name if payload is None else f"{name}({payload})")
        self.name = name
        self.payload = payload


# --------------------------------------------------------------------------- owners


class Owner:
    """Something that owns borrowed memory: a handler, a metadata txn, static memory.

    Slices remember the generation they were made in; `invalidate()` bumps it, so
    every earlier slice becomes stale in O(1) without tracking them (seed 002:
    index + generation). An owner may keep producing slices after invalidation
    (a meta txn after commit starts a new generation).
    """

    __slots__ = ("label", "generation", "reason")

    def __init__(self, label: str) -> None:
        self.label = label
        self.generation = 0
        self.reason = ""

    def invalidate(self, reason: str) -> None:
        """Make every slice made so far stale; `reason` ends up in the trap message."""
        self.generation += 1
        self.reason = reason

    def __repr__(self) -> str:
        return f"Owner({self.label!r}, gen={self.generation})"


#: Static VM memory: never invalidated (seed 000 §3.2, literals).
STATIC = Owner("static memory")


class Slice:
    """A borrowed, zero-copy window [start, end) of a buffer owned by `owner`.

    `buf` is a bytes / bytearray / memoryview the owner guarantees not to reuse
    until it invalidates (seed 000 §10.1). Keeping the raw buffer and offsets
    (rather than only a memoryview) lets C-speed methods such as
    ``bytearray.count(needle, start, end)`` run on the window without a copy.
    """

    __slots__ = ("owner", "gen", "_buf", "start", "end")
    __hash__ = None  # type: ignore[assignment]  # slices are not map keys

    def __init__(self, owner: Owner, buf: bytes | bytearray | memoryview, start: int = 0,
                 end: int | None = None) -> None:
        n = len(buf)
        if end is None:
            end = n
        if not 0 <= start <= end <= n:
            raise Trap("index", f"slice window [{start}, {end}) outside a buffer of {n} bytes")
        self.owner = owner
        self.gen = owner.generation
        self._buf = buf
        self.start = start
        self.end = end

    @classmethod
    def static(cls, data: bytes) -> Slice:
        """A slice of static memory (a literal); valid for the whole run."""
        return cls(STATIC, data)

    @property
    def is_static(self) -> bool:
        return self.owner is STATIC

    def check(self) -> None:
        """Trap if the owner invalidated this slice's generation."""
        if self.gen != self.owner.generation:
            why = f" ({self.owner.reason})" if self.owner.reason else ""
            raise Trap("stale_slice", f"slice of {self.owner.label} used after it was "
                       f"invalidated{why}")

    def window(self) -> tuple[bytes | bytearray | memoryview, int, int]:
        """(buffer, start, end) for C-speed scans (`buf.count(x, start, end)`); checked."""
        self.check()
        return self._buf, self.start, self.end

    def view(self) -> memoryview:
        """The bytes as a read-only memoryview (zero-copy); checked."""
        self.check()
        return memoryview(self._buf).toreadonly()[self.start : self.end]

    def __len__(self) -> int:
        self.check()
        return self.end - self.start

    def sub(self, start: int, end: int) -> Slice:
        """A sub-window (relative offsets, clamped like Python slicing) of the same owner."""
        self.check()
        length = self.end - self.start
        start, end, _ = slice(start, end).indices(length)
        end = max(start, end)
        s = Slice.__new__(Slice)
        s.owner, s.gen, s._buf = self.owner, self.gen, self._buf
        s.start, s.end = self.start + start, self.start + end
        return s

    def to_bytes(self) -> bytes:
        """An owned copy. Callers charge the memory budget first (see `text()`)."""
        self.check()
        return bytes(memoryview(self._buf)[self.start : self.end])

    def __repr__(self) -> str:
        state = "stale" if self.gen != self.owner.generation else f"{self.end - self.start} bytes"
        return f"<slice of {self.owner.label}: {state}>"


# --------------------------------------------------------------------------- objects


class VegaObject:
    """Base of host objects a program may hold. Attribute and method access is
    whitelisted: `get_attr`/`call_method` are the *only* ways in, so Python's
    own attributes (``__class__``, ``__dict__``...) are unreachable."""

    __slots__ = ()
    type_name: ClassVar[str] = "object"

    def get_attr(self, name: str) -> Any:
        raise Trap("name", f"a {self.type_name} has no attribute '{name}'")

    def call_method(self, rt: Runtime, name: str, args: list[Any]) -> Any:
        raise Trap("name", f"a {self.type_name} has no method '{name}'")


class Result(VegaObject):
    """The outcome of a side-effecting operation (seed 000 §5): never raised.

    Transparent on success: attribute reads and method calls other than
    success/error/value are forwarded to `.value`, and builtins accept a Result
    where they expect its value (see `unwrap`). Using a *failed* result as a
    value traps "result" and quotes the error, so an unchecked failure is loud.
    """

    __slots__ = ("success", "error", "value")
    type_name = "result"

    def __init__(self, success: bool, error: str | None = None, value: Any = None) -> None:
        self.success = success
        self.error = error
        self.value = value

    @classmethod
    def ok(cls, value: Any = None) -> Result:
        return cls(True, None, value)

    @classmethod
    def fail(cls, error: str) -> Result:
        return cls(False, error, None)

    def get_attr(self, name: str) -> Any:
        if name == "success":
            return self.success
        if name == "error":
            return self.error
        if name == "value":
            return self.value
        return get_attr(unwrap(self), name)

    def call_method(self, rt: Runtime, name: str, args: list[Any]) -> Any:
        target = unwrap(self)
        if isinstance(target, VegaObject):
            return target.call_method(rt, name, args)
        raise Trap("name", f"a {type_name(target)} has no method '{name}'")

    def __repr__(self) -> str:
        if self.success:
            return f"Result(ok, {self.value!r})"
        return f"Result(failed, {self.error!r})"


def unwrap(value: Any) -> Any:
    """The value behind a successful Result (any other value is returned as is).

    Traps "result" on a failed Result: that is a structural misuse (the program
    used an operation's output without checking `.success`).
    """
    if type(value) is Result:
        if not value.success:
            raise Trap("result", f"used the value of a failed result: {value.error}")
        return value.value
    return value


def get_attr(value: Any, name: str) -> Any:
    """Attribute read `value.name` for the VM: only VegaObjects have attributes."""
    if isinstance(value, VegaObject):
        return value.get_attr(name)
    raise Trap("name", f"a {type_name(value)} has no attribute '{name}'")


# --------------------------------------------------------------------------- literal types

_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
       "h": 3_600_000_000_000}
SIZE_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}


@dataclass(frozen=True, order=True, slots=True)
class Duration:
    """A span of time in integer nanoseconds (literals ``100ms``, ``5s``, ``2m``)."""

    ns: int

    UNITS: ClassVar[dict[str, int]] = _NS

    @classmethod
    def parse(cls, number: int | float, unit: str) -> Duration:
        return cls(int(number * _NS[unit]))

    @property
    def seconds(self) -> float:
        return self.ns / 1e9

    def __add__(self, other: object) -> Duration:
        if isinstance(other, Duration):
            return Duration(self.ns + other.ns)
        return NotImplemented

    def __sub__(self, other: object) -> Duration:
        if isinstance(other, Duration):
            return Duration(self.ns - other.ns)
        return NotImplemented

    def __mul__(self, k: object) -> Duration:
        if isinstance(k, int | float) and not isinstance(k, bool):
            return Duration(int(self.ns * k))
        return NotImplemented

    __rmul__ = __mul__

    def __str__(self) -> str:
        for unit in ("h", "m", "s", "ms", "us"):
            if self.ns and self.ns % _NS[unit] == 0:
                return f"{self.ns // _NS[unit]}{unit}"
        return f"{self.ns}ns"


@dataclass(frozen=True, order=True, slots=True)
class Money:
    """An amount of dollars, exact (literal ``$0.50``); budgets of agent calls."""

    amount: Decimal

    @classmethod
    def parse(cls, text: str) -> Money:
        return cls(Decimal(text.lstrip("$").replace("_", "")))

    def __add__(self, other: object) -> Money:
        if isinstance(other, Money):
            return Money(self.amount + other.amount)
        return NotImplemented

    def __sub__(self, other: object) -> Money:
        if isinstance(other, Money):
            return Money(self.amount - other.amount)
        return NotImplemented

    def __mul__(self, k: object) -> Money:
        if isinstance(k, int) and not isinstance(k, bool):
            return Money(self.amount * k)
        return NotImplemented

    __rmul__ = __mul__

    def __str__(self) -> str:
        return f"${self.amount}"


# --------------------------------------------------------------------------- helpers

_TYPE_NAMES: dict[type, str] = {
    type(None): "nil",
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    list: "list",
    dict: "map",
    Duration: "duration",
    Money: "money",
    Slice: "slice",
    range: "range",
}


def type_name(value: Any) -> str:
    """The Vega type name of a value, for messages ("expected slice, got int")."""
    name = _TYPE_NAMES.get(type(value))
    if name is not None:
        return name
    if isinstance(value, VegaObject):
        return value.type_name
    if callable(value):
        return "fn"
    return "object"


def is_borrowed(value: Any) -> bool:
    """True if `value` is (or wraps) a slice whose owner can invalidate it."""
    if type(value) is Slice:
        return value.owner is not STATIC
    if type(value) is Result:
        return is_borrowed(value.value)
    return False


def check_storable(value: Any, where: str) -> None:
    """Trap "slice_escape" if a borrowed slice would outlive its statement.

    `where` says where it was going: "a list", "a map", "a global", "a return
    value". Called by the VM on list/map construction and mutation, global
    stores and `return` (seed 000 §3.2).
    """
    if is_borrowed(value):
        raise Trap("slice_escape", f"a slice cannot be stored in {where}: it borrows memory "
                   "of its owner; copy it with text(s) first")


def iterate(value: Any) -> Any:
    """A Python iterator over what ``for x in value`` visits: list items, map keys
    (insertion order), range numbers, and the lazy iterators of the stdlib
    (`bytes::lines`, `bytes::split` yield sub-slices). Anything else traps."""
    value = unwrap(value)
    if type(value) in (list, dict, range) or isinstance(value, VegaIterable):
        return iter(value)
    raise Trap("type", f"cannot iterate over a {type_name(value)}")


class VegaIterable(VegaObject):
    """Base of lazy sequences a `for` loop may walk (they implement `__iter__`)."""

    __slots__ = ()
    type_name = "iterator"

    def __iter__(self) -> Any:
        raise NotImplementedError


#: How a host receives trace events (dicts with at least "event" and "ts_ns").
TraceSink = Callable[[dict[str, Any]], None]

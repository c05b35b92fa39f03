"""The builtin registry: `Builtin`, the `builtin` decorator, and argument coercions.

Every builtin is registered once, by its Vega name: ``"len"`` goes to
`BUILTINS`, ``"bytes::count"`` to ``MODULES["bytes"]["count"]``. Methods on the
plain types (``xs.push(x)``, ``s.upper()``) are registered in `METHODS` under
the receiver's type name and receive the receiver as their first argument.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vegafs.vm.budget import estimate_size
from vegafs.vm.values import Result, Slice, Trap, type_name, unwrap

if TYPE_CHECKING:
    from vegafs.vm.runtime import Runtime


@dataclass(frozen=True, slots=True)
class Builtin:
    """A host function callable from Vega: ``fn(rt, *args) -> value``.

    `min_args`/`max_args` (None: variadic) are what the checker verifies
    statically and `call` verifies at run time; `cap` names the capability the
    function needs (the VFS enforces it per path; the checker may require a
    hook to declare it).
    """

    name: str
    fn: Callable[..., Any]
    min_args: int
    max_args: int | None
    cap: str | None = None
    doc: str = ""

    def call(self, rt: Runtime, args: list[Any] | tuple[Any, ...]) -> Any:
        n = len(args)
        if n < self.min_args or (self.max_args is not None and n > self.max_args):
            raise Trap("arity", f"{self.name}() takes {self.arity_text()} arguments, got {n}")
        return self.fn(rt, *args)

    def arity_text(self) -> str:
        if self.max_args is None:
            return f"at least {self.min_args}"
        if self.min_args == self.max_args:
            return str(self.min_args)
        return f"{self.min_args} to {self.max_args}"


BUILTINS: dict[str, Builtin] = {}
MODULES: dict[str, dict[str, Builtin]] = {}
METHODS: dict[str, dict[str, Builtin]] = {}


def builtin(name: str, min_args: int, max_args: int | None = -1, *, cap: str | None = None,
            methods: tuple[str, ...] = (), top_level: bool = True,
            ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn` as builtin `name` (``max_args=-1``: same as min_args).

    `methods` lists receiver types ("str", "slice", "list", "map") under which the
    same function is also a method (receiver = first argument, so method arity
    is one less). ``top_level=False`` registers a method only (``xs.push(x)``
    but no global ``push``), keeping common words free for program names."""
    top = min_args if max_args == -1 else max_args

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        doc = (fn.__doc__ or "").strip().split("\n")[0]
        b = Builtin(name, fn, min_args, top, cap, doc)
        module, sep, short = name.partition("::")
        if sep:
            MODULES.setdefault(module, {})[short] = b
        else:
            if top_level:
                BUILTINS[name] = b
            short = name
        for recv in methods:
            METHODS.setdefault(recv, {})[short] = b
        return fn

    return register


# --------------------------------------------------------------------------- coercions


def charge(rt: Runtime, value: Any) -> Any:
    """Charge a value the builtin just made to the memory budget and return it."""
    rt.meter.charge_memory(estimate_size(value))
    return value


def want_int(value: Any, what: str) -> int:
    value = unwrap(value)
    if type(value) is not int:
        raise Trap("type", f"{what} must be an int, got {type_name(value)}")
    return value


def want_str(value: Any, what: str) -> str:
    value = unwrap(value)
    if type(value) is not str:
        raise Trap("type", f"{what} must be a str, got {type_name(value)}")
    return value


def want_text(rt: Runtime, value: Any, what: str) -> str:
    """A str, or a slice decoded as UTF-8 (an owned copy, charged)."""
    value = unwrap(value)
    if type(value) is str:
        return value
    if type(value) is Slice:
        return slice_text(rt, value)
    raise Trap("type", f"{what} must be a str or slice, got {type_name(value)}")


def want_bytes_window(value: Any, what: str) -> tuple[Any, int, int]:
    """(buffer, start, end) of a slice (no copy) or of a str literal (encoded)."""
    value = unwrap(value)
    if type(value) is Slice:
        return value.window()
    if type(value) is str:
        data = value.encode("utf-8")
        return data, 0, len(data)
    raise Trap("type", f"{what} must be a slice or str, got {type_name(value)}")


def want_needle(value: Any, what: str) -> bytes:
    """A short pattern as bytes (copying a needle is fine: it is small by nature)."""
    value = unwrap(value)
    if type(value) is str:
        return value.encode("utf-8")
    if type(value) is Slice:
        return value.to_bytes()
    raise Trap("type", f"{what} must be a str or slice, got {type_name(value)}")


def want_slice(rt: Runtime, value: Any, what: str) -> Slice:
    """A slice; a str becomes a static slice of its UTF-8 bytes."""
    value = unwrap(value)
    if type(value) is Slice:
        value.check()
        return value
    if type(value) is str:
        return Slice.static(value.encode("utf-8"))
    raise Trap("type", f"{what} must be a slice or str, got {type_name(value)}")


def slice_text(rt: Runtime, s: Slice) -> str:
    """Decode a slice as UTF-8 into an owned str, charging memory before copying.
    Invalid UTF-8 is kept reversible (surrogateescape)."""
    buf, start, end = s.window()
    rt.meter.charge_memory(49 + (end - start))
    return bytes(memoryview(buf)[start:end]).decode("utf-8", "surrogateescape")


def is_result(value: Any) -> bool:
    return type(value) is Result

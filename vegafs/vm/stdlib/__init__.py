"""The Vega standard library: global builtins, ``module::`` functions, and methods.

What it owns: every host function a program can call — conversions and
printing, the VFS API of seed 000 §7 (`read`, `write`, `open`, `lookup`,
`mount`...), and the modules `bytes::`, `text::`, `path::`, `trace::`,
`budget::`, `time::`. The public surface for the compiler/interpreter:

    BUILTINS: dict[str, Builtin]                 # "len", "print", "read", ...
    MODULES:  dict[str, dict[str, Builtin]]      # MODULES["bytes"]["count"]
    METHODS:  dict[str, dict[str, Builtin]]      # METHODS["list"]["push"]
    call_method(rt, receiver, name, args)        # the one entry for `x.name(args)`
    lookup_builtin(module | None, name) -> Builtin | None
    format_value(rt, value) -> str               # what print shows

A `Builtin` is ``fn(rt, *args)`` plus its arity and the capability it needs.

What it must never do: hand a program a Python object that is not a Vega value
(values.py lists them), expose a Python attribute by name, touch the host
outside the Namespace's drivers, or raise anything but `Trap` (structural
misuse) — operational failures are `Result`s made by the VFS. Allocations
are charged to the memory budget, large ones before they happen.

Invariants: builtins are immutable and shared by all runs (per-run state lives
on the `Runtime`); functions returning parts of a slice return sub-slices of
the same owner, never copies; every host call that may block checks the
wall-time budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vegafs.vm.stdlib import bytes_mod, core, obs_mod, path_mod, text_mod
from vegafs.vm.stdlib.core import format_value, map_key
from vegafs.vm.stdlib.registry import BUILTINS, METHODS, MODULES, Builtin
from vegafs.vm.values import Trap, VegaObject, type_name, unwrap

if TYPE_CHECKING:
    from vegafs.vm.runtime import Runtime

__all__ = ["BUILTINS", "METHODS", "MODULES", "Builtin", "call_method", "format_value",
           "lookup_builtin", "map_key"]

# The modules register their builtins on import; keep the references explicit.
_LOADED = (bytes_mod, core, obs_mod, path_mod, text_mod)


def lookup_builtin(module: str | None, name: str) -> Builtin | None:
    """`name` (global) or `module::name`, or None: the checker's name resolution."""
    if module is None:
        return BUILTINS.get(name)
    return MODULES.get(module, {}).get(name)


def call_method(rt: Runtime, receiver: Any, name: str, args: list[Any]) -> Any:
    """Run ``receiver.name(*args)``: host objects dispatch through their whitelist,
    plain values (str, slice, list, map) through `METHODS` with the receiver first."""
    if isinstance(receiver, VegaObject):
        return receiver.call_method(rt, name, args)
    value = unwrap(receiver)
    if isinstance(value, VegaObject):
        return value.call_method(rt, name, args)
    kind = type_name(value)
    b = METHODS.get(kind, {}).get(name)
    if b is None:
        raise Trap("name", f"a {kind} has no method '{name}'")
    return b.call(rt, [value, *args])

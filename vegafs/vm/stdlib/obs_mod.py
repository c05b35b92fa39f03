"""`trace::`, `budget::`, `time::` — observing the run itself.

Trace events go to the host's sink (`Runtime.trace`); a span is a handle whose
`end()` emits one event with its duration. Attribute values must be scalars or
str, so a trace record never holds borrowed memory.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from vegafs.vm.stdlib.registry import builtin, charge, slice_text, want_str, want_text
from vegafs.vm.values import Duration, Slice, Trap, VegaObject, type_name, unwrap

if TYPE_CHECKING:
    from vegafs.vm.runtime import Runtime


def _attr_value(rt: Runtime, value: Any) -> Any:
    value = unwrap(value)
    if type(value) is Slice:
        return slice_text(rt, value)
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is Duration:
        return value.ns
    raise Trap("type", f"a trace attribute must be a scalar or str, got {type_name(value)}")


class Span(VegaObject):
    """An open trace span: `set_attribute(k, v)` then `end()` (once)."""

    __slots__ = ("rt", "name", "attrs", "start_ns", "ended")
    type_name = "span"

    def __init__(self, rt: Runtime, name: str) -> None:
        self.rt = rt
        self.name = name
        self.attrs: dict[str, Any] = {}
        self.start_ns = time.monotonic_ns()
        self.ended = False

    def call_method(self, rt: Runtime, name: str, args: list[Any]) -> Any:
        if name == "set_attribute" and len(args) == 2:
            if self.ended:
                raise Trap("handle", f"span {self.name!r} used after end()")
            self.attrs[want_str(args[0], "an attribute key")] = _attr_value(rt, args[1])
            return None
        if name == "end" and not args:
            if self.ended:
                raise Trap("handle", f"span {self.name!r} ended twice")
            self.ended = True
            if rt.caps.allows("trace::write"):
                rt.emit("span", name=self.name,
                        duration_ns=time.monotonic_ns() - self.start_ns, attrs=self.attrs)
            if self in rt.spans:
                rt.spans.remove(self)
            return None
        return super().call_method(rt, name, args)


@builtin("trace::event", 1, 2, cap="trace::write")
def event(rt: Runtime, msg: Any, attrs: Any = None) -> None:
    """Record one event with a message and optional attributes (a map)."""
    rt.caps.check("trace::write", None, op="trace::event")
    fields: dict[str, Any] = {}
    attrs = unwrap(attrs)
    if attrs is not None:
        if type(attrs) is not dict:
            raise Trap("type", f"trace::event attributes must be a map, got {type_name(attrs)}")
        fields = {str(k): _attr_value(rt, v) for k, v in attrs.items()}
    rt.emit("event", msg=want_text(rt, msg, "trace::event's message"), attrs=fields)


@builtin("trace::span", 1, cap="trace::write")
def span(rt: Runtime, name: Any) -> Span:
    """Open a span; call `.end()` on it to record it."""
    s = Span(rt, want_text(rt, name, "trace::span's name"))
    rt.spans.append(s)
    return s


@builtin("trace::set_attribute", 2, cap="trace::write")
def set_attribute(rt: Runtime, key: Any, value: Any) -> None:
    """Set an attribute on the innermost open span (or on the run, if none)."""
    stack = rt.spans  # trace::set_attribute targets the innermost open span
    if stack:
        stack[-1].call_method(rt, "set_attribute", [key, value])
    else:
        rt.caps.check("trace::write", None, op="trace::set_attribute")
        rt.emit("attribute", key=want_str(key, "an attribute key"),
                value=_attr_value(rt, value))


_KINDS = {"steps": "steps", "time": "time_s", "memory": "memory_bytes"}


def _pick(rt: Runtime, table: dict[str, Any], kind: Any, fn: str) -> Any:
    if kind is None:
        return charge(rt, dict(table))
    k = want_str(kind, f"budget::{fn}'s kind")
    if k not in _KINDS:
        raise Trap("value", f"budget::{fn} kind must be one of {', '.join(_KINDS)}, got {k!r}")
    return table[_KINDS[k]]


@builtin("budget::remaining", 0, 1)
def remaining(rt: Runtime, kind: Any = None) -> Any:
    """What is left: budget::remaining("steps"|"time"|"memory"), or a map of all."""
    return _pick(rt, rt.meter.remaining(), kind, "remaining")


@builtin("budget::used", 0, 1)
def used(rt: Runtime, kind: Any = None) -> Any:
    """What the run used so far (same kinds as remaining)."""
    return _pick(rt, rt.meter.used(), kind, "used")


@builtin("budget::limit", 0, 1)
def limit(rt: Runtime, kind: Any = None) -> Any:
    """The run's limits (nil where unlimited)."""
    return _pick(rt, rt.meter.limit(), kind, "limit")


@builtin("time::now", 0)
def now(rt: Runtime) -> float:
    """Seconds since the Unix epoch (wall clock)."""
    return time.time()


@builtin("time::elapsed", 0)
def elapsed(rt: Runtime) -> Duration:
    """Time since the run started, as a duration."""
    return Duration(int(rt.meter.elapsed_s * 1e9))

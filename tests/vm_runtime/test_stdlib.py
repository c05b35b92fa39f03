"""The stdlib builtins, called as the VM calls them (Builtin.call, arity checked)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from tests.vm_runtime.helpers import Out, call, make_rt
from vegafs.drivers.mem import MemDriver
from vegafs.vm.budget import Budget
from vegafs.vm.runtime import Runtime
from vegafs.vm.stdlib import BUILTINS, METHODS, MODULES, call_method, format_value, lookup_builtin
from vegafs.vm.values import Duration, Owner, Result, Slice, Trap


@pytest.fixture
def rt() -> Runtime:
    return make_rt(MemDriver())


def trap(kind: str, fn: Any, *args: Any) -> Trap:
    with pytest.raises(Trap) as exc:
        fn(*args)
    assert exc.value.kind == kind, exc.value
    return exc.value


def handler_slice(data: bytes) -> tuple[Owner, Slice]:
    owner = Owner("handler of /t")
    return owner, Slice(owner, bytearray(data))


# --------------------------------------------------------------------------- registry


def test_every_builtin_declares_arity_and_doc() -> None:
    everything = list(BUILTINS.values()) + [b for m in MODULES.values() for b in m.values()]
    for b in everything:
        assert b.doc, f"{b.name} has no docstring"
        assert b.max_args is None or b.max_args >= b.min_args
    assert {"bytes", "text", "path", "trace", "budget", "time"} <= set(MODULES)
    assert lookup_builtin("bytes", "count") is MODULES["bytes"]["count"]
    assert lookup_builtin(None, "len") is BUILTINS["len"]
    assert lookup_builtin("nope", "x") is None
    assert "push" not in BUILTINS and "push" in METHODS["list"]


def test_arity_is_checked(rt: Runtime) -> None:
    e = trap("arity", call, rt, "len")
    assert e.message == "len() takes 1 arguments, got 0"
    trap("arity", call, rt, "bytes::count", "a")
    trap("arity", call, rt, "range")


# --------------------------------------------------------------------------- core


def test_conversions(rt: Runtime) -> None:
    assert call(rt, "int", "1_000") == 1000
    assert call(rt, "int", 3.9) == 3
    assert call(rt, "float", "2.5") == 2.5
    assert call(rt, "str", [1, "a", None, True, {"k": 1.5}]) == '[1, "a", nil, true, {"k": 1.5}]'
    assert call(rt, "type", Result.ok()) == "result"
    trap("value", call, rt, "int", "12x")
    trap("value", call, rt, "int", float("nan"))
    trap("type", call, rt, "int", [1])
    trap("value", call, rt, "int", "9" * 5000)


def test_text_copies_and_charges(rt: Runtime) -> None:
    owner, s = handler_slice(b"abc\xff")
    used = rt.meter.memory_used
    t = call(rt, "text", s)
    assert t == "abc\udcff" and rt.meter.memory_used > used
    owner.invalidate("closed")
    assert t == "abc\udcff"  # the copy outlives its source
    trap("stale_slice", call, rt, "text", s)


def test_print_formats_values() -> None:
    out = Out()
    rt = make_rt(stdout=out)
    call(rt, "print", "x", 1, 2.5, None, [Slice.static(b"s")], Duration(5_000_000),
         Result.fail("e"))
    assert out.text == 'x 1 2.5 nil ["s"] 5ms failed("e")\n'


def test_range_and_len(rt: Runtime) -> None:
    assert list(call(rt, "range", 3)) == [0, 1, 2]
    assert list(call(rt, "range", 1, 10, 4)) == [1, 5, 9]
    trap("value", call, rt, "range", 1, 2, 0)
    assert call(rt, "len", call(rt, "range", 10**30)) == 10**30
    assert [call(rt, "len", range(*a)) for a in ((5, 0, -2), (0, 10, 3), (3, 3))] == [3, 4, 0]
    assert call(rt, "len", "héllo") == 5
    assert call(rt, "len", Slice.static("héllo".encode())) == 6


def test_container_methods(rt: Runtime) -> None:
    xs: list[Any] = []
    call_method(rt, xs, "push", [1])
    call_method(rt, xs, "push", ["a"])
    assert xs == [1, "a"]
    assert call_method(rt, xs, "contains", [1]) is True
    assert call_method(rt, xs, "contains", [True]) is False  # no 1 == true confusion
    assert call_method(rt, xs, "pop", []) == "a"
    trap("index", call_method, rt, [], "pop", [])
    m = {"a": 1}
    assert call_method(rt, m, "get", ["b", 0]) == 0
    assert call_method(rt, m, "keys", []) == ["a"]
    assert call_method(rt, m, "delete", ["a"]) is True and m == {}
    trap("type", call_method, rt, m, "get", [[1]])
    assert call_method(rt, [3, 1, 2], "sort", []) == [1, 2, 3]
    trap("type", call_method, rt, [1, "a"], "sort", [])
    trap("name", call_method, rt, 5, "bit_length", [])
    trap("name", call_method, rt, "s", "__len__", [])


def test_pushing_a_borrowed_slice_traps(rt: Runtime) -> None:
    _, s = handler_slice(b"x")
    e = trap("slice_escape", call_method, rt, [], "push", [s])
    assert "text(s)" in e.message
    call_method(rt, [], "push", [Slice.static(b"lit")])  # static memory is fine


# --------------------------------------------------------------------------- bytes::


def test_bytes_scanning(rt: Runtime) -> None:
    _, s = handler_slice(b"a,b,,c\nline2\n")
    assert call(rt, "bytes::count", s, "\n") == 2
    assert call(rt, "bytes::count", s, ",") == 3
    assert call(rt, "bytes::find", s, "b") == 2
    assert call(rt, "bytes::find", s, "b", 3) == -1
    assert call(rt, "bytes::contains", s, "line2")
    assert call(rt, "bytes::starts_with", s, "a,b")
    assert call(rt, "bytes::ends_with", s, "2\n")
    assert call(rt, "bytes::len", s) == 13
    assert call(rt, "bytes::byte", s, 0) == ord("a")
    trap("index", call, rt, "bytes::byte", s, 13)
    trap("value", call, rt, "bytes::count", s, "")
    trap("type", call, rt, "bytes::count", 5, "x")


def test_bytes_on_a_sub_window_stays_inside_it(rt: Runtime) -> None:
    _, s = handler_slice(b"xxxx-ab-xxxx")
    mid = call(rt, "bytes::slice", s, 4, 8)  # "-ab-"
    assert call(rt, "text", mid) == "-ab-"
    assert call(rt, "bytes::count", mid, "x") == 0
    assert call(rt, "bytes::find", mid, "b") == 2
    assert call(rt, "bytes::find", mid, "x") == -1
    assert call(rt, "bytes::ends_with", mid, "b-")
    assert call(rt, "text", call(rt, "bytes::trim", Slice.static(b"  hi \n"))) == "hi"
    assert call(rt, "bytes::equal", mid, "-ab-")


def test_bytes_lines_yield_sub_slices_of_the_same_owner(rt: Runtime) -> None:
    owner, s = handler_slice(b"one\ntwo\n\nfour")
    lines = list(call(rt, "bytes::lines", s))
    assert [call(rt, "text", x) for x in lines] == ["one\n", "two\n", "\n", "four"]
    ended = [call(rt, "text", x) for x in call(rt, "bytes::lines", Slice.static(b"a\nb\n"))]
    assert ended == ["a\n", "b\n"]  # joined back, lines reproduce the data exactly
    assert list(call(rt, "bytes::lines", Slice.static(b""))) == []
    assert all(x.owner is owner and x._buf is s._buf for x in lines)
    parts = [call(rt, "text", x) for x in call(rt, "bytes::split", Slice.static(b"a,b,"), ",")]
    assert parts == ["a", "b", ""]
    it = iter(call(rt, "bytes::lines", s))
    next(it)
    owner.invalidate("closed mid-loop")
    trap("stale_slice", next, it)


def test_bytes_count_does_not_copy_the_slice() -> None:
    """The scan runs on the buffer window: a 32 MiB slice costs no allocation."""
    rt = make_rt()
    data = bytearray(b"x" * 1023 + b"\n") * (32 * 1024)
    owner = Owner("handler of /big")
    s = Slice(owner, data, 10, len(data) - 10)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        n = call(rt, "bytes::count", s, "\n")
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert n == 32 * 1024 - 1
    assert peak < 64 * 1024, f"bytes::count allocated {peak} bytes"


# --------------------------------------------------------------------------- text::


def test_text_functions(rt: Runtime) -> None:
    assert call(rt, "text::lines", "a\nb\r\nc") == ["a", "b", "c"]
    assert call(rt, "text::split", " a  b ") == ["a", "b"]
    assert call(rt, "text::split", "a,b", ",") == ["a", "b"]
    assert call(rt, "text::trim", "  x ") == "x"
    assert call(rt, "text::upper", Slice.static(b"abc")) == "ABC"
    assert call(rt, "text::replace", "aXbX", "X", "--") == "a--b--"
    assert call(rt, "text::join", ["a", "b", Slice.static(b"c")], ", ") == "a, b, c"
    assert call(rt, "text::slice", "hello", 1, -1) == "ell"
    assert call(rt, "text::find", "hello", "l") == 2
    assert call_method(rt, "Hello", "lower", []) == "hello"
    assert call_method(rt, ["x", "y"], "join", ["-"]) == "x-y"
    assert call(rt, "text::chr", 65) == "A" and call(rt, "text::ord", "A") == 65
    trap("type", call, rt, "text::join", "ab", ",")


def test_huge_string_allocations_trap_before_they_happen() -> None:
    rt = make_rt(budget=Budget(memory_bytes=1 << 20))
    e = trap("budget_memory", call, rt, "text::repeat", "x" * 1000, 10**12)
    assert "memory budget exhausted" in e.message
    trap("budget_memory", call, rt, "text::replace", "a" * 1000, "a", "b" * 10**4)
    assert call(rt, "text::repeat", "ab", 3) == "ababab"


# --------------------------------------------------------------------------- path::, trace::, budget::


def test_path_functions(rt: Runtime) -> None:
    assert call(rt, "path::matches", "/in/a.log", "/in/*.log")
    assert not call(rt, "path::matches", "/in/sub/a.log", "/in/*.log")
    assert call(rt, "path::matches", "/in/sub/a.log", "/in/**")
    assert call(rt, "path::join", "/out", "a", "b.txt") == "/out/a/b.txt"
    assert call(rt, "path::base", "/a/b.log") == "b.log"
    assert call(rt, "path::dir", "/a/b.log") == "/a"
    assert call(rt, "path::ext", "/a/b.tar.gz") == ".gz"
    assert call(rt, "path::stem", "/a/b.log") == "b"
    assert call(rt, "path::normalize", "/a/../b/./c//") == "/b/c"


def test_trace_events_and_spans() -> None:
    events: list[dict[str, Any]] = []
    rt = make_rt(trace=events.append)
    call(rt, "trace::event", "copied", {"n": 3})
    span = call(rt, "trace::span", "copy")
    call(rt, "trace::set_attribute", "files", 2)
    call_method(rt, span, "end", [])
    trap("handle", call_method, rt, span, "end", [])
    assert events[0]["event"] == "event" and events[0]["msg"] == "copied"
    assert events[0]["attrs"] == {"n": 3}
    assert events[1]["event"] == "span" and events[1]["name"] == "copy"
    assert events[1]["attrs"] == {"files": 2} and events[1]["duration_ns"] >= 0
    trap("type", call, rt, "trace::event", "x", {"k": [1]})


def test_trace_needs_its_capability() -> None:
    rt = make_rt(caps=["fs::read"])
    trap("capability", call, rt, "trace::event", "x")


def test_budget_module(rt: Runtime) -> None:
    rt.meter.step(10)
    assert call(rt, "budget::used", "steps") == 10
    assert call(rt, "budget::remaining", "steps") == rt.meter.budget.steps - 10
    assert set(call(rt, "budget::limit")) == {"steps", "time_s", "memory_bytes"}
    trap("value", call, rt, "budget::used", "money")
    assert isinstance(call(rt, "time::elapsed"), Duration)
    assert call(rt, "time::now") > 1e9


def test_format_value_survives_self_reference(rt: Runtime) -> None:
    xs: list[Any] = [1]
    xs.append(xs)
    xs.append(xs)
    m: dict[str, Any] = {}
    m["me"] = m
    assert format_value(rt, xs) == "[1, [...], [...]]"
    assert format_value(rt, m) == '{"me": {...}}'
    assert format_value(rt, [[], []]) == "[[], []]"  # siblings are not cycles
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert format_value(rt, deep).endswith("[...]" + "]" * 64)

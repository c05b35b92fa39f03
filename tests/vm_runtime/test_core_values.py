"""Slices, owners, results, literal types, budgets and capabilities, without a compiler."""

from __future__ import annotations

from decimal import Decimal

import pytest

from vegafs.vm.budget import CLOCK_EVERY, Budget, Meter, estimate_size
from vegafs.vm.caps import Capabilities, glob_match
from vegafs.vm.values import (
    STATIC,
    Condition,
    Duration,
    Money,
    Owner,
    Result,
    Slice,
    Trap,
    check_storable,
    get_attr,
    is_borrowed,
    iterate,
    type_name,
    unwrap,
)

# --------------------------------------------------------------------------- slices


def test_slice_is_a_zero_copy_window() -> None:
    buf = bytearray(b"hello world")
    s = Slice(Owner("h"), buf, 6)
    assert bytes(s.view()) == b"world"
    buf[6] = ord("W")  # same memory: the view sees it
    assert bytes(s.view()) == b"World"
    b, start, end = s.window()
    assert b is buf and (start, end) == (6, 11)
    assert s.view().readonly


def test_sub_slices_share_owner_and_clamp_like_python() -> None:
    owner = Owner("h")
    s = Slice(owner, b"0123456789", 2, 8)  # "234567"
    assert bytes(s.sub(1, 3).view()) == b"34"
    assert bytes(s.sub(-2, 100).view()) == b"67"
    assert bytes(s.sub(5, 1).view()) == b""
    t = s.sub(0, 3)
    owner.invalidate("its handler was closed")
    with pytest.raises(Trap) as exc:
        t.view()
    assert exc.value.kind == "stale_slice"
    assert str(exc.value) == ("stale slice: slice of h used after it was invalidated "
                              "(its handler was closed)")


def test_owner_generation_makes_old_slices_stale_but_new_ones_valid() -> None:
    owner = Owner("meta")
    old = Slice(owner, b"a")
    owner.invalidate("commit")
    new = Slice(owner, b"b")
    assert bytes(new.view()) == b"b"
    with pytest.raises(Trap):
        len(old)
    with pytest.raises(Trap):
        old.to_bytes()


def test_slice_window_bounds_are_checked() -> None:
    with pytest.raises(Trap) as exc:
        Slice(Owner("h"), b"abc", 2, 5)
    assert exc.value.kind == "index"


def test_static_slices_never_go_stale_and_may_be_stored() -> None:
    s = Slice.static(b"literal")
    assert s.owner is STATIC and s.is_static
    check_storable(s, "a list")  # no trap
    assert not is_borrowed(s)


def test_borrowed_slices_cannot_be_stored_even_inside_a_result() -> None:
    s = Slice(Owner("h"), b"x")
    for value in (s, Result.ok(s)):
        with pytest.raises(Trap) as exc:
            check_storable(value, "a list")
        assert exc.value.kind == "slice_escape"
        assert "cannot be stored in a list" in exc.value.message
    check_storable(Result.ok(3), "a map")
    check_storable("text", "a global")


# --------------------------------------------------------------------------- results and objects


def test_result_attributes_and_transparency() -> None:
    r = Result.fail("not_found: /x")
    assert get_attr(r, "success") is False
    assert get_attr(r, "error") == "not_found: /x"
    with pytest.raises(Trap) as exc:
        unwrap(r)
    assert exc.value.kind == "result" and "not_found: /x" in exc.value.message
    assert unwrap(Result.ok(5)) == 5
    assert unwrap(7) == 7


def test_no_python_attribute_is_reachable() -> None:
    for value in (Result.ok(1), Result.fail("e"), 3, "s", [1], {"a": 1}, None):
        for name in ("__class__", "__dict__", "__init__", "__globals__", "value.__class__"):
            if type(value) is Result and name == "value":
                continue
            with pytest.raises(Trap) as exc:
                get_attr(value, name)
            assert exc.value.kind in ("name", "result")


def test_type_names() -> None:
    assert [type_name(v) for v in (None, True, 1, 1.5, "s", [], {}, range(3),
                                   Duration(1), Money(Decimal(1)), Slice.static(b""),
                                   Result.ok())] == [
        "nil", "bool", "int", "float", "str", "list", "map", "range", "duration", "money",
        "slice", "result"]


def test_iterate() -> None:
    assert list(iterate([1, 2])) == [1, 2]
    assert list(iterate({"a": 1, "b": 2})) == ["a", "b"]
    assert list(iterate(Result.ok(range(3)))) == [0, 1, 2]
    with pytest.raises(Trap):
        iterate(5)


def test_trap_kinds_are_closed() -> None:
    with pytest.raises(ValueError):
        Trap("oops", "x")
    with pytest.raises(ValueError):
        Condition("KeyboardInterrupt")
    c = Condition("BudgetExceeded", 3)
    assert c.name == "BudgetExceeded" and c.payload == 3


def test_duration_and_money_arithmetic() -> None:
    assert Duration.parse(100, "ms") + Duration.parse(5, "s") == Duration(5_100_000_000)
    assert Duration.parse(1.5, "s") == Duration(1_500_000_000)
    assert str(Duration.parse(2, "m")) == "2m" and str(Duration(1500)) == "1500ns"
    assert Duration(10) * 3 == Duration(30) and 2 * Duration(5) == Duration(10)
    assert Duration(1) < Duration(2)
    assert Money.parse("$0.50") + Money.parse("0.25") == Money(Decimal("0.75"))
    assert str(Money.parse("$1_000.5")) == "$1000.5"
    assert Duration(1).__add__(1) is NotImplemented


# --------------------------------------------------------------------------- budgets


def test_step_budget_allows_exactly_the_limit() -> None:
    m = Meter(Budget(steps=100, time_s=None, memory_bytes=None))
    for _ in range(100):
        m.step()
    with pytest.raises(Trap) as exc:
        m.step()
    assert exc.value.kind == "budget_steps"
    assert exc.value.message == ("step budget exhausted: the run took more than 100 steps "
                                 "(--max-steps)")
    with pytest.raises(Trap):  # stays exhausted
        m.step()


def test_step_budget_with_batched_steps() -> None:
    m = Meter(Budget(steps=10_000, time_s=None))
    m.step(9_999)
    m.step(1)
    with pytest.raises(Trap):
        m.step(1)
    assert m.remaining()["steps"] == 0


def test_time_budget_is_checked_every_clock_every_steps() -> None:
    now = [0.0]
    m = Meter(Budget(steps=None, time_s=1.0), clock=lambda: now[0])
    now[0] = 5.0
    with pytest.raises(Trap) as exc:
        for _ in range(CLOCK_EVERY + 1):
            m.step()
    assert exc.value.kind == "budget_time"
    assert exc.value.message == "time budget exhausted: the run took more than 1s (--max-time)"
    assert m.steps_used <= CLOCK_EVERY + 1


def test_time_budget_check_time_directly() -> None:
    now = [0.0]
    m = Meter(Budget(time_s=2.0), clock=lambda: now[0])
    m.check_time()
    now[0] = 2.5
    with pytest.raises(Trap):
        m.check_time()


def test_memory_budget_refuses_before_allocating() -> None:
    m = Meter(Budget(memory_bytes=1000))
    m.charge_memory(600)
    with pytest.raises(Trap) as exc:
        m.charge_memory(1 << 60)
    assert exc.value.kind == "budget_memory"
    assert m.memory_used == 600  # the refused charge is not recorded
    m.charge_memory(400)
    assert m.memory_headroom() == 0


def test_reporting() -> None:
    m = Meter(Budget(steps=50, time_s=None, memory_bytes=None))
    m.step(5)
    assert m.used()["steps"] == 5
    assert m.remaining() == {"steps": 45, "time_s": None, "memory_bytes": None}
    assert m.limit()["steps"] == 50


def test_estimate_size_grows_with_content() -> None:
    assert estimate_size("a" * 100) > estimate_size("a")
    assert estimate_size(list(range(100))) > estimate_size([])
    assert estimate_size({i: i for i in range(10)}) > estimate_size({})


# --------------------------------------------------------------------------- capabilities


@pytest.mark.parametrize(("glob", "path", "expected"), [
    ("/out/**", "/out", True),
    ("/out/**", "/out/a/b/c", True),
    ("/out/**", "/outside", False),
    ("/out/*.log", "/out/a.log", True),
    ("/out/*.log", "/out/sub/a.log", False),
    ("/**/*.log", "/a/b/c.log", True),
    ("/a?c", "/abc", True),
    ("/a?c", "/a/c", False),
    ("/[ab]x", "/bx", True),
    ("/[!ab]x", "/bx", False),
    ("mem://**", "mem://", True),
    ("/a.b", "/axb", False),
])
def test_glob(glob: str, path: str, expected: bool) -> None:
    assert glob_match(glob, path) is expected


def test_capabilities_parse_and_check() -> None:
    caps = Capabilities.parse(["fs::read", "fs::write:/out/**", "fs::write:/tmp/*",
                               "meta::write"])
    assert caps.allows("fs::read", "/anything")
    assert caps.allows("fs::write", "/out/x/y") and caps.allows("fs::write", "/tmp/a")
    assert not caps.allows("fs::write", "/tmp/a/b")
    assert not caps.allows("vfs::mount", "mem://")
    with pytest.raises(Trap) as exc:
        caps.check("fs::write", "/etc/passwd", op="write('/etc/passwd')")
    assert exc.value.message == ("write('/etc/passwd') needs fs::write on /etc/passwd; this run "
                                 "holds fs::read, fs::write:/out/**, fs::write:/tmp/*, meta::write")


def test_unrestricted_grant_absorbs_restricted_ones() -> None:
    caps = Capabilities.parse(["fs::write:/a/**", "fs::write"])
    assert caps.describe() == "fs::write"


@pytest.mark.parametrize("bad", ["fs", "::read", "fs::exec", "fs::read:", "net::connect"])
def test_bad_capabilities_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        Capabilities.parse([bad])


def test_no_capabilities_by_default() -> None:
    caps = Capabilities()
    assert caps.describe() == "no capabilities"
    with pytest.raises(Trap):
        caps.check("fs::read", "/x")

"""try/catch catches named conditions only; traps are never catchable."""

from __future__ import annotations

from typing import Any

from vegafs.vm import compile_source, run_program
from vegafs.vm.runtime import Runtime
from vegafs.vm.stdlib.registry import Builtin
from vegafs.vm.values import Condition, Trap


def _raise(rt: Runtime, name: Any, payload: Any = None) -> None:
    raise Condition(name, payload)


def _trap(rt: Runtime) -> None:
    raise Trap("capability", "not allowed")


EXTRA = {"raise_cond": Builtin("raise_cond", _raise, 1, 2), "trap": Builtin("trap", _trap, 0, 0)}


def _run(source: str) -> tuple[Any, str]:
    out: list[str] = []
    program = compile_source(source, "t.vega", builtins=EXTRA)
    outcome = run_program(program, Runtime(stdout=out.append), builtins=EXTRA)
    return outcome, "".join(out)


def test_condition_crosses_frames_to_the_caller_handler() -> None:
    outcome, out = _run("""
fn inner() { raise_cond("AgentFailed", "model down"); print("not reached"); }
fn middle() { inner(); }
try { middle(); } catch Timeout { print("t"); } catch AgentFailed(why) { print("caught: " + why); }
print("after");
""")
    assert outcome.ok
    assert out == "caught: model down\nafter\n"


def test_unmatched_condition_propagates_to_outer_try() -> None:
    outcome, out = _run("""
try {
    try { raise_cond("BudgetExceeded"); } catch Timeout { print("wrong"); }
    print("not reached");
} catch BudgetExceeded { print("outer"); }
""")
    assert outcome.ok and out == "outer\n"


def test_uncaught_condition_ends_the_run_with_a_positioned_trap() -> None:
    outcome, _ = _run('let x = 1;\nraise_cond("Timeout");\n')
    assert outcome.trap is not None
    assert outcome.trap.kind == "value"
    assert outcome.trap.message == "condition Timeout was not caught"
    assert (outcome.trap.pos.line, outcome.trap.pos.col) == (2, 1)


def test_a_trap_is_not_caught_by_try() -> None:
    outcome, out = _run("""
try { trap(); } catch BudgetExceeded { print("caught"); } catch Timeout { print("caught"); }
print("after");
""")
    assert out == ""
    assert outcome.trap is not None and outcome.trap.kind == "capability"


def test_loop_state_survives_a_caught_condition() -> None:
    outcome, out = _run("""
let n = 0;
for i in range(5) {
    try { if i % 2 == 0 { raise_cond("Timeout", i); } } catch Timeout(v) { n = n + v; }
}
print(n);
""")
    assert outcome.ok and out == "6\n"

"""Fuzzing the parser, the compiler and the interpreter (hypothesis).

Properties, for any input:
- compiling raises nothing but ``VegaCompileError`` (or succeeds);
- running a compiled program ends with a value or a ``TrapReport`` — no Python
  exception escapes, nothing hangs (every run has a step, time and memory budget);
- a budget is never overrun by more than the stated slack: the step counter
  stops at ``steps + 1`` (the step that trips the limit counts), memory is
  refused before it is allocated (never over), and wall time is checked every
  ``budget.CLOCK_EVERY`` steps plus inside blocking builtins.
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vegafs.vm import VegaCompileError, compile_source, run_program
from vegafs.vm.budget import Budget
from vegafs.vm.runtime import Runtime

STEP_SLACK = 1
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

TOKENS = ["let", "fn", "if", "else", "while", "loop", "for", "in", "break", "continue",
          "return", "try", "catch", "hook", "on", "after", "true", "false", "nil", "x", "y",
          "f", "bytes::count", "len", "print", "(", ")", "{", "}", "[", "]", ",", ";", ":",
          "=", "==", "!=", "<", ">", "+", "-", "*", "/", "%", "!", "&&", "||", ".", "1",
          "2.5", "100ms", "64kb", "$1.50", '"s"', '"\\n"', "//c\n", " ", "\n", "1_000",
          '"\\q"', "5zz", "@", "::"]


def _compile_or_error(text: str) -> object:
    try:
        return compile_source(text, "fuzz.vega")
    except VegaCompileError as exc:
        assert exc.diagnostics, "a compile error must carry at least one diagnostic"
        for d in exc.diagnostics:
            assert d.pos.line >= 0 and d.message
        exc.render()
        return None


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join))
def test_token_soup_only_raises_compile_errors(text: str) -> None:
    _compile_or_error(text)


@FUZZ
@given(st.text(max_size=80))
def test_arbitrary_text_only_raises_compile_errors(text: str) -> None:
    _compile_or_error(text)


# ---------------------------------------------------------------- random programs

VARS = ["a", "b", "c"]
atoms = st.one_of(
    st.integers(-5, 5).map(str),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["0.5", "2.0", "true", "false", "nil", '"ab"', '""', "1s", "4kb", "$0.25",
                     "[]", "[1, 2]", '{"k": 1}']),
    st.sampled_from(VARS),
)


def _binary(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    ops = st.sampled_from(["+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||"])
    return st.one_of(
        st.tuples(children, ops, children).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda e: f"(-{e})"),
        children.map(lambda e: f"(!{e})"),
        children.map(lambda e: f"[{e}]"),
        st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}]"),
        children.map(lambda e: f"len({e})"),
        children.map(lambda e: f"str({e})"),
        children.map(lambda e: f"g({e})"),
    )


exprs = st.recursive(atoms, _binary, max_leaves=8)


def _stmts(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(exprs, children, children).map(lambda t: f"if {t[0]} {{ {t[1]} }} else {{ {t[2]} }}"),
        st.tuples(exprs, children).map(lambda t: f"while {t[0]} {{ {t[1]} }}"),
        st.tuples(children, exprs).map(lambda t: f"loop {{ {t[0]} if {t[1]} {{ break; }} }}"),
        st.tuples(st.sampled_from(VARS), exprs, children).map(
            lambda t: f"for {t[0]} in {t[1]} {{ {t[2]} }}"),
        st.lists(children, min_size=2, max_size=3).map(" ".join),
    )


simple = st.one_of(
    st.tuples(st.sampled_from(VARS), exprs).map(lambda t: f"{t[0]} = {t[1]};"),
    exprs.map(lambda e: f"print({e});"),
    st.just("continue;"), st.just("break;"),
    exprs.map(lambda e: f"{e};"),
)
programs = st.recursive(simple, _stmts, max_leaves=10)

PRELUDE = """
fn g(n) { if n == nil { return 0; } if n == 0 { return 1; } return g(n - 1) + 1; }
let a = 1; let b = 2; let c = [1, 2, 3];
"""


@FUZZ
@given(programs)
def test_random_programs_end_in_a_value_or_a_trap_within_budget(body: str) -> None:
    try:
        program = compile_source(PRELUDE + body, "gen.vega")
    except VegaCompileError:
        return  # e.g. break outside a loop: compile errors are fine
    budget = Budget(steps=3_000, time_s=2.0, memory_bytes=1 << 20)
    out: list[str] = []
    rt = Runtime(budget, stdout=out.append)
    started = time.monotonic()
    outcome = run_program(program, rt)  # must not raise
    elapsed = time.monotonic() - started
    assert outcome.steps <= budget.steps + STEP_SLACK
    assert rt.meter.memory_used <= budget.memory_bytes
    assert elapsed < budget.time_s + 1.0
    if outcome.trap is not None:
        assert outcome.trap.pos.line >= 1, outcome.trap.render()
        outcome.trap.render()


@FUZZ
@given(st.integers(0, 10_000), st.binary(max_size=3))
def test_mutated_valid_program_is_compiled_or_rejected(where: int, junk: bytes) -> None:
    base = PRELUDE + "while a < 10 { a = a + 1; if a == 5 { continue; } print(a); }\n"
    i = where % (len(base) + 1)
    _compile_or_error(base[:i] + junk.decode("latin-1") + base[i + 1:])

"""The fast tier against the reference interpreter: same output, value, trap (kind,
message, position, Vega call stack), steps and memory charged — exactly (the stated
slack is zero: both tiers charge a step at each LOOP and call, before it).

Programs: every language test file and example, and random programs from a
hypothesis strategy (arithmetic on mixed types, big ints, strings, lists, maps,
nested loops with break/continue, recursion, short-circuit logic), run under small
step and memory budgets so runaway loops and growth trap on both tiers alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vegafs.drivers.mem import MemDriver
from vegafs.vm import VegaCompileError, compile_source
from vegafs.vm import fast as fast_module
from vegafs.vm.budget import Budget
from vegafs.vm.bytecode import Program
from vegafs.vm.caps import Capabilities
from vegafs.vm.fast import compile_fast, run_fast
from vegafs.vm.interp import run_function
from vegafs.vm.runtime import Runtime

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Observed:
    out: str
    value: Any
    steps: int
    memory: int
    trap: tuple[Any, ...] | None


def observe(program: Program, tier: str, budget: Budget, args: list[str] | None = None,
            ) -> Observed:
    out: list[str] = []
    rt = Runtime(budget, Capabilities.all(), stdout=out.append, stderr=out.append,
                 args=args or ["a1", "a2"])
    rt.namespace.attach("/m", MemDriver())
    runner = run_fast if tier == "fast" else run_function
    o = runner(program, rt, program.main, [])
    trap = None
    if o.trap is not None:
        trap = (o.trap.kind, o.trap.message, o.trap.pos,
                tuple((f.function, f.pos) for f in o.trap.stack))
    return Observed("".join(out), repr(o.value), o.steps, o.memory_used, trap)


def assert_same(program: Program, budget: Budget, args: list[str] | None = None) -> Observed:
    ref = observe(program, "interp", budget, args)
    fast = observe(program, "fast", budget, args)
    assert fast == ref, f"tiers differ on:\n{program.source}"
    return ref


BUDGET = Budget(steps=200_000, time_s=None, memory_bytes=8 << 20)


def _programs() -> list[Path]:
    files = sorted((ROOT / "tests" / "vm" / "lang").glob("*.vega"))
    files += sorted((ROOT / "examples").glob("*.vega"))
    return files


@pytest.mark.parametrize("path", _programs(), ids=lambda p: p.name)
def test_language_files_run_identically(path: Path) -> None:
    try:
        program = compile_source(path.read_text(), str(path))
    except VegaCompileError:
        pytest.skip("a compile-error fixture")
    if program.main is None:
        pytest.skip("a hook file")
    assert_same(program, BUDGET)


# --------------------------------------------------------------------------- targeted cases


def compiled(src: str) -> Program:
    return compile_source(src, "t.vega")


def test_benchmark_shapes_are_lowered_not_declined() -> None:
    for src in (
        "fn fib(n) { if n < 2 { return n; } return fib(n - 1) + fib(n - 2); } print(fib(15));",
        "let i = 0; let s = 0; while i < 1000 { s = s + i * 3 % 7; i = i + 1; } print(s);",
        'let p = []; for i in range(100) { p.push("item" + str(i)); } '
        'print(len(text::join(p, ",")));',
        'let c = {}; for w in text::split("a b a c", " ") { let n = c[w]; '
        'if n == nil { c[w] = 1; } else { c[w] = n + 1; } } print(c);',
    ):
        program = compiled(src)
        assert compile_fast(program) is not None, src
        assert_same(program, BUDGET)


def test_int_loops_are_lowered_without_type_or_size_tests() -> None:
    """What the speed rests on, pinned: the loop counter and accumulator are known
    ints (no type test), the loop is bounded (size checks only behind the `_c`
    flag) and fib's recursive calls carry no size check on `n - 1`, `n - 2`."""
    loop = compile_fast(compiled(
        "let n = int(args()[0]); let i = 0; let s = 0;\n"
        "while i < n { s = s + i * 3 % 7; i = i + 1; }\nprint(s);\n"))
    assert loop is not None
    body = loop.source[loop.source.index("_rebound("):]
    assert "type(" not in body and "_arith" in body  # _arith: behind `_c` only
    assert all(line.lstrip().startswith("if _c and") for line in body.splitlines()
               if "bit_length" in line)
    fib = compile_fast(compiled(
        "fn fib(n) { if n < 2 { return n; } return fib(n - 1) + fib(n - 2); }\nfib(3);\n"))
    assert fib is not None
    variant = fib.source[fib.source.index("def f1_i("):]
    assert "bit_length" not in variant  # the sum of two results is bounded too


def test_try_catch_is_declined_and_runs_on_the_interpreter() -> None:
    program = compiled("try { print(1); } catch BudgetExceeded { print(2); }")
    assert compile_fast(program) is None
    assert assert_same(program, BUDGET).out == "1\n"


def test_nesting_beyond_pythons_block_limit_is_declined_not_a_crash() -> None:
    depth = 25  # Python refuses more than 20 nested loops/try blocks in one function
    src = ("let x = 0;\n" + "while x < 1 { " * depth + "x = 1;" + " }" * depth
           + "\nprint(x);\n")
    program = compiled(src)
    assert compile_fast(program) is None
    assert assert_same(program, BUDGET).out == "1\n"


def test_step_budget_traps_at_the_same_step_and_place() -> None:
    program = compiled("let i = 0;\nloop {\n    i = i + 1;\n}\n")
    ref = assert_same(program, Budget(steps=1000, time_s=None, memory_bytes=None))
    assert ref.trap is not None and ref.trap[0] == "budget_steps"
    assert ref.trap[2].line == 2  # the back-edge carries the position of its `loop`


@pytest.mark.parametrize("steps", [None, 150, 1_000])
def test_builtins_that_step_or_read_the_meter_agree(steps: int | None) -> None:
    """bytes::lines steps per item and bytes::count per MiB; budget::used reads the
    count: the fast tier hands its step counter to the meter around every call."""
    src = ('fn used() { return budget::used("steps"); }\n'
           'write("/m/f", text::repeat("ab\\n", 40));\n'
           'let s = read("/m/f");\nlet n = 0;\n'
           'for line in bytes::lines(s) {\n    n = n + len(line);\n'
           '    if n % 30 == 0 { print(used(), budget::used("steps")); }\n}\n'
           'let i = 0;\nwhile i < 50 { i = i + 1; }\n'
           'print(n, bytes::count(s, "b"), used(), budget::remaining("steps"));\n')
    ref = assert_same(compiled(src), Budget(steps=steps, time_s=None, memory_bytes=None))
    if steps == 150:
        assert ref.trap is not None and ref.trap[0] == "budget_steps"
    else:
        assert ref.trap is None and ref.out


def test_time_budget_stops_a_batched_loop() -> None:
    """Wall time is not deterministic, so only the fast tier is checked here: an
    innermost loop keeps its steps in a local, and must still read the clock."""
    program = compiled("let i = 0;\nloop {\n    i = i + 1;\n}\n")
    o = observe(program, "fast", Budget(steps=None, time_s=0.05, memory_bytes=None))
    assert o.trap is not None and o.trap[0] == "budget_time" and o.trap[2].line == 2
    assert o.steps > 0


def test_compiling_is_not_charged_to_the_run_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hook's first run compiles it to the fast tier; that host cost must not
    count against the run's (often 50 ms) time budget."""
    now = [100.0]
    real = fast_module._compile

    def slow_compile(program: Program, extra: Any) -> Any:
        now[0] += 1.0  # a second of (fake) compile time
        return real(program, extra)

    monkeypatch.setattr(fast_module, "_compile", slow_compile)
    program = compiled("let i = 0;\nwhile i < 10_000 { i = i + 1; }\nprint(i);\n")
    rt = Runtime(Budget(steps=None, time_s=0.5, memory_bytes=None), Capabilities.all(),
                 stdout=[].append, clock=lambda: now[0])
    outcome = run_fast(program, rt, program.main, [])
    assert outcome.trap is None and rt.meter.elapsed_s == 0.0


def test_deep_recursion_traps_identically() -> None:
    program = compiled("fn down(n) { return down(n + 1); }\ndown(0);\n")
    ref = assert_same(program, Budget(steps=None, time_s=None, memory_bytes=None))
    assert ref.trap is not None and ref.trap[0] == "recursion"
    assert len(ref.trap[3]) == 1000


def test_trap_inside_a_builtin_reports_the_call_site_and_stack() -> None:
    program = compiled('fn f(x) {\n    return int(x);\n}\nlet a = 1;\nf("zz");\n')
    ref = assert_same(program, BUDGET)
    assert ref.trap is not None and ref.trap[0] == "value"
    assert [fn for fn, _ in ref.trap[3]] == ["<main>", "f"] or len(ref.trap[3]) == 2


@pytest.mark.parametrize("src", [
    'fn f(x) {\n    return x + 1;\n}\nprint(f(1));\nprint(f(1.5));\nprint(f("a"));\n',
    'fn h(n) { if n > 2 { return "s" + str(n); } return n; }\nprint(h(1) + 1, h(5));\n'
    'print(h(1) + h(2), h(3) + "!");\nprint(h(4) + 1);\n',
    'fn k(a, b) { let t = a; a = "x"; return t + b; }\nprint(k(1, 2));\nprint(k(1, "y"));\n',
    'fn d(n) { if n == 0 { return 0; } return 1 + d(n - 1); }\nprint(d(500));\n'
    'print(d(5000));\n',
    'let m = {"a": 1};\nm[2] = "two";\nm[true] = nil;\nprint(m["a"], m[2], m[true], m["zz"]);\n'
    'let l = [1, 2, 3];\nprint(l[0], l[-1]);\nl[1] = "x";\nprint(l);\nprint(l[3]);\n',
    'let l = [1];\nprint(l["a"]);\n',
    'let r = read("/m/nope");\nprint(r == nil, r != nil, nil == r, nil != r);\n'
    'write("/m/f", "x");\nlet q = stat("/m/f");\nprint(q == nil, q != nil);\n'
    'let z = nil;\nprint(z == nil, z != nil, 1 == nil, "a" != nil, [] == nil);\n'
    'print((1 < 2) == nil);\nprint((z < 2) == nil);\n',
    'let p = text::split("a b", " ");\np.push(3);\nlet m = {};\n'
    'for w in p { m[w] = 1; print(m[w]); }\n'
    'for w in text::split("x y x", " ") { m[w] = len(w); print(m[w] + 1); }\nprint(m);\n'
    'for w in text::split("1 2", " ") { print(w + 1); }\n',
    'let m = {};\nm[[1]] = 2;\n',
    'let s = "hey";\nprint(s[1], s[-1]);\nlet i = 0;\nwhile i < 3 { print(s[i]); i = i + 1; }\n'
    'print(s[5]);\n',
])
def test_int_specialised_variants_fall_back_exactly(src: str) -> None:
    """Functions called with int arguments run an int-specialised variant, and
    locals known to hold a map/list/str/int index without type tests; other
    arguments, keys, non-int returns and reassigned parameters behave identically."""
    assert compile_fast(compiled(src)) is not None
    assert_same(compiled(src), Budget(steps=None, time_s=None, memory_bytes=None))


def test_memory_budget_traps_identically() -> None:
    """Inlined memory charges trap at the same allocation with the meter's message."""
    src = ('let s = "";\nlet l = [];\nlet m = {};\nloop {\n    s = s + "abc";\n'
           '    l.push(str(len(s)));\n    m[s] = [1, 2];\n}\n')
    ref = assert_same(compiled(src), Budget(steps=None, time_s=None, memory_bytes=300_000))
    assert ref.trap is not None and ref.trap[0] == "budget_memory"
    assert "memory budget exhausted" in ref.trap[1]


def test_big_int_growth_is_charged_and_bounded_identically() -> None:
    squaring = compiled("let x = 3; let i = 0; while i < 40 { x = x * x; i = i + 1; }")
    ref = assert_same(squaring, Budget(steps=None, time_s=None, memory_bytes=1 << 20))
    assert ref.trap is not None and ref.trap[0] == "value"  # past the int size bound
    doubling = compiled("let x = 1; let i = 0; while i < 9000 { x = x + x; i = i + 1; }")
    ref = assert_same(doubling, Budget(steps=None, time_s=None, memory_bytes=1 << 20))
    assert ref.trap is not None and ref.trap[0] in ("budget_memory", "value")
    assert ref.memory > 100_000  # ints over 4096 bits were charged on both tiers


@pytest.mark.parametrize("step", ["x + x", "x * 3", "-(x + x)", "x + x + x + x",
                                  "(x + x) / 3 + x", "x % (x + x + x) + x"])
@pytest.mark.parametrize("back", ["grow(S, k - 1)", "grow(S, k - 1) + x", "x - grow(S, k - 1)"])
@pytest.mark.parametrize("bottom", ["x", f"x * {1 << 1200}"])
@pytest.mark.parametrize("start_bits", [40, 2000, 2040, 3000, 3100])
def test_size_checks_left_out_by_bounds_still_charge_identically(
        step: str, back: str, bottom: str, start_bits: int) -> None:
    """The "_i" variants leave out size checks that their depth-relative bounds prove
    cannot fire (fast.PARAM_BITS, RET_BITS). Recursions that grow an int by one or
    more bits per call, from below and above the parameter bound, a product far
    past it at the deepest call, results combined on the way back, across
    BIG_INT_BITS (charged) and up to MAX_INT_BITS (the trap): charges and traps
    must match the interpreter's."""
    ret = back.replace("S", step)
    src = (f"fn grow(x, k) {{ if k == 0 {{ return {bottom}; }} return {ret}; }}\n"
           f"let x = 1; let i = 0; while i < {start_bits} {{ x = x + x; i = i + 1; }}\n"
           "let r = grow(x, 950);\nprint(len(str(r)));\n")
    ref = assert_same(compiled(src), Budget(steps=None, time_s=None, memory_bytes=None))
    if start_bits >= 2000 and bottom != "x":
        assert ref.memory > 0 or ref.trap is not None  # ints over BIG_INT_BITS were made


@pytest.mark.parametrize("body", [
    "x = x + x + x;",
    "x = x * 5;",
    "x = x - y; y = y + x + 1;",
    "x = (x + 1) / 2 + x + x;",
    "x = x % (y + 7) + x + x; if x > y { continue; }",
    "let t = x * 3; x = t - 1; if i == 150 { break; }",
    "x = -x - x;",
    "x = x + len(str(i)) + x;",
    "x = x * 1000000 + len(str(i));",
    'let s = "" + str(x + x); x = x + len(s) * 2; if i % 90 == 0 { print(budget::used("steps")); }',
])
@pytest.mark.parametrize("start_bits", [10, 3900, 4090, 5000])
def test_loops_that_leave_out_size_checks_charge_identically(body: str, start_bits: int) -> None:
    """Innermost loops without calls skip their int size checks for as many
    iterations as the growth bound allows (fast._rebound), then check again. Loops
    that start small, near BIG_INT_BITS and above it, and grow across it up to the
    MAX_INT_BITS trap: every charge and trap must match the interpreter's."""
    src = (f"let x = 1; let i = 0; while i < {start_bits} {{ x = x + x; i = i + 1; }}\n"
           "let y = 3;\nfor r in range(2) {\n    i = 0;\n"
           f"    while i < 400 {{\n        i = i + 1;\n        {body}\n    }}\n"
           "    print(len(str(x)));\n    x = 7;\n}\n")
    ref = assert_same(compiled(src), Budget(steps=None, time_s=None, memory_bytes=None))
    if start_bits >= 3900:
        assert ref.memory > 0  # ints over BIG_INT_BITS were made (and charged)


@pytest.mark.parametrize("steps", [None, 100, 250, 4_500, 9_000])
def test_batched_loops_hand_their_count_to_builtins_identically(steps: int | None) -> None:
    """Innermost `while` loops with builtin and method calls keep their step count
    in a local and hand it to the meter around each call: builtins that read the
    count or step it (bytes::count) see the interpreter's numbers,
    and budgets trap at the same step, at back-edges and at calls alike."""
    src = ('write("/m/f", text::repeat("ab\\n", 40));\nlet s = read("/m/f");\n'
           "let i = 0;\nlet n = 0;\nlet l = [];\nwhile i < 3000 {\n    i = i + 1;\n"
           '    n = n + bytes::count(s, "b") + len(l);\n    l.push(i);\n'
           '    if i % 97 == 0 { print(i, n, budget::used("steps"), budget::remaining("steps")); }\n'
           "}\nprint(n, budget::used(\"steps\"));\n")
    program = compiled(src)
    fast = compile_fast(program)
    assert fast is not None and "_rebound(" in fast.source  # batched and bounded
    ref = assert_same(program, Budget(steps=steps, time_s=None, memory_bytes=None))
    assert (ref.trap is None) == (steps is None)


def test_slices_keep_their_rules_on_the_fast_tier() -> None:
    src = ('write("/m/f", "l1\\nl2\\n");\nlet h = open("/m/f", "r");\nlet s = h.read();\n'
           'h.close();\nprint(len(s));\n')
    ref = assert_same(compiled(src), BUDGET)
    assert ref.trap is not None and ref.trap[0] == "stale_slice" and ref.trap[2].line == 5
    src = ('fn keep(v) {\n    let xs = [];\n    xs.push(v);\n}\n'
           'write("/m/f", "x");\nkeep(read("/m/f"));\n')
    ref = assert_same(compiled(src), BUDGET)
    assert ref.trap is not None and ref.trap[0] == "slice_escape"


# --------------------------------------------------------------------------- random programs

INT_VARS = ("a", "b", "d")
MIXED_LEAVES = ['"x"', '""', "true", "nil", "1.5", "[1, 2]", '{"k": 1}', "c", "l"]


@st.composite
def int_expr(draw: st.DrawFn, depth: int = 0) -> str:
    """Mostly well-typed int arithmetic (so programs run far), with a small chance of
    a mixed-type operand (so type traps are compared too)."""
    leaf = st.one_of(st.sampled_from(INT_VARS), st.integers(-9, 9).map(lambda i: f"({i})"),
                     st.sampled_from(["1_000_000_007", "123456789012345678901234567890"]))
    roll = draw(st.integers(0, 99))
    if depth >= 3 or roll < 35:
        return draw(leaf)
    if roll < 38:
        return draw(st.sampled_from(MIXED_LEAVES))
    sub = int_expr(depth + 1)
    if roll < 85:
        op = draw(st.sampled_from(["+", "-", "*", "/", "%", "+", "-"]))
        return f"({draw(sub)} {op} {draw(sub)})"
    if roll < 90:
        return f"-{draw(sub)}"
    if roll < 95:
        return f"len(str({draw(sub)}))"
    return f"g({draw(sub)}, {draw(sub)})"


@st.composite
def bool_expr(draw: st.DrawFn, depth: int = 0) -> str:
    roll = draw(st.integers(0, 9))
    if depth >= 2 or roll < 6:
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        return f"{draw(int_expr(1))} {op} {draw(int_expr(1))}"
    if roll < 9:
        op = draw(st.sampled_from(["&&", "||"]))
        return f"({draw(bool_expr(depth + 1))} {op} {draw(bool_expr(depth + 1))})"
    return f"!({draw(bool_expr(depth + 1))})"


@st.composite
def any_expr(draw: st.DrawFn) -> str:
    return draw(st.one_of(int_expr(), bool_expr(), st.sampled_from(
        ['c + "y"', "str(a) + c", "[a, b]", '{"a": a}', "l", "m", "text::upper(c)", "nil"])))


@st.composite
def stmts(draw: st.DrawFn, depth: int = 0, in_loop: bool = False) -> str:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.integers(0, 12 if depth < 3 else 5))
        if kind <= 2:
            out.append(f"{draw(st.sampled_from(INT_VARS))} = {draw(int_expr())};")
        elif kind == 3:
            out.append(f"print({draw(any_expr())});")
        elif kind == 4:
            out.append(draw(st.sampled_from(
                ["break;", "continue;", "d = d + 1;"] if in_loop else ['c = c + "z";'])))
        elif kind == 5:
            out.append(f"l.push({draw(any_expr())});")
        elif kind <= 7:
            body = draw(stmts(depth + 1, in_loop))
            other = draw(stmts(depth + 1, in_loop))
            out.append(f"if {draw(bool_expr())} {{ {body} }} else {{ {other} }}")
        elif kind == 8:
            v = f"i{depth}"  # nested loops get distinct names; siblings may share
            body = draw(stmts(depth + 1, True))
            out.append(f"for {v} in range({draw(st.integers(0, 6))}) {{ a = a + {v}; {body} }}")
        elif kind == 9:
            body = draw(stmts(depth + 1, True))
            out.append(f"while d < {draw(st.integers(0, 30))} {{ d = d + 1; {body} }}")
        elif kind == 10:
            body = draw(stmts(depth + 1, True))
            out.append(f"loop {{ d = d + 1; if d > {draw(st.integers(0, 30))} {{ break; }} "
                       f"{body} }}")
        elif kind == 11:
            out.append(f"m[str({draw(int_expr())})] = {draw(any_expr())};")
        else:
            out.append(f"b = len(l) + len(m); c = str(m[str({draw(int_expr())})]);")
    return " ".join(out)


@st.composite
def programs(draw: st.DrawFn) -> str:
    g_body = draw(st.sampled_from([
        "return x + y;", "if x == y { return x; } return g2(y, x);", "return len([x, y]);",
        "return len(str(x) + str(y));", "if len(str(x)) > 40 { return 0; } return x * y;",
    ]))
    return (f"fn g(x, y) {{ {g_body} }}\n"
            "fn g2(x, y) { if type(x) == \"int\" && x > 0 { return g(x - 1, y); } return y; }\n"
            "let a = 1; let b = 2; let c = \"s\"; let d = 0; let l = []; let m = {};\n"
            f"{draw(stmts())}\n"
            "print(a, b, c, d, l, m);\n")


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def test_random_programs_run_identically(src: str) -> None:
    try:
        program = compile_source(src, "random.vega")
    except VegaCompileError:
        return  # the generator may produce a program the checker rejects; not our subject
    assert compile_fast(program) is not None
    assert_same(program, Budget(steps=20_000, time_s=None, memory_bytes=1 << 20))

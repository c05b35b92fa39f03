"""Error messages, pinned: what a user reads is part of the interface."""

from __future__ import annotations

import pytest

from vegafs.vm import VegaCompileError, compile_source

from .vmutil import run_source


def _compile_error(source: str) -> str:
    with pytest.raises(VegaCompileError) as info:
        compile_source(source, "e.vega")
    return info.value.render()


def test_unexpected_character() -> None:
    assert _compile_error("let x = 1;\nlet y = #;\n") == (
        "e.vega:2:9: syntax error: missing expression (unexpected character '#')\n"
        "    let y = #;\n"
        "            ^\n"
        "    expected '!', '(', '-', '[', '{', a money literal, a name, a number, a string")


def test_unexpected_end_of_file_names_the_unclosed_block() -> None:
    assert _compile_error("fn f() {\n    return 1;\n") == (
        "e.vega:2:14: syntax error: unclosed block: missing '}' (unexpected end of file)\n"
        "        return 1;\n"
        "                 ^\n"
        "    expected '!', '(', '-', '[', 'break', 'continue', 'false', 'for', 'if', 'let', "
        "'loop', 'nil', ...")


def test_missing_paren() -> None:
    assert _compile_error("print(1, 2;\n").splitlines()[0] == (
        "e.vega:1:11: syntax error: missing ')' (unexpected ';')")


def test_checker_reports_all_errors_with_suggestions() -> None:
    text = _compile_error("let total = 0;\ntotl = 1;\nprnt(total);\nfn f(a, a) { }\n")
    assert text == (
        "e.vega:2:1: assignment to undeclared variable 'totl'\n"
        "    totl = 1;\n"
        "    ^\n"
        "    did you mean 'total'?\n"
        "e.vega:3:1: undefined fn 'prnt'\n"
        "    prnt(total);\n"
        "    ^\n"
        "    did you mean 'print'?\n"
        "e.vega:4:1: fn 'f' has a repeated parameter name\n"
        "    fn f(a, a) { }\n"
        "    ^")


def test_trap_with_call_stack_render() -> None:
    ran = run_source("fn a(x) { return b(x); }\nfn b(x) { return x / 0; }\nprint(a(1));\n",
                     "t.vega")
    assert ran.outcome.trap is not None
    assert ran.outcome.trap.render() == (
        "t.vega:2:20: trap (zero_division): division by zero\n"
        "    fn b(x) { return x / 0; }\n"
        "                       ^\n"
        "call stack (innermost last):\n"
        "  t.vega:3:7: in <main>\n"
        "  t.vega:1:18: in a\n"
        "  t.vega:2:20: in b")


@pytest.mark.parametrize("source, message", [
    ('print(1 + "a");', "cannot add int and str"),
    ("print(-\"a\");", "cannot negate a str"),
    ('print(1 < "a");', "cannot compare int < str"),
    ("if nil { }", "a condition must be a bool, got nil"),
    ("print(!1);", "the operand of ! must be a bool, got int"),
    ("let m = {}; m[[1]] = 2;", "a map key must be a str, int, bool or nil, got list"),
    ("let m = {1.5: 2};", "a map key must be a str, int, bool or nil, got float"),
    ("for x in 5 { }", "cannot iterate over a int"),
    ("print(5[0]);", "cannot index a int"),
    ('print([1][\"a\"]);', "a list index must be an int, got str"),
    ("print(10 % 0);", "modulo by zero"),
])
def test_type_trap_messages(source: str, message: str) -> None:
    ran = run_source(source)
    assert ran.outcome.trap is not None
    assert ran.outcome.trap.message == message


def test_deep_recursion_message() -> None:
    ran = run_source("fn f(n) { return f(n + 1); }\nf(0);\n")
    assert ran.outcome.trap is not None
    assert ran.outcome.trap.kind == "recursion"
    assert ran.outcome.trap.message == ("call depth exceeded 1000 frames (calling f; "
                                        "infinite recursion?)")
    assert len(ran.outcome.trap.stack) == 1000


@pytest.mark.parametrize("source", [
    "let x = " + "+".join(["1"] * 5000) + ";",
    "let x = " + "[" * 3000 + "]" * 3000 + ";",
    "if true { " * 5000 + "}" * 5000,
])
def test_absurd_nesting_is_a_compile_error_not_a_crash(source: str) -> None:
    assert _compile_error(source).splitlines()[0] == (
        "e.vega:1:1: program is nested too deeply to compile")


def test_reasonable_nesting_compiles() -> None:
    compile_source("let x = " + "+".join(["1"] * 300) + ";\n" + "if true { " * 100 + "}" * 100,
                   "ok.vega")


def test_every_missing_semicolon_is_reported_then_the_first_other_error() -> None:
    text = _compile_error("let x = 1\nlet y = 2\nprint(x + y)\nlet z = (1 + ;\nlet w = ;\n")
    assert [line for line in text.splitlines() if line.startswith("e.vega")] == [
        "e.vega:1:10: syntax error: missing ';' after a statement (unexpected 'let')",
        "e.vega:2:10: syntax error: missing ';' after a statement (unexpected 'print')",
        "e.vega:3:13: syntax error: missing ';' after a statement (unexpected 'let')",
        "e.vega:4:14: syntax error: missing expression (unexpected ';')",
    ]


def test_every_malformed_literal_is_reported() -> None:
    text = _compile_error('let s = "a\\qb";\nlet n = 5qq;\n1 = 2;\nlet ok = 1;\n')
    assert [line for line in text.splitlines() if line.startswith("e.vega")] == [
        "e.vega:1:11: unknown escape '\\q'",
        "e.vega:2:9: unknown unit 'qq' in '5qq'",
        "e.vega:3:1: cannot assign to this expression",
    ]


def test_a_deep_call_stack_is_rendered_by_its_ends() -> None:
    ran = run_source("fn f(n) { return f(n + 1); }\nf(0);\n", "r.vega")
    assert ran.outcome.trap is not None
    lines = ran.outcome.trap.render().splitlines()
    assert lines[3] == "call stack (innermost last):"
    assert lines[4] == "  r.vega:2:1: in <main>"
    assert lines[14] == "  ... 980 more frames ..."
    assert lines[-1] == "  r.vega:1:18: in f"
    assert len(lines) == 4 + 21

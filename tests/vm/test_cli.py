"""`vegafs check`, `disasm` and `run`: exit codes, options, messages (no tracebacks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vegafs.cli.main import main


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_check_reports_every_error_of_every_file(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, "good.vega", "print(1);\n")
    bad = _write(tmp_path, "bad.vega", "print(nope);\nlet x = 1;\ny = 2;\n")
    code, out, err = _cli(capsys, "check", good, bad)
    assert code == 2
    assert out == f"{good}: ok (1 function(s))\n"
    assert err == (
        f"{bad}:1:7: undefined name 'nope'\n"
        "    print(nope);\n"
        "          ^\n"
        f"{bad}:3:1: assignment to undeclared variable 'y'\n"
        "    y = 2;\n"
        "    ^\n"
        "    declare it first: let y = ...;\n"
        f"{bad}: 2 errors\n"
    )


def test_check_of_a_missing_file_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "check", "/nonexistent/x.vega")
    assert code == 1
    assert err == "vegafs: /nonexistent/x.vega: No such file or directory\n"


def test_disasm_prints_the_listing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "d.vega", "let i = 0;\nwhile i < 3 { i = i + 1; }\n")
    code, out, _ = _cli(capsys, "disasm", f)
    assert code == 0
    assert "fn <main>()  locals=1 max_stack=2" in out
    assert "LOOP                2  to 2" in out
    assert "  >>    2      2:7  LOAD_LOCAL          0  i" in out


def test_run_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ok = _write(tmp_path, "ok.vega", 'print("hello", args());\n')
    assert _cli(capsys, "run", ok, "--no-cache", "x", "y") == (0, 'hello ["x", "y"]\n', "")
    trap = _write(tmp_path, "trap.vega", "let xs = [];\nprint(xs[3]);\n")
    code, _, err = _cli(capsys, "run", "--no-cache", trap)
    assert code == 3 and "trap (index): index 3 out of range for a list of length 0" in err
    bad = _write(tmp_path, "bad.vega", "let = 1;\n")
    assert _cli(capsys, "run", "--no-cache", bad)[0] == 2


GROW = 'let s = "x";\nloop { s = s + "x"; }\n'
SPIN = "let i = 0;\nloop { i = i + 1; }\n"


@pytest.mark.parametrize("option, value, kind, source", [
    ("--max-steps", "50", "budget_steps", SPIN),
    ("--max-memory", "10kb", "budget_memory", GROW),
    ("--max-time", "50ms", "budget_time", SPIN),
])
def test_run_budgets_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           option: str, value: str, kind: str,
                                           source: str) -> None:
    f = _write(tmp_path, "budget.vega", source)
    code, _, err = _cli(capsys, "run", f, "--no-cache", option, value)
    assert code == 4
    assert f"trap ({kind})" in err


def test_run_capabilities_default_to_the_mounts_and_can_be_narrowed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("abc")
    f = _write(tmp_path, "cp.vega", 'let r = write("/d/out.txt", read("/d/in.txt"));\n'
                                   "print(r.success);\n")
    code, out, _ = _cli(capsys, "run", f, "--no-cache", "--mount", f"/d=posix://{data}")
    assert (code, out) == (0, "true\n")
    assert (data / "out.txt").read_text() == "abc"
    code, out, err = _cli(capsys, "run", f, "--no-cache", "--mount", f"/d=posix://{data}",
                          "--allow", "fs::read")
    assert code == 3
    assert "trap (capability)" in err and "needs fs::write on /d/out.txt" in err


@pytest.mark.parametrize("argv, message", [
    (["--max-time", "soon"], "--max-time: cannot read 'soon' (expected e.g. 500ms or 5s)"),
    (["--max-memory", "5s"], "--max-memory: cannot read '5s' (expected e.g. 64mb)"),
    (["--mount", "nowhere"], "--mount 'nowhere': expected PATH=URI, e.g. /in=posix:///data"),
    (["--mount", "/x=ftp://h"], "--mount /x=ftp://h: unsupported: unknown driver scheme ftp://"),
    (["--allow", "fs::fly"], "--allow: unknown capability 'fs::fly'"),
    (["--max-steps", "0"], "--max-steps must be positive"),
])
def test_run_option_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        argv: list[str], message: str) -> None:
    f = _write(tmp_path, "p.vega", "print(1);\n")
    code, _, err = _cli(capsys, "run", f, "--no-cache", *argv)
    assert code == 1
    assert err.startswith(f"vegafs: {message}")
    assert err.count("\n") == 1


def test_run_refuses_a_hook_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "h.vega", 'hook h on read "/**" { fn run(ev) { return nil; } }\n')
    code, _, err = _cli(capsys, "run", f, "--no-cache")
    assert code == 1 and "declares hooks; it is not a script" in err


@pytest.mark.parametrize("tier", ["interp", "fast"])
def test_run_on_each_tier_gives_the_same_output_and_trap(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tier: str) -> None:
    f = _write(tmp_path, "t.vega", "fn fib(n) { if n < 2 { return n; } return fib(n - 1) + "
                                   "fib(n - 2); }\nprint(fib(15));\nlet xs = [];\nprint(xs[1]);\n")
    code, out, err = _cli(capsys, "run", f, "--no-cache", "--tier", tier)
    assert (code, out) == (3, "610\n")
    assert err.splitlines()[0] == (f"{f}:4:7: trap (index): index 1 out of range for a list "
                                   "of length 0")

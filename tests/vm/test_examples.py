"""The six examples of issue 3 (examples/*.vega) run as documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vegafs.cli.main import main
from vegafs.drivers import open_driver
from vegafs.vm import load_program, run_program
from vegafs.vm.caps import Capabilities
from vegafs.vm.runtime import Runtime

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples"


def _run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_1_copy_logs_in_slices_and_tag_them(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.log").write_bytes(b"alpha\n" * 10)
    big = os.urandom(3 * (1 << 20) + 123)  # more than one 1 MiB slice
    (src / "big.log").write_bytes(big)
    (src / "skip.txt").write_text("not a log")
    program = load_program(EXAMPLES / "copy_logs.vega", use_cache=False)
    out: list[str] = []
    rt = Runtime(caps=Capabilities.all(), opener=open_driver, stdout=out.append)
    dst = open_driver("mem://")
    rt.namespace.attach("/src", open_driver(f"posix://{src}"), f"posix://{src}")
    rt.namespace.attach("/dst", dst, "mem://")
    outcome = run_program(program, rt)
    assert outcome.ok, outcome.trap and outcome.trap.render()
    assert "".join(out) == f"copied 2 files, {60 + len(big)} bytes\n"
    assert sorted(dst.list("/")) == ["a.log", "big.log"]
    assert bytes(dst.read("/big.log", 0, None)) == big
    assert dst.meta_read("/big.log") == {"user.source": b"/src/big.log"}


def test_1_copy_logs_into_a_store_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example as documented: posix:// into store://, then the store holds
    the copies with their tags, durable (a fresh open sees them) and fsck-clean."""
    src = tmp_path / "src"
    src.mkdir()
    big = os.urandom(2 * (1 << 20) + 7)
    (src / "big.log").write_bytes(big)
    (src / "skip.txt").write_text("not a log")
    store_dir = tmp_path / "store"
    code, out, err = _run_cli(capsys, "run", str(EXAMPLES / "copy_logs.vega"), "--no-cache",
                              "--mount", f"/src=posix://{src}",
                              "--mount", f"/dst=store://{store_dir}")
    assert (code, out, err) == (0, f"copied 1 files, {len(big)} bytes\n", "")
    # The run released the store: a driver opens it again and sees the copy.
    dst = open_driver(f"store://{store_dir}")
    try:
        assert dst.list("/") == ["big.log"]
        assert bytes(dst.read("/big.log", 0, None)) == big
        assert dst.meta_read("/big.log") == {"user.source": b"/src/big.log"}
    finally:
        dst.close()


def test_2_count_lines_zero_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    blob = (b"x" * 99 + b"\n") * 30_000 + b"no newline at the end"
    (data / "big.txt").write_bytes(blob)
    code, out, err = _run_cli(capsys, "run", str(EXAMPLES / "count_lines.vega"), "--no-cache",
                              "--mount", f"/data=posix://{data}", "--", "/data/big.txt")
    assert (code, out, err) == (0, "30000\n", "")


def test_3_slice_after_close_traps_with_position(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_cli(capsys, "run", str(EXAMPLES / "stale_slice.vega"), "--no-cache",
                              "--mount", "/data=mem://")
    assert code == 3
    assert out == "first line\n"
    first = err.splitlines()[0]
    assert first.endswith("stale_slice.vega:11:7: trap (stale_slice): slice of handler of "
                          "/data/notes.txt used after it was invalidated (its handler was closed)")


def test_4_slice_pushed_into_list_traps(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run_cli(capsys, "run", str(EXAMPLES / "slice_in_list.vega"), "--no-cache",
                            "--mount", "/data=mem://")
    assert code == 3
    lines = err.splitlines()
    assert lines[0].endswith("slice_in_list.vega:9:8: trap (slice_escape): a slice cannot be "
                             "stored in a list: it borrows memory of its owner; copy it with "
                             "text(s) first")
    assert "call stack (innermost last):" in lines
    assert lines[-1].endswith("slice_in_list.vega:9:8: in remember")


def test_5_runaway_loop_stops_at_the_step_budget(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run_cli(capsys, "run", str(EXAMPLES / "runaway.vega"), "--no-cache",
                            "--max-steps", "100000")
    assert code == 4
    assert err.splitlines()[:3] == [
        f"{EXAMPLES / 'runaway.vega'}:5:1: trap (budget_steps): step budget exhausted: "
        "the run took more than 100000 steps (--max-steps)",
        "    loop {}",
        "    ^",
    ]


def test_6_syntax_error_reports_line_column_and_expectation(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_cli(capsys, "check", str(EXAMPLES / "syntax_error.vega"))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"{EXAMPLES / 'syntax_error.vega'}:5:14: syntax error: missing ';' after a statement "
        "(unexpected 'let')",
        "    let total = 0",
        "                 ^",
        "    expected ';' to end the statement",
        f"{EXAMPLES / 'syntax_error.vega'}: 1 error",
    ]


def test_run_through_the_real_command_has_no_traceback(tmp_path: Path) -> None:
    """The installed entry point: a trap is a message and exit 3, never a traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "vegafs", "run", str(EXAMPLES / "stale_slice.vega"),
         "--no-cache", "--mount", "/data=mem://"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert "trap (stale_slice)" in proc.stderr

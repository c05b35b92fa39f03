"""`vegafs hooks check|list|test` and `vegafs trace` without a mount."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vegafs.cli.main import main
from vegafs.fs import Ctx, FileSystem
from vegafs.hooks.trace import Tracer, trace_path
from vegafs.store import Store

EXAMPLES = Path(__file__).resolve().parents[2] / "hooks"


def test_check_accepts_every_example(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in EXAMPLES.glob("*.vega"))
    assert main(["hooks", "check", *files]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok: ") == len(files)
    assert "line_count (after close /notes/**/*.md)" in out


def test_check_reports_every_error_with_positions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.vega"
    bad.write_text(
        'hook a on write "/x/**" {\n    fn run(ev) { return deny(EPREM, "x"); }\n}\n'
        'hook b on nosuchevent "/**" { fn run(ev) { return allow(); } }\n'
    )
    assert main(["hooks", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.vega:2:" in err and "EPREM" in err
    assert "nosuchevent" in err


def _store_with_file(tmp_path: Path, name: bytes, data: bytes) -> Path:
    store_dir = tmp_path / "store"
    store = Store.open(store_dir, create=True)
    fs = FileSystem(store)
    fh, _ = fs.create(1, name, 0o644, os.O_RDWR, Ctx())
    fs.write(fh, 0, data)
    fs.release(fh)
    fs.close()
    store.close()
    return store_dir


def test_hooks_test_is_a_read_only_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_dir = _store_with_file(tmp_path, b"db.env", b"HOST=x\nPASSWORD=y\n")
    assert (
        main(
            [
                "hooks",
                "test",
                str(EXAMPLES / "redact_env.vega"),
                "--event",
                "read",
                "--path",
                "/db.env",
                "--store",
                str(store_dir),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "redact_env (on read /db.env): transform" in out
    assert "HOST=***" in out and "PASSWORD=***" in out
    writer = tmp_path / "writer.vega"
    writer.write_text(
        'hook w on read "/**" { capabilities [fs::write]\n'
        'fn run(ev) { let r = write("/new", "x");\n'
        "  if r.success { return allow(); } return deny(EROFS, r.error); } }\n"
    )
    assert (
        main(
            [
                "hooks",
                "test",
                str(writer),
                "--event",
                "read",
                "--path",
                "/db.env",
                "--store",
                str(store_dir),
                "--json",
            ]
        )
        == 0
    )
    (result,) = json.loads(capsys.readouterr().out)
    assert result["decision"] == "deny" and "read-only" in result["message"]
    store = Store.open(store_dir, read_only=True)
    try:
        assert store.lookup(1, b"new") is None
    finally:
        store.close()


def test_hooks_list_without_a_mount_shows_compile_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "ok.vega").write_text('hook fine on read "/**" { fn run(ev) { return allow(); } }')
    (hooks / "broken.vega").write_text("hook nope on read")
    assert main(["hooks", "list", "--store", str(tmp_path / "nostore"), "--hooks", str(hooks)]) == 0
    out = capsys.readouterr().out
    assert "no mount" in out and "fine" in out and "refused" in out and "broken.vega:1:" in out


def test_trace_prints_filters_and_queries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tracer = Tracer(trace_path(tmp_path), otlp=False)
    for n, hook in enumerate(["a", "b", "a"]):
        tracer.record(
            {
                "trace_id": f"{n:032x}",
                "hook": hook,
                "version": "v",
                "file": "f.vega",
                "phase": "on",
                "event": "write",
                "path": f"/p{n}",
                "decision": "deny",
                "errno": "EPERM",
                "message": "no",
                "status": "denied",
                "steps": 1,
                "bytes": 2,
                "latency_us": 3.0,
                "ts_ns": 1,
            }
        )
    tracer.close()
    assert main(["trace", "--store", str(tmp_path), "--hook", "a"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(
        "a@v on write" in line and "deny EPERM" in line for line in lines
    )
    assert main(["trace", "--store", str(tmp_path), "--json", "-n", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == "/p2"
    assert (
        main(
            [
                "trace",
                "--store",
                str(tmp_path),
                "--sql",
                "SELECT hook, count(*) FROM spans GROUP BY hook ORDER BY hook",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.splitlines()[1:] == ["a\t2", "b\t1"]


def test_hooks_list_at_a_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vegafs.hooks.engine import HookEngine

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    store = Store.open(tmp_path / "store", create=True)
    engine = HookEngine(hooks, store=store)
    (hooks / "a.vega").write_text('hook a on read "/**" { fn run(ev) { return allow(); } }')
    engine.reload()
    store.create_snapshot("one")
    (hooks / "a.vega").unlink()
    (hooks / "b.vega").write_text('hook b on read "/**" { fn run(ev) { return allow(); } }')
    engine.reload()
    store.close()
    assert main(["hooks", "list", "--store", str(tmp_path / "store"), "--at", "one", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)) == ["a.vega"]

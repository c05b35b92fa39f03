"""Spans: JSON lines, SQLite derivation, OTLP export to a local collector."""

from __future__ import annotations

import gzip
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vegafs.hooks.trace import Tracer, read_spans, sqlite_db, trace_path


def _span(n: int) -> dict:
    return {
        "trace_id": "ab" * 16,
        "span_id": "cd" * 8,
        "parent_id": None,
        "ts_ns": 1_000_000 + n,
        "hook": f"h{n}",
        "version": "0123456789abcdef",
        "file": "f.vega",
        "phase": "on",
        "event": "write",
        "path": f"/p{n}",
        "decision": "allow",
        "errno": None,
        "message": "",
        "status": "ok",
        "steps": n,
        "bytes": 3,
        "latency_us": 4.5,
        "attempt": 1,
        "retries": 0,
    }


def test_json_lines_round_trip_and_partial_last_line(tmp_path: Path) -> None:
    tracer = Tracer(trace_path(tmp_path), otlp=False)
    for n in range(3):
        tracer.record(_span(n))
    tracer.close()
    path = trace_path(tmp_path)
    with open(path, "a") as f:
        f.write('{"hook": "torn"')  # a daemon killed mid-line
    spans = [s for _, s in read_spans(path)]
    assert [s["hook"] for s in spans] == ["h0", "h1", "h2"]


def test_sqlite_is_derived_incrementally_and_rebuilt(tmp_path: Path) -> None:
    tracer = Tracer(trace_path(tmp_path), otlp=False)
    tracer.record(_span(1))
    tracer.flush()
    db = sqlite_db(tmp_path)
    assert db.execute("SELECT count(*) FROM spans").fetchone() == (1,)
    db.close()
    tracer.record(_span(2))
    tracer.close()
    db = sqlite_db(tmp_path)
    assert db.execute("SELECT hook, steps FROM spans ORDER BY steps").fetchall() == [
        ("h1", 1),
        ("h2", 2),
    ]
    db.close()
    (tmp_path / "traces" / "hooks.sqlite").unlink()
    db = sqlite_db(tmp_path)
    assert db.execute("SELECT count(*) FROM spans").fetchone() == (2,)
    db.close()


class _Collector(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def collector() -> Iterator[str]:
    _Collector.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_spans_are_exported_over_otlp_http(
    tmp_path: Path, collector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
    tracer = Tracer(trace_path(tmp_path))  # OTLP on because the variable is set
    op = _span(6)
    op.update(phase="op", hook=None, version=None, file=None, span_id="0e" * 8)
    span = _span(7)
    span.update(hook="redact_env_otlp", span_id="0f" * 8, parent_id=op["span_id"])
    tracer.record(op)
    tracer.record(span)
    tracer.close()
    paths = [p for p, _ in _Collector.received]
    assert "/v1/traces" in paths
    payload = b"".join(body for _, body in _Collector.received)
    assert b"redact_env_otlp" in payload and b"vegafs.path" in payload
    # OTLP carries vegafs's own ids: the hook run's parent is the operation's span
    assert payload.count(bytes.fromhex("ab" * 16)) == 2
    assert payload.count(bytes.fromhex("0e" * 8)) == 2  # the op's id, the child's parent
    assert payload.count(bytes.fromhex("0f" * 8)) == 1


def test_span_lines_are_valid_json_for_any_text() -> None:
    from vegafs.hooks.trace import format_row, row_of

    span = _span(3)
    span.update(
        hook='we"ird',
        path="/b\u00e9\n/\udcff",
        message="tab\there",
        errno="EPERM",
        events=["one", "two"],
    )
    assert json.loads(format_row(row_of(span))) == span


def test_an_sqlite_table_of_an_older_format_is_derived_again(tmp_path: Path) -> None:
    import sqlite3

    (tmp_path / "traces").mkdir()
    old = sqlite3.connect(tmp_path / "traces" / "hooks.sqlite")
    old.execute("CREATE TABLE spans (trace_id TEXT, hook TEXT)")  # no parent_id, ...
    old.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER)")
    old.execute("INSERT INTO meta VALUES ('offset', 0)")
    old.commit()
    old.close()
    tracer = Tracer(trace_path(tmp_path), otlp=False)
    tracer.record(_span(1))
    tracer.close()
    db = sqlite_db(tmp_path)
    assert db.execute("SELECT hook, parent_id FROM spans").fetchall() == [("h1", None)]
    db.close()

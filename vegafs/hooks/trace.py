"""Spans of hook runs: JSON lines in the store directory, SQLite on demand, OTLP.

Every hook run becomes one span (a flat dict): ``trace_id`` (shared by all
hooks of one filesystem operation), ``span_id``, ``ts_ns`` (start, wall
clock), ``hook``, ``version`` (the hook file's content hash, as recorded in
the store log), ``file``, ``phase`` (``on`` or ``after``), ``event``,
``path``, ``decision`` (allow, deny, transform), ``errno``, ``message``,
``status`` (ok, denied, trap, budget, error, circuit_open, dropped),
``steps``, ``bytes``, ``latency_us``, ``attempt`` and ``retries``.

Why JSON lines: appending a line is the cheapest durable-enough record on the
request path (a buffered write, flushed by a background thread every
:data:`FLUSH_INTERVAL_S`), the file is greppable, and :func:`sqlite_db`
derives an SQLite table from it incrementally (derived data: delete the .db
and it is rebuilt). When ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, spans are
also exported over OTLP/HTTP with opentelemetry-sdk's batch processor, which
sends from its own thread.

Invariants: recording never raises into a filesystem operation (a full disk
loses spans, counted in ``dropped``, not requests); the JSON lines file only
grows by whole lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sqlite3
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TRACE_DIR = "traces"
TRACE_FILE = "hooks.jsonl"
TRACE_DB = "hooks.sqlite"
FLUSH_INTERVAL_S = 0.2

COLUMNS: tuple[tuple[str, str], ...] = (
    ("trace_id", "TEXT"),
    ("span_id", "TEXT"),
    ("ts_ns", "INTEGER"),
    ("hook", "TEXT"),
    ("version", "TEXT"),
    ("file", "TEXT"),
    ("phase", "TEXT"),
    ("event", "TEXT"),
    ("path", "TEXT"),
    ("decision", "TEXT"),
    ("errno", "TEXT"),
    ("message", "TEXT"),
    ("status", "TEXT"),
    ("steps", "INTEGER"),
    ("bytes", "INTEGER"),
    ("latency_us", "REAL"),
    ("attempt", "INTEGER"),
    ("retries", "INTEGER"),
)
_esc = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


_NAMES = tuple(name for name, _ in COLUMNS)
# One %-template for a whole line: formatting a span is the hot part of
# tracing (json.dumps of a dict is ~2.5x slower); text fields are escaped with
# the json module's own escaper, so every line is valid JSON.
_TEMPLATE = (
    '{"trace_id":"%s","span_id":"%s","ts_ns":%d,"hook":%s,"version":"%s","file":%s,'
    '"phase":"%s","event":"%s","path":%s,"decision":"%s","errno":%s,"message":%s,'
    '"status":"%s","steps":%d,"bytes":%d,"latency_us":%r,"attempt":%d,"retries":%d'
)

#: A span row: the COLUMNS values in order, plus the run's trace::event messages
#: (a list, or None).
Row = tuple[Any, ...]


def format_row(row: Row) -> str:
    """One JSON line (without the newline) for a span row."""
    (
        trace_id,
        span_id,
        ts_ns,
        hook,
        version,
        file,
        phase,
        event,
        path,
        decision,
        errno_,
        message,
        status,
        steps,
        nbytes,
        latency,
        attempt,
        retries,
        events,
    ) = row
    line = _TEMPLATE % (
        trace_id,
        span_id or new_span_id(),
        ts_ns,
        _esc(hook),
        version,
        _esc(file),
        phase,
        event,
        _esc(path),
        decision,
        "null" if errno_ is None else _esc(errno_),
        _esc(message or ""),
        status,
        steps,
        nbytes,
        float(latency),
        attempt,
        retries,
    )
    if events:
        line += ',"events":' + json.dumps(events)
    return line + "}"


def row_of(span: dict[str, Any]) -> Row:
    """A span dict as a row (missing fields are empty)."""
    defaults: dict[str, Any] = {
        "ts_ns": 0,
        "steps": 0,
        "bytes": 0,
        "latency_us": 0.0,
        "attempt": 1,
        "retries": 0,
    }
    values = [span.get(name, defaults.get(name, "")) for name in _NAMES]
    values[_NAMES.index("errno")] = span.get("errno")
    return (*values, span.get("events"))


def new_trace_id() -> str:
    """A 128-bit trace id in hex (W3C / OTLP format)."""
    return f"{random.getrandbits(128):032x}"


def new_span_id() -> str:
    """A 64-bit span id in hex."""
    return f"{random.getrandbits(64):016x}"


def trace_path(store_dir: str | os.PathLike[str]) -> Path:
    """Where the spans of the store at ``store_dir`` are written."""
    return Path(store_dir) / TRACE_DIR / TRACE_FILE


class Tracer:
    """Appends spans as JSON lines; optionally forwards them to an OTLP exporter."""

    def __init__(self, path: str | os.PathLike[str] | None, *, otlp: bool | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.dropped = 0
        self._pending: deque[Row] = deque()
        self._lock = threading.Lock()
        self._file: Any = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        if otlp is None:
            otlp = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
        self._otlp = _OtlpForwarder() if otlp else None
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if self._file is not None or self._otlp is not None:
            self._flusher = threading.Thread(
                target=self._flush_loop, name="vegafs-trace-flush", daemon=True
            )
            self._flusher.start()

    def record(self, span: dict[str, Any]) -> None:
        """Queue one span given as a dict (see :data:`COLUMNS`); never raises."""
        self._pending.append(row_of(span))

    def record_row(self, row: Row) -> None:
        """Queue one span row; never raises. Serialising happens in :meth:`flush`
        (the flusher thread), off the operation that produced the span."""
        self._pending.append(row)

    def flush(self) -> None:
        """Write queued spans to the file and hand them to OTLP; never raises."""
        with self._lock:
            # popleft, not a swap of the deque: a span recorded by another thread
            # while we take the batch is either in it or left for the next flush.
            pending: list[Row] = []
            take = self._pending.popleft
            with contextlib.suppress(IndexError):
                while True:
                    pending.append(take())
            if not pending:
                return
            try:
                lines = [format_row(row) for row in pending]
                if self._file is not None:
                    self._file.write("\n".join(lines) + "\n")
                    self._file.flush()
            except (OSError, ValueError):
                self.dropped += len(pending)
            if self._otlp is not None:
                try:
                    for row in pending:
                        span = dict(zip(_NAMES, row, strict=False))
                        span["span_id"] = span["span_id"] or new_span_id()
                        self._otlp.export(span)
                    self._otlp.flush()
                except Exception:  # a collector that is down must not break anything
                    self.dropped += len(pending)

    def _flush_loop(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL_S):
            self.flush()

    def close(self) -> None:
        """Flush and stop the flusher thread; idempotent."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        self.flush()
        with self._lock:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
            if self._otlp is not None:
                self._otlp.shutdown()
                self._otlp = None


class _OtlpForwarder:
    """Turns span dicts into OpenTelemetry spans exported over OTLP/HTTP.

    Configuration is the standard one (``OTEL_EXPORTER_OTLP_ENDPOINT``,
    ``OTEL_EXPORTER_OTLP_HEADERS``...), read by the exporter itself.
    """

    def __init__(self) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self._provider = TracerProvider(resource=Resource.create({"service.name": "vegafs"}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("vegafs.hooks")

    def export(self, span: dict[str, Any]) -> None:
        start = int(span.get("ts_ns", 0))
        end = start + int(float(span.get("latency_us", 0.0)) * 1000)
        name = f"hook {span.get('hook')} {span.get('phase', 'on')} {span.get('event')}"
        attributes = {
            f"vegafs.{key}": value
            for key, value in span.items()
            if isinstance(value, str | int | float | bool) and key not in ("ts_ns",)
        }
        otel_span = self._tracer.start_span(name, start_time=start, attributes=attributes)
        otel_span.end(end_time=end)

    def flush(self) -> None:
        self._provider.force_flush(timeout_millis=2000)

    def shutdown(self) -> None:
        self._provider.shutdown()


def read_spans(
    path: str | os.PathLike[str], offset: int = 0
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (offset after the line, span) for each whole line from ``offset``.

    A partial last line (being written) is not yielded; a line that does not
    parse is skipped (it can only come from a torn write of a killed daemon).
    """
    with open(path, "rb") as f:
        f.seek(offset)
        pos = offset
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            pos += len(raw)
            try:
                span = json.loads(raw)
            except ValueError:
                continue
            if isinstance(span, dict):
                yield pos, span


def sqlite_db(store_dir: str | os.PathLike[str]) -> sqlite3.Connection:
    """An SQLite database of the store's spans (table ``spans``), brought up to date.

    Derived data: the import position is kept in table ``meta``; deleting the
    file rebuilds it from the JSON lines.
    """
    source = trace_path(store_dir)
    (Path(store_dir) / TRACE_DIR).mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(Path(store_dir) / TRACE_DIR / TRACE_DB)
    columns = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
    db.execute(f"CREATE TABLE IF NOT EXISTS spans ({columns})")
    db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER)")
    row = db.execute("SELECT value FROM meta WHERE key = 'offset'").fetchone()
    offset = int(row[0]) if row else 0
    if source.exists():
        if source.stat().st_size < offset:  # the trace file was replaced: start over
            db.execute("DELETE FROM spans")
            offset = 0
        names = [name for name, _ in COLUMNS]
        placeholders = ", ".join("?" for _ in names)
        rows = []
        for position, span in read_spans(source, offset):
            rows.append([span.get(name) for name in names])
            offset = position
        db.executemany(f"INSERT INTO spans ({', '.join(names)}) VALUES ({placeholders})", rows)
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('offset', ?)", (offset,))
        db.commit()
    return db

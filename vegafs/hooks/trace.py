"""Spans of filesystem operations and hook runs: JSON lines, SQLite on demand, OTLP.

Every filesystem operation that runs hooks is one span (``phase`` ``op``, no
hook), and every hook run is a span under it (``parent_id`` = the operation's
``span_id``; after-hook runs too, however late they run). A span is a flat
dict: ``trace_id`` (shared by the operation and all its hook runs),
``span_id``, ``parent_id`` (null for an operation), ``ts_ns`` (start, wall
clock), ``hook``, ``version`` (the hook file's content hash, as recorded in the
store log), ``file`` (those three null for an operation), ``phase`` (``op``,
``on`` or ``after``), ``event``, ``path``, ``decision`` (allow, deny,
transform), ``errno``, ``message``, ``status`` (ok, denied, trap, budget,
error, circuit_open; for an operation: ok, denied or failed), ``steps``,
``bytes``, ``latency_us`` (an operation's includes its hooks), ``attempt`` and
``retries``.

Why JSON lines: appending a line is the cheapest durable-enough record on the
request path (a buffered write, flushed by a background thread every
:data:`FLUSH_INTERVAL_S`), the file is greppable, and :func:`sqlite_db`
derives an SQLite table from it incrementally (derived data: delete the .db
and it is rebuilt). When ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, spans are
also exported over OTLP/HTTP with opentelemetry-sdk's batch processor, which
sends from its own thread, with the same trace and span ids.

Cost: the operation only appends a tuple (a *row*) to a queue; ids are ints
until then, and the flusher thread formats rows with one %-template and
escaped strings cached per hook, so a span costs the request path well under
a microsecond.

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
from typing import Any, cast

log = logging.getLogger(__name__)

TRACE_DIR = "traces"
TRACE_FILE = "hooks.jsonl"
TRACE_DB = "hooks.sqlite"
FLUSH_INTERVAL_S = 0.2

COLUMNS: tuple[tuple[str, str], ...] = (
    ("trace_id", "TEXT"),
    ("span_id", "TEXT"),
    ("parent_id", "TEXT"),
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
_esc = json.encoder.encode_basestring_ascii
_getrandbits = random.getrandbits
# One %-template for a whole line (json.dumps of a dict is ~2.5x slower); text
# fields are escaped with the json module's own escaper, so every line is
# valid JSON. What a span is about (hook, version, file, phase, event) is one
# interned SpanSource whose JSON fragment is built once.
_TEMPLATE = (
    '{"trace_id":"%032x","span_id":"%016x","parent_id":%s,"ts_ns":%d,%s,"path":%s,'
    '"decision":"%s","errno":%s,"message":%s,"status":"%s","steps":%d,"bytes":%d,'
    '"latency_us":%.2f,"attempt":%d,"retries":%d'
)


class SpanSource:
    """What a span is about: one hook (name, version, file) in a phase of an
    event, or (no hook, phase ``op``) a filesystem operation. Interned by
    :func:`span_source`, so its JSON fragment is escaped once, not per span."""

    __slots__ = ("hook", "version", "file", "phase", "event", "fragment")

    def __init__(
        self, hook: str | None, version: str | None, file: str | None, phase: str, event: str
    ) -> None:
        self.hook, self.version, self.file = hook, version, file
        self.phase, self.event = phase, event
        self.fragment = ",".join(
            f'"{name}":{"null" if value is None else _esc(value)}'
            for name, value in zip(
                ("hook", "version", "file", "phase", "event"),
                (hook, version, file, phase, event),
                strict=True,
            )
        )


_SOURCES: dict[tuple[str | None, ...], SpanSource] = {}


def span_source(
    hook: str | None, version: str | None, file: str | None, phase: str, event: str
) -> SpanSource:
    """The interned :class:`SpanSource` of these values."""
    key = (hook, version, file, phase, event)
    source = _SOURCES.get(key)
    if source is None:
        if len(_SOURCES) > 65536:
            _SOURCES.clear()
        source = _SOURCES[key] = SpanSource(*key)
    return source


#: A span row: trace_id, span_id, parent_id (ids as ints), ts_ns, a
#: SpanSource, path, decision, errno, message, status, steps, bytes,
#: latency_us (not yet rounded), attempt, retries, and the run's trace::event
#: messages (a list, or None). The operation builds the tuple; the flusher
#: thread formats it.
Row = tuple[Any, ...]


def hex_id(value: int | None, width: int) -> str | None:
    """An id as W3C hex text (ids travel as ints until written)."""
    return None if value is None else f"{value:0{width}x}"


def id_of(text: str | int | None) -> int:
    """An id read back from text (a span dict, the after-hook journal); 0 if none."""
    if not text:
        return 0
    return text if type(text) is int else int(text, 16)  # type: ignore[arg-type]


def format_row(row: Row) -> str:
    """One JSON line (without the newline) for a span row."""
    parent_id, errno_, message, events = row[2], row[7], row[8], row[15]
    line = _TEMPLATE % (
        row[0],
        row[1],
        "null" if parent_id is None else f'"{parent_id:016x}"',
        row[3],
        row[4].fragment,
        _esc(row[5]),
        row[6],
        "null" if errno_ is None else _esc(errno_),
        _esc(message) if message else '""',
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        row[14],
    )
    if events:
        line += ',"events":' + json.dumps(events)
    return line + "}"


def span_of(row: Row) -> dict[str, Any]:
    """A span row as the dict its JSON line holds (ids still ints)."""
    source: SpanSource = row[4]
    return {
        "trace_id": row[0],
        "span_id": row[1],
        "parent_id": row[2],
        "ts_ns": row[3],
        "hook": source.hook,
        "version": source.version,
        "file": source.file,
        "phase": source.phase,
        "event": source.event,
        "path": row[5],
        "decision": row[6],
        "errno": row[7],
        "message": row[8],
        "status": row[9],
        "steps": row[10],
        "bytes": row[11],
        "latency_us": row[12],
        "attempt": row[13],
        "retries": row[14],
    }


def row_of(span: dict[str, Any]) -> Row:
    """A span dict as a row (missing fields are empty; missing ids are drawn)."""
    get = span.get
    return (
        id_of(get("trace_id")) or new_trace_id(),
        id_of(get("span_id")) or new_span_id(),
        id_of(get("parent_id")) or None,
        get("ts_ns", 0),
        span_source(get("hook"), get("version"), get("file"), get("phase", ""), get("event", "")),
        get("path", ""),
        get("decision", ""),
        get("errno"),
        get("message", ""),
        get("status", ""),
        get("steps", 0),
        get("bytes", 0),
        float(get("latency_us", 0.0)),
        get("attempt", 1),
        get("retries", 0),
        get("events"),
    )


def new_trace_id() -> int:
    """A 128-bit trace id (W3C / OTLP), as an int: formatted when written."""
    return _getrandbits(128)


def new_span_id() -> int:
    """A 64-bit span id, as an int."""
    return _getrandbits(64)


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
                        self._otlp.export(row)
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


class _PresetIds:
    """An OpenTelemetry id generator that hands out the ids vegafs already drew,
    so a span exported over OTLP has the trace and span ids of its JSON line."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id

    def is_trace_id_random(self) -> bool:
        return True  # drawn with random.getrandbits(128) (the W3C "random" trace flag)


class _OtlpForwarder:
    """Turns span rows into OpenTelemetry spans exported over OTLP/HTTP.

    Configuration is the standard one (``OTEL_EXPORTER_OTLP_ENDPOINT``,
    ``OTEL_EXPORTER_OTLP_HEADERS``...), read by the exporter itself. A hook
    run's span is a child of its operation's span (same trace id, parent id).
    """

    def __init__(self) -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self._trace = trace
        self._ids = _PresetIds()
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": "vegafs"}),
            id_generator=self._ids,  # type: ignore[arg-type]
        )
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self._tracer = self._provider.get_tracer("vegafs.hooks")

    def export(self, row: Row) -> None:
        span = span_of(row)
        trace_id = span["trace_id"]
        self._ids.trace_id, self._ids.span_id = trace_id, span["span_id"]
        context = None
        parent = span["parent_id"]
        if parent:
            trace = self._trace
            parent_context = trace.SpanContext(
                trace_id, parent, is_remote=True, trace_flags=trace.TraceFlags(1)
            )
            context = trace.set_span_in_context(trace.NonRecordingSpan(parent_context))
        start = int(span.get("ts_ns") or 0)
        end = start + int(span["latency_us"] * 1000)
        if span["phase"] == "op":
            name = f"{span['event']} {span['path']}"
        else:
            name = f"hook {span['hook']} {span['phase']} {span['event']}"
        attributes = {
            # span_of gives ids as ints and the latency as a number
            f"vegafs.{key}": hex_id(cast(int, value), 32 if key == "trace_id" else 16)
            if key.endswith("_id")
            else round(cast(float, value), 2)
            if key == "latency_us"
            else value
            for key, value in span.items()
            if isinstance(value, str | int | float | bool) and key != "ts_ns"
        }
        otel_span = self._tracer.start_span(
            name, context=context, start_time=start, attributes=attributes
        )
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
    have = [r[1] for r in db.execute("PRAGMA table_info(spans)")]
    if have and have != [
        name for name, _ in COLUMNS
    ]:  # written by an older vegafs: derive it again
        db.execute("DROP TABLE spans")
        db.execute("DROP TABLE IF EXISTS meta")
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

"""`vegafs trace`: show the spans of hook runs (docs/hooks.md, "Tracing")."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

from vegafs.cli.errors import CliError

FOLLOW_POLL_S = 0.2


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("trace", help="show hook run spans (JSON lines / SQLite)")
    p.add_argument("--store", metavar="PATH", help="the store (default: the embedded default)")
    p.add_argument("--hook", metavar="NAME", help="only spans of this hook")
    p.add_argument("--json", action="store_true", help="print spans as JSON lines")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new spans")
    p.add_argument(
        "-n",
        "--last",
        type=int,
        default=50,
        metavar="N",
        help="start with the last N spans (default 50; 0 = all)",
    )
    p.add_argument(
        "--sql",
        metavar="QUERY",
        help="run an SQL query on table spans (SQLite) instead, e.g. "
        '"SELECT hook, count(*) FROM spans GROUP BY hook"',
    )
    p.set_defaults(func=cmd_trace)


def _format(span: dict[str, Any]) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(int(span.get("ts_ns", 0)) / 1e9))
    decision = span.get("decision", "?")
    if span.get("errno"):
        decision += f" {span['errno']}"
    text = (
        f"{when} {span.get('trace_id', '')[:8]} {span.get('hook')}@{span.get('version')} "
        f"{span.get('phase')} {span.get('event')} {span.get('path')} -> {decision} "
        f"[{span.get('status')}] steps={span.get('steps')} bytes={span.get('bytes')} "
        f"{span.get('latency_us')}us"
    )
    if span.get("attempt", 1) > 1:
        text += f" attempt={span['attempt']}"
    if span.get("message"):
        text += f" — {span['message'].splitlines()[0]}"
    return text


def cmd_trace(args: argparse.Namespace) -> int:
    from vegafs.hooks.trace import read_spans, sqlite_db, trace_path
    from vegafs.store import default_store_path

    store_dir = Path(args.store).absolute() if args.store else default_store_path()
    if args.sql:
        import sqlite3

        db = sqlite_db(store_dir)
        try:
            cursor = db.execute(args.sql)
            names = [d[0] for d in cursor.description or ()]
            if names:
                print("\t".join(names))
            for row in cursor:
                print("\t".join("" if v is None else str(v) for v in row))
        except sqlite3.Error as exc:
            raise CliError(f"SQL error: {exc}") from exc
        finally:
            db.close()
        return 0
    path = trace_path(store_dir)
    if not path.exists() and not args.follow:
        raise CliError(f"no spans recorded for {store_dir} yet ({path} does not exist)")

    def show(span: dict[str, Any]) -> None:
        if args.hook and span.get("hook") != args.hook:
            return
        print(json.dumps(span) if args.json else _format(span), flush=True)

    offset = 0
    if path.exists():
        tail: deque[dict[str, Any]] = deque(maxlen=args.last or None)
        for position, span in read_spans(path):
            offset = position
            if not args.hook or span.get("hook") == args.hook:
                tail.append(span)
        for span in tail:
            show(span)
    if not args.follow:
        return 0
    try:
        while True:
            if path.exists():
                if os.path.getsize(path) < offset:
                    offset = 0  # the file was replaced
                for position, span in read_spans(path, offset):
                    offset = position
                    show(span)
            time.sleep(FOLLOW_POLL_S)
    except KeyboardInterrupt:
        return 0

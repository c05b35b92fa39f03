"""`vegafs hooks check|list|test`: tools for hook authors (docs/hooks.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from vegafs.cli import control
from vegafs.cli.errors import CliError

EVENT_CHOICES = (
    "read",
    "write",
    "truncate",
    "close",
    "commit",
    "create",
    "mkdir",
    "unlink",
    "rmdir",
    "rename",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    hooks = subparsers.add_parser("hooks", help="check, list and dry-run Vega hooks")
    sub = hooks.add_subparsers(dest="hooks_command", metavar="SUBCOMMAND")
    sub.required = True

    p = sub.add_parser("check", help="compile hook files and report every error")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("list", help="hooks of a live mount: state, runs, denies, traps, latency")
    p.add_argument("--store", metavar="PATH", help="the store (default: the embedded default)")
    p.add_argument(
        "--hooks",
        metavar="DIR",
        help="without a running mount: list this directory (default <store>/hooks)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--at",
        metavar="SNAPSHOT",
        help="instead: the hook versions that were active at SNAPSHOT (from the log)",
    )
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("test", help="dry-run a hook file against the store (read-only)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--event", required=True, choices=EVENT_CHOICES)
    p.add_argument("--path", required=True, help="path relative to the mount root, e.g. /a.env")
    p.add_argument("--new-path", help="rename: the destination path")
    p.add_argument("--at", metavar="SNAPSHOT", help="run against a snapshot instead of the head")
    p.add_argument("--store", metavar="PATH", help="the store (default: the embedded default)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=cmd_test)


def _store_dir(arg: str | None) -> Path:
    from vegafs.store import default_store_path

    return Path(arg).absolute() if arg else default_store_path()


def cmd_check(args: argparse.Namespace) -> int:
    from vegafs.hooks import vega
    from vegafs.hooks.engine import HookEngine, source_hash

    engine = HookEngine(None)
    failed = 0
    for name in args.files:
        path = Path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {name}: {exc.strerror}") from exc
        try:
            hooks = engine.compile(data, name, source_hash(data))
        except vega.HookCompileError as exc:
            failed += 1
            print(str(exc), file=sys.stderr)
            continue
        summary = ", ".join(f"{h.name} ({h.when} {h.event} {h.glob.text})" for h in hooks)
        print(f"{name}: ok: {summary}")
    return 2 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    store_dir = _store_dir(args.store)
    if args.at:
        return _list_at(store_dir, args.at, args.json)
    try:
        response = control.request(store_dir, "hooks_list", timeout=30)
    except (OSError, ValueError, control.ControlError) as exc:
        raise CliError(f"cannot reach the mount daemon of {store_dir}: {exc}") from exc
    live = response is not None
    if response is not None:
        if not response.get("ok"):
            raise CliError(str(response.get("error")))
        rows = response.get("result") or []
    else:
        rows = _static_listing(Path(args.hooks) if args.hooks else store_dir / "hooks")
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    if not live:
        print(f"(no mount of {store_dir} is running: compile state only, no run counters)")
    _print_table(rows)
    return 0


def _list_at(store_dir: Path, snapshot: str, as_json: bool) -> int:
    from vegafs.hooks.engine import versions_at
    from vegafs.store import Store, StoreError

    try:
        store = Store.open(store_dir, read_only=True)
    except StoreError as exc:
        raise CliError(str(exc)) from exc
    try:
        snap = next((s for s in store.list_snapshots() if s.name == snapshot), None)
        if snap is None:
            raise CliError(f"no snapshot named {snapshot!r} in {store_dir}")
        active = versions_at(store, snap.logseq)
    finally:
        store.close()
    if as_json:
        print(json.dumps(active))
    elif not active:
        print(f"no hooks were active at snapshot {snapshot}")
    for name, version in sorted(active.items()):
        if not as_json:
            print(f"{name}  {version}")
    return 0


def _static_listing(directory: Path) -> list[dict[str, Any]]:
    from vegafs.hooks.engine import HookEngine

    # The table shows refusals itself; the engine's log lines would repeat them.
    logging.getLogger("vegafs.hooks").addHandler(logging.NullHandler())
    logging.getLogger("vegafs.hooks").propagate = False
    if not directory.is_dir():
        raise CliError(f"hooks directory {directory} does not exist")
    return HookEngine(directory).listing()


def _print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no hooks")
        return
    header = (
        "FILE",
        "HOOK",
        "WHEN",
        "EVENT",
        "GLOB",
        "VERSION",
        "STATE",
        "RUNS",
        "DENIES",
        "TRAPS",
        "P50_US",
        "P99_US",
    )
    table = [header]
    errors = []
    for r in rows:
        if r.get("hook") is None:
            table.append(
                (
                    r["file"],
                    "-",
                    "-",
                    "-",
                    "-",
                    str(r.get("version") or "-"),
                    "refused",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                )
            )
            errors.append(
                f"{r['file']}: refused (active version: "
                f"{r.get('active_version') or 'none'}):\n{r.get('error')}"
            )
            continue
        table.append(
            (
                r["file"],
                r["hook"],
                r["when"],
                r["event"],
                r["glob"],
                r["version"],
                r["state"],
                str(r["runs"]),
                str(r["denies"]),
                str(r["traps"]),
                _num(r["p50_us"]),
                _num(r["p99_us"]),
            )
        )
        if r.get("last_failure"):
            errors.append(f"{r['file']}: {r['hook']}: last failure: {r['last_failure']}")
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for text in errors:
        print("\n" + text.rstrip("\n"))


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def cmd_test(args: argparse.Namespace) -> int:
    from vegafs.hooks import vega
    from vegafs.hooks.dryrun import dry_run
    from vegafs.store import Store, StoreError

    if not args.path.startswith("/"):
        raise CliError("--path must start with '/' (a path relative to the mount root)")
    store_dir = _store_dir(args.store)
    try:
        store = Store.open(store_dir, read_only=True)
    except StoreError as exc:
        raise CliError(str(exc)) from exc
    try:
        try:
            view = store.view(args.at) if args.at else store
        except StoreError as exc:
            raise CliError(str(exc)) from exc
        try:
            results = dry_run(args.file, view, args.event, args.path, new_path=args.new_path)
        except vega.HookCompileError as exc:
            print(str(exc), file=sys.stderr)
            return 2
        except OSError as exc:
            raise CliError(f"cannot read {args.file}: {exc.strerror}") from exc
    finally:
        store.close()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **r.__dict__,
                        "output": None if r.output is None else r.output.decode("utf-8", "replace"),
                    }
                    for r in results
                ]
            )
        )
        return 0
    if not results:
        print(f"no hook in {args.file} matches {args.event} {args.path}")
        return 0
    for r in results:
        line = f"{r.hook} ({r.when} {args.event} {args.path}): {r.decision}"
        if r.errno:
            line += f" {r.errno}"
        if r.message:
            line += f": {r.message}"
        print(f"{line}  [status {r.status}, {r.steps} steps]")
        if r.output is not None:
            print(f"--- output ({len(r.output)} bytes) ---")
            sys.stdout.write(r.output.decode("utf-8", "replace"))
            if not r.output.endswith(b"\n"):
                print()
            print("---")
    return 0

"""Store commands: ``snapshot create|list|delete``, ``rollback``, ``fsck``, ``gc``, ``stats``.

Each command acts on the store at ``--store`` (default: the embedded default
store). When a mount daemon holds the store, the command asks it through the
control socket (``vegafs.cli.control``) so the live filesystem sees the
change; otherwise it opens the store itself. A read-only ``fsck`` always
opens the store directly (no lock is needed to read it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vegafs.cli.errors import CliError
from vegafs.cli.options import add_store_options, apply_s3_options
from vegafs.store import (
    STORE_CONCURRENT_MODIFICATION,
    STORE_NOT_FOUND,
    Snapshot,
    Store,
    StoreError,
    default_store_path,
)

# fsck exit codes, after fsck(8): clean, problems repaired, problems left.
FSCK_CLEAN, FSCK_REPAIRED, FSCK_PROBLEMS = 0, 1, 4


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    snap = subparsers.add_parser("snapshot", help="create, list or delete snapshots")
    snap_sub = snap.add_subparsers(dest="snapshot_command", metavar="ACTION")
    snap_sub.required = True
    p = snap_sub.add_parser("create", help="name the current state (O(1))")
    p.add_argument("name")
    _common(p, json_flag=True)
    p.set_defaults(func=cmd_snapshot_create)
    p = snap_sub.add_parser("list", help="list snapshots, oldest first")
    _common(p, json_flag=True)
    p.set_defaults(func=cmd_snapshot_list)
    p = snap_sub.add_parser("delete", help="delete a snapshot (its data is reclaimed by gc)")
    p.add_argument("name")
    _common(p)
    p.set_defaults(func=cmd_snapshot_delete)

    p = subparsers.add_parser(
        "rollback",
        help="make the store's head the state of a snapshot (undoable)",
        description="Append a ROLLBACK record: the head becomes the snapshot's state. History is "
        "kept; the command prints how to undo it.",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("name", nargs="?", help="the snapshot to roll back to")
    target.add_argument(
        "--to-logseq", type=int, help="roll to a published logseq (undo a rollback)"
    )
    _common(p, json_flag=True)
    p.set_defaults(func=cmd_rollback)

    p = subparsers.add_parser(
        "fsck",
        help="check the store (exit 0 clean, 1 repaired, 4 problems left)",
        description="Verify every record, chunk, reference and the derived index.",
    )
    p.add_argument("--repair", action="store_true", help="rebuild derived state, quarantine damage")
    _common(p, json_flag=True)
    p.set_defaults(func=cmd_fsck)

    p = subparsers.add_parser("gc", help="reclaim data no snapshot and not the head can reach")
    _common(p, json_flag=True)
    p.set_defaults(func=cmd_gc)

    p = subparsers.add_parser("stats", help="store size, dedup ratio, counts")
    _common(p, json_flag=True)
    p.set_defaults(func=cmd_stats)


def _common(p: argparse.ArgumentParser, json_flag: bool = False) -> None:
    add_store_options(p, "store directory or S3 location (default: the embedded store)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output")


# -- plumbing -----------------------------------------------------------------


def _store_dir(args: argparse.Namespace) -> Path | str:
    """The store's location: a directory, or an ``s3://`` URI kept as text."""
    apply_s3_options(args, [args.store or ""])
    if args.store and args.store.startswith("s3://"):
        return str(args.store)
    return Path(args.store).absolute() if args.store else default_store_path()


def _ask_daemon(store_dir: Path | str, op: str, **op_args: Any) -> tuple[bool, Any]:
    """(True, result) if a mount daemon served ``op``; (False, None) if none listens."""
    try:
        from vegafs.cli import control
    except ImportError:  # the mount layer is not installed
        return False, None
    if isinstance(store_dir, str):  # s3://: a mount's socket is in the local cache directory
        from vegafs.store.s3backend import default_cache_dir

        store_dir = default_cache_dir(store_dir)
    try:
        response = control.request(store_dir, op, **op_args)
    except (OSError, control.ControlError) as e:
        raise CliError(f"the mount daemon of {store_dir} failed to answer: {e}") from None
    if response is None:
        return False, None
    if not response.get("ok"):
        raise CliError(str(response.get("error", "the mount daemon reported an error")))
    return True, response.get("result")


def _open(store_dir: Path | str, read_only: bool = False, repair: bool = False) -> Store:
    try:
        return Store.open(store_dir, read_only=read_only, repair=repair)
    except StoreError as e:
        if e.code == STORE_NOT_FOUND:
            raise CliError(f"no store at {store_dir}") from None
        if e.code == STORE_CONCURRENT_MODIFICATION:
            raise CliError(
                f"{e}; its mount daemon does not answer on its control socket "
                "(wait for it, or unmount it with `vegafs umount`)"
            ) from None
        raise CliError(str(e)) from None
    except OSError as e:  # an unreachable object store, a missing directory
        raise CliError(f"cannot open the store at {store_dir}: {e.strerror or e}") from None


def _run(args: argparse.Namespace, op: str, local: Callable[[Store], Any], **op_args: Any) -> Any:
    """Run ``op`` through the daemon if one serves the store, else on the store itself."""
    store_dir = _store_dir(args)
    served, result = _ask_daemon(store_dir, op, **op_args)
    if served:
        return result
    store = _open(store_dir)
    try:
        return local(store)
    except StoreError as e:
        raise CliError(str(e)) from None
    except ValueError as e:
        raise CliError(str(e)) from None
    finally:
        try:
            store.close()
        except StoreError as e:
            print(f"vegafs: warning: closing the store: {e}", file=sys.stderr)


def _snap_dict(s: Snapshot) -> dict[str, Any]:
    return {"name": s.name, "logseq": s.logseq, "created_ns": s.created_ns}


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def _progress_bar() -> Callable[[str, int, int], None] | None:
    """A one-line progress bar on stderr when it is a terminal; None otherwise."""
    if not sys.stderr.isatty():
        return None
    last = [0.0]

    def draw(phase: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < 0.1:
            return
        last[0] = now
        frac = done / total if total else 1.0
        filled = int(frac * 30)
        sys.stderr.write(f"\r{phase:>8} [{'#' * filled}{'.' * (30 - filled)}] {frac:6.1%}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return draw


# -- commands -------------------------------------------------------------------


def cmd_snapshot_create(args: argparse.Namespace) -> int:
    result = _run(
        args, "snapshot_create", lambda s: _snap_dict(s.create_snapshot(args.name)), name=args.name
    )
    if args.json:
        _print_json(result)
    else:
        logseq = result.get("logseq") if isinstance(result, dict) else None
        print(f"snapshot {args.name!r} created" + (f" at logseq {logseq}" if logseq else ""))
    return 0


def cmd_snapshot_list(args: argparse.Namespace) -> int:
    result = _run(args, "snapshot_list", lambda s: [_snap_dict(x) for x in s.list_snapshots()])
    if args.json:
        _print_json(result)
        return 0
    if not result:
        print("no snapshots")
        return 0
    print(f"{'NAME':<24} {'LOGSEQ':>10}  CREATED")
    for snap in result:
        created = time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(int(snap.get("created_ns", 0)) / 1e9)
        )
        print(f"{snap['name']:<24} {snap['logseq']:>10}  {created}")
    return 0


def cmd_snapshot_delete(args: argparse.Namespace) -> int:
    _run(args, "snapshot_delete", lambda s: s.delete_snapshot(args.name), name=args.name)
    print(f"snapshot {args.name!r} deleted (run `vegafs gc` to reclaim its data)")
    return 0


def _rollback_local(args: argparse.Namespace, store: Store) -> dict[str, Any]:
    logseq = store.rollback_to(args.to_logseq) if args.name is None else store.rollback(args.name)
    info = store.rollbacks()[-1]
    return {"logseq": logseq, "target": info.target, "name": info.name, "pre_head": info.pre_head}


def cmd_rollback(args: argparse.Namespace) -> int:
    if args.name is None:
        served, _status = _ask_daemon(_store_dir(args), "status")
        if served:
            raise CliError(
                "a mounted store rolls back to snapshots only; unmount it (`vegafs umount`) "
                "to roll to a logseq"
            )
        result = _run(args, "rollback", lambda s: _rollback_local(args, s), logseq=args.to_logseq)
    else:
        result = _run(args, "rollback", lambda s: _rollback_local(args, s), name=args.name)
    if args.json:
        _print_json(result)
        return 0
    what = f"snapshot {args.name!r}" if args.name is not None else f"logseq {args.to_logseq}"
    print(f"rolled back to {what}")
    if isinstance(result, dict) and result.get("pre_head"):
        print(f"to undo: vegafs rollback --to-logseq {result['pre_head']}")
    return 0


def cmd_fsck(args: argparse.Namespace) -> int:
    store_dir = _store_dir(args)
    progress = _progress_bar()
    if args.repair:
        served, _status = _ask_daemon(store_dir, "status")
        if served:
            raise CliError(
                f"the store {store_dir} is mounted; unmount it (`vegafs umount`) before "
                "`vegafs fsck --repair` (a read-only check works while mounted)"
            )
        store = _open(store_dir, repair=True)
    else:
        store = _open(store_dir, read_only=True, repair=True)
    try:
        rep = store.fsck(repair=args.repair, progress=progress)
    except StoreError as e:
        raise CliError(str(e)) from None
    finally:
        store.close()
    report = {
        "ok": rep.ok,
        "problems": rep.problems,
        "repaired": rep.repaired,
        "notes": rep.notes,
        "counts": rep.counts,
    }
    return _print_fsck(args, report)


def _print_fsck(args: argparse.Namespace, report: dict[str, Any]) -> int:
    problems = report.get("problems", [])
    report.setdefault("ok", not problems)
    if args.json:
        _print_json(report)
    else:
        print(f"fsck: {'clean' if report['ok'] else f'{len(problems)} problem(s)'}")
        for p in problems:
            print(f"  problem: {p}")
        for r in report.get("repaired", []):
            print(f"  repaired: {r}")
        for n in report.get("notes", []):
            print(f"  note: {n}")
        counts = report.get("counts", {})
        if counts:
            print("  " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    if not report.get("ok"):
        return FSCK_PROBLEMS
    return FSCK_REPAIRED if report.get("repaired") else FSCK_CLEAN


def cmd_gc(args: argparse.Namespace) -> int:
    progress = _progress_bar()

    def local(store: Store) -> dict[str, Any]:
        r = store.gc(progress=progress)
        return {
            "generation": r.generation,
            "chunks_kept": r.chunks_kept,
            "chunks_dropped": r.chunks_dropped,
            "bytes_before": r.bytes_before,
            "bytes_after": r.bytes_after,
            "segments_deleted": r.segments_deleted,
            "seconds": round(r.seconds, 3),
        }

    result = _run(args, "gc", local)
    if args.json:
        _print_json(result)
    elif isinstance(result, dict) and "bytes_before" in result:
        print(
            f"gc: kept {result['chunks_kept']} chunks, dropped {result['chunks_dropped']}; "
            f"{_human(result['bytes_before'])} -> {_human(result['bytes_after'])}"
        )
    else:
        print(f"gc: {result}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    result = _run(args, "stats", lambda s: s.stats())
    if args.json:
        _print_json(result)
        return 0
    for key, value in result.items():
        shown = _human(value) if key.endswith("_bytes") and isinstance(value, int) else value
        print(f"{key:<18} {shown}")
    return 0


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"

"""`vegafs mount`, `vegafs umount` and `vegafs sync`: the mount daemon's CLI.

`mount` checks everything a user can get wrong before touching FUSE (missing,
non-directory, non-empty or already-mounted mount point; a stale mount left by
a killed daemon, which it cleans up; a store locked by another mounter; no
/dev/fuse) and reports it in one line. Without ``--foreground`` it forks, and
the parent exits only once the child reports through a pipe that the mount is
ready (or failed, with the child's message), so `vegafs mount M && ls M`
works in scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vegafs.cli import control
from vegafs.cli.errors import CliError
from vegafs.cli.options import add_store_options, apply_s3_options

if TYPE_CHECKING:
    from vegafs.store import Store  # imported where used: the CLI starts without it

UMOUNT_WAIT = 120.0
#: How often a read-only mount polls for the writer's publishes (docs/s3.md).
FOLLOW_INTERVAL = 2.0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mount",
        help="mount a store at a directory",
        description="Mount a vegafs store at MOUNTPOINT (an existing, empty directory).",
    )
    p.add_argument("mountpoint", help="an existing, empty directory")
    add_store_options(
        p,
        "the store directory or S3 location (created on first use; default: the embedded "
        "default store)",
    )
    p.add_argument("--hooks", metavar="DIR", help="directory of Vega hook files")
    p.add_argument(
        "--read-only",
        action="store_true",
        help="mount read-only beside the store's writer (another mount, another machine): "
        "no lock is taken and nothing is written; follows the writer's publishes",
    )
    p.add_argument(
        "--snapshot",
        metavar="NAME",
        help="mount snapshot NAME, read-only (implies --read-only; it never moves)",
    )
    p.add_argument(
        "--follow-interval",
        type=float,
        default=FOLLOW_INTERVAL,
        metavar="S",
        help=f"a read-only mount looks for the writer's new publishes every S seconds "
        f"(default {FOLLOW_INTERVAL:g}; 0 stays at the state seen at mount time)",
    )
    p.add_argument(
        "--foreground", action="store_true", help="stay in the foreground (do not daemonize)"
    )
    p.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,  # keeps `vegafs --debug mount ...` working too
        help="debug logging in <store>/vegafs.log, tracebacks on errors",
    )
    p.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPT[,OPT]",
        help="extra FUSE mount options (e.g. allow_other)",
    )
    p.add_argument(
        "--commit-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="publish closed files at most S seconds later (group commit; default 1)",
    )
    p.add_argument(
        "--read-ahead",
        type=int,
        default=1024,
        metavar="KB",
        help="the kernel's readahead window for this mount, in KiB (default 1024; "
        "the kernel's own 128 makes one 128 KiB request per daemon round trip; 0 keeps it)",
    )
    p.add_argument(
        "--writeback-cache",
        action="store_true",
        help="let the kernel batch writes in its page cache (fewer requests for small "
        "writes; slower streaming: FUSE throttles dirty pages hard)",
    )
    p.set_defaults(func=cmd_mount)

    u = subparsers.add_parser(
        "umount",
        help="flush, publish and unmount",
        description="Flush and publish everything, unmount MOUNTPOINT, wait for the daemon to exit.",
    )
    u.add_argument("mountpoint")
    u.set_defaults(func=cmd_umount)

    s = subparsers.add_parser(
        "sync",
        help="make everything written to a mount durable now",
        description="Commit every buffered file of the mount and publish (what syncfs would do).",
    )
    s.add_argument("mountpoint")
    s.set_defaults(func=cmd_sync)


# ------------------------------------------------------------------ helpers


def _mount_source(mnt: str) -> str | None:
    """The source (``fsname``) of the mount at ``mnt``, from /proc/self/mountinfo."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 10 or _unescape(fields[4]) != mnt:
            continue
        sep = fields.index("-")
        if fields[sep + 1].startswith("fuse"):
            found = _unescape(fields[sep + 2])  # the last mount on top wins
    return found


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _is_stale(mnt: str) -> bool:
    """A FUSE mount whose daemon died: every access fails with ENOTCONN."""
    try:
        os.stat(mnt)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def _fusermount(mnt: str, lazy: bool) -> subprocess.CompletedProcess[str]:
    args = ["fusermount3", "-u", *(["-z"] if lazy else []), mnt]
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise CliError("fusermount3 not found: install the fuse3 package") from exc


def _check_mountpoint(mnt: str) -> None:
    if _is_stale(mnt):
        _fusermount(mnt, lazy=True)
        print(
            f"vegafs: cleaned up a stale mount at {mnt} left by a daemon that died",
            file=sys.stderr,
        )
    if not os.path.lexists(mnt):
        raise CliError(f"mount point {mnt} does not exist (create it with mkdir)")
    if not os.path.isdir(mnt):
        raise CliError(f"mount point {mnt} is not a directory")
    if os.path.ismount(mnt):
        what = _mount_source(mnt)
        raise CliError(f"{mnt} is already mounted" + (f" (from {what})" if what else ""))
    try:
        if os.listdir(mnt):
            raise CliError(f"mount point {mnt} is not empty")
    except PermissionError as exc:
        raise CliError(f"cannot read mount point {mnt}: permission denied") from exc
    if not os.path.exists("/dev/fuse"):
        raise CliError("/dev/fuse is missing: load the fuse module (modprobe fuse)")


def _setup_logging(store_dir: Path, debug: bool) -> None:
    handler = logging.FileHandler(store_dir / "vegafs.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        logging.getLogger("pyfuse3").setLevel(logging.WARNING)


def _open_store(store_dir: Path | str, snapshot: str | None, read_only: bool) -> Store:
    from vegafs.store import Store, StoreError

    try:
        store = Store.open(store_dir, create=not read_only, read_only=read_only)
    except StoreError as exc:
        raise CliError(str(exc)) from exc
    if snapshot is not None:
        try:
            store.pin(snapshot)
        except StoreError as exc:
            store.close()
            raise CliError(str(exc)) from exc
    return store


def reader_state_dir(mountpoint: str) -> Path:
    """Local state (log, control socket; an s3:// store's read cache) of a read-only mount.

    Not the store's directory: a reader needs no write access to it and must
    not share a writer's control socket or cache. One per mount point:
    ``$XDG_CACHE_HOME/vegafs/readers/<mount point, '/' as '%'>`` (``~/.cache/...``).
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "vegafs", "readers", mountpoint.strip("/").replace("/", "%") or "%")


# -------------------------------------------------------------------- mount


def cmd_mount(args: argparse.Namespace) -> int:
    from vegafs.store import default_store_path

    mnt = os.path.abspath(args.mountpoint)
    _check_mountpoint(mnt)
    args.read_only = args.read_only or args.snapshot is not None
    if args.follow_interval < 0:
        raise CliError("--follow-interval must be 0 (do not follow) or a number of seconds")
    apply_s3_options(args, [args.store or ""])
    if args.store and args.store.startswith("s3://"):
        from vegafs.store.s3backend import default_cache_dir

        # The store lives in the bucket; its local state (journal, cache, log,
        # control socket) in the cache directory, which stands for it here.
        args.store_location = args.store
        store_dir = default_cache_dir(args.store)
    else:
        store_dir = Path(args.store).absolute() if args.store else default_store_path()
    if args.read_only:
        args.store_location = getattr(args, "store_location", None) or str(store_dir)
        store_dir = reader_state_dir(mnt)
        if args.store_location.startswith("s3://"):
            os.environ["VEGAFS_S3_CACHE"] = str(store_dir)  # the reader's own read cache
    if args.hooks and not os.path.isdir(args.hooks):
        raise CliError(f"hooks directory {args.hooks} does not exist")
    if args.commit_interval <= 0:
        raise CliError("--commit-interval must be positive")
    if args.read_ahead < 0:
        raise CliError("--read-ahead must be 0 (keep the kernel's) or a size in KiB")
    if args.foreground:
        return _serve(args, mnt, store_dir, lambda: None)
    return _daemonize(args, mnt, store_dir)


def _serve(
    args: argparse.Namespace, mnt: str, store_dir: Path, ready: Callable[[], None]
) -> int:
    """Open the store, mount, serve until unmounted, close cleanly."""
    import trio

    from vegafs.fuse_ops import Daemon

    store_dir.parent.mkdir(parents=True, exist_ok=True)
    if args.read_only:
        store_dir.mkdir(parents=True, exist_ok=True)
    location = getattr(args, "store_location", None) or store_dir
    store = _open_store(location, args.snapshot, args.read_only)
    try:
        _setup_logging(store_dir, args.debug)
        options = [o for opt in args.options for o in opt.split(",") if o]
        daemon = Daemon(
            store,
            mnt,
            store_dir=str(store_dir),
            fuse_options=options,
            commit_interval=args.commit_interval,
            writeback_cache=args.writeback_cache,
            read_ahead_kb=args.read_ahead,
            hooks_dir=os.path.abspath(args.hooks) if args.hooks else None,
            follow_interval=args.follow_interval,
        )
    except BaseException:
        store.close()
        raise
    try:
        daemon.mount()
    except Exception as exc:
        store.close()
        raise CliError(f"cannot mount {mnt}: {exc}") from exc
    try:
        trio.run(daemon.run, control.serve, ready)
    finally:
        daemon.close()
    return 0


def _daemonize(args: argparse.Namespace, mnt: str, store_dir: Path) -> int:
    """Fork; the parent returns once the child says the mount is ready."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as reader:
            message = reader.read().decode(errors="replace")
        if message == "ok":
            return 0
        os.waitpid(pid, 0)
        raise CliError(message.strip() or "the mount daemon failed to start (see vegafs.log)")
    # The child: its own session, no terminal, reports once through the pipe.
    os.close(read_fd)
    os.setsid()
    pipe = os.fdopen(write_fd, "wb", buffering=0)

    def ready() -> None:
        pipe.write(b"ok")
        pipe.close()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)

    code = 1
    try:
        code = _serve(args, mnt, store_dir, ready)
    except CliError as exc:
        _report_failure(pipe, str(exc))
    except BaseException as exc:
        logging.getLogger("vegafs.daemon").exception("daemon failed")
        _report_failure(pipe, f"mount daemon failed: {exc}")
    finally:
        os._exit(code)


def _report_failure(pipe: io.FileIO, message: str) -> None:
    if not pipe.closed:
        with contextlib.suppress(OSError):
            pipe.write(message.encode())
            pipe.close()


# ------------------------------------------------------------------- umount


def cmd_umount(args: argparse.Namespace) -> int:
    mnt = os.path.abspath(args.mountpoint)
    if _is_stale(mnt):
        result = _fusermount(mnt, lazy=True)
        if result.returncode != 0:
            raise CliError(f"cannot clean up the stale mount {mnt}: {result.stderr.strip()}")
        print(f"vegafs: removed the stale mount at {mnt} (its daemon had died)", file=sys.stderr)
        return 0
    if not os.path.ismount(mnt):
        raise CliError(f"{mnt} is not mounted")
    source = _mount_source(mnt)
    status = None
    if source:
        try:
            status = control.call(source, "shutdown")  # flush + publish, tells us the pid
        except control.ControlError as exc:
            raise CliError(f"the daemon of {mnt} failed to flush: {exc}") from exc
    result = _fusermount(mnt, lazy=False)
    if result.returncode != 0:
        detail = result.stderr.strip().removeprefix("fusermount3: ")
        raise CliError(f"cannot unmount {mnt}: {detail}")
    if status:
        _wait_exit(int(status["pid"]), mnt)
    return 0


def _wait_exit(pid: int, mnt: str) -> None:
    """Wait until the daemon has closed the store and exited."""
    deadline = time.monotonic() + UMOUNT_WAIT
    delay = 0.005
    while _alive(pid):
        if time.monotonic() > deadline:
            raise CliError(f"{mnt} is unmounted but its daemon (pid {pid}) has not exited yet")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (an exited child its parent has not reaped is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def cmd_sync(args: argparse.Namespace) -> int:
    mnt = os.path.abspath(args.mountpoint)
    source = _mount_source(mnt) if os.path.ismount(mnt) else None
    if source is None:
        raise CliError(f"{mnt} is not a vegafs mount")
    try:
        status = control.call(source, "sync")
    except control.ControlError as exc:
        raise CliError(f"sync of {mnt} failed: {exc}") from exc
    if status is None:
        raise CliError(f"no daemon answers for {mnt}")
    return 0

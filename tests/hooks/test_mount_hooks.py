"""Hooks on a real FUSE mount: the issue's examples, reload, failure policy, replay.

Every test mounts through ``tests.mountutil.mounted`` (always unmounted, even
on failure) with a hooks directory it controls.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.mountutil import mounted, needs_fuse, run_vegafs

pytestmark = [pytest.mark.mount, needs_fuse]

EXAMPLES = Path(__file__).resolve().parents[2] / "hooks"
DEADLINE = 10.0


def _until(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Poll ``check`` until it returns a truthy value (or stop raising)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (OSError, AssertionError, KeyError) as exc:
            last = exc
        else:
            if value:
                return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def _install(hooks: Path, *names: str) -> None:
    hooks.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(EXAMPLES / name, hooks / name)


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _errno_of(fn: Callable[[], Any]) -> int | None:
    try:
        fn()
    except OSError as exc:
        return exc.errno
    return None


def test_issue_examples_on_a_mount(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    _install(
        hooks,
        "logs_append_only.vega",
        "approvals.vega",
        "redact_env.vega",
        "json_guard.vega",
        "runaway_demo.vega",
    )
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt, "--hooks", str(hooks)):
        # logs_append_only: appends work, overwrites and unlinks are EPERM
        (mnt / "logs").mkdir()
        log = mnt / "logs" / "app.log"
        log.write_text("one\n")
        with open(log, "a") as f:
            f.write("two\n")

        def overwrite() -> None:
            with open(log, "r+") as f:
                f.write("X")

        assert _errno_of(overwrite) == errno.EPERM
        assert _errno_of(log.unlink) == errno.EPERM
        assert log.read_text() == "one\ntwo\n"

        # approvals: an approval needs a reviewer; accepted commits are stamped
        (mnt / "docs").mkdir()
        doc = mnt / "docs" / "spec.md"
        doc.write_text("spec")
        assert _errno_of(lambda: os.setxattr(doc, "user.status", b"approved")) == errno.EPERM
        os.setxattr(doc, "user.reviewer", b"ann")
        os.setxattr(doc, "user.status", b"approved")
        assert os.getxattr(doc, "user.checked") == b"yes"
        assert (
            subprocess.run(
                ["getfattr", "-n", "user.status", "--only-values", str(doc)],
                capture_output=True,
                check=True,
            ).stdout
            == b"approved"
        )

        # redact_env: readers see masked values, stat agrees, stored bytes unchanged
        env = mnt / "prod.env"
        env.write_text("# database\nUSER=bob\nPASS=hunter2\n")
        shown = subprocess.run(["cat", str(env)], capture_output=True, check=True).stdout
        assert shown == b"# database\nUSER=***\nPASS=***\n"
        assert os.stat(env).st_size == len(shown)
        shutil.copy(env, tmp_path / "copied.env")
        assert (tmp_path / "copied.env").read_bytes() == shown

        # json_guard: an invalid save is reverted and close() fails with EINVAL
        (mnt / "config").mkdir()
        cfg = mnt / "config" / "app.json"
        cfg.write_text('{"debug": false}')

        def bad_save() -> None:
            with open(cfg, "w") as f:
                f.write('{"debug": ')

        assert _errno_of(bad_save) == errno.EINVAL
        assert cfg.read_text() == '{"debug": false}'

        # runaway: reads under /runaway fail fast with EIO; everything else keeps working
        (mnt / "runaway").mkdir()
        (mnt / "runaway" / "x").write_text("data")
        t0 = time.monotonic()
        assert _errno_of((mnt / "runaway" / "x").read_text) == errno.EIO
        assert time.monotonic() - t0 < 2.0
        assert sorted(os.listdir(mnt)) == ["config", "docs", "logs", "prod.env", "runaway"]
        (mnt / "other.txt").write_text("still fine")
        assert (mnt / "other.txt").read_text() == "still fine"

        # the live daemon reports every hook with counters
        out = run_vegafs("hooks", "list", "--store", str(store), "--json", check=True).stdout
        rows = {r["hook"]: r for r in map(json.loads, out.splitlines())}
        assert rows["logs_append_only"]["denies"] >= 1
        assert rows["runaway_demo"]["traps"] >= 1
        assert rows["redact_env"]["state"] == "active"

    spans = run_vegafs("trace", "--store", str(store), "--json", "-n", "0", check=True).stdout
    decisions = {(s["hook"], s["decision"]) for s in map(json.loads, spans.splitlines())}
    assert ("logs_keep", "deny") in decisions and ("redact_env", "transform") in decisions


def test_line_count_after_hook_on_a_mount(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    _install(hooks, "line_count.vega")
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt, "--hooks", str(hooks)):
        (mnt / "notes" / "2026").mkdir(parents=True)
        note = mnt / "notes" / "2026" / "day.md"
        note.write_text("a\nb\nc\n")
        assert _until(lambda: os.getxattr(note, "user.lines"), "user.lines") == b"3"


def test_after_hook_reads_the_recorded_version_not_a_write_in_progress(tmp_path: Path) -> None:
    """An after-hook's input is the file as its last close left it: writes another
    handle holds in the daemon (direct I/O: they reach it at once) are not seen
    until that handle records them, so a stamp always counts a version in the log."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "peek.vega").write_text(
        'hook peek after create "/trigger/**" {\n'
        "    capabilities [fs::read, meta::write]\n"
        "    fn run(ev) {\n"
        '        let n = bytes::count(read("/notes/n.md"), "\\n");\n'
        '        let m = lookup(ev.path); m.set("user.lines", str(n)); m.commit();\n'
        "        return allow();\n"
        "    }\n"
        "}\n"
    )
    with mounted(tmp_path / "store", tmp_path / "mnt", "--hooks", str(hooks)):
        mnt = tmp_path / "mnt"
        (mnt / "notes").mkdir()
        (mnt / "trigger").mkdir()
        note = mnt / "notes" / "n.md"
        note.write_bytes(b"one\ntwo\n")
        fd = os.open(note, os.O_WRONLY | os.O_DIRECT)
        try:
            block = bytearray(os.urandom(4096).replace(b"\n", b"x"))
            block[::2] = b"\n" * 2048
            os.write(fd, block)  # in the daemon's buffer, not recorded until close
            (mnt / "trigger" / "t1").write_bytes(b"")
            stamp = _until(lambda: os.getxattr(mnt / "trigger" / "t1", "user.lines"), "stamp")
            assert stamp == b"2", "the hook saw a write another handle had in progress"
        finally:
            os.close(fd)
        (mnt / "trigger" / "t2").write_bytes(b"")
        stamp = _until(lambda: os.getxattr(mnt / "trigger" / "t2", "user.lines"), "stamp")
        assert stamp == b"2048", "the close recorded the version: the next run sees it"


def test_hot_reload_refusal_and_removal(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt, "--hooks", str(hooks)):
        (mnt / "free").write_text("x")
        guard = hooks / "guard.vega"
        _replace(
            guard,
            'hook guard on create "/locked/**" {\n'
            '    fn run(ev) { return deny(EACCES, "locked v1"); }\n}\n',
        )
        (mnt / "locked").mkdir()
        names = iter(range(1_000_000))

        def create() -> int | None:
            return _errno_of(lambda: (mnt / "locked" / f"f{next(names)}").write_text("x"))

        _until(lambda: create() == errno.EACCES, "the new hook to take effect")
        # a broken version is refused; version 1 keeps guarding
        _replace(
            guard, 'hook guard on create "/locked/**" {\n    fn run(ev) { return allow( }\n}\n'
        )
        rows = _until(
            lambda: [
                json.loads(line)
                for line in run_vegafs(
                    "hooks", "list", "--store", str(store), "--json", check=True
                ).stdout.splitlines()
                if json.loads(line)["state"] == "refused"
            ],
            "the refusal to show",
        )
        assert "guard.vega:2:" in rows[0]["error"]
        assert create() == errno.EACCES
        text = run_vegafs("hooks", "list", "--store", str(store), check=True).stdout
        assert "refused" in text and "active" in text
        # removing the file removes its hooks
        guard.unlink()
        _until(lambda: create() is None, "the hook to go away")


def test_failure_policies_on_a_mount(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "spin.vega").write_text(
        'hook closed_spin on write "/closed/**" { budget { steps 5_000 }\n'
        "    fn run(ev) { loop { } } }\n"
        'hook open_spin on write "/open/**" { budget { steps 5_000 } failure open\n'
        "    fn run(ev) { loop { } } }\n"
    )
    with mounted(tmp_path / "store", tmp_path / "mnt", "--hooks", str(hooks)):
        mnt = tmp_path / "mnt"
        (mnt / "closed").mkdir()
        (mnt / "open").mkdir()
        assert _errno_of(lambda: (mnt / "closed" / "f").write_text("x")) == errno.EIO
        (mnt / "open" / "f").write_text("written")
        assert (mnt / "open" / "f").read_text() == "written"


def test_after_hook_survives_kill_9_and_runs_on_next_mount(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    stamp = hooks / "stamp.vega"
    # Version 1 always fails and backs off for a long time: the job is still
    # pending (journaled, published) when the daemon is killed.
    stamp.write_text(
        'hook stamp after close "/inbox/**" {\n'
        "    retry { max_attempts 5  backoff exponential(30s, 2.0, 60s) }\n"
        "    budget { steps 100 }\n"
        "    fn run(ev) { loop { } }\n}\n"
    )
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt, "--hooks", str(hooks)) as proc:
        (mnt / "inbox").mkdir()
        (mnt / "inbox" / "msg").write_text("hello")
        _until(
            lambda: b'"hook":"stamp"' in (store / "traces" / "hooks.jsonl").read_bytes(),
            "the first attempt",
        )
        run_vegafs("sync", str(mnt), check=True)
        proc.kill()
        proc.wait()
    # Version 2 works; the next mount replays the unfinished job.
    _replace(
        stamp,
        'hook stamp after close "/inbox/**" { capabilities [meta::write]\n'
        '    fn run(ev) { let m = lookup(ev.path); m.set("user.stamped", "yes");\n'
        "        m.commit(); return allow(); }\n}\n",
    )
    with mounted(store, mnt, "--hooks", str(hooks)):
        assert (
            _until(
                lambda: os.getxattr(mnt / "inbox" / "msg", "user.stamped"),
                "the replayed after-hook",
            )
            == b"yes"
        )


def test_hooks_test_dry_run_against_a_snapshot(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt, "--hooks", str(hooks)):
        (mnt / "a.env").write_text("TOKEN=abc\n")
        run_vegafs("snapshot", "create", "before", "--store", str(store), check=True)
        (mnt / "a.env").write_text("TOKEN=changed\nMORE=1\n")
        run_vegafs("sync", str(mnt), check=True)
        example = EXAMPLES / "redact_env.vega"
        head = run_vegafs(
            "hooks",
            "test",
            str(example),
            "--event",
            "read",
            "--path",
            "/a.env",
            "--store",
            str(store),
            check=True,
        ).stdout
        assert "redact_env (on read /a.env): transform" in head and "MORE=***" in head
        old = run_vegafs(
            "hooks",
            "test",
            str(example),
            "--event",
            "read",
            "--path",
            "/a.env",
            "--store",
            str(store),
            "--at",
            "before",
            check=True,
        ).stdout
        assert "TOKEN=***" in old and "MORE" not in old
        # the dry run is read-only: the file is unchanged
        assert (mnt / "a.env").read_text() == "TOKEN=changed\nMORE=1\n"


ALLOW_ALL_DATA = "".join(
    f'hook allow_{event} on {event} "/**" {{ fn run(ev) {{ return allow(); }} }}\n'
    for event in ("read", "write", "truncate", "close")
)


def test_git_sqlite_and_mmap_work_under_allow_all_data_hooks(tmp_path: Path) -> None:
    """Data hooks on every file keep the page cache (no direct I/O), so mmap
    works and with it git and SQLite (WAL mode maps its -shm file shared);
    only a read transform makes its files direct I/O."""
    import mmap
    import sqlite3

    from tests.mount.helpers import git

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "all.vega").write_text(ALLOW_ALL_DATA)
    _install(hooks, "redact_env.vega")
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt, "--hooks", str(hooks)):
        # shared writable mmap, read back through read() after msync
        data = mnt / "mapped"
        data.write_bytes(b"\0" * 8192)
        with open(data, "r+b") as f, mmap.mmap(f.fileno(), 8192) as m:
            m[100:105] = b"hello"
            m.flush()
        assert data.read_bytes()[100:105] == b"hello"

        # SQLite in WAL mode (mmaps its -shm file)
        db = sqlite3.connect(mnt / "app.db")
        try:
            assert db.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
            db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
            with db:
                db.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(500)])
            assert db.execute("SELECT count(*), max(v) FROM t").fetchone() == (500, "row 99")
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            db.close()

        # git: init, commit, gc (packs are read through mmap), log, fsck
        repo = mnt / "repo"
        repo.mkdir()
        git(repo, "init", "-q")
        for n in range(3):
            (repo / f"f{n}.txt").write_text(f"version {n}\n" * 50)
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", f"commit {n}")
        git(repo, "gc", "-q")
        assert git(repo, "log", "--oneline").count("\n") == 3
        git(repo, "fsck", "--full")

        # the hooks really ran (page cache or not, every open's reads reach them)
        out = run_vegafs("hooks", "list", "--store", str(store), "--json", check=True).stdout
        rows = {r["hook"]: r for r in map(json.loads, out.splitlines())}
        assert all(rows[f"allow_{e}"]["runs"] > 0 for e in ("read", "write", "close"))

        # a read transform still gets every read, and its files cannot be mapped
        env = mnt / "a.env"
        env.write_text("K=secret\n")
        assert env.read_text() == "K=***\n"
        with open(env, "rb") as f, pytest.raises(OSError):
            mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)


def test_read_hooks_see_each_open_and_a_denied_write_leaves_no_cached_bytes(
    tmp_path: Path,
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "guard.vega").write_text(
        'hook count_reads on read "/r/**" { fn run(ev) { return allow(); } }\n'
        'hook no_x on write "/w/**" {\n'
        '    fn run(ev) { if bytes::find(ev.data, "X") >= 0 { return deny(EPERM, "no X"); }\n'
        "        return allow(); } }\n"
    )
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt, "--hooks", str(hooks)):
        (mnt / "r").mkdir()
        (mnt / "r" / "f").write_text("cached?")

        def runs() -> int:
            out = run_vegafs("hooks", "list", "--store", str(store), "--json", check=True).stdout
            return next(r for r in map(json.loads, out.splitlines()) if r["hook"] == "count_reads")[
                "runs"
            ]

        for _ in range(3):
            assert (mnt / "r" / "f").read_text() == "cached?"
        assert runs() >= 3  # the page cache is dropped at each open of a read-hooked file

        (mnt / "w").mkdir()
        target = mnt / "w" / "f"
        target.write_text("good data")
        with open(target, "r+b", buffering=0) as f:
            assert f.read() == b"good data"  # now in the page cache
            f.seek(0)
            with pytest.raises(PermissionError):
                f.write(b"XXXX")
            f.seek(0)
            assert f.read() == b"good data"  # the refused bytes are not served from cache
        assert target.read_bytes() == b"good data"


KERNEL_UNSEEN = """hook indexer on create "/in/**" {
    capabilities [fs::read, fs::write]
    fn run(ev) {
        let h = open("/index.txt", "a");
        h.write(ev.path + "\\n");
        h.close();
        return allow();
    }
}
hook mover after create "/drop/**" {
    capabilities [fs::read, fs::write]
    fn run(ev) {
        rename(ev.path, path::join("/done", path::base(ev.path)));
        return allow();
    }
}
"""


def test_hook_effects_reach_the_kernels_caches(tmp_path: Path) -> None:
    """What a hook changes never passes through the kernel, which caches
    attributes, entries and pages for minutes: the daemon must drop them, or a
    `cat` right after the operation shows the old size, an open reader keeps
    old pages and a name moved away still stats."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "unseen.vega").write_text(KERNEL_UNSEEN)
    store, mnt = tmp_path / "store", tmp_path / "mnt"
    with mounted(store, mnt, "--hooks", str(hooks)):
        for d in ("in", "drop", "done"):
            (mnt / d).mkdir()
        index = mnt / "index.txt"
        index.write_text("")
        with open(index, "rb", buffering=0) as reader:
            assert reader.read() == b""  # the kernel now caches its size and pages
            (mnt / "in" / "a").touch()
            # a new process, at once: the synchronous hook's write is visible
            shown = subprocess.run(["cat", str(index)], capture_output=True, check=True).stdout
            assert shown == b"/in/a\n"
            assert os.stat(index).st_size == len(shown)
            (mnt / "in" / "b").touch()
            # the reader that held the file open sees the new bytes too
            assert _until(lambda: os.pread(reader.fileno(), 100, 0) == b"/in/a\n/in/b\n", "pages")
        # an after-hook's rename: the old name goes, the new one appears
        dropped = mnt / "drop" / "x"
        dropped.write_text("payload")
        with contextlib.suppress(FileNotFoundError):
            os.stat(dropped)  # cached by the kernel, unless the after-hook was quicker
        _until(lambda: not dropped.exists(), "the moved-away name to vanish")
        assert (mnt / "done" / "x").read_text() == "payload"

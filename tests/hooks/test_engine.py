"""The hook engine on a real store and filesystem, without a mount."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

from vegafs.fs import FsError
from vegafs.hooks.engine import (
    JOURNAL_DONE_KIND,
    JOURNAL_KIND,
    VERSION_KIND,
    HookEngine,
    versions_at,
)
from vegafs.hooks.fs import HookedFileSystem
from vegafs.hooks.trace import Tracer, read_spans, sqlite_db, trace_path
from vegafs.store import ROOT_INO, Store

from .conftest import CTX, Rig

ALLOW_ALL = 'hook a on write "/**" { fn run(ev) { return allow(); } }\n'


def test_logs_append_only_example(rig: Rig) -> None:
    rig.example("logs_append_only.vega")
    rig.write_file("/logs/app.log", b"one\n")
    ino = rig.fs.lookup_path("/logs/app.log")
    fh = rig.fs.open(ino, os.O_RDWR, CTX)
    try:
        rig.fs.write(fh, 4, b"two\n", CTX)  # appending: allowed
        with pytest.raises(FsError) as err:
            rig.fs.write(fh, 0, b"X", CTX)
        assert err.value.errno == errno.EPERM
        assert "append-only" in str(err.value)
    finally:
        rig.fs.release(fh)
    assert rig.read_file("/logs/app.log") == b"one\ntwo\n"
    with pytest.raises(FsError) as err:
        rig.fs.unlink(rig.fs.lookup_path("/logs"), b"app.log", CTX)
    assert err.value.errno == errno.EPERM
    rig.write_file("/elsewhere.log", b"x")
    rig.write_file("/elsewhere.log", b"y")  # outside /logs: no hook


def test_logs_cannot_shrink_by_truncate(rig: Rig) -> None:
    """`echo x > log` (open with O_TRUNC) and truncate(2) to a smaller size are
    refused; truncating to the same or a larger size is not shrinking."""
    rig.example("logs_append_only.vega")
    rig.write_file("/logs/app.log", b"one\n")
    ino = rig.fs.lookup_path("/logs/app.log")
    with pytest.raises(FsError) as err:
        rig.fs.open(ino, os.O_RDWR | os.O_TRUNC, CTX)
    assert err.value.errno == errno.EPERM
    with pytest.raises(FsError) as err:
        rig.fs.setattr(ino, CTX, size=1)
    assert err.value.errno == errno.EPERM
    rig.fs.setattr(ino, CTX, size=4)
    assert rig.read_file("/logs/app.log") == b"one\n"


def test_approvals_example_denies_and_amends_in_one_commit(rig: Rig) -> None:
    rig.example("approvals.vega")
    ino = rig.write_file("/docs/spec.md", b"text")
    with pytest.raises(FsError) as err:
        rig.fs.setxattr(ino, b"user.status", b"approved", 0, CTX)
    assert err.value.errno == errno.EPERM
    assert rig.store.get_inode(ino).xattrs == {}  # nothing landed, not even the stamp
    before = rig.store.head_logseq
    rig.fs.setxattr(ino, b"user.reviewer", b"ann", 0, CTX)
    assert rig.store.head_logseq == before + 1  # the amendment is in the same record
    rig.fs.setxattr(ino, b"user.status", b"approved", 0, CTX)
    assert rig.store.get_inode(ino).xattrs == {
        b"user.reviewer": b"ann",
        b"user.checked": b"yes",
        b"user.status": b"approved",
    }


def test_redact_env_transform_is_cached_per_version_and_sizes_follow(rig: Rig) -> None:
    rig.example("redact_env.vega")
    ino = rig.write_file("/app/prod.env", b"USER=bob\nPASS=hunter2\n")
    shown = rig.read_file("/app/prod.env")
    assert shown == b"USER=***\nPASS=***\n"
    assert rig.fs.getattr(ino).size == len(shown)
    stored = rig.fs.read_all(ino)
    assert stored == b"USER=bob\nPASS=hunter2\n"  # stored bytes are unchanged
    runs = _stats(rig, "redact_env")["runs"]
    rig.read_file("/app/prod.env")
    rig.fs.getattr(ino)
    assert _stats(rig, "redact_env")["runs"] == runs  # cached: same file and hook versions
    rig.write_file("/app/prod.env", b"K=v\n")
    runs = _stats(rig, "redact_env")["runs"]
    assert rig.read_file("/app/prod.env").startswith(b"K=***")
    assert rig.read_file("/app/prod.env").startswith(b"K=***")
    assert _stats(rig, "redact_env")["runs"] == runs + 1  # once for the new version


def test_json_guard_reverts_an_invalid_save(rig: Rig) -> None:
    rig.example("json_guard.vega")
    rig.write_file("/config/app/settings.json", b'{"debug": false, "n": [1, 2.5e3, null]}')
    with pytest.raises(FsError) as err:
        rig.write_file("/config/app/settings.json", b'{"debug": tru')
    assert err.value.errno == errno.EINVAL
    assert rig.read_file("/config/app/settings.json") == b'{"debug": false, "n": [1, 2.5e3, null]}'
    rig.write_file("/config/app/settings.json", b'["ok"]')
    assert rig.read_file("/config/app/settings.json") == b'["ok"]'


def test_runaway_hook_is_stopped_by_its_budget_and_others_keep_working(rig: Rig) -> None:
    rig.example("runaway_demo.vega")
    rig.write_file("/runaway/x", b"data")
    rig.write_file("/fine/y", b"data")
    for _ in range(3):
        with pytest.raises(FsError) as err:
            rig.read_file("/runaway/x")
        assert err.value.errno == errno.EIO
    assert rig.read_file("/fine/y") == b"data"
    row = _stats(rig, "runaway_demo")
    assert row["traps"] == 3
    assert "runaway_demo.vega:9:" in row["last_failure"] and "step budget" in row["last_failure"]


def test_failure_open_lets_the_operation_proceed(rig: Rig) -> None:
    rig.hook(
        "open.vega",
        'hook spin on write "/**" { budget { steps 100 } failure open\nfn run(ev) { loop { } } }\n',
    )
    rig.write_file("/a", b"written anyway")
    assert rig.read_file("/a") == b"written anyway"
    assert _stats(rig, "spin")["traps"] >= 1


def test_a_deny_with_a_bad_errno_is_a_failure(rig: Rig) -> None:
    rig.hook("bad.vega", 'hook bad on create "/**" { fn run(ev) { return deny(12345, "x"); } }\n')
    with pytest.raises(FsError) as err:
        rig.write_file("/a", b"")
    assert err.value.errno == errno.EIO  # failure closed: EIO, not the bogus errno


def test_circuit_breaker_opens_after_repeated_failures(rig: Rig) -> None:
    rig.hook(
        "flaky.vega",
        'hook flaky on create "/**" { budget { steps 50 }\n'
        "circuit_breaker { threshold 2  reset_after 60s }\n"
        "fn run(ev) { loop { } } }\n",
    )
    for n in range(4):
        with pytest.raises(FsError):
            rig.write_file(f"/f{n}", b"")
    row = _stats(rig, "flaky")
    assert row["state"] == "circuit-open"
    assert row["traps"] == 2  # the last two were refused without running


def test_hot_reload_refused_file_keeps_previous_version(rig: Rig) -> None:
    rig.hook("guard.vega", 'hook g on create "/**" { fn run(ev) { return deny(EACCES, "v1"); } }\n')
    with pytest.raises(FsError) as err:
        rig.write_file("/a", b"")
    assert err.value.errno == errno.EACCES
    rig.hook("guard.vega", 'hook g on create "/**" { fn run(ev) { return deny(EACCES, "v2") }\n')
    rows = rig.engine.listing()
    refused = [r for r in rows if r["state"] == "refused"]
    assert refused and "guard.vega:1:" in refused[0]["error"]
    with pytest.raises(FsError) as err:  # version 1 still guards
        rig.write_file("/b", b"")
    assert str(err.value) == "v1"
    rig.hook("guard.vega", 'hook g on create "/**" { fn run(ev) { return allow(); } }\n')
    rig.write_file("/c", b"")
    (rig.hooks_dir / "guard.vega").unlink()
    rig.engine.reload()
    assert rig.engine.listing() == []
    records = [json.loads(p) for _, p in rig.store.annotations(VERSION_KIND)]
    # v1, the allow version, then the removal; the refused version never ran
    assert [r["hash"] is None for r in records] == [False, False, True]
    assert all("source" in r for r in records[:2])
    first_logseq = rig.store.annotations(VERSION_KIND)[0][0]
    assert versions_at(rig.store, first_logseq) == {"guard.vega": records[0]["hash"]}
    assert versions_at(rig.store) == {}


def test_bad_glob_or_setting_is_refused_with_a_position(rig: Rig) -> None:
    rig.hook("bad.vega", 'hook g on create "no-slash" { fn run(ev) { return allow(); } }\n')
    rows = rig.engine.listing()
    assert rows[0]["state"] == "refused"
    assert "bad.vega:1" in rows[0]["error"] and "must start with '/'" in rows[0]["error"]


def test_event_fields_reach_the_hook(rig: Rig) -> None:
    rig.hook(
        "fields.vega",
        'hook f on write "/d/**" { fn run(ev) {\n'
        'if ev.path == "/d/x" && ev.uid == 1000 && ev.pid == 4242 && ev.offset == 0 '
        '&& ev.size == 5 && ev.file_size == 0 && ev.event == "write" '
        '&& bytes::starts_with(ev.data, "hello") { return allow(); }\n'
        'return deny(EINVAL, "unexpected event"); } }\n',
    )
    rig.write_file("/d/x", b"hello")


def test_rename_event_carries_both_paths(rig: Rig) -> None:
    rig.hook(
        "mv.vega",
        'hook mv on rename "/src/**" { fn run(ev) {\n'
        'if ev.new_path == "/dst/b" && ev.old_path == "/src/a" { return deny(EXDEV_LIKE, "x"); }\n'
        "return allow(); } }\n".replace("EXDEV_LIKE", "EBUSY"),
    )
    rig.write_file("/src/a", b"")
    dst = rig.mkdirs("/dst")
    with pytest.raises(FsError) as err:
        rig.fs.rename(rig.fs.lookup_path("/src"), b"a", dst, b"b", 0, CTX)
    assert err.value.errno == errno.EBUSY


def test_hooks_are_not_reentrant(rig: Rig) -> None:
    # The hook writes another file under its own glob: that write must not run it again.
    rig.hook(
        "copy.vega",
        'hook c on close "/in/**" { capabilities [fs::write]\n'
        'fn run(ev) { let r = write("/in/copy", ev.data); return allow(); } }\n',
    )
    rig.write_file("/in/a", b"payload")
    assert rig.read_file("/in/copy") == b"payload"
    assert _stats(rig, "c")["runs"] == 1


def test_capabilities_are_enforced(rig: Rig) -> None:
    rig.hook(
        "sneaky.vega",
        'hook s on close "/x/**" { capabilities [fs::write("/x/**")]\n'
        'fn run(ev) { write("/etc/passwd", "pwned"); return allow(); } }\n',
    )
    with pytest.raises(FsError) as err:
        rig.write_file("/x/a", b"1")
    assert err.value.errno == errno.EIO
    assert rig.fs.lookup_path("/etc/passwd") is None
    assert _stats(rig, "s")["traps"] == 1


def test_after_hook_runs_with_retries_and_is_journaled(rig: Rig) -> None:
    rig.example("line_count.vega")
    rig.write_file("/notes/day/one.md", b"a\nb\nc\n")
    assert rig.engine.wait_idle(10)
    ino = rig.fs.lookup_path("/notes/day/one.md")
    assert rig.store.get_inode(ino).xattrs[b"user.lines"] == b"3"
    journal = rig.store.annotations(JOURNAL_KIND)
    done = {p.decode() for _, p in rig.store.annotations(JOURNAL_DONE_KIND)}
    assert len(journal) == 1 and json.loads(journal[0][1])["id"] in done


def test_after_hook_retries_then_gives_up(rig: Rig) -> None:
    rig.hook(
        "fail.vega",
        'hook f after create "/**" {\n'
        "retry { max_attempts 3  backoff exponential(1ms, 2.0, 5ms) }\n"
        "budget { steps 10 } fn run(ev) { loop { } } }\n",
    )
    rig.write_file("/a", b"")
    assert rig.engine.wait_idle(10)
    assert _stats(rig, "f")["traps"] == 3
    rig.engine.tracer.flush()
    spans = [json.loads(line) for line in trace_path(rig.root).read_text().splitlines()]
    assert [s["attempt"] for s in spans if s["hook"] == "f"] == [1, 2, 3]


def test_unfinished_after_hooks_are_replayed_from_the_journal(rig: Rig) -> None:
    # A first "mount" journals an event but stops before running it (as if killed).
    rig.hook(
        "slow.vega",
        'hook s after create "/**" { capabilities [meta::write]\n'
        'fn run(ev) { let m = lookup(ev.path); m.set("user.seen", "1"); m.commit();'
        " return allow(); } }\n",
    )
    rig.engine._queue.close()  # the worker is gone: events are journaled, not run
    rig.engine._queue = None
    rig.fs.hooks._queue = None
    engine2 = HookEngine(rig.hooks_dir, store=rig.store, tracer=Tracer(None))
    fs2 = HookedFileSystem(rig.store, engine2)
    try:
        # publish through the first engine with a fresh queue that never runs
        rig.engine.attach(rig.fs)
        rig.engine._queue.close()
        rig.write_file("/new", b"")
        assert len(rig.store.annotations(JOURNAL_KIND)) == 1
        assert engine2.replay_journal() == 1
        assert engine2.wait_idle(10)
        ino = fs2.lookup_path("/new")
        assert rig.store.get_inode(ino).xattrs[b"user.seen"] == b"1"
        assert engine2.replay_journal() == 0  # marked done: never twice in a row
    finally:
        engine2.close()


def test_spans_are_json_lines_and_queryable_in_sqlite(rig: Rig) -> None:
    rig.hook("all.vega", ALLOW_ALL)
    rig.write_file("/a", b"12345")
    rig.engine.tracer.flush()
    db = sqlite_db(rig.root)
    rows = db.execute(
        "SELECT phase, hook, event, path, decision, status, bytes FROM spans ORDER BY phase"
    ).fetchall()
    # the operation is a span too, the parent of its hook runs (same trace)
    ids = db.execute(
        "SELECT h.trace_id = o.trace_id, h.parent_id = o.span_id, o.parent_id IS NULL, "
        "o.latency_us >= h.latency_us FROM spans h JOIN spans o "
        "ON h.phase = 'on' AND o.phase = 'op'"
    ).fetchall()
    db.close()
    assert rows == [
        ("on", "a", "write", "/a", "allow", "ok", 5),
        ("op", None, "write", "/a", "allow", "ok", 5),
    ]
    assert ids == [(1, 1, 1, 1)]


def test_a_denied_operation_span_says_so(rig: Rig) -> None:
    rig.hook("no.vega", 'hook no on mkdir "/x" { fn run(ev) { return deny(EACCES, "nope"); } }')
    with pytest.raises(FsError):
        rig.mkdirs("/x")
    rig.engine.tracer.flush()
    spans = [s for _, s in read_spans(trace_path(rig.root))]
    op = next(s for s in spans if s["phase"] == "op")
    assert (op["event"], op["path"], op["decision"], op["errno"], op["status"]) == (
        "mkdir",
        "/x",
        "deny",
        "EACCES",
        "denied",
    )
    assert op["message"] == "nope" and op["hook"] is None
    assert next(s for s in spans if s["phase"] == "on")["parent_id"] == op["span_id"]


def test_thousand_non_matching_hooks_are_not_tried(rig: Rig) -> None:
    source = "".join(
        f'hook h{i} on create "/nowhere{i}/**" {{ fn run(ev) {{ return deny(EPERM, "no"); }} }}\n'
        for i in range(1000)
    )
    rig.hook("many.vega", source)
    for n in range(50):
        rig.write_file(f"/f{n}", b"")
    assert all(r["runs"] == 0 for r in rig.engine.listing())


def _stats(rig: Rig, hook: str) -> dict:
    return next(r for r in rig.engine.listing() if r.get("hook") == hook)


STAGER = """hook stage on create "/jobs/**" {{
    capabilities [fs::read, fs::write, meta::write]
    {settings}
    fn run(ev) {{
        write("/audit/log", "created " + ev.path + "\\n");
        let h = open("/audit/log", "a");
        h.write("second line\\n");
        h.close();
        let seen = read("/audit/log");
        if !bytes::starts_with(seen, "created") {{ return deny(EIO, "staged write not visible"); }}
        mkdir("/audit/dir");
        {ending}
    }}
}}
"""


def test_synchronous_effects_land_with_the_operation(rig: Rig) -> None:
    rig.mkdirs("/audit")
    rig.hook("stage.vega", STAGER.format(settings="", ending="return allow();"))
    rig.write_file("/jobs/a", b"")
    assert rig.read_file("/audit/log") == b"created /jobs/a\nsecond line\n"
    assert rig.fs.lookup_path("/audit/dir") is not None


def _view_path(view: object, path: str) -> int | None:
    ino: int | None = 1
    for part in path.strip("/").split("/"):
        ino = view.lookup(ino, part.encode())  # type: ignore[attr-defined]
        if ino is None:
            return None
    return ino


def test_effects_are_in_the_same_log_record_as_the_operation(rig: Rig) -> None:
    """Every logseq shows the create with all its hook's effects, or none of
    them: what recovery after a crash at any point would open."""
    rig.mkdirs("/audit")
    rig.mkdirs("/jobs")
    rig.hook("stage.vega", STAGER.format(settings="", ending="return allow();"))
    rig.hook(
        "later.vega",
        'hook later after create "/jobs/**" { fn run(ev) { return allow(); } }\n',
    )
    rig.store.publish()
    before = rig.store.head_logseq
    rig.fs.create(rig.fs.lookup_path("/jobs"), b"a", 0o644, os.O_RDWR, CTX)
    rig.store.publish()
    assert rig.engine.wait_idle(10)
    created = None
    for logseq in range(before, rig.store.head_logseq + 1):
        view = rig.store.view_at(logseq)
        parts = [_view_path(view, p) is not None for p in ("/jobs/a", "/audit/log", "/audit/dir")]
        assert parts in ([False] * 3, [True] * 3), (logseq, parts)
        if created is None and parts[0]:
            created = logseq
    assert created is not None
    # the after-hook's journal record is that same record, too
    journaled = [seq for seq, _ in rig.store.annotations(JOURNAL_KIND)]
    assert journaled == [created]


@pytest.mark.parametrize(
    ("settings", "ending", "errno_"),
    [
        ("", 'return deny(EPERM, "no");', errno.EPERM),
        ("budget { steps 10_000 }", "loop { }", errno.EIO),
    ],
)
def test_denied_or_failed_hooks_leave_no_effects(
    rig: Rig, settings: str, ending: str, errno_: int
) -> None:
    rig.mkdirs("/audit")
    rig.hook("stage.vega", STAGER.format(settings=settings, ending=ending))
    with pytest.raises(FsError) as err:
        rig.write_file("/jobs/a", b"")
    assert err.value.errno == errno_
    assert rig.fs.lookup_path("/audit/log") is None
    assert rig.fs.lookup_path("/audit/dir") is None
    assert rig.fs.lookup_path("/jobs/a") is None


def test_a_failure_open_hook_loses_its_effects_but_not_the_operation(rig: Rig) -> None:
    rig.mkdirs("/audit")
    rig.hook(
        "stage.vega",
        STAGER.format(settings="budget { steps 10_000 } failure open", ending="loop { }"),
    )
    rig.write_file("/jobs/a", b"")
    assert rig.fs.lookup_path("/jobs/a") is not None
    assert rig.fs.lookup_path("/audit/log") is None


def test_transforms_are_kept_in_the_store_for_the_next_mount(rig: Rig) -> None:
    rig.example("redact_env.vega")
    rig.write_file("/a.env", b"K=secret\n")
    shown = rig.read_file("/a.env")
    assert shown.startswith(b"K=***")
    engine2 = HookEngine(rig.hooks_dir, store=rig.store, tracer=Tracer(None))
    engine2.reload()
    fs2 = HookedFileSystem(rig.store, engine2)
    try:
        ino = fs2.lookup_path("/a.env")
        fh = fs2.open(ino, os.O_RDONLY, CTX)
        assert fs2.read(fh, 0, 4096) == shown
        fs2.release(fh)
        assert next(r for r in engine2.listing() if r.get("hook") == "redact_env")["runs"] == 0
    finally:
        engine2.close()


def test_a_running_after_hook_does_not_switch_off_synchronous_hooks(rig: Rig) -> None:
    rig.hook(
        "both.vega",
        'hook busy after create "/slow/**" { budget { steps 100_000_000  time 1s }\n'
        "    fn run(ev) { loop { } } }\n"
        'hook guard on create "/guarded/**" { fn run(ev) { return deny(EACCES, "no"); } }\n',
    )
    rig.write_file("/slow/a", b"")
    queue = rig.engine._queue
    assert queue is not None
    deadline = time.monotonic() + 10
    while not queue._running and time.monotonic() < deadline:
        time.sleep(0.001)
    assert queue._running, "the after-hook never started"
    with pytest.raises(FsError) as err:
        rig.write_file("/guarded/b", b"")
    assert err.value.errno == errno.EACCES
    assert queue._running  # still busy: the denial happened while it ran
    assert rig.engine.wait_idle(10)


def test_hooks_cannot_mount_the_host(rig: Rig) -> None:
    rig.hook(
        "escape.vega",
        'hook esc on create "/**" { capabilities [vfs::mount, fs::read]\n'
        '    fn run(ev) { let r = mount("/host", "posix:///etc");\n'
        "        if r.success { return allow(); } return deny(EPERM, r.error); } }\n",
    )
    with pytest.raises(FsError) as err:
        rig.write_file("/a", b"")
    assert err.value.errno == errno.EPERM
    assert "mount" in str(err.value)


@pytest.mark.parametrize("strategy", ["stop", "escalate"])
def test_stop_and_escalate_take_a_failing_after_hook_out(rig: Rig, strategy: str) -> None:
    rig.hook(
        "fail.vega",
        f'hook f after create "/**" {{ strategy {strategy}\n'
        "    retry { max_attempts 1 } budget { steps 10 }\n"
        "    fn run(ev) { loop { } } }\n",
    )
    rig.write_file("/a", b"")
    assert rig.engine.wait_idle(10)
    row = _stats(rig, "f")
    assert row["state"] == ("stopped" if strategy == "stop" else "escalated")
    rig.write_file("/b", b"")  # not queued any more
    assert rig.engine.wait_idle(10)
    assert _stats(rig, "f")["runs"] == 1


def test_paths_follow_directory_renames(rig: Rig) -> None:
    rig.hook(
        "b.vega", 'hook b on create "/b/**" { fn run(ev) { return deny(EACCES, ev.path); } }\n'
    )
    rig.write_file("/a/x/f1", b"")  # /a/x's path is now cached
    rig.fs.rename(1, b"a", 1, b"b", 0, CTX)
    with pytest.raises(FsError) as err:
        rig.write_file("/b/x/f2", b"")
    assert err.value.errno == errno.EACCES and str(err.value) == "/b/x/f2"


def test_an_unreadable_hooks_directory_keeps_the_loaded_hooks(rig: Rig) -> None:
    rig.hook("g.vega", 'hook g on create "/**" { fn run(ev) { return deny(EACCES, "kept"); } }\n')
    real = rig.engine.hooks_dir
    rig.engine.hooks_dir = real / "g.vega"  # scandir of a file: NotADirectoryError
    try:
        assert rig.engine.reload() is False
        with pytest.raises(FsError) as err:
            rig.write_file("/a", b"")
        assert err.value.errno == errno.EACCES
    finally:
        rig.engine.hooks_dir = real


def test_staged_reads_see_staged_renames_removals_and_mkdirs(rig: Rig) -> None:
    """What a synchronous hook reads through the VFS is the tree its own (and
    earlier hooks') staged effects would leave."""
    rig.write_file("/live/old", b"live bytes")
    rig.write_file("/live/gone", b"x")
    rig.hook(
        "shuffle.vega",
        """hook shuffle on create "/jobs/**" {
    capabilities [fs::read, fs::write, meta::read, meta::write]
    fn run(ev) {
        if write("/nodir/a", "x").success { return deny(EIO, "a write into no directory"); }
        mkdir("/s");
        write("/s/a", "staged");
        rename("/s/a", "/s/b");
        if exists("/s/a") { return deny(EIO, "/s/a still visible after its rename"); }
        if read("/s/b") != "staged" { return deny(EIO, "/s/b does not show the renamed content"); }
        rename("/live/old", "/live/new");
        if exists("/live/old") { return deny(EIO, "a renamed live file is still there"); }
        if read("/live/new") != "live bytes" { return deny(EIO, "live rename not followed"); }
        let m = lookup("/live/new");
        m.set("user.tag", "t");
        m.commit();
        if lookup("/live/new").get("user.tag") != "t" { return deny(EIO, "staged meta lost"); }
        remove("/live/gone");
        if exists("/live/gone") { return deny(EIO, "a removed file is still there"); }
        mkdir("/s/d");
        if stat("/s/d").kind != "dir" { return deny(EIO, "a staged mkdir is not a directory"); }
        let names = "";
        for n in list("/live") { names = names + n + ","; }
        if names != "new," { return deny(EIO, "list(/live) = " + names); }
        names = "";
        for n in list("/s") { names = names + n + ","; }
        if names != "b,d," { return deny(EIO, "list(/s) = " + names); }
        return allow();
    }
}
""",
    )
    rig.write_file("/jobs/a", b"")  # raises FsError(EIO, what) on a failed check
    assert rig.read_file("/s/b") == b"staged"
    assert rig.read_file("/live/new") == b"live bytes"
    assert rig.fs.lookup_path("/live/old") is None and rig.fs.lookup_path("/live/gone") is None
    assert rig.fs.lookup_path("/s/d") is not None and rig.fs.lookup_path("/s/a") is None
    ino = rig.fs.lookup_path("/live/new")
    assert rig.store.get_inode(ino).xattrs[b"user.tag"] == b"t"  # type: ignore[union-attr]


def test_how_hooked_files_are_cached(rig: Rig) -> None:
    """Direct I/O only where the page cache would hide what hooks do."""
    rig.example("redact_env.vega")
    rig.hook(
        "data.vega",
        'hook r on read "/r/**" { fn run(ev) { return allow(); } }\n'
        'hook w on write "/w/**" { fn run(ev) { return allow(); } }\n',
    )
    env, r, w, plain = (rig.write_file(p, b"K=v\n") for p in ("/a.env", "/r/f", "/w/f", "/p"))
    assert rig.fs.hooked_io(env) == "direct"  # a transform: readers must see its output
    assert rig.fs.hooked_io(r) == "fresh"  # page cache, dropped at each open
    assert rig.fs.hooked_io(w) is None  # write-through reaches the hook anyway
    assert rig.fs.hooked_io(w, writeback_cache=True) == "direct"
    assert rig.fs.hooked_io(plain) is None


def test_stat_runs_only_transforming_read_hooks(rig: Rig) -> None:
    rig.hook("r.vega", 'hook r on read "/**" { fn run(ev) { return allow(); } }\n')
    ino = rig.write_file("/f", b"abc")
    rig.fs.getattr(ino)
    rig.fs.lookup(1, b"f")
    assert _stats(rig, "r")["runs"] == 0  # a non-transforming hook cannot change the size
    assert rig.read_file("/f") == b"abc"
    assert _stats(rig, "r")["runs"] == 1


def test_names_are_dropped_when_the_kernel_forgets_and_paths_stay_right(tmp_path: Path) -> None:
    """Under FUSE (lookup counts tracked) the inode -> name map holds only what the
    kernel holds: forgetting every file leaves it at its size before, and hooks
    still get right paths afterwards — also after a rename of a directory above
    a forgotten file, and for a hard link."""
    hooks_dir = tmp_path / "hooks"
    hooks_dir.mkdir()
    store = Store.open(tmp_path / "store", create=True)
    engine = HookEngine(hooks_dir, store=store, tracer=Tracer(None))
    fs = HookedFileSystem(store, engine, track_lookups=True)
    try:
        (hooks_dir / "w.vega").write_text(
            'hook w on write "/b/**" { fn run(ev) { return deny(EACCES, ev.path); } }\n'
        )
        engine.reload()
        top = fs.mkdir(ROOT_INO, b"a", 0o755, CTX).ino
        sub = fs.mkdir(top, b"x", 0o755, CTX).ino
        before = len(fs._names)
        files = []
        for i in range(200):
            fh, attr = fs.create(sub, f"f{i}".encode(), 0o644, os.O_RDWR, CTX)
            fs.release(fh)
            files.append(attr.ino)
        fs.link(files[0], top, b"hard", CTX)
        assert len(fs._names) == before + 200
        for ino in files:
            fs.forget(ino, fs.lookup_count(ino))
        assert len(fs._names) == before
        for ino in (sub, top):  # the kernel forgets the directories last
            fs.forget(ino, fs.lookup_count(ino))
        assert fs.path_of(files[5]) == "/a/x/f5"  # searched again from the root
        fs.rename(ROOT_INO, b"a", ROOT_INO, b"b", 0, CTX)
        for ino, path in ((files[5], "/b/x/f5"), (files[7], "/b/x/f7")):
            fh = fs.open(ino, os.O_RDWR, CTX)
            try:
                with pytest.raises(FsError) as err:
                    fs.write(fh, 0, b"x", CTX)
                assert err.value.errno == errno.EACCES and str(err.value) == path
            finally:
                fs.release(fh)
        assert fs.path_of(files[0]) in ("/b/x/f0", "/b/hard")
        fs.unlink(sub, b"f0", CTX)
        assert fs.path_of(files[0]) == "/b/hard"
    finally:
        engine.close()
        store.close()

"""The VFS contract (seed 000 §7-§10), run against every driver through the stdlib
builtins exactly as a program calls them."""

from __future__ import annotations

import pytest

from tests.vm_runtime.helpers import call, make_rt
from vegafs.drivers.mem import MemDriver
from vegafs.vm.runtime import Runtime
from vegafs.vm.stdlib import call_method
from vegafs.vm.values import Result, Slice, Trap, get_attr


def ok(r: object) -> object:
    assert type(r) is Result, r
    assert r.success, r.error
    return r.value


def failed(r: object, code: str) -> str:
    assert type(r) is Result, r
    assert not r.success
    assert r.error is not None and r.error.startswith(code + ":"), r.error
    return r.error


def text_of(rt: Runtime, s: object) -> str:
    return call(rt, "text", s)


# --------------------------------------------------------------------------- atomic data


def test_write_then_read_whole_file(rt: Runtime) -> None:
    assert ok(call(rt, "write", "/d/a.txt", "hello\nworld\n")) == 12
    s = ok(call(rt, "read", "/d/a.txt"))
    assert type(s) is Slice
    assert text_of(rt, s) == "hello\nworld\n"
    assert text_of(rt, ok(call(rt, "read", "/d/a.txt", 6, 5))) == "world"
    assert text_of(rt, ok(call(rt, "read", "/d/a.txt", 100))) == ""


def test_write_replaces_atomically_and_offset_write_patches(rt: Runtime) -> None:
    ok(call(rt, "write", "/d/f", "0123456789"))
    ok(call(rt, "write", "/d/f", "ab"))
    assert text_of(rt, ok(call(rt, "read", "/d/f"))) == "ab"
    assert ok(call(rt, "write", "/d/f", 4, "XY")) == 2
    assert ok(call(rt, "read", "/d/f")).to_bytes() == b"ab\0\0XY"


def test_write_accepts_a_slice_and_does_not_copy_it_into_the_program(rt: Runtime) -> None:
    ok(call(rt, "write", "/d/src", "payload"))
    s = ok(call(rt, "read", "/d/src"))
    ok(call(rt, "write", "/d/dst", s))
    assert text_of(rt, ok(call(rt, "read", "/d/dst"))) == "payload"


def test_missing_file_is_a_failed_result_not_a_trap(rt: Runtime) -> None:
    err = failed(call(rt, "read", "/d/nope"), "not_found")
    assert "/nope" in err
    failed(call(rt, "stat", "/d/nope"), "not_found")
    failed(call(rt, "remove", "/d/nope"), "not_found")
    failed(call(rt, "open", "/d/nope", "r"), "not_found")
    assert call(rt, "exists", "/d/nope") is False


def test_no_mount_is_a_failed_result(rt: Runtime) -> None:
    failed(call(rt, "read", "/elsewhere/x"), "not_found")


def test_reading_a_directory_fails(rt: Runtime) -> None:
    ok(call(rt, "mkdir", "/d/sub"))
    failed(call(rt, "read", "/d/sub"), "is_dir")
    failed(call(rt, "mkdir", "/d/sub"), "exists")


# --------------------------------------------------------------------------- namespace ops


def test_list_stat_rename_remove(rt: Runtime) -> None:
    ok(call(rt, "mkdir", "/d/dir"))
    ok(call(rt, "write", "/d/dir/b", "2"))
    ok(call(rt, "write", "/d/dir/a", "1"))
    assert ok(call(rt, "list", "/d/dir")) == ["a", "b"]
    st = ok(call(rt, "stat", "/d/dir/a"))
    assert get_attr(st, "kind") == "file" and get_attr(st, "size") == 1
    assert get_attr(ok(call(rt, "stat", "/d/dir")), "is_dir") is True
    ok(call(rt, "rename", "/d/dir/a", "/d/dir/c"))
    assert ok(call(rt, "list", "/d/dir")) == ["b", "c"]
    failed(call(rt, "remove", "/d/dir"), "not_empty")
    ok(call(rt, "remove", "/d/dir/b"))
    ok(call(rt, "remove", "/d/dir/c"))
    ok(call(rt, "remove", "/d/dir"))
    assert call(rt, "exists", "/d/dir") is False


def test_mount_points_show_up_in_listings(rt: Runtime) -> None:
    rt.namespace.attach("/scratch", MemDriver())
    assert "d" in ok(call(rt, "list", "/"))
    assert "scratch" in ok(call(rt, "list", "/"))


def test_rename_across_mounts_is_refused(rt: Runtime) -> None:
    rt.namespace.attach("/m", MemDriver())
    ok(call(rt, "write", "/d/x", "1"))
    failed(call(rt, "rename", "/d/x", "/m/x"), "unsupported")


def test_paths_are_normalised_before_anything(rt: Runtime) -> None:
    ok(call(rt, "mkdir", "/d/sub"))
    ok(call(rt, "write", "/d/./sub/../x", "1"))
    assert text_of(rt, ok(call(rt, "read", "//d//x"))) == "1"
    failed(call(rt, "read", "/../etc/passwd"), "escape")
    failed(call(rt, "read", "relative"), "invalid")


# --------------------------------------------------------------------------- handlers


def test_handler_streams_in_slices(rt: Runtime) -> None:
    ok(call(rt, "write", "/d/big", "abcdefghij"))
    h = ok(call(rt, "open", "/d/big", "r"))
    parts = []
    while True:
        s = ok(call_method(rt, h, "read", [4]))
        if len(s) == 0:
            break
        parts.append(text_of(rt, s))
    assert parts == ["abcd", "efgh", "ij"]
    ok(call_method(rt, h, "seek", [2]))
    assert text_of(rt, ok(call_method(rt, h, "read", [3]))) == "cde"
    ok(call_method(rt, h, "close", []))


def test_handler_write_then_read_back(rt: Runtime) -> None:
    h = ok(call(rt, "open", "/d/out", "w"))
    assert ok(call_method(rt, h, "write", ["one "])) == 4
    assert ok(call_method(rt, h, "write", ["two"])) == 3
    ok(call_method(rt, h, "sync", []))
    ok(call_method(rt, h, "close", []))
    assert text_of(rt, ok(call(rt, "read", "/d/out"))) == "one two"
    h = ok(call(rt, "open", "/d/out", "a"))
    ok(call_method(rt, h, "write", ["!"]))
    ok(call_method(rt, h, "close", []))
    assert text_of(rt, ok(call(rt, "read", "/d/out"))) == "one two!"


def test_result_is_transparent_for_method_calls(rt: Runtime) -> None:
    ok(call(rt, "write", "/d/t", "xyz"))
    r = call(rt, "open", "/d/t")  # the Result itself, as a program holds it
    assert get_attr(r, "success") is True
    assert text_of(rt, call_method(rt, r, "read", [])) == "xyz"
    call_method(rt, r, "close", [])


def test_handler_mode_is_enforced(rt: Runtime) -> None:
    ok(call(rt, "write", "/d/t", "xyz"))
    h = ok(call(rt, "open", "/d/t", "r"))
    failed(call_method(rt, h, "write", ["no"]), "permission")
    w = ok(call(rt, "open", "/d/t2", "w"))
    failed(call_method(rt, w, "read", []), "permission")
    failed(call(rt, "open", "/d/t", "rwx"), "invalid")
    failed(call(rt, "open", "/d/t", "x"), "exists")


def test_slices_go_stale_when_their_handler_closes(rt: Runtime) -> None:
    ok(call(rt, "write", "/d/f", "line1\nline2\n"))
    h = ok(call(rt, "open", "/d/f"))
    s = ok(call_method(rt, h, "read", []))
    first = call(rt, "bytes::slice", s, 0, 5)
    ok(call_method(rt, h, "close", []))
    for use in (lambda: len(s), lambda: text_of(rt, first),
                lambda: call(rt, "bytes::count", s, "\n")):
        with pytest.raises(Trap) as exc:
            use()
        assert exc.value.kind == "stale_slice"
        assert "handler of /d/f" in exc.value.message
    with pytest.raises(Trap) as exc:
        call_method(rt, h, "read", [])
    assert exc.value.kind == "handle"


def test_slice_stays_valid_across_later_reads(rt: Runtime) -> None:
    """The documented rule: valid until close, not until the next read."""
    ok(call(rt, "write", "/d/f", "aaaabbbb"))
    h = ok(call(rt, "open", "/d/f"))
    s1 = ok(call_method(rt, h, "read", [4]))
    s2 = ok(call_method(rt, h, "read", [4]))
    assert (text_of(rt, s1), text_of(rt, s2)) == ("aaaa", "bbbb")
    ok(call_method(rt, h, "close", []))


def test_buffer_reuse_never_touches_a_slice_still_held(rt: Runtime) -> None:
    """Drivers may recycle read buffers (posix:// does), but only ones no slice holds."""
    ok(call(rt, "write", "/d/f", "".join(chr(ord("a") + i) * 4 for i in range(8))))
    h = ok(call(rt, "open", "/d/f"))
    first = ok(call_method(rt, h, "read", [4]))
    seen = [text_of(rt, ok(call_method(rt, h, "read", [4]))) for _ in range(6)]
    assert seen == ["bbbb", "cccc", "dddd", "eeee", "ffff", "gggg"]
    assert text_of(rt, first) == "aaaa"
    view = first.view()  # a memoryview of the buffer counts as holding it too
    del first
    seen = [text_of(rt, ok(call_method(rt, h, "read", [4]))) for _ in range(1)]
    assert bytes(view) == b"aaaa" and seen == ["hhhh"]
    ok(call_method(rt, h, "close", []))


def test_close_path_force_closes_handlers_and_atomic_read_slices(rt: Runtime) -> None:
    ok(call(rt, "write", "/d/f", "data"))
    h = ok(call(rt, "open", "/d/f"))
    hs = ok(call_method(rt, h, "read", []))
    rs = ok(call(rt, "read", "/d/f"))
    assert ok(call(rt, "close", "/d/f")) == 1
    for s in (hs, rs):
        with pytest.raises(Trap) as exc:
            s.view()
        assert exc.value.kind == "stale_slice"
    with pytest.raises(Trap):
        call_method(rt, h, "read", [])
    # the path itself is fine: a new handler works
    h2 = ok(call(rt, "open", "/d/f"))
    assert text_of(rt, ok(call_method(rt, h2, "read", []))) == "data"


def test_one_writer_per_path(rt: Runtime) -> None:
    w1 = ok(call(rt, "open", "/d/f", "w"))
    failed(call(rt, "open", "/d/f", "w"), "busy")
    failed(call(rt, "open", "/d/f", "a"), "busy")
    failed(call(rt, "write", "/d/f", "x"), "busy")
    readers = [ok(call(rt, "open", "/d/f", "r")) for _ in range(3)]  # many readers are fine
    ok(call_method(rt, w1, "close", []))
    w2 = ok(call(rt, "open", "/d/f", "w"))
    ok(call_method(rt, w2, "close", []))
    for r in readers:
        ok(call_method(rt, r, "close", []))


def test_closing_twice_traps(rt: Runtime) -> None:
    h = ok(call(rt, "open", "/d/f", "w"))
    ok(call_method(rt, h, "close", []))
    with pytest.raises(Trap) as exc:
        call_method(rt, h, "close", [])
    assert exc.value.kind == "handle"


def test_end_of_run_and_abort_invalidate_everything(driver: object) -> None:
    rt = make_rt(driver)  # type: ignore[arg-type]
    ok(call(rt, "write", "/d/f", "x"))
    s = ok(call(rt, "read", "/d/f"))
    h = ok(call(rt, "open", "/d/f"))
    rt.abort("trap at 3:1")
    with pytest.raises(Trap, match="trap at 3:1"):
        s.view()
    assert h.closed


# --------------------------------------------------------------------------- metadata


def test_meta_set_commit_get(rt: Runtime) -> None:
    ok(call(rt, "write", "/d/f", "x"))
    m = ok(call(rt, "lookup", "/d/f"))
    assert call_method(rt, m, "get", ["user.source"]) is None
    call_method(rt, m, "set", ["user.source", "/in/a.log"])
    call_method(rt, m, "set", ["user.n", "2"])
    staged = call_method(rt, m, "get", ["user.source"])
    assert text_of(rt, staged) == "/in/a.log"
    ok(call_method(rt, m, "commit", []))
    with pytest.raises(Trap) as exc:
        staged.view()
    assert exc.value.kind == "stale_slice" and "committed" in exc.value.message
    m2 = ok(call(rt, "lookup", "/d/f"))
    assert call_method(rt, m2, "list", []) == {"user.n": "2", "user.source": "/in/a.log"}
    call_method(rt, m2, "remove", ["user.n"])
    ok(call_method(rt, m2, "commit", []))
    assert ok(call(rt, "lookup", "/d/f")).call_method(rt, "list", []) == {
        "user.source": "/in/a.log"}


def test_meta_keys_outside_user_namespace_fail_and_commit_nothing(rt: Runtime) -> None:
    ok(call(rt, "write", "/d/f", "x"))
    m = ok(call(rt, "lookup", "/d/f"))
    call_method(rt, m, "set", ["user.ok", "1"])
    call_method(rt, m, "set", ["trusted.evil", "1"])
    failed(call_method(rt, m, "commit", []), "invalid")
    assert ok(call(rt, "lookup", "/d/f")).call_method(rt, "list", []) == {}


def test_meta_refresh_sees_other_commits_and_abort_drops_staged(rt: Runtime) -> None:
    ok(call(rt, "write", "/d/f", "x"))
    a = ok(call(rt, "lookup", "/d/f"))
    b = ok(call(rt, "lookup", "/d/f"))
    call_method(rt, a, "set", ["user.k", "v1"])
    ok(call_method(rt, a, "commit", []))
    assert call_method(rt, b, "get", ["user.k"]) is None  # b is a snapshot
    ok(call_method(rt, b, "refresh", []))
    assert text_of(rt, call_method(rt, b, "get", ["user.k"])) == "v1"
    call_method(rt, b, "set", ["user.k", "v2"])
    ok(call_method(rt, b, "abort", []))
    assert text_of(rt, call_method(rt, b, "get", ["user.k"])) == "v1"


def test_meta_set_copies_a_slice_value(rt: Runtime) -> None:
    ok(call(rt, "write", "/d/f", "source-name"))
    h = ok(call(rt, "open", "/d/f"))
    s = ok(call_method(rt, h, "read", []))
    m = ok(call(rt, "lookup", "/d/f"))
    call_method(rt, m, "set", ["user.src", s])
    ok(call_method(rt, h, "close", []))  # the slice dies; the staged value must not
    ok(call_method(rt, m, "commit", []))
    assert call_method(rt, ok(call(rt, "lookup", "/d/f")), "list", []) == {
        "user.src": "source-name"}


# --------------------------------------------------------------------------- capabilities


def test_capabilities_are_enforced_per_path(driver: object) -> None:
    rt = make_rt(driver, caps=["fs::read", "fs::write:/d/out/**", "meta::read"])  # type: ignore[arg-type]
    ok(call(rt, "mkdir", "/d/out"))
    ok(call(rt, "write", "/d/out/a", "1"))
    with pytest.raises(Trap) as exc:
        call(rt, "write", "/d/in", "1")
    assert exc.value.kind == "capability"
    assert exc.value.message == ("write('/d/in') needs fs::write on /d/in; this run holds "
                                 "fs::read, fs::write:/d/out/**, meta::read")
    with pytest.raises(Trap):
        call(rt, "open", "/d/x", "w")
    with pytest.raises(Trap):
        call(rt, "rename", "/d/out/a", "/d/a")
    with pytest.raises(Trap):  # ".." cannot sneak out of the granted subtree
        call(rt, "write", "/d/out/../in", "1")
    m = ok(call(rt, "lookup", "/d/out/a"))
    with pytest.raises(Trap) as exc:
        call_method(rt, m, "set", ["user.k", "v"])
    assert "meta::write" in exc.value.message


def test_read_only_run_cannot_write(driver: object) -> None:
    rt = make_rt(driver, caps=["fs::read:/d/**"])  # type: ignore[arg-type]
    with pytest.raises(Trap):
        call(rt, "remove", "/d/x")
    with pytest.raises(Trap):
        call(rt, "lookup", "/d")


def test_mount_needs_vfs_mount_and_an_opener() -> None:
    rt = make_rt(caps=["fs::read", "fs::write"])
    with pytest.raises(Trap) as exc:
        call(rt, "mount", "/m", "mem://")
    assert exc.value.kind == "capability"
    failed(call(make_rt(), "mount", "/m", "mem://"), "unsupported")  # host gave no opener
    rt = make_rt(caps=["vfs::mount:mem://**", "fs::read", "fs::write"],
                 opener=MemDriver.from_uri)
    ok(call(rt, "mount", "/m", "mem://"))
    failed(call(rt, "mount", "/m", "mem://"), "exists")
    with pytest.raises(Trap):
        call(rt, "mount", "/p", "posix:///etc")
    ok(call(rt, "write", "/m/x", "1"))
    h = ok(call(rt, "open", "/m/x"))
    ok(call(rt, "umount", "/m"))
    assert h.closed
    failed(call(rt, "read", "/m/x"), "not_found")


def test_no_space_is_a_failed_result() -> None:
    rt = make_rt()
    rt.namespace.attach("/small", MemDriver(capacity=10))
    ok(call(rt, "write", "/small/a", "12345"))
    failed(call(rt, "write", "/small/b", "1234567890"), "no_space")
    h = ok(call(rt, "open", "/small/c", "w"))
    failed(call_method(rt, h, "write", ["123456"]), "no_space")


def test_reads_larger_than_the_memory_budget_trap_before_allocating(driver: object) -> None:
    from vegafs.vm.budget import Budget

    rt = make_rt(driver, budget=Budget(memory_bytes=1 << 20))  # type: ignore[arg-type]
    ok(call(rt, "write", "/d/f", "x"))
    h = ok(call(rt, "open", "/d/f"))
    with pytest.raises(Trap) as exc:
        call_method(rt, h, "read", [1 << 40])
    assert exc.value.kind == "budget_memory"
    with pytest.raises(Trap):
        call(rt, "read", "/d/f", 0, 1 << 40)

"""posix://DIR never reaches outside DIR: no `..`, no symlink (planted or swapped),
no xattr namespace but user.*; and it declares its capabilities honestly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.vm_runtime.helpers import call, make_rt
from vegafs.drivers.posix import PosixDriver
from vegafs.vm.stdlib import call_method
from vegafs.vm.values import Result
from vegafs.vm.vfs import OpenFlags, VfsError


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_text("top secret")
    (root / "inner").mkdir()
    (root / "inner" / "ok.txt").write_text("fine")
    os.symlink(outside / "secret", root / "link_file")
    os.symlink(outside, root / "link_dir")
    os.symlink("../../outside/secret", root / "inner" / "rel_link")
    return root, outside


def _fails(r: object, code: str) -> None:
    assert type(r) is Result and not r.success, r
    assert r.error is not None and r.error.startswith(code), r.error


def test_symlinks_are_never_followed(tree: tuple[Path, Path]) -> None:
    root, outside = tree
    rt = make_rt(PosixDriver(str(root)))
    for path in ("/d/link_file", "/d/link_dir/secret", "/d/inner/rel_link"):
        _fails(call(rt, "read", path), "escape")
        _fails(call(rt, "open", path, "r"), "escape")
        _fails(call(rt, "lookup", path), "escape")
    _fails(call(rt, "list", "/d/link_dir"), "escape")
    _fails(call(rt, "write", "/d/link_dir/new", "x"), "escape")
    _fails(call(rt, "open", "/d/link_file", "w"), "escape")
    assert not (outside / "new").exists()
    assert (outside / "secret").read_text() == "top secret"
    # stat describes the link itself, without following it
    st = call(rt, "stat", "/d/link_file").value
    assert st.kind == "symlink"


def test_atomic_write_replaces_a_symlink_instead_of_writing_through_it(
        tree: tuple[Path, Path]) -> None:
    root, outside = tree
    rt = make_rt(PosixDriver(str(root)))
    assert call(rt, "write", "/d/link_file", "replaced").success
    assert (outside / "secret").read_text() == "top secret"
    assert not (root / "link_file").is_symlink()
    assert (root / "link_file").read_text() == "replaced"


def test_dotdot_is_refused_by_the_driver_itself(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    drv = PosixDriver(str(root))
    for bad in ("/../outside/secret", "/inner/../../outside/secret", "/./x"):
        with pytest.raises(VfsError) as exc:
            drv.read(bad, 0, None)
        assert exc.value.code == "escape"


def test_a_symlink_swapped_in_after_a_check_is_still_refused(tree: tuple[Path, Path]) -> None:
    """The walk holds directory descriptors, so replacing a checked directory by a
    symlink between two operations cannot redirect the second one."""
    root, outside = tree
    rt = make_rt(PosixDriver(str(root)))
    assert call(rt, "stat", "/d/inner/ok.txt").success
    os.rename(root / "inner", root / "inner_moved")
    os.symlink(outside, root / "inner")
    _fails(call(rt, "read", "/d/inner/secret"), "escape")
    _fails(call(rt, "read", "/d/inner/ok.txt"), "escape")


def test_root_of_mount_cannot_be_removed_or_renamed(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    rt = make_rt(PosixDriver(str(root)))
    _fails(call(rt, "remove", "/d"), "busy")
    assert root.is_dir()


def test_metadata_is_real_user_xattrs(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    f = root / "inner" / "ok.txt"
    try:
        os.setxattr(f, "user.pre", b"existing")
    except OSError:
        pytest.skip("no user xattrs on this filesystem")
    rt = make_rt(PosixDriver(str(root)))
    m = call(rt, "lookup", "/d/inner/ok.txt").value
    assert call_method(rt, m, "list", []) == {"user.pre": "existing"}
    call_method(rt, m, "set", ["user.source", "/in/a.log"])
    assert call_method(rt, m, "commit", []).success
    assert os.getxattr(f, "user.source") == b"/in/a.log"
    for key in ("trusted.x", "security.x", "system.x", "user."):
        m = call(rt, "lookup", "/d/inner/ok.txt").value
        call_method(rt, m, "set", [key, "1"])
        _fails(call_method(rt, m, "commit", []), "invalid")
    assert not any(k.startswith("trusted.") for k in os.listxattr(f))


def test_failed_xattr_commit_restores_earlier_keys(tree: tuple[Path, Path]) -> None:
    """A commit of several keys is all-or-nothing against errors: an oversized value
    fails the commit and the keys set before it are rolled back."""
    root, _ = tree
    f = root / "inner" / "ok.txt"
    try:
        os.setxattr(f, "user.a", b"old")
    except OSError:
        pytest.skip("no user xattrs on this filesystem")
    drv = PosixDriver(str(root))
    with pytest.raises(VfsError):
        drv.meta_commit("/inner/ok.txt", {"user.a": b"new", "user.b": b"1",
                                          "user.huge": b"x" * (1 << 20)})
    assert os.getxattr(f, "user.a") == b"old"
    assert "user.b" not in os.listxattr(f)


def test_declared_capabilities_are_honest(tmp_path: Path) -> None:
    caps = PosixDriver(str(tmp_path)).capabilities()
    assert caps.sync and caps.atomic_write and caps.handlers
    assert not caps.atomic_meta_commit  # xattrs are set one by one on POSIX
    assert caps.meta_namespaces == ("user.",)


def test_from_uri(tmp_path: Path) -> None:
    assert PosixDriver.from_uri(f"posix://{tmp_path}").root == str(tmp_path.resolve())
    for bad in ("posix://relative", "mem://", f"posix://{tmp_path}/missing"):
        with pytest.raises(VfsError):
            PosixDriver.from_uri(bad)


def test_special_files_are_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    drv = PosixDriver(str(tmp_path))
    with pytest.raises(VfsError) as exc:
        drv.open("/fifo", OpenFlags.parse("r"))
    assert exc.value.code == "unsupported"

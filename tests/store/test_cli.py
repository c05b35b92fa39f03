"""The store commands of the CLI, on a store no daemon serves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.store.conftest import make_file
from vegafs.cli.main import main
from vegafs.store import ROOT_INO, Store


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_snapshot_rollback_gc_stats_fsck(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open(store_path, create=True) as s:
        make_file(s, b"a", b"1")
    st = str(store_path)
    code, out, _ = _run(capsys, "snapshot", "create", "one", "--store", st)
    assert code == 0 and "one" in out
    with Store.open(store_path) as s:
        make_file(s, b"b", b"2")
    code, out, _ = _run(capsys, "snapshot", "list", "--store", st, "--json")
    assert code == 0 and [x["name"] for x in json.loads(out)] == ["one"]
    code, out, _ = _run(capsys, "rollback", "one", "--store", st)
    assert code == 0 and "to undo: vegafs rollback --to-logseq" in out
    undo = out.split("--to-logseq ")[1].split()[0]
    with Store.open(store_path) as s:
        assert s.lookup(ROOT_INO, b"b") is None
    code, out, _ = _run(capsys, "rollback", "--to-logseq", undo, "--store", st)
    assert code == 0
    with Store.open(store_path) as s:
        assert s.lookup(ROOT_INO, b"b") is not None
    code, out, _ = _run(capsys, "gc", "--store", st, "--json")
    assert code == 0 and json.loads(out)["generation"] == 1
    code, out, _ = _run(capsys, "stats", "--store", st, "--json")
    assert code == 0 and json.loads(out)["snapshots"] == 1
    code, out, _ = _run(capsys, "fsck", "--store", st)
    assert code == 0 and "fsck: clean" in out
    code, out, _ = _run(capsys, "snapshot", "delete", "one", "--store", st)
    assert code == 0
    code, out, _ = _run(capsys, "snapshot", "list", "--store", st)
    assert code == 0 and "no snapshots" in out


def test_user_errors_are_one_line(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "stats", "--store", str(store_path))
    assert code != 0 and err.startswith("vegafs: no store at") and "Traceback" not in err
    Store.open(store_path, create=True).close()
    code, _, err = _run(capsys, "rollback", "nope", "--store", str(store_path))
    assert code != 0 and "no snapshot named 'nope'" in err
    code, _, err = _run(capsys, "snapshot", "create", "a/b", "--store", str(store_path))
    assert code != 0 and "bad snapshot name" in err
    with Store.open(store_path):
        code, _, err = _run(capsys, "gc", "--store", str(store_path))
        assert code != 0 and "in use by pid" in err and err.count("\n") == 1


def test_fsck_reports_and_repairs_damage(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Store.open(store_path, create=True) as s:
        make_file(s, b"a", b"x" * 1000)
        s.publish()
        make_file(s, b"b", b"y" * 1000)
    seg = sorted((store_path / "segments").iterdir())[0]
    raw = bytearray(seg.read_bytes())
    raw[300] ^= 1
    seg.write_bytes(bytes(raw))
    code, out, _ = _run(capsys, "fsck", "--store", str(store_path), "--json")
    assert code == 4 and json.loads(out)["problems"]
    code, out, _ = _run(capsys, "fsck", "--repair", "--store", str(store_path))
    assert code == 1 and "quarantine" in out
    code, out, _ = _run(capsys, "fsck", "--store", str(store_path))
    assert code == 0, out


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("512k", 512 << 10), ("64MiB", 64 << 20), ("1.5g", 3 << 29), ("2 GiB", 2 << 30)],
)
def test_sizes_on_the_command_line(text: str, size: int) -> None:
    from vegafs.cli.options import parse_size

    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "12Q", "-1G", "1e", "k"])
def test_bad_sizes_are_refused(text: str) -> None:
    from vegafs.cli.options import parse_size

    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)

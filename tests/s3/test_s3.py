"""What only an object store has: two writers, outages, a second machine, gc and fsck on s3://."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vegafs.store import STORE_CONCURRENT_MODIFICATION, Store, StoreError
from vegafs.store.s3backend import S3Backend

from .conftest import MotoServer, Outage

_ROOT = Path(__file__).resolve().parents[2]


def _load_helpers() -> object:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_s3_store_conftest", _ROOT / "tests/store/conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_h = _load_helpers()
make_file, read_file, assert_clean = _h.make_file, _h.read_file, _h.assert_clean  # type: ignore[attr-defined]


def _backend(location: str, url: str, cache: Path, **kw: object) -> S3Backend:
    return S3Backend(location, endpoint_url=url, cache_dir=cache, **kw)  # type: ignore[arg-type]


def test_second_writer_loses_cleanly(s3_env: str, s3_server: MotoServer, tmp_path: Path) -> None:
    with Store.open(_backend(s3_env, s3_server.url, tmp_path / "a"), create=True) as a:
        make_file(a, b"f", b"from a")
        a.publish()
        with pytest.raises(StoreError) as e:
            Store.open(_backend(s3_env, s3_server.url, tmp_path / "b"))
        assert e.value.code == STORE_CONCURRENT_MODIFICATION
        assert f"pid {os.getpid()}" in str(e.value)
    with Store.open(_backend(s3_env, s3_server.url, tmp_path / "b"), read_only=True) as r:
        ino = r.lookup(1, b"f")
        assert ino is not None and read_file(r, ino) == b"from a"


class _HungBackend(S3Backend):
    """A writer that stops renewing its lease (a hung process), for the fencing test."""

    def _renew_loop(self) -> None:
        return


def test_writer_whose_lease_was_taken_cannot_overwrite_anything(
    s3_env: str, s3_server: MotoServer, tmp_path: Path
) -> None:
    """A hung writer's lease expires; a new writer wins; the old one's uploads are fenced off."""
    hung = _HungBackend(s3_env, endpoint_url=s3_server.url, cache_dir=tmp_path / "a", lease_seconds=1.0)
    a = Store.open(hung, create=True)
    try:
        make_file(a, b"before", b"a")
        a.publish()
        hung.drain()
        deadline = time.monotonic() + 15
        b = None
        while b is None:
            try:
                b = Store.open(_backend(s3_env, s3_server.url, tmp_path / "b"))
            except StoreError as e:
                assert e.code == STORE_CONCURRENT_MODIFICATION and time.monotonic() < deadline
                time.sleep(0.2)
        with b:
            assert b.taken_over_from is not None
            make_file(b, b"winner", b"b")
            b.publish()
            b.backend.drain()  # type: ignore[attr-defined]
            make_file(a, b"loser", b"a")  # a wakes up and writes on
            a.publish()
            with pytest.raises(StoreError) as e:
                hung.drain()
            assert e.value.code == STORE_CONCURRENT_MODIFICATION
            assert "another writer" in str(e.value)
    finally:
        with contextlib.suppress(StoreError, OSError):
            a.close()
    with Store.open(_backend(s3_env, s3_server.url, tmp_path / "c"), read_only=True) as r:
        assert r.lookup(1, b"winner") is not None and r.lookup(1, b"loser") is None
        assert_clean(r)


def test_outage_mid_upload_loses_nothing_after_sync(
    s3_env: str, outage: Outage, s3_server: MotoServer, tmp_path: Path
) -> None:
    data = os.urandom(3 << 20)
    s = Store.open(_backend(s3_env, outage.url, tmp_path / "w"), create=True)
    try:
        outage.down()  # the endpoint dies while uploads are queued
        ino = make_file(s, b"big", data)
        s.publish()  # durable locally at once, although the endpoint is down
        assert s.backend.pending_uploads() > 0  # type: ignore[attr-defined]
        with pytest.raises(OSError):
            s.backend.drain(timeout=1.0)  # type: ignore[attr-defined]
        assert read_file(s, ino) == data  # reads come from the local cache meanwhile
        outage.up()
        s.backend.drain(timeout=60)  # type: ignore[attr-defined]  # uploads resume
    finally:
        s.close()
    with Store.open(_backend(s3_env, s3_server.url, tmp_path / "r"), read_only=True) as r:
        got = r.lookup(1, b"big")
        assert got is not None and read_file(r, got) == data
        assert_clean(r)


def test_crash_with_endpoint_down_loses_nothing_published(
    s3_env: str, outage: Outage, s3_server: MotoServer, tmp_path: Path
) -> None:
    """Level 1 durability: published to the local journal, the process dies, the disk survives."""
    cache = tmp_path / "w"
    Store.open(_backend(s3_env, s3_server.url, cache), create=True).close()
    code = (
        "import os, sys, stat; from vegafs.store import Store; "
        "from vegafs.store.s3backend import S3Backend; "
        "s = Store.open(S3Backend(sys.argv[1], endpoint_url=sys.argv[2], cache_dir=sys.argv[3])); "
        "print('open', flush=True); sys.stdin.readline(); "
        "ino = s.alloc_ino(); h = s.put_chunk(b'survives'); "
        "t = s.transaction(); x = t.__enter__(); "
        "x.create_inode(ino, mode=stat.S_IFREG | 0o644, uid=0, gid=0, times_ns=1); "
        "x.update(ino, nlink=1); x.link(1, b'kept', ino); x.set_blocks(ino, {0: h}, 8); "
        "t.__exit__(None, None, None); s.publish(); os._exit(0)"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, s3_env, outage.url, str(cache)],
        cwd=_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None and child.stdin is not None
            assert child.stdout.readline() == "open\n"
            outage.down()  # the endpoint dies, then the writer publishes and the machine "crashes"
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.wait(timeout=120) == 0
        finally:
            child.kill()
    assert list((cache / "journal").glob("*.json"))  # the journal holds what the bucket lacks
    outage.up()
    with Store.open(_backend(s3_env, outage.url, cache)) as s:  # same host, dead pid: taken over
        s.backend.drain()  # type: ignore[attr-defined]
    with Store.open(_backend(s3_env, s3_server.url, tmp_path / "r"), read_only=True) as r:
        ino = r.lookup(1, b"kept")
        assert ino is not None and read_file(r, ino) == b"survives"


def test_reads_fail_with_eio_in_bounded_time_when_endpoint_is_down(
    s3_env: str, outage: Outage, tmp_path: Path
) -> None:
    with Store.open(_backend(s3_env, outage.url, tmp_path / "w"), create=True) as s:
        make_file(s, b"f", b"x" * 5000)
    r = Store.open(_backend(s3_env, outage.url, tmp_path / "r"), read_only=True)
    try:
        ino = r.lookup(1, b"f")
        outage.down()
        start = time.monotonic()
        with pytest.raises((OSError, StoreError)):
            read_file(r, ino)
        assert time.monotonic() - start < 30
    finally:
        r.close()


def test_reader_on_another_machine_sees_each_sync(
    s3_env: str, s3_server: MotoServer, tmp_path: Path
) -> None:
    with Store.open(_backend(s3_env, s3_server.url, tmp_path / "w"), create=True) as w:
        for i in range(3):
            make_file(w, f"f{i}".encode(), f"v{i}".encode() * 100)
            w.publish()
            w.backend.drain()  # type: ignore[attr-defined]
            with Store.open(_backend(s3_env, s3_server.url, tmp_path / f"r{i}"), read_only=True) as r:
                assert [n for n, _ in r.listdir(1)] == [f"f{j}".encode() for j in range(i + 1)]


def test_gc_and_fsck_on_s3(s3_env: str, s3_server: MotoServer, tmp_path: Path) -> None:
    keep = os.urandom(200_000)
    with Store.open(_backend(s3_env, s3_server.url, tmp_path / "w"), create=True) as s:
        k = make_file(s, b"keep", keep)
        for i in range(5):
            make_file(s, f"tmp{i}".encode(), os.urandom(100_000))
        for i in range(5):
            with s.transaction() as t:
                ino = s.lookup(1, f"tmp{i}".encode())
                t.unlink(1, f"tmp{i}".encode())
                t.delete_inode(ino)
        s.publish()
        before = s.stats()
        report = s.gc()
        s.gc()
        assert read_file(s, k) == keep
        assert_clean(s)
        assert s.stats() != before and report is not None
    with Store.open(_backend(s3_env, s3_server.url, tmp_path / "r"), read_only=True) as r:
        assert read_file(r, r.lookup(1, b"keep")) == keep
        report = r.fsck()
        assert report.ok, report.describe()


def test_cli_takes_s3_endpoint_flag(
    s3_env: str, s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vegafs.cli.main import main

    Store.open(s3_env, create=True).close()
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")  # only the flag names the server now
    assert main(["snapshot", "create", "one", "--store", s3_env, "--s3-endpoint", s3_server.url]) == 0
    assert main(["fsck", "--store", s3_env, "--s3-endpoint", s3_server.url]) == 0
    assert "fsck: clean" in capsys.readouterr().out
    assert main(["stats", "--store", s3_env, "--s3-endpoint", "http://127.0.0.1:1"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("vegafs: cannot open the store at s3://") and "Traceback" not in err


def test_cli_cache_size_flag_bounds_the_cache(
    s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--cache-size`` reaches the backend (shown by stats); nonsense is refused clearly."""
    from vegafs.cli.main import main

    monkeypatch.delenv("VEGAFS_S3_CACHE_SIZE", raising=False)  # the flag sets it: undone after

    Store.open(s3_env, create=True).close()
    assert main(["stats", "--store", s3_env, "--cache-size", "64MiB", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["cache_size_bytes"] == 64 << 20
    assert shown["upload_pending_bytes"] == 0
    for bad, message in (
        ("lots", "invalid size value: 'lots'"),
        ("12Q", "invalid size value: '12Q'"),
        ("4k", "--cache-size must be at least 1MiB"),
    ):
        with pytest.raises(SystemExit) if "invalid" in message else contextlib.nullcontext():
            assert main(["stats", "--store", s3_env, "--cache-size", bad]) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    local = str(tmp_path / "local")
    Store.open(local, create=True).close()
    assert main(["stats", "--store", local, "--cache-size", "1GiB"]) != 0
    assert "--cache-size is for s3:// stores" in capsys.readouterr().err


def test_vegafs_run_mounts_an_s3_store(
    s3_env: str, s3_server: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``vegafs run --mount /dst=s3://...`` works like ``store://``: the example
    copies logs into the bucket, and another opener of the bucket sees them."""
    from vegafs.cli.main import main
    from vegafs.drivers import open_driver

    src = tmp_path / "src"
    src.mkdir()
    big = os.urandom((1 << 20) + 5)
    (src / "big.log").write_bytes(big)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")  # only the flag names the server
    monkeypatch.delenv("VEGAFS_S3_CACHE_SIZE", raising=False)  # the flag sets it: undone after
    example = Path(__file__).resolve().parents[2] / "examples" / "copy_logs.vega"
    code = main(["run", str(example), "--no-cache", "--mount", f"/src=posix://{src}",
                 "--mount", f"/dst={s3_env}", "--s3-endpoint", s3_server.url,
                 "--cache-size", "32MiB"])
    assert (code, capsys.readouterr().out) == (0, f"copied 1 files, {len(big)} bytes\n")
    # The run drained its uploads: another machine (its own empty cache) reads the bucket.
    with Store.open(_backend(s3_env, s3_server.url, tmp_path / "elsewhere"), read_only=True) as r:
        ino = r.lookup(1, b"big.log")
        assert ino is not None and read_file(r, ino) == big
    dst = open_driver(s3_env)  # ... and the run released the lease: a driver opens it again
    try:
        assert dst.meta_read("/big.log") == {"user.source": b"/src/big.log"}
    finally:
        dst.close()
    code = main(["run", str(example), "--no-cache", "--mount", "/dst=s3://No_Such!/x"])
    err = capsys.readouterr().err
    assert code != 0 and "not an s3://BUCKET/PREFIX location" in err and "Traceback" not in err


def _seal_pieces(new_backend, parts: list[bytes]) -> tuple[S3Backend, bytes]:  # type: ignore[no-untyped-def]
    """Write ``parts`` as one piece each (drained one by one: no merging), then seal."""
    w = new_backend()
    w.create(b"f")
    w.acquire_lock()
    w.create_segment("000000-00000000.seg", b"HEAD")
    for p in parts:
        w.append("000000-00000000.seg", p)
        w.sync("000000-00000000.seg")
        w.drain()
    w.seal("000000-00000000.seg")
    w.drain()
    return w, b"HEAD" + b"".join(parts)


def _check_reads(r: S3Backend, expected: bytes) -> None:
    assert r.segment_size("000000-00000000.seg") == len(expected)
    assert r.read("000000-00000000.seg", 0, len(expected) + 10) == expected
    assert r.read("000000-00000000.seg", (6 << 20) + 1, 200) == expected[(6 << 20) + 1 : (6 << 20) + 201]


def test_seal_keeps_large_pieces_as_the_sealed_form(new_backend) -> None:  # type: ignore[no-untyped-def]
    """Pieces of a read block or more on average stay: no copy, one marker, byte-exact reads."""
    w, expected = _seal_pieces(new_backend, [os.urandom(3 << 20), os.urandom(100), os.urandom(5 << 20)])
    keys = [rel for rel, _size in w._list("open/")]
    assert keys[-1] == "open/000000-00000000.seg/sealed" and len(keys) == 5
    assert w._list("segments/") == [] and w.counters["copied_parts"] == 0
    r = new_backend()
    _check_reads(r, expected)
    hits, gets = r.counters["cache_hits"], r.counters["gets"]
    assert r.read("000000-00000000.seg", 1 << 20, 10) == expected[1 << 20 : (1 << 20) + 10]
    assert (r.counters["cache_hits"], r.counters["gets"]) == (hits + 1, gets)  # final: cached


def test_seal_assembles_small_pieces_into_one_object(new_backend) -> None:  # type: ignore[no-untyped-def]
    """Many small pieces become one object: the large one copied server-side, the runs sent."""
    parts = [os.urandom(12 << 20), *(os.urandom(50_000) for _ in range(30)), b"end"]
    w, expected = _seal_pieces(new_backend, parts)
    assert w._list("open/") == []  # pieces are gone once the sealed object exists
    assert w.counters["copied_parts"] == 1  # the large piece was copied server-side
    _check_reads(new_backend(), expected)


def test_writes_fail_cleanly_at_the_cache_bound_during_an_outage(
    s3_env: str, outage: Outage, s3_server: MotoServer, tmp_path: Path
) -> None:
    backend = _backend(s3_env, outage.url, tmp_path / "w", cache_size=1 << 20)
    with Store.open(backend, create=True) as s:
        outage.down()
        make_file(s, b"small", b"s" * 1000)
        s.publish()  # fits under the bound: durable locally
        make_file(s, b"fill", os.urandom(900_000))
        s.publish()
        with pytest.raises(StoreError) as e:
            make_file(s, b"over", os.urandom(300_000))
        assert e.value.errno == errno.ENOSPC
        assert s.lookup(1, b"over") is None  # the failed write was not applied
        outage.up()
        backend.drain(timeout=60)
        make_file(s, b"after", b"ok")  # room again once the uploads caught up
    with Store.open(_backend(s3_env, s3_server.url, tmp_path / "r"), read_only=True) as r:
        assert [n for n, _ in r.listdir(1)] == [b"small", b"fill", b"after"]
        assert_clean(r)


def test_open_on_a_hung_endpoint_fails_clearly_and_in_bounded_time(
    s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An endpoint that accepts connections but never answers: the open's probe gives up."""
    from vegafs.store import s3backend

    monkeypatch.setattr(s3backend, "PROBE_READ_TIMEOUT", 1.0)
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)  # the kernel completes the handshakes; nobody ever reads
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(StoreError) as e:
            Store.open(S3Backend(s3_env, endpoint_url=url, cache_dir="/nonexistent"), read_only=True)
        took = time.monotonic() - start
    assert f"object store {url} does not answer" in str(e.value) and "timeout" in str(e.value)
    assert took < s3backend.PROBE_ATTEMPTS * (1.0 + s3backend.CONNECT_TIMEOUT) + 10

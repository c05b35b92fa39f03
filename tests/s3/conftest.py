"""A real S3-compatible server on loopback (moto's standalone server) for the s3 tests.

No client is mocked: every test talks HTTP to a server process through real
boto3. The server is started once per session on a free port and always
stopped; ``s3_server.restart()`` kills it and starts a fresh one on the same
port (moto keeps its data in memory only, so a restart loses the bucket:
exactly the "endpoint down" a test needs, and ``kill``/``start`` are separate
for tests that need the outage to keep the data).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from vegafs.store.s3backend import S3Backend

_names = itertools.count()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    """One moto_server subprocess bound to 127.0.0.1."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("moto server exited at start") from None
                time.sleep(0.05)
        raise RuntimeError("moto server did not start within 30 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Environment for ``Store.open("s3://...")``; returns a fresh location."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.url)
    monkeypatch.setenv("VEGAFS_S3_CACHE", str(tmp_path / "cache"))
    return f"s3://vegafs-test/run{os.getpid()}-{next(_names)}"


@pytest.fixture
def new_backend(s3_server: MotoServer, tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    """Factory: S3Backend on a fresh prefix (one per test), each with its own cache dir."""
    location = f"s3://vegafs-test/b{os.getpid()}-{next(_names)}"
    opened: list[S3Backend] = []

    def factory(**kw: object) -> S3Backend:
        kw.setdefault("cache_dir", tmp_path / f"cache{len(opened)}")
        b = S3Backend(location, endpoint_url=s3_server.url, **kw)  # type: ignore[arg-type]
        opened.append(b)
        return b

    yield factory
    for b in opened:
        with contextlib.suppress(OSError):
            b.close()


class Outage:
    """A TCP relay in front of the server that can be cut and restored (an endpoint outage).

    Killing moto itself would lose its in-memory bucket; cutting the relay
    looks the same to the client (connections reset, then refused) while the
    data behind it survives, like a real endpoint coming back.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


@pytest.fixture
def outage(s3_server: MotoServer) -> Iterator[Outage]:
    relay = Outage(s3_server.port)
    relay.up()
    try:
        yield relay
    finally:
        relay.down()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """sqlite's thousands of fsyncs on s3:// take minutes (each is a publish and a piece):
    slow here; the same tests run quick on a local store in tests/mount."""
    for item in items:
        if item.path.name == "test_mount_tools_s3.py" and "sqlite" in item.name:
            item.add_marker(pytest.mark.slow)

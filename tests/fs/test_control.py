"""The control socket protocol, without a mount: a trio server in a thread, the
blocking client in the test's thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from vegafs.cli import control


async def _handler(op: str, args: dict[str, Any]) -> Any:
    if op == "echo":
        return args
    if op == "slow":
        await trio.sleep(0.05)
        return "done"
    raise ValueError(f"unknown control operation {op!r}\nsecond line")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Path]:
    """Serve ``_handler`` on tmp_path/control.sock until the test ends."""
    ready = threading.Event()
    stop: list[trio.CancelScope] = []
    token: list[trio.lowlevel.TrioToken] = []

    async def main() -> None:
        with trio.CancelScope() as scope:
            stop.append(scope)
            token.append(trio.lowlevel.current_trio_token())
            async with trio.open_nursery() as nursery:
                await nursery.start(control.serve, tmp_path, _handler)
                ready.set()

    thread = threading.Thread(target=trio.run, args=(main,))
    thread.start()
    assert ready.wait(10)
    yield tmp_path
    trio.from_thread.run_sync(stop[0].cancel, trio_token=token[0])
    thread.join(10)
    assert not (tmp_path / "control.sock").exists()  # removed on exit


def test_request_and_answer(server: Path) -> None:
    assert control.request(server, "echo", name="s1") == {"ok": True, "result": {"name": "s1"}}
    assert control.call(server, "slow") == "done"


def test_errors_come_back_as_one_line(server: Path) -> None:
    response = control.request(server, "nope")
    assert response == {"ok": False, "error": "unknown control operation 'nope'"}
    with pytest.raises(control.ControlError, match="unknown control operation"):
        control.call(server, "nope")


def test_a_malformed_request_is_answered_not_fatal(server: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(server / "control.sock"))
        sock.sendall(b"[1, 2]\n")
        sock.shutdown(socket.SHUT_WR)
        answer = control.decode(sock.recv(65536))
    assert answer["ok"] is False
    assert control.call(server, "echo") == {}  # still serving


def test_no_daemon_means_none(tmp_path: Path) -> None:
    assert control.request(tmp_path, "status") is None


def test_a_stale_socket_file_is_removed(tmp_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "control.sock"))
    stale.close()  # the file stays, nobody listens: a killed daemon's leftover
    assert control.request(tmp_path, "status") is None
    assert not (tmp_path / "control.sock").exists()

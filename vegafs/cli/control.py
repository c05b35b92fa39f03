"""The control socket between the `vegafs` command and a running mount daemon.

Why a socket: while a store is mounted, the daemon holds the store's one-writer
lock, so `vegafs snapshot create` cannot open the store itself. Instead it asks
the daemon, which performs the call on the live store (and, for a rollback,
tells the kernel to drop its caches so the next ``ls``/``cat`` sees the rolled
back tree).

Protocol (documented in docs/cli.md): a unix stream socket at
``<store_dir>/control.sock``. One request per connection: the client sends one
JSON object ``{"op": str, "args": {...}}`` terminated by a newline; the server
answers with one JSON object, ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "one line"}``, then closes the connection.

Operations the daemon serves: ``snapshot_create`` (name), ``snapshot_list``,
``snapshot_delete`` (name), ``rollback`` (name), ``stats``, ``gc``, ``fsck``,
``status`` and ``shutdown`` (used by ``vegafs umount``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

SOCKET_NAME = "control.sock"
# One request or response must fit in this many bytes: requests are tiny, and
# the largest response (a snapshot list or stats) is a few KiB.
MAX_MESSAGE = 16 * 1024 * 1024
# A unix socket path is limited to ~108 bytes; longer store paths are reached
# through /proc/self/fd/N/control.sock with N an open descriptor of the dir.
_SUN_PATH_MAX = 100

Handler = Callable[[str, dict[str, Any]], Awaitable[Any]]


class ControlError(Exception):
    """The daemon answered, but the operation failed (message is one line)."""


def socket_path(store_dir: str | os.PathLike[str]) -> Path:
    """Where the daemon of the store at ``store_dir`` listens."""
    return Path(store_dir) / SOCKET_NAME


@contextlib.contextmanager
def _addressable(path: Path) -> Iterator[str]:
    """Yield a string usable as a unix socket address for ``path``.

    Why: deep temporary directories (pytest's tmp_path) exceed the kernel's
    sun_path limit; going through an open directory descriptor keeps the
    address short while naming the same file.
    """
    text = os.fsdecode(path)
    if len(os.fsencode(text)) <= _SUN_PATH_MAX:
        yield text
        return
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{dirfd}/{path.name}"
    finally:
        os.close(dirfd)


def encode(message: dict[str, Any]) -> bytes:
    """One protocol message: compact JSON and a newline."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(data: bytes) -> dict[str, Any]:
    """Parse one protocol message; raises ValueError on anything else."""
    message = json.loads(data.decode())
    if not isinstance(message, dict):
        raise ValueError("a control message must be a JSON object")
    return message


def request(
    store_dir: str | os.PathLike[str], op: str, timeout: float | None = None, **args: Any
) -> dict[str, Any] | None:
    """Send one request to the daemon serving ``store_dir``.

    Returns the daemon's response, ``{"ok": True, "result": ...}`` or
    ``{"ok": False, "error": "..."}``, or ``None`` when no daemon listens (a
    stale socket file left by a killed daemon is removed, so the caller can
    go on and open the store directly). ``timeout`` bounds the wait for the
    answer; None waits as long as the operation takes (a gc can be long).
    """
    path = socket_path(store_dir)
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _addressable(path) as address:
            try:
                sock.connect(address)
            except FileNotFoundError:
                return None
            except ConnectionRefusedError:
                # Nobody listens: a socket file left behind by a killed daemon.
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                return None
        sock.settimeout(timeout)
        sock.sendall(encode({"op": op, "args": args}))
        sock.shutdown(socket.SHUT_WR)
        chunks: list[bytes] = []
        received = 0
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            if received > MAX_MESSAGE:
                raise ControlError("control response too large")
    finally:
        sock.close()
    data = b"".join(chunks)
    if not data:
        # The daemon closed without answering: it is shutting down.
        raise ControlError("the mount daemon closed the connection without answering")
    return decode(data)


def call(store_dir: str | os.PathLike[str], op: str, **args: Any) -> Any:
    """Like :func:`request`, but return the result or raise :class:`ControlError`.

    Returns None also when no daemon listens; callers that must distinguish
    use :func:`request`.
    """
    response = request(store_dir, op, **args)
    if response is None:
        return None
    if not response.get("ok"):
        raise ControlError(str(response.get("error", "unknown error")))
    return response.get("result")


async def serve(store_dir: str | os.PathLike[str], handler: Handler, *, task_status: Any) -> None:
    """Listen on the store's control socket and answer requests with ``handler``.

    Runs until cancelled (trio). ``handler(op, args)`` returns a JSON-able result
    or raises; any exception becomes ``{"ok": false, "error": str(exc)}`` so a
    bad request never takes the daemon down. Requests are served one at a time
    per connection and concurrently across connections. The socket file is
    removed on exit.
    """
    import trio

    path = socket_path(store_dir)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with _addressable(path) as address:
            await listener.bind(address)
        os.chmod(path, 0o600)
        listener.listen(16)
        task_status.started()
        async with trio.open_nursery() as nursery:
            while True:
                conn, _ = await listener.accept()
                nursery.start_soon(_answer, conn, handler)
    finally:
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


async def _answer(conn: Any, handler: Handler) -> None:
    """Read one request from ``conn``, run it, write the response, close."""
    with conn:
        try:
            data = b""
            while not data.endswith(b"\n"):
                chunk = await conn.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) > MAX_MESSAGE:
                    raise ValueError("request too large")
            message = decode(data)
            op = message.get("op")
            args = message.get("args") or {}
            if not isinstance(op, str) or not isinstance(args, dict):
                raise ValueError("a request needs a string 'op' and an object 'args'")
            result = await handler(op, args)
            response: dict[str, Any] = {"ok": True, "result": result}
        except Exception as exc:  # every failure becomes an answer, never a crash
            response = {"ok": False, "error": _one_line(exc)}
        with contextlib.suppress(OSError):
            payload = encode(response)
            while payload:
                sent = await conn.send(payload)
                payload = payload[sent:]


def _one_line(exc: BaseException) -> str:
    """A one-line message for ``exc``, suitable for ``vegafs: <message>``."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

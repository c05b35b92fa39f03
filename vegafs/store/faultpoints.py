"""Named fault points: places where tests can crash or fail the store on purpose.

The store calls :func:`hit` at every named step of publish, checkpoint,
snapshot, rollback and gc (the names are listed in docs/store-format.md and in
:data:`NAMES`). By default nothing happens. A test installs a handler, which
may raise (an ``OSError`` to simulate an I/O failure, or any exception to
simulate a crash at that exact step), and then reopens the store to check that
recovery holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

NAMES = (
    "append.before_write",
    "publish.before_write",
    "publish.before_sync",
    "publish.after_sync",
    "segment.before_seal",
    "segment.after_create",
    "segment.after_manifest",
    "checkpoint.before_write",
    "checkpoint.after_write",
    "snapshot.before_record",
    "snapshot.after_publish",
    "snapshot_delete.before_record",
    "rollback.before_record",
    "rollback.after_publish",
    "gc.start",
    "gc.after_copy",
    "gc.after_publish",
    "gc.after_manifest",
    "gc.before_delete",
    "gc.after_delete",
    "recovery.before_truncate",
)

Handler = Callable[[str], None]

_handler: Handler | None = None


def hit(name: str) -> None:
    """Mark that the store reached step ``name``; run the installed handler, if any."""
    if _handler is not None:
        _handler(name)


def set_handler(handler: Handler | None) -> Handler | None:
    """Install ``handler`` (None removes it); returns the previous one."""
    global _handler
    previous, _handler = _handler, handler
    return previous


@contextlib.contextmanager
def installed(handler: Handler) -> Iterator[None]:
    """Run a block with ``handler`` installed, restoring the previous one after."""
    previous = set_handler(handler)
    try:
        yield
    finally:
        set_handler(previous)

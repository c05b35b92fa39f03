"""What hook code sees: the event object, ``ev.output``, and the decision values.

A hook's ``run(ev)`` gets a :class:`HookEvent`. Its attributes (whitelisted,
as every host object of the VM — see vegafs.vm.values.VegaObject):

    ev.event      "write", "read", ... (the event name)
    ev.path       path relative to the mount root, "/logs/app.log"
    ev.uid ev.gid ev.pid   who asked (the kernel's view of the caller)
    ev.offset ev.size      the byte range of a read/write; for truncate, the new size
    ev.data       the bytes: a write's buffer, or for read hooks the whole file
                  (a slice, borrowed: invalid after the hook returns)
    ev.file_size  the file's size before the operation
    ev.old_path ev.new_path   rename's source and destination (nil otherwise)
    ev.meta       the pending metadata transaction (commit hooks; else the
                  file's metadata, staged)
    ev.output     read hooks only: what readers see instead of the stored bytes
                  (``ev.output.write(slice_or_str)``)

A hook returns ``allow()`` or ``deny(ERRNO, "message")`` (:class:`Decision`);
returning nothing allows. ``ev.data`` is produced lazily (a hook that never
touches it costs no read of the file) and its owner is invalidated when the
run ends, so a slice of it that escaped into state a later run could see
traps as stale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from vegafs.hooks.errnos import ERRNOS, errno_name, valid_errno
from vegafs.vm.values import Owner, Result, Slice, Trap, VegaObject, type_name, unwrap
from vegafs.vm.vfs import as_view

if TYPE_CHECKING:
    from vegafs.vm.runtime import Runtime


class Decision(VegaObject):
    """The value of ``allow()`` / ``deny(errno, message)``."""

    __slots__ = ("allowed", "errno", "message")
    type_name = "decision"

    def __init__(self, allowed: bool, errno: int = 0, message: str = "") -> None:
        self.allowed = allowed
        self.errno = errno
        self.message = message

    def get_attr(self, name: str) -> Any:
        if name == "allowed":
            return self.allowed
        if name == "errno":
            return self.errno
        if name == "message":
            return self.message
        return super().get_attr(name)

    def __repr__(self) -> str:
        if self.allowed:
            return "allow()"
        return f"deny({errno_name(self.errno)}, {self.message!r})"


ALLOW = Decision(True)


def builtin_allow(rt: Runtime) -> Decision:
    """``allow()``: let the operation proceed."""
    return ALLOW


def builtin_deny(rt: Runtime, errno: Any = None, message: Any = "") -> Decision:
    """``deny(ERRNO, "message")``: fail the operation with ERRNO; the message is traced."""
    errno = unwrap(errno)
    if errno is None:
        errno = ERRNOS["EPERM"]
    if not valid_errno(errno):
        raise Trap(
            "value",
            f"deny() needs an errno such as EPERM, got {errno!r} (known: {', '.join(ERRNOS)})",
        )
    message = unwrap(message)
    if type(message) is Slice:
        message = message.to_bytes().decode("utf-8", "replace")
    if type(message) is not str:
        raise Trap("type", f"deny() message must be a str, got {type_name(message)}")
    return Decision(False, errno, message[:1024])


class Output(VegaObject):
    """``ev.output``: the bytes readers will see, written in order by a read hook."""

    __slots__ = ("buffer", "written")
    type_name = "output"

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.written = False

    def call_method(self, rt: Runtime, name: str, args: list[Any]) -> Any:
        if name != "write":
            return super().call_method(rt, name, args)
        if len(args) != 1:
            raise Trap("arity", f"output.write() takes 1 argument, got {len(args)}")
        view = as_view(args[0], "output.write")
        rt.meter.charge_memory(len(view))
        self.buffer += view
        self.written = True
        return len(view)


#: Event fields a hook reads as plain attributes (``ev.path``, ``ev.offset``...).
_PLAIN_FIELDS = (
    "event",
    "path",
    "uid",
    "gid",
    "pid",
    "offset",
    "size",
    "file_size",
    "old_path",
    "new_path",
    "meta",
    "output",
)


class HookEvent(VegaObject):
    """One filesystem event as a hook sees it (see the module docstring)."""

    __slots__ = (*_PLAIN_FIELDS, "owner", "_data", "_load_data")
    type_name = "event"
    _PLAIN: ClassVar[frozenset[str]] = frozenset(_PLAIN_FIELDS)

    def __init__(
        self,
        event: str,
        path: str,
        *,
        uid: int = 0,
        gid: int = 0,
        pid: int = 0,
        offset: int = 0,
        size: int = 0,
        file_size: int = 0,
        old_path: str | None = None,
        new_path: str | None = None,
        data: bytes | bytearray | memoryview | None = None,
        load_data: Callable[[], bytes | bytearray | memoryview] | None = None,
        meta: VegaObject | None = None,
        output: Output | None = None,
    ) -> None:
        self.event = event
        self.path = path
        self.uid, self.gid, self.pid = uid, gid, pid
        self.offset, self.size, self.file_size = offset, size, file_size
        self.old_path, self.new_path = old_path, new_path
        self.meta = meta
        self.output = output
        self.owner: Owner | None = None  # made when a run first reads ev.data
        self._data = data
        self._load_data = load_data

    def get_attr(self, name: str) -> Any:
        if name in self._PLAIN:
            return getattr(self, name)
        if name == "data":
            if self._data is None and self._load_data is not None:
                self._data = self._load_data()
            if self._data is None:
                return None
            if self.owner is None:
                self.owner = Owner(f"the data of the {self.event} event on {self.path}")
            return Slice(self.owner, self._data)
        return super().get_attr(name)

    def end(self) -> None:
        """The run is over: every slice of ``ev.data`` becomes stale."""
        if self.owner is not None:
            self.owner.invalidate("the hook run that received it ended")


def _text(value: Any, what: str) -> str:
    value = unwrap(value)
    if type(value) is Slice:
        return value.to_bytes().decode("utf-8", "surrogateescape")
    if type(value) is str:
        return value
    raise Trap("type", f"{what} must be a str, got {type_name(value)}")


class PendingMeta(VegaObject):
    """``ev.meta`` of a ``commit`` event: the metadata transaction being committed.

    ``get`` sees the pending change over the file's current keys and returns
    owned text (nil when absent), so ``tx.get("user.status") == "approved"``
    compares plainly; ``set``/``remove`` amend the transaction (capability
    ``meta::write``), and the amendment lands in the same log record as the
    change that triggered the hook, or not at all if a hook denies.
    ``commit()`` is accepted and does nothing extra: the transaction commits
    with the operation.
    """

    __slots__ = ("path", "_snapshot", "staged")
    type_name = "meta"
    _ARITY: ClassVar[dict[str, tuple[int, int]]] = {
        "get": (1, 1),
        "set": (2, 2),
        "remove": (1, 1),
        "list": (0, 0),
        "commit": (0, 0),
        "refresh": (0, 0),
    }

    def __init__(
        self, path: str, snapshot: dict[str, bytes], staged: dict[str, bytes | None]
    ) -> None:
        self.path = path
        self._snapshot = snapshot
        self.staged: dict[str, bytes | None] = dict(staged)

    def get_attr(self, name: str) -> Any:
        if name == "path":
            return self.path
        return super().get_attr(name)

    def current(self) -> dict[str, bytes]:
        merged = dict(self._snapshot)
        for key, value in self.staged.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged

    def call_method(self, rt: Runtime, name: str, args: list[Any]) -> Any:
        arity = self._ARITY.get(name)
        if arity is None:
            return super().call_method(rt, name, args)
        if not arity[0] <= len(args) <= arity[1]:
            raise Trap("arity", f"meta.{name}() takes {arity[0]} arguments, got {len(args)}")
        if name == "get":
            value = self.current().get(_text(args[0], "a metadata key"))
            if value is None:
                return None
            rt.meter.charge_memory(len(value) + 49)
            return value.decode("utf-8", "replace")
        if name in ("set", "remove"):
            key = _text(args[0], "a metadata key")
            rt.caps.check("meta::write", self.path, op=f"meta.{name}({key!r})")
            if name == "remove" or unwrap(args[1]) is None:
                self.staged[key] = None
                return None
            data = bytes(as_view(args[1], "meta.set"))
            rt.meter.charge_memory(len(data) + len(key))
            self.staged[key] = data
            return None
        if name == "list":
            out = {}
            for key, value in sorted(self.current().items()):
                rt.meter.charge_memory(len(key) + len(value) + 98)
                out[key] = value.decode("utf-8", "replace")
            return out
        return Result.ok()

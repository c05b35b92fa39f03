"""The VFS of one run (seed 000 §6-§10): mount table, handlers, metadata transactions.

A program reaches data only through `Namespace`, which holds the drivers its
host attached (or that the program mounted with ``vfs::mount``). The VM itself
holds no authority: drivers live in `vegafs/drivers/` and are handed in.

Contract for drivers (`Driver`, `DriverHandle`): paths given to a driver are
normalised, absolute *within the mount* ("/" is the mount's root); operational
failures raise `VfsError(code, message)`, which the Namespace turns into a
failed `Result` — a program never sees a Python exception. Buffers a driver
returns from `read` are owned by the VFS from then on: the driver must not
reuse them (seed 000 §10.1); the Namespace wraps them in slices whose owner is
the handler (or, for atomic reads, a per-read owner invalidated by
``close(path)``, ``umount`` and the end of the run).

Slice lifetime rule (documented in docs/vega-stdlib.md): a slice from
``h.read`` stays valid until ``h.close()``, ``close(path)``, ``umount``, or a
hard error — not merely until the next read. A driver therefore never refills a
buffer a live slice references (posix:// recycles only unreferenced ones); a read larger than the remaining memory budget traps before it
allocates, but handler buffers are not charged cumulatively (they are borrowed
memory, reclaimed as soon as the program drops the slices).

Concurrency (§9): many readers, one writer per path. Opening a second handler
for writing, or an atomic `write` while a writing handler is open, returns a
failed result with code ``busy``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from vegafs.vm.values import Owner, Result, Slice, Trap, VegaObject, type_name, unwrap

if TYPE_CHECKING:
    from vegafs.vm.budget import Meter
    from vegafs.vm.caps import Capabilities
    from vegafs.vm.runtime import Runtime

#: Codes a VfsError may carry; the failed Result's error reads "<code>: <message>".
ERROR_CODES = frozenset({"not_found", "exists", "permission", "no_space", "is_dir", "not_dir",
                         "not_empty", "busy", "io", "invalid", "unsupported", "escape"})

#: Default size of `h.read()` without a size.
DEFAULT_READ_SIZE = 1 << 20


class VfsError(Exception):
    """An operational failure inside a driver; becomes a failed Result, never a trap."""

    def __init__(self, code: str, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown VFS error code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class DriverCaps:
    """What a driver can do, declared accurately (seed 000 §10.2)."""

    read: bool = True
    write: bool = True
    handlers: bool = True  # open() with stateful handlers
    meta: bool = True  # lookup() transactions
    atomic_meta_commit: bool = True  # all keys of a commit become visible at once
    atomic_write: bool = True  # whole-file write(path, data) is all-or-nothing
    rename: bool = True
    remove: bool = True
    sync: bool = True  # sync() makes data durable (False: a no-op is honest, e.g. mem://)
    meta_namespaces: tuple[str, ...] = ("user.",)  # key prefixes set() accepts

    def describe(self) -> list[str]:
        return [name for name in ("read", "write", "handlers", "meta", "atomic_meta_commit",
                                  "atomic_write", "rename", "remove", "sync")
                if getattr(self, name)]


@dataclass(frozen=True, slots=True)
class OpenFlags:
    """Parsed open() mode. Accepted spellings: r, w, a, r+, w+, a+, x (exclusive create)."""

    read: bool
    write: bool
    create: bool
    truncate: bool
    append: bool
    exclusive: bool

    @classmethod
    def parse(cls, mode: str) -> OpenFlags:
        table = {
            "r": (True, False, False, False, False, False),
            "r+": (True, True, False, False, False, False),
            "w": (False, True, True, True, False, False),
            "w+": (True, True, True, True, False, False),
            "a": (False, True, True, False, True, False),
            "a+": (True, True, True, False, True, False),
            "x": (False, True, True, False, False, True),
        }
        try:
            return cls(*table[mode])
        except KeyError:
            raise VfsError("invalid", f"bad open mode {mode!r} (expected one of "
                           f"{', '.join(table)})") from None


class StatInfo(VegaObject):
    """`stat(path)` result: kind ("file", "dir", "symlink", "other"), size, mtime, mode."""

    __slots__ = ("kind", "size", "mtime_ns", "mode")
    type_name = "stat"
    _ATTRS = ("kind", "size", "mtime_ns", "mode")

    def __init__(self, kind: str, size: int, mtime_ns: int, mode: int) -> None:
        self.kind, self.size, self.mtime_ns, self.mode = kind, size, mtime_ns, mode

    def get_attr(self, name: str) -> Any:
        if name in self._ATTRS:
            return getattr(self, name)
        if name == "is_dir":
            return self.kind == "dir"
        if name == "is_file":
            return self.kind == "file"
        return super().get_attr(name)

    def __repr__(self) -> str:
        return f"StatInfo({self.kind}, size={self.size})"


Buffer = bytes | bytearray | memoryview


class DriverHandle(Protocol):
    """A driver's stateful handler. Raises VfsError for operational failures."""

    def read(self, size: int) -> Buffer:
        """Up to `size` bytes from the position (short at EOF; empty = EOF), in a
        buffer the driver will not touch again while anything references it."""

    def write(self, data: memoryview) -> int:
        """Write all of `data` at the position (append mode: at the end); bytes written."""

    def seek(self, offset: int) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


class Driver(Protocol):
    """A VFS backend (seed 000 §10). Paths are absolute within the mount."""

    scheme: str

    def capabilities(self) -> DriverCaps: ...

    def open(self, path: str, flags: OpenFlags) -> DriverHandle: ...

    def read(self, path: str, offset: int, size: int | None) -> Buffer:
        """Atomic read of [offset, offset+size) (None: to the end); fresh buffer."""

    def write(self, path: str, offset: int | None, data: memoryview) -> int:
        """Atomic write. offset None: replace the whole file (create it); else write at
        offset (create it if missing, extend with zeros). Returns bytes written."""

    def size(self, path: str) -> int:
        """Size of a regular file (used to bound whole-file reads before allocating)."""

    def list(self, path: str) -> list[str]:
        """Names in a directory, sorted."""

    def stat(self, path: str) -> StatInfo: ...

    def mkdir(self, path: str) -> None: ...

    def rename(self, src: str, dst: str) -> None: ...

    def remove(self, path: str) -> None:
        """Remove a file or an empty directory."""

    def meta_read(self, path: str) -> dict[str, bytes]:
        """All metadata keys of `path` (xattrs) as one consistent snapshot."""

    def meta_commit(self, path: str, changes: dict[str, bytes | None]) -> None:
        """Apply all changes (None = remove the key) atomically, or none of them."""

    def sync(self, path: str) -> None: ...

    def close(self) -> None:
        """Unmounted: release resources. Handlers were closed before."""


#: How a Namespace turns a URI into a driver for a script's `mount(path, uri)`; the
#: host decides which schemes exist (raise VfsError("unsupported", ...) otherwise).
Opener = Callable[[str], Driver]


def normalize(path: str) -> str:
    """Normalise an absolute script path: collapse ``//``, ``.``, ``..`` (never above
    ``/``). Raises VfsError("invalid") for relative paths or NUL bytes."""
    if not isinstance(path, str):
        raise VfsError("invalid", f"a path must be a str, got {type_name(path)}")
    if not path.startswith("/"):
        raise VfsError("invalid", f"path {path!r} is not absolute")
    if "\0" in path:
        raise VfsError("invalid", "path contains a NUL byte")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise VfsError("escape", f"path {path!r} climbs above /")
            parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


def check_meta_key(key: str, namespaces: tuple[str, ...]) -> None:
    """Reject a key outside a driver's writable namespaces (``user.`` on posix://, so
    a root-run script cannot set ``trusted.*`` or ``security.*``)."""
    if not key.startswith(namespaces) or key in namespaces:
        raise VfsError("invalid", f"metadata key {key!r} is outside the writable namespaces "
                       f"({', '.join(namespaces)})")


def _within(path: str, mountpoint: str) -> bool:
    return mountpoint == "/" or path == mountpoint or path.startswith(mountpoint + "/")


def _failed(err: VfsError) -> Result:
    return Result.fail(str(err))


# --------------------------------------------------------------------------- handlers


class Handle(VegaObject):
    """A stateful handler (seed 000 §7.3) as a program sees it.

    Closing it (or `close(path)`, `umount`, a hard error) invalidates its owner,
    so every slice it produced traps on the next use; using the handle itself
    after that traps "handle" (seed 002: a stale handle is structural misuse).
    """

    __slots__ = ("ns", "path", "flags", "owner", "_dh", "_reason")
    type_name = "handle"
    _METHODS = ("read", "write", "seek", "sync", "close")

    def __init__(self, ns: Namespace, path: str, flags: OpenFlags, dh: DriverHandle) -> None:
        self.ns = ns
        self.path = path
        self.flags = flags
        self.owner = Owner(f"handler of {path}")
        self._dh: DriverHandle | None = dh
        self._reason = ""

    @property
    def closed(self) -> bool:
        return self._dh is None

    def _live(self) -> DriverHandle:
        if self._dh is None:
            raise Trap("handle", f"handler of {self.path} used after it was {self._reason}")
        return self._dh

    def get_attr(self, name: str) -> Any:
        if name == "path":
            return self.path
        if name == "closed":
            return self.closed
        if name == "success":  # so `let h = open(...); h.success` reads naturally
            return True
        if name == "error":
            return None
        return super().get_attr(name)

    def call_method(self, rt: Runtime, name: str, args: list[Any]) -> Any:
        if name not in self._METHODS:
            return super().call_method(rt, name, args)
        method = getattr(self, name)
        max_args = {"read": 1, "write": 1, "seek": 1}.get(name, 0)
        min_args = 1 if name in ("write", "seek") else 0
        if not min_args <= len(args) <= max_args:
            raise Trap("arity", f"h.{name}() takes {min_args}..{max_args} arguments, "
                       f"got {len(args)}")
        return method(*(unwrap(a) for a in args))

    def read(self, size: int | None = None) -> Result:
        dh = self._live()
        if size is None:
            size = DEFAULT_READ_SIZE
        if type(size) is not int or size < 0:
            raise Trap("type", f"h.read(size) needs a non-negative int, got {type_name(size)}")
        if not self.flags.read:
            return Result.fail(f"permission: handler of {self.path} was not opened for reading")
        self.ns._bound_read(size)
        try:
            buf = dh.read(size)
        except VfsError as err:
            return _failed(err)
        return Result.ok(Slice(self.owner, buf))

    def write(self, data: Slice | str) -> Result:
        dh = self._live()
        if not self.flags.write:
            return Result.fail(f"permission: handler of {self.path} was not opened for writing")
        view = as_view(data, "h.write")
        try:
            return Result.ok(dh.write(view))
        except VfsError as err:
            return _failed(err)

    def seek(self, offset: int) -> Result:
        dh = self._live()
        if type(offset) is not int or offset < 0:
            raise Trap("type", f"h.seek(offset) needs a non-negative int, got {offset!r}")
        try:
            dh.seek(offset)
        except VfsError as err:
            return _failed(err)
        return Result.ok()

    def sync(self) -> Result:
        dh = self._live()
        try:
            dh.sync()
        except VfsError as err:
            return _failed(err)
        return Result.ok()

    def close(self) -> Result:
        """Close normally; closing twice traps like any use after close."""
        self._live()
        return self.ns._close_handle(self, "closed")

    def _shutdown(self, reason: str) -> VfsError | None:
        """Invalidate slices and release the driver handle; idempotent."""
        dh, self._dh = self._dh, None
        if dh is None:
            return None
        self._reason = reason
        self.owner.invalidate(f"its handler was {reason}")
        try:
            dh.close()
        except VfsError as err:
            return err
        return None

    def __repr__(self) -> str:
        return f"<handle {self.path}{' closed' if self.closed else ''}>"


class MetaTxn(VegaObject):
    """A metadata transaction on one path (seed 000 §7.4): a snapshot plus staged
    changes. `get` returns slices owned by the transaction; `commit`, `abort` and
    `refresh` invalidate them. `commit` applies every staged key atomically."""

    __slots__ = ("ns", "path", "owner", "_snapshot", "_staged")
    type_name = "meta"
    _METHODS = {"get": (1, 1), "set": (2, 2), "remove": (1, 1), "list": (0, 0),
                "commit": (0, 0), "refresh": (0, 0), "abort": (0, 0)}

    def __init__(self, ns: Namespace, path: str, snapshot: dict[str, bytes]) -> None:
        self.ns = ns
        self.path = path
        self.owner = Owner(f"metadata transaction on {path}")
        self._snapshot = snapshot
        self._staged: dict[str, bytes | None] = {}

    def get_attr(self, name: str) -> Any:
        if name == "path":
            return self.path
        if name == "success":
            return True
        if name == "error":
            return None
        return super().get_attr(name)

    def call_method(self, rt: Runtime, name: str, args: list[Any]) -> Any:
        arity = self._METHODS.get(name)
        if arity is None:
            return super().call_method(rt, name, args)
        if not arity[0] <= len(args) <= arity[1]:
            raise Trap("arity", f"meta.{name}() takes {arity[0]} arguments, got {len(args)}")
        return getattr(self, name)(*(unwrap(a) for a in args))

    def _key(self, key: Any) -> str:
        if type(key) is Slice:
            key = key.to_bytes().decode("utf-8", "surrogateescape")
        if type(key) is not str:
            raise Trap("type", f"a metadata key must be a str, got {type_name(key)}")
        return key

    def _current(self) -> dict[str, bytes]:
        merged = dict(self._snapshot)
        for k, v in self._staged.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        return merged

    def get(self, key: Any) -> Slice | None:
        """The value (staged or snapshot) as a slice of this transaction, or nil."""
        value = self._current().get(self._key(key))
        return None if value is None else Slice(self.owner, value)

    def set(self, key: Any, value: Any) -> None:
        key = self._key(key)
        self.ns.caps.check("meta::write", self.path, op=f"meta.set({key!r})")
        if value is None:
            self._staged[key] = None
            return
        data = as_view(value, "meta.set").tobytes()
        self.ns.meter.charge_memory(len(data) + len(key))
        self._staged[key] = data

    def remove(self, key: Any) -> None:
        self.set(key, None)

    def list(self) -> dict[str, str]:
        """Every key -> its value decoded as UTF-8 text (undecodable bytes escaped);
        a map cannot hold slices, so these are owned copies charged to memory."""
        out: dict[str, str] = {}
        for k, v in sorted(self._current().items()):
            self.ns.meter.charge_memory(len(k) + len(v) + 98)
            out[k] = v.decode("utf-8", "backslashreplace")
        return out

    def commit(self) -> Result:
        self.ns.caps.check("meta::write", self.path, op="meta.commit()")
        staged, self._staged = self._staged, {}
        self.owner.invalidate("its metadata transaction committed")
        if not staged:
            return Result.ok()
        try:
            _, driver, dpath = self.ns._resolve(self.path)
            for key in staged:
                check_meta_key(key, driver.capabilities().meta_namespaces)
            driver.meta_commit(dpath, staged)
            self._snapshot = driver.meta_read(dpath)
        except VfsError as err:
            return _failed(err)
        return Result.ok()

    def refresh(self) -> Result:
        """Drop staged changes and re-read the current metadata."""
        self._staged = {}
        self.owner.invalidate("its metadata transaction was refreshed")
        try:
            _, driver, dpath = self.ns._resolve(self.path)
            self._snapshot = driver.meta_read(dpath)
        except VfsError as err:
            return _failed(err)
        return Result.ok()

    def abort(self) -> Result:
        self._staged = {}
        self.owner.invalidate("its metadata transaction was aborted")
        return Result.ok()


def as_view(data: Any, op: str) -> memoryview:
    """Bytes of a slice or a str (a literal is a static slice) without copying slices."""
    data = unwrap(data)
    if type(data) is Slice:
        return data.view()
    if type(data) is str:
        return memoryview(data.encode("utf-8"))
    raise Trap("type", f"{op} needs a slice or str, got {type_name(data)}")


# --------------------------------------------------------------------------- namespace


class Namespace:
    """The mount table of one run, and the only door to data.

    Every operation checks capabilities against the normalised path, resolves the
    longest mount prefix, calls the driver, and maps VfsError to a failed Result.
    """

    def __init__(self, caps: Capabilities, meter: Meter, opener: Opener | None = None,
                 max_read: int = 256 << 20) -> None:
        self.caps = caps
        self.meter = meter
        self.opener = opener
        self.max_read = max_read
        self._mounts: dict[str, Driver] = {}
        self._uris: dict[str, str] = {}
        self._handles: dict[str, list[Handle]] = {}
        self._writers: dict[str, Handle] = {}
        self._read_owners: dict[str, Owner] = {}

    # -- mount table ---------------------------------------------------------------

    def attach(self, path: str, driver: Driver, uri: str | None = None) -> None:
        """Host-side mount (no capability needed): how the CLI/hooks set a run up.
        `uri` is what umount's ``vfs::mount`` check matches (default ``scheme://``)."""
        mp = normalize(path)
        if mp in self._mounts:
            raise VfsError("exists", f"{mp} is already a mount point")
        self._mounts[mp] = driver
        self._uris[mp] = uri or f"{driver.scheme}://"

    def mounts(self) -> dict[str, str]:
        return {mp: d.scheme for mp, d in sorted(self._mounts.items())}

    def mount(self, path: str, uri: str) -> Result:
        try:
            mp = normalize(path)
            self.caps.check("vfs::mount", uri, op=f"mount({mp!r}, {uri!r})")
            if self.opener is None:
                raise VfsError("unsupported", "this host does not let scripts mount drivers")
            if mp in self._mounts:
                raise VfsError("exists", f"{mp} is already a mount point")
            self._mounts[mp] = self.opener(uri)
            self._uris[mp] = uri
        except VfsError as err:
            return _failed(err)
        return Result.ok()

    def umount(self, path: str) -> Result:
        try:
            mp = normalize(path)
            driver = self._mounts.get(mp)
            if driver is None:
                raise VfsError("not_found", f"{mp} is not a mount point")
            self.caps.check("vfs::mount", self._uris[mp], op=f"umount({mp!r})")
            self._close_under(mp, "unmounted")
            del self._mounts[mp], self._uris[mp]
            driver.close()
        except VfsError as err:
            return _failed(err)
        return Result.ok()

    def _resolve(self, path: str) -> tuple[str, Driver, str]:
        """(mount point, driver, path inside the driver) of a normalised path."""
        best = None
        for mp in self._mounts:
            if _within(path, mp) and (best is None or len(mp) > len(best)):
                best = mp
        if best is None:
            raise VfsError("not_found", f"no mount covers {path}")
        inner = path[len(best):] if best != "/" else path
        return best, self._mounts[best], inner or "/"

    # -- lifecycle -------------------------------------------------------------------

    def _close_handle(self, h: Handle, reason: str) -> Result:
        handles = self._handles.get(h.path, [])
        if h in handles:
            handles.remove(h)
            if not handles:
                del self._handles[h.path]
        if self._writers.get(h.path) is h:
            del self._writers[h.path]
        err = h._shutdown(reason)
        return Result.ok() if err is None else _failed(err)

    def _close_under(self, prefix: str, reason: str) -> int:
        n = 0
        for path in [p for p in self._handles if _within(p, prefix)]:
            for h in list(self._handles.get(path, [])):
                self._close_handle(h, reason)
                n += 1
        for path in [p for p in self._read_owners if _within(p, prefix)]:
            self._read_owners.pop(path).invalidate(f"{path} was {reason}")
        return n

    def close(self, path: str) -> Result:
        """Force-close every handler of `path` (and below, for a directory) and
        invalidate every slice read from it (seed 000 §7.1)."""
        try:
            p = normalize(path)
        except VfsError as err:
            return _failed(err)
        return Result.ok(self._close_under(p, "force-closed by close()"))

    def close_all(self, reason: str) -> None:
        """End of run or hard error: invalidate everything (seed 000 §3.4)."""
        self._close_under("/", reason)

    def detach_all(self) -> list[str]:
        """The host is done with this namespace: close every handler, then every
        driver (a store:// driver publishes and releases its lock here).
        Returns the failures, one line each, for the host to report."""
        self._close_under("/", "unmounted at the end of the run")
        failures = []
        for mp, driver in list(self._mounts.items()):
            try:
                driver.close()
            except (VfsError, OSError) as err:
                failures.append(f"{mp} ({self._uris[mp]}): {err}")
            del self._mounts[mp], self._uris[mp]
        return failures

    def sync(self, path: str) -> Result:
        try:
            p = normalize(path)
            self.caps.check("fs::write", p, op=f"sync({p!r})")
            _, driver, inner = self._resolve(p)
            driver.sync(inner)
        except VfsError as err:
            return _failed(err)
        return Result.ok()

    # -- atomic data -----------------------------------------------------------------

    def _bound_read(self, size: int) -> None:
        """Trap before allocating a read buffer the budget cannot hold."""
        self.meter.check_time()
        headroom = self.meter.memory_headroom()
        limit = self.max_read if headroom is None else min(self.max_read, headroom)
        if size > limit:
            raise Trap("budget_memory", f"a read of {size} bytes is over the per-read limit "
                       f"of {limit} bytes; read it through a handler in smaller slices")

    def read(self, path: str, offset: int = 0, size: int | None = None) -> Result:
        try:
            p = normalize(path)
            self.caps.check("fs::read", p, op=f"read({p!r})")
            _, driver, inner = self._resolve(p)
            if size is None:
                size = max(driver.size(inner) - offset, 0)
            self._bound_read(size)
            buf = driver.read(inner, offset, size)
        except VfsError as err:
            return _failed(err)
        owner = self._read_owners.get(p)
        if owner is None:
            owner = self._read_owners[p] = Owner(f"read of {p}")
        return Result.ok(Slice(owner, buf))

    def write(self, path: str, data: Any, offset: int | None = None) -> Result:
        try:
            p = normalize(path)
            self.caps.check("fs::write", p, op=f"write({p!r})")
            view = as_view(data, "write")
            if p in self._writers:
                raise VfsError("busy", f"{p} is open for writing by a handler (one writer "
                               "per path)")
            _, driver, inner = self._resolve(p)
            self.meter.check_time()
            return Result.ok(driver.write(inner, offset, view))
        except VfsError as err:
            return _failed(err)

    # -- namespace operations --------------------------------------------------------

    def list(self, path: str) -> Result:
        try:
            p = normalize(path)
            self.caps.check("fs::read", p, op=f"list({p!r})")
            _, driver, inner = self._resolve(p)
            names = driver.list(inner)
            if inner == "/" or p == "/":
                names = sorted(set(names) | self._child_mounts(p))
        except VfsError as err:
            if err.code == "not_found" and self._child_mounts(normalize(path)):
                return Result.ok(sorted(self._child_mounts(normalize(path))))
            return _failed(err)
        self.meter.charge_memory(56 + sum(57 + len(n) for n in names))
        return Result.ok(names)

    def _child_mounts(self, p: str) -> set[str]:
        """Names of mount points directly below `p` (they appear in listings)."""
        prefix = p.rstrip("/") + "/"
        return {mp[len(prefix):].split("/")[0] for mp in self._mounts
                if mp != p and mp.startswith(prefix)}

    def stat(self, path: str) -> Result:
        try:
            p = normalize(path)
            self.caps.check("fs::read", p, op=f"stat({p!r})")
            _, driver, inner = self._resolve(p)
            return Result.ok(driver.stat(inner))
        except VfsError as err:
            return _failed(err)

    def mkdir(self, path: str) -> Result:
        try:
            p = normalize(path)
            self.caps.check("fs::write", p, op=f"mkdir({p!r})")
            _, driver, inner = self._resolve(p)
            driver.mkdir(inner)
        except VfsError as err:
            return _failed(err)
        return Result.ok()

    def rename(self, src: str, dst: str) -> Result:
        try:
            a, b = normalize(src), normalize(dst)
            self.caps.check("fs::write", a, op=f"rename({a!r}, {b!r})")
            self.caps.check("fs::write", b, op=f"rename({a!r}, {b!r})")
            ma, driver, ia = self._resolve(a)
            mb, _, ib = self._resolve(b)
            if ma != mb:
                raise VfsError("unsupported", f"rename across mounts ({ma} -> {mb}); copy "
                               "and remove instead")
            driver.rename(ia, ib)
        except VfsError as err:
            return _failed(err)
        return Result.ok()

    def remove(self, path: str) -> Result:
        try:
            p = normalize(path)
            self.caps.check("fs::write", p, op=f"remove({p!r})")
            _, driver, inner = self._resolve(p)
            if inner == "/":
                raise VfsError("busy", f"{p} is a mount point")
            driver.remove(inner)
        except VfsError as err:
            return _failed(err)
        return Result.ok()

    # -- handlers and metadata -------------------------------------------------------

    def open(self, path: str, mode: str = "r") -> Result:
        try:
            p = normalize(path)
            if type(mode) is not str:
                raise VfsError("invalid", f"open mode must be a str, got {type_name(mode)}")
            flags = OpenFlags.parse(mode)
            if flags.read:
                self.caps.check("fs::read", p, op=f"open({p!r}, {mode!r})")
            if flags.write:
                self.caps.check("fs::write", p, op=f"open({p!r}, {mode!r})")
                if p in self._writers:
                    raise VfsError("busy", f"{p} already has a writer (one writer per path)")
            _, driver, inner = self._resolve(p)
            if not driver.capabilities().handlers:
                raise VfsError("unsupported", f"{driver.scheme}:// has no stateful handlers")
            dh = driver.open(inner, flags)
        except VfsError as err:
            return _failed(err)
        h = Handle(self, p, flags, dh)
        self._handles.setdefault(p, []).append(h)
        if flags.write:
            self._writers[p] = h
        return Result.ok(h)

    def lookup(self, path: str) -> Result:
        try:
            p = normalize(path)
            self.caps.check("meta::read", p, op=f"lookup({p!r})")
            _, driver, inner = self._resolve(p)
            if not driver.capabilities().meta:
                raise VfsError("unsupported", f"{driver.scheme}:// has no metadata")
            snapshot = driver.meta_read(inner)
        except VfsError as err:
            return _failed(err)
        return Result.ok(MetaTxn(self, p, snapshot))

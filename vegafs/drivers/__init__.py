"""VFS drivers for Vega runs, and the registry that opens one from a URI.

What it owns: the concrete drivers (``mem.py``: scratch memory, ``posix.py``:
a confined host directory, ``store.py``: a vegafs store through the fs layer)
and ``open_driver(uri)``, the one place a URI scheme is mapped to a driver
class. Each driver class exposes ``from_uri(uri) -> Driver`` and implements
``vegafs.vm.vfs.Driver``. Hosts (``vegafs run``, the hooks runtime) hand a run
its drivers; the VM itself never opens one.

What it must never do: import the CLI, FUSE or the hooks layer; let a driver
reach outside the root its URI names.

Adding a scheme: put the driver in ``vegafs/drivers/<name>.py`` and add a line
to ``SCHEMES`` (modules are imported lazily, so a scheme whose module is not
there yet fails only when used), or call ``register_scheme`` at run time.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from vegafs.vm.vfs import Driver, VfsError

#: scheme -> "module:Class" whose ``Class.from_uri(uri)`` opens a driver.
SCHEMES: dict[str, str] = {
    "mem": "vegafs.drivers.mem:MemDriver",
    "posix": "vegafs.drivers.posix:PosixDriver",
    "store": "vegafs.drivers.store:StoreDriver",
    "s3": "vegafs.drivers.store:StoreDriver",
}
_OPENERS: dict[str, Callable[[str], Any]] = {}


def uri_directory(uri: str, scheme: str, what: str) -> str:
    """The absolute host directory a ``scheme:///abs/dir`` URI names.

    Raises VfsError("invalid") for another scheme or a relative path (a relative
    path would depend on the host's working directory, which a script must not).
    """
    prefix = f"{scheme}://"
    if not uri.startswith(prefix):
        raise VfsError("invalid", f"not a {prefix} URI: {uri!r}")
    path = uri[len(prefix):]
    if not path.startswith("/"):
        raise VfsError("invalid", f"{prefix} needs an absolute {what}, got {path!r}")
    return path


def register_scheme(scheme: str, opener: Callable[[str], Any]) -> None:
    """Make ``scheme://...`` open through ``opener(uri)`` (tests, embedding hosts)."""
    _OPENERS[scheme] = opener


def open_driver(uri: str) -> Driver:
    """Open the driver a URI names (``mem://``, ``posix:///dir``, ``store:///path``).

    Raises VfsError("invalid"/"unsupported"/...) for a malformed URI, an unknown
    scheme, or a driver that cannot open its target; hosts turn it into a user
    error or a failed ``mount`` result.
    """
    scheme, sep, _ = uri.partition("://")
    if not sep or not scheme:
        raise VfsError("invalid", f"not a driver URI: {uri!r} (expected scheme://...)")
    opener = _OPENERS.get(scheme)
    if opener is None:
        target = SCHEMES.get(scheme)
        if target is None:
            known = ", ".join(f"{s}://" for s in sorted(set(SCHEMES) | set(_OPENERS)))
            raise VfsError("unsupported", f"unknown driver scheme {scheme}:// (known: {known})")
        module_name, _, cls_name = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            raise VfsError("unsupported", f"the {scheme}:// driver is not available in this "
                           "build") from None
        opener = getattr(module, cls_name).from_uri
    return opener(uri)

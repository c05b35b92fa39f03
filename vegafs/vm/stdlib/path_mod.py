"""`path::` — pure string operations on "/"-separated VFS paths (no I/O).

`path::matches` uses the same glob dialect as capabilities (caps.glob_match), so
what a hook matches and what it may touch are spelled alike."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING, Any

from vegafs.vm.caps import glob_match
from vegafs.vm.stdlib.registry import builtin, charge, want_text
from vegafs.vm.values import Trap

if TYPE_CHECKING:
    from vegafs.vm.runtime import Runtime


def _p(rt: Runtime, v: Any, fn: str) -> str:
    return want_text(rt, v, f"the argument of path::{fn}")


@builtin("path::matches", 2)
def matches(rt: Runtime, path: Any, glob: Any) -> bool:
    """True if `path` matches `glob` (``*`` one segment, ``**`` any depth, ``?``, ``[..]``)."""
    return glob_match(_p(rt, glob, "matches"), _p(rt, path, "matches"))


@builtin("path::join", 1, None)
def join(rt: Runtime, *parts: Any) -> str:
    """Join parts with "/" (an absolute part restarts the path, as in POSIX)."""
    items = [_p(rt, p, "join") for p in parts]
    return charge(rt, posixpath.join(*items))


@builtin("path::base", 1)
def base(rt: Runtime, path: Any) -> str:
    """The last component: path::base("/a/b.log") == "b.log"."""
    return charge(rt, posixpath.basename(_p(rt, path, "base").rstrip("/") or "/"))


@builtin("path::dir", 1)
def dir_(rt: Runtime, path: Any) -> str:
    """Everything before the last component: path::dir("/a/b.log") == "/a"."""
    p = _p(rt, path, "dir").rstrip("/") or "/"
    return charge(rt, posixpath.dirname(p) or ".")


@builtin("path::ext", 1)
def ext(rt: Runtime, path: Any) -> str:
    """The extension with its dot (".log"), or ""."""
    return charge(rt, posixpath.splitext(_p(rt, path, "ext"))[1])


@builtin("path::stem", 1)
def stem(rt: Runtime, path: Any) -> str:
    """The last component without its extension."""
    return charge(rt, posixpath.splitext(posixpath.basename(_p(rt, path, "stem")))[0])


@builtin("path::normalize", 1)
def normalize(rt: Runtime, path: Any) -> str:
    """Collapse "//", "." and ".." (an absolute path never climbs above "/")."""
    p = _p(rt, path, "normalize")
    if not p:
        raise Trap("value", "path::normalize of an empty path")
    out = posixpath.normpath(p)
    if out.startswith("//"):
        out = "/" + out.lstrip("/")
    return charge(rt, out)

"""Capabilities of one run (seed 001 "capability-based tool security").

A run holds exactly the capabilities its host grants; there is no ambient
authority. A capability is ``domain::action`` optionally limited to path globs:

    fs::read                 read anything under the run's mounts
    fs::read:/in/**          read only under /in
    fs::write:/out/*.log     write (write, open for writing, rename, remove)
    meta::read, meta::write  metadata transactions (lookup/get/list; set/commit)
    vfs::mount               mount/umount a driver URI (glob on the URI:
                             ``vfs::mount:mem://**``); hosts rarely grant it
    trace::write             emit trace events (granted by default by the CLI)

Globs: ``*`` matches within one path segment, ``?`` one character of a segment,
``**`` any number of whole segments (``/out/**`` matches ``/out`` itself and
everything below it). Matching is on normalised absolute paths, so ``..``
tricks are resolved before a capability is checked (see vfs.normalize).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from vegafs.vm.values import Trap

#: Every capability name the runtime knows; parse() rejects others (a typo in a
#: grant must not silently grant nothing).
KNOWN = frozenset({"fs::read", "fs::write", "meta::read", "meta::write", "vfs::mount",
                   "trace::write"})


@lru_cache(maxsize=1024)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a path glob (``*``, ``?``, ``**``, ``[abc]``) to an anchored regex."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("/**", i) and (i + 3 == n or pattern[i + 3] == "/"):
            out.append("(?:/.*)?")  # "/**" : this directory and anything below
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j == -1:
                out.append(re.escape(c))
                i += 1
            else:
                body = pattern[i + 1 : j]
                negate = body.startswith("!")
                body = body[1:] if negate else body
                out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
                i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def glob_match(pattern: str, path: str) -> bool:
    """True if `path` matches the glob `pattern` as a whole."""
    return glob_regex(pattern).fullmatch(path) is not None


@dataclass(frozen=True, slots=True)
class Grant:
    """One granted capability: a name and the globs it is limited to (() = anywhere)."""

    name: str
    globs: tuple[str, ...] = ()

    def allows(self, name: str, target: str | None) -> bool:
        if name != self.name:
            return False
        if not self.globs:
            return True
        return target is not None and any(glob_match(g, target) for g in self.globs)

    def __str__(self) -> str:
        if not self.globs:
            return self.name
        return ", ".join(f"{self.name}:{g}" for g in self.globs)


class Capabilities:
    """The set of grants of one run; `check` is called on every VFS operation."""

    __slots__ = ("grants",)

    def __init__(self, grants: Iterable[Grant] = ()) -> None:
        merged: dict[str, list[str] | None] = {}
        for g in grants:
            if g.name not in KNOWN:
                raise ValueError(f"unknown capability {g.name!r} (known: {', '.join(sorted(KNOWN))})")
            have = merged.get(g.name, [])
            if not g.globs or have is None:
                merged[g.name] = None  # an unrestricted grant absorbs restricted ones
            else:
                merged[g.name] = have
                have.extend(x for x in g.globs if x not in have)
        self.grants = tuple(Grant(name, tuple(globs or ())) for name, globs in sorted(merged.items()))

    @classmethod
    def parse(cls, specs: Iterable[str]) -> Capabilities:
        """Parse ``["fs::read", "fs::write:/out/**", "vfs::mount:mem://**"]``.

        The glob is everything after the first ``:`` that follows the ``::``; a
        malformed or unknown name raises ValueError (hosts turn it into a user error).
        """
        grants = []
        for spec in specs:
            spec = spec.strip()
            head, sep, _ = spec.partition("::")
            if not sep or not head:
                raise ValueError(f"bad capability {spec!r}: expected domain::action[:glob]")
            action, colon, glob = spec[len(head) + 2 :].partition(":")
            name = f"{head}::{action}"
            if colon and not glob:
                raise ValueError(f"bad capability {spec!r}: empty glob after ':'")
            grants.append(Grant(name, (glob,) if colon else ()))
        return cls(grants)

    @classmethod
    def all(cls) -> Capabilities:
        """Every capability, unrestricted (tests and trusted hosts only)."""
        return cls(Grant(name) for name in KNOWN)

    def allows(self, name: str, target: str | None = None) -> bool:
        return any(g.allows(name, target) for g in self.grants)

    def check(self, name: str, target: str | None = None, op: str | None = None) -> None:
        """Trap "capability" unless `name` is held for `target` (a path or URI)."""
        if self.allows(name, target):
            return
        what = op or name
        on = f" on {target}" if target is not None else ""
        raise Trap("capability", f"{what} needs {name}{on}; this run holds {self.describe()}")

    def describe(self) -> str:
        return ", ".join(str(g) for g in self.grants) if self.grants else "no capabilities"

    def __repr__(self) -> str:
        return f"Capabilities({self.describe()})"

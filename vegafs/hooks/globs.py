"""Path globs of hook declarations and the index that matches them.

Glob syntax (documented in docs/hooks.md): a pattern is an absolute path
relative to the mount root (``/logs/**``). Segments are separated by ``/``;
``*`` matches any run of characters inside one segment, ``?`` one character,
``[abc]`` one of a set, and a whole segment ``**`` matches any number of
segments (zero or more in the middle, one or more at the end: ``/logs/**``
matches every path below ``/logs`` but not ``/logs`` itself).

Why an index: a mount with a thousand hooks must not pay a thousand regex
matches per operation. :class:`GlobIndex` files each pattern under its event
and the literal leading segments of its pattern (``/logs/**`` under
``logs``), in a trie. Matching a path walks the trie along the path's
segments, so only patterns whose literal prefix is a prefix of the path are
ever tried; a pattern that starts with a wildcard (``/**/*.env``) sits at the
root and is tried for every path of its event.

Invariants: an index is immutable once built (the engine swaps a whole new
one in on reload, so a reader never sees half a reload); matches come back in
the order the items were added (file order, then declaration order), which is
the order hooks run in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

_WILDCARDS = frozenset("*?[")


class GlobError(ValueError):
    """A pattern that is not a valid hook glob (message says why)."""


@dataclass(frozen=True)
class Glob:
    """A compiled pattern: its text, literal prefix segments and matcher."""

    text: str
    prefix: tuple[str, ...]
    regex: re.Pattern[str] | None  # None: the pattern is fully literal

    def matches(self, path: str) -> bool:
        """True when ``path`` (absolute, ``/``-separated) matches the pattern."""
        if self.regex is None:
            return path == self.text
        return self.regex.fullmatch(path) is not None


def _segment_regex(segment: str) -> str:
    """Translate one non-``**`` segment to a regex that cannot cross ``/``."""
    out: list[str] = []
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = segment.find("]", i + 2 if segment[i + 1 : i + 2] in ("!", "^", "]") else i + 1)
            if end < 0:
                raise GlobError(f"unclosed '[' in segment {segment!r}")
            body = segment[i + 1 : end]
            if body[:1] in ("!", "^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\").replace("/", "") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def compile_glob(text: str) -> Glob:
    """Compile ``text``; raises :class:`GlobError` for a malformed pattern."""
    if not text.startswith("/"):
        raise GlobError(f"a hook path pattern must start with '/': {text!r}")
    if text == "/":
        return Glob(text, (), None)
    segments = text[1:].split("/")
    if any(seg == "" for seg in segments):
        raise GlobError(f"empty path segment in pattern {text!r}")
    prefix: list[str] = []
    for seg in segments:
        if _WILDCARDS & set(seg):
            break
        prefix.append(seg)
    if len(prefix) == len(segments):
        return Glob(text, tuple(prefix), None)
    parts: list[str] = []
    for i, seg in enumerate(segments):
        if seg == "**":
            parts.append("/.+" if i == len(segments) - 1 else "(?:/[^/]+)*")
        elif "**" in seg:
            raise GlobError(f"'**' must be a whole path segment in {text!r}")
        else:
            parts.append("/" + _segment_regex(seg))
    return Glob(text, tuple(prefix), re.compile("".join(parts)))


class Indexed(Protocol):
    """What the index files: anything with an event name and a compiled glob."""

    @property
    def event(self) -> str: ...

    @property
    def glob(self) -> Glob: ...


T = TypeVar("T", bound=Indexed)


@dataclass
class _Node(Generic[T]):
    children: dict[str, _Node[T]] = field(default_factory=dict)
    items: list[tuple[int, T]] = field(default_factory=list)


class GlobIndex(Generic[T]):
    """Immutable event + literal-prefix trie over hooks (see module docstring)."""

    __slots__ = ("_roots", "_size")

    def __init__(self, items: Iterable[T] = ()) -> None:
        self._roots: dict[str, _Node[T]] = {}
        self._size = 0
        for order, item in enumerate(items):
            node = self._roots.setdefault(item.event, _Node())
            for seg in item.glob.prefix:
                node = node.children.setdefault(seg, _Node())
            node.items.append((order, item))
            self._size += 1

    def __len__(self) -> int:
        return self._size

    def has_event(self, event: str) -> bool:
        """Cheap pre-check: is any hook declared for ``event`` at all?"""
        return event in self._roots

    def may_match_child(self, event: str, directory: str) -> bool:
        """Could an item for ``event`` match some path directly inside
        ``directory``? Conservative (True may still match nothing), exact on
        the literal prefixes: a child's path has one more segment than
        ``directory``, so only patterns whose literal prefix is a prefix of
        the directory's, or the directory's plus one segment, can match it.
        Lets a namespace operation skip building the path at all."""
        node = self._roots.get(event)
        if node is None:
            return False
        for segment in directory[1:].split("/") if directory != "/" else ():
            if node.items:
                return True
            nxt = node.children.get(segment)
            if nxt is None:
                return False
            node = nxt
        return bool(node.items or node.children)

    def match(self, event: str, path: str) -> Sequence[T]:
        """The items for ``event`` whose glob matches ``path``, in added order."""
        node = self._roots.get(event)
        if node is None:
            return ()
        found: list[tuple[int, T]] = []
        segments = path[1:].split("/") if path != "/" else []
        depth = 0
        while True:
            for order, item in node.items:
                if item.glob.matches(path):
                    found.append((order, item))
            if depth == len(segments):
                break
            nxt = node.children.get(segments[depth])
            if nxt is None:
                break
            node = nxt
            depth += 1
        if len(found) > 1:
            found.sort(key=lambda pair: pair[0])
        return tuple(item for _, item in found)

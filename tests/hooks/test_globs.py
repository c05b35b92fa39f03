"""Hook globs and the event + literal-prefix index."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vegafs.hooks.globs import Glob, GlobError, GlobIndex, compile_glob


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("/logs/**", "/logs/a", True),
        ("/logs/**", "/logs/a/b/c.txt", True),
        ("/logs/**", "/logs", False),
        ("/logs/**", "/logsx/a", False),
        ("/**", "/anything/at/all", True),
        ("/**/*.env", "/x.env", True),
        ("/**/*.env", "/a/b/prod.env", True),
        ("/**/*.env", "/a/b/prod.env.bak", False),
        ("/notes/**/*.md", "/notes/a.md", True),
        ("/notes/**/*.md", "/notes/x/y/a.md", True),
        ("/notes/**/*.md", "/notes/x/y/a.txt", False),
        ("/a/*.txt", "/a/b/c.txt", False),
        ("/a/?.txt", "/a/b.txt", True),
        ("/a/[bc].txt", "/a/c.txt", True),
        ("/a/[!bc].txt", "/a/c.txt", False),
        ("/exact/file", "/exact/file", True),
        ("/exact/file", "/exact/file2", False),
        ("/a.b/c", "/aXb/c", False),
    ],
)
def test_glob_semantics(pattern: str, path: str, expected: bool) -> None:
    assert compile_glob(pattern).matches(path) is expected


def test_literal_prefix_is_split_at_first_wildcard() -> None:
    assert compile_glob("/notes/2024/**/*.md").prefix == ("notes", "2024")
    assert compile_glob("/**/*.env").prefix == ()


@pytest.mark.parametrize("bad", ["logs/**", "/a//b", "/a/x**", "/a/[bc"])
def test_bad_globs_are_refused(bad: str) -> None:
    with pytest.raises(GlobError):
        compile_glob(bad)


@dataclass(frozen=True)
class Item:
    name: str
    event: str
    glob: Glob


def _item(name: str, event: str, pattern: str) -> Item:
    return Item(name, event, compile_glob(pattern))


def test_index_matches_by_event_and_keeps_declaration_order() -> None:
    items = [
        _item("env", "read", "/**/*.env"),
        _item("logs", "write", "/logs/**"),
        _item("all", "read", "/**"),
        _item("deep", "read", "/a/b/**"),
    ]
    index = GlobIndex(items)
    assert [i.name for i in index.match("read", "/a/b/x.env")] == ["env", "all", "deep"]
    assert [i.name for i in index.match("write", "/logs/1")] == ["logs"]
    assert index.match("unlink", "/logs/1") == ()
    assert not index.has_event("unlink")


def test_index_does_not_try_patterns_outside_the_path_prefix() -> None:
    tried: list[str] = []

    class Spy:
        def __init__(self, text: str) -> None:
            self.inner = compile_glob(text)
            self.prefix = self.inner.prefix

        def matches(self, path: str) -> bool:
            tried.append(self.inner.text)
            return self.inner.matches(path)

    @dataclass(frozen=True)
    class SpyItem:
        event: str
        glob: Spy  # type: ignore[assignment]

    items = [SpyItem("write", Spy(f"/dir{i}/**")) for i in range(1000)]
    index = GlobIndex(items)  # type: ignore[type-var]
    assert index.match("write", "/elsewhere/file") == ()
    assert tried == []
    assert len(index.match("write", "/dir7/file")) == 1
    assert tried == ["/dir7/**"]


def _brute(pattern: str, path: str) -> bool:
    """A second, independent matcher: segment by segment, recursive on '**'."""
    import fnmatch

    def match(pats: list[str], parts: list[str]) -> bool:
        if not pats:
            return not parts
        head, rest = pats[0], pats[1:]
        if head == "**":
            lo = 1 if not rest else 0
            return any(match(rest, parts[i:]) for i in range(lo, len(parts) + 1))
        return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and match(rest, parts[1:])

    return match(pattern[1:].split("/"), path[1:].split("/") if path != "/" else [])


SEGMENTS = st.sampled_from(["a", "b", "ab", "x.env", "y.md", "z"])
PATTERN_SEGMENTS = st.sampled_from(["a", "b", "*", "**", "*.env", "?", "a*", "[ab]"])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    patterns=st.lists(st.lists(PATTERN_SEGMENTS, min_size=1, max_size=4), min_size=1, max_size=8),
    paths=st.lists(st.lists(SEGMENTS, min_size=1, max_size=5), min_size=1, max_size=8),
)
def test_index_agrees_with_brute_force(patterns: list[list[str]], paths: list[list[str]]) -> None:
    items = [_item(f"h{i}", "read", "/" + "/".join(p)) for i, p in enumerate(patterns)]
    index = GlobIndex(items)
    for parts in paths:
        path = "/" + "/".join(parts)
        expected = [i.name for i in items if _brute(i.glob.text, path)]
        assert [i.name for i in index.match("read", path)] == expected, path


def test_may_match_child_is_exact_on_literal_prefixes() -> None:
    """The directory pre-check never says no where a child could match, and
    says no for directories no literal prefix leads into."""
    index = GlobIndex(
        [
            _item("a", "create", "/logs/**"),
            _item("b", "create", "/data/x/*.csv"),
            _item("c", "create", "/top"),
        ]
    )
    candidates = [
        "/",
        "/logs",
        "/logs/2026",
        "/data",
        "/data/x",
        "/data/y",
        "/other",
        "/other/deep",
    ]
    for directory in candidates:
        child = directory.rstrip("/") + "/"
        possible = any(
            index.match("create", child + name)
            for name in ("top", "logs", "data", "x", "f.csv", "app.log", "2026")
        )
        if possible:
            assert index.may_match_child("create", directory), directory
    assert not index.may_match_child("create", "/other")
    assert not index.may_match_child("create", "/data/y")
    assert not index.may_match_child("unlink", "/logs")
    assert index.may_match_child("create", "/logs/2026")  # /logs/** covers every depth

"""Positions, diagnostics and the error types every Vega user sees.

Why one module: the parser, the checker, the compiler and the interpreter all
report problems in the same shape, ``file:line:col: message`` followed by the
source line and a caret (starlark-go / clang style). Compile errors are
collected (all of a file, never just the first) into ``VegaCompileError``; a
trap at run time becomes ``TrapReport`` with the Vega call stack. Nothing here
knows about Python tracebacks: these are the only errors a user ever sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Pos:
    """A 1-based line and column in a source file."""

    line: int
    col: int


NOWHERE = Pos(0, 0)


def source_line(source: str, line: int) -> str | None:
    """The text of ``line`` (1-based) in ``source``, without its newline."""
    if line < 1:
        return None
    lines = source.splitlines()
    return lines[line - 1] if line <= len(lines) else None


def render(filename: str, pos: Pos, message: str, source: str | None, note: str | None = None) -> str:
    """``file:line:col: message``, the quoted line, a caret, and an optional note."""
    out = [f"{filename}:{pos.line}:{pos.col}: {message}"]
    text = source_line(source, pos.line) if source is not None else None
    if text is not None:
        # Tabs keep their width so the caret lines up under the character.
        prefix = "".join("\t" if ch == "\t" else " " for ch in text[: max(pos.col - 1, 0)])
        out.append(f"    {text}")
        out.append(f"    {prefix}^")
    if note:
        out.append(f"    {note}")
    return "\n".join(out)


@dataclass(frozen=True)
class Diagnostic:
    """One compile-time problem; ``note`` says what was expected, when known."""

    filename: str
    pos: Pos
    message: str
    note: str | None = None

    def render(self, source: str | None) -> str:
        return render(self.filename, self.pos, self.message, source, self.note)

    def __str__(self) -> str:
        return f"{self.filename}:{self.pos.line}:{self.pos.col}: {self.message}"


class VegaError(Exception):
    """Base of every error the Vega toolchain raises on purpose."""


class VegaCompileError(VegaError):
    """A file did not compile; ``diagnostics`` holds every problem found, in order."""

    def __init__(self, diagnostics: list[Diagnostic], source: str | None) -> None:
        self.diagnostics = sorted(diagnostics, key=lambda d: (d.pos.line, d.pos.col))
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.source) for d in self.diagnostics)


#: A rendered call stack longer than twice this shows only its two ends.
STACK_EDGE = 10


@dataclass(frozen=True)
class StackFrame:
    """One Vega frame of a trap's call stack (innermost last)."""

    function: str
    filename: str
    pos: Pos


@dataclass(frozen=True)
class TrapReport:
    """A run that aborted: the trap kind (``budget_steps``, ``stale_slice``...),
    its message, where it happened, and the Vega call stack."""

    kind: str
    message: str
    filename: str
    pos: Pos
    stack: tuple[StackFrame, ...] = field(default=())
    source: str | None = None

    @property
    def is_budget(self) -> bool:
        return self.kind.startswith("budget_")

    def render(self) -> str:
        text = render(self.filename, self.pos, f"trap ({self.kind}): {self.message}", self.source)
        if len(self.stack) > 1:
            frames = [f"  {f.filename}:{f.pos.line}:{f.pos.col}: in {f.function}"
                      for f in self.stack]
            if len(frames) > 2 * STACK_EDGE:  # deep recursion: the ends tell the story
                skipped = len(frames) - 2 * STACK_EDGE
                frames = [*frames[:STACK_EDGE], f"  ... {skipped} more frames ...",
                          *frames[-STACK_EDGE:]]
            text += "\ncall stack (innermost last):\n" + "\n".join(frames)
        return text

    def __str__(self) -> str:
        return f"{self.filename}:{self.pos.line}:{self.pos.col}: trap ({self.kind}): {self.message}"

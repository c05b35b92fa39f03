"""The abstract syntax tree of Vega: plain dataclasses with positions.

The parser's Transformer only *builds* these nodes (it never evaluates), the
checker reads them, and the compiler lowers them to bytecode. Every node
carries ``pos`` (1-based line and column of its first character) so that any
stage can report ``file:line:col``. Nodes are never mutated after parsing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vegafs.vm.diagnostics import Pos

# ---------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Literal:
    """A constant. ``kind`` is int, float, str, bool, nil, duration, size or money;
    ``value`` is the decoded Python value (duration: int nanoseconds; size: int
    bytes; money: a decimal string such as "0.50", kept exact)."""

    pos: Pos
    kind: str
    value: object


@dataclass(frozen=True)
class Name:
    pos: Pos
    id: str


@dataclass(frozen=True)
class Qualified:
    """``module::name`` used as a value (only legal as the callee of a call)."""

    pos: Pos
    module: str
    name: str


@dataclass(frozen=True)
class Call:
    """``callee(args)``: callee is a Name (fn or builtin) or a Qualified name."""

    pos: Pos
    callee: Expr
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class MethodCall:
    pos: Pos
    obj: Expr
    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class Attr:
    pos: Pos
    obj: Expr
    name: str


@dataclass(frozen=True)
class Index:
    pos: Pos
    obj: Expr
    index: Expr


@dataclass(frozen=True)
class Unary:
    pos: Pos
    op: str
    operand: Expr


@dataclass(frozen=True)
class Binary:
    """Arithmetic and comparison; ``pos`` is the operator's position."""

    pos: Pos
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Logical:
    """``&&`` / ``||``: short-circuit, so compiled to jumps, not an opcode."""

    pos: Pos
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class ListLit:
    pos: Pos
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class MapLit:
    pos: Pos
    pairs: tuple[tuple[Expr, Expr], ...]


Expr = (
    Literal | Name | Qualified | Call | MethodCall | Attr | Index | Unary | Binary | Logical
    | ListLit | MapLit
)

# ----------------------------------------------------------------- statements


@dataclass(frozen=True)
class Let:
    pos: Pos
    name: str
    value: Expr


@dataclass(frozen=True)
class Assign:
    """``target = value``; the parser guarantees target is a Name, Index or Attr."""

    pos: Pos
    target: Expr
    value: Expr


@dataclass(frozen=True)
class ExprStmt:
    pos: Pos
    expr: Expr


@dataclass(frozen=True)
class If:
    pos: Pos
    cond: Expr
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...]


@dataclass(frozen=True)
class While:
    pos: Pos
    cond: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Loop:
    pos: Pos
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class For:
    pos: Pos
    var: str
    iterable: Expr
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Break:
    pos: Pos


@dataclass(frozen=True)
class Continue:
    pos: Pos


@dataclass(frozen=True)
class Return:
    pos: Pos
    value: Expr | None


@dataclass(frozen=True)
class Catch:
    pos: Pos
    condition: str
    binding: str | None
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Try:
    pos: Pos
    body: tuple[Stmt, ...]
    catches: tuple[Catch, ...]


Stmt = Let | Assign | ExprStmt | If | While | Loop | For | Break | Continue | Return | Try

# --------------------------------------------------------------- declarations


@dataclass(frozen=True)
class FnDef:
    pos: Pos
    name: str
    params: tuple[str, ...]
    body: tuple[Stmt, ...]


@dataclass(frozen=True)
class Setting:
    """One hook setting as written: ``key value``. ``value`` is a Literal, a
    SettingName, a SettingCall, a SettingCap, a SettingList or a SettingBlock;
    the checker validates keys and turns them into plain data."""

    pos: Pos
    key: str
    value: SettingValue


@dataclass(frozen=True)
class SettingName:
    pos: Pos
    name: str


@dataclass(frozen=True)
class SettingCall:
    pos: Pos
    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class SettingCap:
    """``fs::write`` or ``fs::write("/glob/**")`` in a capabilities list."""

    pos: Pos
    module: str
    name: str
    glob: str | None


@dataclass(frozen=True)
class SettingList:
    pos: Pos
    items: tuple[SettingValue, ...]


@dataclass(frozen=True)
class SettingBlock:
    pos: Pos
    settings: tuple[Setting, ...]


SettingValue = Literal | SettingName | SettingCall | SettingCap | SettingList | SettingBlock


@dataclass(frozen=True)
class HookDef:
    pos: Pos
    name: str
    when: str  # "on" or "after"
    event: str
    glob: str
    settings: tuple[Setting, ...]
    fns: tuple[FnDef, ...]


@dataclass
class Module:
    """A whole file: top-level fns, hooks and the statements of the main body."""

    filename: str
    fns: list[FnDef] = field(default_factory=list)
    hooks: list[HookDef] = field(default_factory=list)
    body: list[Stmt] = field(default_factory=list)

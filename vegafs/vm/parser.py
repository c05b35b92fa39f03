"""Source text -> AST: the lark LALR parser and a Transformer that only builds nodes.

Why LALR: it is linear and several times faster than Earley, which matters
because hook files are recompiled whenever they change. The grammar lives in
``grammar.lark``; this module adds what a grammar cannot say well: decoding of
literals (string escapes, integer underscores, unit suffixes), checking that
an assignment target is assignable, and turning lark's exceptions into
``file:line:col`` diagnostics that name what was expected.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources

from lark import Lark, Token, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.visitors import Transformer_NonRecursive

from vegafs.vm import ast
from vegafs.vm.diagnostics import Diagnostic, Pos, VegaCompileError

NS_PER = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
          "h": 3_600_000_000_000}
BYTES_PER = {"b": 1, "kb": 1 << 10, "kib": 1 << 10, "mb": 1 << 20, "mib": 1 << 20,
             "gb": 1 << 30, "gib": 1 << 30, "tb": 1 << 40, "tib": 1 << 40}
_NUMBER = re.compile(r"([0-9][0-9_]*(?:\.[0-9][0-9_]*)?(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"'}

# Friendly names for lark's terminals in "expected ..." notes.
_TERMINAL_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "MONEY": "a money literal",
    "WHEN": "'on' or 'after'", "$END": "end of file",
}


class _ParseProblem(Exception):
    """Raised inside the Transformer for a bad literal or target; carries a diagnostic."""

    def __init__(self, pos: Pos, message: str, note: str | None = None) -> None:
        super().__init__(message)
        self.pos = pos
        self.message = message
        self.note = note


def _pos(item: Token | object) -> Pos:
    line = getattr(item, "line", None)
    col = getattr(item, "column", None)
    return Pos(line or 0, col or 0)


def decode_number(text: str, pos: Pos) -> ast.Literal:
    """Decode ``1_000``, ``2.5``, ``100ms``, ``64kb`` into a typed literal."""
    m = _NUMBER.fullmatch(text)
    if m is None:  # the grammar's regex and this one agree; kept as a guard
        raise _ParseProblem(pos, f"malformed number {text!r}")
    digits, suffix = m.group(1), m.group(2).lower()
    if digits.endswith("_") or "__" in digits or "_." in digits or "._" in digits:
        raise _ParseProblem(pos, f"malformed number {text!r}",
                            "underscores go between digits, e.g. 1_000_000")
    clean = digits.replace("_", "")
    is_float = "." in clean or "e" in clean.lower()
    if not suffix:
        return ast.Literal(pos, "float" if is_float else "int", float(clean) if is_float else int(clean))
    if suffix in NS_PER:
        value = Decimal(clean) * NS_PER[suffix]
        return ast.Literal(pos, "duration", int(value))
    if suffix in BYTES_PER:
        value = Decimal(clean) * BYTES_PER[suffix]
        if value != int(value):
            raise _ParseProblem(pos, f"size {text!r} is not a whole number of bytes")
        return ast.Literal(pos, "size", int(value))
    raise _ParseProblem(
        pos, f"unknown unit {suffix!r} in {text!r}",
        "durations take ns, us, ms, s, m, h; sizes take b, kb, mb, gb, tb",
    )


def decode_string(token: Token) -> str:
    """Decode the escapes of a string literal: \\n \\t \\r \\0 \\\\ \\" \\xHH \\u{H...}."""
    body = token[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        esc = body[i + 1]
        here = Pos(token.line or 0, (token.column or 0) + 1 + i)
        if esc in _ESCAPES:
            out.append(_ESCAPES[esc])
            i += 2
        elif esc == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", body[i + 2:i + 4]):
            out.append(chr(int(body[i + 2:i + 4], 16)))
            i += 4
        elif esc == "u" and (m := re.match(r"\{([0-9a-fA-F]{1,6})\}", body[i + 2:])):
            code = int(m.group(1), 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise _ParseProblem(here, f"\\u{{{m.group(1)}}} is not a Unicode scalar value")
            out.append(chr(code))
            i += 2 + len(m.group(0))
        else:
            raise _ParseProblem(here, f"unknown escape '\\{esc}'",
                                'expected one of \\n \\t \\r \\0 \\\\ \\" \\xHH \\u{HHHH}')
    return "".join(out)


@v_args(inline=True)
class _Builder(Transformer_NonRecursive):
    """Tree -> ast nodes, bottom up. Non-recursive (lark's iterative transformer),
    so a deeply nested expression cannot exhaust Python's stack here. A bad
    literal or assignment target is recorded in ``problems`` (all of them are
    reported) and replaced by a placeholder so the walk goes on."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[_ParseProblem] = []

    def _string(self, tok: Token) -> str:
        try:
            return decode_string(tok)
        except _ParseProblem as problem:
            self.problems.append(problem)
            return ""

    # ---- literals
    def number(self, tok: Token) -> ast.Literal:
        try:
            return decode_number(str(tok), _pos(tok))
        except _ParseProblem as problem:
            self.problems.append(problem)
            return ast.Literal(_pos(tok), "nil", None)

    def money(self, tok: Token) -> ast.Literal:
        text = str(tok)[1:].replace("_", "")
        try:
            Decimal(text)
        except InvalidOperation as exc:  # pragma: no cover - the regex admits only digits
            raise _ParseProblem(_pos(tok), f"malformed money literal {tok!s}") from exc
        return ast.Literal(_pos(tok), "money", text)

    def string(self, tok: Token) -> ast.Literal:
        return ast.Literal(_pos(tok), "str", self._string(tok))

    # true/false/nil have no token child, so their rules get the position via meta.
    @v_args(meta=True)
    def true_lit(self, meta, _children) -> ast.Literal:
        return ast.Literal(Pos(meta.line, meta.column), "bool", True)

    @v_args(meta=True)
    def false_lit(self, meta, _children) -> ast.Literal:
        return ast.Literal(Pos(meta.line, meta.column), "bool", False)

    @v_args(meta=True)
    def nil_lit(self, meta, _children) -> ast.Literal:
        return ast.Literal(Pos(meta.line, meta.column), "nil", None)

    # ---- expressions
    def name(self, tok: Token) -> ast.Name:
        return ast.Name(_pos(tok), str(tok))

    def qualified(self, mod: Token, name: Token) -> ast.Qualified:
        return ast.Qualified(_pos(mod), str(mod), str(name))

    def cmp_op(self, tok: Token) -> Token:
        return tok

    sum_op = mul_op = unary_op = cmp_op

    def binop(self, left, op: Token, right) -> ast.Binary:
        return ast.Binary(_pos(op), str(op), left, right)

    def unop(self, op: Token, operand) -> ast.Unary:
        return ast.Unary(_pos(op), str(op), operand)

    @v_args(meta=True)
    def or_expr(self, meta, children) -> ast.Logical:
        return ast.Logical(Pos(meta.line, meta.column), "||", children[0], children[1])

    @v_args(meta=True)
    def and_expr(self, meta, children) -> ast.Logical:
        return ast.Logical(Pos(meta.line, meta.column), "&&", children[0], children[1])

    def args(self, *items) -> tuple:
        return tuple(items)

    @v_args(meta=True)
    def call(self, meta, children) -> ast.Call:
        callee, args = children
        return ast.Call(Pos(meta.line, meta.column), callee, args or ())

    def method_call(self, obj, name: Token, args) -> ast.MethodCall:
        return ast.MethodCall(_pos(name), obj, str(name), args or ())

    def attr(self, obj, name: Token) -> ast.Attr:
        return ast.Attr(_pos(name), obj, str(name))

    @v_args(meta=True)
    def index(self, meta, children) -> ast.Index:
        return ast.Index(Pos(meta.line, meta.column), children[0], children[1])

    @v_args(meta=True)
    def list_lit(self, meta, children) -> ast.ListLit:
        items = tuple(c for c in children if c is not None)
        return ast.ListLit(Pos(meta.line, meta.column), items)

    def pair(self, key, value) -> tuple:
        return (key, value)

    @v_args(meta=True)
    def map_lit(self, meta, children) -> ast.MapLit:
        pairs = tuple(c for c in children if c is not None)
        return ast.MapLit(Pos(meta.line, meta.column), pairs)

    # ---- statements
    def block(self, *stmts) -> tuple:
        return tuple(stmts)

    @v_args(meta=True)
    def let_stmt(self, meta, children) -> ast.Let:
        name, value = children
        return ast.Let(Pos(meta.line, meta.column), str(name), value)

    @v_args(meta=True)
    def assign_stmt(self, meta, children) -> ast.Assign | ast.ExprStmt:
        target, value = children
        pos = Pos(meta.line, meta.column)
        if not isinstance(target, ast.Name | ast.Index | ast.Attr):
            self.problems.append(_ParseProblem(
                pos, "cannot assign to this expression",
                "expected a variable, an index (a[i]) or a field (a.b) before '='"))
            return ast.ExprStmt(pos, value)
        return ast.Assign(pos, target, value)

    @v_args(meta=True)
    def expr_stmt(self, meta, children) -> ast.ExprStmt:
        return ast.ExprStmt(Pos(meta.line, meta.column), children[0])

    @v_args(meta=True)
    def if_stmt(self, meta, children) -> ast.If:
        cond, then, orelse = children
        if orelse is None:
            orelse = ()
        elif isinstance(orelse, ast.If):
            orelse = (orelse,)
        return ast.If(Pos(meta.line, meta.column), cond, then, orelse)

    @v_args(meta=True)
    def while_stmt(self, meta, children) -> ast.While:
        return ast.While(Pos(meta.line, meta.column), children[0], children[1])

    @v_args(meta=True)
    def loop_stmt(self, meta, children) -> ast.Loop:
        return ast.Loop(Pos(meta.line, meta.column), children[0])

    @v_args(meta=True)
    def for_stmt(self, meta, children) -> ast.For:
        var, iterable, body = children
        return ast.For(Pos(meta.line, meta.column), str(var), iterable, body)

    @v_args(meta=True)
    def break_stmt(self, meta, _children) -> ast.Break:
        return ast.Break(Pos(meta.line, meta.column))

    @v_args(meta=True)
    def continue_stmt(self, meta, _children) -> ast.Continue:
        return ast.Continue(Pos(meta.line, meta.column))

    @v_args(meta=True)
    def return_stmt(self, meta, children) -> ast.Return:
        return ast.Return(Pos(meta.line, meta.column), children[0])

    @v_args(meta=True)
    def catch_clause(self, meta, children) -> ast.Catch:
        name, binding, body = children
        return ast.Catch(Pos(meta.line, meta.column), str(name),
                         None if binding is None else str(binding), body)

    @v_args(meta=True)
    def try_stmt(self, meta, children) -> ast.Try:
        return ast.Try(Pos(meta.line, meta.column), children[0], tuple(children[1:]))

    # ---- declarations
    def params(self, *names: Token) -> tuple:
        return tuple(str(n) for n in names)

    @v_args(meta=True)
    def fn_def(self, meta, children) -> ast.FnDef:
        name, params, body = children
        return ast.FnDef(Pos(meta.line, meta.column), str(name), params or (), body)

    def skey(self, tok: Token) -> Token:
        return tok

    def setting(self, key: Token, value) -> ast.Setting:
        return ast.Setting(_pos(key), str(key), value)

    @v_args(meta=True)
    def sblock(self, meta, children) -> ast.SettingBlock:
        return ast.SettingBlock(Pos(meta.line, meta.column), tuple(children))

    @v_args(meta=True)
    def slist(self, meta, children) -> ast.SettingList:
        return ast.SettingList(Pos(meta.line, meta.column), tuple(c for c in children if c is not None))

    def scap(self, mod: Token, name: Token, glob: Token | None = None) -> ast.SettingCap:
        return ast.SettingCap(_pos(mod), str(mod), str(name),
                              None if glob is None else self._string(glob))

    def sname(self, tok: Token) -> ast.SettingName:
        return ast.SettingName(_pos(tok), str(tok))

    def scall(self, name: Token, args) -> ast.SettingCall:
        return ast.SettingCall(_pos(name), str(name), args or ())

    @v_args(meta=True)
    def hook_def(self, meta, children) -> ast.HookDef:
        name, when, event, glob, *items = children
        settings = tuple(i for i in items if isinstance(i, ast.Setting))
        fns = tuple(i for i in items if isinstance(i, ast.FnDef))
        return ast.HookDef(Pos(meta.line, meta.column), str(name), str(when), str(event),
                           self._string(glob), settings, fns)

    def start(self, *items) -> list:
        return list(items)


def _grammar() -> str:
    return resources.files("vegafs.vm").joinpath("grammar.lark").read_text()


@cache
def _lark() -> Lark:
    return Lark(_grammar(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


# Labelled examples (in the manner of lark's match_examples): the most common
# mistakes get a sentence instead of a bare token list.
_MISSING_SEMI = "missing ';' after a statement"
_EXAMPLES: dict[str, list[str]] = {
    _MISSING_SEMI: [
        "let x = 1\nlet y = 2;", "x = 1\ny = 2;", "f()\ng();", "f(1)\ng();", "x.m()\ng();",
        "x.m(1)\ng();", "let x = a\ng();", "let x = a[1]\ng();", 'let x = "s"\ng();',
        "let x = (1)\ng();", "let x = [1]\ng();", "let x = {}\ng();", "let x = a.b\ng();",
        "let x = a::b()\ng();", "let x = a::b(1)\ng();", "let x = -a\ng();",
        "let x = 1 + 2\ng();", "let x = a == b\ng();", "let x = a && b\ng();",
        "return 1\n}", "return\n}", "break\n}", "continue\n}", "fn f() { return 1 }",
    ],
    "missing '{' to open a block": ["if x y = 1; }", "while x y = 1; }", "fn f() return 1; }"],
    "unclosed block: missing '}'": ["fn f() {", "if x {", "loop { x = 1;"],
    "missing ')'": ["f(1;", "f(1, 2;", "let x = (1 + 2;"],
    "missing expression": ["let x = ;", "x = ;", "return +;", "f(1,,2);", "let x = (1 + ;",
                           "let x = 1 * ;"],
}


def _expected_note(expected: set[str]) -> str | None:
    parser = _lark()
    words = []
    for name in sorted(expected):
        if name in _TERMINAL_WORDS:
            words.append(_TERMINAL_WORDS[name])
            continue
        try:
            pattern = parser.get_terminal(name).pattern
        except KeyError:
            words.append(name)
            continue
        words.append(f"'{pattern.value}'" if pattern.type == "str" else name.lower())
    if not words:
        return None
    words = sorted(set(words))
    if len(words) > 12:
        words = [*words[:12], "..."]
    return "expected " + ", ".join(words)


@cache
def _example_states() -> list[tuple[int, frozenset[str], str]]:
    """(top LALR state, accepted terminals, label) of every labelled example.

    Why not ``UnexpectedInput.match_examples``: it compares whole state stacks,
    and the stack grows with every statement before the error, so an example
    written as one statement never matches an error on line 40. The top state
    plus the set of acceptable tokens identifies the mistake just as well.
    """
    out = []
    for label, examples in _EXAMPLES.items():
        for text in examples:
            try:
                _lark().parse(text)
            except (UnexpectedToken, UnexpectedEOF) as ut:
                if ut.state is not None:
                    out.append((ut.state.state_stack[-1], frozenset(_accepts(ut)), label))
            except (UnexpectedInput, VisitError):
                continue
    return out


def _accepts(exc: UnexpectedInput) -> set[str]:
    if isinstance(exc, UnexpectedToken):
        return set(exc.accepts or exc.expected or ())
    return set(getattr(exc, "expected", None) or getattr(exc, "allowed", None) or ())


def _label(exc: UnexpectedInput) -> str | None:
    state = getattr(exc, "state", None)
    if state is None or not getattr(state, "state_stack", None):
        return None
    top, accepts = state.state_stack[-1], frozenset(_accepts(exc))
    # A bad character has no token to compare acceptable sets with: the state decides.
    by_state_only = isinstance(exc, UnexpectedCharacters)
    for ex_top, ex_accepts, label in _example_states():
        if ex_top == top and (by_state_only or ex_accepts == accepts):
            return label
    return None


def _after_previous_token(text: str, offset: int) -> Pos:
    """The position just after the last token before ``offset`` (skips blanks and
    ``//`` comments; a "//" inside a string on that line may fool it, harmlessly)."""
    i = offset
    while True:
        while i > 0 and text[i - 1].isspace():
            i -= 1
        line_start = text.rfind("\n", 0, i) + 1
        comment = text.find("//", line_start, i)
        if comment < 0:
            break
        i = comment
    line = text.count("\n", 0, i) + 1
    return Pos(line, i - (text.rfind("\n", 0, i) + 1) + 1)


def _syntax_diagnostic(exc: UnexpectedInput, text: str, filename: str) -> Diagnostic:
    label = _label(exc)
    if isinstance(exc, UnexpectedCharacters):
        at = exc.pos_in_stream  # lark types it Optional; always set for this error
        ch = text[at] if at is not None and at < len(text) else ""
        message = f"unexpected character {ch!r}"
        note = _expected_note(set(exc.allowed or ()))
        pos = Pos(exc.line, exc.column)
    elif isinstance(exc, UnexpectedEOF):
        message = "unexpected end of file"
        note = _expected_note(set(exc.expected or ()))
        lines = text.splitlines() or [""]
        pos = Pos(len(lines), len(lines[-1]) + 1)
    else:
        assert isinstance(exc, UnexpectedToken)
        tok = exc.token
        if tok.type == "$END":
            message = "unexpected end of file"
            lines = text.splitlines() or [""]
            pos = Pos(len(lines), len(lines[-1]) + 1)
        else:
            message = f"unexpected {str(tok)!r}"
            pos = Pos(exc.line, exc.column)
        note = _expected_note(set(exc.accepts or exc.expected or ()))
    if label == _MISSING_SEMI and isinstance(exc, UnexpectedToken) and exc.token.type != "$END":
        # Point where the ';' belongs (after the previous token), not at the next line.
        pos = _after_previous_token(text, exc.token.start_pos or 0)
        note = "expected ';' to end the statement"
    message = f"syntax error: {label} ({message})" if label else f"syntax error: {message}"
    return Diagnostic(filename, pos, message, note)


def too_deep(filename: str, text: str) -> VegaCompileError:
    """The one error for programs whose nesting exceeds what the compiler recurses
    through (thousands of levels; no real program is near it)."""
    return VegaCompileError(
        [Diagnostic(filename, Pos(1, 1), "program is nested too deeply to compile",
                    "split deeply nested expressions or blocks into smaller pieces")], text)


#: Stop collecting syntax errors after this many (the rest are usually echoes).
MAX_SYNTAX_ERRORS = 20


class _Recovery:
    """lark ``on_error`` callback: record a diagnostic, and go on where that is sound.

    A missing ';' is inserted (the statement is then complete and the token
    that revealed it is parsed again), so every forgotten ';' of a file is
    reported in one go. Any other syntax error stops the parse: skipping tokens
    inside a broken expression produces echo errors on the following lines,
    and a wrong error costs the user more than a missing one.
    """

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename
        self.diags: list[Diagnostic] = []
        self._lines: set[int] = set()

    def record(self, exc: UnexpectedInput) -> Diagnostic | None:
        diag = _syntax_diagnostic(exc, self.text, self.filename)
        if diag.pos.line in self._lines:
            return None
        self._lines.add(diag.pos.line)
        self.diags.append(diag)
        return diag

    def __call__(self, exc: UnexpectedInput) -> bool:
        diag = self.record(exc)
        if len(self.diags) >= MAX_SYNTAX_ERRORS:
            return False
        if diag is not None and _MISSING_SEMI in diag.message and isinstance(exc, UnexpectedToken):
            parser = exc.interactive_parser
            # The contextual lexer typed a keyword it did not expect as a NAME: give
            # it back its keyword type before feeding it again after the ';'.
            tok = exc.token
            retyped = Token.new_borrow_pos(_keywords().get(str(tok), tok.type), str(tok), tok)
            try:
                parser.feed_token(Token(_keywords()[";"], ";"))
                parser.feed_token(retyped)
            except UnexpectedInput:
                return False  # the insertion did not fit: report what we have
            return True
        return False


@cache
def _keywords() -> dict[str, str]:
    """Literal text -> terminal name for every fixed-string terminal (';', 'let'...)."""
    return {t.pattern.value: t.name for t in _lark().terminals if t.pattern.type == "str"}


def parse(text: str, filename: str = "<input>") -> ast.Module:
    """Parse a whole file into an ``ast.Module``; raise ``VegaCompileError`` with
    every syntax error found (see _Recovery) and every malformed literal."""
    recovery = _Recovery(text, filename)
    try:
        tree = _lark().parse(text, on_error=recovery)
    except UnexpectedInput as exc:  # recovery gave up (end of file, or too many errors)
        if not any(d.pos == _syntax_diagnostic(exc, text, filename).pos for d in recovery.diags):
            recovery.record(exc)
    except RecursionError:
        raise too_deep(filename, text) from None
    if recovery.diags:
        raise VegaCompileError(recovery.diags, text)
    builder = _Builder()
    try:
        items = builder.transform(tree)
    except VisitError as exc:
        if isinstance(exc.orig_exc, RecursionError):
            raise too_deep(filename, text) from None
        raise
    except RecursionError:
        raise too_deep(filename, text) from None
    if builder.problems:
        raise VegaCompileError(
            [Diagnostic(filename, p.pos, p.message, p.note) for p in builder.problems], text)
    module = ast.Module(filename)
    for item in items:
        if isinstance(item, ast.FnDef):
            module.fns.append(item)
        elif isinstance(item, ast.HookDef):
            module.hooks.append(item)
        else:
            module.body.append(item)
    return module

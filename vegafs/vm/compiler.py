"""AST + Resolution -> Program (bytecode). Pure code generation.

The checker has already resolved every name and rejected every error it can
see, so this module only lays out instructions. Its layout rules are what the
fast tier and the step accounting rely on (see bytecode.py):

- ``while c { b }``   ->  top: c; JUMP_IF_FALSE end; b; LOOP top; end:
- ``loop { b }``      ->  top: b; LOOP top; end:
- ``for x in e { b }``->  e; GET_ITER; top: FOR_ITER exit; STORE x; b; LOOP top;
                          brk: POP; exit:        (break jumps to brk, which drops the iterator)
- ``continue``        ->  LOOP top (a back-edge, so it costs a step like any iteration)
- ``a && b``          ->  a; DUP; JUMP_IF_FALSE end; POP; b; end:   (``||`` with JUMP_IF_TRUE)
- ``try { b } catch N(x) { h }`` -> TRY_BEGIN hnd; b; TRY_END; JUMP end;
                          hnd: MATCH_COND N; JUMP_IF_FALSE next; COND_PAYLOAD; STORE x; h;
                          JUMP end; next: ...; RERAISE; end:
- every function ends with ``NIL; RETURN`` (falling off the end returns nil).

Leaving a ``try`` body by break/continue emits one TRY_END per try left, so
handler stacks stay balanced without runtime bookkeeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vegafs.vm import ast
from vegafs.vm.bytecode import Function, Hook, Op, Program, source_hash, verify
from vegafs.vm.checker import FnInfo, Resolution
from vegafs.vm.diagnostics import Diagnostic, Pos

_BINARY = {"+": Op.ADD, "-": Op.SUB, "*": Op.MUL, "/": Op.DIV, "%": Op.MOD, "==": Op.EQ,
           "!=": Op.NE, "<": Op.LT, "<=": Op.LE, ">": Op.GT, ">=": Op.GE}
MAX_ARGS = 255


@dataclass
class _LoopCtx:
    top: int
    try_depth: int
    breaks: list[int] = field(default_factory=list)


class _Pool:
    """Constants and symbols shared by the whole program, deduplicated."""

    def __init__(self) -> None:
        self.constants: list[object] = []
        self._const_index: dict[tuple[str, object], int] = {}
        self.symbols: list[str] = []
        self._sym_index: dict[str, int] = {}

    def const(self, kind: str, value: object) -> int:
        key = (kind, value)
        index = self._const_index.get(key)
        if index is None:
            index = len(self.constants)
            self.constants.append(_make_const(kind, value))
            self._const_index[key] = index
        return index

    def symbol(self, name: str) -> int:
        index = self._sym_index.get(name)
        if index is None:
            index = len(self.symbols)
            self.symbols.append(name)
            self._sym_index[name] = index
        return index


def _make_const(kind: str, value: object) -> object:
    from vegafs.vm.values import Duration, Money

    if kind == "duration":
        return Duration(value)  # type: ignore[arg-type]  # a duration literal's value: int ns
    if kind == "money":
        return Money.parse(str(value))
    return value


class _FnCompiler:
    def __init__(self, info: FnInfo, res: Resolution, pool: _Pool, filename: str,
                 diags: list[Diagnostic]) -> None:
        self.info = info
        self.res = res
        self.pool = pool
        self.filename = filename
        self.diags = diags
        self.code: list[tuple[int, int]] = []
        self.positions: list[Pos] = []
        self.loops: list[_LoopCtx] = []
        self.try_depth = 0

    # ---------------------------------------------------------------- emit
    def emit(self, op: Op, arg: int, pos: Pos) -> int:
        self.code.append((int(op), arg))
        self.positions.append(pos)
        return len(self.code) - 1

    def patch(self, at: int, target: int | None = None) -> None:
        op, _ = self.code[at]
        self.code[at] = (op, len(self.code) if target is None else target)

    def compile(self) -> Function:
        for s in self.info.body:
            self.stmt(s)
        end = self.info.pos
        self.emit(Op.NIL, 0, end)
        self.emit(Op.RETURN, 0, end)
        return Function(self.info.name, len(self.info.params), list(self.info.local_names),
                        self.code, self.positions)

    # ---------------------------------------------------------------- statements
    def block(self, stmts: tuple[ast.Stmt, ...]) -> None:
        for s in stmts:
            self.stmt(s)

    def stmt(self, s: ast.Stmt) -> None:
        match s:
            case ast.Let(pos, _, value):
                self.expr(value)
                self.emit(Op.STORE_LOCAL, self.res.slots[id(s)], pos)
            case ast.Assign(pos, target, value):
                self.assign(pos, target, value)
            case ast.ExprStmt(pos, expr):
                self.expr(expr)
                self.emit(Op.POP, 0, pos)
            case ast.If(pos, cond, then, orelse):
                self.expr(cond)
                jf = self.emit(Op.JUMP_IF_FALSE, 0, pos)
                self.block(then)
                if orelse:
                    jend = self.emit(Op.JUMP, 0, pos)
                    self.patch(jf)
                    self.block(orelse)
                    self.patch(jend)
                else:
                    self.patch(jf)
            case ast.While(pos, cond, body):
                top = len(self.code)
                self.expr(cond)
                jf = self.emit(Op.JUMP_IF_FALSE, 0, pos)
                ctx = self.loop_body(top, body, pos)
                self.patch(jf)
                self.patch_all(ctx.breaks)
            case ast.Loop(pos, body):
                ctx = self.loop_body(len(self.code), body, pos)
                self.patch_all(ctx.breaks)
            case ast.For(pos, _, iterable, body):
                self.expr(iterable)
                self.emit(Op.GET_ITER, 0, iterable.pos)  # a bad iterable is reported there
                top = self.emit(Op.FOR_ITER, 0, pos)
                self.emit(Op.STORE_LOCAL, self.res.slots[id(s)], pos)
                ctx = self.loop_body(top, body, pos)
                if ctx.breaks:
                    self.patch_all(ctx.breaks)
                    self.emit(Op.POP, 0, pos)
                self.patch(top)
            case ast.Break(pos):
                ctx = self.loops[-1]
                self.leave_tries(ctx, pos)
                ctx.breaks.append(self.emit(Op.JUMP, 0, pos))
            case ast.Continue(pos):
                ctx = self.loops[-1]
                self.leave_tries(ctx, pos)
                self.emit(Op.LOOP, ctx.top, pos)
            case ast.Return(pos, value):
                if value is None:
                    self.emit(Op.NIL, 0, pos)
                else:
                    self.expr(value)
                self.emit(Op.RETURN, 0, pos)
            case ast.Try(pos, body, catches):
                self.try_stmt(pos, body, catches)

    def loop_body(self, top: int, body: tuple[ast.Stmt, ...], pos: Pos) -> _LoopCtx:
        ctx = _LoopCtx(top, self.try_depth)
        self.loops.append(ctx)
        self.block(body)
        self.emit(Op.LOOP, top, pos)
        self.loops.pop()
        return ctx

    def patch_all(self, jumps: list[int]) -> None:
        for j in jumps:
            self.patch(j)

    def leave_tries(self, ctx: _LoopCtx, pos: Pos) -> None:
        for _ in range(self.try_depth - ctx.try_depth):
            self.emit(Op.TRY_END, 0, pos)

    def try_stmt(self, pos: Pos, body: tuple[ast.Stmt, ...], catches: tuple[ast.Catch, ...]) -> None:
        begin = self.emit(Op.TRY_BEGIN, 0, pos)
        self.try_depth += 1
        self.block(body)
        self.try_depth -= 1
        self.emit(Op.TRY_END, 0, pos)
        ends = [self.emit(Op.JUMP, 0, pos)]
        self.patch(begin)
        for c in catches:
            self.emit(Op.MATCH_COND, self.pool.symbol(c.condition), c.pos)
            jnext = self.emit(Op.JUMP_IF_FALSE, 0, c.pos)
            if c.binding is None:
                self.emit(Op.POP, 0, c.pos)
            else:
                self.emit(Op.COND_PAYLOAD, 0, c.pos)
                self.emit(Op.STORE_LOCAL, self.res.slots[id(c)], c.pos)
            self.block(c.body)
            ends.append(self.emit(Op.JUMP, 0, c.pos))
            self.patch(jnext)
        self.emit(Op.RERAISE, 0, pos)
        for j in ends:
            self.patch(j)

    def assign(self, pos: Pos, target: ast.Expr, value: ast.Expr) -> None:
        if isinstance(target, ast.Name):
            self.expr(value)
            self.emit(Op.STORE_LOCAL, self.res.slots[id(target)], pos)
        elif isinstance(target, ast.Index):
            self.expr(target.obj)
            self.expr(target.index)
            self.expr(value)
            self.emit(Op.STORE_INDEX, 0, target.pos)
        else:
            assert isinstance(target, ast.Attr)
            self.expr(target.obj)
            self.expr(value)
            self.emit(Op.SET_ATTR, self.pool.symbol(target.name), target.pos)

    # ---------------------------------------------------------------- expressions
    def expr(self, e: ast.Expr) -> None:
        match e:
            case ast.Literal(pos, kind, value):
                if kind == "bool":
                    self.emit(Op.TRUE if value else Op.FALSE, 0, pos)
                elif kind == "nil":
                    self.emit(Op.NIL, 0, pos)
                else:
                    self.emit(Op.CONST, self.pool.const("int" if kind == "size" else kind, value),
                              pos)
            case ast.Name(pos, name):
                slot = self.res.slots.get(id(e))
                if slot is not None:
                    self.emit(Op.LOAD_LOCAL, slot, pos)
                else:
                    self.emit(Op.LOAD_NAME, self.pool.symbol(self.res.constants[id(e)]), pos)
            case ast.Call(pos, _, args):
                self.args(pos, args)
                kind, target = self.res.calls[id(e)]
                if kind == "fn":
                    self.emit(Op.CALL, (int(target) << 8) | len(args), pos)  # type: ignore[call-overload]  # "fn": target is an index
                else:
                    self.emit(Op.CALL_BUILTIN, (self.pool.symbol(str(target)) << 8) | len(args), pos)
            case ast.MethodCall(pos, obj, name, args):
                self.expr(obj)
                self.args(pos, args)
                self.emit(Op.CALL_METHOD, (self.pool.symbol(name) << 8) | len(args), pos)
            case ast.Attr(pos, obj, name):
                self.expr(obj)
                self.emit(Op.GET_ATTR, self.pool.symbol(name), pos)
            case ast.Index(pos, obj, index):
                self.expr(obj)
                self.expr(index)
                self.emit(Op.INDEX, 0, pos)
            case ast.Unary(pos, op, operand):
                self.expr(operand)
                self.emit(Op.NEG if op == "-" else Op.NOT, 0, pos)
            case ast.Binary(pos, op, left, right):
                self.expr(left)
                self.expr(right)
                self.emit(_BINARY[op], 0, pos)
            case ast.Logical(pos, op, left, right):
                self.expr(left)
                self.emit(Op.DUP, 0, pos)
                j = self.emit(Op.JUMP_IF_FALSE if op == "&&" else Op.JUMP_IF_TRUE, 0, pos)
                self.emit(Op.POP, 0, pos)
                self.expr(right)
                self.patch(j)
            case ast.ListLit(pos, items):
                for item in items:
                    self.expr(item)
                self.emit(Op.BUILD_LIST, self.count(pos, len(items)), pos)
            case ast.MapLit(pos, pairs):
                for k, v in pairs:
                    self.expr(k)
                    self.expr(v)
                self.emit(Op.BUILD_MAP, self.count(pos, len(pairs)), pos)

    def args(self, pos: Pos, args: tuple[ast.Expr, ...]) -> None:
        if len(args) > MAX_ARGS:
            self.diags.append(Diagnostic(self.filename, pos, f"too many arguments ({len(args)}); "
                                         f"at most {MAX_ARGS}"))
        for a in args:
            self.expr(a)

    def count(self, pos: Pos, n: int) -> int:
        if n > 0xFFFFFF:
            self.diags.append(Diagnostic(self.filename, pos, "literal has too many elements"))
            return 0
        return n


def compile_module(module: ast.Module, res: Resolution, source: str,
                   diags: list[Diagnostic]) -> Program:
    """Generate the Program; appends limit violations (too many args...) to ``diags``."""
    pool = _Pool()
    functions = [_FnCompiler(info, res, pool, module.filename, diags).compile()
                 for info in res.fns]
    hooks = [Hook(h.name, h.when, h.event, h.glob, h.settings, h.run_fn, h.pos.line)
             for h in res.hooks]
    program = Program(module.filename, source, source_hash(source), pool.constants, pool.symbols,
                      functions, res.main, hooks, res.capabilities)
    if not diags:
        verify(program)  # an error here is a compiler bug: let it surface loudly
    return program

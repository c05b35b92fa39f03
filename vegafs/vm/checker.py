"""Static checks and name resolution: everything the compiler may then take for granted.

The checker walks the AST once per function, resolves every name to a local
slot, a fn, a builtin, a module function or a host constant, and reports
*every* problem of the file (starlark's resolver habit), never just the first:

- undefined / misspelt names (with a suggestion), assignment to an undeclared
  variable, a fn used as a value, calling something that is not a named fn;
- arity of fns and builtins, unknown modules and module functions;
- ``break``/``continue`` outside a loop, unknown ``catch`` conditions;
- the slice-escape rules where they are visible: a slice-typed expression
  (from ``read``, ``h.read``, ``bytes::slice``, a ``for`` over
  ``bytes::lines``... or a variable that held one) stored into a list or map
  literal, pushed, index-assigned, or returned from a fn;
- hook declarations: known event, a ``run(ev)`` fn, valid settings (turned
  into plain data here), and the capabilities the hook's calls need.

The output, ``Resolution``, is what the compiler consumes: slots per binding
node, call targets per call node, and the hook table. The checker never
evaluates anything and never imports the runtime's values beyond names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

from vegafs.vm import ast
from vegafs.vm.diagnostics import Diagnostic, Pos

EVENTS = frozenset({"read", "write", "truncate", "close", "commit", "create", "mkdir", "unlink",
                    "rmdir", "rename"})
CONDITIONS = frozenset({"BudgetExceeded", "Timeout", "AgentFailed"})
#: Capabilities a host may grant a hook implicitly (reading the event's own
#: file and its metadata, and emitting trace events — observability, not
#: authority), so calls needing only these are not compile errors when
#: undeclared. Issue 4's line_count calls trace::event without declaring it.
IMPLICIT_HOOK_CAPS = frozenset({"fs::read", "meta::read", "trace::write"})
#: Calls whose result borrows memory (a slice), by qualified name; methods by name.
SLICE_CALLS = frozenset({"read", "bytes::slice", "bytes::trim"})
SLICE_METHODS = frozenset({"read"})
SLICE_ITERATORS = frozenset({"bytes::lines", "bytes::split"})
STORING_METHODS = frozenset({"push", "append", "insert"})
MAIN = "<main>"


@dataclass(frozen=True)
class Signature:
    """What the checker needs to know of a builtin: arity bounds and capability."""

    min_args: int
    max_args: int | None  # None: variadic
    capability: str | None = None


@dataclass(frozen=True)
class Environment:
    """The names a program may call besides its own fns.

    ``builtins``: plain calls (``len``, ``read``...); ``modules``: ``mod::fn``;
    ``constants``: host-provided read-only names (a hooks host adds ``EPERM``...).
    """

    builtins: Mapping[str, Signature] = field(default_factory=dict)
    modules: Mapping[str, Mapping[str, Signature]] = field(default_factory=dict)
    constants: frozenset[str] = frozenset()

    def extended(self, builtins: Mapping[str, Signature] | None = None,
                 constants: Iterable[str] = ()) -> Environment:
        return Environment({**self.builtins, **(builtins or {})}, self.modules,
                           self.constants | frozenset(constants))


@dataclass
class FnInfo:
    """A compiled unit: the main body, a top-level fn, or a fn inside a hook."""

    name: str  # qualified: "fib", "hookname.run", "<main>"
    params: tuple[str, ...]
    body: tuple[ast.Stmt, ...] | list[ast.Stmt]
    pos: Pos
    local_names: list[str] = field(default_factory=list)

    @property
    def nlocals(self) -> int:
        return len(self.local_names)


@dataclass
class HookInfo:
    name: str
    when: str
    event: str
    glob: str
    settings: dict[str, object]
    run_fn: int
    pos: Pos


@dataclass
class Resolution:
    fns: list[FnInfo]
    main: int | None
    hooks: list[HookInfo]
    slots: dict[int, int]  # id(node) -> local slot (Name, Let, For, Catch)
    calls: dict[int, tuple[str, object]]  # id(Call) -> ("fn", index) | ("builtin", name)
    constants: dict[int, str]  # id(Name) -> host constant name
    capabilities: list[str]


class _FnScope:
    """Block-structured scopes of one fn; slots are never reused (simple and safe)."""

    def __init__(self, info: FnInfo) -> None:
        self.info = info
        self.blocks: list[dict[str, int]] = [{}]
        self.borrowed: set[int] = set()  # slots that ever held a slice
        for p in info.params:
            self.declare(p)

    def declare(self, name: str) -> int:
        slot = len(self.info.local_names)
        self.info.local_names.append(name)
        self.blocks[-1][name] = slot
        return slot

    def lookup(self, name: str) -> int | None:
        for block in reversed(self.blocks):
            if name in block:
                return block[name]
        return None

    def visible(self) -> set[str]:
        return {n for b in self.blocks for n in b}


class Checker:
    def __init__(self, module: ast.Module, env: Environment) -> None:
        self.module = module
        self.env = env
        self.diags: list[Diagnostic] = []
        self.fns: list[FnInfo] = []
        self.slots: dict[int, int] = {}
        self.calls: dict[int, tuple[str, object]] = {}
        self.constants: dict[int, str] = {}
        self.top_fns: dict[str, int] = {}
        self.caps_used: set[str] = set()
        # Per-fn state, reset by _check_fn.
        self._scope = _FnScope(FnInfo(MAIN, (), (), Pos(1, 1)))
        self._local_fns: dict[str, int] = {}
        self._declared: set[str] | None = None
        self._loops = 0
        self._in_fn = False

    # ---------------------------------------------------------------- helpers
    def error(self, pos: Pos, message: str, note: str | None = None) -> None:
        self.diags.append(Diagnostic(self.module.filename, pos, message, note))

    def _suggest(self, name: str, candidates: Iterable[str]) -> str | None:
        close = difflib.get_close_matches(name, sorted(candidates), n=1)
        return f"did you mean '{close[0]}'?" if close else None

    def _add_fn(self, info: FnInfo) -> int:
        self.fns.append(info)
        return len(self.fns) - 1

    # ---------------------------------------------------------------- driver
    def run(self) -> Resolution:
        m = self.module
        main = None
        if m.body and m.hooks:
            self.error(m.body[0].pos, "a file that declares hooks cannot have top-level statements",
                       "move them into a fn, or into a hook's run(ev)")
        if not m.hooks:
            main = self._add_fn(FnInfo(MAIN, (), m.body, Pos(1, 1)))
        for fn in m.fns:
            if fn.name in self.top_fns:
                self.error(fn.pos, f"fn '{fn.name}' is already defined")
                continue
            self._check_fn_name(fn)
            self.top_fns[fn.name] = self._add_fn(FnInfo(fn.name, fn.params, fn.body, fn.pos))
        hooks: list[HookInfo] = []
        hook_names: set[str] = set()
        pending: list[tuple[int, dict[str, int], set[str] | None]] = []
        if main is not None:
            pending.append((main, {}, None))
        pending += [(i, {}, None) for i in self.top_fns.values()]
        for hook in m.hooks:
            if hook.name in hook_names:
                self.error(hook.pos, f"hook '{hook.name}' is already defined")
            hook_names.add(hook.name)
            info, local_fns, declared = self._hook(hook)
            if info is not None:
                hooks.append(info)
            pending += [(i, local_fns, declared) for i in local_fns.values()]
        for index, fn_locals, fn_declared in pending:
            self._check_fn(index, fn_locals, fn_declared)
        return Resolution(self.fns, main, hooks, self.slots, self.calls, self.constants,
                          sorted(self.caps_used))

    def _check_fn_name(self, fn: ast.FnDef) -> None:
        if fn.name in self.env.builtins:
            self.error(fn.pos, f"fn '{fn.name}' would shadow the builtin of the same name")
        if len(set(fn.params)) != len(fn.params):
            self.error(fn.pos, f"fn '{fn.name}' has a repeated parameter name")

    # ---------------------------------------------------------------- hooks
    def _hook(self, hook: ast.HookDef) -> tuple[HookInfo | None, dict[str, int], set[str]]:
        if hook.event not in EVENTS:
            self.error(hook.pos, f"unknown event '{hook.event}' in hook '{hook.name}'",
                       "expected one of " + ", ".join(sorted(EVENTS)))
        settings = _SettingsReader(self, hook).read()
        declared = set(cast(list[str], settings.get("capabilities", [])))  # what _caps stores
        declared_names = {":".join(c.split(":")[:3]) for c in declared}  # drop the glob
        local_fns: dict[str, int] = {}
        for fn in hook.fns:
            if fn.name in local_fns:
                self.error(fn.pos, f"fn '{fn.name}' is already defined in hook '{hook.name}'")
                continue
            self._check_fn_name(fn)
            local_fns[fn.name] = self._add_fn(
                FnInfo(f"{hook.name}.{fn.name}", fn.params, fn.body, fn.pos))
        run = local_fns.get("run")
        if run is None:
            self.error(hook.pos, f"hook '{hook.name}' has no fn run(ev)",
                       "every hook needs `fn run(ev) { ... return allow(); }`")
            return None, local_fns, declared_names
        if len(self.fns[run].params) != 1:
            self.error(self.fns[run].pos, f"fn run of hook '{hook.name}' must take one parameter (ev)")
        return (HookInfo(hook.name, hook.when, hook.event, hook.glob, settings, run, hook.pos),
                local_fns, declared_names)

    # ---------------------------------------------------------------- fns
    def _check_fn(self, index: int, local_fns: dict[str, int], declared: set[str] | None) -> None:
        info = self.fns[index]
        self._scope = _FnScope(info)
        self._local_fns = local_fns
        self._declared = declared
        self._loops = 0
        self._in_fn = info.name != MAIN
        self._block(info.body)

    def _block(self, stmts: Iterable[ast.Stmt]) -> None:
        self._scope.blocks.append({})
        for s in stmts:
            self._stmt(s)
        self._scope.blocks.pop()

    def _stmt(self, s: ast.Stmt) -> None:
        match s:
            case ast.Let(pos, name, value):
                self._expr(value)
                slot = self._scope.declare(name)
                self.slots[id(s)] = slot
                if self._borrowed(value):
                    self._scope.borrowed.add(slot)
            case ast.Assign(pos, target, value):
                self._expr(value)
                self._assign_target(s, target, value)
            case ast.ExprStmt(_, expr):
                self._expr(expr)
            case ast.If(_, cond, then, orelse):
                self._expr(cond)
                self._block(then)
                self._block(orelse)
            case ast.While(_, cond, body):
                self._expr(cond)
                self._loop_body(body)
            case ast.Loop(_, body):
                self._loop_body(body)
            case ast.For(pos, var, iterable, body):
                self._expr(iterable)
                self._scope.blocks.append({})
                slot = self._scope.declare(var)
                self.slots[id(s)] = slot
                if self._borrowed(iterable) or self._slice_iterator(iterable):
                    self._scope.borrowed.add(slot)
                self._loop_body(body)
                self._scope.blocks.pop()
            case ast.Break(pos) | ast.Continue(pos):
                if self._loops == 0:
                    word = "break" if isinstance(s, ast.Break) else "continue"
                    self.error(pos, f"'{word}' outside a loop")
            case ast.Return(pos, value):
                if value is not None:
                    self._expr(value)
                    if self._borrowed(value):
                        where = "from a fn" if self._in_fn else "from the script"
                        self.error(value.pos, f"a slice cannot be returned {where}: it borrows "
                                   "memory of its owner", "return text(s) to return a copy")
            case ast.Try(_, body, catches):
                self._block(body)
                for c in catches:
                    if c.condition not in CONDITIONS:
                        self.error(c.pos, f"unknown condition '{c.condition}' in catch",
                                   "only " + ", ".join(sorted(CONDITIONS))
                                   + " can be caught; traps cannot")
                    self._scope.blocks.append({})
                    if c.binding is not None:
                        self.slots[id(c)] = self._scope.declare(c.binding)
                    self._block(c.body)
                    self._scope.blocks.pop()

    def _loop_body(self, body: tuple[ast.Stmt, ...]) -> None:
        self._loops += 1
        self._block(body)
        self._loops -= 1

    def _assign_target(self, s: ast.Assign, target: ast.Expr, value: ast.Expr) -> None:
        if isinstance(target, ast.Name):
            slot = self._scope.lookup(target.id)
            if slot is None:
                note = self._suggest(target.id, self._scope.visible()) or \
                    f"declare it first: let {target.id} = ...;"
                self.error(target.pos, f"assignment to undeclared variable '{target.id}'", note)
                return
            self.slots[id(target)] = slot
            # Slice-typed = the latest assignment in program order is a slice, so
            # `s = text(s);` makes s storable again (the VM still checks at run time).
            if self._borrowed(value):
                self._scope.borrowed.add(slot)
            else:
                self._scope.borrowed.discard(slot)
        elif isinstance(target, ast.Index):
            self._expr(target.obj)
            self._expr(target.index)
            if self._borrowed(value):
                self.error(value.pos, "a slice cannot be stored in a list or map: it borrows "
                           "memory of its owner", "store text(s) instead")
        else:
            assert isinstance(target, ast.Attr)
            self._expr(target.obj)

    # ---------------------------------------------------------------- expressions
    def _expr(self, e: ast.Expr) -> None:
        match e:
            case ast.Literal():
                pass
            case ast.Name(pos, name):
                slot = self._scope.lookup(name)
                if slot is not None:
                    self.slots[id(e)] = slot
                elif name in self.env.constants:
                    self.constants[id(e)] = name
                elif name in self._local_fns or name in self.top_fns or name in self.env.builtins:
                    self.error(pos, f"fn '{name}' used as a value", f"call it: {name}(...)")
                else:
                    candidates = self._scope.visible() | set(self.env.constants)
                    self.error(pos, f"undefined name '{name}'", self._suggest(name, candidates))
            case ast.Qualified(pos, mod, name):
                self.error(pos, f"'{mod}::{name}' used as a value", f"call it: {mod}::{name}(...)")
            case ast.Call(pos, callee, args):
                for a in args:
                    self._expr(a)
                self._call(e, callee, args)
            case ast.MethodCall(pos, obj, name, args):
                self._expr(obj)
                for a in args:
                    self._expr(a)
                if name in STORING_METHODS:
                    for a in args:
                        if self._borrowed(a):
                            self.error(a.pos, "a slice cannot be stored in a list: it borrows "
                                       "memory of its owner", "push text(s) instead")
            case ast.Attr(_, obj, _):
                self._expr(obj)
            case ast.Index(_, obj, index):
                self._expr(obj)
                self._expr(index)
            case ast.Unary(_, _, operand):
                self._expr(operand)
            case ast.Binary(_, _, left, right) | ast.Logical(_, _, left, right):
                self._expr(left)
                self._expr(right)
            case ast.ListLit(_, items):
                for item in items:
                    self._expr(item)
                    if self._borrowed(item):
                        self.error(item.pos, "a slice cannot be stored in a list: it borrows "
                                   "memory of its owner", "store text(s) instead")
            case ast.MapLit(_, pairs):
                for k, v in pairs:
                    self._expr(k)
                    self._expr(v)
                    for part in (k, v):
                        if self._borrowed(part):
                            self.error(part.pos, "a slice cannot be stored in a map: it "
                                       "borrows memory of its owner", "store text(s) instead")

    def _call(self, call: ast.Call, callee: ast.Expr, args: tuple[ast.Expr, ...]) -> None:
        n = len(args)
        if isinstance(callee, ast.Qualified):
            qual = f"{callee.module}::{callee.name}"
            mod = self.env.modules.get(callee.module)
            if mod is None:
                self.error(callee.pos, f"unknown module '{callee.module}'",
                           self._suggest(callee.module, self.env.modules))
                return
            sig = mod.get(callee.name)
            if sig is None:
                self.error(callee.pos, f"module '{callee.module}' has no function '{callee.name}'",
                           self._suggest(callee.name, mod))
                return
            self._arity(call.pos, qual, sig.min_args, sig.max_args, n)
            self._capability(call.pos, qual, sig.capability)
            self.calls[id(call)] = ("builtin", qual)
            return
        if not isinstance(callee, ast.Name):
            self._expr(callee)
            self.error(call.pos, "only named fns and builtins can be called",
                       "Vega has no function values; call a fn by its name")
            return
        name = callee.id
        if self._scope.lookup(name) is not None:
            self.error(callee.pos, f"'{name}' is a variable, not a fn")
            return
        for table in (self._local_fns, self.top_fns):
            if name in table:
                info = self.fns[table[name]]
                self._arity(call.pos, name, len(info.params), len(info.params), n)
                self.calls[id(call)] = ("fn", table[name])
                return
        sig = self.env.builtins.get(name)
        if sig is None:
            names = set(self._local_fns) | set(self.top_fns) | set(self.env.builtins)
            self.error(callee.pos, f"undefined fn '{name}'", self._suggest(name, names))
            return
        self._arity(call.pos, name, sig.min_args, sig.max_args, n)
        self._capability(call.pos, name, sig.capability)
        self.calls[id(call)] = ("builtin", name)

    def _arity(self, pos: Pos, name: str, lo: int, hi: int | None, n: int) -> None:
        if n < lo or (hi is not None and n > hi):
            if hi == lo:
                want = f"{lo} argument{'s' if lo != 1 else ''}"
            elif hi is None:
                want = f"at least {lo} argument{'s' if lo != 1 else ''}"
            else:
                want = f"{lo} to {hi} arguments"
            self.error(pos, f"{name}() takes {want}, got {n}")

    def _capability(self, pos: Pos, name: str, cap: str | None) -> None:
        if cap is None:
            return
        self.caps_used.add(cap)
        declared = self._declared
        if declared is not None and cap not in declared and cap not in IMPLICIT_HOOK_CAPS:
            self.error(pos, f"{name}() needs capability {cap}, which this hook does not declare",
                       f"add it: capabilities [{', '.join(sorted(declared | {cap}))}]")

    # ---------------------------------------------------------------- slice typing
    def _borrowed(self, e: ast.Expr) -> bool:
        """Is `e` statically known to be a borrowed slice?"""
        match e:
            case ast.Name():
                slot = self.slots.get(id(e))
                return slot is not None and slot in self._scope.borrowed
            case ast.MethodCall(_, _, name, _):
                return name in SLICE_METHODS
            case ast.Call(_, ast.Name(_, name), _):
                return name in SLICE_CALLS and name not in self._local_fns \
                    and name not in self.top_fns
            case ast.Call(_, ast.Qualified(_, mod, name), _):
                return f"{mod}::{name}" in SLICE_CALLS
        return False

    def _slice_iterator(self, e: ast.Expr) -> bool:
        return (isinstance(e, ast.Call) and isinstance(e.callee, ast.Qualified)
                and f"{e.callee.module}::{e.callee.name}" in SLICE_ITERATORS)


class _SettingsReader:
    """Validates a hook's settings and turns them into plain (JSON-able) data."""

    def __init__(self, checker: Checker, hook: ast.HookDef) -> None:
        self.c = checker
        self.hook = hook

    def read(self) -> dict[str, object]:
        out: dict[str, object] = {}
        readers = {"budget": self._budget, "capabilities": self._caps, "failure": self._failure,
                   "retry": self._retry, "circuit_breaker": self._breaker,
                   "strategy": self._strategy}
        for s in self.hook.settings:
            reader = readers.get(s.key)
            if reader is None:
                self.c.error(s.pos, f"unknown hook setting '{s.key}'",
                             "expected one of " + ", ".join(sorted(readers)))
                continue
            if s.key in out:
                self.c.error(s.pos, f"setting '{s.key}' given twice")
                continue
            value = reader(s.value)
            if value is not None:
                out[s.key] = value
        return out

    def _block(self, value: ast.SettingValue, key: str,
               fields: dict[str, Callable[[ast.SettingValue], object]]) -> dict[str, object] | None:
        if not isinstance(value, ast.SettingBlock):
            self.c.error(value.pos, f"'{key}' takes a block {{ ... }}")
            return None
        out: dict[str, object] = {}
        for s in value.settings:
            read = fields.get(s.key)
            if read is None:
                self.c.error(s.pos, f"unknown field '{s.key}' in {key}",
                             "expected one of " + ", ".join(sorted(fields)))
                continue
            v = read(s.value)
            if v is not None:
                out[s.key] = v
        return out

    def _literal(self, value: ast.SettingValue | ast.Expr, kinds: tuple[str, ...], what: str) -> object:
        if isinstance(value, ast.Literal) and value.kind in kinds:
            if value.kind == "duration":
                return value.value / 1e9  # type: ignore[operator]  # a duration's value: int ns
            return value.value
        self.c.error(value.pos, f"expected {what}")
        return None

    def _count(self, value: ast.SettingValue) -> object:
        return self._literal(value, ("int",), "a whole number")

    def _duration(self, value: ast.SettingValue | ast.Expr) -> object:
        return self._literal(value, ("duration",), "a duration such as 50ms or 2s")

    def _size(self, value: ast.SettingValue) -> object:
        return self._literal(value, ("size", "int"), "a size such as 64kb or 1mb")

    def _budget(self, value: ast.SettingValue) -> object:
        return self._block(value, "budget", {"steps": self._count, "time": self._duration,
                                             "memory": self._size})

    def _caps(self, value: ast.SettingValue) -> object:
        if not isinstance(value, ast.SettingList):
            self.c.error(value.pos, "capabilities takes a list: [fs::read, meta::write]")
            return None
        caps: list[str] = []
        for item in value.items:
            if isinstance(item, ast.SettingCap):
                cap = f"{item.module}::{item.name}"
                caps.append(cap if item.glob is None else f"{cap}:{item.glob}")
            else:
                self.c.error(item.pos, "expected a capability such as fs::read or "
                             'fs::write("/out/**")')
        return caps

    def _failure(self, value: ast.SettingValue) -> object:
        if isinstance(value, ast.SettingName) and value.name in ("closed", "open"):
            return value.name
        self.c.error(value.pos, "failure takes closed or open")
        return None

    def _strategy(self, value: ast.SettingValue) -> object:
        """Supervision of an after-hook that keeps failing (seed 001)."""
        if isinstance(value, ast.SettingName) and value.name in ("restart", "stop", "escalate"):
            return value.name
        self.c.error(value.pos, "strategy takes restart, stop or escalate")
        return None

    def _retry(self, value: ast.SettingValue) -> object:
        return self._block(value, "retry", {"max_attempts": self._count,
                                            "backoff": self._backoff, "on": self._kinds})

    def _backoff(self, value: ast.SettingValue) -> object:
        if isinstance(value, ast.SettingCall) and value.name == "exponential" \
                and len(value.args) == 3:
            base, factor, cap = value.args
            parts = [self._duration(base), self._literal(factor, ("float", "int"), "a factor"),
                     self._duration(cap)]
            if None in parts:
                return None
            return {"kind": "exponential", "base_s": parts[0], "factor": float(parts[1]),  # type: ignore[arg-type]  # an int or float: checked above
                    "max_s": parts[2]}
        self.c.error(value.pos, "backoff takes exponential(base, factor, max), e.g. "
                     "exponential(10ms, 2.0, 1s)")
        return None

    def _kinds(self, value: ast.SettingValue) -> object:
        if isinstance(value, ast.SettingList) and all(
                isinstance(i, ast.SettingName) for i in value.items):
            return [i.name for i in value.items]  # type: ignore[union-attr]  # all() checked the kind
        self.c.error(value.pos, "on takes a list of failure kinds, e.g. [trap, timeout]")
        return None

    def _breaker(self, value: ast.SettingValue) -> object:
        return self._block(value, "circuit_breaker", {"threshold": self._count,
                                                      "reset_after": self._duration})


def check(module: ast.Module, env: Environment) -> tuple[Resolution, list[Diagnostic]]:
    """Resolve and check a parsed module; returns the resolution and every diagnostic."""
    checker = Checker(module, env)
    resolution = checker.run()
    return resolution, checker.diags

"""The reference interpreter: runs a verified Program one instruction at a time.

Why it exists beside a faster tier: it is the *definition* of what bytecode
means. It is written for clarity first (one dispatch loop, explicit frames on a
heap list, no Python recursion, so deep Vega recursion is a clean trap and
never a Python RecursionError), and the fast tier is tested against it.

Contracts it keeps:
- **Steps**: ``meter.step()`` once per LOOP executed and once per call
  (CALL, CALL_BUILTIN, CALL_METHOD), before the work. Nothing else.
- **Memory**: lists, maps and strings the VM itself builds are charged to the
  meter *before* they are made (``budget.estimate_size`` rules); big ints
  produced by arithmetic are charged by size.
- **Types**: conditions must be bool; arithmetic and comparison only between
  compatible kinds; bool is never an int. Violations trap ``type``.
- **Slices**: a borrowed slice is never stored into a list or map, nor returned
  from a fn (``values.check_storable``), whatever the checker saw.
- **Errors**: a ``Trap`` from anywhere becomes a ``TrapReport`` with the
  position of the instruction and the Vega call stack, the runtime is aborted
  (every slice invalidated); a named ``Condition`` unwinds to the innermost
  ``try`` handler; any other Python exception is wrapped as trap ``internal``
  so it never reaches a user.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vegafs.vm.bytecode import Function, Op, Program
from vegafs.vm.diagnostics import NOWHERE, Pos, StackFrame, TrapReport
from vegafs.vm.runtime import Runtime
from vegafs.vm.stdlib import BUILTINS, MODULES, Builtin, call_method, map_key
from vegafs.vm.values import (
    Condition,
    Duration,
    Money,
    Result,
    Slice,
    Trap,
    VegaIterable,
    VegaObject,
    check_storable,
    get_attr,
    is_borrowed,
    type_name,
    unwrap,
)

#: Deepest Vega call stack; deeper recursion traps "recursion".
MAX_DEPTH = 1000
#: Ints longer than this (bits) go through `_charge_int` when produced (charged
#: to the memory budget, and refused beyond MAX_INT_BITS).
BIG_INT_BITS = 4096
#: The largest int a program may make. Arbitrary precision, but bounded: one
#: multiplication or division of unbounded ints could run for minutes between
#: two budget checks, and every int must stay printable (CPython refuses to
#: convert ints over 4,300 digits to text; 8,192 bits are 2,467 digits).
MAX_INT_BITS = 8192
INT_TOO_LARGE = f"integer too large: a result needs more than {MAX_INT_BITS} bits"
#: |x| < _BIG  <=>  x.bit_length() <= BIG_INT_BITS: ints below need no charge.
_BIG = 1 << BIG_INT_BITS
_HALF = 1 << (BIG_INT_BITS // 2)
_DONE = object()

# Opcodes as plain ints: comparing ints is cheaper than IntEnum attribute lookups.
ADD = int(Op.ADD)
BUILD_LIST = int(Op.BUILD_LIST)
BUILD_MAP = int(Op.BUILD_MAP)
CALL = int(Op.CALL)
CALL_BUILTIN = int(Op.CALL_BUILTIN)
CALL_METHOD = int(Op.CALL_METHOD)
COND_PAYLOAD = int(Op.COND_PAYLOAD)
CONST = int(Op.CONST)
DIV = int(Op.DIV)
DUP = int(Op.DUP)
EQ = int(Op.EQ)
FALSE = int(Op.FALSE)
FOR_ITER = int(Op.FOR_ITER)
GE = int(Op.GE)
GET_ATTR = int(Op.GET_ATTR)
GET_ITER = int(Op.GET_ITER)
GT = int(Op.GT)
INDEX = int(Op.INDEX)
JUMP = int(Op.JUMP)
JUMP_IF_FALSE = int(Op.JUMP_IF_FALSE)
JUMP_IF_TRUE = int(Op.JUMP_IF_TRUE)
LE = int(Op.LE)
LOAD_LOCAL = int(Op.LOAD_LOCAL)
LOAD_NAME = int(Op.LOAD_NAME)
LOOP = int(Op.LOOP)
LT = int(Op.LT)
MATCH_COND = int(Op.MATCH_COND)
MOD = int(Op.MOD)
MUL = int(Op.MUL)
NE = int(Op.NE)
NEG = int(Op.NEG)
NIL = int(Op.NIL)
NOP = int(Op.NOP)
NOT = int(Op.NOT)
POP = int(Op.POP)
RERAISE = int(Op.RERAISE)
RETURN = int(Op.RETURN)
SET_ATTR = int(Op.SET_ATTR)
STORE_INDEX = int(Op.STORE_INDEX)
STORE_LOCAL = int(Op.STORE_LOCAL)
SUB = int(Op.SUB)
TRUE = int(Op.TRUE)
TRY_BEGIN = int(Op.TRY_BEGIN)
TRY_END = int(Op.TRY_END)


@dataclass
class RunOutcome:
    """What a run produced: its value (nil for scripts without return), the steps it
    used, and the trap that stopped it (None on success)."""

    value: Any
    steps: int
    trap: TrapReport | None
    memory_used: int = 0

    @property
    def ok(self) -> bool:
        return self.trap is None


class _Frame:
    __slots__ = ("fn", "locals", "stack", "pc", "handlers")

    def __init__(self, fn: Function, locals_: list[Any]) -> None:
        self.fn = fn
        self.locals = locals_
        self.stack: list[Any] = []
        self.pc = 0
        self.handlers: list[tuple[int, int]] = []  # (handler pc, stack depth)


def _link(program: Program, extra: Mapping[str, Builtin]) -> list[Builtin | None]:
    """Symbol index -> builtin (None where a symbol is not a builtin name)."""
    table: list[Builtin | None] = []
    for sym in program.symbols:
        mod, sep, name = sym.partition("::")
        if sep:
            table.append(MODULES.get(mod, {}).get(name))
        else:
            table.append(extra.get(sym) or BUILTINS.get(sym))
    return table


# ------------------------------------------------------------------ operators


def _num(v: Any) -> bool:
    t = type(v)
    return t is int or t is float


def _charge_int(rt: Runtime, value: int) -> int:
    """Charge a big int result, or trap if it is over MAX_INT_BITS."""
    bits = value.bit_length()
    if bits > MAX_INT_BITS:
        raise Trap("value", INT_TOO_LARGE)
    if bits > BIG_INT_BITS:
        rt.meter.charge_memory(bits // 8)
    return value


def _numeric(op: int, a: Any, b: Any, ta: type, tb: type) -> Any:
    """int/float arithmetic with Vega's rules (floor division of ints, /0 traps)."""
    if op == ADD:
        return a + b
    if op == SUB:
        return a - b
    if op == MUL:
        if ta is int and tb is int and a.bit_length() + b.bit_length() > MAX_INT_BITS + 1:
            raise Trap("value", INT_TOO_LARGE)  # refused before the work
        return a * b
    if b == 0:
        raise Trap("zero_division", "division by zero" if op == DIV else "modulo by zero")
    if op == DIV:
        return a // b if ta is int and tb is int else a / b
    return a % b


def _arith(rt: Runtime, op: int, a: Any, b: Any) -> Any:
    """The general path of ADD/SUB/MUL/DIV/MOD (the loop inlines int+int); shared
    with the fast tier, so its order of checks is tuned: str + str first."""
    ta, tb = type(a), type(b)
    if ta is Result or tb is Result:
        a = unwrap(a)
        b = unwrap(b)
        ta, tb = type(a), type(b)
    if ta is str and tb is str and op == ADD:
        rt.meter.charge_memory(49 + len(a) + len(b))
        return a + b
    if _num(a) and _num(b):
        try:
            r = _numeric(op, a, b, ta, tb)
        except OverflowError:  # a big int mixed with a float
            raise Trap("value", "number too large for a float") from None
        return _charge_int(rt, r) if type(r) is int else r
    if op == ADD:
        if ta is list and tb is list:
            rt.meter.charge_memory(56 + 8 * (len(a) + len(b)))
            return a + b
        if (ta is Duration and tb is Duration) or (ta is Money and tb is Money):
            return a + b
    elif op == SUB:
        if (ta is Duration and tb is Duration) or (ta is Money and tb is Money):
            return a - b
    elif op == MUL:
        if ta is str and tb is int or ta is int and tb is str:
            s, n = (a, b) if ta is str else (b, a)
            rt.meter.charge_memory(49 + len(s) * max(n, 0))
            return s * n
        if ta is Duration and _num(b) or _num(a) and tb is Duration:
            try:
                return a * b
            except (OverflowError, ValueError):  # inf/nan or a huge factor
                raise Trap("value", "duration out of range") from None
        if ta is Money and tb is int or ta is int and tb is Money:
            return a * b
    word = {ADD: "add", SUB: "subtract", MUL: "multiply", DIV: "divide",
            MOD: "take the modulo of"}[op]
    hint = "; convert a slice with text(s)" if Slice in (ta, tb) else ""
    raise Trap("type", f"cannot {word} {type_name(a)} and {type_name(b)}{hint}")


def _comparable(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    if _num(a) and _num(b):
        return True
    return ta is tb and ta in (str, Duration, Money)


_ORDER: dict[int, Callable[[Any, Any], bool]] = {
    LT: operator.lt, LE: operator.le, GT: operator.gt, GE: operator.ge}
_ORDER_WORD = {LT: "<", LE: "<=", GT: ">", GE: ">="}


def _order(op: int, a: Any, b: Any) -> bool:
    a = unwrap(a)
    b = unwrap(b)
    if not _comparable(a, b):
        raise Trap("type", f"cannot compare {type_name(a)} {_ORDER_WORD[op]} {type_name(b)}")
    return _ORDER[op](a, b)


def _as_bytes(v: Any) -> Any:
    if type(v) is Slice:
        return v.view()
    if type(v) is str:
        return v.encode("utf-8", "surrogateescape")
    return None


def values_equal(a: Any, b: Any) -> bool:
    """Vega ``==``: bool is not int; a slice equals a str or slice with the same bytes."""
    ta, tb = type(a), type(b)
    if ta is Slice or tb is Slice:
        x, y = _as_bytes(a), _as_bytes(b)
        return x is not None and y is not None and x == y
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if _num(a) and _num(b):
        return a == b
    if ta is not tb:
        return False
    if ta is list:
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    if ta is dict:
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, VegaObject):
        return a is b
    return bool(a == b)


def _key(k: Any) -> Any:
    """A map key, checked by the stdlib's rule (one rule for literals, m[k] and methods)."""
    return map_key(unwrap(k))


def _index(obj: Any, i: Any) -> Any:
    obj = unwrap(obj)
    t = type(obj)
    if t is dict:
        return obj.get(_key(i))
    if t is list or t is str or t is Slice:
        i = unwrap(i)
        if type(i) is not int:
            raise Trap("type", f"a {type_name(obj)} index must be an int, got {type_name(i)}")
        n = len(obj)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise Trap("index", f"index {i} out of range for a {type_name(obj)} of length {n}")
        if t is Slice:
            return obj.view()[j]
        return obj[j]
    raise Trap("type", f"cannot index a {type_name(obj)}")


def _store_index(rt: Runtime, obj: Any, i: Any, v: Any) -> None:
    obj = unwrap(obj)
    t = type(obj)
    if t is dict:
        check_storable(v, "a map")
        k = _key(i)
        if k not in obj:
            rt.meter.charge_memory(32)
        obj[k] = v
        return
    if t is list:
        check_storable(v, "a list")
        i = unwrap(i)
        if type(i) is not int:
            raise Trap("type", f"a list index must be an int, got {type_name(i)}")
        n = len(obj)
        j = i + n if i < 0 else i
        if not 0 <= j < n:
            raise Trap("index", f"index {i} out of range for a list of length {n}")
        obj[j] = v
        return
    raise Trap("type", f"cannot assign into a {type_name(obj)}")


def _iterate(v: Any) -> Any:
    v = unwrap(v)
    t = type(v)
    if t is list or t is range or t is str:
        return iter(v)
    if t is dict:
        return iter(list(v))  # a snapshot of the keys: the body may change the map
    if isinstance(v, VegaIterable):
        return iter(v)
    raise Trap("type", f"cannot iterate over a {type_name(v)}")


def _truth(v: Any, what: str) -> bool:
    if type(v) is bool:
        return v
    raise Trap("type", f"{what} must be a bool, got {type_name(v)}")


# ------------------------------------------------------------------ the loop


class Interpreter:
    """Runs functions of one Program against one Runtime."""

    def __init__(self, program: Program, rt: Runtime, *,
                 builtins: Mapping[str, Builtin] | None = None,
                 constants: Mapping[str, Any] | None = None,
                 check_depths: bool = False) -> None:
        self.program = program
        self.rt = rt
        self.linked = _link(program, builtins or {})
        self.constants = constants or {}
        self.check_depths = check_depths
        self.depth_log: dict[tuple[str, int], int] = {}

    def call(self, fn_index: int, args: list[Any]) -> Any:
        """Run function ``fn_index`` with ``args``; raises Trap (with .position/.stack)."""
        fn = self.program.functions[fn_index]
        if len(args) != fn.nparams:
            raise Trap("arity", f"{fn.name}() takes {fn.nparams} arguments, got {len(args)}")
        frame = _Frame(fn, list(args) + [None] * (fn.nlocals - fn.nparams))
        frames = [frame]
        while True:
            try:
                return self._dispatch(frames)
            except Condition as cond:
                # Position the would-be trap before unwinding pops the frames.
                uncaught = self._positioned(
                    Trap("value", f"condition {cond.name} was not caught"), frames)
                if not self._unwind(frames, cond):
                    raise uncaught from None
            except Trap as trap:
                raise self._positioned(trap, frames) from None
            except (RecursionError, MemoryError) as exc:
                raise self._positioned(Trap("internal", f"host limit: {type(exc).__name__}"),
                                       frames) from None
            except Exception as exc:  # noqa: BLE001 - the one place Python errors are contained
                raise self._positioned(
                    Trap("internal", f"{type(exc).__name__}: {exc}"), frames) from None

    def _unwind(self, frames: list[_Frame], cond: Condition) -> bool:
        while frames:
            f = frames[-1]
            if f.handlers:
                target, depth = f.handlers.pop()
                del f.stack[depth:]
                f.stack.append(cond)
                f.pc = target
                return True
            frames.pop()
        return False

    def _positioned(self, trap: Trap, frames: list[_Frame]) -> Trap:
        stack = []
        for f in frames:
            pc = max(f.pc - 1, 0)
            pos = f.fn.positions[pc] if f.fn.positions else NOWHERE
            stack.append(StackFrame(f.fn.name, self.program.filename, pos))
        trap.stack = stack
        trap.position = stack[-1].pos if stack else NOWHERE
        return trap

    def _dispatch(self, frames: list[_Frame]) -> Any:  # noqa: C901 - one dispatch loop by design
        rt = self.rt
        meter = rt.meter
        step = meter.step
        charge = meter.charge_memory
        program = self.program
        consts = program.constants
        symbols = program.symbols
        functions = program.functions
        linked = self.linked
        check = self.check_depths

        frame = frames[-1]
        fn = frame.fn
        code = fn.code
        stack = frame.stack
        push = stack.append
        pop = stack.pop
        locs = frame.locals
        pc = frame.pc
        # frame.pc is stored only when control leaves the frame (a call) or when an
        # exception escapes (the except below): a try block is free in CPython 3.11,
        # a store per instruction is not.
        try:
            while True:
                op, arg = code[pc]
                if check:
                    self.depth_log[(fn.name, pc)] = len(stack)
                pc += 1
                if op == LOAD_LOCAL:
                    push(locs[arg])
                elif op == STORE_LOCAL:
                    locs[arg] = pop()
                elif op == CONST:
                    push(consts[arg])
                elif op == ADD:
                    b = pop()
                    a = stack[-1]
                    if type(a) is int and type(b) is int:
                        r = a + b
                        stack[-1] = r if r.bit_length() <= BIG_INT_BITS else _charge_int(rt, r)
                    else:
                        stack[-1] = _arith(rt, op, a, b)
                elif op == SUB:
                    b = pop()
                    a = stack[-1]
                    if type(a) is int and type(b) is int:
                        r = a - b
                        stack[-1] = r if r.bit_length() <= BIG_INT_BITS else _charge_int(rt, r)
                    else:
                        stack[-1] = _arith(rt, op, a, b)
                elif op == LT:
                    b = pop()
                    a = stack[-1]
                    stack[-1] = a < b if type(a) is int and type(b) is int else _order(op, a, b)
                elif op == JUMP_IF_FALSE:
                    v = pop()
                    if v is False:
                        pc = arg
                    elif v is not True:
                        _truth(v, "a condition")
                elif op == LOOP:
                    step()
                    pc = arg
                elif op == JUMP:
                    pc = arg
                elif op == CALL:
                    step()
                    callee = functions[arg >> 8]
                    n = arg & 0xFF
                    if len(frames) >= MAX_DEPTH:
                        raise Trap("recursion", f"call depth exceeded {MAX_DEPTH} frames "
                                   f"(calling {callee.name}; infinite recursion?)")
                    if n:
                        new_locals = stack[-n:]
                        del stack[-n:]
                    else:
                        new_locals = []
                    if callee.nlocals > n:
                        new_locals.extend([None] * (callee.nlocals - n))
                    frame.pc = pc
                    frame = _Frame(callee, new_locals)
                    frames.append(frame)
                    fn = callee
                    code = fn.code
                    stack = frame.stack
                    push = stack.append
                    pop = stack.pop
                    locs = new_locals
                    pc = 0
                elif op == RETURN:
                    v = pop()
                    if len(frames) == 1:
                        if is_borrowed(v):
                            check_storable(v, "the run's result")
                        return v
                    if is_borrowed(v):
                        check_storable(v, "a return value")
                    frames.pop()
                    frame = frames[-1]
                    fn = frame.fn
                    code = fn.code
                    stack = frame.stack
                    push = stack.append
                    pop = stack.pop
                    locs = frame.locals
                    pc = frame.pc
                    push(v)
                elif op == CALL_BUILTIN:
                    step()
                    n = arg & 0xFF
                    if n:
                        call_args = stack[-n:]
                        del stack[-n:]
                    else:
                        call_args = []
                    b = linked[arg >> 8]
                    if b is None:
                        raise Trap("name", f"no builtin named '{symbols[arg >> 8]}' in this host")
                    push(b.call(rt, call_args))
                elif op == CALL_METHOD:
                    step()
                    n = arg & 0xFF
                    if n:
                        call_args = stack[-n:]
                        del stack[-n:]
                    else:
                        call_args = []
                    obj = pop()
                    name = symbols[arg >> 8]
                    if name in ("push", "append", "insert"):
                        for a in call_args:
                            check_storable(a, "a list")
                    push(call_method(rt, obj, name, call_args))
                elif op == POP:
                    pop()
                elif op == NIL:
                    push(None)
                elif op == TRUE:
                    push(True)
                elif op == FALSE:
                    push(False)
                elif op == DUP:
                    push(stack[-1])
                elif op == MUL:
                    b = pop()
                    a = stack[-1]
                    if type(a) is int and type(b) is int and -_HALF < a < _HALF \
                            and -_HALF < b < _HALF:  # the product needs no charge
                        stack[-1] = a * b
                    else:
                        stack[-1] = _arith(rt, op, a, b)
                elif op in (DIV, MOD):
                    b = pop()
                    a = stack[-1]
                    if type(a) is int and type(b) is int and b and -_BIG < a < _BIG:
                        stack[-1] = a // b if op == DIV else a % b
                    else:
                        stack[-1] = _arith(rt, op, a, b)
                elif op == EQ:
                    b = pop()
                    a = stack[-1]
                    t = type(a)
                    if t is type(b) and (t is int or t is str):
                        stack[-1] = a == b
                    else:
                        stack[-1] = values_equal(unwrap_eq(a), unwrap_eq(b))
                elif op == NE:
                    b = pop()
                    a = stack[-1]
                    t = type(a)
                    if t is type(b) and (t is int or t is str):
                        stack[-1] = a != b
                    else:
                        stack[-1] = not values_equal(unwrap_eq(a), unwrap_eq(b))
                elif op in (LE, GT, GE):
                    b = pop()
                    a = stack[-1]
                    if type(a) is int and type(b) is int:
                        stack[-1] = a <= b if op == LE else (a > b if op == GT else a >= b)
                    else:
                        stack[-1] = _order(op, a, b)
                elif op == NEG:
                    v = unwrap(stack[-1])
                    if not _num(v):
                        raise Trap("type", f"cannot negate a {type_name(v)}")
                    stack[-1] = -v
                elif op == NOT:
                    stack[-1] = not _truth(stack[-1], "the operand of !")
                elif op == JUMP_IF_TRUE:
                    v = pop()
                    if v is True:
                        pc = arg
                    elif v is not False:
                        _truth(v, "a condition")
                elif op == GET_ITER:
                    stack[-1] = _iterate(stack[-1])
                elif op == FOR_ITER:
                    v = next(stack[-1], _DONE)
                    if v is _DONE:
                        pop()
                        pc = arg
                    else:
                        push(v)
                elif op == BUILD_LIST:
                    charge(56 + 8 * arg)
                    items = stack[len(stack) - arg:] if arg else []
                    del stack[len(stack) - arg:]
                    for item in items:
                        check_storable(item, "a list")
                    push(items)
                elif op == BUILD_MAP:
                    charge(64 + 32 * arg)
                    flat = stack[len(stack) - 2 * arg:] if arg else []
                    del stack[len(stack) - 2 * arg:]
                    m: dict[Any, Any] = {}
                    for i in range(0, len(flat), 2):
                        check_storable(flat[i + 1], "a map")
                        m[_key(flat[i])] = flat[i + 1]
                    push(m)
                elif op == INDEX:
                    i = pop()
                    stack[-1] = _index(stack[-1], i)
                elif op == STORE_INDEX:
                    v = pop()
                    i = pop()
                    _store_index(rt, pop(), i, v)
                elif op == GET_ATTR:
                    stack[-1] = get_attr(stack[-1], symbols[arg])
                elif op == SET_ATTR:
                    v = pop()
                    obj = pop()
                    setter = getattr(type(obj), "set_attr", None) if isinstance(obj, VegaObject) \
                        else None
                    if setter is None:
                        raise Trap("type", f"cannot set attribute '{symbols[arg]}' of a "
                                   f"{type_name(obj)}")
                    check_storable(v, "an attribute")
                    setter(obj, symbols[arg], v)
                elif op == LOAD_NAME:
                    name = symbols[arg]
                    if name not in self.constants:
                        raise Trap("name", f"no constant named '{name}' in this host")
                    push(self.constants[name])
                elif op == TRY_BEGIN:
                    frame.handlers.append((arg, len(stack)))
                elif op == TRY_END:
                    frame.handlers.pop()
                elif op == MATCH_COND:
                    push(stack[-1].name == symbols[arg])
                elif op == COND_PAYLOAD:
                    stack[-1] = stack[-1].payload
                elif op == RERAISE:
                    raise pop()
                elif op == NOP:
                    pass
                else:  # verify() makes this unreachable; kept so a bug is a trap, not UB
                    raise Trap("internal", f"unknown opcode 0x{op:02x}")

        except BaseException:
            frame.pc = pc
            raise

def unwrap_eq(v: Any) -> Any:
    """``==`` sees through a successful Result, but a failed one compares as itself
    (so ``r == nil`` on a failure is false rather than a trap)."""
    if type(v) is Result and v.success:
        return v.value
    return v


def trap_report(trap: Trap, program: Program) -> TrapReport:
    """A positioned Trap -> the user-facing report."""
    stack = tuple(trap.stack or ())
    pos = trap.position if isinstance(trap.position, Pos) else NOWHERE
    return TrapReport(trap.kind, trap.message, program.filename, pos, stack, program.source)


def run_function(program: Program, rt: Runtime, fn_index: int, args: list[Any], *,
                 builtins: Mapping[str, Builtin] | None = None,
                 constants: Mapping[str, Any] | None = None,
                 finish: bool = True) -> RunOutcome:
    """Run one function to completion and report; never raises for a bad program.

    On a trap the runtime is aborted (every slice invalidated, handlers closed);
    on success it is finished if ``finish`` (hosts that run several functions on
    one Runtime pass False and finish it themselves).
    """
    interp = Interpreter(program, rt, builtins=builtins, constants=constants)
    try:
        value = interp.call(fn_index, args)
    except Trap as trap:
        rt.abort(f"the run trapped: {trap.kind}")
        return RunOutcome(None, rt.meter.steps_used, trap_report(trap, program),
                          rt.meter.memory_used)
    if finish:
        rt.finish()
    return RunOutcome(value, rt.meter.steps_used, None, rt.meter.memory_used)

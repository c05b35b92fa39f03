"""The fast tier: verified bytecode lowered to Python code objects.

NOTE FOR H5 (owner of ``vegafs/vm/__init__.py``), from H6 — the entry points:

    fast = compile_fast(program)        # FastProgram, or None if the tier declines
    outcome = run_fast(program, rt, fn_index, args, builtins=..., constants=...,
                       finish=True)     # same contract and RunOutcome as
                                        # interp.run_function (falls back to it when
                                        # compile_fast declines)

``run_program(..., tier="fast")`` can call ``run_fast(program, rt, program.main, [])``.
The differential tests (tests/vm_runtime/test_differential.py) compare the two tiers.

How it works. The compiler's layout is structured (bytecode.py): forward jumps
only, and LOOP as the one back-edge. So each function's code is *re-structured*
into Python: a LOOP region ``[top, LOOP]`` becomes ``while True:`` (``for x in
it:`` when a FOR_ITER heads it), the LOOP itself ``continue``, a jump to just after the region ``break``, a forward
conditional jump an ``if`` (with an ``else`` when the branch ends in a forward
JUMP past the join). The operand stack disappears: the verifier fixes the
stack depth at every pc, so stack slot *k* is the Python local ``s<k>``, and
loads of locals and constants stay symbolic until used (``l3 + 1`` instead of
push/push/add). Each Vega function becomes a nested Python function, built per
run by a factory whose closure cells are the runtime, its meter and the step
countdown; helpers and the program's linked builtins are globals of the
generated module, bound once per program.

Speed comes from knowing types: locals that every store gives an int, an
all-int variant of each fn (int arguments call it directly), return kinds and
the element kind of fresh lists, all by optimistic fixpoints; where an
operand's type is known the type test disappears, and where it is not the fast
path is guarded. And from leaving out int size checks (BIG_INT_BITS) that
provably cannot fire: by depth-relative bounds in the int variants (PARAM_BITS)
and, in bounded innermost loops, for as many iterations as `_rebound` proves.

What it keeps identical to the reference interpreter (interp.py), which stays
the definition of the semantics: the same operator helpers are called
whenever an operand is not a plain int (or str for ``==``), so types, traps and
memory charges match; a step is charged at each LOOP and each call, *before*
it, exactly like ``Meter.step()`` (its countdown lives in the factory cell
``_t`` — a decrement and a compare with 0 — and is handed to the meter around
every call out of generated code, and at the end of the run; innermost loops
without Vega fn calls count in a plain local); call depth is limited to
``interp.MAX_DEPTH``; the
trap position and Vega call stack are recovered after the fact from the Python
traceback (every generated line maps to a pc), so the hot path carries no
position bookkeeping. Step counts and memory charges are therefore *exact*, not
approximate (docs/bytecode.md, "The fast tier and its (zero) slack").

What it declines (compile_fast returns None and run_fast uses the interpreter):
functions with ``try``/``catch`` (conditions), and any control flow that does
not match the structured shapes above — it never guesses.
"""

from __future__ import annotations

import itertools
import math
import sys
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from vegafs.vm.bytecode import Function, Op, Program, verify
from vegafs.vm.diagnostics import Pos, StackFrame
from vegafs.vm.interp import (
    BIG_INT_BITS,
    MAX_DEPTH,
    RunOutcome,
    _arith,
    _charge_int,
    _index,
    _iterate,
    _key,
    _link,
    _order,
    _store_index,
    _truth,
    run_function,
    trap_report,
    unwrap_eq,
    values_equal,
)
from vegafs.vm.runtime import Runtime
from vegafs.vm.stdlib import BUILTINS, METHODS, MODULES, Builtin, call_method
from vegafs.vm.values import (
    Condition,
    Result,
    Slice,
    Trap,
    VegaObject,
    check_storable,
    get_attr,
    is_borrowed,
    type_name,
    unwrap,
)

#: The filename of generated code (tracebacks are mapped back to pcs by it).
GEN_FILENAME = "<vega-fast>"
#: Operands below this magnitude cannot make a product above the big-int threshold.
_HALF = 1 << (BIG_INT_BITS // 2)
_NHALF = -_HALF
#: The "_i" variant of a fn takes int arguments of at most PARAM_BITS + d bits, d
#: being its call depth (_d, 1..MAX_DEPTH), and may promise results of at most
#: RET_BITS - d + r bits for a static r (a deeper frame may return more: fib's sum
#: of two results one frame down). An int computed from those and constants by +,
#: -, negation, // and %, or * by a constant, has at most
#: max(PARAM_BITS + d + o, RET_BITS - d + r) bits for an (o, r) known when
#: generating (`_Entry.bits`; -inf where a part is absent). With o, r <= BITS_SLACK
#: it cannot pass BIG_INT_BITS, so its size check is left out (it could never
#: fire); an argument with o <= 1 and no r meets the callee's bound (its d is one
#: more) without a test; a result with a return part r, returned, needs the fn's
#: promise r_f >= r, and one with a parameter part o needs r_f >= o (at d <=
#: MAX_DEPTH, PARAM_BITS + d + o <= RET_BITS - d + o). So `fib(n - 1) + fib(n - 2)`
#: carries no size check at all; the generic entry tests the parameter bound.
PARAM_BITS = BIG_INT_BITS - 2 * MAX_DEPTH - 64
RET_BITS = PARAM_BITS + 2 * MAX_DEPTH
BITS_SLACK = 64
_NO = float("-inf")  # an absent part of a bound
_PB = 1 << PARAM_BITS
_NPB = -_PB
_DONE = object()
#: Placeholder for "the result slot" in instruction templates (never in a repr()).
_SLOT = "\0"

_OPS = {op.name: int(op) for op in Op}
_ARITH_SYM = {_OPS["ADD"]: "+", _OPS["SUB"]: "-", _OPS["MUL"]: "*", _OPS["DIV"]: "//",
              _OPS["MOD"]: "%"}
_CMP_SYM = {_OPS["LT"]: "<", _OPS["LE"]: "<=", _OPS["GT"]: ">", _OPS["GE"]: ">="}
_DECLINED = {_OPS[n] for n in ("TRY_BEGIN", "TRY_END", "MATCH_COND", "COND_PAYLOAD", "RERAISE")}


class _Unstructured(Exception):
    """The code does not have a shape this tier lowers; the interpreter runs it."""


class _Unbounded(Exception):
    """A batched loop multiplies two ints of unknown size: their growth per iteration
    has no static bound, so the loop is generated again with every size check."""

#: Placeholders in a bounded loop's lines, filled in once its body is generated.
_GROWTH = "\1"
_SIZES = "\2"


@dataclass(frozen=True)
class _Entry:
    """A symbolic stack entry: a side-effect-free Python expression and what is known
    of its type ("int", "bool", "str", "float", "list", "map", "v" for any value
    that is never borrowed, i.e. not a Slice or Result, such as what `_arith`
    returns, or "" for unknown)."""

    expr: str
    kind: str = ""
    const: int | None = None  # the value, for small int constants
    pc: int = -1  # a fused comparison: the pc its evaluation (and any trap) belongs to
    #: A bound (o, r) on an int's size relative to the call depth: it has at most
    #: max(PARAM_BITS + _d + o, RET_BITS - _d + r) bits (see PARAM_BITS); None
    #: when nothing is known.
    bits: tuple[float, float] | None = None
    #: The kind of every element: of a fresh list (a builtin's result that nothing
    #: else can reach yet, e.g. text::split's strs) and of an iterator over one.
    elem: str = ""


@dataclass
class _Loop:
    top: int
    last: int  # pc of the last LOOP of the region
    exits: frozenset[int]  # pcs a jump may target to leave the loop ("break")
    counter: str = ""  # a local step counter (innermost loops without calls), or ""
    # A bounded loop (see `_rebound`): its int ops test the flag `_c` before a size check.
    bounded: bool = False
    growth: int = 0  # bits an iteration can add to the largest int (sum over its int ops)
    floor: int = 0  # bits of the largest int constant the body uses
    ints: set[int] = field(default_factory=set)  # int-kind locals the body reads


class _FnGen:
    """Generates the Python source of one Vega function."""

    def __init__(self, index: int, fn: Function, program: Program, lines: list[tuple[int, int]],
                 names: _Names, local_kinds: dict[int, str], variant: str = "",
                 ret_kinds: dict[str, str] | None = None,
                 ret_bits: dict[str, float] | None = None) -> None:
        self.index = index
        self.fn = fn
        self.program = program
        self.code = [(int(op), int(arg)) for op, arg in fn.code]
        self.depths = fn.depths
        self.out = lines  # (fn index, pc) for each generated line, shared by the module
        self.src: list[str] = []
        self.names = names
        self.local_kinds = local_kinds  # slot -> kind every store to it is known to have
        # in the "_i" variant, parameters never assigned keep the entry bound (PARAM_BITS)
        stored = {arg for op, arg in fn.code if op == Op.STORE_LOCAL}
        self.local_bits = {i: (0.0, _NO) for i in range(fn.nparams)
                           if variant and i not in stored}
        self.stores: dict[int, set[str]] = {}  # slot -> kinds stored (for the inference)
        self.variant = variant  # "" (generic) or "_i" (every parameter is an int)
        self.ret_kinds = ret_kinds if ret_kinds is not None else {}  # py name -> kind
        self.returns: set[str] = set()  # kinds this function returns (for the inference)
        self.ret_bits = ret_bits if ret_bits is not None else {}  # py name -> promised r
        self.ret_bounds: list[float | None] = []  # r each return needs (None: unbounded)
        self.stack: list[_Entry | None] = []  # None: materialised in s<k>
        self.skip_next = False
        self.loop_last: dict[int, int] = {}
        self.targets: set[int] = set()
        self.forward_targets: set[int] = set()
        for pc, (op, arg) in enumerate(self.code):
            if op == _OPS["LOOP"]:
                self.loop_last[arg] = max(self.loop_last.get(arg, -1), pc)
                self.targets.add(arg)
            elif op in (_OPS["JUMP"], _OPS["JUMP_IF_FALSE"], _OPS["JUMP_IF_TRUE"],
                        _OPS["FOR_ITER"]):
                self.targets.add(arg)
                self.forward_targets.add(arg)
            elif op in _DECLINED:
                raise _Unstructured(f"{fn.name}: try/catch is run by the interpreter")

    # -- output ----------------------------------------------------------------------

    def line(self, ind: int, text: str, pc: int) -> None:
        self.src.append("    " * ind + text)
        self.out.append((self.index, pc))

    # -- the symbolic stack ------------------------------------------------------------

    def reset(self, pc: int) -> None:
        d = self.depths[pc]
        self.stack = [None] * (d or 0)

    def push(self, entry: _Entry | None) -> None:
        self.stack.append(entry)

    def pop(self) -> _Entry:
        k = len(self.stack) - 1
        e = self.stack.pop()
        return e if e is not None else _Entry(f"s{k}")

    def materialize(self, ind: int, pc: int, only_local: int | None = None) -> None:
        """Assign pending symbolic entries to their slots (all, or those reading a local)."""
        for k, e in enumerate(self.stack):
            if e is None or e.expr == f"s{k}":  # already in its slot (maybe with a kind)
                continue
            if only_local is not None and e.expr != f"l{only_local}":
                continue
            self.line(ind, f"s{k} = {e.expr}", pc)
            self.stack[k] = _Entry(f"s{k}", e.kind, bits=e.bits, elem=e.elem) if e.kind else None

    def result(self, ind: int, pc: int, expr_lines: list[str], kind: str = "",
               bits: tuple[float, float] | None = None, elem: str = "") -> None:
        """Emit lines computing the new top of stack into its slot and push it — or,
        when the next instruction just stores it in a local, straight into that local
        (and that STORE_LOCAL is skipped)."""
        nxt = pc + 1
        if (nxt < len(self.code) and self.code[nxt][0] == _OPS["STORE_LOCAL"]
                and nxt not in self.targets):
            local = self.code[nxt][1]
            self.materialize(ind, pc, only_local=local)
            self.stores.setdefault(local, set()).add(kind)
            for text in expr_lines:
                self.line(ind, text.replace(_SLOT, f"l{local}"), pc)
            self.skip_next = True
            return
        k = len(self.stack)
        for text in expr_lines:
            self.line(ind, text.replace(_SLOT, f"s{k}"), pc)
        self.stack.append(_Entry(f"s{k}", kind, bits=bits, elem=elem) if kind else None)

    # -- structure -------------------------------------------------------------------

    def generate(self) -> list[str]:
        fn = self.fn
        params = ", ".join([f"l{i}" for i in range(fn.nparams)] + ["_d"])
        self.line(1, f"def f{self.index}{self.variant}({params}):", -1)
        self.line(2, "nonlocal _t", -1)
        if fn.nparams and not self.variant:
            # all-int arguments take the specialised variant (a delegation frame that
            # the traceback mapping skips: pc -2)
            guard = " and ".join(f"type(l{i}) is int and _NPB < l{i} < _PB"
                                 for i in range(fn.nparams))
            self.line(2, f"if {guard}: return f{self.index}_i({params})", -2)
        others = [f"l{i}" for i in range(fn.nparams, fn.nlocals)]
        if others:
            self.line(2, " = ".join(others) + " = None", -1)
        self.region(0, len(self.code), 2, None, -1)
        return self.src

    def _for_target(self, pc: int) -> int | None:
        """The local a FOR_ITER at `pc` stores each value in (the next instruction),
        or None if the value stays on the stack."""
        nxt = pc + 1
        if nxt < len(self.code) and self.code[nxt][0] == _OPS["STORE_LOCAL"] \
                and nxt not in self.targets:
            return self.code[nxt][1]
        return None

    def loop_head(self, top: int) -> str:
        """A `for` loop (FOR_ITER at its top) becomes a Python `for` over the same
        iterator, straight into the loop variable; Python's own iterators (lists,
        ranges, strs, map keys) cannot touch the meter, anything else (bytes::lines
        steps per item) is wrapped by `_metered`, which hands it the step counter."""
        if self.code[top][0] != _OPS["FOR_ITER"]:
            return "while True:"
        k = len(self.stack) - 1
        local = self._for_target(top)
        target = f"s{k + 1}" if local is None else f"l{local}"
        it = self.stack[k]
        if it is not None and it.kind == "iter":  # over a list: plain for sure
            return f"for {target} in s{k}:"
        return f"for {target} in (s{k} if type(s{k}) in _PLAIN_ITERS else _metered(s{k})):"

    def batched_loop(self, ind: int, top: int, last: int, bounded: bool) -> None:
        """An innermost loop without calls: steps counted in a local between slow
        checks, written back to the meter on every exit (break, return, trap) by the
        finally. A bounded one also leaves out its int size checks while `_rebound`
        says they cannot fire: the true countdown is then ``_k + _r``."""
        k = f"_k{top}"
        loop = _Loop(top, last, self._exits(last), k, bounded)
        first = len(self.src)
        if bounded:
            self.line(ind, f"_c, {k}, _r = _rebound(m, {_GROWTH}, _t, {_SIZES})", top)
        else:
            self.line(ind, f"{k} = _t", top)
        self.line(ind, "try:", top)
        self.line(ind + 1, "while True:", top)
        self.region(top, last + 1, ind + 2, loop, top)
        self.line(ind, "finally:", top)
        self.line(ind + 1, f"_t = {k} + _r" if bounded else f"_t = {k}", top)
        sizes = "".join([str(loop.floor)] + [f", l{i}" for i in sorted(loop.ints)])
        for i in range(first, len(self.src)):
            self.src[i] = self.src[i].replace(_GROWTH, str(loop.growth)).replace(_SIZES, sizes)

    def _exits(self, last: int) -> frozenset[int]:
        """After a loop's last LOOP: the pc just after it, and the pcs reachable from it
        through POPs only (a `for` loop's break lands on a POP of the iterator)."""
        exits = {last + 1}
        pc = last + 1
        while pc < len(self.code) and self.code[pc][0] == _OPS["POP"]:
            pc += 1
            exits.add(pc)
        return frozenset(exits)

    def region(self, start: int, end: int, ind: int, loop: _Loop | None, header: int,
               below: list[_Entry | None] | None = None) -> None:
        """Emit pcs [start, end) at indentation `ind`. `header` is the loop top being
        emitted (so it is not taken for a new loop); `below`, the materialised stack
        at its entry, keeps its kinds (a loop body leaves the entries below it alone)."""
        emitted_before = len(self.src)
        if self.depths[start] is not None:
            self.reset(start)
            if below is not None and len(below) == len(self.stack):
                self.stack = list(below)
        pc = start
        while pc < end:
            if self.depths[pc] is None:  # dead code (after a break/return)
                pc += 1
                continue
            if pc in self.targets and pc != start:
                self.materialize(ind, pc)
                # a loop top reached only by falling in and by its back-edges keeps
                # what is known of the entries below it (the body leaves them alone)
                if (pc in self.forward_targets or pc not in self.loop_last
                        or self.depths[pc - 1] is None
                        or self.code[pc - 1][0] in (_OPS["JUMP"], _OPS["RETURN"], _OPS["LOOP"])
                        or len(self.stack) != self.depths[pc]):
                    self.reset(pc)
            if pc in self.loop_last and pc != header:
                last = self.loop_last[pc]
                if last >= end:
                    raise _Unstructured(f"{self.fn.name}: loop at {pc} overlaps its region")
                self.materialize(ind, pc)
                if self._batchable(pc, last):
                    undo = (len(self.src), len(self.out), list(self.stack))
                    try:
                        self.batched_loop(ind, pc, last, bounded=True)
                    except _Unbounded:
                        del self.src[undo[0]:], self.out[undo[1]:]
                        self.stack = undo[2]
                        self.batched_loop(ind, pc, last, bounded=False)
                else:
                    self.line(ind, self.loop_head(pc), pc)
                    self.region(pc, last + 1, ind + 1, _Loop(pc, last, self._exits(last)), pc,
                                list(self.stack))
                pc = last + 1
                if pc < end:
                    self.reset(pc)
                continue
            pc = self.instruction(pc, end, ind, loop)
            if self.skip_next:  # the result went straight into a local
                self.skip_next = False
                pc += 1
        if end <= len(self.code) and self.stack:
            self.materialize(ind, end - 1)
        if len(self.src) == emitted_before:
            self.line(ind, "pass", -1)

    def feeds_branch(self, pc: int) -> bool:
        """Is the instruction after `pc` a conditional jump consuming its result (and not
        a join point)? Then the comparison is fused into the `if` (no slot store)."""
        nxt = pc + 1
        return (nxt < len(self.code) and nxt not in self.targets
                and self.code[nxt][0] in (_OPS["JUMP_IF_FALSE"], _OPS["JUMP_IF_TRUE"]))

    def branch(self, pc: int, target: int, end: int, ind: int, loop: _Loop | None,
               taken: str, stay: str, at: int) -> int:
        """A forward conditional jump at `pc` to `target`, taken when the Python
        condition `taken` holds (`stay` is its negation). Returns the pc to go on at."""
        if loop is not None and target in loop.exits:
            self.line(ind, f"if {taken}:", at)
            self.line(ind + 1, "break", pc)
            return pc + 1
        if not pc < target <= end:
            raise _Unstructured(f"{self.fn.name}: jump at {pc} to {target} leaves its region")
        last_op, last_arg = self.code[target - 1]
        has_else = (last_op == _OPS["JUMP"] and target - 1 > pc and target < last_arg <= end
                    and not (loop is not None and last_arg in loop.exits)
                    and self.depths[target - 1] is not None)
        self.line(ind, f"if {stay}:", at)
        if has_else:
            self.region(pc + 1, target - 1, ind + 1, loop, -1)
            self.line(ind, "else:", pc)
            self.region(target, last_arg, ind + 1, loop, -1)
            join = last_arg
        else:
            self.region(pc + 1, target, ind + 1, loop, -1)
            join = target
        if join < end:
            self.reset(join)
        return join

    # -- instructions ----------------------------------------------------------------

    def _batchable(self, top: int, last: int) -> bool:
        """An innermost loop whose body calls no Vega fn and walks no iterator: its steps
        may be kept in a local, handed to the meter around each builtin or method
        call (`ext`), and every op of it runs at most once per iteration."""
        banned = {_OPS[n] for n in ("CALL", "GET_ITER", "FOR_ITER", "GET_ATTR", "SET_ATTR")}
        for op, arg in self.code[top:last + 1]:
            if op in banned or (op == _OPS["LOOP"] and arg != top):
                return False
        return all(tgt == top for tgt, end in self.loop_last.items() if top < tgt <= last)

    def ext(self, loop: _Loop | None, lines: list[str]) -> list[str]:
        """Wrap a call out of generated code: the step counter lives in the factory's
        cell `_t` (or a batched loop's local) and is handed to the meter for the call
        (a builtin may step or read it) and taken back after it — also when the call
        raises (finally). A bounded loop takes it back without lengthening the
        stretch its size checks are left out for (`_rebound`)."""
        if loop is None or not loop.counter:
            give, take = "_t", ["_t = m.tick"]
        elif loop.bounded:
            k = loop.counter
            give, take = f"{k} + _r", ["_r = m.tick", f"{k} = min({k}, _r)", f"_r -= {k}"]
        else:
            give, take = loop.counter, [f"{loop.counter} = m.tick"]
        return [f"m.tick = {give}", "try:", *("    " + t for t in lines), "finally:",
                *("    " + t for t in take)]

    def step_lines(self, ind: int, pc: int, loop: _Loop | None = None,
                   back_edge: bool = False) -> None:
        """Meter.step() inlined: a decrement and a compare; the slow path is the meter's
        (in a batched loop: the local counter, synced to the meter around the slow path).
        In a bounded loop, the countdown running out at a call (mid-iteration, where
        temporaries `_rebound` cannot see may be live) turns the size checks on until
        the next back-edge."""
        if loop is not None and loop.counter:
            k = loop.counter
            self.line(ind, f"{k} -= 1", pc)
            if loop.bounded and not back_edge:
                self.line(ind, f"if {k} < 0: _c, {k}, _r = _checked(m, {k} + _r)", pc)
            elif loop.bounded:
                self.line(ind, f"if {k} < 0: _c, {k}, _r = _rebound(m, {_GROWTH}, {k} + _r, "
                          f"{_SIZES})", pc)
            else:
                self.line(ind, f"if {k} < 0: m.tick = {k}; m._slow_step(); {k} = m.tick", pc)
            return
        self.line(ind, "_t -= 1", pc)
        self.line(ind, "if _t < 0: m.tick = _t; m._slow_step(); _t = m.tick", pc)

    def instruction(self, pc: int, end: int, ind: int, loop: _Loop | None) -> int:  # noqa: C901
        op, arg = self.code[pc]
        o = _OPS
        n = self.names
        if op == o["LOAD_LOCAL"]:
            kind = self.local_kinds.get(arg, "")
            if loop is not None and loop.bounded and kind == "int":
                loop.ints.add(arg)
            self.push(_Entry(f"l{arg}", kind, bits=self.local_bits.get(arg)))
        elif op == o["STORE_LOCAL"]:
            v = self.pop()
            self.stores.setdefault(arg, set()).add(v.kind)
            self.materialize(ind, pc, only_local=arg)
            self.line(ind, f"l{arg} = {v.expr}", pc)
        elif op == o["CONST"]:
            value = self.program.constants[arg]
            if loop is not None and loop.bounded and type(value) is int:
                loop.floor = max(loop.floor, value.bit_length())
            self.push(n.const(value))
        elif op == o["NIL"]:
            self.push(_Entry("None"))
        elif op == o["TRUE"]:
            self.push(_Entry("True", "bool"))
        elif op == o["FALSE"]:
            self.push(_Entry("False", "bool"))
        elif op == o["POP"]:
            self.stack.pop()
        elif op == o["DUP"]:
            top = self.pop()
            self.materialize(ind, pc)
            k = len(self.stack)
            if top.expr != f"s{k}":
                self.line(ind, f"s{k} = {top.expr}", pc)
            self.stack.append(None)
            self.push(_Entry(f"s{k}", top.kind, bits=top.bits))
        elif op in _ARITH_SYM:
            b, a = self.pop(), self.pop()
            self.arith(ind, pc, op, a, b, loop)
        elif op in _CMP_SYM:
            b, a = self.pop(), self.pop()
            sym = _CMP_SYM[op]
            both_int = _both_int(a, b)
            expr = (f"{a.expr} {sym} {b.expr}" if both_int == "True" else
                    f"{a.expr} {sym} {b.expr} if {both_int} else _order({op}, {a.expr}, {b.expr})")
            if self.feeds_branch(pc):
                self.push(_Entry(f"({expr})", "bool", pc=pc))
            else:
                self.result(ind, pc, [f"{_SLOT} = {expr}"], "bool")
        elif op in (o["EQ"], o["NE"]):
            b, a = self.pop(), self.pop()
            neg = "" if op == o["EQ"] else "not "
            sym = "==" if op == o["EQ"] else "!="
            slow = f"{neg}values_equal(unwrap_eq({a.expr}), unwrap_eq({b.expr}))"
            if a.kind and a.kind == b.kind and a.kind in ("int", "str"):
                expr = f"{a.expr} {sym} {b.expr}"
            elif "None" in (a.expr, b.expr):  # x == nil: identity unless x is a Result
                e = a if b.expr == "None" else b
                x = e.expr
                if e.kind and e.pc < 0:  # never nil nor a Result (maybe a literal); a
                    # fused comparison (pc set) must still run: it may trap
                    expr = "False" if op == o["EQ"] else "True"
                elif op == o["EQ"]:  # nil itself first: the common case is one test
                    expr = f"({x} is None or type({x}) is Result and {slow})"
                else:
                    expr = f"({x} is not None and (type({x}) is not Result or {slow}))"
            else:
                expr = (f"{a.expr} {sym} {b.expr} if (type({a.expr}) is int or type({a.expr}) "
                        f"is str) and type({b.expr}) is type({a.expr}) else {slow}")
            if self.feeds_branch(pc):
                self.push(_Entry(f"({expr})", "bool", pc=pc))
            else:
                self.result(ind, pc, [f"{_SLOT} = {expr}"], "bool")
        elif op == o["NEG"]:
            a = self.pop()
            if a.kind == "int":  # |-a| == |a|: no size check, same bound
                self.result(ind, pc, [f"{_SLOT} = -{a.expr}"], "int", a.bits)
            else:
                self.result(ind, pc, [f"{_SLOT} = -{a.expr} if type({a.expr}) is int or type("
                                      f"{a.expr}) is float else _neg({a.expr})"],
                            "float" if a.kind == "float" else "v")
        elif op == o["NOT"]:
            a = self.pop()
            if a.kind == "bool":
                self.result(ind, pc, [f"{_SLOT} = not {a.expr}"], "bool")
            else:
                self.result(ind, pc, [f"{_SLOT} = not _truth({a.expr}, 'the operand of !')"], "bool")
        elif op in (o["JUMP_IF_FALSE"], o["JUMP_IF_TRUE"]):
            c = self.pop()
            self.materialize(ind, pc)
            if c.kind != "bool":
                self.line(ind, f"if type({c.expr}) is not bool: _truth({c.expr}, 'a condition')",
                          pc)
            at = c.pc if c.pc >= 0 else pc  # where a trap in the condition is reported
            if op == o["JUMP_IF_FALSE"]:
                return self.branch(pc, arg, end, ind, loop, f"not {c.expr}", c.expr, at)
            return self.branch(pc, arg, end, ind, loop, c.expr, f"not {c.expr}", at)
        elif op == o["JUMP"]:
            self.materialize(ind, pc)
            if loop is not None and arg in loop.exits:
                self.line(ind, "break", pc)
            elif loop is not None and self.code[arg] == (o["LOOP"], loop.top):
                self.step_lines(ind, arg, loop, back_edge=True)
                self.line(ind, "continue", arg)
            elif arg == end and pc == end - 1:
                pass  # falls through to the join of the enclosing construct
            else:
                raise _Unstructured(f"{self.fn.name}: jump at {pc} to {arg}")
        elif op == o["LOOP"]:
            if loop is None or arg != loop.top:
                raise _Unstructured(f"{self.fn.name}: LOOP at {pc} to {arg} outside its loop")
            self.materialize(ind, pc)
            self.step_lines(ind, pc, loop, back_edge=True)
            self.line(ind, "continue", pc)
        elif op == o["FOR_ITER"]:
            if loop is None or pc != loop.top or arg not in loop.exits:
                raise _Unstructured(f"{self.fn.name}: FOR_ITER at {pc} is not a loop head")
            # the loop's `for` header (loop_head) took the next value: here it is
            # only on the stack, or already in the loop variable
            local = self._for_target(pc)
            it = self.stack[-1]
            elem = it.elem if it is not None else ""
            if local is None:
                self.stack.append(_Entry(f"s{len(self.stack)}", elem) if elem else None)
            else:
                self.stores.setdefault(local, set()).add(elem)
                self.skip_next = True
        elif op == o["GET_ITER"]:
            a = self.pop()
            if a.kind == "list":  # iter() of a list cannot touch the meter
                self.result(ind, pc, [f"{_SLOT} = iter({a.expr})"], "iter", elem=a.elem)
            else:
                self.result(ind, pc, self.ext(loop, [f"{_SLOT} = _iterate({a.expr})"]))
        elif op == o["RETURN"]:
            v = self.pop()
            self.materialize(ind, pc)
            self.returns.add(v.kind)
            self.ret_bounds.append(None if v.bits is None else max(v.bits))
            if not v.kind and v.expr != "None":
                self.line(ind, f"if type({v.expr}) is Slice or type({v.expr}) is Result:", pc)
                self.line(ind + 1, f"_ret_check({v.expr}, _d)", pc)
            self.line(ind, f"return {v.expr}", pc)
        elif op == o["CALL"]:
            self.call(ind, pc, arg)
        elif op == o["CALL_BUILTIN"]:
            self.call_builtin(ind, pc, arg, loop)
        elif op == o["CALL_METHOD"]:
            self.call_method(ind, pc, arg, loop)
        elif op == o["BUILD_LIST"]:
            items = [self.pop() for _ in range(arg)][::-1]
            self.materialize(ind, pc)
            for text in _mem(str(56 + 8 * arg)):
                self.line(ind, text, pc)
            for it in items:
                if it.kind == "":
                    self.line(ind, f"if type({it.expr}) is Slice or type({it.expr}) is Result: "
                              f"check_storable({it.expr}, 'a list')", pc)
            self.result(ind, pc, [f"{_SLOT} = [" + ", ".join(i.expr for i in items) + "]"],
                        "list")
        elif op == o["BUILD_MAP"]:
            flat = [self.pop() for _ in range(2 * arg)][::-1]
            self.materialize(ind, pc)
            for text in _mem(str(64 + 32 * arg)):
                self.line(ind, text, pc)
            self.result(ind, pc, [f"{_SLOT} = _build_map((" + "".join(f"{e.expr}, " for e in flat)
                                  + "))"], "map")
        elif op == o["INDEX"]:
            i, a = self.pop(), self.pop()
            self.result(ind, pc, _index_lines(a, i))
        elif op == o["STORE_INDEX"]:
            v, i, a = self.pop(), self.pop(), self.pop()
            self.materialize(ind, pc)
            guard = ([] if a.kind == "map" else [f"type({a.expr}) is dict"]) + (
                [] if i.kind == "str" else [f"type({i.expr}) is str"]) + (
                [] if v.kind else [f"type({v.expr}) is not Slice",
                                   f"type({v.expr}) is not Result"])
            fast = [f"if {i.expr} not in {a.expr}:", *("    " + t for t in _mem("32")),
                    f"{a.expr}[{i.expr}] = {v.expr}"]
            if guard:
                fast = [f"if {' and '.join(guard)}:", *("    " + t for t in fast), "else:",
                        f"    _store_index(rt, {a.expr}, {i.expr}, {v.expr})"]
            for text in fast:
                self.line(ind, text, pc)
        elif op == o["GET_ATTR"]:
            a = self.pop()
            self.result(ind, pc, self.ext(loop, [f"{_SLOT} = get_attr({a.expr}, "
                                       f"{self.program.symbols[arg]!r})"]))
        elif op == o["SET_ATTR"]:
            v, a = self.pop(), self.pop()
            self.materialize(ind, pc)
            for text in self.ext(loop, [f"_set_attr({a.expr}, {self.program.symbols[arg]!r}, {v.expr})"]):
                self.line(ind, text, pc)
        elif op == o["LOAD_NAME"]:
            self.materialize(ind, pc)
            self.result(ind, pc, [f"{_SLOT} = _load_name({self.program.symbols[arg]!r})"])
        elif op == o["NOP"]:
            pass
        else:
            raise _Unstructured(f"{self.fn.name}: opcode {op:#x} at {pc}")
        return pc + 1

    def arith(self, ind: int, pc: int, op: int, a: _Entry, b: _Entry,
              loop: _Loop | None) -> None:
        """ADD/SUB/MUL/DIV/MOD. The fast path covers exactly the cases where the
        interpreter's ``_arith`` would do plain int arithmetic with no memory charge
        (or the charge check is kept); everything else calls ``_arith`` itself. Two
        ints give an int on either path, so the result kind is "int" then. In a
        bounded loop the size checks of int ops run only while the flag `_c` is set."""
        sym = _ARITH_SYM[op]
        slow = f"{_SLOT} = _arith(rt, {op}, {a.expr}, {b.expr})"
        ints = a.kind == "int" and b.kind == "int"
        types = [f"type({e.expr}) is int" for e in (a, b) if e.kind != "int"]
        # _charge_int charges (or refuses) exactly the ints over BIG_INT_BITS
        big_check = f"if {_SLOT}.bit_length() > {BIG_INT_BITS}: _charge_int(rt, {_SLOT})"
        if op == _OPS["ADD"] and "str" in (a.kind, b.kind):
            str_guard = " and ".join(f"type({e.expr}) is str" for e in (a, b) if e.kind != "str")
            size = f"49 + {_len(a)} + {_len(b)}"
            fast = [*_mem(size), f"{_SLOT} = {a.expr} + {b.expr}"]
            if not str_guard:
                self.result(ind, pc, fast, "str")
            else:
                self.result(ind, pc, [f"if {str_guard}:", *("    " + f for f in fast), "else:",
                                      "    " + slow], "v")
            return
        fast = [f"{_SLOT} = {a.expr} {sym} {b.expr}"]
        bits = _result_bits(op, a, b) if ints else None
        safe = bits is not None and max(bits) <= BITS_SLACK  # the size check cannot fire
        flagged = ints and loop is not None and loop.bounded
        if flagged:
            assert loop is not None
            loop.growth += _growth(op, a, b)
            big_check = f"if _c and {big_check[3:]}"
        if op in (_OPS["ADD"], _OPS["SUB"]):
            if not safe:
                fast.append(big_check)
            guard = types
            if op == _OPS["ADD"] and types and a.kind in ("", "v") and b.kind in ("", "v"):
                # str + str is common enough (string building) for its own fast path
                self.result(ind, pc, [
                    f"if {' and '.join(types)}:", *("    " + f for f in fast),
                    f"elif type({a.expr}) is str and type({b.expr}) is str:",
                    *("    " + t for t in _mem(f"49 + len({a.expr}) + len({b.expr})")),
                    f"    {_SLOT} = {a.expr} + {b.expr}",
                    "else:",
                    "    " + slow], "v")
                return
        elif op == _OPS["MUL"] and flagged and not safe:
            halves = " and ".join(f"_NHALF < {e.expr} < _HALF" for e in (a, b) if e.const is None)
            self.result(ind, pc, [f"if _c and not ({halves}):", "    " + slow, "else:",
                                  "    " + fast[0]], "int", bits)
            return
        elif op == _OPS["MUL"]:
            # the interpreter charges *before* multiplying big operands: keep those slow
            guard = types + ([] if safe else [f"_NHALF < {e.expr} < _HALF"
                                              for e in (a, b) if e.const is None])
        else:
            guard = types + ([] if b.const else [b.expr])  # a zero divisor traps in _arith
            bound = a if op == _OPS["DIV"] else b  # |a // b| <= |a|, |a % b| < |b|
            if bound.const is None and not safe:
                fast.append(big_check)
        kind = "int" if ints else "v"
        if not guard:
            self.result(ind, pc, fast, kind, bits)
        else:
            self.result(ind, pc, [f"if {' and '.join(guard)}:", *("    " + f for f in fast),
                                  "else:", "    " + slow], kind, bits)

    def _args(self, n: int) -> list[_Entry]:
        """Pop `n` call arguments. Entries below stay symbolic: they are loads of
        locals and constants, and no call can change the caller's locals."""
        return [self.pop() for _ in range(n)][::-1]

    def call(self, ind: int, pc: int, arg: int) -> None:
        callee, n = arg >> 8, arg & 0xFF
        entries = self._args(n)
        kinds = [e.kind for e in entries]
        args = [e.expr for e in entries]
        self.step_lines(ind, pc)
        name = self.program.functions[callee].name
        self.line(ind, f"if _d >= {MAX_DEPTH}: _too_deep({name!r})", pc)
        target = f"f{callee}"
        actuals = f"({''.join(a + ', ' for a in args)}_d + 1)"
        if n and all(k == "int" for k in kinds):
            # known ints: the "_i" variant directly, its size bound tested only where
            # it is not known to hold (arguments are side-effect-free expressions)
            tests = [f"_NPB < {e.expr} < _PB" for e in entries
                     if e.bits is None or e.bits[0] > 1 or e.bits[1] != _NO]
            kind = self.ret_kinds.get(target + "_i", "")
            if tests:
                kind = kind if self.ret_kinds.get(target, "") == kind else ""
                self.result(ind, pc, [f"{_SLOT} = {target}_i{actuals} if {' and '.join(tests)} "
                                      f"else {target}{actuals}"], kind)
            else:
                r = self.ret_bits.get(target + "_i")  # its promise, one frame down
                self.result(ind, pc, [f"{_SLOT} = {target}_i{actuals}"], kind,
                            None if r is None else (_NO, r - 1))
            return
        self.result(ind, pc, [f"{_SLOT} = {target}{actuals}"], self.ret_kinds.get(target, ""))

    def call_builtin(self, ind: int, pc: int, arg: int, loop: _Loop | None) -> None:
        sym, n = arg >> 8, arg & 0xFF
        entries = self._args(n)
        args = [e.expr for e in entries]
        self.step_lines(ind, pc, loop)
        b = self.names.linked[sym]
        if b is None:
            self.line(ind, f"_no_builtin({self.program.symbols[sym]!r})", pc)
            self.stack.append(None)
            return
        if b.min_args <= n and (b.max_args is None or n <= b.max_args):
            fn = self.names.value(b.fn, "bf")
            kind = _BUILTIN_KINDS.get(b.name, "") if BUILTINS.get(b.name) is b else ""
            elem = ""
            if b is _SPLIT:  # a new list of strs
                kind, elem = "list", "str"
            if kind == "int" and loop is not None and loop.bounded:
                if b.name != "len":  # int("...") may be any size: no growth bound
                    raise _Unbounded
                loop.floor = max(loop.floor, 63)  # a length is below 2**63
            call = f"{_SLOT} = {fn}(rt{''.join(', ' + a for a in args)})"
            if b is BUILTINS["str"] and n == 1 and entries[0].kind == "int":
                self.result(ind, pc, [f"{_SLOT} = repr({args[0]})",
                                      *_mem(f"49 + len({_SLOT})")], kind)
                return
            if b is BUILTINS["str"] and n == 1:
                # str(int) inlined: format_value of an int is repr(), charged after
                self.result(ind, pc, [f"if type({args[0]}) is int:",
                                      f"    {_SLOT} = repr({args[0]})",
                                      *("    " + t for t in _mem(f"49 + len({_SLOT})")),
                                      "else:",
                                      *("    " + t for t in self.ext(loop, [call]))], kind)
                return
            self.result(ind, pc, self.ext(loop, [call]), kind, elem=elem)
        else:
            bn = self.names.value(b, "b")
            self.result(ind, pc, self.ext(loop, [f"{_SLOT} = {bn}.call(rt, [{', '.join(args)}])"]))

    def call_method(self, ind: int, pc: int, arg: int, loop: _Loop | None) -> None:
        sym, n = arg >> 8, arg & 0xFF
        entries = self._args(n)
        args = [e.expr for e in entries]
        receiver = self.pop()
        obj = receiver.expr
        self.step_lines(ind, pc, loop)
        name = self.program.symbols[sym]
        if name in ("push", "append", "insert"):
            for e in entries:
                if not e.kind:  # ints, strs, bools are never borrowed
                    self.line(ind, f"if type({e.expr}) is Slice or type({e.expr}) is Result: "
                              f"check_storable({e.expr}, 'a list')", pc)
        generic = f"{_SLOT} = call_method(rt, {obj}, {name!r}, [{', '.join(args)}])"
        if name == "push" and n == 1 and METHODS["list"].get("push") is _STDLIB_PUSH:
            # list.push inlined: what stdlib's push does after the checks above
            if receiver.kind == "list":
                for text in [*_mem("8"), f"{obj}.append({args[0]})"]:
                    self.line(ind, text, pc)
                self.push(_Entry("None"))
                return
            self.result(ind, pc, [f"if type({obj}) is list:",
                                  *("    " + t for t in _mem("8")),
                                  f"    {obj}.append({args[0]})",
                                  f"    {_SLOT} = None",
                                  "else:",
                                  *("    " + t for t in self.ext(loop, [generic]))])
            return
        self.result(ind, pc, self.ext(loop, [generic]))


def _index_lines(a: _Entry, i: _Entry) -> list[str]:
    """obj[i]: list by int and map by str inline (pruned by what the kinds tell),
    everything else through the interpreter's _index."""
    slow = f"{_SLOT} = _index({a.expr}, {i.expr})"
    as_list = f"{_SLOT} = {a.expr}[{i.expr}]"
    in_range = f"-len({a.expr}) <= {i.expr} < len({a.expr})"
    as_map = f"{_SLOT} = {a.expr}.get({i.expr})"
    if a.kind == "map":
        if i.kind == "str":
            return [as_map]
        return [f"if type({i.expr}) is str:", "    " + as_map, "else:", "    " + slow]
    if a.kind == "list":
        int_test = "" if i.kind == "int" else f"type({i.expr}) is int and "
        return [f"if {int_test}{in_range}:", "    " + as_list, "else:", "    " + slow]
    lines = []
    if i.kind in ("", "v", "int"):
        int_test = "" if i.kind == "int" else f" and type({i.expr}) is int"
        lines += [f"if type({a.expr}) is list{int_test} and {in_range}:", "    " + as_list]
    if i.kind in ("", "v", "str"):
        str_test = "" if i.kind == "str" else f" and type({i.expr}) is str"
        lines += [f"{'elif' if lines else 'if'} type({a.expr}) is dict{str_test}:",
                  "    " + as_map]
    return [*lines, "else:", "    " + slow] if lines else [slow]


def _result_bits(op: int, a: _Entry, b: _Entry) -> tuple[float, float] | None:
    """The size bound (`_Entry.bits`) of an int op's result from its operands', or None.
    |a ± b| < 2 max(|a|, |b|); |a * c| <= |a| |c|; |a // b| <= |a|; |a % b| < |b|."""
    if op in (_OPS["ADD"], _OPS["SUB"]):
        if a.bits is None or b.bits is None:
            return None
        return max(a.bits[0], b.bits[0]) + 1, max(a.bits[1], b.bits[1]) + 1
    if op == _OPS["MUL"]:
        for x, c in ((a, b), (b, a)):
            if c.const is not None and x.bits is not None:
                grow = abs(c.const).bit_length()
                return x.bits[0] + grow, x.bits[1] + grow
        return None
    return a.bits if op == _OPS["DIV"] else b.bits


def _growth(op: int, a: _Entry, b: _Entry) -> int:
    """Bits an int op can add to the larger of its operands (`_Loop.growth`)."""
    if op in (_OPS["ADD"], _OPS["SUB"]):
        return 1
    if op == _OPS["MUL"]:
        c = a.const if a.const is not None else b.const
        if c is None:
            raise _Unbounded
        return abs(c).bit_length()
    return 0  # |a // b| <= |a|, |a % b| < |b|


def _rebound(meter: Any, growth: int, k: int, floor: int, *ints: Any) -> tuple[bool, int, int]:
    """At the entry and each slow step of a bounded loop: how long may its int size
    checks be left out? Returns (checks on, steps to count locally, steps held back).

    An iteration of an innermost loop runs each of its int ops at most once, each
    adding at most its `_growth` to the largest int it reads (the body's int
    locals, its constants); so if that largest int has L bits, the next
    ``(BIG_INT_BITS - L) // growth`` iterations make no int over BIG_INT_BITS and no
    check there could fire. The step countdown `k` is split so the loop comes back
    here after those iterations (``local + held back == k``): step counts and
    every charge stay exactly the interpreter's."""
    k = _spent(meter, k)
    largest = max([floor, *(v.bit_length() for v in ints if type(v) is int)])
    if largest > BIG_INT_BITS:
        return True, k, 0
    n = (BIG_INT_BITS - largest) // growth if growth else k + 1
    if n <= 0:
        return True, k, 0
    run = min(k, n - 1)
    return False, run, k - run


def _checked(meter: Any, k: int) -> tuple[bool, int, int]:
    """A bounded loop's countdown ran out at a call: the meter's slow step if the
    true countdown `k` is spent, and the size checks on (see `_rebound`)."""
    return True, _spent(meter, k), 0


def _spent(meter: Any, k: int) -> int:
    """The meter's own slow step (trap, clock) if the countdown `k` is spent."""
    if k < 0:
        meter.tick = k
        meter._slow_step()
        k = meter.tick
    return k


def _both_int(a: _Entry, b: _Entry) -> str:
    parts = [f"type({e.expr}) is int" for e in (a, b) if e.kind != "int"]
    return " and ".join(parts) if parts else "True"


class _Names:
    """Values the generated code refers to by name (closure cells of the factory)."""

    def __init__(self, linked: list[Builtin | None]) -> None:
        self.linked = linked
        self.values: dict[str, Any] = {}
        self._ids: dict[int, str] = {}
        self._counter = itertools.count()

    def value(self, v: Any, prefix: str) -> str:
        name = self._ids.get(id(v))
        if name is None:
            name = f"{prefix}{next(self._counter)}"
            self._ids[id(v)] = name
            self.values[name] = v
        return name

    def const(self, v: Any) -> _Entry:
        t = type(v)
        if t is bool:
            return _Entry(repr(v), "bool")
        if t is int and -_HALF < v < _HALF:
            return _Entry(f"({v})" if v < 0 else repr(v), "int", v,
                          bits=(v.bit_length() - PARAM_BITS, _NO))
        if t is str:
            return _Entry(repr(v), "str")
        if t is float and math.isfinite(v):
            return _Entry(repr(v), "float")
        if v is None:
            return _Entry("None")
        return _Entry(self.value(v, "k"), {int: "int", float: "float"}.get(t, ""))


# --------------------------------------------------------------------------- helpers




def _mem(size: str) -> list[str]:
    """Meter.charge_memory inlined: add, and on the (rare) overflow undo the add and
    let the meter raise its own trap, so the counts and the message are the meter's."""
    return [f"m.memory_used += {size}",
            f"if m.memory_used > _mlim: _mem_over(m, {size})"]


def _len(e: _Entry) -> str:
    """len() of a str entry, folded when it is a literal."""
    if e.kind == "str" and e.expr.startswith(("'", '"')):
        return str(len(eval(e.expr)))  # noqa: S307 - a repr() we generated ourselves
    return f"len({e.expr})"


def _mem_over(meter: Any, size: int) -> None:
    meter.memory_used -= size
    meter.charge_memory(size)


def _neg(v: Any) -> Any:
    v = unwrap(v)
    if type(v) is int or type(v) is float:
        return -v
    raise Trap("type", f"cannot negate a {type_name(v)}")


def _ret_check(v: Any, depth: int) -> None:
    if is_borrowed(v):
        check_storable(v, "the run's result" if depth == 1 else "a return value")


def _too_deep(name: str) -> None:
    raise Trap("recursion", f"call depth exceeded {MAX_DEPTH} frames "
               f"(calling {name}; infinite recursion?)")


def _no_builtin(name: str) -> None:
    raise Trap("name", f"no builtin named '{name}' in this host")


def _build_map(flat: tuple[Any, ...]) -> dict[Any, Any]:
    m: dict[Any, Any] = {}
    for i in range(0, len(flat), 2):
        check_storable(flat[i + 1], "a map")
        m[_key(flat[i])] = flat[i + 1]
    return m


def _set_attr(obj: Any, name: str, v: Any) -> None:
    setter = getattr(type(obj), "set_attr", None) if isinstance(obj, VegaObject) else None
    if setter is None:
        raise Trap("type", f"cannot set attribute '{name}' of a {type_name(obj)}")
    check_storable(v, "an attribute")
    setter(obj, name, v)


_STDLIB_PUSH = METHODS["list"]["push"]
_SPLIT = MODULES["text"]["split"]

#: Result kinds of stdlib builtins that always return that type (or trap).
_BUILTIN_KINDS = {"len": "int", "str": "str", "text": "str", "type": "str", "int": "int",
                  "float": "float"}

#: Iterator types of the Python containers `_iterate` returns; next() on them is pure.
_ITERABLES: tuple[Iterable[object], ...] = ([], range(1), range(1 << 64), "a", "\u00e9",
                                            "\U0001f600", (), {})
_PLAIN_ITERS = frozenset(type(iter(x)) for x in _ITERABLES)

_HELPERS: dict[str, Any] = {
    "_arith": _arith, "_order": _order, "_index": _index, "_store_index": _store_index,
    "_iterate": _iterate, "_truth": _truth, "_charge_int": _charge_int,
    "values_equal": values_equal, "unwrap_eq": unwrap_eq, "get_attr": get_attr,
    "call_method": call_method, "check_storable": check_storable, "Slice": Slice,
    "Result": Result, "_neg": _neg, "_ret_check": _ret_check, "_too_deep": _too_deep,
    "_no_builtin": _no_builtin, "_mem_over": _mem_over, "_build_map": _build_map,
    "_set_attr": _set_attr, "_rebound": _rebound, "_checked": _checked,
    "_HALF": _HALF, "_NHALF": _NHALF, "_PB": _PB, "_NPB": _NPB, "_DONE": _DONE, "_PLAIN_ITERS": _PLAIN_ITERS,
}


# --------------------------------------------------------------------------- compile + run


@dataclass
class FastProgram:
    """A program lowered to Python: the per-run factory (returns the functions, by
    index, and the step-count sync), the map from generated line numbers to
    (function index, pc), and the generated source (for reading and debugging)."""

    program: Program
    factory: Callable[..., tuple[tuple[Callable[..., Any], ...], Callable[[], None]]]
    line_map: list[tuple[int, int]]  # line number - 1 -> (fn index, pc)
    source: str


#: id(program) -> (weak ref to it, the host builtins it was linked with, the result).
#: The builtins are held (not their ids), so an id can never be reused under us.
_CACHE: dict[int, tuple[weakref.ref[Program], dict[str, Builtin], FastProgram | None]] = {}


def compile_fast(program: Program, builtins: Mapping[str, Builtin] | None = None,
                 ) -> FastProgram | None:
    """Lower every function of `program`; None if any function has a shape this tier
    does not lower (the caller then uses the interpreter). Cached per program."""
    extra = dict(builtins or {})
    key = id(program)
    hit = _CACHE.get(key)
    if (hit is not None and hit[0]() is program and hit[1].keys() == extra.keys()
            and all(hit[1][k] is v for k, v in extra.items())):
        return hit[2]
    fast = _compile(program, extra)
    for k in [k for k, (ref, _, _) in _CACHE.items() if ref() is None]:
        del _CACHE[k]  # programs that are gone (their ids may be reused)
    _CACHE[key] = (weakref.ref(program), extra, fast)
    return fast


def _lower(index: int, fn: Function, program: Program, line_map: list[tuple[int, int]],
           names: _Names, variant: str = "", ret_kinds: dict[str, str] | None = None,
           ret_bits: dict[str, float] | None = None) -> _FnGen:
    """Generate one function, after inferring the kind (int, str, list, map...) each
    local always holds.

    A pessimistic pass proposes, per local, the one kind it sees stored; then an
    optimistic fixpoint keeps a proposal only while every store agrees with it
    (demoting and regenerating until nothing changes). Sound because two ints make
    an int on every path of the arithmetic (fast or ``_arith``), containers never
    change type, and a local is only read after a ``let`` stored it (the checker's
    scoping); the "_i" variant's parameters enter as ints."""
    params = {i: "int" for i in range(fn.nparams)} if variant else {}
    # candidates: the one kind a pessimistic pass sees stored into each local (an int
    # loop counter shows "int" from its `let i = 0`, and "" from `i + 1` for now)
    gen = _FnGen(index, fn, program, [], names, dict(params), variant, ret_kinds, ret_bits)
    gen.generate()
    kinds = dict(params)
    for i in range(fn.nlocals):
        # ("v", any unborrowed value, is what `i + 1` shows while `i` is unknown)
        seen = gen.stores.get(i, set()) - {""}
        if len(seen) > 1:
            seen -= {"v"}
        if len(seen) == 1 and i >= fn.nparams:  # a parameter's entry value is no store
            kinds[i] = seen.pop()
    while True:  # optimistic: keep a local's kind only if every store agrees with it
        gen = _FnGen(index, fn, program, [], names, kinds, variant, ret_kinds, ret_bits)
        gen.generate()
        kept = {i: k for i, k in kinds.items()
                if gen.stores.get(i, {k} if i in params else {""}) == {k}}
        if kept == kinds:
            break
        kinds = kept
    gen = _FnGen(index, fn, program, line_map, names, kinds, variant, ret_kinds, ret_bits)
    gen.generate()
    return gen


def _lower_all(program: Program, names: _Names, line_map: list[tuple[int, int]]) -> list[str]:
    """Every function (and the int-parameter variant of each one with parameters),
    with return kinds and size promises (PARAM_BITS) inferred by an optimistic
    fixpoint over the whole program: assume every function returns ints and every
    "_i" variant promises r = 0; demote those with a non-int return, raise each
    promise to what its returns need (dropping it past BITS_SLACK, or if it still
    rises after a few rounds), redo until nothing changes."""
    variants = [(i, v) for i, fn in enumerate(program.functions)
                for v in (("", "_i") if fn.nparams else ("",))]
    ret = {f"f{i}{v}": "int" for i, v in variants}
    rbits = {f"f{i}{v}": 0.0 for i, v in variants if v}
    for rounds in itertools.count():
        gens = {f"f{i}{v}": _lower(i, program.functions[i], program, [], names, v, ret, rbits)
                for i, v in variants}
        kept = {name: "int" for name, g in gens.items() if name in ret and g.returns <= {"int"}}
        promised: dict[str, float] = {}
        for name, r in rbits.items():
            bounds = gens[name].ret_bounds
            if bounds and None not in bounds:
                need = max(r, *(b for b in bounds if b is not None))
                if need <= BITS_SLACK and (need == r or rounds < 8):
                    promised[name] = need
        if kept == ret and promised == rbits:
            break
        ret, rbits = kept, promised
    body: list[str] = []
    for i, v in variants:
        body.extend(_lower(i, program.functions[i], program, line_map, names, v, ret,
                           rbits).src)
    return body


def _compile(program: Program, extra: Mapping[str, Builtin]) -> FastProgram | None:
    if any(not fn.depths for fn in program.functions):
        verify(program)
    names = _Names(_link(program, extra))
    line_map: list[tuple[int, int]] = []
    try:
        body = _lower_all(program, names, line_map)
    except _Unstructured:
        return None
    # Per run: only the runtime, its meter and the host constants are closure cells;
    # helpers and the program's linked builtins/constants are module globals of the
    # generated code (bound once per program), so starting a run costs little more
    # than making one closure per function.
    head = ["def _factory(rt, _load_name):", "    m = rt.meter",
            "    _mlim = m.budget.memory_bytes if m.budget.memory_bytes is not None else 1 << 62",
            "    _t = m.tick  # the meter's step countdown, kept in a cell while generated code runs",
            "    def _sync():",
            "        m.tick = _t",
            "    def _metered(it):  # a `for` over an iterator that may step: hand it _t",
            "        nonlocal _t",
            "        while True:",
            "            m.tick = _t",
            "            try:",
            "                v = next(it, _DONE)",
            "            finally:",
            "                _t = m.tick",
            "            if v is _DONE:",
            "                return",
            "            yield v"]
    tail = ["    return (" + "".join(f"f{i}, " for i in range(len(program.functions)))
            + "), _sync"]
    source = "\n".join(head + body + tail) + "\n"
    full_map = [(-1, -1)] * len(head) + line_map + [(-1, -1)]
    try:
        code = compile(source, GEN_FILENAME, "exec")
    except (SyntaxError, RecursionError, MemoryError, ValueError):
        return None  # e.g. Python's limit of 20 nested blocks: the interpreter runs it
    namespace: dict[str, Any] = {**_HELPERS, **names.values}
    exec(code, namespace)  # noqa: S102 - our own generated source, from verified bytecode
    return FastProgram(program, namespace["_factory"], full_map, source)


def _positioned(trap: Trap, tb: TracebackType | None, fast: FastProgram) -> Trap:
    """Recover the Vega call stack from the generated frames of the traceback."""
    program = fast.program
    stack: list[StackFrame] = []
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == GEN_FILENAME and code.co_name.startswith("f"):
            fn_index, pc = fast.line_map[tb.tb_lineno - 1]
            if fn_index >= 0 and pc != -2:  # -2: a generic entry delegating to "_i"
                fn = program.functions[fn_index]
                pos = fn.positions[pc] if 0 <= pc < len(fn.positions) else Pos(0, 0)
                stack.append(StackFrame(fn.name, program.filename, pos))
        tb = tb.tb_next
    trap.stack = stack
    trap.position = stack[-1].pos if stack else Pos(0, 0)
    return trap


def _ensure_recursion_room() -> None:
    """MAX_DEPTH Vega frames are MAX_DEPTH Python frames here, plus the host's."""
    need = MAX_DEPTH + 1000
    if sys.getrecursionlimit() < need:
        sys.setrecursionlimit(need)


def run_fast(program: Program, rt: Runtime, fn_index: int, args: list[Any], *,
             builtins: Mapping[str, Builtin] | None = None,
             constants: Mapping[str, Any] | None = None,
             finish: bool = True) -> RunOutcome:
    """Run one function on the fast tier (or the interpreter if the tier declines);
    the same contract as interp.run_function: never raises for a bad program.
    Compiling (once per program) is not counted in the run's wall time."""
    since = rt.meter.now()
    fast = compile_fast(program, builtins)
    rt.meter.exclude(since)
    if fast is None:
        return run_function(program, rt, fn_index, args, builtins=builtins,
                            constants=constants, finish=finish)
    return run_compiled(fast, rt, fn_index, args, constants=constants, finish=finish)


def run_compiled(fast: FastProgram, rt: Runtime, fn_index: int, args: list[Any], *,
                 constants: Mapping[str, Any] | None = None,
                 finish: bool = True) -> RunOutcome:
    """:func:`run_fast` of a program its host already lowered (``compile_fast``
    with the same builtins): a host that runs one program very often (a hook on
    every write) skips the per-run cache check."""
    program = fast.program
    consts = constants or {}

    def load_name(name: str) -> Any:
        if name not in consts:
            raise Trap("name", f"no constant named '{name}' in this host")
        return consts[name]

    _ensure_recursion_room()
    functions, sync = fast.factory(rt, load_name)
    try:
        fn = program.functions[fn_index]
        if len(args) != fn.nparams:
            raise Trap("arity", f"{fn.name}() takes {fn.nparams} arguments, got {len(args)}")
        try:
            value = functions[fn_index](*args, 1)
        finally:
            sync()  # the step count back into the meter, however the run ended
    except Trap as exc:
        trap = _positioned(exc, exc.__traceback__, fast)
    except Condition as cond:
        trap = _positioned(Trap("value", f"condition {cond.name} was not caught"),
                           cond.__traceback__, fast)
    except (RecursionError, MemoryError) as exc:
        trap = _positioned(Trap("internal", f"host limit: {type(exc).__name__}"),
                           exc.__traceback__, fast)
    except Exception as exc:  # noqa: BLE001 - the one place Python errors are contained
        trap = _positioned(Trap("internal", f"{type(exc).__name__}: {exc}"),
                           exc.__traceback__, fast)
    else:
        if finish:
            rt.finish()
        return RunOutcome(value, rt.meter.steps_used, None, rt.meter.memory_used)
    rt.abort(f"the run trapped: {trap.kind}")
    return RunOutcome(None, rt.meter.steps_used, trap_report(trap, program),
                      rt.meter.memory_used)

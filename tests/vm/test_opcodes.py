"""The opcode table is the truth: every opcode's stack effect is checked by running it.

The verifier computes, from the table's effects alone, the stack depth at every
pc; the interpreter in checking mode records the real depth before every
instruction it executes. They must agree everywhere, and the corpus must
execute every opcode of the table (a new opcode without a test fails here).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from vegafs.drivers import open_driver
from vegafs.vm import compile_source
from vegafs.vm.budget import Budget
from vegafs.vm.bytecode import (
    OPCODES,
    RESERVED_RANGES,
    EnvelopeError,
    Function,
    Op,
    Program,
    reserved_range,
    source_hash,
    verify,
)
from vegafs.vm.caps import Capabilities
from vegafs.vm.diagnostics import Pos
from vegafs.vm.interp import Interpreter
from vegafs.vm.runtime import Runtime
from vegafs.vm.stdlib.registry import Builtin
from vegafs.vm.values import Condition, Trap, VegaObject

LANG = Path(__file__).parent / "lang"


class Box(VegaObject):
    """A host object with a settable attribute (exercises GET_ATTR/SET_ATTR)."""

    __slots__ = ("v",)
    type_name = "box"

    def __init__(self) -> None:
        self.v = 0

    def get_attr(self, name: str) -> Any:
        if name == "v":
            return self.v
        return super().get_attr(name)

    def set_attr(self, name: str, value: Any) -> None:
        if name != "v":
            raise Trap("name", f"a box has no attribute '{name}'")
        self.v = value


def _raise(rt: Runtime, name: Any, payload: Any = None) -> None:
    raise Condition(name, payload)


EXTRA = {"raise_cond": Builtin("raise_cond", _raise, 1, 2),
         "box": Builtin("box", lambda rt: Box(), 0, 0)}
CONSTANTS = {"ANSWER": 42}

SNIPPETS = """
let b = box();
b.v = ANSWER;
print(b.v);
try { raise_cond("AgentFailed", "why"); } catch BudgetExceeded { } catch AgentFailed(r) { print(r); }
try {
    try { raise_cond("Timeout"); } catch BudgetExceeded { print("no"); }
} catch Timeout { print("outer"); }
"""


def _run_checked(source: str, name: str) -> tuple[Program, set[int]]:
    program = compile_source(source, name, builtins=EXTRA, constants=CONSTANTS)
    # Small limits: the trap_* files of the corpus stop quickly.
    rt = Runtime(Budget(steps=200_000, time_s=10.0, memory_bytes=4 << 20),
                 caps=Capabilities.all(), opener=open_driver, stdout=lambda s: None)
    rt.namespace.attach("/m", open_driver("mem://"), "mem://")
    interp = Interpreter(program, rt, builtins=EXTRA, constants=CONSTANTS, check_depths=True)
    assert program.main is not None
    with contextlib.suppress(Trap):  # trap tests end early; what ran before still counts
        interp.call(program.main, [])
    executed = set()
    by_name = {fn.name: fn for fn in program.functions}
    for (fn_name, pc), depth in interp.depth_log.items():
        fn = by_name[fn_name]
        assert fn.depths[pc] == depth, (name, fn_name, pc, OPCODES[fn.code[pc][0]].name)
        executed.add(fn.code[pc][0])
    return program, executed


def _corpus() -> list[tuple[str, str]]:
    items = [("snippets.vega", SNIPPETS)]
    for path in sorted(LANG.glob("*.vega")):
        text = path.read_text()
        if "// error:" not in text:
            items.append((path.name, text))
    return items


def test_every_opcode_runs_with_the_stack_effect_of_the_table() -> None:
    executed: set[int] = set()
    for name, source in _corpus():
        _, seen = _run_checked(source, name)
        executed |= seen
    # NOP is never emitted by the compiler; it is covered by the hand-made program below.
    missing = {OPCODES[c].name for c in OPCODES} - {OPCODES[c].name for c in executed} - {"NOP"}
    assert not missing, f"opcodes never executed by the corpus: {sorted(missing)}"


def _hand_program(code: list[tuple[int, int]], nlocals: int = 0) -> Program:
    fn = Function("<main>", 0, [f"l{i}" for i in range(nlocals)], code, [Pos(1, 1)] * len(code))
    return Program("hand.vega", "", source_hash(""), [7], [], [fn], 0)


def test_nop_and_a_hand_made_program() -> None:
    program = _hand_program([(Op.NOP, 0), (Op.CONST, 0), (Op.RETURN, 0)])
    verify(program)
    rt = Runtime()
    interp = Interpreter(program, rt, check_depths=True)
    assert interp.call(0, []) == 7
    assert program.functions[0].depths == [0, 0, 1]


def test_table_is_complete_and_documented() -> None:
    names = set()
    for code, info in OPCODES.items():
        assert 0 <= code <= 0xFF
        assert reserved_range(code) is None, f"{info.name} sits in a reserved range"
        assert info.doc and info.stack.startswith("(")
        pops, pushes = info.effect(3 << 8 | 2)
        assert pops >= 0 and pushes >= 0
        names.add(info.name)
    assert len(names) == len(OPCODES)
    assert [r[2] for r in RESERVED_RANGES] == ["supervision", "streaming", "budget", "parallel"]


def test_docs_list_every_opcode() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "bytecode.md").read_text()
    for code, info in OPCODES.items():
        assert f"| 0x{code:02X} | `{info.name}` |" in doc, info.name


@pytest.mark.parametrize("code, why", [
    ([(Op.POP, 0), (Op.NIL, 0), (Op.RETURN, 0)], "pops 1 of 0"),
    ([(Op.NIL, 0), (Op.JUMP_IF_TRUE, 0), (Op.NIL, 0), (Op.RETURN, 0)], "must jump forward"),
    ([(Op.NIL, 0), (Op.LOOP, 5), (Op.RETURN, 0)], "LOOP must jump backward"),
    ([(Op.CONST, 9), (Op.RETURN, 0)], "missing constant"),
    ([(Op.LOAD_LOCAL, 3), (Op.RETURN, 0)], "missing local slot"),
    ([(0x90, 0), (Op.NIL, 0), (Op.RETURN, 0)], "reserved for supervision"),
    ([(0xEE, 0), (Op.NIL, 0), (Op.RETURN, 0)], "unknown"),
    ([(Op.NIL, 0)], "terminator"),
    ([(Op.TRUE, 0), (Op.JUMP_IF_FALSE, 3), (Op.NIL, 0), (Op.NIL, 0), (Op.RETURN, 0)],
     "stack depth"),
])
def test_verifier_rejects_malformed_code(code: list[tuple[int, int]], why: str) -> None:
    with pytest.raises(EnvelopeError, match=why):
        verify(_hand_program(code))

"""A readable listing of a Program: what ``vegafs disasm`` prints and tests read.

One line per instruction: pc, source line:col, opcode, operand, and the
operand's meaning (the constant's value, the local's name, the symbol, the
jump target, the callee). Jump targets are marked with ``>>`` like CPython's
``dis``, so loops are visible at a glance.
"""

from __future__ import annotations

import json

from vegafs.vm.bytecode import OPCODES, Function, Program

_SYMBOL_OPS = frozenset({"LOAD_NAME", "GET_ATTR", "SET_ATTR", "MATCH_COND"})
_TARGET_OPS = frozenset({"JUMP", "JUMP_IF_FALSE", "JUMP_IF_TRUE", "LOOP", "FOR_ITER",
                         "TRY_BEGIN"})


def _const_text(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def describe_operand(program: Program, fn: Function, name: str, arg: int) -> str:
    """What an operand refers to, in words."""
    if name == "CONST":
        return _const_text(program.constants[arg])
    if name in ("LOAD_LOCAL", "STORE_LOCAL"):
        return fn.local_names[arg]
    if name in _SYMBOL_OPS:
        return program.symbols[arg]
    if name == "CALL":
        return f"{program.functions[arg >> 8].name}/{arg & 0xFF}"
    if name in ("CALL_BUILTIN", "CALL_METHOD"):
        return f"{program.symbols[arg >> 8]}/{arg & 0xFF}"
    if name in _TARGET_OPS:
        return f"to {arg}"
    if name in ("BUILD_LIST", "BUILD_MAP"):
        return f"{arg} {'items' if name == 'BUILD_LIST' else 'pairs'}"
    return ""


def disassemble_function(program: Program, fn: Function) -> str:
    targets = {arg for op, arg in fn.code if OPCODES[op].name in _TARGET_OPS}
    lines = [f"fn {fn.name}({', '.join(fn.local_names[:fn.nparams])})  "
             f"locals={fn.nlocals} max_stack={fn.max_stack}"]
    for pc, ((op, arg), pos) in enumerate(zip(fn.code, fn.positions, strict=True)):
        info = OPCODES[op]
        mark = ">>" if pc in targets else "  "
        operand = str(arg) if info.has_arg else ""
        meaning = describe_operand(program, fn, info.name, arg) if info.has_arg else ""
        where = f"{pos.line}:{pos.col}"
        lines.append(f"  {mark} {pc:4d}  {where:>7}  {info.name:<14}{operand:>7}  {meaning}".rstrip())
    return "\n".join(lines)


def disassemble(program: Program) -> str:
    """The whole program: header facts, the hook table, then every function."""
    out = [f"; {program.filename}  source sha256 {program.source_hash[:16]}",
           f"; {len(program.constants)} constants, {len(program.symbols)} symbols, "
           f"{len(program.functions)} functions"]
    if program.capabilities:
        out.append("; capabilities used: " + ", ".join(program.capabilities))
    for h in program.hooks:
        out.append(f"; hook {h.name} {h.when} {h.event} {json.dumps(h.glob)} -> "
                   f"{program.functions[h.run].name}  settings {json.dumps(h.settings, sort_keys=True)}")
    for fn in program.functions:
        out.append("")
        out.append(disassemble_function(program, fn))
    return "\n".join(out)

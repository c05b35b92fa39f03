"""The bytecode of Vega: the opcode table, the Program, the envelope and its cache.

**Opcode table.** Every instruction is 4 bytes: the opcode (u8) and one
operand (u24, little-endian; 0 when unused). ``Op`` and ``OPCODES`` below are
the single source of truth: code, name, whether it takes an operand, its stack effect
(``pops, pushes`` as a function of the operand, plus the effect when a
conditional jump is taken) and one line of meaning. ``docs/bytecode.md``
reproduces it and a test runs every opcode checking the effects.

Ranges: 0x00-0x8F the core (below); 0x90-0x9F supervision, 0xA0-0xAF
streaming, 0xB0-0xBF budget scopes, 0xC0-0xCF parallel are *reserved* for the
features of seed 001 and rejected by the loader until they exist.

**Shape, for the fast tier.** Control flow is structured: forward jumps
(JUMP*, FOR_ITER, TRY_BEGIN) only go forward, and the only backward jump is
LOOP, which is also the only back-edge (so it is where a step is counted).
Locals live in numbered slots (``nlocals`` per function); there are no
globals. Every function's stack depth at every pc is fixed and verified
(``verify``), so the code can be lowered to Python code objects.

**Steps.** One step is charged by each LOOP executed (a back-edge, taken) and
by each call (CALL, CALL_BUILTIN, CALL_METHOD), before the call runs.
Nothing else costs a step; builtins may charge extra steps for big work.

**Envelope** (seed 002): a fixed binary prelude, a JSON header, a binary
payload. Prelude (52 bytes): magic ``b"VEGA\\x00BC\\n"``, u16 format version,
u16 reserved (0), u32 header length, u32 payload length, sha-256 of header +
payload. The header holds the source hash, constants, symbols, functions
(with offsets into the payload), hooks and capabilities; the payload holds the
code, the line tables and the source text. ``decode`` validates everything
structurally (magic, version, lengths, hash, JSON shape, every operand in
range, stack depths) before a Program is built; anything wrong is rejected
with ``EnvelopeError`` and the caller recompiles from source.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from enum import IntEnum

from vegafs.vm.diagnostics import Pos

FORMAT_VERSION = 1
MAGIC = b"VEGA\x00BC\n"
_PRELUDE = struct.Struct("<8sHHII32s")
PRELUDE_SIZE = _PRELUDE.size
MAX_OPERAND = (1 << 24) - 1
RESERVED_RANGES = ((0x90, 0x9F, "supervision"), (0xA0, 0xAF, "streaming"),
                   (0xB0, 0xBF, "budget"), (0xC0, 0xCF, "parallel"))


class EnvelopeError(Exception):
    """A compiled artifact is corrupt, foreign or from another format version."""


Effect = Callable[[int], tuple[int, int]]


def _fixed(pops: int, pushes: int) -> Effect:
    return lambda arg: (pops, pushes)


@dataclass(frozen=True)
class OpInfo:
    code: int
    name: str
    has_arg: bool
    effect: Effect  # fall-through stack effect: (pops, pushes)
    jump_effect: Effect | None  # effect when the jump is taken (jumps only)
    stack: str  # the stack-effect comment, Forth style
    doc: str


def _argc(arg: int) -> int:
    return arg & 0xFF


class Op(IntEnum):
    """The opcode numbers, named for the compiler and the interpreters.

    A class (not ``IntEnum("Op", ...)`` built from the table) so that mypy sees
    every member; ``_TABLE`` below gives each one its operand, effects and doc.
    """

    NOP = 0x00
    CONST = 0x01
    NIL = 0x02
    TRUE = 0x03
    FALSE = 0x04
    POP = 0x05
    DUP = 0x06
    LOAD_NAME = 0x07
    LOAD_LOCAL = 0x10
    STORE_LOCAL = 0x11
    ADD = 0x20
    SUB = 0x21
    MUL = 0x22
    DIV = 0x23
    MOD = 0x24
    NEG = 0x25
    NOT = 0x26
    EQ = 0x28
    NE = 0x29
    LT = 0x2A
    LE = 0x2B
    GT = 0x2C
    GE = 0x2D
    JUMP = 0x30
    JUMP_IF_FALSE = 0x31
    JUMP_IF_TRUE = 0x32
    LOOP = 0x33
    BUILD_LIST = 0x40
    BUILD_MAP = 0x41
    INDEX = 0x42
    STORE_INDEX = 0x43
    GET_ATTR = 0x44
    SET_ATTR = 0x45
    CALL = 0x50
    CALL_BUILTIN = 0x51
    CALL_METHOD = 0x52
    RETURN = 0x53
    GET_ITER = 0x60
    FOR_ITER = 0x61
    TRY_BEGIN = 0x70
    TRY_END = 0x71
    MATCH_COND = 0x72
    COND_PAYLOAD = 0x73
    RERAISE = 0x74


_TABLE: list[tuple[Op, bool, Effect, Effect | None, str, str]] = [
    # opcode, has_arg, effect, jump_effect, stack comment, meaning
    (Op.NOP, False, _fixed(0, 0), None, "( -- )", "does nothing"),
    (Op.CONST, True, _fixed(0, 1), None, "( -- k )", "push constant #arg"),
    (Op.NIL, False, _fixed(0, 1), None, "( -- nil )", "push nil"),
    (Op.TRUE, False, _fixed(0, 1), None, "( -- true )", "push true"),
    (Op.FALSE, False, _fixed(0, 1), None, "( -- false )", "push false"),
    (Op.POP, False, _fixed(1, 0), None, "( v -- )", "discard the top"),
    (Op.DUP, False, _fixed(1, 2), None, "( v -- v v )", "duplicate the top"),
    (Op.LOAD_NAME, True, _fixed(0, 1), None, "( -- v )",
     "push the host constant named by symbol #arg (e.g. EPERM in hooks)"),
    (Op.LOAD_LOCAL, True, _fixed(0, 1), None, "( -- v )", "push local slot #arg"),
    (Op.STORE_LOCAL, True, _fixed(1, 0), None, "( v -- )", "pop into local slot #arg"),
    (Op.ADD, False, _fixed(2, 1), None, "( a b -- a+b )",
     "add numbers/durations/money, concatenate str or list"),
    (Op.SUB, False, _fixed(2, 1), None, "( a b -- a-b )", "subtract"),
    (Op.MUL, False, _fixed(2, 1), None, "( a b -- a*b )", "multiply; str*int repeats"),
    (Op.DIV, False, _fixed(2, 1), None, "( a b -- a/b )",
     "divide: int/int floors, else float; /0 traps"),
    (Op.MOD, False, _fixed(2, 1), None, "( a b -- a%b )", "modulo (floored); %0 traps"),
    (Op.NEG, False, _fixed(1, 1), None, "( a -- -a )", "negate a number"),
    (Op.NOT, False, _fixed(1, 1), None, "( b -- !b )", "boolean not (operand must be bool)"),
    (Op.EQ, False, _fixed(2, 1), None, "( a b -- a==b )", "equality (slices by content)"),
    (Op.NE, False, _fixed(2, 1), None, "( a b -- a!=b )", "inequality"),
    (Op.LT, False, _fixed(2, 1), None, "( a b -- a<b )", "less than (same-kind operands)"),
    (Op.LE, False, _fixed(2, 1), None, "( a b -- a<=b )", "less or equal"),
    (Op.GT, False, _fixed(2, 1), None, "( a b -- a>b )", "greater than"),
    (Op.GE, False, _fixed(2, 1), None, "( a b -- a>=b )", "greater or equal"),
    (Op.JUMP, True, _fixed(0, 0), _fixed(0, 0), "( -- )", "jump forward to pc #arg"),
    (Op.JUMP_IF_FALSE, True, _fixed(1, 0), _fixed(1, 0), "( b -- )",
     "pop a bool; jump forward to #arg if false"),
    (Op.JUMP_IF_TRUE, True, _fixed(1, 0), _fixed(1, 0), "( b -- )",
     "pop a bool; jump forward to #arg if true"),
    (Op.LOOP, True, _fixed(0, 0), _fixed(0, 0), "( -- )",
     "jump backward to pc #arg; the back-edge: costs one step"),
    (Op.BUILD_LIST, True, lambda n: (n, 1), None, "( v1..vn -- list )",
     "make a list of the top #arg values (slices trap)"),
    (Op.BUILD_MAP, True, lambda n: (2 * n, 1), None, "( k1 v1..kn vn -- map )",
     "make a map of #arg pairs (slices trap)"),
    (Op.INDEX, False, _fixed(2, 1), None, "( obj i -- obj[i] )",
     "index a list/str (int, negative from the end) or a map (missing key: nil)"),
    (Op.STORE_INDEX, False, _fixed(3, 0), None, "( obj i v -- )",
     "obj[i] = v on a list or map (slices trap)"),
    (Op.GET_ATTR, True, _fixed(1, 1), None, "( obj -- obj.name )",
     "read attribute symbol #arg of a host object"),
    (Op.SET_ATTR, True, _fixed(2, 0), None, "( obj v -- )",
     "set attribute symbol #arg of a host object (if it allows it)"),
    (Op.CALL, True, lambda a: (_argc(a), 1), None, "( a1..an -- r )",
     "call fn #(arg>>8) with n=arg&255 arguments; one step"),
    (Op.CALL_BUILTIN, True, lambda a: (_argc(a), 1), None, "( a1..an -- r )",
     "call builtin symbol #(arg>>8) with n=arg&255 arguments; one step"),
    (Op.CALL_METHOD, True, lambda a: (_argc(a) + 1, 1), None, "( obj a1..an -- r )",
     "call method symbol #(arg>>8) of obj with n=arg&255 arguments; one step"),
    (Op.RETURN, False, _fixed(1, 0), None, "( v -- )",
     "return v to the caller (a slice traps)"),
    (Op.GET_ITER, False, _fixed(1, 1), None, "( iterable -- iter )",
     "start iterating a list, map (keys), range, str or builtin iterator"),
    (Op.FOR_ITER, True, _fixed(1, 2), _fixed(1, 0), "( iter -- iter v ) or ( iter -- )",
     "push the next value, or pop the iterator and jump forward to #arg when done"),
    (Op.TRY_BEGIN, True, _fixed(0, 0), None, "( -- )",
     "install a handler at pc #arg for conditions raised until TRY_END"),
    (Op.TRY_END, False, _fixed(0, 0), None, "( -- )", "remove the innermost handler"),
    (Op.MATCH_COND, True, _fixed(1, 2), None, "( c -- c b )",
     "is condition c named symbol #arg?"),
    (Op.COND_PAYLOAD, False, _fixed(1, 1), None, "( c -- payload )",
     "replace a condition by its payload"),
    (Op.RERAISE, False, _fixed(1, 0), None, "( c -- )",
     "no catch clause matched: raise c again to the next handler"),
]

OPCODES: dict[int, OpInfo] = {}
for _op, _arg, _eff, _jeff, _stack, _doc in _TABLE:
    OPCODES[_op.value] = OpInfo(_op.value, _op.name, _arg, _eff, _jeff, _stack, _doc)
if len(OPCODES) != len(Op):  # every opcode described exactly once
    raise AssertionError(f"opcode table covers {len(OPCODES)} of {len(Op)} opcodes")
BY_NAME = {info.name: info.code for info in OPCODES.values()}

JUMPS = frozenset({BY_NAME[n] for n in ("JUMP", "JUMP_IF_FALSE", "JUMP_IF_TRUE", "FOR_ITER")})
TERMINATORS = frozenset({BY_NAME[n] for n in ("JUMP", "LOOP", "RETURN", "RERAISE")})


def reserved_range(code: int) -> str | None:
    for lo, hi, what in RESERVED_RANGES:
        if lo <= code <= hi:
            return what
    return None


# ------------------------------------------------------------------ program


@dataclass
class Function:
    name: str
    nparams: int
    local_names: list[str]
    code: list[tuple[int, int]]  # (opcode, operand)
    positions: list[Pos]  # one per instruction
    max_stack: int = 0
    depths: list[int | None] = field(default_factory=list)  # stack depth per pc (None: dead)

    @property
    def nlocals(self) -> int:
        return len(self.local_names)


@dataclass
class Hook:
    """One entry of a module's hook table (plain data + the index of its run fn)."""

    name: str
    when: str  # "on" | "after"
    event: str
    glob: str
    settings: dict[str, object]
    run: int
    line: int

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "when": self.when, "event": self.event, "glob": self.glob,
                "settings": self.settings, "run": self.run, "line": self.line}


@dataclass
class Program:
    """A compiled file: what the interpreter (and the fast tier) run."""

    filename: str
    source: str
    source_hash: str
    constants: list[object]
    symbols: list[str]
    functions: list[Function]
    main: int | None
    hooks: list[Hook] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)
    env_hash: str = ""  # fingerprint of the names it was checked against (cache key)


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


# ------------------------------------------------------------------ verification


def verify(program: Program) -> None:
    """Check every operand is in range and the stack depth is consistent at every pc.

    Sets ``max_stack`` of each function. Raises EnvelopeError on any violation, so
    the interpreter never sees an out-of-range index (the fast tier relies on it).
    """
    for fn in program.functions:
        fn.max_stack, fn.depths = _verify_function(fn, program)


_FORWARD = frozenset({"JUMP", "JUMP_IF_FALSE", "JUMP_IF_TRUE", "FOR_ITER", "TRY_BEGIN"})


def _verify_function(fn: Function, program: Program) -> tuple[int, list[int | None]]:
    code = fn.code
    n = len(code)
    if n == 0 or code[-1][0] not in TERMINATORS:
        raise EnvelopeError(f"{fn.name}: code does not end with a terminator")
    if len(fn.positions) != n:
        raise EnvelopeError(f"{fn.name}: line table has {len(fn.positions)} entries, not {n}")
    depth: list[int | None] = [None] * n
    depth[0] = 0
    work = [0]
    max_depth = 0

    def flow(target: int, d: int, pc: int) -> None:
        if not 0 <= target < n:
            raise EnvelopeError(f"{fn.name}: pc {pc} jumps outside the code ({target})")
        if depth[target] is None:
            depth[target] = d
            work.append(target)
        elif depth[target] != d:
            raise EnvelopeError(f"{fn.name}: stack depth {d} != {depth[target]} at pc {target}")

    while work:
        pc = work.pop()
        d = depth[pc]
        assert d is not None
        op, arg = code[pc]
        info = OPCODES.get(op)
        if info is None:
            what = reserved_range(op)
            raise EnvelopeError(f"{fn.name}: pc {pc}: opcode 0x{op:02x} is "
                                + (f"reserved for {what}" if what else "unknown"))
        if not 0 <= arg <= MAX_OPERAND or (not info.has_arg and arg):
            raise EnvelopeError(f"{fn.name}: pc {pc}: bad operand {arg} for {info.name}")
        _check_operand(fn, pc, info.name, arg, program)
        pops, pushes = info.effect(arg)
        if d < pops:
            raise EnvelopeError(f"{fn.name}: pc {pc}: {info.name} pops {pops} of {d}")
        after = d - pops + pushes
        max_depth = max(max_depth, after, d)
        if info.name in _FORWARD and arg <= pc:
            raise EnvelopeError(f"{fn.name}: pc {pc}: {info.name} must jump forward")
        if info.name == "LOOP" and arg > pc:
            raise EnvelopeError(f"{fn.name}: pc {pc}: LOOP must jump backward")
        if info.jump_effect is not None:
            jp, jpush = info.jump_effect(arg)
            flow(arg, d - jp + jpush, pc)
        if info.name == "TRY_BEGIN":
            flow(arg, d + 1, pc)  # the handler starts with the condition pushed
        if op in TERMINATORS:
            continue
        if pc + 1 >= n:
            raise EnvelopeError(f"{fn.name}: pc {pc}: execution falls off the end of the code")
        flow(pc + 1, after, pc)
    return max_depth, depth


def _check_operand(fn: Function, pc: int, name: str, arg: int, program: Program) -> None:
    nconst, nsym, nfn = len(program.constants), len(program.symbols), len(program.functions)
    bad = None
    if name == "CONST" and arg >= nconst:
        bad = "constant"
    elif name in ("LOAD_LOCAL", "STORE_LOCAL") and arg >= fn.nlocals:
        bad = "local slot"
    elif (name in ("LOAD_NAME", "GET_ATTR", "SET_ATTR", "MATCH_COND") and arg >= nsym) or (
            name in ("CALL_BUILTIN", "CALL_METHOD") and (arg >> 8) >= nsym):
        bad = "symbol"
    elif name == "CALL":
        if (arg >> 8) >= nfn:
            bad = "function"
        elif program.functions[arg >> 8].nparams != (arg & 0xFF):
            bad = "argument count"
    if bad:
        raise EnvelopeError(f"{fn.name}: pc {pc}: {name} refers to a missing {bad} ({arg})")


# ------------------------------------------------------------------ constants


def _const_to_json(value: object) -> list[object]:
    if type(value) is int:
        return ["int", str(value)]
    if type(value) is float:
        return ["float", value.hex()]
    if type(value) is str:
        return ["str", value]
    # Duration / Money come from the runtime's values module; encode by shape.
    if hasattr(value, "ns"):
        return ["duration", str(value.ns)]
    if hasattr(value, "amount"):
        return ["money", str(value.amount)]
    raise EnvelopeError(f"cannot encode constant {value!r}")


def _const_from_json(item: object) -> object:
    from vegafs.vm.values import Duration, Money

    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], str)):
        raise EnvelopeError("malformed constant")
    kind, text = item
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float.fromhex(text)
        if kind == "str":
            return text
        if kind == "duration":
            return Duration(int(text))
        if kind == "money":
            return Money(Decimal(text))
    except (ValueError, ArithmeticError) as exc:
        raise EnvelopeError(f"malformed constant {item!r}") from exc
    raise EnvelopeError(f"unknown constant kind {kind!r}")


# ------------------------------------------------------------------ envelope

_INSN = struct.Struct("<I")
_POS = struct.Struct("<IH")


def encode(program: Program) -> bytes:
    """Serialize a Program into a self-contained envelope."""
    payload = bytearray()
    functions = []
    for fn in program.functions:
        code_off = len(payload)
        for op, arg in fn.code:
            payload += _INSN.pack(op | (arg << 8))
        lines_off = len(payload)
        for p in fn.positions:
            payload += _POS.pack(p.line, min(p.col, 0xFFFF))
        functions.append({"name": fn.name, "nparams": fn.nparams, "locals": fn.local_names,
                          "max_stack": fn.max_stack, "code": [code_off, len(fn.code)],
                          "lines": lines_off})
    src = program.source.encode("utf-8", "surrogatepass")
    source_off = len(payload)
    payload += src
    header = {
        "format": FORMAT_VERSION,
        "filename": program.filename,
        "source_hash": program.source_hash,
        "source": [source_off, len(src)],
        "constants": [_const_to_json(c) for c in program.constants],
        "symbols": program.symbols,
        "functions": functions,
        "main": program.main,
        "hooks": [h.to_json() for h in program.hooks],
        "capabilities": program.capabilities,
        "env_hash": program.env_hash,
    }
    hdr = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    digest = hashlib.sha256(hdr + payload).digest()
    return _PRELUDE.pack(MAGIC, FORMAT_VERSION, 0, len(hdr), len(payload), digest) + hdr + payload


def _want(cond: bool, what: str) -> None:
    if not cond:
        raise EnvelopeError(what)


def decode(blob: bytes) -> Program:
    """Validate and load an envelope; raise EnvelopeError if anything is off."""
    _want(len(blob) >= PRELUDE_SIZE, "too short for a Vega envelope")
    magic, version, reserved, hlen, plen, digest = _PRELUDE.unpack_from(blob)
    _want(magic == MAGIC, "not a Vega envelope (bad magic)")
    _want(version == FORMAT_VERSION, f"envelope format {version}, this VM reads {FORMAT_VERSION}")
    _want(reserved == 0, "reserved prelude field is not zero")
    _want(len(blob) == PRELUDE_SIZE + hlen + plen, "envelope length does not match its prelude")
    body = blob[PRELUDE_SIZE:]
    _want(hashlib.sha256(body).digest() == digest, "envelope checksum mismatch")
    hdr_bytes, payload = body[:hlen], body[hlen:]
    try:
        header = json.loads(hdr_bytes)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise EnvelopeError("header is not JSON") from exc
    _want(isinstance(header, dict) and header.get("format") == FORMAT_VERSION, "bad header")
    try:
        return _program_from(header, payload)
    except (KeyError, TypeError, ValueError, IndexError, struct.error) as exc:
        raise EnvelopeError(f"malformed header: {exc}") from exc


def _span(payload: bytes, off: int, length: int) -> bytes:
    _want(isinstance(off, int) and isinstance(length, int) and off >= 0
          and length >= 0 and off + length <= len(payload), "section outside the payload")
    return payload[off:off + length]


def _program_from(header: dict, payload: bytes) -> Program:
    source = _span(payload, *header["source"]).decode("utf-8", "surrogatepass")
    symbols = header["symbols"]
    _want(isinstance(symbols, list) and all(isinstance(s, str) for s in symbols), "bad symbols")
    functions = []
    for f in header["functions"]:
        code_off, count = f["code"]
        raw = _span(payload, code_off, 4 * count)
        code = [(w & 0xFF, w >> 8) for (w,) in _INSN.iter_unpack(raw)]
        lraw = _span(payload, f["lines"], _POS.size * count)
        positions = [Pos(line, col) for line, col in _POS.iter_unpack(lraw)]
        names = f["locals"]
        _want(isinstance(names, list) and all(isinstance(n, str) for n in names), "bad locals")
        nparams = f["nparams"]
        _want(isinstance(nparams, int) and 0 <= nparams <= len(names), "bad nparams")
        functions.append(Function(str(f["name"]), nparams, names, code, positions))
    main = header["main"]
    _want(main is None or (isinstance(main, int) and 0 <= main < len(functions)), "bad main")
    hooks = []
    for h in header["hooks"]:
        _want(isinstance(h["run"], int) and 0 <= h["run"] < len(functions), "bad hook run fn")
        _want(isinstance(h["settings"], dict), "bad hook settings")
        hooks.append(Hook(str(h["name"]), str(h["when"]), str(h["event"]), str(h["glob"]),
                          h["settings"], h["run"], int(h["line"])))
    program = Program(str(header["filename"]), source, str(header["source_hash"]),
                      [_const_from_json(c) for c in header["constants"]], symbols, functions,
                      main, hooks, [str(c) for c in header["capabilities"]],
                      str(header["env_hash"]))
    _want(source_hash(source) == program.source_hash, "source text does not match its hash")
    verify(program)
    return program

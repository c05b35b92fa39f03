"""Vega: the language of vegafs hooks and scripts — compiler, bytecode and VM.

What this package owns: the whole language pipeline, standalone (no FUSE, no
store): source -> lark LALR parser (``grammar.lark``, ``parser.py``) -> AST
(``ast.py``) -> checks and name resolution (``checker.py``) -> bytecode
(``compiler.py``, ``bytecode.py``: opcode table, envelope, cache) -> the
reference interpreter (``interp.py``); beside it the runtime (``values``,
``budget``, ``caps``, ``vfs``, ``runtime``, ``stdlib``: slices, budgets,
capabilities, the VFS and the builtins).

What it must never do: import the store, the filesystem, FUSE, hooks, drivers
or the CLI (a test enforces it); give a program any authority its host did
not hand it (drivers, capabilities); let a Python exception or traceback reach
a user for a bad program — every failure is a ``VegaCompileError`` (all
diagnostics of a file), or a ``TrapReport`` in a ``RunOutcome``.

Invariants: a Program is immutable once built and verified (operands in range,
fixed stack depth per pc); steps are charged exactly at back-edges and calls;
a trap aborts the run and invalidates every slice; compiled envelopes are
validated structurally before use and recompiled from source when anything is
off.

Public API::

    program = compile_source(text, filename)         # raises VegaCompileError
    program = load_program(path)                      # same, through the envelope cache
    outcome = run_program(program, runtime)           # RunOutcome(value, steps, trap)
    outcome = run_program(program, runtime, tier="fast")   # the fast tier, same contract
    for hook in program.hooks: ...                    # the hook table (plain data)
    outcome = run_hook(program, hook, runtime, ev)    # run one hook's run(ev)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vegafs.vm.bytecode import EnvelopeError, Hook, Program, decode, encode, source_hash
from vegafs.vm.checker import Environment, Signature, check
from vegafs.vm.compiler import compile_module
from vegafs.vm.diagnostics import (
    Diagnostic,
    Pos,
    TrapReport,
    VegaCompileError,
    VegaError,
)
from vegafs.vm.interp import RunOutcome, run_function
from vegafs.vm.parser import parse, too_deep
from vegafs.vm.runtime import Runtime
from vegafs.vm.stdlib import BUILTINS, MODULES, Builtin

__all__ = [
    "CACHE_DIR", "DEFAULT_TIER", "TIERS", "Diagnostic", "cache_path", "EnvelopeError", "Environment", "Hook", "Pos", "Program",
    "RunOutcome", "Runtime", "TrapReport", "VegaCompileError", "VegaError",
    "compile_source", "default_environment", "load_program", "run_hook", "run_program",
]

#: Compiled envelopes are cached in this directory next to the source file.
CACHE_DIR = "__vegacache__"
#: Execution tiers: "interp" (the reference interpreter, interp.py) and "fast"
#: (bytecode lowered to Python code objects, fast.py; same RunOutcome contract,
#: differential-tested against the interpreter).
TIERS = ("interp", "fast")
DEFAULT_TIER = "fast"


def _signature(b: Builtin) -> Signature:
    return Signature(b.min_args, b.max_args, b.cap)


def default_environment(builtins: Mapping[str, Builtin] | None = None,
                        constants: Iterable[str] = ()) -> Environment:
    """The stdlib's names, plus a host's extra builtins (``allow``/``deny``) and constants."""
    env = Environment({k: _signature(b) for k, b in BUILTINS.items()},
                      {m: {k: _signature(b) for k, b in fns.items()} for m, fns in MODULES.items()})
    extra = {k: _signature(b) for k, b in (builtins or {}).items()}
    return env.extended(extra, constants)


def _env_hash(env: Environment) -> str:
    h = hashlib.sha256()
    for name, sig in sorted(env.builtins.items()):
        h.update(f"{name}/{sig.min_args}/{sig.max_args}/{sig.capability};".encode())
    for mod, fns in sorted(env.modules.items()):
        for name, sig in sorted(fns.items()):
            h.update(f"{mod}::{name}/{sig.min_args}/{sig.max_args}/{sig.capability};".encode())
    h.update(",".join(sorted(env.constants)).encode())
    return h.hexdigest()[:16]


def compile_source(text: str, filename: str = "<input>", *,
                   builtins: Mapping[str, Builtin] | None = None,
                   constants: Iterable[str] = ()) -> Program:
    """Compile Vega source to a verified Program, or raise VegaCompileError with
    every diagnostic of the file. ``builtins``/``constants`` are a host's extra
    names (the hooks layer passes ``allow``, ``deny``, ``EPERM``...)."""
    env = default_environment(builtins, constants)
    module = parse(text, filename)
    try:
        resolution, diags = check(module, env)
        if diags:
            raise VegaCompileError(diags, text)
        program = compile_module(module, resolution, text, diags)
    except RecursionError:
        raise too_deep(filename, text) from None
    if diags:
        raise VegaCompileError(diags, text)
    program.env_hash = _env_hash(env)
    return program


def cache_path(path: Path) -> Path:
    """Where the envelope of ``dir/x.vega`` is cached: ``dir/__vegacache__/x.vegac``."""
    return path.parent / CACHE_DIR / (path.name + "c")


def load_program(path: str | os.PathLike[str], *, use_cache: bool = True,
                 builtins: Mapping[str, Builtin] | None = None,
                 constants: Iterable[str] = ()) -> Program:
    """Compile a file, reusing its cached envelope when it is valid for this source
    and this environment; a corrupt, foreign or stale envelope is ignored and
    replaced. Caching is best effort: an unwritable directory just skips it."""
    path = Path(path)
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    filename = str(path)
    constants = tuple(constants)
    cached = cache_path(path)
    want_env = _env_hash(default_environment(builtins, constants))
    if use_cache:
        try:
            program = decode(cached.read_bytes())
        except (OSError, EnvelopeError):
            program = None
        if (program is not None and program.source_hash == source_hash(text)
                and program.env_hash == want_env and program.filename == filename):
            return program
    program = compile_source(text, filename, builtins=builtins, constants=constants)
    if use_cache:
        _store_envelope(cached, encode(program))
    return program


def _store_envelope(target: Path, blob: bytes) -> None:
    """Publish atomically (tmp + rename) so a reader never sees half an envelope."""
    try:
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, target)
    except OSError:
        return


def _runner(tier: str) -> Any:
    if tier == "interp":
        return run_function
    if tier == "fast":
        from vegafs.vm.fast import run_fast

        return run_fast
    raise ValueError(f"unknown execution tier {tier!r} (known: {', '.join(TIERS)})")


def run_program(program: Program, runtime: Runtime, *,
                builtins: Mapping[str, Builtin] | None = None,
                constants: Mapping[str, Any] | None = None,
                finish: bool = True, tier: str = DEFAULT_TIER) -> RunOutcome:
    """Run a script's main body (arguments are on the Runtime: ``args()``)."""
    if program.main is None:
        raise ValueError(f"{program.filename} declares hooks; it has no main body to run")
    return _runner(tier)(program, runtime, program.main, [], builtins=builtins,
                         constants=constants, finish=finish)


def run_hook(program: Program, hook: Hook | str, runtime: Runtime, ev: Any, *,
             builtins: Mapping[str, Builtin] | None = None,
             constants: Mapping[str, Any] | None = None,
             finish: bool = True, tier: str = DEFAULT_TIER) -> RunOutcome:
    """Run one hook's ``run(ev)``; the outcome's value is what it returned."""
    if isinstance(hook, str):
        matches = [h for h in program.hooks if h.name == hook]
        if not matches:
            raise KeyError(f"no hook named {hook!r} in {program.filename}")
        hook = matches[0]
    return _runner(tier)(program, runtime, hook.run, [ev], builtins=builtins,
                         constants=constants, finish=finish)

"""``vegafs check``, ``vegafs disasm`` and ``vegafs run``: Vega from the command line.

Exit codes of ``run`` (documented in docs/vega.md): 0 success, 1 usage or
setup error (bad option, driver that cannot open), 2 compile error, 3 trap,
4 budget stop (a trap whose kind is budget_*). Every message goes to stderr as
``file:line:col: ...`` with the source line and a caret; never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vegafs.cli.errors import CliError
from vegafs.cli.options import add_s3_options, apply_s3_options

EXIT_COMPILE = 2
EXIT_TRAP = 3
EXIT_BUDGET = 4

#: What `vegafs run` grants on each mounted path when no --allow is given.
DEFAULT_GRANTS = ("fs::read", "fs::write", "meta::read", "meta::write")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("check", help="compile Vega files and report every error")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_check)

    p = subparsers.add_parser("disasm", help="show the bytecode of a Vega file")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_disasm)

    p = subparsers.add_parser(
        "run", help="run a Vega script",
        description="Run FILE.vega. Exit 0 on success, 2 on a compile error, 3 on a trap, "
                    "4 when a budget (steps, time, memory) stops it.")
    _run_options(p)
    p.add_argument("file", metavar="FILE.vega")
    # Everything after FILE: script arguments and run options in any order
    # (re-parsed by _split_run_args), so `vegafs run x.vega a b --max-steps 9` works.
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="ARG",
                   help="arguments seen by args() (after -- if they start with -)")
    p.set_defaults(func=cmd_run)


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="step budget (default 100000000)")
    p.add_argument("--max-time", default=None, metavar="D",
                   help="wall-time budget, e.g. 500ms, 5s (default 30s)")
    p.add_argument("--max-memory", default=None, metavar="S",
                   help="memory budget, e.g. 64mb (default 256mb)")
    p.add_argument("--allow", action="append", default=[], metavar="CAP[:GLOB]",
                   help="grant a capability, e.g. fs::read:/in/** (repeatable); default: "
                        "read/write data and metadata under every mounted path")
    p.add_argument("--mount", action="append", default=[], metavar="PATH=URI",
                   help="mount a driver into the script's namespace, e.g. /in=posix:///data "
                        "(repeatable)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the "
                   "compiled envelope cache")
    p.add_argument("--tier", default=None, choices=("interp", "fast"),
                   help="execution tier (default: the library's DEFAULT_TIER)")
    add_s3_options(p)  # for --mount PATH=s3://BUCKET/PREFIX


def _split_run_args(args: argparse.Namespace) -> None:
    """Parse run options that came after FILE; what is left are the script's args."""
    rest = list(args.rest)
    tail: list[str] = []
    if "--" in rest:
        cut = rest.index("--")
        rest, tail = rest[:cut], rest[cut + 1:]
    inner = argparse.ArgumentParser(prog="vegafs run FILE", add_help=False)
    _run_options(inner)
    inner.add_argument("script_args", nargs="*")
    try:
        parsed = inner.parse_intermixed_args(rest)
    except SystemExit:
        raise CliError("run: cannot parse the options after FILE (see vegafs run -h)", 1) \
            from None
    for name in ("max_steps", "max_time", "max_memory"):
        if getattr(parsed, name) is not None:
            setattr(args, name, getattr(parsed, name))
    args.allow = args.allow + parsed.allow
    args.mount = args.mount + parsed.mount
    args.no_cache = args.no_cache or parsed.no_cache
    args.tier = parsed.tier or args.tier
    args.s3_endpoint = parsed.s3_endpoint or args.s3_endpoint
    args.cache_size = parsed.cache_size if parsed.cache_size is not None else args.cache_size
    args.args = parsed.script_args + tail


def _hook_names() -> tuple[dict[str, Any], dict[str, Any]]:
    """The names the hooks layer gives hook code (allow, deny, revert, EPERM...),
    so `vegafs check` accepts hook files exactly as the hooks engine compiles
    them; empty if the hooks layer is not installed."""
    try:
        from vegafs.hooks.vega import HOOK_BUILTINS, HOOK_CONSTANTS
    except ImportError:
        return {}, {}
    return dict(HOOK_BUILTINS), dict(HOOK_CONSTANTS)


def _compile(path: Path, use_cache: bool = False) -> Any:
    from vegafs.vm import VegaCompileError, load_program
    from vegafs.vm.parser import parse

    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}", 1) from None
    try:
        has_hooks = bool(parse(text, str(path)).hooks)
    except VegaCompileError:
        has_hooks = False  # load_program reports the syntax error below
    builtins, constants = _hook_names() if has_hooks else ({}, {})
    try:
        return load_program(path, use_cache=use_cache, builtins=builtins, constants=constants)
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror or exc}", 1) from None


def cmd_check(args: argparse.Namespace) -> int:
    from vegafs.vm import VegaCompileError

    failed = 0
    for name in args.files:
        try:
            program = _compile(Path(name))
        except VegaCompileError as exc:
            failed += 1
            print(exc.render(), file=sys.stderr)
            n = len(exc.diagnostics)
            print(f"{name}: {n} error{'s' if n != 1 else ''}", file=sys.stderr)
            continue
        hooks = f", {len(program.hooks)} hook(s)" if program.hooks else ""
        print(f"{name}: ok ({len(program.functions)} function(s){hooks})")
    return EXIT_COMPILE if failed else 0


def cmd_disasm(args: argparse.Namespace) -> int:
    from vegafs.vm import VegaCompileError
    from vegafs.vm.disasm import disassemble

    try:
        program = _compile(Path(args.file))
    except VegaCompileError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_COMPILE
    print(disassemble(program))
    return 0


def _unit(text: str, kinds: tuple[str, ...], option: str, example: str) -> Any:
    """Parse a duration or size with Vega's own literal rules (-> the Literal)."""
    from vegafs.vm.diagnostics import Pos
    from vegafs.vm.parser import decode_number

    try:
        lit = decode_number(text.strip(), Pos(0, 0))
    except Exception:  # noqa: BLE001 - any malformed text is the same user error
        lit = None
    if lit is None or lit.kind not in kinds or not isinstance(lit.value, int | float) \
            or lit.value <= 0:
        raise CliError(f"{option}: cannot read {text!r} (expected e.g. {example})", 1)
    return lit


def _budget(args: argparse.Namespace) -> Any:
    from vegafs.vm.budget import DEFAULT_BUDGET, Budget

    steps = DEFAULT_BUDGET.steps
    if args.max_steps is not None:
        if args.max_steps <= 0:
            raise CliError("--max-steps must be positive", 1)
        steps = args.max_steps
    time_s = DEFAULT_BUDGET.time_s
    if args.max_time is not None:
        lit = _unit(args.max_time, ("duration", "int", "float"), "--max-time", "500ms or 5s")
        time_s = lit.value / 1e9 if lit.kind == "duration" else float(lit.value)  # bare: seconds
    memory = DEFAULT_BUDGET.memory_bytes
    if args.max_memory is not None:
        memory = int(_unit(args.max_memory, ("size", "int"), "--max-memory", "64mb").value)
    return Budget(steps=steps, time_s=time_s, memory_bytes=memory)


def _mounts(specs: list[str]) -> list[tuple[str, str]]:
    out = []
    for spec in specs:
        path, sep, uri = spec.partition("=")
        if not sep or not path.startswith("/") or "://" not in uri:
            raise CliError(f"--mount {spec!r}: expected PATH=URI, e.g. /in=posix:///data", 1)
        out.append((path, uri))
    return out


def _capabilities(allow: list[str], mounts: list[tuple[str, str]]) -> Any:
    from vegafs.vm.caps import Capabilities

    if allow:
        specs = list(allow)
    else:
        specs = [f"{cap}:{path.rstrip('/') or ''}/**" for path, _ in mounts
                 for cap in DEFAULT_GRANTS]
    specs.append("trace::write")
    try:
        return Capabilities.parse(specs)
    except ValueError as exc:
        raise CliError(f"--allow: {exc}", 1) from None


def cmd_run(args: argparse.Namespace) -> int:
    from vegafs.drivers import open_driver
    from vegafs.vm import DEFAULT_TIER, VegaCompileError, run_program
    from vegafs.vm.runtime import Runtime
    from vegafs.vm.vfs import VfsError

    _split_run_args(args)
    path = Path(args.file)
    try:
        program = _compile(path, use_cache=not args.no_cache)
    except VegaCompileError as exc:
        print(exc.render(), file=sys.stderr)
        return EXIT_COMPILE
    if program.main is None:
        raise CliError(f"{path}: this file declares hooks; it is not a script "
                       "(use `vegafs hooks test`)", 1)
    mounts = _mounts(args.mount)
    apply_s3_options(args, [uri for _, uri in mounts])
    rt = Runtime(_budget(args), _capabilities(args.allow, mounts), opener=open_driver,
                 args=list(args.args),
                 stdout=lambda s: sys.stdout.write(s), stderr=lambda s: sys.stderr.write(s))
    for mount_path, uri in mounts:
        try:
            rt.namespace.attach(mount_path, open_driver(uri), uri)
        except VfsError as exc:
            rt.finish()
            raise CliError(f"--mount {mount_path}={uri}: {exc}", 1) from None
    try:
        outcome = run_program(program, rt, tier=args.tier or DEFAULT_TIER)
    finally:
        failures = rt.namespace.detach_all()
    sys.stdout.flush()
    for failure in failures:
        print(f"vegafs: closing {failure}", file=sys.stderr)
    if outcome.trap is not None:
        print(outcome.trap.render(), file=sys.stderr)
        return EXIT_BUDGET if outcome.trap.is_budget else EXIT_TRAP
    return 1 if failures else 0  # what the script wrote may not be durable

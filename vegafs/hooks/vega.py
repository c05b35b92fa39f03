"""The hooks layer's use of the Vega compiler and VM (vegafs.vm's public API).

What hook code gets beyond the standard library: the builtins ``allow()``,
``deny(ERRNO, "message")`` and ``revert(path)``, and the errno names
(``EPERM``, ``EINVAL``, ``EIO``...) as constants. Compiling with these names
lets the checker report a misspelt ``deny(EPREM, ...)`` at load time, with
its position, instead of at the first run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vegafs.hooks.errnos import ERRNOS
from vegafs.hooks.events import builtin_allow, builtin_deny
from vegafs.vm import Hook, Program, VegaCompileError, compile_source
from vegafs.vm.fast import FastProgram, compile_fast, run_compiled
from vegafs.vm.interp import RunOutcome, run_function
from vegafs.vm.runtime import Runtime
from vegafs.vm.stdlib.registry import Builtin
from vegafs.vm.values import Result, Slice, Trap, type_name, unwrap
from vegafs.vm.vfs import VfsError, normalize


class HookCompileError(Exception):
    """A hook file that cannot be loaded; the message lists every problem
    (``file:line:col: message``), one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def builtin_revert(rt: Runtime, path: Any) -> Result:
    """``revert(path)``: make the previous version of ``path`` current again
    (needs ``fs::write`` on it). Returns a result whose value is the version
    number restored."""
    path = unwrap(path)
    if type(path) is Slice:
        path = path.to_bytes().decode("utf-8", "surrogateescape")
    if type(path) is not str:
        raise Trap("type", f"revert() needs a path str, got {type_name(path)}")
    target = normalize(path)
    rt.caps.check("fs::write", target, op="revert()")
    try:
        _, driver, inner = rt.namespace._resolve(target)
        revert = getattr(driver, "revert", None)
        if revert is None:
            raise VfsError("unsupported", f"the driver of {target} keeps no versions")
        return Result.ok(revert(inner))
    except VfsError as err:
        return Result.fail(str(err))


HOOK_BUILTINS: dict[str, Builtin] = {
    "allow": Builtin("allow", builtin_allow, 0, 0, doc="let the operation proceed"),
    "deny": Builtin("deny", builtin_deny, 1, 2, doc="fail the operation with an errno"),
    "revert": Builtin(
        "revert",
        builtin_revert,
        1,
        1,
        cap="fs::write",
        doc="restore the previous version of a file",
    ),
}
HOOK_CONSTANTS: dict[str, int] = dict(ERRNOS)


#: Builtins that reach the VFS: a hook whose program names none of them gets no
#: driver mounted (saves building one on every run of a pure-decision hook).
VFS_BUILTINS = frozenset(
    {
        "open",
        "read",
        "write",
        "list",
        "stat",
        "exists",
        "mkdir",
        "rename",
        "remove",
        "lookup",
        "close",
        "sync",
        "mount",
        "umount",
        "revert",
    }
)


@dataclass(frozen=True)
class HookDecl:
    """One hook of a compiled file: its table entry and how to run it."""

    program: Program
    hook: Hook
    #: The program lowered for the fast tier at load time (None: the tier
    #: declined it, runs use the interpreter).
    fast: FastProgram | None = None

    @property
    def name(self) -> str:
        return self.hook.name

    @property
    def when(self) -> str:
        return self.hook.when

    @property
    def event(self) -> str:
        return self.hook.event

    @property
    def glob(self) -> str:
        return self.hook.glob

    @property
    def settings(self) -> dict[str, object]:
        return self.hook.settings

    @property
    def uses_vfs(self) -> bool:
        """Does the file's code call any VFS builtin (anywhere, conservatively)?"""
        return not VFS_BUILTINS.isdisjoint(self.program.symbols)

    @property
    def writes_output(self) -> bool:
        """Can the file's code write ``ev.output`` (a read transform)? Conservative:
        any use of an attribute named ``output`` anywhere in the file. A read
        hook that cannot transform lets its files keep the kernel's page cache."""
        return "output" in self.program.symbols

    @property
    def position(self) -> str:
        return f"{self.program.filename}:{self.hook.line}"

    def invoke(self, ev: Any, rt: Runtime) -> RunOutcome:
        """Run ``run(ev)`` on ``rt`` (the caller finishes the runtime): on the
        fast tier, lowered once at load (a hook run is on every hooked
        request's path, so it skips even the tier's per-run cache check), or
        on the interpreter when the tier declined the program."""
        if self.fast is not None:
            return run_compiled(
                self.fast, rt, self.hook.run, [ev], constants=HOOK_CONSTANTS, finish=False
            )
        return run_function(
            self.program,
            rt,
            self.hook.run,
            [ev],
            builtins=HOOK_BUILTINS,
            constants=HOOK_CONSTANTS,
            finish=False,
        )


def compile_hooks(text: str, filename: str) -> list[HookDecl]:
    """Compile a hook file; raises :class:`HookCompileError` with every problem."""
    try:
        program = compile_source(text, filename, builtins=HOOK_BUILTINS, constants=HOOK_CONSTANTS)
    except VegaCompileError as exc:
        raise HookCompileError([exc.render()]) from None
    if not program.hooks:
        raise HookCompileError(
            [
                f"{filename}:1:1: a hook file must declare at least one hook "
                '(hook NAME on EVENT "GLOB" { fn run(ev) { ... } })'
            ]
        )
    # Lower the program for the fast tier now, at load time: otherwise the first
    # run would pay for it inside its own time budget (tens of ms on a busy machine).
    fast = compile_fast(program, HOOK_BUILTINS)
    return [HookDecl(program, hook, fast) for hook in program.hooks]

"""Helpers for the runtime tests: a Runtime set up as a host would, and calling a
builtin exactly as the VM does (through `Builtin.call`, arity checked)."""

from __future__ import annotations

from typing import Any

from vegafs.vm.budget import Budget
from vegafs.vm.caps import Capabilities
from vegafs.vm.runtime import Runtime
from vegafs.vm.stdlib import BUILTINS, MODULES
from vegafs.vm.vfs import Driver


class Out:
    """Collects what a run prints."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def __call__(self, s: str) -> None:
        self.parts.append(s)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def make_rt(driver: Driver | None = None, caps: list[str] | None = None,
            budget: Budget | None = None, **kw: Any) -> Runtime:
    rt = Runtime(budget or Budget(steps=1_000_000, time_s=30, memory_bytes=64 << 20),
                 Capabilities.all() if caps is None else Capabilities.parse(caps),
                 stdout=kw.pop("stdout", Out()), stderr=kw.pop("stderr", Out()), **kw)
    if driver is not None:
        rt.namespace.attach("/d", driver)
    return rt


def call(rt: Runtime, name: str, *args: Any) -> Any:
    """Call a builtin as the VM would: ``"len"`` or ``"bytes::count"``."""
    module, sep, short = name.partition("::")
    b = MODULES[module][short] if sep else BUILTINS[name]
    return b.call(rt, list(args))


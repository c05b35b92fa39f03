"""Helpers shared by the VM tests: compile + run a source with captured output."""

from __future__ import annotations

from dataclasses import dataclass, field

from vegafs.drivers import open_driver
from vegafs.vm import RunOutcome, compile_source, run_program
from vegafs.vm.budget import Budget
from vegafs.vm.caps import Capabilities
from vegafs.vm.runtime import Runtime


@dataclass
class Ran:
    outcome: RunOutcome
    out: str
    err: str
    rt: Runtime = field(repr=False)


def run_source(source: str, filename: str = "t.vega", *, budget: Budget | None = None,
               mounts: dict[str, str] | None = None, caps: Capabilities | None = None,
               args: list[str] | None = None) -> Ran:
    """Compile and run `source` with every capability and the given mounts."""
    program = compile_source(source, filename)
    out: list[str] = []
    err: list[str] = []
    rt = Runtime(budget or Budget(steps=10_000_000, time_s=20.0, memory_bytes=64 << 20),
                 caps if caps is not None else Capabilities.all(), opener=open_driver,
                 stdout=out.append, stderr=err.append, args=args)
    for path, uri in (mounts or {}).items():
        rt.namespace.attach(path, open_driver(uri), uri)
    outcome = run_program(program, rt)
    return Ran(outcome, "".join(out), "".join(err), rt)

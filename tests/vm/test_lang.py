"""Language tests as .vega files with expectations in comments (clox style).

Directives, each in a ``//`` comment anywhere in the file:
  ``expect: TEXT``       the next line the program prints (in order; trailing
                         comments on a code line count too)
  ``steps: N``           the run uses exactly N steps
  ``trap: KIND at L:C``  the run stops with this trap kind at this position
  ``error: L:C: MSG``    a compile diagnostic (all of them, in order, exactly)
  ``budget: steps=N memory=B time=S``   the run's limits
  ``mount: /p=uri``      a driver mounted before the run
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vegafs.vm import VegaCompileError
from vegafs.vm.budget import Budget

from .vmutil import run_source

LANG = Path(__file__).parent / "lang"
FILES = sorted(LANG.glob("*.vega"))
_DIRECTIVE = re.compile(r"//\s*(expect|steps|trap|error|budget|mount):\s?(.*)$")


def _directives(source: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in source.splitlines():
        m = _DIRECTIVE.search(line)
        if m:
            found.setdefault(m.group(1), []).append(m.group(2).rstrip())
    return found


def _budget(spec: list[str]) -> Budget:
    values = {"steps": 10_000_000, "time": 20.0, "memory": 64 << 20}
    for item in " ".join(spec).split():
        key, _, value = item.partition("=")
        values[key] = float(value) if key == "time" else int(value)
    return Budget(steps=int(values["steps"]), time_s=float(values["time"]),
                  memory_bytes=int(values["memory"]))


def test_the_suite_is_there() -> None:
    assert len(FILES) >= 20


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_language_file(path: Path) -> None:
    source = path.read_text()
    d = _directives(source)
    name = path.name
    if "error" in d:
        with pytest.raises(VegaCompileError) as info:
            run_source(source, name)
        got = [f"{x.pos.line}:{x.pos.col}: {x.message}" for x in info.value.diagnostics]
        assert got == d["error"]
        return
    mounts = dict(m.split("=", 1) for m in d.get("mount", []))
    ran = run_source(source, name, budget=_budget(d.get("budget", [])), mounts=mounts)
    if "trap" in d:
        assert ran.outcome.trap is not None, f"expected a trap, printed {ran.out!r}"
        kind, _, where = d["trap"][0].partition(" at ")
        trap = ran.outcome.trap
        assert (trap.kind, f"{trap.pos.line}:{trap.pos.col}") == (kind, where), trap.render()
    else:
        assert ran.outcome.trap is None, ran.outcome.trap.render()
    assert ran.out.splitlines() == d.get("expect", [])
    if "steps" in d:
        assert ran.outcome.steps == int(d["steps"][0])

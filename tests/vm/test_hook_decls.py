"""Hook declarations (issue 4): the issue's examples compile as written, into a
hook table of plain data; running a hook's run(ev) goes through run_hook."""

from __future__ import annotations

from typing import Any

import pytest

from vegafs.vm import VegaCompileError, compile_source, run_hook
from vegafs.vm.caps import Capabilities
from vegafs.vm.runtime import Runtime
from vegafs.vm.stdlib.registry import Builtin
from vegafs.vm.values import VegaObject

# The host names a hooks layer provides; here minimal ones that record decisions.
HOST = {
    "allow": Builtin("allow", lambda rt: "allow", 0, 0),
    "deny": Builtin("deny", lambda rt, errno, msg="": ("deny", errno, msg), 1, 2),
}
ERRNOS = {"EPERM": 1, "EINVAL": 22, "EIO": 5}

LOGS = """
// hooks/logs_append_only.vega — files under /logs can only grow
hook logs_append_only on write "/logs/**" {
    budget { steps 1_000 }
    fn run(ev) {
        if ev.offset < ev.file_size {
            return deny(EPERM, "logs are append-only");
        }
        return allow();
    }
}
hook logs_keep on unlink "/logs/**" {
    fn run(ev) { return deny(EPERM, "logs are kept"); }
}
"""
APPROVALS = """
// hooks/approvals.vega — an approval names its reviewer; accepted commits are stamped
hook approvals on commit "/docs/**" {
    capabilities [meta::write]
    fn run(ev) {
        let tx = ev.meta;
        if tx.get("user.status") == "approved" && tx.get("user.reviewer") == nil {
            return deny(EPERM, "user.status=approved needs user.reviewer");
        }
        tx.set("user.checked", "yes");
        return allow();
    }
}
"""
LINE_COUNT = """
// hooks/line_count.vega — after a note is written, count its lines into user.lines
hook line_count after close "/notes/**/*.md" {
    capabilities [fs::read, meta::write]
    retry {
        max_attempts 3
        backoff exponential(10ms, 2.0, 1s)
    }
    fn run(ev) {
        let h = open(ev.path, "r");
        let n = 0;
        loop {
            let chunk = h.read(64kb);
            if len(chunk) == 0 { break; }
            n = n + bytes::count(chunk, "\\n");
        }
        h.close();
        let m = lookup(ev.path);
        m.set("user.lines", str(n));
        let r = m.commit();
        if !r.success { trace::event("line_count: " + r.error); }
        return allow();
    }
}
"""
REDACT = """
// hooks/redact_env.vega — readers of *.env files see values masked; stored bytes are unchanged
hook redact_env on read "/**/*.env" {
    budget {
        steps 200_000
        time 50ms
    }
    fn run(ev) {
        for line in bytes::lines(ev.data) {
            let eq = bytes::find(line, "=");
            if eq < 0 {
                ev.output.write(line);
            } else {
                ev.output.write(bytes::slice(line, 0, eq + 1));
                ev.output.write("***\\n");
            }
        }
        return allow();
    }
}
"""


def _compile(text: str) -> Any:
    return compile_source(text, "hooks.vega", builtins=HOST, constants=ERRNOS)


def test_the_issue_examples_compile_into_a_hook_table() -> None:
    logs = _compile(LOGS)
    assert [(h.name, h.when, h.event, h.glob, h.settings) for h in logs.hooks] == [
        ("logs_append_only", "on", "write", "/logs/**", {"budget": {"steps": 1000}}),
        ("logs_keep", "on", "unlink", "/logs/**", {}),
    ]
    approvals = _compile(APPROVALS).hooks[0]
    assert approvals.settings == {"capabilities": ["meta::write"]}
    line_count = _compile(LINE_COUNT).hooks[0]
    assert (line_count.when, line_count.event, line_count.glob) == ("after", "close",
                                                                     "/notes/**/*.md")
    assert line_count.settings["retry"] == {
        "max_attempts": 3,
        "backoff": {"kind": "exponential", "base_s": 0.01, "factor": 2.0, "max_s": 1.0}}
    redact = _compile(REDACT).hooks[0]
    assert redact.settings == {"budget": {"steps": 200_000, "time": 0.05}}


class Event(VegaObject):
    __slots__ = ("offset", "file_size")
    type_name = "event"

    def __init__(self, offset: int, file_size: int) -> None:
        self.offset = offset
        self.file_size = file_size

    def get_attr(self, name: str) -> Any:
        if name in ("offset", "file_size"):
            return getattr(self, name)
        return super().get_attr(name)


@pytest.mark.parametrize("offset, expected", [(10, ("deny", 1, "logs are append-only")),
                                              (100, "allow")])
def test_run_hook_runs_the_hooks_run_fn(offset: int, expected: object) -> None:
    program = _compile(LOGS)
    rt = Runtime(caps=Capabilities.all())
    outcome = run_hook(program, "logs_append_only", rt, Event(offset, 100), builtins=HOST,
                       constants=ERRNOS)
    assert outcome.ok and outcome.value == expected
    assert outcome.steps == 1  # one call (deny or allow): no loop


def test_misspelt_errno_and_undeclared_capability_are_compile_errors() -> None:
    bad = LOGS.replace("deny(EPERM, \"logs are kept\")", "deny(EPREM, \"logs are kept\")")
    bad += 'hook w on write "/x" { fn run(ev) { write("/y", "z"); return allow(); } }\n'
    with pytest.raises(VegaCompileError) as info:
        _compile(bad)
    assert [str(d) for d in info.value.diagnostics] == [
        "hooks.vega:13:30: undefined name 'EPREM'",
        "hooks.vega:15:37: write() needs capability fs::write, which this hook does not declare",
    ]


def test_a_hook_file_cannot_have_top_level_statements() -> None:
    with pytest.raises(VegaCompileError, match="cannot have top-level statements"):
        _compile('let x = 1;\nhook h on read "/**" { fn run(ev) { return allow(); } }\n')

"""benchmarks/bench_vm.py keeps working (tiny sizes): the Vega and CPython twins of
each workload print the same answer on every tier."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_vm", ROOT / "benchmarks" / "bench_vm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_vm"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tier", ["interp", "fast"])
def test_bench_vm_runs_every_workload_small(tier: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench_module()
    sizes = bench.Sizes(fib=12, loop=2_000, strings=1_000, words=2_000, scan=3 << 20)
    rows = bench.bench_tier(tier, sizes, {"fib", "loop", "strings", "words", "scan"},
                            str(tmp_path), repeat=2)
    assert [r.name.split()[0] for r in rows] == ["fib(12)", "arith", "string", "word", "slice"]
    assert all(r.vegafs > 0 and r.baseline for r in rows)

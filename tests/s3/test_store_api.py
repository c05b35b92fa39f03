"""The store API tests (tests/store/test_api.py, fsck and snapshot/gc tests) run on s3://.

Imported, not copied: this module only swaps the ``store_path`` fixture for
an ``s3://`` location served by the loopback server, so every ``Store.open``
of those tests goes through ``open_backend`` to an S3Backend. Tests that
inspect the local directory layout itself (paths, rmtree of ``index/``) are
left out by name: they test LocalBackend, not the store (gc and fsck on s3 are
checked in test_s3.py instead).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.store.conftest import store  # noqa: F401 - the store tests' fixture, on store_path below

_LOCAL_ONLY = {
    "test_default_store_path",
    "test_crash_at_each_gc_step_loses_nothing_reachable",
    "test_gc_keeps_everything_reachable_and_reclaims_the_rest",
    "test_segments_roll_and_checkpoint_reopens_fast",
    "test_snapshot_view_and_rollback_with_undo",
    "test_fsck_reports_and_repairs_damage",
}


def _load(name: str) -> object:
    path = Path(__file__).resolve().parents[1] / "store" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_s3_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


for _module in map(_load, ("test_api", "test_fsck", "test_snapshots_gc", "test_cli")):
    for _name in dir(_module):
        if _name.startswith("test_") and _name not in _LOCAL_ONLY:
            globals()[_name] = getattr(_module, _name)


@pytest.fixture
def store_path(s3_env: str) -> str:
    return s3_env

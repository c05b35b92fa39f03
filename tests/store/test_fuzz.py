"""Damage anything on disk, anywhere: open either works (and fsck agrees) or fails with StoreError.

Never another exception, never a crash: a property test over random byte
damage of segments, MANIFEST and the checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.store.conftest import make_file, write_file
from vegafs.store import Store, StoreError
from vegafs.store import store as store_mod


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pristine") / "store"
    old = store_mod.SEGMENT_TARGET
    store_mod.SEGMENT_TARGET = 2048
    try:
        with Store.open(path, create=True) as s:
            f = make_file(s, b"f", os.urandom(1500))
            s.publish()
            s.create_snapshot("s")
            write_file(s, f, os.urandom(700))
            with s.transaction() as t:
                t.set_xattr(f, b"user.a", b"b")
                t.annotate("k", b"v")
            s.publish()
            make_file(s, b"g", b"tail")  # unpublished at close? no: close publishes
    finally:
        store_mod.SEGMENT_TARGET = old
    return path


def _files(path: Path) -> list[Path]:
    return sorted(
        [*(path / "segments").iterdir(), path / "MANIFEST", *(path / "index").iterdir()]
    )


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    which=st.integers(min_value=0, max_value=50),
    kind=st.sampled_from(["flip", "truncate", "garbage", "zero"]),
    where=st.floats(min_value=0, max_value=1, exclude_max=True),
    byte=st.integers(min_value=1, max_value=255),
)
def test_damage_never_crashes(
    pristine: Path, tmp_path: Path, which: int, kind: str, where: float, byte: int
) -> None:
    path = tmp_path / "copy"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(pristine, path)
    files = _files(path)
    target = files[which % len(files)]
    raw = bytearray(target.read_bytes())
    pos = int(where * len(raw))
    if kind == "flip":
        raw[pos] ^= byte
    elif kind == "truncate":
        del raw[pos:]
    elif kind == "garbage":
        raw[pos:pos] = bytes([byte]) * 40
    else:
        raw[pos : pos + 64] = bytes(len(raw[pos : pos + 64]))
    target.write_bytes(bytes(raw))
    try:
        with Store.open(path) as s:
            if s.fsck().ok:
                return  # the damage was in a part recovery may drop (unpublished tail)
    except StoreError:
        pass
    with Store.open(path, repair=True) as s:
        report = s.fsck(repair=True)
        assert report.ok, f"{kind} at {pos} of {target.name}: {report.describe()}"
    with Store.open(path) as s:
        report = s.fsck()
        assert report.ok, f"{kind} at {pos} of {target.name}, after repair: {report.describe()}"

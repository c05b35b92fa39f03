"""Hostile bytes on disk: corrupt a store at random; no traceback, no silent damage.

A store is built from a scenario (snapshots, rollbacks, gc, several segments,
a checkpoint), closed, and kept pristine. Each case copies it and damages the
copy one seeded way: bit flips in a segment, a truncated or deleted segment,
garbage after the last record, a damaged or truncated checkpoint, a damaged,
truncated or missing MANIFEST, a FORMAT with another version or garbage.
Then, whatever the damage:

* ``Store.open`` either works or raises ``StoreError`` — never another
  exception; ``fsck`` returns a report (or raises ``StoreError``); reading
  every file's blocks raises nothing but ``StoreError``;
* damage to a *segment* is never silent: the open refuses, or fsck reports a
  problem (a truncated active segment is the exception: to recovery it looks
  like a torn tail, which is what it is);
* damage to the *derived* index, or garbage after the last record (a torn
  tail), changes nothing: the store opens with exactly the pristine state and
  fsck is clean;
* ``fsck --repair`` (``Store.open(repair=True)`` + ``fsck(repair=True)``)
  either refuses with ``StoreError`` or leaves a store that opens and whose
  fsck is clean; damaged records it drops are kept in ``quarantine/``.

Quick run: 120 cases. ``VEGAFS_HOSTILE_CASES=n`` for more.
"""

from __future__ import annotations

import os
import random
import shutil
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store_faults.conftest import ram_dir
from tests.store_faults.model import (
    DURABLE,
    MState,
    Scenario,
    differences,
    model_of,
    run_step,
)
from tests.stress.summary import campaign_summary
from vegafs.store import BLOCK_SIZE, Store, StoreError
from vegafs.store import store as store_module
from vegafs.store.backend import LocalBackend
from vegafs.store.records import (
    RECORD_HEADER,
    SEGMENT_HEADER,
    STATE,
    TXN,
    ScanEnd,
    SegmentHeader,
    scan_segment,
)

CASES = int(os.environ.get("VEGAFS_HOSTILE_CASES", "120"))
DAMAGE = ["flip", "flip", "flip", "truncate", "delete_segment", "append_garbage",
          "checkpoint_flip", "checkpoint_truncate", "manifest_garbage", "manifest_truncate",
          "manifest_delete", "format_version", "format_garbage"]


@pytest.fixture(scope="module")
def pristine() -> Iterator[tuple[Path, MState]]:
    """A closed store with history, several segments and a checkpoint, and its model."""
    root = ram_dir("vegafs-hostile-")
    saved = store_module.SEGMENT_TARGET, store_module.CHECKPOINT_INTERVAL
    store_module.SEGMENT_TARGET, store_module.CHECKPOINT_INTERVAL = 32 * 1024, 40
    try:
        scenario = Scenario.generate(99, 120, BLOCK_SIZE, publish_every=4, admin_weight=1.5)
        store = Store.open(root / "store", create=True)
        for step in scenario.steps:
            run_step(store, step)
        store.close()
        store = Store.open(root / "store", read_only=True)
        model = model_of(store)
        store.close()
        assert len(os.listdir(root / "store" / "segments")) >= 3, "want several segments"
        assert any(s[0] in DURABLE - {"publish"} for s in scenario.steps)
        yield root / "store", model
    finally:
        store_module.SEGMENT_TARGET, store_module.CHECKPOINT_INTERVAL = saved
        shutil.rmtree(root, ignore_errors=True)


def _damage(path: Path, how: str, rng: random.Random) -> str:
    """Damage the store at ``path`` the ``how`` way; return what was done, in words."""
    segments = sorted((path / "segments").iterdir())
    if how in ("flip", "truncate", "delete_segment", "append_garbage"):
        seg = segments[-1] if how == "append_garbage" else rng.choice(segments)
        data = bytearray(seg.read_bytes())
        if how == "flip":
            for _ in range(rng.randint(1, 3)):
                pos = rng.randrange(len(data))
                data[pos] ^= 1 << rng.randrange(8)
            seg.write_bytes(bytes(data))
            return f"bit flip(s) in {seg.name}"
        if how == "truncate":
            cut = rng.randrange(len(data))
            seg.write_bytes(bytes(data[:cut]))
            return f"{seg.name} truncated to {cut} of {len(data)} bytes"
        if how == "delete_segment":
            seg.unlink()
            return f"{seg.name} deleted"
        seg.write_bytes(bytes(data) + rng.randbytes(rng.randint(1, 300)))
        return f"garbage appended to {seg.name}"
    if how.startswith("checkpoint"):
        files = sorted(p for p in (path / "index").rglob("*") if p.is_file())
        assert files, "the pristine store has no checkpoint"
        target = rng.choice(files)
    elif how.startswith("manifest"):
        target = path / "MANIFEST"
    else:
        target = path / "FORMAT"
    data = bytearray(target.read_bytes())
    if how.endswith("_delete"):
        target.unlink()
    elif how.endswith("_truncate"):
        target.write_bytes(bytes(data[: rng.randrange(len(data))]))
    elif how.endswith("_flip"):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        target.write_bytes(bytes(data))
    elif how == "format_version":
        target.write_bytes(bytes(data).replace(b"1", b"7"))
    else:
        target.write_bytes(rng.randbytes(len(data)))
    return f"{how} ({target.name})"


def _at(exc: BaseException) -> str:
    """Where in vegafs an exception came from (file:line of the deepest vegafs frame)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/vegafs/" in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    return f"at {f.filename.rsplit('/vegafs/', 1)[1]}:{f.lineno} ({f.name})"


def _exercise(path: Path, what: str) -> tuple[Store | None, bool]:
    """Open, fsck and read everything; only StoreError may come out. (store, fsck clean)."""
    try:
        store = Store.open(path)
    except StoreError:
        return None, False
    try:
        try:
            clean = store.fsck().ok
        except StoreError:
            clean = False
        try:
            model_of(store)
        except StoreError:
            clean = False
        except AssertionError:
            clean = False  # a dangling entry: fsck must have said so
    except BaseException:
        store.close()
        raise
    return store, clean


def test_hostile_input(pristine: tuple[Path, MState], tmp_path: Path) -> None:
    source, model = pristine
    seed = 20261123
    rng = random.Random(seed)
    with campaign_summary("hostile input", seed) as summary:
        detected = repaired = refused = 0
        failures: list[str] = []
        for case in range(CASES):
            how = DAMAGE[case % len(DAMAGE)]
            path = source.parent / f"case{case}"
            shutil.copytree(source, path)
            active = sorted((path / "segments").iterdir())[-1].name
            try:
                detected, repaired, refused = _case(path, how, rng, case, model, active,
                                                     (detected, repaired, refused))
            except AssertionError as exc:
                failures.append(str(exc).splitlines()[0])
            finally:
                shutil.rmtree(path, ignore_errors=True)
            summary.rounds += 1
            summary.ops += 1  # one damaged store opened, fscked, read and repaired
            summary.failures = len(failures)
            summary.extra.update(detected=detected, repaired=repaired, repair_refused=refused)
        assert not failures, f"{len(failures)} of {CASES} cases failed:\n  " + "\n  ".join(failures)


def _case(path: Path, how: str, rng: random.Random, case: int, model: MState, active: str,
          tally: tuple[int, int, int]) -> tuple[int, int, int]:
    """Damage one copy and check it (module docstring); returns the updated tally.

    ``active`` names the store's last (active) segment.
    """
    detected, repaired, refused = tally
    words = _damage(path, how, rng)
    last = active in words  # the active segment was the one damaged
    what = f"case {case}: " + words
    try:
        store, clean = _exercise(path, what)
    except Exception as exc:  # the point: nothing but StoreError may escape
        raise AssertionError(f"{what}: open/fsck/read raised {repr(exc)[:120]} {_at(exc)}") from exc
    if store is not None:
        if how.startswith("checkpoint") or how == "append_garbage":
            problems = differences(store, model)
            assert not problems and clean, \
                f"{what}: derived or torn bytes changed the store: {problems[:5]}"
        store.close()
    silent = store is not None and clean
    must_see = how in ("flip", "delete_segment") or (how == "truncate" and not last)
    if must_see and silent:
        raise AssertionError(f"{what}: the damage went unnoticed (open and fsck clean)")
    detected += not silent
    try:
        fixing = Store.open(path, repair=True)
        try:
            fixing.fsck(repair=True)
        finally:
            fixing.close()
    except StoreError:
        return detected, repaired, refused + 1
    except Exception as exc:
        raise AssertionError(f"{what}: repair raised {repr(exc)[:120]} {_at(exc)}") from exc
    after, clean = _exercise(path, what + " (after repair)")
    assert after is not None and clean, f"{what}: the repaired store is still not clean"
    after.close()
    return detected, repaired + 1, refused


@pytest.mark.parametrize("rtype", [TXN, STATE], ids=["TXN", "STATE"])
def test_flips_in_checkpointed_metadata_records(pristine: tuple[Path, MState], tmp_path: Path,
                                               rtype: int) -> None:
    """Bit flips all along a metadata record that the checkpoint already covers (so open
    does not rescan it) must come out as a StoreError or an fsck problem when the record is
    read again (views, fsck) — never as a msgpack or Python error, never unnoticed."""
    source, _model = pristine
    header = SEGMENT_HEADER.size
    found = [(seg.name, r) for seg in sorted((source / "segments").iterdir())
             for r in scan_segment(LocalBackend(source), seg.name, header,
                                   SegmentHeader.decode(seg.read_bytes()[:header]).prev_hash,
                                   ScanEnd())
             if r.rtype == rtype and len(r.payload) > 8]
    assert found, f"the pristine store has no record of type {rtype}"
    name, record = found[len(found) // 2]
    start = record.offset + RECORD_HEADER.size
    failures = []
    for pos in range(start, start + len(record.payload), max(1, len(record.payload) // 40)):
        path = tmp_path / f"flip{pos}"
        shutil.copytree(source, path)
        seg = path / "segments" / name
        data = bytearray(seg.read_bytes())
        data[pos] ^= 0x41
        seg.write_bytes(bytes(data))
        what = f"bit flip at {name}:{pos} (record at {record.offset})"
        try:
            store, clean = _exercise(path, what)
        except Exception as exc:
            failures.append(f"{what}: raised {repr(exc)[:120]} {_at(exc)}")
            shutil.rmtree(path, ignore_errors=True)
            continue
        if store is not None:
            store.close()
            if clean:
                failures.append(f"{what}: went unnoticed")
        shutil.rmtree(path, ignore_errors=True)
    assert not failures, f"{len(failures)} flips mishandled:\n  " + "\n  ".join(failures[:10])

"""Bounded soak: the daemon's memory while 20,000 small files and 256 MiB go through the mount.

Runs ``benchmarks/soak.py`` (the full soak, see docs/campaigns.md) with small
parameters and checks what its summary reports:

* the daemon's peak RSS stays under the documented bound (512 MiB);
* writing files does not leak a file's worth of memory: deleting and
  rewriting half the files (the live tree keeps its size) grows the RSS by
  less than 1 KiB per rewritten file;
* what a *live* file costs stays under the documented 1 KiB (1.3 KiB a file
  before issue 5's work, 0.64-0.72 KiB with the head state packed in memory;
  the head index now keeps it on disk, docs/architecture.md);
* ``vegafs gc`` through the daemon gives back the deleted data.

The issue's stronger wish — RSS flat however many files exist — is
``test_rss_flat_in_live_files``, a slow test (200,000 files, a few minutes;
20,000 files cannot resolve it: the bounded caches still fill):
10% allowed from 100,000 to 200,000 files. It was a strict xfail at +23% (and
+21.6% with only the chunk index on disk); with the view locators on disk and
due flushes no longer skipped under a steady write stream, three runs gave
+13.0% (under load, one ~8 MiB step), -0.1% and +1.2%: a failure is worth a
rerun before a hunt. docs/campaigns.md has the full soak's figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mountutil import needs_fuse

pytestmark = [pytest.mark.mount, needs_fuse]

REPO = Path(__file__).resolve().parents[2]
MiB = 1 << 20
FILES = 20_000
RSS_BOUND = 512 * MiB  # docs/campaigns.md
LIVE_FILE_BOUND = 1024  # bytes of daemon RSS per live small file, docs/campaigns.md
# Bytes of RSS growth per rewritten file that count as a leak: below what a
# live file cost before issue 5's work (1.3 KiB), above the 0.3-0.85 KiB the runs measured
# (docs/campaigns.md: RSS moves in ~10 MiB steps, so 20,000 files cannot
# resolve less; the full soak reports the slope over 500,000 rewrites).
LEAK_PER_FILE_WRITTEN = 1024


def run_soak(base: Path, files: int, *args: str, timeout: float) -> dict:
    """``benchmarks/soak.py`` with ``files`` small files and ``args``; its JSON summary."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "soak.py"), "--files", str(files), *args,
         "--sample", "1", "--dir", str(base), "--json"],
        capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result: dict = json.loads(proc.stdout.splitlines()[-1])
    printable = {k: v for k, v in result.items() if k != "samples"}
    print("soak summary: " + json.dumps(printable))
    return result


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One bounded soak run, shared by the checks below."""
    return run_soak(
        tmp_path_factory.mktemp("soak"), FILES, "--bytes", "256MiB", "--big-file-size", "32MiB",
        "--churn", "4", "--reserve", "64MiB", timeout=280,
    )


@pytest.mark.timeout(300)
def test_peak_rss_under_the_bound(summary: dict) -> None:
    assert summary["files_written"] == FILES
    assert summary["big_bytes_written"] == 256 * MiB
    assert summary["rss_peak"] <= RSS_BOUND, f"peak RSS {summary['rss_peak'] / MiB:.1f} MiB"


@pytest.mark.timeout(300)
def test_no_leak_per_file_written(summary: dict) -> None:
    """Rounds 3 and 4 rewrite 20,000 files over the same live tree: RSS must stay level.

    The first rounds may still raise the allocator's high-water mark (the
    freed inodes' memory is reused, not returned); a leak grows every round.
    """
    churn = summary["rss_churn"]
    assert len(churn) == 4
    rewritten = (len(churn) - 2) * (FILES - FILES // 2)
    growth = churn[-1] - churn[1]
    assert growth <= rewritten * LEAK_PER_FILE_WRITTEN, \
        f"RSS grew {growth / MiB:.1f} MiB over {rewritten} rewritten files: {churn}"


@pytest.mark.timeout(300)
def test_live_file_cost_bounded(summary: dict) -> None:
    per_file = (summary["rss_after_all_files"] - summary["rss_after_half_files"]) / (FILES // 2)
    print(f"daemon RSS per live small file: {per_file:.0f} bytes")
    assert per_file <= LIVE_FILE_BOUND


@pytest.mark.timeout(300)
def test_gc_reclaims_deleted_data(summary: dict) -> None:
    """All 32 MiB files but one and 90% of the small files deleted: gc gives most bytes back."""
    assert summary["store_bytes_after_gc"] < summary["store_bytes_after_delete"] / 3
    assert summary["gc_report"]["bytes_after"] < summary["gc_report"]["bytes_before"]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_rss_flat_in_live_files(tmp_path: Path) -> None:
    """The issue's wording: RSS after 2N files within 10% of RSS after N files.

    Checked at N = 100,000, not on the bounded run above: at 10,000 -> 20,000
    files the bounded caches (SQLite's 2 MiB page cache, the chunk index's
    shards while most are empty) still fill, and the RSS moves by allocator
    steps of a few MiB, so that run saw +4% to +15% whatever the code did.
    (Before the head index: +12-13% there, and 0.56 KiB a file at 1,000,000.)
    """
    result = run_soak(tmp_path, 200_000, "--bytes", "0", "--churn", "0", "--reserve", "64MiB",
                      timeout=1100)
    growth = result["rss_after_all_files"] / result["rss_after_half_files"] - 1
    print(f"RSS from 100,000 to 200,000 files: {growth:+.1%}; slope "
          f"{result['rss_slope_bytes_per_file']} bytes/file")
    assert result["rss_after_all_files"] <= result["rss_after_half_files"] * 1.10

"""Shared helpers for the vegafs benchmarks: timing and the ratio table.

Every benchmark in this directory measures a *baseline* (the thing vegafs is
compared with: a raw file write, a plain directory, pyfuse3's passthrough
example...) and *vegafs* in the same run, on the same disk, and prints a table
of ratios. Absolute numbers move with the machine; the ratio against a baseline
measured a second earlier is what the issues' targets are stated in. This
module holds only what every benchmark needs so that all tables read alike:

    rows = [Row("seq ingest", 410.0, 260.0, unit="MiB/s", target=">= 0.50x")]
    print_table("store", rows)

``Row.ratio`` is ``vegafs / baseline`` for rates (higher is better) and
``baseline / vegafs`` for durations (``lower_is_better=True``), so a ratio
above 1 always means "vegafs does better than the baseline".
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from vegafs.cli.options import parse_size  # noqa: F401 - re-exported: the benchmarks' --size options

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass
class Timer:
    """Elapsed wall time of a ``with timed() as t:`` block, in seconds (``t.seconds``)."""

    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[Timer]:
    """Measure a block with ``time.perf_counter`` (monotonic, highest resolution)."""
    timer = Timer()
    start = time.perf_counter()
    try:
        yield timer
    finally:
        timer.seconds = time.perf_counter() - start


@dataclass
class Row:
    """One line of a benchmark table.

    ``baseline`` may be None when a measurement has no meaningful baseline (for
    instance the open time of a store: then ``target`` states an absolute bound
    and the ratio column stays empty).
    """

    name: str
    baseline: float | None
    vegafs: float
    unit: str
    target: str = ""
    lower_is_better: bool = False

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0 or self.vegafs == 0:
            return None
        if self.lower_is_better:
            return self.baseline / self.vegafs
        return self.vegafs / self.baseline


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def format_table(title: str, rows: Sequence[Row]) -> str:
    """Render rows as a fixed-width table: name | baseline | vegafs | unit | ratio | target."""
    header = ("workload", "baseline", "vegafs", "unit", "ratio", "target")
    cells = [header] + [
        (
            r.name,
            _fmt(r.baseline),
            _fmt(r.vegafs),
            r.unit,
            "-" if r.ratio is None else f"{r.ratio:.2f}x",
            r.target,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [f"== {title}"]
    for n, row in enumerate(cells):
        lines.append(
            " | ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(title: str, rows: Sequence[Row]) -> None:
    """Print ``format_table`` to stdout, flushed (benchmarks are often piped to a log)."""
    print(format_table(title, rows), flush=True)

"""Command-line options shared by several commands: where the store is, and sizes.

Why one place: ``vegafs mount`` and the store commands (snapshot, fsck, gc,
stats, ...) take the same ``--store``, ``--s3-endpoint`` and ``--cache-size``
and must mean the same by them; the S3 settings are handed on as the
environment variables boto3 and ``open_backend`` read, so a mount's daemon
child inherits them too (docs/cli.md, docs/s3.md).
"""

from __future__ import annotations

import argparse
import os

from vegafs.cli.errors import CliError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tib": 1 << 40,
}


def parse_size(text: str) -> int:
    """``"64MiB"``, ``"1GiB"``, ``"512k"``, ``"1.5g"`` or ``"4096"`` -> bytes (binary units).

    ValueError (which argparse reports as "invalid size value") for anything else.
    """
    stripped = text.strip().lower()
    digits = stripped.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = stripped[len(digits) :].strip()
    try:
        number = float(digits)
    except ValueError:
        number = -1.0
    if unit not in _UNITS or not number >= 0:
        raise ValueError(f"not a size: {text!r} (use e.g. 4096, 512MiB, 2GiB)")
    return int(number * _UNITS[unit])


parse_size.__name__ = "size"  # argparse names the type in its message: "invalid size value"


def add_store_options(p: argparse.ArgumentParser, store_help: str) -> None:
    """``--store`` plus :func:`add_s3_options`."""
    p.add_argument("--store", metavar="PATH|s3://BUCKET/PREFIX", help=store_help)
    add_s3_options(p)


def add_s3_options(p: argparse.ArgumentParser) -> None:
    """``--s3-endpoint`` and ``--cache-size`` (see :func:`apply_s3_options`)."""
    p.add_argument(
        "--s3-endpoint",
        metavar="URL",
        help="endpoint of an S3-compatible server for an s3:// store "
        "(else boto3's configuration; docs/s3.md)",
    )
    p.add_argument(
        "--cache-size",
        metavar="SIZE",
        type=parse_size,
        help="bound of an s3:// store's local cache (LRU of chunks read, plus what waits "
        "for upload), e.g. 512MiB or 4GiB (default: $VEGAFS_S3_CACHE_SIZE, else 1GiB)",
    )


def apply_s3_options(args: argparse.Namespace, locations: list[str]) -> None:
    """Hand ``--s3-endpoint`` and ``--cache-size`` on as the environment that
    boto3 and ``open_backend`` read (inherited by a daemon child).
    ``locations``: the stores the command opens (a cache size for none of
    them on s3:// is a mistake worth saying)."""
    if getattr(args, "s3_endpoint", None):
        os.environ["AWS_ENDPOINT_URL_S3"] = args.s3_endpoint
    size = getattr(args, "cache_size", None)
    if size is not None:
        if not any(loc.startswith("s3://") for loc in locations):
            raise CliError("--cache-size is for s3:// stores (a local store has no cache)")
        if size < 1 << 20:
            raise CliError(f"--cache-size must be at least 1MiB (got {size} bytes)")
        os.environ["VEGAFS_S3_CACHE_SIZE"] = str(size)

"""Entry point of the `vegafs` command: builds the parser from the command modules."""

from __future__ import annotations

import argparse
import importlib
import sys

from vegafs import __version__
from vegafs.cli.errors import CliError

# Command modules, each with ``register(subparsers)``. A module that is absent
# (a layer not built yet) is skipped rather than breaking every other command.
COMMAND_MODULES = (
    "vegafs.cli.mount_cmds",
    "vegafs.cli.store_cmds",
    "vegafs.cli.vega_cmds",
    "vegafs.cli.hooks_cmds",
    "vegafs.cli.trace_cmds",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vegafs",
        description="A scriptable filesystem: an append-only store you mount, with Vega hooks.",
    )
    parser.add_argument("--version", action="version", version=f"vegafs {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks and debug logging"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        if args.debug:
            raise
        print(f"vegafs: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("vegafs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The `vegafs` command line: one entry point, one module per command group.

Each command module exposes ``register(subparsers)``, adding its commands with
``set_defaults(func=...)``. A command function takes the parsed arguments and
returns an exit code. User mistakes are raised as :class:`CliError` and printed
as one line; a traceback reaches the user only with ``--debug``.
"""

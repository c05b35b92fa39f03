"""``vegafs mount`` whose store sits on an :class:`ArmedBackend` — for the failsafe mount test.

Usage::

    python -m tests.store_faults.faulty_daemon ARM_FILE KIND ERRNO MODE -- mount MNT --store S -f

The daemon is the real one (the ``vegafs`` command line, in this process);
only ``open_backend`` is wrapped, so the first ``KIND`` backend call after
the test creates ``ARM_FILE`` fails with ``ERRNO`` (a name such as ``EIO``)
the ``MODE`` way (see :class:`FaultPlan`). Tests only: the product has no
fault switch.
"""

from __future__ import annotations

import errno
import sys

from tests.store_faults.faulty_backend import ArmedBackend, FaultPlan
from vegafs.cli.main import main as vegafs_main
from vegafs.store import backend as backend_module
from vegafs.store import store as store_module


def main(argv: list[str]) -> int:
    arm_path, kind, errno_name, mode, sep, *command = argv
    if sep != "--":
        raise SystemExit(__doc__)
    plan = FaultPlan(kind, 1, getattr(errno, errno_name), mode)

    def open_backend(location: str) -> backend_module.Backend:
        return ArmedBackend(backend_module.open_backend(location), plan, arm_path)

    store_module.open_backend = open_backend  # type: ignore[assignment]
    return vegafs_main(command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

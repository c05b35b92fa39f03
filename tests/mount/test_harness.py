"""The mount tests' own safety net: a wedged daemon fails a test instead of hanging the run.

A request to a daemon that never answers blocks the caller inside the kernel,
out of reach of pytest-timeout. The ``Watchdog`` must turn that into an error
(ENOTCONN once the daemon is killed) and leave nothing mounted. This test
wedges a daemon on purpose (SIGSTOP) and checks exactly that.
"""

from __future__ import annotations

import errno
import os
import signal

import pytest

from tests.mount.helpers import Mount, Watchdog
from tests.mountutil import needs_fuse

pytestmark = [pytest.mark.mount, needs_fuse]


@pytest.mark.timeout(60)
def test_watchdog_unwedges_a_stopped_daemon(vmount: Mount) -> None:
    with open(vmount.mnt / "before", "wb") as f:
        f.write(b"published by the clean part of the test")
        f.flush()
        os.fsync(f.fileno())
    assert vmount.proc is not None
    vmount.proc.send_signal(signal.SIGSTOP)
    with Watchdog([vmount], 1.0) as dog, pytest.raises(OSError) as exc:
        # a create always goes to the daemon: no kernel cache can answer it
        os.close(os.open(vmount.mnt / "wedged", os.O_CREAT | os.O_WRONLY))
    assert dog.fired
    assert exc.value.errno in (errno.ENOTCONN, errno.ECONNABORTED), exc.value
    vmount.proc.wait(timeout=10)
    assert not os.path.ismount(vmount.mnt)
    vmount.stop()
    vmount.start()  # and the store mounts again after the kill
    assert (vmount.mnt / "before").read_bytes() == b"published by the clean part of the test"

"""vegafs.fuse_ops — the FUSE face of the file system (pyfuse3 on trio).

What it owns: translating kernel requests into :class:`vegafs.fs.FileSystem`
calls and results into pyfuse3 structures; the kernel cache policy (entry and
attribute timeouts, ``keep_cache``, writeback cache, explicit invalidation
after a rollback); which work runs in a worker thread; the mount daemon's
lifecycle (mount, group commit, signals, clean unmount).

What it must never do: hold policy (POSIX rules live in ``vegafs.fs``), let
any exception escape a request handler (pyfuse3 stops its main loop on one,
leaving a dead ENOTCONN mount: every handler is wrapped by ``errno_guard``),
block the trio thread on disk I/O or hashing, or log per request at INFO.

Invariants: a request handler answers with data or an errno, always; what the
kernel caches is either still true or explicitly invalidated; after
``Daemon.close`` every close()d write is published and the store lock is
released.
"""

from vegafs.fuse_ops.daemon import Daemon
from vegafs.fuse_ops.operations import VegaOperations, errno_guard

__all__ = ["Daemon", "VegaOperations", "errno_guard"]

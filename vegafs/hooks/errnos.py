"""Errno names a hook may deny with.

Why a fixed table rather than all of :mod:`errno`: a hook's denial reaches a
user's program as the result of a POSIX call, so only the errnos such a call
can plausibly return are offered; anything else would surprise the caller
(``ECHILD`` from ``write()`` means nothing). The table is also the set of
global names hook code sees (``deny(EPERM, "...")``).
"""

from __future__ import annotations

import errno

ERRNO_NAMES: tuple[str, ...] = (
    "EPERM",
    "ENOENT",
    "EIO",
    "EACCES",
    "EBUSY",
    "EEXIST",
    "EINVAL",
    "EFBIG",
    "ENOSPC",
    "EROFS",
    "ENAMETOOLONG",
    "ENOTEMPTY",
    "EAGAIN",
    "ETXTBSY",
    "EDQUOT",
    "ENOTSUP",
    "ECANCELED",
)

ERRNOS: dict[str, int] = {name: getattr(errno, name) for name in ERRNO_NAMES}

_BY_VALUE: dict[int, str] = {value: name for name, value in ERRNOS.items()}


def errno_name(value: int) -> str:
    """The symbolic name of ``value`` for traces (``"EPERM"``), or ``"E<value>"``."""
    return _BY_VALUE.get(value) or errno.errorcode.get(value, f"E{value}")


def valid_errno(value: object) -> bool:
    """True when ``value`` is an errno a hook may return (one of :data:`ERRNOS`)."""
    return isinstance(value, int) and not isinstance(value, bool) and value in _BY_VALUE

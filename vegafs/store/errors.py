"""The store's one exception type and the ASL-HOST error set (seed 004 §8).

Callers branch on ``code``, never on the message: the message is for people
and may change; the codes are the contract.
"""

from __future__ import annotations

STORE_OK = "STORE_OK"
STORE_EXISTS = "STORE_EXISTS"
STORE_NOT_FOUND = "STORE_NOT_FOUND"
STORE_IO_ERROR = "STORE_IO_ERROR"
STORE_CONCURRENT_MODIFICATION = "STORE_CONCURRENT_MODIFICATION"

ERROR_CODES = frozenset(
    {STORE_EXISTS, STORE_NOT_FOUND, STORE_IO_ERROR, STORE_CONCURRENT_MODIFICATION}
)


class StoreError(Exception):
    """A store operation failed with one of the ASL-HOST codes.

    ``errno`` is set when an OS error caused it (ENOSPC, EIO...), so the
    filesystem layer can hand the same errno to the application.
    """

    def __init__(self, code: str, message: str, errno: int | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown store error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.errno = errno

    def __str__(self) -> str:
        return self.message

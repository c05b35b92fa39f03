"""`store://PATH` and `s3://BUCKET/PREFIX` — a vegafs store opened directly, without a mount.

The script gets the store's live tree through :class:`~vegafs.fs.FileSystem`
(the same POSIX model the mount uses, so permissions, versions and xattrs
mean the same thing), wrapped by the generic :class:`FsDriver`. Opening takes
the store's one-writer lock: a store that is mounted (or opened by another
script) cannot be opened here, and the failure says who holds it. Unmounting
(or the end of the run) commits every buffered file and publishes, so what a
script wrote is durable when `vegafs run` returns.
"""

from __future__ import annotations

from vegafs.drivers import uri_directory
from vegafs.drivers.fs import FsDriver
from vegafs.fs import FileSystem
from vegafs.store import Store, StoreError
from vegafs.vm.vfs import DriverCaps, VfsError

_CAPS = DriverCaps(read=True, write=True, handlers=True, meta=True, atomic_meta_commit=True,
                   atomic_write=True, rename=True, remove=True, sync=True,
                   meta_namespaces=("user.",))


class StoreDriver(FsDriver):
    """The head of a store, read-write, for the length of one run."""

    scheme = "store"

    def __init__(self, store: Store) -> None:
        super().__init__(FileSystem(store))
        self._store = store

    @classmethod
    def from_uri(cls, uri: str) -> StoreDriver:
        """``store:///abs/store/dir`` or ``s3://BUCKET/PREFIX`` -> the store there
        (created if missing; an s3:// one through the S3 backend, docs/s3.md)."""
        path = uri if uri.startswith("s3://") else uri_directory(uri, "store", "store directory")
        try:
            return cls(Store.open(path, create=True))
        except StoreError as exc:
            code = "busy" if exc.code == "STORE_CONCURRENT_MODIFICATION" else "io"
            raise VfsError(code, str(exc)) from None
        except ValueError as exc:  # a malformed s3:// location
            raise VfsError("invalid", str(exc)) from None
        except OSError as exc:  # an unreachable endpoint, after the backend's bounded retries
            raise VfsError("io", f"cannot open the store at {path}: {exc}") from None

    def capabilities(self) -> DriverCaps:
        return _CAPS

    def close(self) -> None:
        """Commit buffered files, publish, release the lock."""
        try:
            self._fs.close()
        finally:
            self._store.close()

"""put_chunk/read_chunk/publish from worker threads while another thread runs transactions."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from tests.store.conftest import assert_clean, read_file, snapshot_state
from vegafs.store import BLOCK_SIZE, ROOT_INO, Store


def test_concurrent_chunks_transactions_and_publishes(store_path: Path) -> None:
    files: dict[int, bytes] = {}
    errors: list[BaseException] = []
    with Store.open(store_path, create=True) as s:
        stop = threading.Event()

        def publisher() -> None:
            try:
                while not stop.is_set():
                    s.publish()
            except BaseException as e:  # surfaced by the assertion below
                errors.append(e)

        def writer(k: int) -> None:
            try:
                for i in range(25):
                    data = os.urandom(BLOCK_SIZE // 4) + bytes([k, i])
                    h = s.put_chunk(data)
                    assert s.read_chunk(h) == data
                    ino = s.alloc_ino()
                    with s.transaction() as t:
                        t.create_inode(ino, mode=stat.S_IFREG | 0o600, uid=0, gid=0, times_ns=i)
                        t.update(ino, nlink=1)
                        t.link(ROOT_INO, f"{k}-{i}".encode(), ino)
                        t.set_blocks(ino, {0: h}, len(data))
                    files[ino] = data
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        pub = threading.Thread(target=publisher)
        pub.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        pub.join()
        assert not errors, errors
        assert len(s.listdir(ROOT_INO)) == 100
        before = snapshot_state(s)
        assert_clean(s)
    with Store.open(store_path) as s:
        assert snapshot_state(s) == before
        for ino, data in files.items():
            assert read_file(s, ino) == data
        assert_clean(s)

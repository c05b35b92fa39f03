"""The store under concurrent use, as the filesystem drives it.

One thread plays the trio thread: it runs every transaction (the store's
contract: transactions come from one thread) and reads metadata. Around it,
at the same time: a pool of worker threads calling ``put_chunk`` (hashing and
appending in parallel with the transactions), a publisher calling
``publish`` in a loop (the group-commit thread), readers calling
``read_chunk`` on every hash handed out so far and checking the bytes, and a
gc thread compacting the store into new generations while all that runs (the
readers must follow chunks that gc moves).

Then the store must equal the model of everything the transaction thread did,
before and after close + reopen, with fsck clean; no thread may have seen an
exception, and a watchdog fails the test if any call takes longer than 10 s.

Quick run: 3 s of load. ``VEGAFS_STRESS_SECONDS`` for longer.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.store_faults.model import S_IFDIR, S_IFREG, assert_matches, root_state, run_txn
from tests.stress.summary import campaign_summary
from vegafs.store import BLOCK_SIZE, Store

SECONDS = float(os.environ.get("VEGAFS_STRESS_SECONDS", "3"))
WATCHDOG_S = 10.0
SEED = 5150


class Watched:
    """Runs calls, records the first exception and any call slower than the watchdog."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def call(self, what: str, fn: Callable[[], object]) -> object:
        start = time.monotonic()
        try:
            return fn()
        except BaseException as exc:
            with self.lock:
                self.errors.append(f"{what}: {exc!r}")
            self.stop.set()
            raise
        finally:
            took = time.monotonic() - start
            if took > WATCHDOG_S:
                with self.lock:
                    self.errors.append(f"{what} took {took:.1f} s (watchdog {WATCHDOG_S} s)")

    def loop(self, what: str, fn: Callable[[], object]) -> threading.Thread:
        def run() -> None:
            while not self.stop.is_set():
                try:
                    self.call(what, fn)
                except BaseException:
                    return

        thread = threading.Thread(target=run, name=what, daemon=True)
        thread.start()
        return thread


def test_store_under_concurrent_load(tmp_path: Path) -> None:
    counts: dict[str, int] = {}
    with campaign_summary("store threads campaign", SEED) as summary:
        try:
            _load(tmp_path, counts)
        finally:
            summary.rounds = 1
            summary.ops = sum(counts.values())
            summary.extra.update(counts)


def _load(tmp_path: Path, counts: dict[str, int]) -> None:
    """The run (module docstring); ``counts`` tallies what each kind of thread did."""
    path = tmp_path / "store"
    store = Store.open(path, create=True)
    state = root_state(store)
    w = Watched()
    rng = random.Random(SEED)
    handed: list[tuple[bytes, bytes]] = []  # (hash, data) every reader may check
    handed_lock = threading.Lock()
    counts.update(txns=0, publishes=0, reads=0, gcs=0)

    def publish() -> None:  # group commit: publish what is there, every few ms
        store.publish()
        counts["publishes"] += 1
        w.stop.wait(0.002)

    def read() -> None:
        with handed_lock:
            empty = not handed
            if not empty:
                h, data = handed[random.randrange(len(handed))]
        if empty:
            # Nothing to read yet: wait instead of spinning. Two threads spinning
            # on the GIL slow every call that releases it (SQLite in the head
            # index: ~100 ms a statement) and starve the writer: a test
            # artifact, not load a daemon sees.
            w.stop.wait(0.001)
            return
        got = store.read_chunk(h)
        assert got == data, f"read_chunk({h.hex()[:12]}) returned other bytes"
        counts["reads"] += 1

    # A chunk that is put but not yet referenced is garbage to gc; the writer
    # holds this lock from its first put_chunk to the set_blocks that references
    # it (test_gc_keeps_a_chunk_put_before_it_is_referenced is about that window).
    put_window = threading.Lock()

    def gc() -> None:
        with put_window:
            store.gc()
        counts["gcs"] += 1
        w.stop.wait(0.3)  # a few compactions per run, not a busy loop

    threads = [w.loop("publish", publish), w.loop("read_chunk", read),
               w.loop("read_chunk", read), w.loop("gc", gc)]
    dirs = []
    files: list[int] = []
    pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="put_chunk")
    deadline = time.monotonic() + SECONDS
    try:
        for n in range(4):
            ino = store.alloc_ino()
            ops = [("create_inode", ino, {"mode": S_IFDIR | 0o755, "uid": 0, "gid": 0,
                                          "rdev": 0, "target": None, "times_ns": n}),
                   ("link", 1, b"d%d" % n, ino), ("update", ino, {"nlink": 2})]
            w.call("txn", lambda ops=ops: run_txn(store, ops))
            for op in ops:
                state.apply(op)
            dirs.append(ino)
        while time.monotonic() < deadline and not w.stop.is_set():
            if not files or rng.random() < 0.2:
                ino = store.alloc_ino()
                ops = [("create_inode", ino, {"mode": S_IFREG | 0o644, "uid": 0, "gid": 0,
                                              "rdev": 0, "target": None, "times_ns": 0}),
                       ("link", rng.choice(dirs), b"f%d" % ino, ino),
                       ("update", ino, {"nlink": 1})]
                files.append(ino)
                w.call("txn", lambda ops=ops: run_txn(store, ops))
            else:
                # Files only grow (new block indices): every hash handed to the
                # readers stays referenced, so gc may move it but never drop it.
                ino = rng.choice(files)
                first = len(state.inodes[ino].blocks)
                blocks = {first + k: rng.randbytes(rng.randrange(1, 8192))
                          for k in range(rng.randint(1, 4))}
                if rng.random() < 0.3:  # same bytes as an earlier block: dedup under load
                    with handed_lock:
                        if handed:
                            blocks[first] = rng.choice(handed)[1]
                size = max(state.inodes[ino].size, (max(blocks) + 1) * BLOCK_SIZE)
                ops = [("set_blocks", ino, blocks, size)]
                with put_window:
                    futures = {i: pool.submit(w.call, "put_chunk",
                                              lambda d=d: store.put_chunk(d))
                               for i, d in blocks.items()}
                    hashes = {i: f.result(timeout=WATCHDOG_S) for i, f in futures.items()}
                    # run_txn puts again (dedup: a lookup) and references the chunks
                    w.call("txn", lambda ops=ops: run_txn(store, ops))
                with handed_lock:
                    handed.extend((hashes[i], blocks[i]) for i in blocks)
            for op in ops:
                state.apply(op)
            counts["txns"] += 1
            assert store.get_inode(ino) is not None
    finally:
        w.stop.set()
        for thread in threads:
            thread.join(timeout=WATCHDOG_S * 3)
        pool.shutdown(wait=True)
    assert not any(t.is_alive() for t in threads), "a thread is stuck (deadlock?)"
    assert not w.errors, "errors under load:\n  " + "\n  ".join(w.errors)
    assert counts["publishes"] > 0 and counts["reads"] > 0 and counts["gcs"] > 0, counts
    assert_matches(store, state, what="after the concurrent run")
    store.close()
    again = Store.open(path)
    try:
        assert_matches(again, state, what="after close and reopen")
        report = again.fsck()
        assert report.ok, "fsck:\n  " + "\n  ".join(report.problems)
    finally:
        again.close()


def test_gc_keeps_a_chunk_put_before_it_is_referenced(tmp_path: Path) -> None:
    """The filesystem puts a block's chunk from a worker thread, then references it in a
    transaction on the trio thread; a gc that runs in between must not make that
    transaction fail (the written data would be lost with an I/O error)."""
    store = Store.open(tmp_path / "store", create=True)
    try:
        ino = store.alloc_ino()
        run_txn(store, [("create_inode", ino, {"mode": S_IFREG | 0o644, "uid": 0, "gid": 0,
                                               "rdev": 0, "target": None, "times_ns": 0}),
                        ("link", 1, b"f", ino), ("update", ino, {"nlink": 1})])
        h = store.put_chunk(b"written, not yet referenced")
        store.gc()
        with store.transaction() as t:
            t.set_blocks(ino, {0: h}, 27)
        assert store.read_chunk(store.get_inode(ino).blocks[0]) == b"written, not yet referenced"
    finally:
        store.close()

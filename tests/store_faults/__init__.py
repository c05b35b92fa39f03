"""Tests that the store survives faults: injected I/O errors, crashes, and a model.

What lives here (helpers first, then the tests that use them):

* ``model.py`` — a plain in-memory model of the store's head state, a
  deterministic workload generator (``Workload``, ``Scenario``) and the
  comparison that decides whether a recovered store shows *exactly* a state the
  model allows. The stress tests in ``tests/stress/test_store_*.py`` reuse it.
* ``faulty_backend.py`` — a Backend wrapper that fails the Nth write, sync,
  put (atomic rename), read or delete, with EIO or ENOSPC, or tears a write.
* ``writer_child.py`` — the process that the kill -9 and fault-point tests run
  and kill: it plays a scenario and reports every durable step that returned.

The invariant every test here checks, after any fault: the error surfaced as a
``StoreError`` with a clear message; the store reopens with the real backend;
it shows exactly the state of a durable step (the last one that returned, or
the one in flight); nothing published before is lost; fsck is clean.

These tests never edit the store's code; a store bug found here becomes a
failing test (``xfail(strict=True)`` with the reason, if not fixed in time).
"""

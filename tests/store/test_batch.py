"""``Store.batch()``: several transactions, one TXN record, all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.store.conftest import assert_clean, make_dir, snapshot_state
from vegafs.store import ROOT_INO, Store, TxnError


def test_a_batch_is_one_record_and_reads_its_own_changes(store_path: Path) -> None:
    with Store.open(store_path, create=True) as s:
        before = s.head_logseq
        with s.batch():
            a = make_dir(s, b"a")
            assert s.lookup(ROOT_INO, b"a") == a  # applied at once: later code sees it
            b = make_dir(s, b"b", parent=a)
            with s.transaction() as t:
                t.set_xattr(b, b"user.k", b"v")
            assert t.logseq is None  # logged with the batch
        assert s.head_logseq == before + 1
        s.publish()
        # no logseq shows half of the batch
        assert s.view_at(before).lookup(ROOT_INO, b"a") is None
        assert s.view_at(before + 1).get_inode(b).xattrs == {b"user.k": b"v"}  # type: ignore[union-attr]
        state = snapshot_state(s)
        assert_clean(s)
    with Store.open(store_path) as s:  # replay gives the same head
        assert snapshot_state(s) == state


def test_an_exception_undoes_the_whole_batch(store_path: Path) -> None:
    with Store.open(store_path, create=True) as s:
        state, head = snapshot_state(s), s.head_logseq
        with pytest.raises(RuntimeError), s.batch():
            make_dir(s, b"a")
            raise RuntimeError("the operation failed")
        assert snapshot_state(s) == state and s.head_logseq == head
        assert_clean(s)


def test_an_invalid_transaction_inside_leaves_the_rest(store_path: Path) -> None:
    """A transaction that fails validation is undone alone (its caller handled
    the error); the others of the batch are logged."""
    with Store.open(store_path, create=True) as s:
        with s.batch():
            a = make_dir(s, b"a")
            with pytest.raises(TxnError), s.transaction() as t:
                t.set_xattr(a, b"user.k", b"v")
                t.unlink(ROOT_INO, b"missing")
        assert s.get_inode(a).xattrs == {}  # type: ignore[union-attr]
        state = snapshot_state(s)
        assert_clean(s)
    with Store.open(store_path) as s:
        assert snapshot_state(s) == state

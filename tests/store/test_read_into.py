"""Store.read_chunks_into: whole chunks straight into a caller's buffer, every one verified."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vegafs.store import BLOCK_SIZE, STORE_IO_ERROR, STORE_NOT_FOUND, Store, StoreError

from .conftest import make_file


def views(n: int) -> tuple[memoryview, list[memoryview]]:
    """One reply buffer of ``n`` blocks, pre-filled with junk, and a view per block."""
    out = memoryview(bytearray(b"\xee" * (n * BLOCK_SIZE)))
    return out, [out[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE] for i in range(n)]


def padded(data: bytes) -> bytes:
    return data + bytes(BLOCK_SIZE - len(data))


def count_reads(store: Store, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every backend.readinto call (the number of buffers it scatters into)."""
    calls: list[int] = []
    real = store.backend.readinto

    def spy(name: str, offset: int, buffers: list[memoryview]) -> int:
        calls.append(len(buffers))
        return real(name, offset, buffers)

    monkeypatch.setattr(store.backend, "readinto", spy)
    return calls


def test_adjacent_chunks_come_in_one_read(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(5 * BLOCK_SIZE) + os.urandom(1000)  # five whole blocks and a short one
    make_file(store, b"f", data)
    hashes = [store.put_chunk(data[i : i + BLOCK_SIZE]) for i in range(0, len(data), BLOCK_SIZE)]
    calls = count_reads(store, monkeypatch)
    out, parts = views(len(hashes))
    store.read_chunks_into(list(zip(hashes, parts, strict=True)))
    assert bytes(out) == data + bytes(len(out) - len(data))
    assert calls == [3 * len(hashes) - 1]  # one read: framing, data, chain hash per record


def test_any_order_repeats_and_empty_chunks(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [os.urandom(BLOCK_SIZE), os.urandom(BLOCK_SIZE), b"", os.urandom(7)]
    hashes = [store.put_chunk(b) for b in blocks]
    order = [3, 1, 0, 1, 2, 0, 0, 0]  # backwards, the same chunk again, the empty chunk
    out, parts = views(len(order))
    calls = count_reads(store, monkeypatch)
    store.read_chunks_into([(hashes[i], v) for i, v in zip(order, parts, strict=True)])
    assert [bytes(v) for v in parts] == [padded(blocks[i]) for i in order]
    assert len(calls) == 4  # each distinct chunk once (none adjacent in this order)


def test_compressed_chunks(store_path: Path) -> None:
    texts = [(b"line %d of the log\n" % i) * 7000 for i in range(3)]
    with Store.open(store_path, create=True, compression="zstd") as s:
        hashes = [s.put_chunk(t[:BLOCK_SIZE]) for t in texts]
        out, parts = views(3)
        s.read_chunks_into(list(zip(hashes, parts, strict=True)))
        assert [bytes(v) for v in parts] == [padded(t[:BLOCK_SIZE]) for t in texts]


def test_damage_is_an_error_not_wrong_data(store: Store, store_path: Path) -> None:
    blocks = [os.urandom(BLOCK_SIZE) for _ in range(3)]
    hashes = [store.put_chunk(b) for b in blocks]
    store.publish()
    (seg,) = [p for p in (store_path / "segments").iterdir() if p.stat().st_size > BLOCK_SIZE]
    raw = bytearray(seg.read_bytes())
    raw[raw.index(blocks[1]) + 100] ^= 1
    seg.write_bytes(raw)
    _, parts = views(3)
    with pytest.raises(StoreError) as e:
        store.read_chunks_into(list(zip(hashes, parts, strict=True)))
    assert e.value.code == STORE_IO_ERROR
    _, parts = views(1)
    store.read_chunks_into([(hashes[2], parts[0])])  # its neighbour is still fine
    assert bytes(parts[0]) == blocks[2]


def test_unknown_chunk(store: Store) -> None:
    _, parts = views(1)
    with pytest.raises(StoreError) as e:
        store.read_chunks_into([(b"\1" * 32, parts[0])])
    assert e.value.code == STORE_NOT_FOUND

"""The on-disk framing: segment headers, records, the hash chain, and a scanner.

Everything here is pure byte layout (docs/store-format.md is its prose twin;
change both together and bump FORMAT_VERSION). A record is::

    header  = magic b"VR" | type u16 | flags u16 | logseq u64 | length u32   (big-endian, 18 bytes)
    payload = length bytes
    hash    = blake3(prev_hash || header || payload)                            (32 bytes)

(for CHUNK records the stored data enters the hash through its own BLAKE3;
see :func:`_chain_hash`).

``prev_hash`` is the hash of the record before it in the log (across segment
boundaries), so the chain proves order and integrity from the first record of
a generation to the head. The scanner never trusts a length it has not
bounded, and stops at the first record that does not verify: what follows it
is a torn tail (or corruption, which the caller tells apart by position).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import blake3

from vegafs.store.backend import Backend

FORMAT_MAGIC = b"VEGAFS-STORE\n"
FORMAT_VERSION = 1

RECORD_MAGIC = b"VR"
RECORD_HEADER = struct.Struct(">2sHHQI")
HASH_SIZE = 32
RECORD_OVERHEAD = RECORD_HEADER.size + HASH_SIZE
ZERO_HASH = bytes(HASH_SIZE)

SEGMENT_MAGIC = b"VEGASEG\x00"
# magic | format version u16 | reserved u16 | generation u32 | seq u32 | first logseq u64 | prev hash
SEGMENT_HEADER = struct.Struct(">8sHHIIQ32s")

# Record types (u16). Readers skip types they do not know unless MUST_UNDERSTAND is set.
TXN = 1
CHUNK = 2
PUBLISH = 3
SNAPSHOT = 4
SNAPSHOT_DELETE = 5
ROLLBACK = 6
STATE = 7
GENERATION = 8

TYPE_NAMES = {
    TXN: "TXN",
    CHUNK: "CHUNK",
    PUBLISH: "PUBLISH",
    SNAPSHOT: "SNAPSHOT",
    SNAPSHOT_DELETE: "SNAPSHOT_DELETE",
    ROLLBACK: "ROLLBACK",
    STATE: "STATE",
    GENERATION: "GENERATION",
}

# Flag bits (u16).
FLAG_ZSTD = 0x0001  # CHUNK: the data after the hash is zstd-compressed
FLAG_MUST_UNDERSTAND = 0x8000  # a reader that does not know the type must refuse the log

MAX_PAYLOAD = 1 << 30  # sanity bound: a length above this is corruption, not a record


def segment_name(generation: int, seq: int) -> str:
    """Segments sort by name in log order: generation first, then sequence."""
    return f"{generation:06d}-{seq:08d}.seg"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """(generation, seq) of a segment file name, or None if it is not one."""
    if not name.endswith(".seg"):
        return None
    stem = name[:-4]
    gen, _, seq = stem.partition("-")
    if not (gen.isdigit() and seq.isdigit()):
        return None
    return int(gen), int(seq)


@dataclass(frozen=True)
class SegmentHeader:
    generation: int
    seq: int
    first_logseq: int
    prev_hash: bytes
    #: Always 0 when written; read back so a flipped bit there is seen.
    reserved: int = 0

    def encode(self) -> bytes:
        return SEGMENT_HEADER.pack(
            SEGMENT_MAGIC,
            FORMAT_VERSION,
            self.reserved,
            self.generation,
            self.seq,
            self.first_logseq,
            self.prev_hash,
        )

    @classmethod
    def decode(cls, raw: bytes) -> SegmentHeader | None:
        """The header, or None if ``raw`` is not a valid segment header."""
        if len(raw) < SEGMENT_HEADER.size:
            return None
        magic, version, reserved, gen, seq, first, prev = SEGMENT_HEADER.unpack_from(raw)
        if magic != SEGMENT_MAGIC or version != FORMAT_VERSION:
            return None
        return cls(gen, seq, first, prev, reserved)

    def problem(self, name: str, generation: int) -> str | None:
        """What is wrong with this header of segment ``name`` in ``generation``, or None.

        The header is not covered by the hash chain (``prev_hash`` is checked
        against the segment before), so its other fields are checked against
        what the segment's name and MANIFEST say: a flipped bit there is damage.
        """
        if self.reserved:
            return f"has reserved header bytes {self.reserved:#06x} (0 when written)"
        if self.generation != generation or parse_segment_name(name) != (generation, self.seq):
            return (
                f"does not belong to this generation (its header says generation "
                f"{self.generation}, sequence {self.seq})"
            )
        return None


def _chain_hash(
    prev_hash: bytes, header: bytes, rtype: int, payload: bytes
) -> tuple[bytes, bytes | None]:
    """The record hash. For CHUNK the stored data enters through its own BLAKE3.

    ``BLAKE3(prev_hash || header || payload)`` for every type but CHUNK, whose
    payload is ``content_hash || stored_data``: there the hash is
    ``BLAKE3(prev_hash || header || content_hash || BLAKE3(stored_data))``. For
    an uncompressed chunk ``BLAKE3(stored_data)`` *is* the content hash, so the
    writer hashes each byte of fresh data once, not twice.

    Returns the record hash and, for CHUNK, BLAKE3(stored_data) (which fsck
    compares with the content hash of an uncompressed chunk at no extra cost).
    """
    h = blake3.blake3(prev_hash)
    h.update(header)
    body_hash = None
    if rtype == CHUNK:
        body_hash = blake3.blake3(memoryview(payload)[HASH_SIZE:]).digest()
        h.update(payload[:HASH_SIZE])
        h.update(body_hash)
    else:
        h.update(payload)
    return h.digest(), body_hash


def verify_framed(raw: bytes) -> bool:
    """Random-access integrity check of one non-CHUNK record.

    ``raw`` is ``prev_hash || header || payload || hash``: the 32 bytes before
    any record are the previous record's hash or, for the first record of a
    segment, the segment header's ``prev_hash`` (its last field), so a reader
    that jumps to a record by locator can still check its chain hash.
    """
    head_end = HASH_SIZE + RECORD_HEADER.size
    rtype = RECORD_HEADER.unpack_from(raw, HASH_SIZE)[1]
    digest, _ = _chain_hash(raw[:HASH_SIZE], raw[HASH_SIZE:head_end], rtype,
                            raw[head_end:-HASH_SIZE])
    return digest == raw[-HASH_SIZE:]


def encode_record(
    rtype: int, flags: int, logseq: int, payload: bytes, prev_hash: bytes
) -> tuple[bytes, bytes]:
    """The framed record and its chain hash."""
    header = RECORD_HEADER.pack(RECORD_MAGIC, rtype, flags, logseq, len(payload))
    digest, _body = _chain_hash(prev_hash, header, rtype, payload)
    return b"".join((header, payload, digest)), digest


def encode_chunk(
    flags: int, logseq: int, content_hash: bytes, body: bytes, body_hash: bytes, prev_hash: bytes
) -> tuple[bytes, bytes]:
    """A CHUNK record from its parts, given ``body_hash`` = BLAKE3(body) (no data re-hash)."""
    header = RECORD_HEADER.pack(RECORD_MAGIC, CHUNK, flags, logseq, HASH_SIZE + len(body))
    h = blake3.blake3(prev_hash)
    h.update(header)
    h.update(content_hash)
    h.update(body_hash)
    digest = h.digest()
    return b"".join((header, content_hash, body, digest)), digest


class Record(NamedTuple):
    """One record as found in a segment (a tuple: scans build millions of them)."""

    rtype: int
    flags: int
    logseq: int
    offset: int  # of the record header in its segment
    payload: bytes
    hash: bytes
    damaged: bool = False  # framing intact, hash wrong: ``hash`` is the stored trailer
    body_hash: bytes | None = None  # CHUNK: BLAKE3 of the stored data

    @property
    def end(self) -> int:
        return self.offset + RECORD_OVERHEAD + len(self.payload)

    def replay_entry(self, loc: Any) -> tuple[Any, ...]:
        """What replay keeps of this record until its PUBLISH: a CHUNK keeps only
        its hash and size (its data stays in the segment), others their payload."""
        if self.rtype == CHUNK:
            return (CHUNK, self.flags, self.logseq, loc, self.payload[:HASH_SIZE],
                    len(self.payload))
        return (self.rtype, self.flags, self.logseq, loc, self.payload)


@dataclass
class ScanEnd:
    """Why a scan stopped: at a clean end of the segment, or at a bad record."""

    offset: int = 0
    clean: bool = True
    reason: str = ""


def scan_segment(
    backend: Backend,
    name: str,
    offset: int,
    prev_hash: bytes,
    end: ScanEnd,
    window: int = 8 << 20,
    resync: bool = False,
) -> Iterator[Record]:
    """Yield the verified records of ``name`` from ``offset`` until EOF or a bad record.

    ``prev_hash`` is the chain hash of the record before ``offset``. On return
    ``end`` tells where and why the scan stopped (``clean`` is False when a
    record was torn or did not verify). With ``resync``, a record whose frame
    is intact but whose hash does not verify is yielded with ``damaged=True``
    and the scan goes on, chaining from its stored hash: that is how one
    damaged record is told apart from a torn tail, and isolated.
    """
    buf = b""
    buf_start = offset
    pos = offset

    def fill(need: int) -> bool:
        nonlocal buf, buf_start
        if pos + need <= buf_start + len(buf):
            return True
        buf = buf[pos - buf_start :]
        buf_start = pos
        more = backend.read(name, buf_start + len(buf), max(window, need - len(buf)))
        buf += more
        return pos + need <= buf_start + len(buf)

    while True:
        end.offset = pos
        if not fill(RECORD_HEADER.size):
            if pos != buf_start + len(buf):
                end.clean, end.reason = False, "torn record header"
            return
        rel = pos - buf_start
        magic, rtype, flags, logseq, length = RECORD_HEADER.unpack_from(buf, rel)
        if magic != RECORD_MAGIC or length > MAX_PAYLOAD:
            end.clean, end.reason = False, "bad record header"
            return
        total = RECORD_OVERHEAD + length
        if not fill(total):
            end.clean, end.reason = False, "torn record (segment ends inside it)"
            return
        rel = pos - buf_start
        body_end = rel + RECORD_HEADER.size + length
        payload = buf[rel + RECORD_HEADER.size : body_end]
        digest, body_hash = _chain_hash(
            prev_hash, buf[rel : rel + RECORD_HEADER.size], rtype, payload
        )
        stored = buf[body_end : body_end + HASH_SIZE]
        if digest != stored:
            if not resync:
                end.clean, end.reason = False, "record hash mismatch (damaged or torn)"
                return
            yield Record(rtype, flags, logseq, pos, payload, stored, damaged=True)
            digest = stored
        else:
            yield Record(rtype, flags, logseq, pos, payload, digest, body_hash=body_hash)
        prev_hash = digest
        pos += total


def _header_at(raw: bytes, rel: int, name: str, offset: int) -> tuple[int, int, int, int]:
    """(type, flags, logseq, whole size) of the record whose header is at ``raw[rel:]``."""
    if len(raw) - rel < RECORD_HEADER.size:
        raise OSError(5, f"segment {name}: short read at offset {offset}")
    magic, rtype, flags, logseq, length = RECORD_HEADER.unpack_from(raw, rel)
    if magic != RECORD_MAGIC:
        raise OSError(5, f"segment {name}: no record at offset {offset}")
    return rtype, flags, logseq, RECORD_HEADER.size + length


def read_record_at(
    backend: Backend, name: str, offset: int, max_len: int
) -> tuple[int, int, int, bytes]:
    """(type, flags, logseq, payload) of the record at ``offset``, read without chain check.

    Used for random access (chunk reads, replay of indexed records); the chain
    was verified when the record was first scanned. ``max_len`` bounds the
    read: the record's whole size when the caller knows it.
    """
    raw = backend.read(name, offset, max_len)
    rtype, flags, logseq, need = _header_at(raw, 0, name, offset)
    if len(raw) < need:
        raw += backend.read(name, offset + len(raw), need - len(raw))
        if len(raw) < need:
            raise OSError(5, f"segment {name}: record at offset {offset} is cut short")
    return rtype, flags, logseq, raw[RECORD_HEADER.size : need]


class RecordWindow:
    """:func:`read_record_at` for many records read in locator order, through one window.

    Why: gc copies every live chunk, sorted by locator; a read per record of
    the largest size a chunk record can have copied 256 KiB for every 1 KiB
    chunk (1.9 s of a 102,000-chunk gc's 8 s). Records close together come
    out of one ``WINDOW``-sized read instead.
    """

    WINDOW = 1 << 20

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.name = ""
        self.start = 0
        self.buf = b""

    def read(self, name: str, offset: int) -> tuple[int, int, int, bytes]:
        if name != self.name or not 0 <= offset - self.start <= len(self.buf) - RECORD_HEADER.size:
            self._fill(name, offset, self.WINDOW)
        rel = offset - self.start
        rtype, flags, logseq, need = _header_at(self.buf, rel, name, offset)
        if rel + need > len(self.buf):
            self._fill(name, offset, max(need, self.WINDOW))
            rel = 0
            if need > len(self.buf):
                raise OSError(5, f"segment {name}: record at offset {offset} is cut short")
        return rtype, flags, logseq, self.buf[rel + RECORD_HEADER.size : rel + need]

    def _fill(self, name: str, offset: int, size: int) -> None:
        """The window now starts at ``offset`` of segment ``name``."""
        self.name, self.start = name, offset
        self.buf = self.backend.read(name, offset, size)

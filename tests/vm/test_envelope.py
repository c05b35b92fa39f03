"""The compiled envelope: round trip, structural rejection of corrupt or foreign
artifacts, and the cache that falls back to the source."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from vegafs.vm import cache_path, compile_source, load_program
from vegafs.vm.bytecode import (
    FORMAT_VERSION,
    MAGIC,
    PRELUDE_SIZE,
    EnvelopeError,
    decode,
    encode,
)
from vegafs.vm.disasm import disassemble

SOURCE = """
fn fib(n) { if n < 2 { return n; } return fib(n - 1) + fib(n - 2); }
let xs = [1, 2.5, "three", 4s, $0.25, 123456789012345678901234567890];
try { print(fib(10)); } catch Timeout(t) { print(t); }
"""
HOOKS = """
hook guard on write "/logs/**" {
    budget { steps 1_000 time 50ms memory 1mb }
    capabilities [fs::read, meta::write, fs::write("/out/**")]
    failure open
    strategy escalate
    retry { max_attempts 3 backoff exponential(10ms, 2.0, 1s) on [trap, timeout] }
    circuit_breaker { threshold 5 reset_after 30s }
    fn helper(x) { return x + 1; }
    fn run(ev) { return helper(1); }
}
hook second after close "/notes/**/*.md" {
    fn run(ev) { return nil; }
}
"""


def _rebuild(blob: bytes, header: dict | None = None, payload: bytes | None = None,
             version: int = FORMAT_VERSION, magic: bytes = MAGIC) -> bytes:
    """Re-pack an envelope after editing it, with a valid checksum (a *structural*
    problem must be caught by validation, not by the checksum)."""
    import hashlib

    _, _, _, hlen, plen, _ = struct.unpack_from("<8sHHII32s", blob)
    hdr = blob[PRELUDE_SIZE:PRELUDE_SIZE + hlen]
    pay = blob[PRELUDE_SIZE + hlen:]
    if header is not None:
        hdr = json.dumps(header, sort_keys=True).encode()
    if payload is not None:
        pay = payload
    digest = hashlib.sha256(hdr + pay).digest()
    return struct.pack("<8sHHII32s", magic, version, 0, len(hdr), len(pay), digest) + hdr + pay


def _header(blob: bytes) -> dict:
    _, _, _, hlen, _, _ = struct.unpack_from("<8sHHII32s", blob)
    return json.loads(blob[PRELUDE_SIZE:PRELUDE_SIZE + hlen])


@pytest.mark.parametrize("source", [SOURCE, HOOKS], ids=["script", "hooks"])
def test_round_trip_is_exact(source: str) -> None:
    program = compile_source(source, "x.vega")
    blob = encode(program)
    again = decode(blob)
    assert disassemble(again) == disassemble(program)
    assert again.constants == program.constants
    assert [h.to_json() for h in again.hooks] == [h.to_json() for h in program.hooks]
    assert again.source == program.source
    assert encode(again) == blob


def test_hook_table_is_plain_data() -> None:
    program = compile_source(HOOKS, "h.vega")
    guard, second = program.hooks
    assert (guard.name, guard.when, guard.event, guard.glob) == ("guard", "on", "write", "/logs/**")
    assert guard.settings == {
        "budget": {"steps": 1000, "time": 0.05, "memory": 1 << 20},
        "capabilities": ["fs::read", "meta::write", "fs::write:/out/**"],
        "failure": "open",
        "strategy": "escalate",
        "retry": {"max_attempts": 3, "on": ["trap", "timeout"],
                  "backoff": {"kind": "exponential", "base_s": 0.01, "factor": 2.0, "max_s": 1.0}},
        "circuit_breaker": {"threshold": 5, "reset_after": 30.0},
    }
    assert program.functions[guard.run].name == "guard.run"
    assert (second.when, second.event, second.settings) == ("after", "close", {})
    assert program.main is None


def test_corruption_anywhere_is_rejected() -> None:
    blob = encode(compile_source(SOURCE, "x.vega"))
    for offset in range(0, len(blob), max(1, len(blob) // 97)):
        bad = bytearray(blob)
        bad[offset] ^= 0x5A
        with pytest.raises(EnvelopeError):
            decode(bytes(bad))
    for cut in (0, 10, PRELUDE_SIZE, len(blob) - 1):
        with pytest.raises(EnvelopeError):
            decode(blob[:cut])


@pytest.mark.parametrize("edit, message", [
    (lambda b: _rebuild(b, magic=b"NOTVEGA!"), "bad magic"),
    (lambda b: _rebuild(b, version=FORMAT_VERSION + 1), "envelope format 2"),
    (lambda b: _rebuild(b, header={**_header(b), "format": 99}), "bad header"),
    (lambda b: _rebuild(b, header={**_header(b), "main": 42}), "bad main"),
    (lambda b: _rebuild(b, header={**_header(b), "symbols": [1, 2]}), "bad symbols"),
    (lambda b: _rebuild(b, header={**_header(b), "source_hash": "0" * 64}), "hash"),
    (lambda b: _rebuild(b, header={**_header(b), "constants": [["complex", "1j"]]}),
     "unknown constant kind"),
    (lambda b: _rebuild(b, header={k: v for k, v in _header(b).items() if k != "functions"}),
     "malformed header"),
])
def test_structural_rejections_with_a_valid_checksum(edit, message: str) -> None:
    blob = encode(compile_source(SOURCE, "x.vega"))
    with pytest.raises(EnvelopeError, match=message):
        decode(edit(blob))


def test_reserved_opcode_in_the_payload_is_rejected() -> None:
    program = compile_source("let x = 1;", "x.vega")
    blob = encode(program)
    header = _header(blob)
    _, _, _, hlen, _, _ = struct.unpack_from("<8sHHII32s", blob)
    payload = bytearray(blob[PRELUDE_SIZE + hlen:])
    code_off = header["functions"][0]["code"][0]
    payload[code_off] = 0xB0  # a budget-scope opcode, reserved
    with pytest.raises(EnvelopeError, match="reserved for budget"):
        decode(_rebuild(blob, payload=bytes(payload)))


def test_cache_is_written_reused_and_survives_corruption(tmp_path: Path) -> None:
    src = tmp_path / "prog.vega"
    src.write_text("print(1 + 1);\n")
    first = load_program(src)
    cached = cache_path(src)
    assert cached.exists() and cached.parent.name == "__vegacache__"
    assert decode(cached.read_bytes()).source_hash == first.source_hash
    mtime = cached.stat().st_mtime_ns
    load_program(src)
    assert cached.stat().st_mtime_ns == mtime  # reused, not rewritten
    cached.write_bytes(b"garbage")
    again = load_program(src)  # corrupt cache: recompiled from source, cache replaced
    assert disassemble(again) == disassemble(first)
    assert decode(cached.read_bytes()).source_hash == first.source_hash
    src.write_text("print(2 + 2);\n")  # changed source: the stale envelope is not used
    assert load_program(src).source_hash != first.source_hash


def test_cache_in_unwritable_place_is_skipped(tmp_path: Path) -> None:
    src = tmp_path / "p.vega"
    src.write_text("print(1);\n")
    (tmp_path / "__vegacache__").write_text("a file where the cache dir would go")
    assert load_program(src).main == 0


def test_absurdly_nested_header_is_rejected_not_a_crash() -> None:
    blob = encode(compile_source("let x = 1;", "x.vega"))
    import hashlib

    hdr = b"[" * 100_000 + b"]" * 100_000
    pay = b""
    digest = hashlib.sha256(hdr + pay).digest()
    bad = struct.pack("<8sHHII32s", MAGIC, FORMAT_VERSION, 0, len(hdr), 0, digest) + hdr
    assert blob  # the valid envelope for contrast decodes fine
    decode(blob)
    with pytest.raises(EnvelopeError):
        decode(bad)

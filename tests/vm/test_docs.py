"""The Vega code shown in docs/vega.md and examples/ compiles (docs do not rot)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vegafs.vm import compile_source

ROOT = Path(__file__).parents[2]
BLOCKS = re.findall(r"```vega\n(.*?)```", (ROOT / "docs" / "vega.md").read_text(), re.S)


def test_docs_have_vega_blocks() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_doc_block_compiles(index: int) -> None:
    # The hook sketch elides its body ("...") and calls the hooks layer's allow();
    # the rest of it (header, settings) must compile as shown.
    block = BLOCKS[index].replace("...", "").replace("return allow();", "return nil;")
    program = compile_source(block, f"docs-block-{index}.vega")
    assert program.hooks or program.main is not None


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.vega")),
                         ids=lambda p: p.name)
def test_examples_compile_except_the_syntax_error_one(path: Path) -> None:
    if path.name == "syntax_error.vega":
        return
    compile_source(path.read_text(), path.name)

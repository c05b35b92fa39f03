"""The layering of docs/architecture.md is real: imports point one way."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "vegafs"

# package -> packages of vegafs it must never import
FORBIDDEN = {
    "store": {"fs", "fuse_ops", "vm", "hooks", "drivers", "cli"},
    "vm": {"store", "fs", "fuse_ops", "hooks", "drivers", "cli"},
    "fs": {"fuse_ops", "vm", "hooks", "drivers", "cli"},
    "fuse_ops": {"vm", "drivers", "cli"},
    "drivers": {"fuse_ops", "hooks", "cli"},
    "hooks": {"fuse_ops", "cli"},
}


def _vegafs_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "vegafs" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_imports_point_one_way() -> None:
    violations = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = _vegafs_imports(path) & forbidden
            if bad:
                violations.append(f"{path.relative_to(ROOT.parent)} imports {sorted(bad)}")
    assert not violations, "layering violated:\n" + "\n".join(violations)


def test_layering_check_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("import vegafs.fs.model\nfrom vegafs.vm import run\nimport os\n")
    assert _vegafs_imports(sample) == {"fs", "vm"}

"""docs/ARCHITECTURE.md's layers are the package's: every module is in one layer, and
no module imports a layer above its own."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "schnetpack_hessian"


def _layers():
    """Top-level module or package name → layer number, from the document's table."""
    layers = {}
    for line in (ROOT / "docs" / "ARCHITECTURE.md").read_text().splitlines():
        match = re.match(r"\| (\d)\. [^|]+\| ([^|]+)\|", line)
        if match:
            for name in re.findall(r"`([a-z_]+)/?`", match.group(2)):
                layers[name] = int(match.group(1))
    return layers


def _imported(tree):
    """Top-level names of schnetpack_hessian that a module imports."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] != "schnetpack_hessian":
                continue
            if len(parts) > 1:
                yield parts[1]
            else:
                yield from (a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "schnetpack_hessian" and len(parts) > 1:
                    yield parts[1]


def test_every_module_has_a_layer_and_imports_only_its_own_or_lower_ones():
    layers = _layers()
    assert layers["hessian"] == 1 and layers["data"] == 2 and layers["cli"] == 4
    top = {p.stem for p in PACKAGE.glob("*.py") if not p.name.startswith("_")}
    top |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    unlisted = sorted(n for n in top if n not in layers)
    assert not unlisted, f"modules missing from docs/ARCHITECTURE.md: {unlisted}"
    upward = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[0] == "__init__":
            continue
        own = layers[parts[0]]
        for name in _imported(ast.parse(path.read_text())):
            if name in layers and layers[name] > own:
                upward.append(f"{'/'.join(parts)} (layer {own}) imports {name}")
    assert not upward, upward
